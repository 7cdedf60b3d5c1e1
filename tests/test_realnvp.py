"""The nBG baseline: RealNVP on orthonormal coordinates of the mean-free subspace."""

import itertools

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads
from scipy import integrate

import refimpl
from refimpl.prior import helmert_basis
from refimpl.realnvp import RealNVP, rowwise_dot

# Orthonormality of the closed-form Helmert basis: a few ulps per entry.
BASIS_ATOL = 1e-14
# inverse(forward(z)) repeats each coupling's arithmetic backwards: rounding
# of exp(s) u + t over a handful of layers, relative to |u| ~ 1-10.
ROUNDTRIP_RTOL = ROUNDTRIP_ATOL = 1e-12
# Sum of clamped log-scales vs slogdet (LU) of autograd's exact Jacobian:
# both are exact up to rounding (~1e-14); 1e-10 is what the contract promises.
LOGDET_ATOL = 1e-10
# Quadrature of exp(log_prob) over the subspace: truncation of the box and
# the trapezoid rule's error on a smooth, fast-decaying integrand.
NORMALIZATION_TOL = 1e-4
# At the identity, log_prob differs from MeanFreeNormal only by rounding of
# |Q^T x|^2 versus |x|^2.
IDENTITY_RTOL = 1e-12
# log_q from sample vs log_prob of the same x: z is recomputed through the
# inverse and the basis; rounding only, amplified by at most exp(layers*c).
SAMPLE_LOGQ_ATOL = 1e-10
# A permutation of particles must move log_prob by clearly more than rounding.
PERMUTATION_MARGIN = 1e-3


def _perturbed(model, seed=1, scale=0.3):
    """Random parameters with every layer (including the zero-initialized last ones) non-zero."""
    noise = np.random.default_rng(seed).standard_normal(model.n_params)
    return model.params + scale * noise


CASES = [(2, 1), (2, 2), (3, 2), (4, 2), (4, 3)]


@pytest.mark.parametrize("k,d", CASES)
def test_helmert_basis_is_orthonormal_and_spans_the_mean_free_subspace(k, d):
    q = helmert_basis(k, d)
    assert q.shape == (k * d, (k - 1) * d)
    np.testing.assert_allclose(q.T @ q, np.eye((k - 1) * d), atol=BASIS_ATOL)
    # every column is a mean-free configuration
    assert np.max(np.abs(q.T.reshape(-1, k, d).mean(axis=1))) < BASIS_ATOL
    np.testing.assert_array_equal(q, helmert_basis(k, d))


@pytest.mark.parametrize("k,d", CASES)
def test_inverse_of_forward_is_the_identity_for_random_params(k, d):
    model = RealNVP(k, d, hidden=(16, 16), rng=0)
    params = _perturbed(model)
    z = np.random.default_rng(2).standard_normal((20, model.event_dim))
    u, logdet_fwd = model.forward(params, z)
    assert np.max(np.abs(u - z)) > 0.1  # the flow is far from the identity
    z_back, logdet_inv = model.inverse(params, u)
    np.testing.assert_allclose(z_back, z, rtol=ROUNDTRIP_RTOL, atol=ROUNDTRIP_ATOL)
    np.testing.assert_allclose(logdet_fwd + logdet_inv, 0.0, atol=ROUNDTRIP_ATOL)


@pytest.mark.parametrize("k,d", [(2, 2), (3, 2), (4, 2)])
def test_log_dets_equal_slogdet_of_the_brute_force_jacobian(k, d):
    model = RealNVP(k, d, hidden=(16, 16), rng=3)
    params = _perturbed(model, seed=4)
    z = np.random.default_rng(5).standard_normal(model.event_dim)
    u, logdet = model.forward(params, z)
    sign, want = np.linalg.slogdet(autograd.jacobian(lambda v: model.forward(params, v)[0])(z))
    assert sign != 0 and abs(logdet - want) < LOGDET_ATOL
    _, logdet_inv = model.inverse(params, u)
    _, want_inv = np.linalg.slogdet(autograd.jacobian(lambda v: model.inverse(params, v)[0])(u))
    assert abs(logdet_inv - want_inv) < LOGDET_ATOL


def test_log_prob_integrates_to_one_on_the_1d_subspace():
    model = RealNVP(2, 1, hidden=(8,), rng=6)
    params = _perturbed(model, seed=7)

    def density(u):
        return np.exp(model.log_prob(params, model.from_coordinates(np.array([u]))))

    mass, _ = integrate.quad(density, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12)
    assert abs(mass - 1.0) < NORMALIZATION_TOL


def test_log_prob_integrates_to_one_on_the_2d_subspace():
    model = RealNVP(2, 2, hidden=(8, 8), rng=8)
    params = _perturbed(model, seed=9, scale=0.2)
    axis = np.linspace(-15.0, 15.0, 751)
    u = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)
    density = np.exp(model.log_prob(params, model.from_coordinates(u)))
    # the integrand has left the box: mass is not truncated
    edge = np.concatenate([density[0], density[-1], density[:, 0], density[:, -1]])
    assert edge.max() < 1e-12 * density.max()
    mass = integrate.trapezoid(integrate.trapezoid(density, axis, axis=1), axis)
    assert abs(mass - 1.0) < NORMALIZATION_TOL


@pytest.mark.parametrize("k,d", CASES)
def test_identity_init_log_prob_equals_mean_free_normal(k, d):
    model = RealNVP(k, d, rng=10)
    x = refimpl.MeanFreeNormal(k, d).sample(30, 11) * 2.0
    np.testing.assert_allclose(model.log_prob(model.params, x),
                               refimpl.MeanFreeNormal(k, d).log_prob(x), rtol=IDENTITY_RTOL)


@pytest.mark.parametrize("k,d", CASES)
def test_sampled_log_q_equals_log_prob_of_the_samples(k, d):
    model = RealNVP(k, d, rng=12)
    params = _perturbed(model, seed=13)
    x, log_q = model.sample(params, 50, np.random.default_rng(14))
    assert x.shape == (50, k, d) and log_q.shape == (50,)
    assert np.max(np.abs(x.mean(axis=1))) < 1e-12
    np.testing.assert_allclose(model.log_prob(params, x), log_q, rtol=0, atol=SAMPLE_LOGQ_ATOL)


def test_log_prob_is_not_permutation_invariant_while_the_prior_is():
    k, d = 4, 2
    model = RealNVP(k, d, hidden=(16, 16), rng=15)
    params = _perturbed(model, seed=16)
    x, log_q = model.sample(params, 8, 17)
    prior = refimpl.MeanFreeNormal(k, d)
    changes = {}
    for perm in itertools.permutations(range(k)):
        changes[perm] = np.max(np.abs(model.log_prob(params, x[:, perm]) - log_q))
        assert np.max(np.abs(prior.log_prob(x[:, perm]) - prior.log_prob(x))) < 1e-12
    worst = max(changes, key=changes.get)
    assert changes[worst] > PERMUTATION_MARGIN, changes
    # even a single transposition of two particles breaks the symmetry
    assert changes[(1, 0, 2, 3)] > PERMUTATION_MARGIN


def test_results_are_bitwise_independent_of_the_batch():
    model = RealNVP(3, 2, rng=18)
    params = _perturbed(model, seed=19)
    x, log_q = model.sample(params, 37, 20)
    batch = model.log_prob(params, x)
    for i in range(37):
        assert model.log_prob(params, x[i]) == batch[i]
    np.testing.assert_array_equal(model.log_prob(params, x[:36].reshape(4, 9, 3, 2)),
                                  batch[:36].reshape(4, 9))
    x_head, log_q_head = model.sample(params, 5, 20)  # same draws, smaller batch
    np.testing.assert_array_equal(x_head, x[:5])
    np.testing.assert_array_equal(log_q_head, log_q[:5])


def test_rowwise_dot_matches_numpy_and_its_derivatives_pass_check_grads():
    np.random.seed(2)
    gen = np.random.default_rng(32)
    h, w = gen.standard_normal((2, 5, 4)), gen.standard_normal((4, 3))
    np.testing.assert_allclose(rowwise_dot(h, w), h @ w, rtol=1e-13, atol=1e-14)
    check_grads(rowwise_dot, modes=["fwd", "rev"], order=2)(h, w)


def test_gradient_of_mean_log_prob_passes_check_grads():
    np.random.seed(0)  # check_grads draws its projection directions from np.random
    model = RealNVP(4, 2, hidden=(8, 8), rng=21)
    params = _perturbed(model, seed=22)
    x, _ = model.sample(params, 10, 23)
    check_grads(lambda p: anp.mean(model.log_prob(p, x)), modes=["rev"], order=1)(params)


def test_gradients_of_sampled_x_and_log_q_pass_check_grads():
    np.random.seed(1)
    model = RealNVP(4, 2, hidden=(8, 8), rng=24)
    params = _perturbed(model, seed=25)
    check_grads(lambda p: model.sample(p, 10, 26)[0], modes=["rev"], order=1)(params)
    check_grads(lambda p: anp.mean(model.sample(p, 10, 26)[1]), modes=["rev"], order=1)(params)


def test_zero_initialized_last_layers_still_receive_gradient():
    model = RealNVP(4, 2, hidden=(8, 8), rng=27)
    x = refimpl.MeanFreeNormal(4, 2).sample(10, 28) * 0.5
    grad = autograd.grad(lambda p: anp.mean(model.log_prob(p, x)))(model.params)
    last_w, last_b = model.unflatten(grad)[0][-1]
    assert np.max(np.abs(last_w)) > 1e-3 and np.max(np.abs(last_b)) > 1e-3


def test_initialization_and_sampling_are_deterministic_given_the_seed():
    a, b = RealNVP(4, 2, rng=29), RealNVP(4, 2, rng=np.random.default_rng(29))
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, RealNVP(4, 2, rng=30).params)
    params = _perturbed(a)
    for got, want in zip(a.sample(params, 5, 31), a.sample(params, 5, np.random.default_rng(31))):
        np.testing.assert_array_equal(got, want)
    assert a.params.dtype == np.float64 and a.params.shape == (a.n_params,)


@pytest.mark.parametrize("args,kwargs,error", [
    ((1, 2), {}, ValueError), ((3, 0), {}, ValueError), ((3.0, 2), {}, TypeError),
    ((3, 2), {"n_layers": 0}, ValueError), ((3, 2), {"hidden": 16}, TypeError),
    ((3, 2), {"hidden": (16, 0)}, ValueError), ((3, 2), {"init_scale": -1.0}, ValueError),
    ((3, 2), {"scale_clamp": 0.0}, ValueError), ((3, 2), {"rng": "seed"}, TypeError),
])
def test_constructor_rejects_bad_arguments(args, kwargs, error):
    with pytest.raises(error):
        RealNVP(*args, **kwargs)


def test_entry_points_reject_bad_inputs():
    model = RealNVP(3, 2, hidden=(8,), rng=0)
    p = model.params
    x = refimpl.MeanFreeNormal(3, 2).sample(4, 0)
    with pytest.raises(ValueError, match=r"shape \(%d,\)" % model.n_params):
        model.log_prob(p[:-1], x)
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(np.where(np.arange(p.size) == 3, np.nan, p), x)
    with pytest.raises(TypeError):
        model.log_prob(["a"] * p.size, x)
    with pytest.raises(ValueError, match="mean-free"):
        model.log_prob(p, x + 1.0)
    with pytest.raises(ValueError, match="K = 3"):
        model.log_prob(p, np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(p, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        model.forward(p, np.zeros((5, 6)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        model.inverse(p, np.zeros(()))
    with pytest.raises(ValueError):
        model.sample(p, 0, 0)
    with pytest.raises(TypeError):
        model.sample(p, 2, "seed")


def test_an_empty_batch_gives_empty_log_densities():
    model = RealNVP(4, 2, n_layers=2, hidden=(8,), rng=0)
    assert model.log_prob(model.params, np.zeros((0, 4, 2))).shape == (0,)
