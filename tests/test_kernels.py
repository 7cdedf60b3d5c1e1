"""The Numba field and divergence against NumPy twins and a brute-force Jacobian."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import refimpl

from twins import divergence, field, numpy_psi

# Field and divergence sum the same terms as the twins in another order;
# relative to the sum of |terms| they agree to rounding.
TWIN_RTOL = 1e-12
# autograd differentiates the twin exactly: the Jacobian trace differs from
# the analytic divergence only by rounding.
JACOBIAN_RTOL = 1e-11


def _families():
    rng = np.random.default_rng(11)
    rbf = refimpl.RBFKernel(0.3 * rng.standard_normal((50, 10)))
    mlp = refimpl.TanhMLP(12, rng=4, v=0.3 * rng.standard_normal(12), v0=0.1)
    return [(rbf, lambda r, t: numpy_psi(rbf, r, t)), (mlp, lambda r, t: numpy_psi(mlp, r, t))]


FAMILIES = _families()


@pytest.mark.parametrize("family", range(len(FAMILIES)), ids=["rbf", "mlp"])
@pytest.mark.parametrize("k,d", [(2, 2), (4, 2), (5, 3), (13, 3), (9, 1)])
def test_field_and_divergence_match_numpy_twin(family, k, d):
    psi, psi_fn = FAMILIES[family]
    rng = np.random.default_rng(k * 10 + d)
    x = 2.0 * rng.standard_normal((6, k, d))
    t = 0.41
    g = refimpl.vector_field(x, t, psi)
    div = refimpl.divergence(x, t, psi)
    for b in range(x.shape[0]):
        want = field(x[b], t, psi_fn)
        scale = np.max(np.abs(want)) + 1.0
        assert np.max(np.abs(g[b] - want)) <= TWIN_RTOL * scale
        want_div = divergence(x[b], t, psi_fn)
        assert abs(div[b] - want_div) <= TWIN_RTOL * (abs(want_div) + 1.0)


def _twin_field_autograd(psi, x_flat, k, d, t):
    """The RBF field written in autograd.numpy, for an exact Jacobian."""
    x = anp.reshape(x_flat, (k, d))
    diff = x[:, None, :] - x[None, :, :]
    eye = anp.eye(k)
    r = anp.sqrt(anp.sum(diff ** 2, axis=-1) + eye)  # +eye: avoid sqrt'(0) on the diagonal
    c = anp.dot(psi.weights, anp.exp(-psi.gamma_t * (t - psi.nu) ** 2))
    value = anp.dot(anp.exp(-psi.gamma * (r[..., None] - psi.mu) ** 2), c) * (1 - eye)
    return anp.reshape(anp.sum(value[..., None] * diff, axis=1), (-1,))


@pytest.mark.parametrize("k,d", [(2, 2), (4, 2), (6, 3)])
def test_divergence_equals_trace_of_exact_jacobian(k, d):
    psi = FAMILIES[0][0]
    rng = np.random.default_rng(k + d)
    x = 1.5 * rng.standard_normal((k, d))
    t = 0.77
    jac = autograd.jacobian(lambda v: _twin_field_autograd(psi, v, k, d, t))(x.ravel())
    trace = np.trace(jac)
    div = refimpl.divergence(x, t, psi)
    assert abs(div - trace) <= JACOBIAN_RTOL * (np.sum(np.abs(np.diag(jac))) + 1.0)


def test_seed_equation_4_with_the_diagonal_is_off_by_d_k_psi0():
    """The paper's eq. 4 erratum (README, "The math"): including j = i adds D K psi(0, t)."""
    psi, psi_fn = FAMILIES[0]
    x = np.random.default_rng(0).standard_normal((5, 3))
    t = 0.2
    k, d = x.shape
    diff = x[:, None, :] - x[None, :, :]
    r = np.sqrt(np.sum(diff ** 2, axis=-1))
    value, slope = psi_fn(r, t)
    literal = np.sum(slope * r + d * value)  # the paper's double sum, diagonal included
    psi0 = psi_fn(np.zeros(1), t)[0][0]
    assert literal - refimpl.divergence(x, t, psi) == pytest.approx(d * k * psi0, rel=1e-10)


def test_coincident_particles_give_finite_values_and_the_limit():
    psi, psi_fn = FAMILIES[0]
    x = np.array([[0.5, 0.5], [0.5, 0.5], [2.0, -1.0]])
    t = 0.3
    g = refimpl.vector_field(x, t, psi)
    div = refimpl.divergence(x, t, psi)
    assert np.all(np.isfinite(g)) and np.isfinite(div)
    np.testing.assert_allclose(g, field(x, t, psi_fn), rtol=1e-12, atol=1e-14)
    assert div == pytest.approx(divergence(x, t, psi_fn), rel=1e-12)


def test_batch_shapes_are_preserved():
    psi = FAMILIES[0][0]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 2))
    assert refimpl.vector_field(x, 0.0, psi).shape == x.shape
    assert refimpl.divergence(x, 0.0, psi).shape == (2, 3)
    assert refimpl.divergence(x[0, 0], 0.0, psi).shape == ()
    flat = refimpl.vector_field(x.reshape(-1, 4, 2), 0.0, psi)
    np.testing.assert_array_equal(flat.reshape(x.shape), refimpl.vector_field(x, 0.0, psi))


@pytest.mark.parametrize("x,t,error", [
    (np.zeros(4), 0.0, ValueError),              # rank 1
    (np.zeros((1, 2)), 0.0, ValueError),         # K = 1
    (np.zeros((3, 0)), 0.0, ValueError),         # D = 0
    (np.full((3, 2), np.nan), 0.0, ValueError),  # NaN
    (np.full((3, 2), np.inf), 0.0, ValueError),  # inf
    (np.zeros((3, 2)), np.nan, ValueError),      # t NaN
    (np.zeros((3, 2)), "0", TypeError),          # t not a number
    (np.array([["a", "b"], ["c", "d"]]), 0.0, TypeError),
])
def test_bad_inputs_raise(x, t, error):
    with pytest.raises(error):
        refimpl.vector_field(x, t, FAMILIES[0][0])
    with pytest.raises(error):
        refimpl.divergence(x, t, FAMILIES[0][0])
