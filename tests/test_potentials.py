"""DoubleWell and LennardJones: energies, forces and Numba kernels against each other."""

import math

import autograd
import numpy as np
import pytest
from autograd.test_util import check_grads
from hypothesis import given, strategies as st

from refimpl.potentials import (DoubleWell, LennardJones, NumbaEnergy, check_numba_energy,
                                kernel_energy)
from refimpl.testing import (assert_equivariant, assert_invariant, configurations,
                             group_elements)

# Energies are sums of P = K(K-1)/2 float64 terms of size up to ~1e3; every
# implementation (NumPy, Numba, a Python loop) rounds at ~1e-16 per operation,
# so relative to the sum of |terms| they agree to well below this.
ENERGY_RTOL = 1e-12
# Analytic force vs autograd: the same derivative, evaluated in a different
# order; rounding only, relative to the largest force entry.
FORCE_RTOL = 1e-12
# Central differences with step h: truncation ~h^2 |u'''| / 6 ~ 1e-9 and
# rounding ~1e-16 |u| / h ~ 1e-10 for |u| ~ 1e3; relative to max |force|.
FD_STEP = 1e-5
FD_RTOL = 1e-7
# A force at an exact minimum is rounding of terms ~ |b| d0 ~ 16; 1e-12 absolute.
MINIMUM_FORCE_ATOL = 1e-12
# Energy at a minimum from two formulas (s**4 vs s2*s2, a recomputed distance):
# rounding of terms ~2x the result; the distance error enters only to 2nd order.
MINIMUM_ENERGY_RTOL = 1e-13
# Symmetry checks: terms up to ~1e4 for coordinates in [-3, 3] (c s^4, s <= 12),
# so an absolute slack of 1e-12 * 1e4 * 100 terms on top of the relative one.
INVARIANCE_ATOL = 1e-9


def _brute_double_well(x, a, b, c, d0, ordered, temperature):
    """The paper's sum over i != j (or i < j), one pair at a time, in plain Python."""
    k = len(x)
    total = 0.0
    for i in range(k):
        for j in range(k):
            if i == j or (not ordered and j < i):
                continue
            s = math.dist(x[i], x[j]) - d0
            total += a * s + b * s ** 2 + c * s ** 4
    return total / temperature


def _brute_lennard_jones(x, epsilon, r_m, tether, temperature):
    k = len(x)
    total = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            q = (r_m / math.dist(x[i], x[j])) ** 6
            total += epsilon * (q * q - 2 * q)
    mu = [sum(p[n] for p in x) / k for n in range(len(x[0]))]
    total += tether * sum(math.dist(p, mu) ** 2 for p in x)
    return total / temperature


def _term_scale_dw(x, dw):
    """Sum of |terms| of the ordered/unordered double-well sum, the scale of its rounding."""
    d = np.linalg.norm(x[..., dw._i, :] - x[..., dw._j, :], axis=-1)
    s = d - dw.d0
    return dw._scale * np.sum(abs(dw.a * s) + abs(dw.b) * s ** 2 + dw.c * s ** 4, axis=-1)


def _separated(rng, shape, k, d, spread=1.5):
    """Configurations whose particles stay > ~0.5 apart (a jittered lattice), for LJ."""
    grid = np.stack(np.meshgrid(*[np.arange(3)] * d, indexing="ij"), -1).reshape(-1, d)
    out = np.empty(shape + (k, d))
    for idx in np.ndindex(*shape):
        sites = grid[rng.permutation(len(grid))[:k]]
        out[idx] = spread * sites + 0.2 * rng.uniform(-1, 1, (k, d))
    return out


DW_CASES = [dict(), dict(a=0.7, b=-3.0, c=1.2, d0=2.5), dict(a=-0.3, b=1.0, c=0.1, d0=1.0)]


@pytest.mark.parametrize("params", DW_CASES)
@pytest.mark.parametrize("pairs", ["ordered", "unordered"])
@pytest.mark.parametrize("k,d", [(2, 1), (4, 2), (5, 3)])
def test_double_well_energy_matches_brute_force_pair_loop(params, pairs, k, d):
    rng = np.random.default_rng(k * 10 + d)
    x = 3.0 * rng.standard_normal((6, k, d))
    dw = DoubleWell(k, d, pairs=pairs, temperature=0.8, **params)
    want = np.array([_brute_double_well(c.tolist(), dw.a, dw.b, dw.c, dw.d0,
                                        pairs == "ordered", 0.8) for c in x])
    scale = _term_scale_dw(x, dw)
    assert np.max(np.abs(dw.energy(x) - want) / scale) < ENERGY_RTOL
    assert np.max(np.abs(kernel_energy(dw, x) - want) / scale) < ENERGY_RTOL


def test_lennard_jones_energy_matches_brute_force_pair_loop():
    rng = np.random.default_rng(7)
    for k, d, tether in [(2, 2, 0.0), (5, 3, 0.0), (13, 3, 1.3), (6, 2, 0.4)]:
        x = _separated(rng, (4,), k, d) + rng.uniform(-5, 5, (4, 1, d))  # off-centre
        lj = LennardJones(k, d, epsilon=1.7, r_m=1.1, tether=tether, temperature=1.3)
        want = np.array([_brute_lennard_jones(c.tolist(), 1.7, 1.1, tether, 1.3) for c in x])
        np.testing.assert_allclose(lj.energy(x), want, rtol=ENERGY_RTOL, atol=ENERGY_RTOL)
        np.testing.assert_allclose(kernel_energy(lj, x), want, rtol=ENERGY_RTOL,
                                   atol=ENERGY_RTOL)


def test_ordered_pairs_give_exactly_twice_the_unordered_energy():
    x = 2.0 * np.random.default_rng(1).standard_normal((20, 4, 2))
    ordered, unordered = DoubleWell(4, 2), DoubleWell(4, 2, pairs="unordered")
    # the factor 2 enters as a power-of-two scale: exact in floating point
    np.testing.assert_array_equal(ordered.energy(x), 2.0 * unordered.energy(x))
    np.testing.assert_array_equal(ordered.force(x), 2.0 * unordered.force(x))


@pytest.mark.parametrize("make", [lambda T: DoubleWell(4, 2, temperature=T),
                                  lambda T: LennardJones(4, 2, tether=0.5, temperature=T)])
def test_temperature_divides_energy_and_force(make):
    x = _separated(np.random.default_rng(2), (5,), 4, 2)
    cold, hot = make(1.0), make(2.5)
    np.testing.assert_allclose(2.5 * hot.energy(x), cold.energy(x), rtol=ENERGY_RTOL)
    np.testing.assert_allclose(2.5 * hot.force(x), cold.force(x), rtol=ENERGY_RTOL)
    np.testing.assert_allclose(2.5 * kernel_energy(hot, x), cold.energy(x), rtol=ENERGY_RTOL)


POTENTIALS = [
    pytest.param(lambda: DoubleWell(4, 2, temperature=0.7), id="dw4-ordered"),
    pytest.param(lambda: DoubleWell(5, 3, a=0.4, pairs="unordered"), id="dw5-3d-unordered"),
    pytest.param(lambda: LennardJones(5, 3, epsilon=0.8, r_m=1.2), id="lj5"),
    pytest.param(lambda: LennardJones(6, 2, tether=0.9, temperature=1.5), id="lj6-tether"),
]


def _configs(pot, rng, shape=(3,)):
    shift = rng.uniform(-2, 2, shape + (1, pot.dim))
    return _separated(rng, shape, pot.n_particles, pot.dim) + shift


@pytest.mark.parametrize("make", POTENTIALS)
def test_force_equals_minus_autograd_gradient_of_energy(make):
    pot = make()
    x = _configs(pot, np.random.default_rng(3))
    grad = autograd.grad(lambda y: pot.energy(y).sum())(x)
    assert np.all(np.isfinite(grad)), "the zero diagonal distances must not reach the gradient"
    force = pot.force(x)
    assert np.max(np.abs(force + grad)) < FORCE_RTOL * np.max(np.abs(force))
    check_grads(pot.energy, modes=["rev"], order=1)(x[0])


@pytest.mark.parametrize("make", POTENTIALS)
def test_force_matches_central_differences_of_energy(make):
    pot = make()
    x = _configs(pot, np.random.default_rng(4), shape=())
    fd = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = FD_STEP
        fd[idx] = -(pot.energy(x + step) - pot.energy(x - step)) / (2 * FD_STEP)
    force = pot.force(x)
    assert np.max(np.abs(force - fd)) < FD_RTOL * np.max(np.abs(force))


def test_double_well_pair_minima_are_the_papers_values():
    minima = DoubleWell(2, 2).pair_minima()
    np.testing.assert_allclose(minima, [4 - math.sqrt(4 / 1.8), 4 + math.sqrt(4 / 1.8)],
                               rtol=1e-15)
    np.testing.assert_allclose(minima, [2.509, 5.491], atol=5e-4)


@pytest.mark.parametrize("params", DW_CASES + [dict(a=1.5), dict(a=-2.0, b=-1.0)])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_a_pair_at_a_double_well_minimum_feels_no_force(params, dim):
    dw = DoubleWell(2, dim, temperature=1.0, **params)
    minima = dw.pair_minima()
    assert minima.size >= 1
    grid = np.linspace(1e-3, 2 * dw.d0 + 4, 200001)
    v = dw.pair_potential(grid)
    interior = (v[1:-1] < v[:-2]) & (v[1:-1] < v[2:])
    np.testing.assert_allclose(minima, grid[1:-1][interior], atol=2 * (grid[1] - grid[0]))
    for d_min in minima:
        x = np.zeros((2, dim))
        x[1, 0] = d_min
        assert np.max(np.abs(dw.force(x))) < MINIMUM_FORCE_ATOL
        assert dw.energy(x) == pytest.approx(2 * dw.pair_potential(d_min), rel=MINIMUM_ENERGY_RTOL)
    if params == {}:  # the paper's v at its minima: -b^2 / (4c)
        x = np.array([[0.0] * dim, [minima[0]] + [0.0] * (dim - 1)])
        assert dw.energy(x) == pytest.approx(2 * -16 / 3.6, rel=MINIMUM_ENERGY_RTOL)


def test_lennard_jones_pair_at_r_m_has_energy_minus_epsilon_and_no_force():
    lj = LennardJones(2, 3, epsilon=2.3, r_m=1.4, tether=5.0, temperature=1.0)
    direction = np.array([1.0, 2.0, -2.0]) / 3.0
    x = np.array([0.3 * direction, 0.3 * direction + 1.4 * direction]) + 7.0
    # the tether pulls towards the centre; on a pair it adds k_t r^2 / 2
    assert lj.energy(x) == pytest.approx(-2.3 + 5.0 * 1.4 ** 2 / 2, rel=MINIMUM_ENERGY_RTOL)
    plain = LennardJones(2, 3, epsilon=2.3, r_m=1.4)
    assert plain.energy(x) == pytest.approx(-2.3, rel=MINIMUM_ENERGY_RTOL)
    assert kernel_energy(plain, x) == pytest.approx(-2.3, rel=MINIMUM_ENERGY_RTOL)
    assert np.max(np.abs(plain.force(x))) < MINIMUM_FORCE_ATOL
    np.testing.assert_allclose(plain.pair_potential([1.4]), [-2.3], rtol=1e-15)


@given(st.data())
def test_energy_is_invariant_and_force_equivariant_under_the_euclidean_group(data):
    k = data.draw(st.integers(2, 6))
    d = data.draw(st.integers(1, 3))
    which = data.draw(st.sampled_from(["dw", "lj"]))
    pot = (DoubleWell(k, d, a=0.3) if which == "dw"
           else LennardJones(k, d, tether=0.6, epsilon=0.01))
    x = data.draw(configurations(n_particles=k, dim=d, batch_shape=(2,), scale=3.0,
                                 min_separation=0.3))
    g = data.draw(group_elements(k, d, translation_scale=3.0))
    assert_invariant(pot.energy, x, **g._asdict(), atol=INVARIANCE_ATOL)
    assert_invariant(lambda y: kernel_energy(pot, y), x, **g._asdict(), atol=INVARIANCE_ATOL)
    assert_equivariant(pot.force, x, **g._asdict(), kind="vector", atol=INVARIANCE_ATOL)


@pytest.mark.parametrize("make", POTENTIALS)
def test_batch_shapes_are_preserved_and_entries_match_single_calls(make):
    pot = make()
    x = _configs(pot, np.random.default_rng(5), shape=(2, 3))
    energy, force = pot.energy(x), pot.force(x)
    assert energy.shape == (2, 3) and force.shape == x.shape
    assert kernel_energy(pot, x).shape == (2, 3)
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(pot.energy(x[idx]), energy[idx], rtol=ENERGY_RTOL)
        np.testing.assert_allclose(pot.force(x[idx]), force[idx], rtol=ENERGY_RTOL, atol=1e-14)
    assert np.ndim(pot.energy(x[0, 0])) == 0


def test_lennard_jones_kernel_returns_inf_for_coincident_particles():
    lj = LennardJones(3, 2)
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert kernel_energy(lj, x) == np.inf
    with np.errstate(divide="ignore"):
        assert lj.energy(x) == np.inf


def test_numba_energy_follows_the_protocol():
    for pot in (DoubleWell(3, 2), LennardJones(3, 2, tether=1.0)):
        ne = check_numba_energy(pot)
        assert isinstance(ne, NumbaEnergy)
        assert ne.params.dtype == np.float64 and ne.params.flags.c_contiguous


@pytest.mark.parametrize("call,exc,match", [
    (lambda: DoubleWell(4, 2).energy(np.zeros((3, 2))), ValueError, "K = 4"),
    (lambda: DoubleWell(4, 2).energy(np.zeros((4, 3))), ValueError, "D = 2"),
    (lambda: DoubleWell(4, 2).force(np.zeros(8)), ValueError, "shape"),
    (lambda: DoubleWell(2, 1).energy([[0.0], [np.nan]]), ValueError, "NaN"),
    (lambda: LennardJones(2, 1).force([[0.0], [np.inf]]), ValueError, "NaN or infinite"),
    (lambda: DoubleWell(2, 1).energy("ab"), TypeError, "numeric"),
    (lambda: DoubleWell(4, 2, temperature=0.0), ValueError, "temperature"),
    (lambda: DoubleWell(4, 2, temperature=-1.0), ValueError, "temperature"),
    (lambda: DoubleWell(4, 2, pairs="both"), ValueError, "ordered"),
    (lambda: DoubleWell(4, 2, pairs=2), TypeError, "pairs"),
    (lambda: DoubleWell(1, 2), ValueError, "n_particles"),
    (lambda: DoubleWell(4, 2, b=np.nan), ValueError, "b must be finite"),
    (lambda: LennardJones(4, 2, epsilon=0.0), ValueError, "epsilon"),
    (lambda: LennardJones(4, 2, tether=-1.0), ValueError, "tether"),
    (lambda: LennardJones(4, 2, r_m="1"), TypeError, "r_m"),
    (lambda: kernel_energy(object(), np.zeros((2, 2))), TypeError, "numba_energy"),
])
def test_bad_inputs_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_pair_minima_are_positive_distances_in_both_branches():
    from refimpl.potentials import DoubleWell
    closed_form = DoubleWell(2, 2, d0=1.0).pair_minima()
    general = DoubleWell(2, 2, d0=1.0, a=1e-300).pair_minima()
    np.testing.assert_allclose(closed_form, general, rtol=1e-12)
    assert np.all(closed_form > 0) and closed_form.size == 1
