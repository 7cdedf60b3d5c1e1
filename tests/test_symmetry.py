"""Symmetry properties of refimpl's field, divergence and flow (paper theorems 1 and 2, sections 3.1-3.2).

Written with the public ``refimpl.testing`` strategies and checkers, exactly
as a user would test their own model, so that module is exercised on every
run. Group elements act as ``(g . x)_i = Q x_{pi(i)} + b`` (``testing.act``).
Every test runs for both psi families, D in {2, 3} and K from 2 to 8.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from refimpl import testing

# ---------------------------------------------------------------------------
# psi families with nonzero parameters (zero weights give the identity flow,
# which would make every test below pass vacuously).

_rng = np.random.default_rng(20240601)
RBF = refimpl.RBFKernel(weights=0.05 * _rng.standard_normal((50, 10)))
MLP = refimpl.TanhMLP(16, rng=7, v=0.1 * _rng.standard_normal(16), v0=0.05)
# bgflow's KernelDynamics as E-NF configures it for DW4 (widths 0.5 and 0.3).
BGFLOW = refimpl.BgflowKernel(np.linspace(0, 8, 50), np.full(50, 0.5), np.linspace(0, 1, 10),
                              np.full(10, 0.3), weights=0.05 * _rng.standard_normal((50, 10)))
PSIS = pytest.mark.parametrize("psi", [RBF, MLP, BGFLOW], ids=["rbf", "mlp", "bgflow"])

N_PARTICLES = (2, 8)  # K, inclusive range
DIMS = (2, 3)  # D
SCALE = 3.0  # coordinates in [-3, 3]: distances up to ~10, beyond the RBF centres (r_max = 8)
TRANSLATION_SCALE = 3.0
BATCH = (2,)  # a small batch, so the batched code paths are the ones checked

# ---------------------------------------------------------------------------
# Tolerances, each with its reason.

# Field: each pair term psi(r_ij)(x_i - x_j) of g(g.x) differs from its image
# under g by rounding of x_i - x_j and of r_ij, ~u (|x| + |b|) (|psi| + r |psi'|)
# ~ 1e-15 here, summed over <= 7 partners (measured worst: 1.3e-14). 1e-11
# leaves ~1000x headroom and is still ~1e9 below a defect of the size of psi.
FIELD_RTOL = 1e-11
FIELD_ATOL = 1e-11
# Divergence: a sum of K (K - 1) <= 56 terms |psi' r + D psi| of order one that
# partly cancel, so rounding is ~1e-13 absolute (measured: 3.4e-13).
DIV_RTOL = 1e-11
DIV_ATOL = 1e-10
# sum_i g_i: each pair adds to g_i what it subtracts from g_j, so the total is
# zero up to a few ulps of the largest pair term (measured: 1e-16 relative).
FIELD_MEAN_FREE_RTOL = 1e-13
FIELD_MEAN_FREE_ATOL = 1e-13
# Central-difference Jacobian trace: truncation eps^2 |g'''| / 6 (the RBF's
# narrow Gaussians, gamma ~ 19, dominate) plus rounding u |g| / eps, summed over
# K D <= 24 entries; measured worst 5e-9 relative to sum_m |J_mm| at eps = 1e-5.
# Particles are kept MIN_SEPARATION apart: the pair field is only C^1 where two
# particles coincide, which spoils the eps^2 truncation error.
JACOBIAN_EPS = 1e-5
JACOBIAN_RTOL = 1e-6
JACOBIAN_ATOL = 1e-7
MIN_SEPARATION = 0.25

# Flow. The solves of x and g.x take different step sequences (the error norm
# is component-wise, so it is not rotation invariant; translations change
# |y| and with it the error weights), so F(g.x) and g.F(x) agree to the
# solver's global error, not to rounding. The controller keeps the weighted
# RMS local error of each step below 1, i.e. each component below
# sqrt(K D + 1) <= 5 times (atol + rtol |y|); over N <= ~200 accepted steps
# (nfev <= ~1000 at these tolerances) and with an O(1) Lipschitz
# amplification for these psi, the global error of one solve is at most
# ~N sqrt(n) tol ~ 1e3 tol (local extrapolation makes it far smaller in
# practice: measured <= 0.5 tol). Hence FLOW_* = 1e3 * SOLVER_*: 1e-7.
SOLVER_RTOL = 1e-10
SOLVER_ATOL = 1e-10
GLOBAL_ERROR_FACTOR = 1e3
FLOW_RTOL = GLOBAL_ERROR_FACTOR * SOLVER_RTOL
FLOW_ATOL = GLOBAL_ERROR_FACTOR * SOLVER_ATOL
# The centre of mass, by contrast, is preserved to rounding: every RK stage
# k_s sums to zero over particles up to a few ulps, and the update
# y + h sum_s b_s k_s is linear in them; ~N ulps over N <= ~1000 steps.
FLOW_MEAN_FREE_RTOL = 1e-12
FLOW_MEAN_FREE_ATOL = 1e-13


def flow_for(psi):
    return refimpl.EquivariantFlow(psi, rtol=SOLVER_RTOL, atol=SOLVER_ATOL)


@st.composite
def cases(draw, mean_free=False, translation=True, min_separation=None):
    """A batch of configurations and a matching group element (pi, Q, b)."""
    k = draw(st.integers(*N_PARTICLES))
    d = draw(st.sampled_from(DIMS))
    x = draw(testing.configurations(k, d, scale=SCALE, mean_free=mean_free,
                                    min_separation=min_separation, batch_shape=BATCH))
    g = draw(testing.group_elements(
        k, d, translation_scale=TRANSLATION_SCALE if translation else None))
    return x, g


times = st.floats(0.0, 1.0)


def improper(q):
    """Compose a rotation with a reflection: a Haar rotation gives a Haar improper element."""
    q = q.copy()
    q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------------------
# The strategies themselves


@given(st.integers(1, 4).flatmap(lambda d: st.tuples(
    st.just(d), testing.orthogonal_matrices(d), testing.orthogonal_matrices(d, reflections=False))))
def test_orthogonal_matrices_are_orthogonal_and_proper_when_asked(args):
    d, q, rotation = args
    for m in (q, rotation):
        assert m.shape == (d, d) and m.dtype == np.float64
        np.testing.assert_allclose(m.T @ m, np.eye(d), rtol=0, atol=1e-13)
    assert abs(abs(np.linalg.det(q)) - 1.0) < 1e-12
    assert np.linalg.det(rotation) > 0


@given(testing.configurations(N_PARTICLES, DIMS, scale=SCALE, batch_shape=(3,)),
       testing.configurations(N_PARTICLES, DIMS, scale=SCALE, mean_free=True),
       testing.configurations(N_PARTICLES, DIMS, scale=SCALE, min_separation=MIN_SEPARATION))
def test_configurations_are_bounded_and_honour_options(x, centred, separated):
    assert x.dtype == np.float64 and x.ndim == 3 and x.shape[0] == 3
    assert 2 <= x.shape[1] <= 8 and x.shape[2] in DIMS
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= SCALE
    assert np.abs(centred.mean(axis=0)).max() <= 1e-14 * (1 + np.abs(centred).max())
    diff = separated[:, None, :] - separated[None, :, :]
    r = np.sqrt((diff ** 2).sum(-1)) + np.diag(np.full(len(separated), np.inf))
    assert r.min() >= MIN_SEPARATION * (1 - 1e-12) and np.abs(separated).max() <= SCALE


@given(st.integers(1, 9).flatmap(testing.permutations))
def test_permutations_are_permutations(pi):
    assert sorted(pi.tolist()) == list(range(len(pi)))


@PSIS
def test_psi_families_are_nontrivial(psi):
    # Guards against vacuous symmetry tests: psi, and so the field and the flow, move points.
    values, slopes = psi.values(np.linspace(0.0, 8.0, 33), 0.5)
    assert np.abs(values).max() > 1e-2 and np.abs(slopes).max() > 1e-2


# ---------------------------------------------------------------------------
# The vector field g (paper eq. 3)


@PSIS
@given(cases(translation=False), times)
def test_vector_field_is_permutation_equivariant(psi, case, t):
    x, g = case
    testing.assert_equivariant(lambda y: refimpl.vector_field(y, t, psi), x,
                               permutation=g.permutation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


@PSIS
@given(cases(translation=False), times)
def test_vector_field_is_rotation_equivariant(psi, case, t):
    x, g = case
    rotation = g.rotation if np.linalg.det(g.rotation) > 0 else improper(g.rotation)
    testing.assert_equivariant(lambda y: refimpl.vector_field(y, t, psi), x,
                               rotation=rotation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


@PSIS
@given(cases(translation=False), times)
def test_vector_field_is_reflection_equivariant(psi, case, t):
    x, g = case
    reflection = g.rotation if np.linalg.det(g.rotation) < 0 else improper(g.rotation)
    testing.assert_equivariant(lambda y: refimpl.vector_field(y, t, psi), x,
                               rotation=reflection, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


@PSIS
@given(cases(), times)
def test_vector_field_is_translation_invariant(psi, case, t):
    x, g = case
    testing.assert_equivariant(lambda y: refimpl.vector_field(y, t, psi), x,
                               translation=g.translation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


@PSIS
@given(cases(), times)
def test_vector_field_is_equivariant_under_permutation_orthogonal_map_and_translation(
        psi, case, t):
    x, g = case
    testing.assert_equivariant(lambda y: refimpl.vector_field(y, t, psi), x, **g._asdict(),
                               kind="vector", rtol=FIELD_RTOL, atol=FIELD_ATOL)


@PSIS
@given(cases(), times)
def test_vector_field_sums_to_zero_over_particles(psi, case, t):
    x, _ = case
    testing.assert_mean_free_preserved(lambda y: refimpl.vector_field(y, t, psi), x,
                                       rtol=FIELD_MEAN_FREE_RTOL, atol=FIELD_MEAN_FREE_ATOL)


# ---------------------------------------------------------------------------
# The divergence (paper eq. 4, diagonal excluded)


@PSIS
@given(cases(), times)
def test_divergence_is_invariant(psi, case, t):
    x, g = case
    testing.assert_invariant(lambda y: refimpl.divergence(y, t, psi), x, **g._asdict(),
                             rtol=DIV_RTOL, atol=DIV_ATOL)


@PSIS
@given(cases(min_separation=MIN_SEPARATION, translation=False), times)
def test_divergence_matches_central_difference_jacobian_trace(psi, case, t):
    x, _ = case
    testing.assert_divergence_matches_jacobian(
        lambda y: refimpl.vector_field(y, t, psi), lambda y: refimpl.divergence(y, t, psi), x,
        eps=JACOBIAN_EPS, rtol=JACOBIAN_RTOL, atol=JACOBIAN_ATOL)


# ---------------------------------------------------------------------------
# The flow (paper theorems 1 and 2)

@PSIS
@given(cases())
def test_flow_forward_is_equivariant_map(psi, case):
    x, g = case
    flow = flow_for(psi)
    testing.assert_equivariant(lambda z: flow.forward(z)[0], x, **g._asdict(), kind="map",
                               rtol=FLOW_RTOL, atol=FLOW_ATOL)


@PSIS
@given(cases())
def test_flow_inverse_is_equivariant_map(psi, case):
    x, g = case
    flow = flow_for(psi)
    testing.assert_equivariant(lambda y: flow.inverse(y)[0], x, **g._asdict(), kind="map",
                               rtol=FLOW_RTOL, atol=FLOW_ATOL)


@PSIS
@given(cases())
def test_flow_forward_logdet_is_invariant(psi, case):
    x, g = case
    flow = flow_for(psi)
    testing.assert_invariant(lambda z: flow.forward(z)[1], x, **g._asdict(),
                             rtol=FLOW_RTOL, atol=FLOW_ATOL)


@PSIS
@given(cases(mean_free=True))
def test_flow_forward_keeps_mean_free_configurations_mean_free(psi, case):
    x, _ = case
    flow = flow_for(psi)
    testing.assert_mean_free_preserved(lambda z: flow.forward(z)[0], x,
                                       rtol=FLOW_MEAN_FREE_RTOL, atol=FLOW_MEAN_FREE_ATOL)


@PSIS
@given(cases(mean_free=True, translation=False))
def test_flow_log_prob_is_invariant_under_permutations_and_orthogonal_maps(psi, case):
    # No translation: the density lives on the mean-free subspace (log_prob
    # rejects other inputs), which permutations and O(D) preserve.
    x, g = case
    flow = flow_for(psi)
    testing.assert_invariant(flow.log_prob, x, rotation=g.rotation, permutation=g.permutation,
                             rtol=FLOW_RTOL, atol=FLOW_ATOL)


# ---------------------------------------------------------------------------
# Worked example: the checkers catch deliberately broken fields and pass the
# correct one, on one fixed configuration and group element.

T_EXAMPLE = 0.3


def numpy_pair_field(x, t, psi, weight=None):
    """``g_i = sum_{j != i} w_ij psi(r_ij, t) (x_i - x_j)`` in plain NumPy; ``w = 1`` is eq. 3."""
    k = x.shape[-2]
    diff = x[..., :, None, :] - x[..., None, :, :]
    r = np.sqrt(np.sum(diff ** 2, axis=-1))
    w = np.ones((k, k)) if weight is None else weight
    return np.einsum("...ij,...ijd->...id", psi(r, t) * w * (1.0 - np.eye(k)), diff)


@pytest.fixture
def example():
    rng = np.random.default_rng(5)
    k, d = 5, 3
    x = 2.0 * rng.standard_normal((2, k, d))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = improper(q * np.sign(np.diag(r)))  # a reflection, det -1
    pi = np.array([2, 0, 4, 1, 3])
    b = np.array([0.5, -1.0, 2.0])
    return x, testing.GroupElement(q, pi, b)


def correct_field(y):
    return refimpl.vector_field(y, T_EXAMPLE, RBF)


def test_numpy_pair_field_reproduces_refimpl_vector_field(example):
    x, _ = example
    np.testing.assert_allclose(numpy_pair_field(x, T_EXAMPLE, RBF), correct_field(x),
                               rtol=0, atol=FIELD_ATOL)


def test_checkers_catch_a_field_with_a_constant_drift(example):
    x, g = example
    drift = np.array([0.1, 0.0, -0.2])

    def drifting(y):
        return correct_field(y) + drift

    testing.assert_equivariant(correct_field, x, rotation=g.rotation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)
    with pytest.raises(AssertionError, match=r"(?s)reflection Q \(det -1\).*tolerance"):
        testing.assert_equivariant(drifting, x, rotation=g.rotation, kind="vector",
                                   rtol=FIELD_RTOL, atol=FIELD_ATOL)
    with pytest.raises(AssertionError, match="not mean-free"):
        testing.assert_mean_free_preserved(drifting, x, rtol=FIELD_MEAN_FREE_RTOL,
                                           atol=FIELD_MEAN_FREE_ATOL)
    # The same drift for every particle commutes with permutations and
    # translations: those checks cannot see it, which is why all are needed.
    testing.assert_equivariant(drifting, x, permutation=g.permutation,
                               translation=g.translation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


def test_checkers_catch_a_non_symmetric_pair_weight(example):
    x, g = example
    k = x.shape[-2]
    # w_ij = 1 + i / K: the pair (i, j) pushes i harder than j, so particle
    # labels matter and the pair forces no longer cancel.
    weight = 1.0 + np.arange(k)[:, None] / k * np.ones((1, k))

    def lopsided(y):
        return numpy_pair_field(y, T_EXAMPLE, RBF, weight)

    testing.assert_equivariant(correct_field, x, permutation=g.permutation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)
    with pytest.raises(AssertionError, match=r"(?s)permutation pi = \[2, 0, 4, 1, 3\].*relative"):
        testing.assert_equivariant(lopsided, x, permutation=g.permutation, kind="vector",
                                   rtol=FIELD_RTOL, atol=FIELD_ATOL)
    with pytest.raises(AssertionError, match="not mean-free"):
        testing.assert_mean_free_preserved(lopsided, x, rtol=FIELD_MEAN_FREE_RTOL,
                                           atol=FIELD_MEAN_FREE_ATOL)
    # Still a function of the vectors x_i - x_j only: O(D) cannot see the defect.
    testing.assert_equivariant(lopsided, x, rotation=g.rotation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)


def test_jacobian_check_catches_the_seed_divergence_with_the_diagonal_term(example):
    x, g = example
    k, d = x.shape[-2:]
    spurious = d * k * RBF(np.zeros(1), T_EXAMPLE)[0]  # the j = i terms of the paper's eq. 4
    assert abs(spurious) > 1e3 * JACOBIAN_ATOL  # so the example is not vacuous

    def correct_div(y):
        return refimpl.divergence(y, T_EXAMPLE, RBF)

    def seed_div(y):
        return correct_div(y) + spurious

    testing.assert_divergence_matches_jacobian(correct_field, correct_div, x, eps=JACOBIAN_EPS,
                                               rtol=JACOBIAN_RTOL, atol=JACOBIAN_ATOL)
    with pytest.raises(AssertionError, match="(?s)central-difference Jacobian.*tolerance"):
        testing.assert_divergence_matches_jacobian(correct_field, seed_div, x,
                                                   eps=JACOBIAN_EPS, rtol=JACOBIAN_RTOL,
                                                   atol=JACOBIAN_ATOL)
    # A constant offset is perfectly invariant: only the Jacobian check sees it.
    testing.assert_invariant(seed_div, x, **g._asdict(), rtol=DIV_RTOL, atol=DIV_ATOL)


def test_kind_matters_a_vector_field_is_not_a_translation_equivariant_map(example):
    x, g = example
    testing.assert_equivariant(correct_field, x, translation=g.translation, kind="vector",
                               rtol=FIELD_RTOL, atol=FIELD_ATOL)
    with pytest.raises(AssertionError, match=r"(?s)kind='map'.*translation b"):
        testing.assert_equivariant(correct_field, x, translation=g.translation, kind="map",
                                   rtol=FIELD_RTOL, atol=FIELD_ATOL)


# ---------------------------------------------------------------------------
# The subclassable test classes of refimpl.testing, used as a user would.

class TestRBFFieldThroughTheSharedClasses(testing.FieldSymmetryTests, testing.DivergenceTests):
    n_particles = N_PARTICLES
    dim = DIMS
    rtol, atol = FIELD_RTOL, DIV_ATOL
    jacobian_eps, jacobian_rtol, jacobian_atol = JACOBIAN_EPS, JACOBIAN_RTOL, JACOBIAN_ATOL

    def field(self, x):
        return refimpl.vector_field(x, 0.4, RBF)

    def divergence(self, x):
        return refimpl.divergence(x, 0.4, RBF)


class TestMLPFlowThroughTheSharedClasses(testing.FlowSymmetryTests):
    n_particles = (2, 5)
    dim = DIMS
    rtol, atol = FLOW_RTOL, FLOW_ATOL

    def flow(self, x):
        return flow_for(MLP).forward(x)


class _DriftingField(testing.FieldSymmetryTests):
    n_particles, dim = 3, 2

    def field(self, x):
        return refimpl.vector_field(x, 0.4, RBF) + np.array([1e-6, 0.0])


def test_shared_classes_catch_a_drifting_field():
    """The inherited hypothesis test fails on a field with a fixed drift."""
    with pytest.raises(AssertionError):
        _DriftingField().test_field_is_equivariant()
