"""EquivariantFlow: exactness against analytic and brute-force oracles,
batch and thread independence, and its errors."""

import math

import autograd
import numba
import numpy as np
import pytest
from numba import njit

import refimpl
from refimpl.psi import PAIR_SIG, PREPARE_SIG, Psi

TIGHT = dict(rtol=1e-12, atol=1e-12)
# Global error of an adaptive solve stays within a modest multiple of the
# local tolerance for these smooth, non-stiff flows; 100x is a safe bound.
GLOBAL_ERROR_FACTOR = 100.0


# psi(r, t) = c (1 + b t): on mean-free x, g_i = K psi x_i, so the flow is a
# pure scaling x(t) = z exp(K c (t + b t^2 / 2)) with log|det| = (K-1) D log(scale).
@njit(PREPARE_SIG, cache=True)
def _const_prepare(theta, t, ctx):
    ctx[0] = theta[0] * (1.0 + theta[1] * t)


@njit(PAIR_SIG, cache=True)
def _const_pair(theta, ctx, r):
    return ctx[0], 0.0


class LinearInTimePsi(Psi):
    prepare = staticmethod(_const_prepare)
    pair = staticmethod(_const_pair)
    ctx_size = 1


def _rbf(scale=0.02, seed=0):
    """Random weights; 0.02 keeps |logdet| at a few nats (larger weights near r = 0
    contract pairs so strongly that the inverse becomes ill-conditioned)."""
    return refimpl.RBFKernel(scale * np.random.default_rng(seed).standard_normal((50, 10)))


@pytest.mark.parametrize("k,d", [(2, 1), (4, 2), (6, 3)])
@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (0.3, -0.5)])
def test_forward_matches_analytic_scaling_flow(k, d, t0, t1):
    c, b = 0.15, -0.4
    flow = refimpl.EquivariantFlow(LinearInTimePsi(np.array([c, b])), t0, t1, **TIGHT)
    z = refimpl.MeanFreeNormal(k, d).sample(3, 0)
    x, logdet = flow.forward(z)
    log_scale = k * c * ((t1 - t0) + b * (t1 ** 2 - t0 ** 2) / 2)
    tol = GLOBAL_ERROR_FACTOR * TIGHT["rtol"]
    np.testing.assert_allclose(x, z * math.exp(log_scale), rtol=tol, atol=tol)
    np.testing.assert_allclose(logdet, (k - 1) * d * log_scale, rtol=tol, atol=tol)
    back, logdet_inv = flow.inverse(x)
    np.testing.assert_allclose(back, z, rtol=tol, atol=tol)
    np.testing.assert_allclose(logdet_inv, -(k - 1) * d * log_scale, rtol=tol, atol=tol)


def test_zero_weights_give_the_identity_exactly():
    flow = refimpl.EquivariantFlow(refimpl.RBFKernel(), n_particles=3, dim=2)
    z = refimpl.MeanFreeNormal(3, 2).sample(4, 0)
    x, logdet = flow.forward(z)
    np.testing.assert_array_equal(x, z)
    np.testing.assert_array_equal(logdet, 0.0)


@pytest.mark.parametrize("psi", [_rbf(), refimpl.TanhMLP(8, rng=1, v=np.full(8, 0.05))],
                         ids=["rbf", "mlp"])
@pytest.mark.parametrize("rtol", [1e-6, 1e-10])
def test_inverse_undoes_forward_and_logdets_cancel(psi, rtol):
    flow = refimpl.EquivariantFlow(psi, rtol=rtol, atol=rtol)
    z = refimpl.MeanFreeNormal(5, 3).sample(16, 3)
    x, logdet = flow.forward(z)
    back, logdet_inv = flow.inverse(x)
    tol = GLOBAL_ERROR_FACTOR * rtol
    np.testing.assert_allclose(back, z, atol=tol * (1 + np.abs(z).max()))
    np.testing.assert_allclose(logdet + logdet_inv, 0.0, atol=tol * (1 + np.abs(logdet).max()))


def _mean_free_basis(k, d):
    centring = np.kron(np.eye(k) - np.ones((k, k)) / k, np.eye(d))
    return np.linalg.svd(centring)[0][:, : (k - 1) * d]


@pytest.mark.parametrize("k,d", [(3, 2), (4, 2), (4, 3)])
def test_logdet_equals_brute_force_jacobian_on_the_mean_free_subspace(k, d):
    """log|det| of the central-difference Jacobian of z -> x in an orthonormal
    basis of the subspace. Solver error ~1e-12 divided by the 2e-5 difference
    step gives ~1e-7 noise per entry; truncation is ~eps^2 ~ 1e-10."""
    flow = refimpl.EquivariantFlow(_rbf(seed=k), **TIGHT)
    basis = _mean_free_basis(k, d)
    z = refimpl.MeanFreeNormal(k, d).sample(1, 5)[0]
    eps = 1e-5
    shifts = eps * basis.T.reshape(-1, k, d)
    plus, _ = flow.forward(z + shifts)
    minus, _ = flow.forward(z - shifts)
    jac = basis.T @ ((plus - minus).reshape(len(shifts), -1).T / (2 * eps))
    brute = np.linalg.slogdet(jac)[1]
    _, logdet = flow.forward(z[None])
    assert abs(brute) > 0.05, "weights too small: the test would not be informative"
    assert logdet[0] == pytest.approx(brute, abs=1e-6)


def test_sample_log_q_matches_log_prob_within_tolerance():
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-10, atol=1e-10, n_particles=4, dim=2)
    x, log_q = flow.sample(32, 11)
    # l is integrated with atol + rtol |l|: scale the bound by the size of log q
    bound = GLOBAL_ERROR_FACTOR * 1e-10 * (1.0 + np.abs(log_q).max())
    np.testing.assert_allclose(flow.log_prob(x), log_q, rtol=0, atol=bound)
    x2, log_q2 = flow.sample(32, 11)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(log_q, log_q2)


def test_a_sample_is_the_same_alone_in_any_batch_and_with_any_thread_count():
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-6, atol=1e-6)
    z = refimpl.MeanFreeNormal(6, 3).sample(64, 2)
    alone = [flow.forward(z[i:i + 1]) for i in (0, 17, 63)]
    in_batch = flow.forward(z)
    reordered = flow.forward(z[::-1])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = flow.forward(z)
    finally:
        numba.set_num_threads(before)
    for idx, (x, logdet) in zip((0, 17, 63), alone):
        assert np.array_equal(x[0], in_batch[0][idx]) and logdet[0] == in_batch[1][idx]
        assert np.array_equal(x[0], reordered[0][63 - idx])
    np.testing.assert_array_equal(one_thread[0], in_batch[0])
    np.testing.assert_array_equal(one_thread[1], in_batch[1])


def test_forward_carries_the_centre_of_mass_along():
    flow = refimpl.EquivariantFlow(_rbf(), **TIGHT)
    z = refimpl.MeanFreeNormal(4, 2).sample(5, 8)
    shift = np.array([3.0, -1.5])
    x, logdet = flow.forward(z)
    xs, logdet_s = flow.forward(z + shift)
    np.testing.assert_allclose(xs, x + shift, atol=1e-9)
    np.testing.assert_allclose(logdet_s, logdet, atol=1e-9)
    np.testing.assert_allclose(xs.mean(axis=1), np.broadcast_to(shift, (5, 2)), atol=1e-12)


def test_log_prob_refuses_configurations_that_are_not_mean_free():
    flow = refimpl.EquivariantFlow(_rbf())
    x = refimpl.MeanFreeNormal(4, 2).sample(3, 0) + 0.5
    with pytest.raises(ValueError, match="mean-free"):
        flow.log_prob(x)


def test_statistics_are_reported_per_sample():
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-8, atol=1e-8)
    flow.forward(refimpl.MeanFreeNormal(4, 2).sample(6, 1).reshape(2, 3, 4, 2))
    stats = flow.last_stats
    assert stats.nfev.shape == (2, 3)
    # FSAL: one evaluation at t0, one for the first-step guess, six per attempt
    np.testing.assert_array_equal(stats.nfev, 2 + 6 * (stats.naccept + stats.nreject))
    assert np.all(stats.naccept >= 1)


def test_statistics_come_with_the_result_and_only_public_calls_set_last_stats():
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-8, atol=1e-8, n_particles=4, dim=2)
    x, log_q, stats = flow.sample(3, 5, return_stats=True)
    assert flow.last_stats is stats and stats.nfev.shape == (3,)
    # FlowModel's solves (here on 7 points, with and without a gradient) report their own
    # statistics and leave the flow's alone
    model = refimpl.FlowModel(flow)
    data = refimpl.MeanFreeNormal(4, 2).sample(7, 6)
    log_p, model_stats = model.log_prob(model.params, data, return_stats=True)
    autograd.grad(lambda p: np.sum(model.log_prob(p, data)))(model.params)
    assert flow.last_stats is stats and model_stats.nfev.shape == (7,)
    assert model.forward(model.params, x, frozen=model.step_times(model.params, x),
                         return_stats=True)[2] is None  # a replay makes no solver decisions
    log_p2, stats2 = flow.log_prob(data, return_stats=True)
    assert flow.last_stats is stats2
    np.testing.assert_array_equal(log_p2, log_p)
    for name in ("nfev", "naccept", "nreject"):
        np.testing.assert_array_equal(getattr(stats2, name), getattr(model_stats, name))


def test_flow_and_flow_model_give_bitwise_the_same_numbers():
    """One implementation under both front ends."""
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-6, atol=1e-8, n_particles=3, dim=3)
    model = refimpl.FlowModel(flow)
    p = model.params
    z = refimpl.MeanFreeNormal(3, 3).sample(4, 2).reshape(2, 2, 3, 3)
    for got, want in [(flow.forward(z), model.forward(p, z)),
                      (flow.inverse(z), model.inverse(p, z)),
                      ((flow.log_prob(z),), (model.log_prob(p, z),)),
                      (flow.sample(5, 9), model.sample(p, 5, 9)),
                      (flow.push(z), model.push(p, z)),
                      (flow.sample(5, 9), flow.push(refimpl.MeanFreeNormal(3, 3).sample(5, 9)))]:
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_max_steps_raises_an_error_naming_the_sample():
    flow = refimpl.EquivariantFlow(_rbf(), rtol=1e-12, atol=1e-12, max_steps=5)
    z = refimpl.MeanFreeNormal(4, 2).sample(3, 1)
    with pytest.raises(refimpl.SolverError, match=r"sample \(0,\).*max_steps") as info:
        flow.forward(z)
    assert info.value.status == refimpl.ode.MAX_STEPS_EXCEEDED
    assert info.value.t < 1.0
    assert flow.last_stats is info.value.stats
    np.testing.assert_array_equal(info.value.stats.naccept + info.value.stats.nreject, 5)


def test_non_finite_dynamics_raise_instead_of_returning_nan():
    psi = LinearInTimePsi(np.array([400.0, 0.0]))  # x grows like exp(1600 t): overflows
    flow = refimpl.EquivariantFlow(psi, rtol=1e-3, atol=1e-3, max_steps=100_000)
    z = refimpl.MeanFreeNormal(3, 2).sample(2, 0)
    with pytest.raises(refimpl.SolverError) as info:
        flow.forward(z)
    assert info.value.status in (refimpl.ode.NOT_FINITE, refimpl.ode.STEP_TOO_SMALL)


@pytest.mark.parametrize("kwargs,error", [
    ({"rtol": 0.0}, ValueError), ({"atol": -1e-6}, ValueError), ({"rtol": np.nan}, ValueError),
    ({"t0": 1.0, "t1": 1.0}, ValueError), ({"t1": np.inf}, ValueError),
    ({"max_steps": 10.5}, TypeError), ({"max_steps": 0}, ValueError),
    ({"n_particles": 1}, ValueError), ({"dim": "2"}, TypeError), ({"rtol": "1e-6"}, TypeError),
])
def test_constructor_rejects_bad_settings(kwargs, error):
    with pytest.raises(error):
        refimpl.EquivariantFlow(_rbf(), **kwargs)


def test_constructor_rejects_a_psi_that_breaks_the_protocol():
    with pytest.raises(TypeError, match="psi protocol"):
        refimpl.EquivariantFlow(lambda r, t: r)


def test_methods_reject_bad_inputs():
    flow = refimpl.EquivariantFlow(_rbf(), n_particles=4, dim=2)
    with pytest.raises(ValueError, match="K = 4"):
        flow.forward(np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        flow.inverse(np.full((4, 2), np.nan))
    with pytest.raises(TypeError):
        flow.sample(3.0, 0)
    with pytest.raises(TypeError):
        flow.sample(3, rng=None)
    with pytest.raises(ValueError, match="n_particles"):
        refimpl.EquivariantFlow(_rbf()).sample(3, 0)
