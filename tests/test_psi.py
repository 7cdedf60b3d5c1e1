"""psi families against direct NumPy formulas, and the psi protocol itself."""

import gc
import math
import weakref

import numpy as np
import pytest
from numba import njit, types

import refimpl
from refimpl.psi import PAIR_SIG, PREPARE_SIG, Psi, check_psi

from twins import numpy_psi

# The RBF kernel sums Gaussians by exact ratios from the nearest centre; its
# rounding differs from the direct sum by ~50 ulp of the sum of |terms|.
RECURRENCE_RTOL = 1e-12
# It drops Gaussians below GAUSSIAN_CUTOFF = 1e-22: at most 1e-22 max|c| / (1 - rho)
# (rho = e^-1 here) for psi, times 2 gamma |r - mu| <= 2 * 18.8 * 16 for the slope.
CUTOFF_ATOL = 1e-21
CUTOFF_SLOPE_ATOL = 1e-18
# The MLP is evaluated term by term in the same order as the twin: rounding only.
MLP_RTOL = 1e-13


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0, 1.4])
@pytest.mark.parametrize("n_distance,n_time,r_max", [(50, 10, 8.0), (7, 3, 3.0), (2, 1, 1.0)])
def test_rbf_values_match_direct_double_sum(t, n_distance, n_time, r_max):
    rng = np.random.default_rng(n_distance)
    psi = refimpl.RBFKernel(rng.standard_normal((n_distance, n_time)), n_distance=n_distance,
                            n_time=n_time, r_max=r_max)
    assert psi.theta[4] > 0, "linspace centres must take the equal-spacing path"
    r = np.concatenate([np.linspace(0.0, 2 * r_max, 4001), [1e-12, 0.5 * psi.mu[1]]])
    value, slope = psi.values(r, t)
    want_value, want_slope = numpy_psi(psi, r, t)
    # scale: the sum of |terms|, the natural size of the rounding of a sum
    d = r[:, None] - psi.mu
    e = np.exp(-psi.gamma * d ** 2)
    c = np.abs(psi.weights @ np.exp(-psi.gamma_t * (t - psi.nu) ** 2))
    allowed = RECURRENCE_RTOL * (e @ c) + CUTOFF_ATOL * c.max()
    assert np.all(np.abs(value - want_value) <= allowed)
    allowed = RECURRENCE_RTOL * ((np.abs(2 * psi.gamma * d) * e) @ c) + CUTOFF_SLOPE_ATOL * c.max()
    assert np.all(np.abs(slope - want_slope) <= allowed)


def test_rbf_unequal_centres_use_the_direct_sum():
    rng = np.random.default_rng(3)
    mu = np.sort(rng.uniform(0, 6, 12))
    psi = refimpl.RBFKernel(rng.standard_normal((12, 4)), mu=mu, n_time=4, gamma=3.0)
    assert psi.theta[4] == 0.0
    r = np.linspace(0, 9, 301)
    value, slope = psi.values(r, 0.3)
    want_value, want_slope = numpy_psi(psi, r, 0.3)
    np.testing.assert_allclose(value, want_value, rtol=MLP_RTOL, atol=1e-14)
    np.testing.assert_allclose(slope, want_slope, rtol=MLP_RTOL, atol=1e-13)


def test_rbf_defaults_and_views():
    psi = refimpl.RBFKernel()
    assert psi.shape == (50, 10)
    np.testing.assert_array_equal(psi.mu, np.linspace(0, 8, 50))
    np.testing.assert_array_equal(psi.nu, np.linspace(0, 1, 10))
    assert np.all(psi.weights == 0), "default weights give the identity flow"
    psi.weights[3, 2] = 1.5  # a view into theta
    assert psi.values(np.array([psi.mu[3]]), psi.nu[2])[0][0] == pytest.approx(1.5, rel=1e-6)


def test_mlp_values_match_numpy():
    rng = np.random.default_rng(5)
    mlp = refimpl.TanhMLP(8, rng=1, v=rng.standard_normal(8), v0=0.3)
    r = np.linspace(0, 10, 1001)
    for t in (0.0, 0.5, 1.0):
        value, slope = mlp.values(r, t)
        want_value, want_slope = numpy_psi(mlp, r, t)
        np.testing.assert_allclose(value, want_value, rtol=MLP_RTOL, atol=1e-14)
        np.testing.assert_allclose(slope, want_slope, rtol=MLP_RTOL, atol=1e-14)


def test_mlp_slope_matches_central_difference():
    mlp = refimpl.TanhMLP(6, rng=2, v=np.linspace(-1, 1, 6))
    r = np.linspace(0.1, 5, 50)
    h = 1e-6
    numeric = (mlp(r + h, 0.4) - mlp(r - h, 0.4)) / (2 * h)
    np.testing.assert_allclose(mlp.values(r, 0.4)[1], numeric, rtol=1e-7, atol=1e-8)


# A user's own family, written against the protocol only: psi = a exp(-r^2) (1 + b t).
@njit(PREPARE_SIG, cache=True)
def _user_prepare(theta, t, ctx):
    ctx[0] = theta[0] * (1.0 + theta[1] * t)


@njit(PAIR_SIG, cache=True)
def _user_pair(theta, ctx, r):
    e = ctx[0] * math.exp(-r * r)
    return e, -2.0 * r * e


class GaussianPsi(Psi):
    prepare = staticmethod(_user_prepare)
    pair = staticmethod(_user_pair)
    ctx_size = 1


def test_user_family_plugs_into_the_kernels_unchanged():
    psi = GaussianPsi(np.array([0.7, -0.5]))
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    t = 0.6
    scale = 0.7 * (1 - 0.5 * t)
    psi_fn = lambda r, tt: (scale * np.exp(-r ** 2), -2 * r * scale * np.exp(-r ** 2))  # noqa: E731
    from twins import divergence, field
    np.testing.assert_allclose(refimpl.vector_field(x, t, psi), field(x, t, psi_fn), rtol=1e-14)
    assert refimpl.divergence(x, t, psi) == pytest.approx(divergence(x, t, psi_fn), rel=1e-14)
    flow = refimpl.EquivariantFlow(psi, rtol=1e-9, atol=1e-9)
    x1, logdet = flow.forward(x[None])
    z, logdet_inv = flow.inverse(x1)
    np.testing.assert_allclose(z[0], x, atol=1e-7)


@njit(PAIR_SIG, cache=True)
def _pair_refusing_far_pairs(theta, ctx, r):
    if r > 5.0:
        raise ValueError("this psi refuses pairs farther apart than 5")
    e = ctx[0] * math.exp(-r * r)
    return e, -2.0 * r * e


class RefusingPsi(GaussianPsi):
    pair = staticmethod(_pair_refusing_far_pairs)


def test_an_exception_in_a_users_psi_function_is_raised_not_ignored():
    # psi's functions are called through their C wrappers, which cannot pass an
    # exception on: Numba reports it as "Exception ignored" and the kernel goes on
    # with an undefined value. The entry kernels raise it instead, for one
    # configuration, a batch in threads, and a solve.
    psi = RefusingPsi(np.array([0.7, -0.5]))
    x = np.zeros((6, 3, 2))
    x[:, 1, 0] = 10.0
    x[:, 2, 1] = 0.5
    flow = refimpl.EquivariantFlow(psi, n_particles=3, dim=2)
    calls = [lambda: refimpl.vector_field(x[0], 0.3, psi),
             lambda: refimpl.field_and_divergence(x, 0.3, psi),
             lambda: flow.forward(x[:1] - x[:1].mean(axis=-2, keepdims=True)),
             lambda: flow.forward(x - x.mean(axis=-2, keepdims=True))]
    calls.append(lambda: psi.values(np.array([1.0, 7.0]), 0.3))
    for call in calls:
        with pytest.raises(ValueError, match="farther apart than 5") as info:
            call()
        assert any("compiled code called by the kernel" in note for note in info.value.__notes__)
    near = x.copy()
    near[:, 1, 0] = 1.0  # every pair within 5: the same psi computes
    np.testing.assert_array_equal(refimpl.vector_field(near, 0.3, psi),
                                  refimpl.vector_field(near, 0.3, GaussianPsi(psi.theta)))


def test_other_unraisable_reports_still_reach_the_previous_hook(monkeypatch):
    import sys

    class Failing:
        def __del__(self):
            raise RuntimeError("from a finalizer")

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    psi = GaussianPsi(np.array([0.7, -0.5]))
    for _ in range(2):  # refimpl's hook is in place during a kernel call only
        refimpl.vector_field(np.zeros((3, 2)), 0.3, psi)
    assert sys.unraisablehook == seen.append
    Failing()
    gc.collect()
    assert [str(u.exc_value) for u in seen] == ["from a finalizer"]

    # a hook installed later (here one that passes reports on) gets them as well
    forwarded = []

    def forwarding(unraisable):
        forwarded.append(str(unraisable.exc_value))
        seen.append(unraisable)

    sys.unraisablehook = forwarding
    for _ in range(2):
        refimpl.vector_field(np.zeros((3, 2)), 0.3, psi)
    Failing()
    gc.collect()
    assert forwarded == ["from a finalizer"] and len(seen) == 2


def test_a_psi_error_in_one_thread_is_not_raised_in_another():
    import threading

    good = GaussianPsi(np.array([0.7, -0.5]))
    bad = RefusingPsi(np.array([0.7, -0.5]))
    x_good = np.random.default_rng(0).standard_normal((400, 6, 3))
    x_bad = np.zeros((8, 3, 2))
    x_bad[:, 1, 0] = 10.0
    outcome = {"good": [], "bad": []}

    def run(name, psi, x):
        for _ in range(20):
            try:
                refimpl.field_and_divergence(x, 0.3, psi)
                outcome[name].append("ok")
            except ValueError:
                outcome[name].append("raised")

    threads = [threading.Thread(target=run, args=("good", good, x_good)),
               threading.Thread(target=run, args=("bad", bad, x_bad))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcome == {"good": ["ok"] * 20, "bad": ["raised"] * 20}


def test_protocol_violations_are_reported():
    class NoPair:
        theta = np.zeros(1)
        ctx_size = 0
        prepare = staticmethod(_user_prepare)
    with pytest.raises(TypeError, match="pair"):
        check_psi(NoPair())

    class PlainPython(GaussianPsi):
        pair = staticmethod(lambda theta, ctx, r: (0.0, 0.0))
    with pytest.raises(TypeError, match="PAIR_SIG"):
        check_psi(PlainPython(np.zeros(2)))
    with pytest.raises(TypeError, match="PAIR_SIG"):
        refimpl.vector_field(np.zeros((2, 2)), 0.0, PlainPython(np.zeros(2)))

    psi = GaussianPsi(np.zeros(2))
    psi.theta[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refimpl.divergence(np.ones((3, 2)), 0.0, psi)


def test_a_member_with_the_wrong_return_type_is_refused_by_name():
    scalar = njit(types.float64(PAIR_SIG.args[0], PAIR_SIG.args[1], types.float64))(
        lambda theta, ctx, r: ctx[0] * r)

    class ScalarPair(GaussianPsi):
        pair = staticmethod(scalar)
    with pytest.raises(TypeError, match=r"psi.pair returns float64.*PAIR_SIG"):
        check_psi(ScalarPair(np.zeros(2)))
    with pytest.raises(TypeError, match=r"psi.pair returns float64"):
        refimpl.vector_field(np.zeros((2, 2)), 0.0, ScalarPair(np.zeros(2)))


_SCALE = 1.0  # a global frozen into _scaled_pair when it compiles


def test_recompiled_psi_functions_are_used_by_the_kernels():
    """Numba's ``recompile`` (how a changed global is picked up) must reach
    the kernels: they may not keep calling the old machine code."""
    global _SCALE

    @njit(PAIR_SIG)
    def scaled_pair(theta, ctx, r):
        return _SCALE * ctx[0], 0.0

    class ScaledPsi(GaussianPsi):
        pair = staticmethod(scaled_pair)
    psi = ScaledPsi(np.array([0.7, 0.0]))
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    before = refimpl.vector_field(x, 0.0, psi)
    np.testing.assert_allclose(before, [[-0.7, 0.0], [0.7, 0.0]], rtol=1e-15)
    try:
        _SCALE = 3.0
        scaled_pair.recompile()
        ctx = np.array([0.7])
        assert scaled_pair(psi.theta, ctx, 1.0) == (pytest.approx(2.1, rel=1e-15), 0.0)
        np.testing.assert_allclose(refimpl.vector_field(x, 0.0, psi), 3.0 * before, rtol=1e-15)
        np.testing.assert_allclose(psi.values(np.array([1.0]), 0.0)[0], [2.1], rtol=1e-15)
    finally:
        _SCALE = 1.0


def test_compiled_handles_do_not_keep_psi_functions_alive():
    from refimpl.psi import compiled

    def make():
        class Local(GaussianPsi):
            pair = staticmethod(njit(PAIR_SIG)(lambda theta, ctx, r: (ctx[0], 0.0)))
        psi = Local(np.array([1.0, 0.0]))
        check_psi(psi)
        compiled(psi, "pair")
        return weakref.ref(Local.pair)
    ref = make()
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("kwargs,error", [
    ({"weights": np.zeros((3, 3))}, ValueError),
    ({"weights": np.full((50, 10), np.nan)}, ValueError),
    ({"gamma": -1.0}, ValueError),
    ({"gamma_t": 0.0}, ValueError),
    ({"n_distance": 1}, ValueError),
    ({"n_time": 2.5}, TypeError),
    ({"r_max": np.inf}, ValueError),
])
def test_rbf_rejects_bad_parameters(kwargs, error):
    with pytest.raises(error):
        refimpl.RBFKernel(**kwargs)


@pytest.mark.parametrize("kwargs,error", [
    ({"hidden": 0}, ValueError),
    ({"hidden": 4, "v": np.zeros(3)}, ValueError),
    ({"hidden": 4, "a": [np.inf, 0, 0, 0]}, ValueError),
    ({"hidden": 4, "rng": "seed"}, TypeError),
])
def test_mlp_rejects_bad_parameters(kwargs, error):
    with pytest.raises(error):
        refimpl.TanhMLP(**kwargs)


def test_copy_with_keeps_layout_and_checks_shape():
    psi = refimpl.RBFKernel(n_distance=5, n_time=2)
    theta = psi.theta.copy()
    theta[-1] = 2.0
    other = psi.copy_with(theta)
    assert other.weights[-1, -1] == 2.0 and psi.weights[-1, -1] == 0.0
    with pytest.raises(ValueError):
        psi.copy_with(theta[:-1])


def test_a_ctx_size_too_small_for_the_layout_is_refused():
    psi = refimpl.RBFKernel(np.ones((50, 10)))
    psi.ctx_size = 1
    with pytest.raises(ValueError, match="ctx_size"):
        refimpl.vector_field(np.ones((3, 2)) * np.arange(3)[:, None], 0.0, psi)
    user = GaussianPsi(np.array([0.7, -0.5]))
    user.ctx_size = 0  # its prepare writes ctx[0]
    with pytest.raises(ValueError, match="writes past ctx_size"):
        refimpl.divergence(np.ones((3, 2)), 0.0, user)


def test_centres_are_read_only_and_edited_theta_is_refused():
    psi = refimpl.RBFKernel(np.ones((50, 10)))
    with pytest.raises(ValueError):
        psi.mu[:] = np.linspace(0, 4, 50)
    theta = psi.theta.copy()
    theta[5:55] = np.linspace(0, 4, 50)  # new centres, stale cached spacing
    psi.theta = theta
    with pytest.raises(ValueError, match="derived entries"):
        refimpl.vector_field(np.ones((2, 2)) * np.arange(2)[:, None], 0.0, psi)
    rebuilt = refimpl.RBFKernel.from_theta(theta)  # the documented way
    np.testing.assert_array_equal(rebuilt.mu, np.linspace(0, 4, 50))


def test_rbf_is_finite_at_astronomical_distances():
    psi = refimpl.RBFKernel(np.ones((50, 10)))
    value, slope = psi.values(np.array([2e18, 1e300]), 0.5)
    assert np.all(value == 0.0) and np.all(slope == 0.0)


def test_far_gaussians_give_zero_terms_even_where_their_factors_overflow():
    """Cases hypothesis found (NaN before): a narrow RBF far from its centres
    (-2 gamma d overflows while the Gaussian underflows to 0: inf * 0) and a
    bgflow time width e^-373 at t = -1e155 ((t - nu)^2 overflowed while the
    squared width factor underflowed to 0; such times are now refused, and
    the kernels' own guard is tested below)."""
    from refimpl.bgflow_kernel import _offsets
    narrow = refimpl.RBFKernel(np.ones((50, 10)), gamma=1.29e75)
    value, slope = narrow.values(np.array([1e232, 3.0]), 0.5)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(slope)) and value[0] == 0.0
    x = np.array([[0.0, 0.0], [1e150, 0.0], [0.0, 1e150]])
    assert np.all(np.isfinite(refimpl.vector_field(x - x.mean(0), 0.5,
                                                   refimpl.RBFKernel(gamma=1e100))))
    bg = refimpl.BgflowKernel(np.linspace(0.0, 6.0, 7), 0.7, np.linspace(0.0, 1.0, 3), 0.5,
                              weights=np.ones((7, 3)))
    theta = bg.theta.copy()
    _, _, _, lt, im, _, _ = _offsets(7, 3)
    theta[lt:im] = -373.0
    wide_in_time = refimpl.BgflowKernel.from_theta(theta)
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, -0.5]])
    for t in (-1e150, 1e150, 0.5):  # times beyond 1e150 are refused (as_time)
        assert np.all(np.isfinite(refimpl.vector_field(x, t, wide_in_time)))


def test_bgflow_width_gradient_is_finite_where_a_time_gaussian_underflows():
    """The pullback of bgflow's time Gaussians at huge t: with width factor
    e^0 the exponent ((t - nu) e^l)^2 overflows to inf while the Gaussian is
    0, and its width gradient must be 0 there, not inf * 0 (with e^-373 the
    old exponent (t - nu)^2 (e^l)^2 was inf * 0 already in the forward pass)."""
    from refimpl.bgflow_kernel import _offsets, _prepare, _prepare_vjp
    bg = refimpl.BgflowKernel(np.linspace(0.0, 6.0, 7), 0.7, np.linspace(0.0, 1.0, 3), 0.5,
                              weights=np.ones((7, 3)), optimize_t_gammas=True)
    _, _, _, lt, im, _, _ = _offsets(7, 3)
    for log_width, t in [(0.0, 1e300), (0.0, -1e200), (-373.0, -1e155), (-373.0, 0.5)]:
        theta = bg.theta.copy()
        theta[lt:im] = log_width
        ctx = np.zeros(bg.ctx_size)
        _prepare(theta, t, ctx)
        theta_bar = np.zeros_like(theta)
        _prepare_vjp(theta, t, ctx, np.ones(bg.ctx_size), theta_bar)
        assert np.all(np.isfinite(ctx)) and np.all(np.isfinite(theta_bar)), t


def test_parameters_beyond_max_parameter_are_refused_by_name_when_used():
    """Reviewer's cases (NaN or inf before): huge widths and weights are refused
    when the psi is used, naming the parameter; at the bound results are finite."""
    from refimpl.bgflow_kernel import _offsets
    from refimpl.psi import MAX_PARAMETER
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, -0.5]])
    bg = refimpl.BgflowKernel(np.linspace(0.0, 6.0, 7), 0.7, np.linspace(0.0, 1.0, 3), 0.5,
                              weights=np.ones((7, 3)))
    theta = bg.theta.copy()
    _, lg, mt, _, _, _, _ = _offsets(7, 3)
    theta[lg:mt] = 800.0
    cases = [(refimpl.RBFKernel(gamma=1e308), "gamma"),
             (refimpl.RBFKernel(np.full((50, 10), 1e308)), "weights"),
             (refimpl.TanhMLP(8, v=np.full(8, 1e308)), "v"),
             (refimpl.BgflowKernel.from_theta(theta), "neg_log_gammas")]
    for psi, name in cases:
        with pytest.raises(ValueError, match=name):
            refimpl.divergence(x, 0.5, psi)
        with pytest.raises(ValueError, match=name):
            refimpl.EquivariantFlow(psi).forward(x[None])
    at_bound = [refimpl.RBFKernel(np.full((50, 10), MAX_PARAMETER), gamma=MAX_PARAMETER),
                refimpl.TanhMLP(8, v=np.full(8, MAX_PARAMETER), a=np.full(8, MAX_PARAMETER))]
    for psi in at_bound:
        for scale in (1.0, 1e-3, 1e140):
            assert np.all(np.isfinite(refimpl.divergence(scale * x, 0.5, psi)))
            assert np.all(np.isfinite(refimpl.vector_field(scale * x, 0.5, psi)))


def test_kernels_work_without_numbas_private_address_helper(monkeypatch):
    """``psi.compiled`` uses Numba's private ``_get_wrapper_address`` when it
    exists and falls back to the dispatcher (and ``_kernels._address`` to the
    compile result) when a Numba release drops it: the same numbers."""
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, -0.5]])
    want = refimpl.vector_field(x, 0.3, refimpl.TanhMLP(8, rng=4))
    monkeypatch.setattr(refimpl.psi, "_get_wrapper_address", None)
    fresh = refimpl.TanhMLP(8, rng=4)
    assert refimpl.psi.compiled(fresh, "pair") is fresh.pair
    np.testing.assert_array_equal(refimpl.vector_field(x, 0.3, fresh), want)
