"""Numba kernels for parameter gradients: the discrete adjoint of the solve.

The map differentiated is the one the forward solve computed: the accepted
steps (recorded as the times they reached) are held fixed, and every step is
the Dormand--Prince update

.. math::
    Y_s = y_n + h \\sum_{j<s} A_{sj} k_j, \\quad k_s = f(\\tau_s, Y_s), \\quad
    y_{n+1} = y_n + h \\sum_s B_s k_s ,

with ``f`` the augmented right-hand side ``[g, -div g]``. Its reverse mode,
for a cotangent ``ybar`` of ``y_{n+1}``: ``kbar_s = h B_s ybar``, then for
``s = 5, ..., 0``: ``Ybar_s = (df/dY)^T kbar_s`` (and ``(df/dtheta)^T kbar_s``
into the parameter cotangent), ``kbar_j += h A_sj Ybar_s`` for ``j < s``,
and ``ybar_n = ybar + sum_s Ybar_s``. The first stage of a step is the
previous step's last evaluation (FSAL), taken at the same time ``tau`` the
forward solve used, so the replayed map is bitwise the forward one. The
sweep needs the stage states ``Y_s``: the forward solve records them when a
gradient follows (``ode``'s ``solve``), and ``replay_batch`` recomputes them
otherwise (a separate kernel: the adjoint's own does not contain the solver).
"""

import math

import numpy as np
from numba import njit, prange, types

from . import ode, rbf
from ._intrinsics import function_at, stack_array, stack_index_array
from ._kernels import (BLOCK, augmented_rhs, block_lanes, compile_on_first_call, next_pair,
                       scratch, window_constants, window_ratios)
from .psi import PAIR2_TYPE, PAIR_TYPE, PAIR_VJP_TYPE, PREPARE_TYPE, PREPARE_VJP_TYPE
from .tableau import A, B, C, N_STAGES

_rk_step = ode.make_solver(augmented_rhs).rk_step


@njit(cache=True)
def _distance_and_dot(y, kbar, i, j, D):
    """``r = |x_i - x_j|`` and ``s = (kbar_i - kbar_j) . (x_i - x_j)``."""
    r2 = 0.0
    s = 0.0
    for d in range(D):
        diff = y[i * D + d] - y[j * D + d]
        r2 += diff * diff
        s += (kbar[i * D + d] - kbar[j * D + d]) * diff
    return math.sqrt(r2), s


@njit(cache=True)
def augmented_rhs_vjp(t, y, kbar, theta, ctx, ctx_bar, prepare, pair2, pair_vjp, prepare_vjp,
                      K, D, ybar, theta_bar, rbf_psi=False):
    """Pull the cotangent ``kbar`` of ``f(t, y) = [g(x, t), -div g(x, t)]`` back.

    Adds ``(df/dy)^T kbar`` into ``ybar`` and ``(df/dtheta)^T kbar`` into
    ``theta_bar``. Per pair ``u = x_i - x_j``, ``r = |u|``, with
    ``s = (kbar_i - kbar_j) . u`` and ``lbar = kbar[K D]``:

    * ``ubar = psi (kbar_i - kbar_j) + [s psi' - 2 lbar (psi'' r + (1 + D) psi')] u / r``,
      added to ``x_i`` and subtracted from ``x_j``;
    * ``psi`` receives ``s - 2 D lbar`` and ``psi'`` receives ``-2 r lbar``.

    At ``r = 0`` the radial term is taken as 0: the field is differentiable
    there (its Jacobian is ``psi(0) I``), while the divergence has a kink
    whenever ``psi'(0) != 0``; 0 is the average of its one-sided derivatives.

    With ``rbf_psi`` true, psi is the RBF family and its functions are called
    directly instead of through the pointers (which are then not used), with
    each pair's Gaussians computed once for ``pair2`` and ``pair_vjp``
    (``rbf.pair2_keeping_gaussians``, ``rbf.add_pair_vjp``): the same code
    on the same numbers, so the same result bitwise.
    """
    if rbf_psi:
        n_r = int(theta[0])
        rbf.coefficients(theta, t, ctx[n_r: n_r + int(theta[1])], ctx[:n_r])
    else:
        prepare(theta, t, ctx)
    for m in range(ctx_bar.shape[0]):
        ctx_bar[m] = 0.0
    lbar = kbar[K * D]
    for i in range(K):
        for j in range(i + 1, K):
            r, s = _distance_and_dot(y, kbar, i, j, D)
            if rbf_psi:
                value, slope, curvature, lo, hi = rbf.pair2_keeping_gaussians(theta, ctx, r)
            else:
                value, slope, curvature = pair2(theta, ctx, r)
                lo = hi = 0
            radial = 0.0
            if r > 0.0:
                radial = (s * slope - 2.0 * lbar * (curvature * r + (1.0 + D) * slope)) / r
            for d in range(D):
                diff = y[i * D + d] - y[j * D + d]
                ubar = value * (kbar[i * D + d] - kbar[j * D + d]) + radial * diff
                ybar[i * D + d] += ubar
                ybar[j * D + d] -= ubar
            if rbf_psi:
                rbf.add_pair_vjp(theta, ctx, r, lo, hi, s - 2.0 * D * lbar, -2.0 * r * lbar,
                                 ctx_bar)
            else:
                pair_vjp(theta, ctx, r, s - 2.0 * D * lbar, -2.0 * r * lbar, ctx_bar,
                         theta_bar)
    if rbf_psi:
        n_r = int(theta[0])
        rbf.add_coefficients_vjp(theta, ctx[n_r: n_r + int(theta[1])], ctx_bar, theta_bar)
    else:
        prepare_vjp(theta, t, ctx, ctx_bar, theta_bar)


# The fixed window of ``_kernels.window_field_and_divergence``: the centres
# ``nearest - WINDOW .. nearest + WINDOW`` of each pair, in blocks of pairs.
_SPAN = 2 * rbf.WINDOW + 1
_E_SIZE = _SPAN * BLOCK


@njit(cache=True, error_model="numpy", inline="always")
def _add_pullback_term(sums, r, e_m, keep_m, c_k, mu_k, gamma, g_psi, g_dpsi):
    """One centre's terms of psi, psi' and psi'' (``rbf.pair2_keeping_gaussians``)
    added to ``sums[:3]``, and its term of ``rbf.add_pair_vjp`` as ``sums[3]``
    (the same expressions); a term not kept (``keep_m == 0``) is an exact 0.0."""
    total, total_slope, total_bend, _ = sums
    kept = keep_m != 0.0
    d = r - mu_k
    w = c_k * e_m
    bend = (4.0 * gamma * gamma * d * d - 2.0 * gamma) * w if w != 0.0 else 0.0
    c_bar = (g_psi - 2.0 * gamma * (r - mu_k) * g_dpsi) * e_m if e_m != 0.0 else 0.0
    slope = rbf.slope_term(gamma, d, w)
    return (total + (w if kept else 0.0), total_slope + (slope if kept else 0.0),
            total_bend + (bend if kept else 0.0), c_bar if kept else 0.0)


@njit(cache=True, error_model="numpy", inline="always")
def _window_pullbacks(lanes, r, dot, nearest, first, up, down, e, keep, psi, slope, curvature,
                      work, mu0, n_r, gamma, rho, lbar, D):
    """For each pair in ``lanes``: its Gaussians on the window by the ratio
    recurrence (which of them ``rbf._gaussians`` keeps into ``keep``), psi,
    psi' and psi'' into ``psi``, ``slope`` and ``curvature`` (sums in
    increasing ``k``), and the terms its pullback adds to ``c_bar`` into
    ``e`` (0.0 where none is added). As ``_kernels.window_sums``: loops over
    ``m`` that LLVM unrolls, so the loop over lanes runs in SIMD; the sums in
    four loops of 5 or 6 centres (longer ones were not unrolled, and the lane
    loop stayed scalar: measured); nothing called in it that takes arrays
    (an inlined helper taking ``e`` left it scalar too)."""
    for lane in range(lanes):
        k0 = nearest[lane]
        rr = r[lane]
        e[rbf.WINDOW * BLOCK + lane] = first[lane]
        keep[rbf.WINDOW * BLOCK + lane] = 1.0
        value = first[lane]
        ratio = up[lane]
        for m in range(1, rbf.WINDOW + 1):
            value *= ratio
            ratio *= rho
            inside = (k0 + m < n_r) & (value >= rbf.GAUSSIAN_CUTOFF)
            e[(rbf.WINDOW + m) * BLOCK + lane] = value
            keep[(rbf.WINDOW + m) * BLOCK + lane] = 1.0 if inside else 0.0
        value = first[lane]
        ratio = down[lane]
        for m in range(1, rbf.WINDOW + 1):
            value *= ratio
            ratio *= rho
            inside = (k0 - m >= 0) & (value >= rbf.GAUSSIAN_CUTOFF)
            e[(rbf.WINDOW - m) * BLOCK + lane] = value
            keep[(rbf.WINDOW - m) * BLOCK + lane] = 1.0 if inside else 0.0
        g_psi = dot[lane] - 2.0 * D * lbar
        g_dpsi = -2.0 * rr * lbar
        sums = (0.0, 0.0, 0.0, 0.0)
        for m in range(0, 5):
            sums = _add_pullback_term(sums, rr, e[m * BLOCK + lane], keep[m * BLOCK + lane],
                                      work[k0 + m], work[mu0 + k0 + m], gamma, g_psi, g_dpsi)
            e[m * BLOCK + lane] = sums[3]
        for m in range(5, rbf.WINDOW):
            sums = _add_pullback_term(sums, rr, e[m * BLOCK + lane], keep[m * BLOCK + lane],
                                      work[k0 + m], work[mu0 + k0 + m], gamma, g_psi, g_dpsi)
            e[m * BLOCK + lane] = sums[3]
        for m in range(rbf.WINDOW, rbf.WINDOW + 5):
            sums = _add_pullback_term(sums, rr, e[m * BLOCK + lane], keep[m * BLOCK + lane],
                                      work[k0 + m], work[mu0 + k0 + m], gamma, g_psi, g_dpsi)
            e[m * BLOCK + lane] = sums[3]
        for m in range(rbf.WINDOW + 5, _SPAN):
            sums = _add_pullback_term(sums, rr, e[m * BLOCK + lane], keep[m * BLOCK + lane],
                                      work[k0 + m], work[mu0 + k0 + m], gamma, g_psi, g_dpsi)
            e[m * BLOCK + lane] = sums[3]
        total, total_slope, total_bend, _ = sums
        psi[lane] = total
        slope[lane] = total_slope
        curvature[lane] = total_bend


@njit(cache=True, error_model="numpy")
def window_rhs_vjp(t, y, kbar, theta, work, c_bar, K, D, ybar, theta_bar):
    """``augmented_rhs_vjp`` for the RBF psi, on the fixed window of the forward kernel.

    ``work`` is the window scratch (``_kernels.psi_args``, ``rbf.window_setup``),
    ``c_bar`` room for the cotangent of the padded ``c``. Each pair's
    Gaussians are computed once, by the ratio recurrence of ``rbf._gaussians``
    (the same expressions), ``rbf.WINDOW`` steps each way, in blocks of pairs
    side by side as ``_kernels.window_field_and_divergence`` does. A term
    counts where ``rbf._gaussians`` would keep it: the nearest centre, and
    outwards from it the centres of the grid up to the first Gaussian below
    ``rbf.GAUSSIAN_CUTOFF`` (they only fall outwards when the window applies,
    so that is ``value >= GAUSSIAN_CUTOFF``); every other term is replaced by
    an exact ``0.0``, which leaves a sum unchanged (a sum started at ``0.0``
    is never ``-0.0``). The sums over centres run in increasing ``k`` and the
    cotangents are added pair by pair in the order of ``augmented_rhs_vjp``,
    with its expressions: for finite states (the accepted steps it is called
    at) the result is bitwise that of ``augmented_rhs_vjp`` with the RBF
    family's functions. Like them it pulls back ``rbf._pair``'s psi, which
    drops the Gaussians below the cutoff that the forward window kernel adds:
    the gradient is that of a map within ~1e-22 (relative to ``max |c|``) of
    the one solved.
    """
    rbf.window_prepare(theta, t, work)
    n_r, gamma, spacing, mu_first, mu0, rho = window_constants(theta)
    n_t = int(theta[1])
    b0 = rbf.window_basis_offset(n_r, n_t)
    n_pad = n_r + 2 * rbf.WINDOW
    r = stack_array(BLOCK)
    dot = stack_array(BLOCK)
    nearest = stack_index_array(BLOCK)
    first = stack_array(BLOCK)
    up = stack_array(BLOCK)
    down = stack_array(BLOCK)
    psi = stack_array(BLOCK)
    slope = stack_array(BLOCK)
    curvature = stack_array(BLOCK)
    pair_i = stack_index_array(BLOCK)
    pair_j = stack_index_array(BLOCK)
    e = stack_array(_E_SIZE)
    keep = stack_array(_E_SIZE)
    for m in range(n_pad):
        c_bar[m] = 0.0
    lbar = kbar[K * D]
    n_pairs = K * (K - 1) // 2
    i = 0
    j = 1
    for start in range(0, n_pairs, BLOCK):
        count = min(BLOCK, n_pairs - start)
        lanes = block_lanes(count)
        for lane in range(count, lanes):
            r[lane] = mu_first  # an idle lane: computed, never used
            dot[lane] = 0.0
        for lane in range(count):
            r[lane], dot[lane] = _distance_and_dot(y, kbar, i, j, D)
            pair_i[lane] = i
            pair_j[lane] = j
            i, j = next_pair(i, j, K)
        # exponents capped only where the ratios lead onto padded centres (never kept)
        window_ratios(r, lanes, theta, work, mu0, nearest, first, up, down)
        _window_pullbacks(lanes, r, dot, nearest, first, up, down, e, keep, psi, slope,
                          curvature, work, mu0, n_r, gamma, rho, lbar, D)
        for lane in range(count):  # pair by pair, in the order of augmented_rhs_vjp
            i_0 = pair_i[lane] * D
            j_0 = pair_j[lane] * D
            rr = r[lane]
            s = dot[lane]
            radial = 0.0
            if rr > 0.0:
                radial = (s * slope[lane] - 2.0 * lbar * (curvature[lane] * rr
                                                          + (1.0 + D) * slope[lane])) / rr
            for d in range(D):
                diff = y[i_0 + d] - y[j_0 + d]
                ubar = psi[lane] * (kbar[i_0 + d] - kbar[j_0 + d]) + radial * diff
                ybar[i_0 + d] += ubar
                ybar[j_0 + d] -= ubar
            k0 = nearest[lane]
            for m in range(_SPAN):
                c_bar[k0 + m] += e[m * BLOCK + lane]  # 0.0 for a term not added: no change
    rbf.add_coefficients_vjp(theta, work[b0: b0 + n_t], c_bar[rbf.WINDOW: rbf.WINDOW + n_r],
                             theta_bar)


@njit(cache=True)
def stage_times(t0, times, n_steps, taus, hs):
    """Steps ``hs[m]`` and stage times ``taus[m]`` of ``n_steps`` accepted steps
    from ``t0``, with the forward solve's arithmetic.

    Step ``m`` goes from ``times[m-1]`` (``t0`` for ``m = 0``) to
    ``times[m]``; its first stage is the previous step's last evaluation,
    taken at that step's ``t + h`` (FSAL), which may differ from ``times[m-1]``
    by rounding.
    """
    t = t0
    tau = t0
    for m in range(n_steps):
        h = times[m] - t
        hs[m] = h
        taus[m, 0] = tau
        for s in range(1, N_STAGES):
            taus[m, s] = t + C[s] * h
        tau = t + h
        t = times[m]


@njit(cache=True)
def replay_one(y0, t0, times, n_steps, p, Ys, Ks, taus, hs, y_end):
    """Redo the ``n_steps`` accepted steps of a solve from ``y0`` at ``t0``.

    Step ``m`` goes from ``times[m-1]`` (``t0`` for ``m = 0``) to
    ``times[m]``, with the arithmetic of the forward solve, so the result is
    bitwise the same. Stores stage states ``Ys[m, s]`` (``Ys[m, 0] = y_m``),
    stage derivatives ``Ks[m]``, stage times ``taus[m]`` and steps ``hs[m]``
    (``stage_times``); writes the final state into ``y_end``.
    """
    n = y0.shape[0]
    stage_times(t0, times, n_steps, taus, hs)
    ode.copy_into(y_end, y0)
    k_first = np.empty(n)
    augmented_rhs(t0, y_end, k_first, p)
    t = t0
    for m in range(n_steps):
        ode.copy_into(Ks[m, 0], k_first)
        ode.copy_into(Ys[m, 0], y_end)
        _rk_step(p, t, Ys[m, 0], hs[m], Ks[m], Ys[m], y_end)
        ode.copy_into(k_first, Ks[m, N_STAGES])
        t = times[m]


@njit(cache=True)
def adjoint_one(vjp_at, t0, times, n_steps, states, ybar_end, theta, work, window, ctx, ctx_bar,
                prepare, pair2, pair_vjp, prepare_vjp, K, D, ybar0, theta_bar, rbf_psi):
    """Reverse mode of the frozen-step solve of one sample.

    ``states`` (``(m, N_STAGES, n)``, ``m >= n_steps``) holds the stage
    states of the steps, as the forward solve recorded them or
    ``replay_batch`` recomputed them (bitwise the same). Sweeps backwards from
    the cotangent ``ybar_end`` of the final state. Writes the cotangent of
    ``y0`` into ``ybar0`` and adds the parameter cotangent into ``theta_bar``.
    ``rbf_psi`` as for ``augmented_rhs_vjp``; with ``window`` too, the
    pullbacks run on the forward kernel's window (``window_rhs_vjp``, the
    same numbers, called at its address ``vjp_at``: ``_window_vjp.address``;
    ``work`` is its scratch) and ``ctx_bar`` has room for the padded ``c``.
    """
    n = ybar_end.shape[0]
    taus = np.empty((n_steps, N_STAGES))
    hs = np.empty(n_steps)
    stage_times(t0, times, n_steps, taus, hs)
    Ys = states

    ybar = ybar_end.copy()
    kbar = np.empty((N_STAGES, n))
    stage_bar = np.empty(n)
    for m in range(n_steps - 1, -1, -1):
        h = hs[m]
        for s in range(N_STAGES):
            for i in range(n):
                kbar[s, i] = h * B[s] * ybar[i]
        for s in range(N_STAGES - 1, -1, -1):
            stage_bar[:] = 0.0
            if window and rbf_psi:
                _window_vjp_at(vjp_at)(taus[m, s], Ys[m, s], kbar[s], theta, work, ctx_bar, K, D,
                                       stage_bar, theta_bar)
            else:
                augmented_rhs_vjp(taus[m, s], Ys[m, s], kbar[s], theta, ctx, ctx_bar, prepare,
                                  pair2, pair_vjp, prepare_vjp, K, D, stage_bar, theta_bar,
                                  rbf_psi)
            for i in range(n):
                ybar[i] += stage_bar[i]
            for j in range(s):
                for i in range(n):
                    kbar[j, i] += h * A[s, j] * stage_bar[i]
    ode.copy_into(ybar0, ybar)


def rbf_pullback(psi):
    """Whether every gradient function of ``psi`` is the RBF family's, so that
    the adjoint may call them directly (``augmented_rhs_vjp``'s ``rbf_psi``)."""
    cls = rbf.RBFKernel
    return all(getattr(psi, f) is getattr(cls, f)
               for f in ("prepare", "pair2", "pair_vjp", "prepare_vjp"))


_f8 = types.float64
_i8 = types.int64
_vec = types.float64[::1]
_mat = types.float64[:, ::1]
_ivec = types.int64[::1]
_b1 = types.boolean
_states = types.float64[:, :, :, ::1]


# The window pullback compiled on its own and called at its address by
# adjoint_one: linked into it, its code was optimized again in adjoint_one and
# in adjoint_batch (seconds of a first training step's compilation).
_WINDOW_VJP = types.void(_f8, _vec, _vec, _vec, _vec, _vec, _i8, _i8, _vec, _vec)
_window_vjp_at = function_at(_WINDOW_VJP, native=True)
_window_vjp = compile_on_first_call(_WINDOW_VJP, cache=True, error_model="numpy")(
    window_rhs_vjp.py_func)


@compile_on_first_call(types.void(_i8, _f8, _mat, _ivec, _states, _mat, _vec, _i8, _b1,
                                  PREPARE_TYPE, _i8, PAIR2_TYPE, PAIR_VJP_TYPE,
                                  PREPARE_VJP_TYPE, _b1, _i8, _i8, _mat, _mat),
                       cache=True, parallel=True)
def adjoint_batch(vjp_at, t0, times, n_steps, states, Ybar, theta, work_size, window, prepare,
                  ctx_size, pair2, pair_vjp, prepare_vjp, rbf_psi, K, D, Y0bar, theta_bar):
    """``adjoint_one`` for every row; ``theta_bar[b]`` holds sample ``b``'s share.

    ``states[b]`` are row ``b``'s stage states (recorded by
    ``_kernels.solve_flow_batch`` or replayed by ``replay_batch``), for all
    its ``n_steps[b]`` steps. ``work_size`` and ``window`` select the
    window scratch as for ``_kernels.solve_flow_batch``; ``ctx_size`` is
    psi's own scratch, used by the general pullback; ``rbf_psi``
    (``rbf_pullback``) as for ``augmented_rhs_vjp``; ``vjp_at`` is
    ``_window_vjp.address`` where both ``window`` and ``rbf_psi`` hold (the
    window pullback is not called otherwise: 0 will do). The per-sample parameter
    cotangents are summed by the caller in a fixed order, so the total does
    not depend on the number of threads.
    """
    for b in prange(Ybar.shape[0]):
        work = scratch(theta, work_size, window)
        ctx = np.empty(max(ctx_size, 1))
        ctx_bar = np.empty(max(ctx_size, work_size, 1))
        theta_bar[b, :] = 0.0
        adjoint_one(vjp_at, t0, times[b], n_steps[b], states[b], Ybar[b], theta, work, window,
                    ctx, ctx_bar, prepare, pair2, pair_vjp, prepare_vjp, K, D, Y0bar[b],
                    theta_bar[b], rbf_psi)


@compile_on_first_call(types.void(_mat, _f8, _mat, _ivec, _vec, _i8, _b1, PREPARE_TYPE,
                                  PAIR_TYPE, _i8, _i8, _mat, _states), cache=True, parallel=True)
def replay_batch(Y0, t0, times, n_steps, theta, ctx_size, window, prepare, pair, K, D, Y,
                 states):
    """The frozen-step map: ``replay_one`` for every row, final states into ``Y``
    and, where ``states[b]`` has room for all of row ``b``'s steps, their
    stage states into it (``states.shape[1] = 0`` keeps none)."""
    for b in prange(Y0.shape[0]):
        n = Y0.shape[1]
        m = n_steps[b]
        ctx = scratch(theta, ctx_size, window)
        Ys = states[b] if m <= states.shape[1] else np.empty((m, N_STAGES, n))
        replay_one(Y0[b], t0, times[b], m, (theta, ctx, prepare, pair, K, D, window), Ys,
                   np.empty((m, N_STAGES + 1, n)), np.empty((m, N_STAGES)), np.empty(m), Y[b])
