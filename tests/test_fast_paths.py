"""The kernels' fast paths against the general ones: the fixed-window RBF
kernel, the single-row field kernel and the memory of ``check_psi``."""

import numpy as np
import pytest

import refimpl
from refimpl._kernels import field_and_divergence_batch, psi_args
from refimpl.psi import check_psi

from twins import WINDOW_LAYOUTS, divergence, field, numpy_psi, stress_distances

# The window kernel adds the same terms as ``_pair`` in the same order, plus
# terms below GAUSSIAN_CUTOFF (1e-22 relative to |c|) that ``_pair`` drops:
# the two agree to a few rounding errors of the sum of |terms|.
PATH_RTOL = 1e-15
# Against the direct double sum in another order (as in test_kernels).
TWIN_RTOL = 1e-12


def _both_paths(psi, x, t):
    """``(G, div)`` of the window kernel and of psi's own functions."""
    k, d = x.shape[-2:]
    flat = np.ascontiguousarray(x.reshape(-1, k * d))
    ctx_size, window, prepare, pair = psi_args(psi)
    assert window
    out = []
    for size, use_window in ((ctx_size, True), (int(psi.ctx_size), False)):
        g = np.empty_like(flat)
        div = np.empty(flat.shape[0])
        field_and_divergence_batch(flat, t, psi.theta, size, use_window, prepare, pair, k, d, g,
                                   div)
        out.append((g, div))
    return out


def _stress_configurations(psi, rng):
    """Pairs at distance 0, at and between every centre, just past both ends of
    the grid, far beyond it, and astronomically far."""
    distances = stress_distances(psi.mu, rng, [1e3, 1e18, 1e150], 64)
    x = np.zeros((distances.size, 2, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, distances.size)
    x[:, 1, 0] = distances * np.cos(angle)
    x[:, 1, 1] = distances * np.sin(angle)
    return x


@pytest.mark.parametrize("kwargs", WINDOW_LAYOUTS)
def test_window_kernel_matches_the_general_kernel_and_the_twin(kwargs):
    rng = np.random.default_rng(5)
    probe = refimpl.RBFKernel(**kwargs)
    psi = refimpl.RBFKernel(rng.standard_normal(probe.shape), **kwargs)
    x = np.concatenate([_stress_configurations(psi, rng),
                        2.0 * rng.standard_normal((20, 2, 2))[:, :, :]])
    for t in (0.0, 0.3, 1.0):
        (g_w, div_w), (g_g, div_g) = _both_paths(psi, x, t)
        assert np.all(np.isfinite(g_w)) and np.all(np.isfinite(div_w))
        r = np.linalg.norm(x[:, 1] - x[:, 0], axis=-1)
        # sum of |terms| of psi at r (bounds the rounding of both sums)
        scale = np.abs(np.exp(-psi.gamma * (r[:, None] - psi.mu) ** 2)) @ np.abs(
            psi.weights @ np.exp(-psi.gamma_t * (t - psi.nu) ** 2))
        slope_factor = 2.0 * psi.gamma * (r + psi.mu[-1])
        slope_scale = scale * (1.0 + slope_factor)
        # what _pair may drop below the cutoff (rbf.GAUSSIAN_CUTOFF's comment)
        c = psi.weights @ np.exp(-psi.gamma_t * (t - psi.nu) ** 2)
        rho = np.exp(-2.0 * psi.gamma * (psi.mu[1] - psi.mu[0]) ** 2)
        dropped = refimpl.rbf.GAUSSIAN_CUTOFF * np.max(np.abs(c)) / (1.0 - rho)
        np.testing.assert_array_less(
            np.abs(div_w - div_g),
            PATH_RTOL * 4.0 * (slope_scale * r + 2.0 * scale)
            + 2.0 * dropped * (slope_factor * r + 2.0) + 1e-300)
        field_err = np.abs(g_w - g_g).reshape(-1, 2, 2).max(axis=(1, 2))
        np.testing.assert_array_less(field_err, (PATH_RTOL * scale + dropped) * r + 1e-300)
        psi_fn = lambda rr, tt: numpy_psi(psi, rr, tt)  # noqa: E731
        for b in range(0, x.shape[0], 7):
            want = field(x[b], t, psi_fn)
            assert np.max(np.abs(g_w[b].reshape(2, 2) - want)) <= TWIN_RTOL * (
                np.max(np.abs(want)) + scale[b] * r[b]) + 1e-300
            want_div = divergence(x[b], t, psi_fn)
            # the twin subtracts its diagonal terms D psi(0) from its sum
            diagonal = 4.0 * abs(numpy_psi(psi, 0.0, t)[0])
            assert abs(div_w[b] - want_div) <= TWIN_RTOL * (
                abs(want_div) + slope_scale[b] * r[b] + 2.0 * scale[b] + diagonal) + 1e-300


@pytest.mark.parametrize("k, d", [(4, 2), (5, 3), (13, 3), (55, 3), (12, 1), (12, 4), (7, 9)])
def test_window_kernel_equals_the_general_kernel_with_many_particles(k, d):
    """Blocks of pairs: fewer pairs than a vector (K = 4), full blocks of
    ``BLOCK`` and a partial last one (K = 13: 64 + 14; K = 55), idle lanes,
    pair vectors on the stack (D <= 3) and on the heap (D = 4, 9). Both
    kernels add the same terms in the same order here (no pair sits where
    the window drops or adds a term above the cutoff), so they agree to the
    last bit."""
    rng = np.random.default_rng(k * 10 + d)
    psi = refimpl.RBFKernel(0.5 * rng.standard_normal((50, 10)))
    x = 2.0 * rng.standard_normal((4, k, d))
    for t in (0.0, 0.45, 1.0):
        (g_w, div_w), (g_g, div_g) = _both_paths(psi, x, t)
        assert np.all(np.isfinite(g_w)) and np.all(np.isfinite(div_w))
        np.testing.assert_array_equal(g_w, g_g)
        np.testing.assert_array_equal(div_w, div_g)


@pytest.mark.parametrize("n_r, n_t", [(2, 1), (5, 3), (20, 5), (50, 10), (57, 13), (61, 1),
                                      (100, 30), (300, 70)])
def test_window_prepare_gives_the_bits_of_coefficients(n_r, n_t):
    """``b(t)`` and ``c(t)`` in the window scratch are bitwise those of
    ``rbf.coefficients`` (the same products summed in the same order): shapes
    that fill SIMD lanes and row chunks partly and exactly, and (300 x 70)
    span several blocks of centres; weights with +0, -0 and negative entries,
    time centres off a grid, times where ``b`` underflows. The padding of
    ``c`` stays +0."""
    rbf = refimpl.rbf
    rng = np.random.default_rng(n_r * 100 + n_t)
    weights = rng.standard_normal((n_r, n_t))
    weights[rng.random(weights.shape) < 0.2] = 0.0
    weights[rng.random(weights.shape) < 0.1] = -0.0
    weights[n_r // 2] = -0.0
    nu = np.sort(rng.uniform(-0.5, 1.5, n_t))
    psi = refimpl.RBFKernel(weights, n_distance=n_r, nu=nu)
    work = np.empty(rbf.window_work_size(psi.theta))
    rbf.window_setup(psi.theta, work)
    n_c = rbf._window_layout(n_r, n_t)[0]
    b0 = rbf.window_basis_offset(n_r, n_t)
    b, c = np.empty(n_t), np.empty(n_r)
    nonzero = 0
    for t in (0.0, 0.37, 1.0, -2.5, 40.0, 1e200):
        rbf.window_prepare(psi.theta, t, work)
        rbf.coefficients(psi.theta, t, b, c)
        assert work[rbf.WINDOW: rbf.WINDOW + n_r].tobytes() == c.tobytes()
        assert work[b0: b0 + n_t].tobytes() == b.tobytes()
        padding = np.concatenate([work[:rbf.WINDOW], work[rbf.WINDOW + n_r: rbf.WINDOW + n_c]])
        assert padding.tobytes() == np.zeros(padding.size).tobytes()
        nonzero += np.count_nonzero(c)
    assert nonzero > 0 and not np.any(b)  # at t = 1e200 every b_l underflows to 0


def test_a_nan_distance_stays_on_the_grid():
    """Inside a solve a stage state can turn non-finite before the solver
    notices; the nearest-centre index of a NaN distance must stay on the grid
    (it was INT64_MIN, an index far outside the scratch arrays), and both
    kernels return NaN."""
    assert refimpl.rbf.nearest_centre(np.nan, 0.0, 0.16, 50) == 0
    assert refimpl.rbf.nearest_centre(np.inf, 0.0, 0.16, 50) == 49
    assert refimpl.rbf.nearest_centre(-np.inf, 0.0, 0.16, 50) == 0
    for r in np.linspace(-1.0, 9.0, 301):
        assert refimpl.rbf.nearest_centre(r, 0.0, 0.16, 50) == int(
            round(min(max(r / 0.16, 0.0), 49.0)))
    psi = refimpl.RBFKernel(np.ones((50, 10)))
    x = np.zeros((1, 3, 2))
    x[0, 1] = [1.0, 0.5]
    x[0, 2] = [np.nan, 0.0]
    for g, div in _both_paths(psi, x, 0.5):
        assert np.isnan(div[0]) and np.all(np.isnan(g[0, 4:]))


def _grid_off_by_an_ulp(*indices):
    """30 centres on [1, 6] (np.linspace: here each ``k spacing + mu_0`` in
    float64), with the given ones moved by one ulp: still equally spaced to
    rounding."""
    mu = np.linspace(1.0, 6.0, 30)
    for k in indices:
        mu[k] = np.nextafter(mu[k], np.inf)
    return mu


@pytest.mark.parametrize("mu, exception", [
    (_grid_off_by_an_ulp(), refimpl.rbf.NO_EXCEPTION),
    (_grid_off_by_an_ulp(17), refimpl.rbf.WINDOW + 17),
    (np.linspace(0.0, 8.0, 50), refimpl.rbf.WINDOW + 49),  # the endpoint
    (_grid_off_by_an_ulp(5, 20), refimpl.rbf.LOOK_UP_CENTRES),
    (np.arange(40) * 0.2 + 0.3, refimpl.rbf.LOOK_UP_CENTRES),  # spacing not exactly 0.2
    (np.array([-1.0, -0.0, 1.0]), refimpl.rbf.WINDOW + 1),  # -0.0 stored, +0.0 computed
])
def test_window_kernel_computes_the_centres_as_it_would_look_them_up(mu, exception):
    """The window sums compute the centres as ``k spacing + mu_0``, with the one
    centre that differs stored and used where it falls in a window; with more
    exceptions the kernel looks every centre up. Computed or looked up, the
    results are the same bits (the scratch's mode switched by hand). A grid
    that is looked up has no computed mode to compare with: there the window
    kernel is held to psi's own functions instead (as in the test above)."""
    from refimpl._kernels import scratch, window_field_and_divergence
    rng = np.random.default_rng(11)
    psi = refimpl.RBFKernel(0.5 * rng.standard_normal((mu.size, 4)), mu=mu, n_time=4,
                            gamma=5.0 if mu.size == 3 else None)
    ctx_size, window, _, _ = psi_args(psi)
    assert window
    work = scratch(psi.theta, ctx_size, True)
    assert refimpl.rbf.window_exception(psi.theta, work)[0] == exception
    mode_at = refimpl.rbf._window_layout(mu.size, 4)[4]
    x = 3.0 * rng.standard_normal((6, 13 * 3))
    if exception == refimpl.rbf.LOOK_UP_CENTRES:
        for t in (0.2, 0.9):
            (g_w, div_w), (g_g, div_g) = _both_paths(psi, x.reshape(6, 13, 3), t)
            np.testing.assert_allclose(g_w, g_g, rtol=PATH_RTOL, atol=0.0)
            np.testing.assert_allclose(div_w, div_g, rtol=PATH_RTOL, atol=0.0)
        return
    for t in (0.2, 0.9):
        for row in x:
            out = []
            for mode in (exception, refimpl.rbf.LOOK_UP_CENTRES):
                work[mode_at] = mode
                g = np.empty(row.size)
                out.append((g, window_field_and_divergence(row, t, psi.theta, work, 13, 3, g)))
            np.testing.assert_array_equal(out[0][0], out[1][0])
            assert out[0][1] == out[1][1]


@pytest.mark.parametrize("kwargs", [{"gamma": 1.0}, {"mu": [0.0, 0.5, 2.0, 4.0]}])
def test_rbf_outside_the_window_conditions_uses_its_own_functions(kwargs):
    # wide Gaussians (more than WINDOW centres matter) or unequal centres
    psi = refimpl.RBFKernel(**kwargs)
    ctx_size, window, _, _ = psi_args(psi)
    assert not window and ctx_size == psi.ctx_size


def test_single_row_kernel_equals_its_row_in_a_batch():
    rng = np.random.default_rng(2)
    for psi in (refimpl.RBFKernel(0.3 * rng.standard_normal((50, 10))),
                refimpl.TanhMLP(8, rng=1)):
        x = 1.5 * rng.standard_normal((5, 6, 3))
        g = refimpl.vector_field(x, 0.7, psi)
        div = refimpl.divergence(x, 0.7, psi)
        for b in range(5):
            np.testing.assert_array_equal(refimpl.vector_field(x[b], 0.7, psi), g[b])
            assert refimpl.divergence(x[b:b + 1], 0.7, psi)[0] == div[b]


def test_check_psi_remembers_a_valid_psi_but_sees_every_change():
    psi = refimpl.RBFKernel(np.ones((50, 10)))
    x = np.ones((2, 2)) * np.arange(2)[:, None]
    refimpl.vector_field(x, 0.0, psi)
    assert getattr(psi, "_psi_checked", None) is not None
    psi.theta[7] += 0.25  # a centre edited in place: the stored spacing is stale
    with pytest.raises(ValueError, match="derived entries"):
        refimpl.vector_field(x, 0.0, psi)
    psi.theta[7] -= 0.25
    refimpl.vector_field(x, 0.0, psi)
    psi.ctx_size = 1
    with pytest.raises(ValueError, match="ctx_size"):
        refimpl.vector_field(x, 0.0, psi)
    psi.ctx_size = 2 * 50 + 10
    check_psi(psi)
    with pytest.raises(TypeError, match="pair"):
        psi.pair = None
        check_psi(psi)


def test_field_and_divergence_is_one_evaluation_of_both():
    """The public pair equals the two separate calls bitwise (window and
    general path, one configuration and a batch) and checks its input as they do."""
    rng = np.random.default_rng(4)
    for psi in (refimpl.RBFKernel(0.3 * rng.standard_normal((50, 10))),
                refimpl.TanhMLP(8, rng=2)):
        for x in (rng.standard_normal((5, 2)), rng.standard_normal((3, 2, 6, 3))):
            g, div = refimpl.field_and_divergence(x, 0.3, psi)
            np.testing.assert_array_equal(g, refimpl.vector_field(x, 0.3, psi))
            np.testing.assert_array_equal(div, refimpl.divergence(x, 0.3, psi))
            assert g.shape == x.shape and div.shape == x.shape[:-2]
        for bad_x, bad_t, error in ((x, np.nan, ValueError), (np.ones(3), 0.3, ValueError),
                                    (x.astype(complex), 0.3, TypeError)):
            with pytest.raises(error) as got:
                refimpl.field_and_divergence(bad_x, bad_t, psi)
            with pytest.raises(error) as want:
                refimpl.vector_field(bad_x, bad_t, psi)
            assert str(got.value) == str(want.value)
