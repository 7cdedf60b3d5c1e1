"""BgflowKernel against an independent NumPy transcription of bgflow's KernelDynamics.

The transcription below follows bgflow's own code path (``rbf_kernels`` with
its ``derivative=True`` branch, ``_force_mag``, ``forward`` on distance
vectors with the diagonal removed, ``d = sqrt(|r|^2 + 1e-6)``). It is written
in ``autograd.numpy`` so that the same formulas also give exact derivatives.
"""

import textwrap

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads
from autograd.tracer import getval

import refimpl
from refimpl.bgflow_kernel import NPZ_NAMES, BgflowKernel
from refimpl.grad import FlowModel
from refimpl.psi import check_psi

# Same formula as the transcription, summed in another order (sum_k K_k c_k + c0
# instead of sum_s T_s [sum_k (K_k + iota_k^2) W_ks + b_s]): rounding only, a few
# ulp of the sum of |terms|.
ROUNDING_RTOL = 1e-12
# The kernel's divergence and autograd's Jacobian trace are the same exact
# number computed two ways; rounding is ~1e-14 of sum |terms|, so 1e-10 is wide
# while any missed term (e.g. dropping the 1e-6 regularization, ~1e-7) fails.
TRACE_RTOL = 1e-10
# The flow solved to 1e-9 and back: the round trip is exact up to the solver error.
ROUND_TRIP_ATOL = 1e-6
# Documented bound (module docstring) on bgflow's divergence deviation, relative to
# sum |terms|, for E-NF's DW4 settings and pair distances in [0.3, 7]; measured max
# 1.3e-6 (median ~1e-7) on the configurations below.
BGFLOW_DEVIATION_BOUND = 1e-5
# The measured deviation is a difference of two divergences, each rounded to
# ~1e-15 of sum |terms| (residual against the formula measured at 5e-15).
DIFFERENCE_RTOL = 1e-11

EPS = 1e-6  # bgflow's two regularizers, written out again on purpose


def _bg_rbf(d, mu, neg_log_gamma):
    """bgflow's ``rbf_kernels(d, mu, neg_log_gamma, derivative=True)``."""
    inv2 = anp.exp(neg_log_gamma) ** 2
    g = anp.exp(-(d - mu) ** 2 * inv2)
    s = anp.sum(g, axis=-1, keepdims=True)
    dg = -2 * (d - mu) * inv2 * g
    ds = anp.sum(dg, axis=-1, keepdims=True)
    return g / (EPS + s), dg / (EPS + s) - g * ds / (EPS + s ** 2)


def _bg_force_mag(p, d, t):
    """bgflow's ``_force_mag``: psi(d, t) and its (approximate) d-derivative; d (..., 1)."""
    kernels, dkernels = _bg_rbf(d, p["mus"], p["neg_log_gammas"])
    trbfs, _ = _bg_rbf(t, p["mus_time"], p["neg_log_gammas_time"])
    mag = anp.dot(kernels + p["importance"] ** 2, p["weights"]) + p["bias"]
    dmag = anp.dot(dkernels, p["weights"])
    return anp.sum(mag * trbfs, axis=-1), anp.sum(dmag * trbfs, axis=-1)


def _bg_forward(p, x, t):
    """bgflow's ``forward`` on one configuration (K, D): (forces, its divergence)."""
    k, dim = x.shape
    i, j = np.nonzero(~np.eye(k, dtype=bool))
    r = x[i] - x[j]
    d = anp.sqrt(anp.sum(r ** 2, axis=-1) + EPS)
    mag, dmag = _bg_force_mag(p, d[:, None], t)
    forces = anp.dot(np.eye(k)[i].T, r * mag[:, None])
    return forces, anp.sum(d * dmag + dim * mag)


def _psi_tilde(p, r, t):
    """The radial function of the true distance: psi(sqrt(r^2 + 1e-6), t)."""
    return _bg_force_mag(p, anp.sqrt(r ** 2 + EPS)[..., None], t)[0]


def _theta_arrays(theta):
    """The named arrays from a BgflowKernel theta (layout of the module docstring)."""
    n_k, n_s = int(getval(theta[0])), int(getval(theta[1]))
    sizes = [n_k, n_k, n_s, n_s, n_k, n_k * n_s, n_s]
    cuts = np.cumsum([4] + sizes)
    parts = [theta[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    arrays = dict(zip(NPZ_NAMES, parts))
    arrays["weights"] = anp.reshape(arrays["weights"], (n_k, n_s))
    return arrays


def _kernel(seed=0, n_k=12, n_s=4, scale=1.0, **flags):
    rng = np.random.default_rng(seed)
    return BgflowKernel(np.linspace(0.0, 6.0, n_k), rng.uniform(0.4, 0.8, n_k),
                        np.linspace(0.0, 1.0, n_s), rng.uniform(0.2, 0.5, n_s),
                        weights=scale * rng.standard_normal((n_k, n_s)) / np.sqrt(n_k),
                        bias=0.1 * scale * rng.standard_normal(n_s),
                        importance=0.3 * rng.standard_normal(n_k), **flags)


def _enf_kernel(seed=0):
    """E-NF's DW4 settings: 50 centres on [0, 8] with width 0.5, 10 in time with 0.3."""
    w = np.random.default_rng(seed).standard_normal((50, 10)) / np.sqrt(50)
    return BgflowKernel(np.linspace(0, 8, 50), np.full(50, 0.5), np.linspace(0, 1, 10),
                        np.full(10, 0.3), weights=w)


def _pair_calls(psi, fn, r, t):
    ctx = np.empty(psi.ctx_size)
    psi.prepare(psi.theta, t, ctx)
    return np.array([fn(psi.theta, ctx, float(ri)) for ri in r]).T


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_psi_and_its_radial_derivatives_match_the_bgflow_formula(t):
    psi = _kernel()
    p = psi.arrays()
    r = np.concatenate([[0.0, 1e-4], np.linspace(0.01, 10.0, 400)])
    value, slope, curvature = _pair_calls(psi, psi.pair2, r, t)
    want = _psi_tilde(p, r, t)
    want_slope = autograd.elementwise_grad(_psi_tilde, 1)(p, r, t)
    want_curv = autograd.elementwise_grad(autograd.elementwise_grad(_psi_tilde, 1), 1)(p, r, t)
    for got, ref in ((value, want), (slope, want_slope), (curvature, want_curv)):
        np.testing.assert_allclose(got, ref, rtol=ROUNDING_RTOL,
                                   atol=ROUNDING_RTOL * np.max(np.abs(ref)))
    np.testing.assert_array_equal(psi.values(r, t)[0], value)
    np.testing.assert_array_equal(psi.values(r, t)[1], slope)


@pytest.mark.parametrize("k,d", [(4, 2), (5, 3)])
def test_field_matches_bgflow_forces(k, d):
    psi = _kernel(k)
    x = 2.0 * np.random.default_rng(d).standard_normal((6, k, d))
    for t in (0.0, 0.6):
        got = refimpl.vector_field(x, t, psi)
        want = np.array([_bg_forward(psi.arrays(), xx, t)[0] for xx in x])
        np.testing.assert_allclose(got, want, rtol=ROUNDING_RTOL,
                                   atol=ROUNDING_RTOL * np.max(np.abs(want)))


@pytest.mark.parametrize("k,d", [(3, 2), (4, 3)])
def test_divergence_is_the_exact_jacobian_trace_of_the_regularized_field(k, d):
    psi = _kernel(k + d)
    p = psi.arrays()
    x = 1.5 * np.random.default_rng(k).standard_normal((4, k, d))
    x[0, 1] = x[0, 0]  # coincident particles: the regularized field is smooth there
    for t in (0.2, 0.9):
        def flat_field(v):
            return anp.reshape(_bg_forward(p, anp.reshape(v, (k, d)), t)[0], (-1,))

        for xx, div in zip(x, refimpl.divergence(x, t, psi)):
            trace = np.trace(autograd.jacobian(flat_field)(xx.ravel()))
            r = np.linalg.norm(xx[:, None] - xx[None], axis=-1)[~np.eye(k, dtype=bool)]
            scale = np.sum(np.abs(_psi_tilde(p, r, t))) * d + 1.0
            assert abs(div - trace) <= TRACE_RTOL * scale, (div, trace)


def test_bgflow_divergence_method_reproduces_bgflow_forward():
    psi = _kernel(3)
    x = 2.0 * np.random.default_rng(1).standard_normal((5, 4, 3))
    got = psi.bgflow_divergence(x, 0.4)
    want = np.array([_bg_forward(psi.arrays(), xx, 0.4)[1] for xx in x])
    np.testing.assert_allclose(got, want, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL)


def _documented_deviation(psi, x, t):
    """Per the module docstring: sum over ordered pairs of item 1 + item 2."""
    a = psi.arrays()
    off = ~np.eye(x.shape[-2], dtype=bool)
    r = np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)[..., off]
    d = np.sqrt(r ** 2 + EPS)
    slope = autograd.elementwise_grad(lambda dd: _bg_force_mag(a, dd[..., None], t)[0])(d)
    inv2 = np.exp(a["neg_log_gammas"]) ** 2
    g = np.exp(-(d[..., None] - a["mus"]) ** 2 * inv2)
    s, s1 = g.sum(-1), (-2 * (d[..., None] - a["mus"]) * inv2 * g).sum(-1)
    h = np.exp(-(t - a["mus_time"]) ** 2 * np.exp(a["neg_log_gammas_time"]) ** 2)
    n = g @ (a["weights"] @ (h / (EPS + h.sum())))
    item1 = slope * EPS / d
    item2 = d * n * s1 * EPS * (1 - 2 * s - EPS) / ((EPS + s) ** 2 * (EPS + s ** 2))
    return item1.sum(-1), item2.sum(-1), np.abs(slope * r ** 2 / d) + x.shape[-1] * np.abs(
        _bg_force_mag(a, d[..., None], t)[0])


def test_bgflow_divergence_deviation_is_as_documented_and_small_within_the_centres():
    psi = _enf_kernel()
    x = refimpl.MeanFreeNormal(4, 2).sample(400, 1) * 1.3
    k = 4
    r = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)[:, ~np.eye(k, dtype=bool)]
    x = x[(r.min(axis=1) > 0.3) & (r.max(axis=1) < 7.0)]
    assert len(x) > 100
    for t in (0.0, 0.5, 1.0):
        deviation = psi.bgflow_divergence(x, t) - refimpl.divergence(x, t, psi)
        item1, item2, terms = _documented_deviation(psi, x, t)
        scale = terms.sum(-1)
        # the formula explains the deviation up to the rounding of the two divergences
        assert np.all(np.abs(deviation - item1 - item2) <= DIFFERENCE_RTOL * scale)
        assert np.max(np.abs(deviation) / scale) < BGFLOW_DEVIATION_BOUND
        assert np.sum(np.abs(item2)) < np.sum(np.abs(item1)), "item 1 dominates in range"


def test_bgflow_divergence_is_wrong_past_the_last_centre():
    """Where sum_m g_m is ~1e-4 (d = 9.5 for centres on [0, 8], width 0.5),
    bgflow's dK term is off by O(1): its divergence is wrong in the leading digit."""
    psi = _enf_kernel()
    x = np.array([[[0.0, 0.0], [9.5, 0.0]]])
    exact = refimpl.divergence(x, 0.5, psi)
    item1, item2, terms = _documented_deviation(psi, x, 0.5)
    deviation = psi.bgflow_divergence(x, 0.5) - exact
    assert np.abs(deviation - item1 - item2) <= DIFFERENCE_RTOL * terms.sum(-1)
    assert np.all(np.abs(deviation) > 10 * np.abs(exact))


def test_plugs_into_the_flow_and_round_trips():
    psi = _kernel(5, scale=3.0)
    check_psi(psi, gradients=True)
    flow = refimpl.EquivariantFlow(psi, rtol=1e-9, atol=1e-9, n_particles=4, dim=2)
    z = refimpl.MeanFreeNormal(4, 2).sample(8, 3)
    x, logdet = flow.forward(z)
    assert np.max(np.abs(x - z)) > 1e-2, "the flow must actually move the points"
    z_back, logdet_back = flow.inverse(x)
    np.testing.assert_allclose(z_back, z, atol=ROUND_TRIP_ATOL)
    np.testing.assert_allclose(logdet + logdet_back, 0.0, atol=ROUND_TRIP_ATOL)
    assert np.all(np.isfinite(flow.log_prob(x)))


@pytest.mark.parametrize("flags", [{}, {"optimize_d_gammas": True, "optimize_t_gammas": True}])
@pytest.mark.parametrize("k,d", [(4, 2), (3, 3)])
def test_gradients_of_the_frozen_map_match_finite_differences(flags, k, d):
    model = FlowModel(refimpl.EquivariantFlow(_kernel(k, **flags), rtol=1e-6, atol=1e-6,
                                              n_particles=k, dim=d))
    prior = refimpl.MeanFreeNormal(k, d)
    data, z = prior.sample(4, 3), prior.sample(4, 4)
    p0 = model.params
    inv, fwd = model.step_times(p0, data, inverse=True), model.step_times(p0, z)

    def ml_loss(p):
        zz, logdet = model.inverse(p, data, frozen=inv)
        return -anp.mean(-0.5 * anp.sum(zz ** 2, axis=(-2, -1)) + logdet)

    def sample_loss(p):
        x, logdet = model.forward(p, z, frozen=fwd)
        return anp.sum(anp.sin(x)) - anp.mean(logdet)

    np.random.seed(k + d)  # check_grads draws its direction from the global state
    for f in (ml_loss, sample_loss):
        check_grads(f, modes=["rev"], order=1)(p0)


@pytest.mark.parametrize("flags", [{}, {"optimize_d_gammas": True, "optimize_t_gammas": True}])
def test_pair_vjp_and_prepare_vjp_match_autograd(flags):
    psi = _kernel(7, **flags)
    theta = psi.theta.copy()
    t, g_psi, g_dpsi = 0.45, 0.8, -1.3

    def objective(th, r):
        p = _theta_arrays(th)
        slope = autograd.grad(lambda rr: _psi_tilde(p, rr, t))(r)
        return g_psi * _psi_tilde(p, r, t) + g_dpsi * slope

    ctx = np.empty(psi.ctx_size)
    psi.prepare(theta, t, ctx)
    for r in (0.0, 0.7, 2.9, 6.5, 9.0):
        want = autograd.grad(objective)(theta, r)
        ctx_bar, theta_bar = np.zeros(psi.ctx_size), np.zeros(theta.size)
        psi.pair_vjp(theta, ctx, r, g_psi, g_dpsi, ctx_bar, theta_bar)
        psi.prepare_vjp(theta, t, ctx, ctx_bar, theta_bar)
        idx = psi.trainable
        np.testing.assert_allclose(theta_bar[idx], want[idx], rtol=ROUNDING_RTOL,
                                   atol=ROUNDING_RTOL * np.max(np.abs(want[idx])))
        assert np.all(theta_bar[np.setdiff1d(np.arange(theta.size), idx)] == 0.0)


def test_trainable_sets_follow_bgflows_flags():
    n_k, n_s = 12, 4
    plain = _kernel().trainable
    assert plain.size == n_k + n_k * n_s + n_s, "importance, weights, bias"
    both = _kernel(optimize_d_gammas=True, optimize_t_gammas=True).trainable
    assert both.size == plain.size + n_k + n_s


def test_importance_gets_no_gradient_at_its_zero_initialization():
    """bgflow starts iota at 0 and uses iota^2: the gradient there is exactly 0."""
    psi = _kernel()
    psi.theta[psi.trainable[:12]] = 0.0  # importance comes first among the trainables
    ctx = np.empty(psi.ctx_size)
    psi.prepare(psi.theta, 0.3, ctx)
    ctx_bar, theta_bar = np.zeros(psi.ctx_size), np.zeros(psi.theta.size)
    psi.pair_vjp(psi.theta, ctx, 1.7, 1.0, 1.0, ctx_bar, theta_bar)
    psi.prepare_vjp(psi.theta, 0.3, ctx, ctx_bar, theta_bar)
    assert np.all(theta_bar[psi.trainable[:12]] == 0.0)
    assert np.any(theta_bar[psi.trainable[12:]] != 0.0)


def test_npz_and_theta_round_trips(tmp_path):
    psi = _kernel(2, optimize_t_gammas=True)
    path = tmp_path / "kernel.npz"
    np.savez(path, **psi.arrays())
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(NPZ_NAMES)
        assert npz["bias"].shape == (1, 4), "bgflow's bias shape"
    loaded = BgflowKernel.from_npz(path, optimize_t_gammas=True)
    np.testing.assert_array_equal(loaded.theta, psi.theta)
    np.testing.assert_array_equal(loaded.trainable, psi.trainable)
    rebuilt = BgflowKernel.from_theta(psi.theta)
    np.testing.assert_array_equal(rebuilt.theta, psi.theta)
    np.testing.assert_array_equal(rebuilt.trainable, psi.trainable)
    # what the torch snippet writes from a model built with scalar widths
    arrays = psi.arrays()
    arrays["neg_log_gammas"] = np.array(-np.log(0.5))
    np.savez(path, **arrays)
    np.testing.assert_array_equal(BgflowKernel.from_npz(path).arrays()["neg_log_gammas"],
                                  np.full(12, -np.log(0.5)))


class _TensorStandIn:
    """Just the torch.Tensor methods the docstring's snippet calls."""

    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float32)  # bgflow models are float32

    def detach(self):
        return self

    cpu = double = detach

    def numpy(self):
        return self.array.astype(np.float64)


def test_docstring_snippet_writes_a_file_that_from_npz_reads(tmp_path, monkeypatch):
    import refimpl.bgflow_kernel as module
    snippet = module.__doc__.split("attributes)::")[1].split("\n\n")[1]
    assert len(snippet.strip().splitlines()) == 3
    psi = _kernel(4)
    kd = type("KernelDynamicsStandIn", (), {})()
    for name, value in psi.arrays().items():
        setattr(kd, "_" + name, _TensorStandIn(value))
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(snippet), {"kd": kd})
    loaded = BgflowKernel.from_npz(tmp_path / "kd.npz")
    np.testing.assert_array_equal(loaded.theta, BgflowKernel.from_theta(
        np.concatenate([psi.theta[:4], psi.theta[4:].astype(np.float32)])).theta)


@pytest.mark.parametrize("change,match", [
    *[({name: None}, name) for name in NPZ_NAMES],
    ({"weights": np.zeros((13, 4))}, "weights"),
    ({"bias": np.zeros((2, 4))}, "bias"),
    ({"importance": np.zeros(11)}, "importance"),
    ({"neg_log_gammas_time": np.zeros(5)}, "neg_log_gammas_time"),
    ({"mus": np.zeros((12, 1))}, "mus"),
    ({"weights": np.full((12, 4), np.nan)}, "weights"),
])
def test_npz_with_missing_or_misshaped_arrays_is_rejected(tmp_path, change, match):
    arrays = _kernel().arrays()
    for name, value in change.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        BgflowKernel.from_npz(path)


def test_unreadable_npz_and_bad_theta_are_rejected(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="readable"):
        BgflowKernel.from_npz(path)
    theta = _kernel().theta
    for bad in (theta[:-1], np.concatenate([[12.5], theta[1:]]),
                np.concatenate([theta[:2], [2.0], theta[3:]])):
        with pytest.raises(ValueError, match="layout"):
            BgflowKernel.from_theta(bad)
    with pytest.raises(ValueError, match="positive"):
        BgflowKernel([0.0, 1.0], [0.5, -0.5], [0.0], [0.3])
