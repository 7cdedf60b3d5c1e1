"""Numba kernels: the equivariant field, its exact divergence, batched solves.

Configurations are stored flat, ``x[i * D + d]`` for particle ``i`` and
coordinate ``d``; the augmented ODE state is ``y = [x, l]`` of length
``K * D + 1``. Every loop is explicit and runs in float64 without fastmath,
so a result depends only on its own inputs: batches are split over threads
one sample (or one lockstep group of samples, ``_lockstep``) at a time, and
each sample's arithmetic is the same in any batch or group and with any
number of threads.
"""

import functools
import math

import numba
import numpy as np
from numba import njit, prange, types

from . import _lockstep, ode, rbf
from ._exp import exp as _exp
from ._intrinsics import call_kernel, function_at, stack_array, stack_index_array
from .psi import PAIR_SIG, PREPARE_SIG, check_psi, compiled, function_argument


@njit(cache=True, error_model="numpy")
def field_and_divergence(x, t, theta, ctx, prepare, pair, K, D, g, window):
    r"""Write ``g(x, t)`` (paper eq. 3) into ``g``; return ``div g`` (eq. 4).

    .. math::
        g_i = \sum_{j \ne i} \psi(r_{ij}, t)\,(x_i - x_j), \qquad
        \operatorname{div} g = \sum_i \sum_{j \ne i}
            \big[\psi'(r_{ij}, t)\, r_{ij} + D\, \psi(r_{ij}, t)\big]

    Each unordered pair is visited once, in the order ``(0, 1), (0, 2), ...,
    (1, 2), ...``: it adds to ``g_i`` and subtracts from ``g_j``, and counts
    twice in the divergence. The diagonal ``j = i`` is excluded (the paper's
    eq. 4 erratum, README "The math"). At ``r_ij = 0`` the pair contributes
    ``D psi(0, t)`` twice to the divergence and nothing to the field, which
    is the limit of the formula.

    With ``window`` true, psi is the RBF family evaluated on its fixed window
    (``window_field_and_divergence``) and ``ctx`` is that kernel's scratch
    (``psi_args``); otherwise psi's own ``prepare`` and ``pair`` are called.
    Only ``x[:K * D]`` is read and ``g[:K * D]`` written.
    """
    if window:
        return window_field_and_divergence(x, t, theta, ctx, K, D, g)
    return psi_field_and_divergence(x, t, theta, ctx, prepare, pair, K, D, g)


@njit(cache=True, error_model="numpy")
def psi_field_and_divergence(x, t, theta, ctx, prepare, pair, K, D, g):
    """``field_and_divergence`` through psi's own ``prepare`` and ``pair``."""
    prepare(theta, t, ctx)
    for m in range(K * D):
        g[m] = 0.0
    div = 0.0
    for i in range(K):
        for j in range(i + 1, K):
            r2 = 0.0
            for d in range(D):
                diff = x[i * D + d] - x[j * D + d]
                r2 += diff * diff
            r = math.sqrt(r2)
            value, slope = pair(theta, ctx, r)
            div += _add_pair(x, i, j, D, value, slope, r, g)
    return 2.0 * div


@njit(cache=True)
def _add_pair(x, i, j, D, value, slope, r, g):
    """Add pair ``(i, j)``'s share to ``g``; return its divergence term."""
    for d in range(D):
        diff = x[i * D + d] - x[j * D + d]
        g[i * D + d] += value * diff
        g[j * D + d] -= value * diff
    return slope * r + D * value


# Pairs evaluated side by side by ``window_field_and_divergence``: each step
# of the per-pair arithmetic is a loop over a block of up to BLOCK pairs with a
# run-time trip count, which LLVM's loop vectorizer turns into SIMD code
# without reordering any pair's own arithmetic (a short loop of constant trip
# count would be unrolled into scalar code instead). A constant of the code,
# not of the machine: sums over pairs are formed in pair order afterwards.
BLOCK = 64
_SPAN = 2 * rbf.WINDOW + 1
# The Gaussians below the nearest centre, kept from the downward recurrence
# until the window sum reaches them.
_E_SIZE = rbf.WINDOW * BLOCK
# The pair vectors x_i - x_j of a block are kept on the stack for D <= 3
# (recomputed, the same numbers, beyond), so the field is accumulated without
# computing them again.
_STACK_DIMS = 3
_DIFF_SIZE = _STACK_DIMS * BLOCK
# A block's lanes are rounded up to a multiple of LANE_MULTIPLE (idle lanes
# compute an unused pair): a vectorized loop runs the iterations past the last
# multiple of its vector width in scalar code, each costing as much as a whole
# vector of pairs (measured: K = 13, 78 pairs, 20 % of an evaluation).
_LANE_SHIFT = 3
LANE_MULTIPLE = 1 << _LANE_SHIFT


@njit(cache=True, inline="always")
def block_lanes(count):
    """The lanes a block of ``1 <= count <= BLOCK`` pairs runs: ``count``
    rounded up to a multiple of ``LANE_MULTIPLE``. The form matters: rounded
    with ``//``, or without the ``min`` or the ``max`` (redundant as
    arithmetic), LLVM left the window kernel's lane loop scalar (measured:
    K = 55 took twice as long)."""
    return min(BLOCK, max(((count + LANE_MULTIPLE - 1) >> _LANE_SHIFT) << _LANE_SHIFT,
                          LANE_MULTIPLE))


@njit(cache=True, inline="always")
def next_pair(i, j, K):
    """The pair after ``(i, j)`` in the order ``(0, 1), (0, 2), ..., (1, 2), ...``."""
    j += 1
    if j == K:
        i += 1
        j = i + 1
    return i, j


@njit(cache=True, inline="always")
def window_constants(theta):
    """What the window kernels read of an RBF psi's ``theta``: ``(n_r, gamma,
    spacing, mu_0, mu_offset, rho)`` with ``mu_offset`` where the padded
    centres start in the scratch (``rbf.window_mu_offset``) and ``rho =
    exp(-2 gamma spacing^2)``, the factor of ``rbf._gaussians``' ratios."""
    n_r = int(theta[0])
    gamma = theta[2]
    spacing = theta[4]
    rho = _exp(-2.0 * gamma * spacing * spacing)
    return n_r, gamma, spacing, theta[5], rbf.window_mu_offset(n_r, int(theta[1])), rho


@njit(cache=True, error_model="numpy", inline="always")
def window_ratios(r, lanes, theta, work, mu0, nearest, first, up, down):
    """The start of the ratio recurrence of ``rbf._gaussians`` for the
    distances ``r[:lanes]``: the nearest centre ``k0`` into ``nearest``, its
    Gaussian into ``first``, and the first ratios upwards and downwards into
    ``up`` and ``down`` (three ``exp`` per distance, the same expressions).

    The exponents of the ratios are capped at 700; they exceed 0 only where
    the ratios lead onto padded centres (``window_field_and_divergence``).
    Inlined into the window kernels (``inline="always"``), so the loop runs
    over their stack arrays and vectorizes there.
    """
    n_r = int(theta[0])
    gamma = theta[2]
    spacing = theta[4]
    mu_first = theta[5]
    for lane in range(lanes):
        k0 = rbf.nearest_centre(r[lane], mu_first, spacing, n_r)
        nearest[lane] = k0
        d0 = r[lane] - work[mu0 + rbf.WINDOW + k0]
        first[lane] = _exp(-gamma * d0 * d0)
        up[lane] = _exp(min(gamma * spacing * (2.0 * d0 - spacing), 700.0))
        down[lane] = _exp(min(-gamma * spacing * (2.0 * d0 + spacing), 700.0))


@njit(cache=True, error_model="numpy", inline="always")
def window_sums(lanes, look_up, r, nearest, base, first, up, down, e, psi, slope, work, mu0,
                gamma, spacing, mu_first, rho, k_exception, mu_exception):
    """psi and its slope of the pairs in ``lanes`` into ``psi`` and ``slope``:
    for each, the ratio recurrence of ``rbf._gaussians`` run ``rbf.WINDOW``
    steps each way from ``window_ratios``' start, without a cutoff test and
    each value capped at 1 (``window_field_and_divergence``), and the terms
    summed in increasing ``k`` as ``rbf._pair`` sums them. The Gaussians below
    the nearest centre wait in ``e`` for the sum to reach them. The centres
    are looked up (``look_up``) or computed as ``(k - WINDOW) spacing + mu_0``
    with the one exception ``rbf.window_exception`` stores (the same numbers as
    the padded centres in ``work``). The lane's ``c`` starts at ``work[base[lane]]``
    (its sample's scratch; the centres are those of the first).

    The loops over ``m`` have constant trip counts and LLVM unrolls them, so
    the loop over lanes is the innermost loop and runs in SIMD. What that
    needs (each measured, the lane loop otherwise stayed scalar at twice the
    cost): the sum in two loops, below and from the nearest centre (one loop
    of 2 WINDOW + 1 terms is too big to be unrolled); no call that passes
    arrays inside the lane loop (even inlined); inlined into the kernel
    (``inline="always"``) and called with a constant ``look_up``, so neither
    copy tests it in the loop (~15 %).
    """
    for lane in range(lanes):
        k0 = nearest[lane]
        c0 = base[lane] + k0
        r_lane = r[lane]
        value = first[lane]
        ratio = down[lane]
        for m in range(1, rbf.WINDOW + 1):
            value = min(value * ratio, 1.0)
            ratio *= rho
            e[(rbf.WINDOW - m) * BLOCK + lane] = value
        total = 0.0
        total_slope = 0.0
        for m in range(rbf.WINDOW):
            k = k0 + m
            if look_up:
                mu_k = work[mu0 + k]
            else:
                mu_k = mu_exception if k == k_exception else (k - rbf.WINDOW) * spacing + mu_first
            w = work[c0 + m] * e[m * BLOCK + lane]
            total += w
            total_slope += rbf.slope_term(gamma, r_lane - mu_k, w)
        value = first[lane]
        ratio = up[lane]
        for m in range(rbf.WINDOW, _SPAN):
            if m > rbf.WINDOW:
                value = min(value * ratio, 1.0)
                ratio *= rho
            k = k0 + m
            if look_up:
                mu_k = work[mu0 + k]
            else:
                mu_k = mu_exception if k == k_exception else (k - rbf.WINDOW) * spacing + mu_first
            w = work[c0 + m] * value
            total += w
            total_slope += rbf.slope_term(gamma, r_lane - mu_k, w)
        psi[lane] = total
        slope[lane] = total_slope


@njit(cache=True, error_model="numpy")
def window_field_and_divergence(x, t, theta, work, K, D, g):
    """``field_and_divergence`` for the RBF psi on its fixed window.

    ``work`` is the scratch of ``psi_args`` (``rbf.window_setup``). For each
    pair: the nearest centre ``k0``, then the ratio recurrence of
    ``rbf._gaussians`` (three ``exp``) run ``rbf.WINDOW`` steps each way
    without a cutoff test, then psi and its slope summed over the window in
    increasing ``k``, as ``rbf._pair`` sums them. Two guards act only on
    padded centres, past the grid: the ratio exponents are capped at 700
    (they exceed 0 only when ``r`` lies more than half a spacing beyond the
    last centre, or before the first, and then every centre on that side is
    padded) and each value at 1 (a Gaussian never exceeds it, and a real one
    away from the nearest centre is below exp(-gamma spacing^2 / 4)), so
    padded terms stay finite and add ``0 * e = 0``.

    Pairs go through in blocks of up to ``BLOCK`` (their lanes rounded up by
    ``block_lanes``), in loops across the block over stack arrays
    (``_intrinsics.stack_array``) that LLVM runs in SIMD lanes: distances
    (their squares, then the square roots), ``window_ratios``,
    ``window_sums``; field and divergence are then
    accumulated pair by pair in the order of ``field_and_divergence``, with
    the same products (the pair vectors ``x_i - x_j`` are kept from the
    distance step). ``c`` is read
    from ``work`` by index (no array views: each costs reference counting);
    the centres in the window sums are computed as ``k spacing + mu_0``,
    with the one exception ``rbf.window_exception`` stores (such as
    ``np.linspace``'s endpoint): the same numbers as the padded centres in
    ``work``, without a second gather per term; grids with more exceptions
    look every centre up.
    """
    rbf.window_prepare(theta, t, work)
    n_r, gamma, spacing, mu_first, mu0, rho = window_constants(theta)
    k_exception, mu_exception = rbf.window_exception(theta, work)
    look_up = k_exception == rbf.LOOK_UP_CENTRES
    r = stack_array(BLOCK)
    nearest = stack_index_array(BLOCK)
    base = stack_index_array(BLOCK)
    first = stack_array(BLOCK)
    up = stack_array(BLOCK)
    down = stack_array(BLOCK)
    psi = stack_array(BLOCK)
    slope = stack_array(BLOCK)
    pair_i = stack_index_array(BLOCK)
    pair_j = stack_index_array(BLOCK)
    e = stack_array(_E_SIZE)
    diffs = stack_array(_DIFF_SIZE)
    keep = D <= _STACK_DIMS
    for lane in range(BLOCK):
        base[lane] = 0  # one sample: its c starts at work[0] in every lane
    for m in range(K * D):
        g[m] = 0.0
    div = 0.0
    n_pairs = K * (K - 1) // 2
    i = 0
    j = 1
    for start in range(0, n_pairs, BLOCK):
        count = min(BLOCK, n_pairs - start)
        lanes = block_lanes(count)
        for lane in range(count, lanes):
            r[lane] = 0.0  # an idle lane: computed, never used
        # Indices unsigned, in this loop and the accumulation: Numba tests a
        # signed index for a negative value (counted from the end), a compare
        # and a select per access that LLVM cannot drop here.
        for lane in range(count):
            i_0 = np.uint64(i * D)
            j_0 = np.uint64(j * D)
            at = np.uint64(lane * D)
            r2 = 0.0
            for d in range(np.uint64(D)):
                diff = x[i_0 + d] - x[j_0 + d]
                if keep:
                    diffs[at + d] = diff
                r2 += diff * diff
            r[lane] = r2
            pair_i[lane] = i
            pair_j[lane] = j
            i, j = next_pair(i, j, K)
        # the square roots in SIMD (one per pair in the loop above waited for
        # each: ~4 % of an evaluation at K = 13)
        for lane in range(lanes):
            r[lane] = math.sqrt(r[lane])
        window_ratios(r, lanes, theta, work, mu0, nearest, first, up, down)
        # Each lane's recurrence and window sum; the loops over m in
        # window_sum have constant trip counts and are unrolled, so the loop
        # over lanes runs in SIMD. Two copies of it, so that neither tests
        # look_up inside (which cost ~15 %).
        if look_up:
            window_sums(lanes, True, r, nearest, base, first, up, down, e, psi, slope, work,
                        mu0, gamma, spacing, mu_first, rho, k_exception, mu_exception)
        else:
            window_sums(lanes, False, r, nearest, base, first, up, down, e, psi, slope, work,
                        mu0, gamma, spacing, mu_first, rho, k_exception, mu_exception)
        for lane in range(count):
            i_0 = np.uint64(pair_i[lane] * D)
            j_0 = np.uint64(pair_j[lane] * D)
            at = np.uint64(lane * D)
            for d in range(np.uint64(D)):
                diff = diffs[at + d] if keep else x[i_0 + d] - x[j_0 + d]
                share = psi[lane] * diff
                g[i_0 + d] += share
                g[j_0 + d] -= share
            div += slope[lane] * r[lane] + D * psi[lane]
    return 2.0 * div


@njit(cache=True, error_model="numpy")
def window_rows_field_and_divergence(X, T, rows, n_rows, theta, works, K, D, G, div):
    """``window_field_and_divergence`` of several samples side by side: for
    ``b = rows[q]``, ``q < n_rows``, ``G[b, :K D] = g(X[b], T[b])`` and
    ``div[b] = div g(X[b], T[b])``, with ``works[b]`` as the scratch of
    sample ``b`` (all of one psi).

    The pairs of the samples go through the blocks one after the other
    (sample by sample, each in pair order), so a block's lanes hold pairs of
    several samples when each has few (K = 4: six pairs); each pair's
    arithmetic, and each sample's sums in pair order, are those of the
    sample alone: the numbers do not depend on which samples are evaluated
    together. The centres in the window sums are computed (a psi whose
    centres ``rbf.window_exception`` says to look up is evaluated one sample
    at a time, by ``window_field_and_divergence``).
    """
    if n_rows == 0:
        return
    size = works.shape[1]
    work = works.ravel()
    for q in range(n_rows):
        rbf.window_prepare(theta, T[rows[q]], works[rows[q]])
    n_r, gamma, spacing, mu_first, mu0, rho = window_constants(theta)
    k_exception, mu_exception = rbf.window_exception(theta, works[rows[0]])
    r = stack_array(BLOCK)
    nearest = stack_index_array(BLOCK)
    base = stack_index_array(BLOCK)
    first = stack_array(BLOCK)
    up = stack_array(BLOCK)
    down = stack_array(BLOCK)
    psi = stack_array(BLOCK)
    slope = stack_array(BLOCK)
    pair_b = stack_index_array(BLOCK)
    pair_i = stack_index_array(BLOCK)
    pair_j = stack_index_array(BLOCK)
    e = stack_array(_E_SIZE)
    diffs = stack_array(_DIFF_SIZE)
    keep = D <= _STACK_DIMS
    for q in range(n_rows):
        b = rows[q]
        for m in range(K * D):
            G[b, m] = 0.0
        div[b] = 0.0  # stays for K = 1 (no pairs)
    n_pairs = K * (K - 1) // 2
    q = 0
    i = 0
    j = 1
    row = rows[0]  # the sample whose divergence is being summed, in ``total``
    total = 0.0
    for start in range(0, n_rows * n_pairs, BLOCK):
        count = min(BLOCK, n_rows * n_pairs - start)
        lanes = block_lanes(count)
        for lane in range(count, lanes):
            r[lane] = 0.0  # an idle lane: computed, never used
            base[lane] = 0
        for lane in range(count):
            b = rows[q]
            u = np.uint64(b)
            i_0 = np.uint64(i * D)
            j_0 = np.uint64(j * D)
            at = np.uint64(lane * D)
            r2 = 0.0
            for d in range(np.uint64(D)):
                diff = X[u, i_0 + d] - X[u, j_0 + d]
                if keep:
                    diffs[at + d] = diff
                r2 += diff * diff
            r[lane] = r2
            base[lane] = b * size
            pair_b[lane] = b
            pair_i[lane] = i
            pair_j[lane] = j
            i, j = next_pair(i, j, K)
            if j == K:  # past the last pair: the next sample
                i = 0
                j = 1
                q += 1
        for lane in range(lanes):
            r[lane] = math.sqrt(r[lane])
        window_ratios(r, lanes, theta, work, mu0, nearest, first, up, down)
        window_sums(lanes, False, r, nearest, base, first, up, down, e, psi, slope, work, mu0,
                    gamma, spacing, mu_first, rho, k_exception, mu_exception)
        for lane in range(count):
            b = pair_b[lane]
            if b != row:
                div[row] = 2.0 * total
                row = b
                total = 0.0
            i_0 = np.uint64(pair_i[lane] * D)
            j_0 = np.uint64(pair_j[lane] * D)
            at = np.uint64(lane * D)
            u = np.uint64(b)
            for d in range(np.uint64(D)):
                diff = diffs[at + d] if keep else X[u, i_0 + d] - X[u, j_0 + d]
                share = psi[lane] * diff
                G[u, i_0 + d] += share
                G[u, j_0 + d] -= share
            total += slope[lane] * r[lane] + D * psi[lane]
    div[row] = 2.0 * total


@njit(cache=True)
def augmented_rhs(t, y, out, p):
    """``d/dt [x, l] = [g(x, t), -div g(x, t)]``; ``p = (theta, ctx, prepare, pair, K, D, window)``."""
    theta, ctx, prepare, pair, K, D, window = p
    out[K * D] = -field_and_divergence(y, t, theta, ctx, prepare, pair, K, D, out, window)


@njit(cache=True)
def window_rhs(t, y, out, p):
    """``augmented_rhs`` on the fixed-window kernel alone; ``p = (evaluate_at,
    theta, work, K, D)`` with ``evaluate_at`` the address of
    ``window_field_and_divergence`` compiled on its own (``_window_field``;
    called through it, the kernel is compiled once, where linked into the
    solver it was optimized again in each function calling it)."""
    evaluate_at, theta, work, K, D = p
    out[K * D] = -_field_at(evaluate_at)(y, t, theta, work, K, D, out)


@njit(cache=True)
def window_rows_rhs(T, X, rows, n_rows, F, p):
    """``window_rhs`` of several samples at once: ``F[b] = f(T[b], X[b])`` for
    ``b = rows[q]``, ``q < n_rows``; ``p = (evaluate_at, theta, works, K, D,
    div)`` with ``evaluate_at`` the address of the multi-sample kernel
    ``window_rows_field_and_divergence`` compiled on its own
    (``_window_rows_field``; called through it, the kernel is compiled once,
    where inlined at the lockstep solve's four calls it cost seconds of
    compilation) and ``div`` room for one number per row."""
    evaluate_at, theta, works, K, D, div = p
    _rows_field_at(evaluate_at)(X, T, rows, n_rows, theta, works, K, D, F, div)
    for q in range(n_rows):
        F[rows[q], K * D] = -div[rows[q]]


@njit(cache=True)
def psi_rhs(t, y, out, p):
    """``augmented_rhs`` through psi's own functions alone; ``p = (theta, ctx, prepare, pair, K, D)``."""
    theta, ctx, prepare, pair, K, D = p
    out[K * D] = -psi_field_and_divergence(y, t, theta, ctx, prepare, pair, K, D, out)


@njit(cache=True)
def scratch(theta, ctx_size, window):
    """The per-sample ``ctx`` of ``field_and_divergence``: ``ctx_size`` entries,
    with the fixed parts of the window scratch filled in ``window`` mode."""
    ctx = np.empty(max(ctx_size, 1))
    if window:
        rbf.window_setup(theta, ctx)
    return ctx


def psi_mode(psi, verdict=None):
    """``(ctx_size, window)`` for ``psi`` (checked with ``psi.check_psi``).

    ``window`` is true for an RBF psi that fits the fixed-window kernels
    (``rbf.fits_window``); ``ctx_size`` is then the size of their scratch.
    Kept in the memo of psi's ``Verdict``, so it is worked out again only
    when psi changes. ``verdict`` is what ``check_psi(psi)`` returned just
    now, if the caller has it (else psi is checked here: it costs a
    microsecond).
    """
    memo = (verdict if verdict is not None else check_psi(psi)).memo
    mode = memo.get("psi_mode")
    if mode is None:
        if psi.pair is rbf.RBFKernel.pair and psi.prepare is rbf.RBFKernel.prepare \
                and rbf.fits_window(psi.theta):
            mode = rbf.window_work_size(psi.theta), True
        else:
            mode = int(psi.ctx_size), False
        memo["psi_mode"] = mode
    return mode


def psi_args(psi):
    """``(ctx_size, window, prepare, pair)`` as the kernels take them for ``psi``
    (checked with ``psi.check_psi``): ``psi_mode`` and psi's functions as
    compiled addresses (``psi.compiled``)."""
    return (*psi_mode(psi), compiled(psi, "prepare"), compiled(psi, "pair"))


def field_args(psi, verdict=None):
    """``psi_args`` for ``field_and_divergence_batch`` and ``solve_flow_batch``,
    which do not call psi's own functions in window mode: those are then
    ``None`` (and a first sample does not compile them). ``verdict`` as for
    ``psi_mode``."""
    ctx_size, window = psi_mode(psi, verdict)
    if window:
        return ctx_size, window, None, None
    return psi_args(psi)


class compile_on_first_call:
    """``njit(signature, **options)`` that compiles (or loads from Numba's cache)
    at the first call instead of at import.

    A kernel with an explicit signature is otherwise compiled when its module
    is imported, and a first sample would wait for every kernel of the
    package, gradients included (tens of seconds with an empty cache).
    """

    def __init__(self, signature, **options):
        self._signature = signature
        self._options = options

    def __call__(self, fn):
        return _FirstCall(fn, self._signature, self._options)


class _FirstCall:
    def __init__(self, fn, signature, options):
        functools.update_wrapper(self, fn)
        self._fn, self._signature, self._options = fn, signature, options
        self._dispatcher = self._argument = self._address = None

    @property
    def dispatcher(self):
        """The compiled Numba function (compiled now if it was not yet)."""
        if self._dispatcher is None:
            self._dispatcher = njit(self._signature, **self._options)(self._fn)
        return self._dispatcher

    @property
    def argument(self):
        """The compiled function as an argument of type ``types.FunctionType(signature)``
        for another kernel (``psi.function_argument``)."""
        if self._argument is None:
            self._argument = function_argument(self.dispatcher, self._signature)
        return self._argument

    @property
    def address(self):
        """The address of the compiled function's machine code, in Numba's own
        calling convention, for ``function_at(signature, native=True)`` in
        another kernel (no C wrapper in between). Fixed for the process: the
        function has one signature and is compiled once."""
        if self._address is None:
            result = self.dispatcher.get_compile_result(self._signature)
            self._address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
        return self._address

    def __call__(self, *args):
        return call_kernel(self.__name__, self.dispatcher, args)




_f8 = types.float64
_i8 = types.int64
_vec = types.float64[::1]
_mat = types.float64[:, ::1]
_imat = types.int64[:, ::1]
_ivec = types.int64[::1]
_b1 = types.boolean
_states = types.float64[:, :, :, ::1]


# The entry kernels. Two sets: on the fixed-window kernel (the RBF psi that
# fits it) and through psi's own functions; each compiles only its own path,
# so a first sample with an RBF psi compiles no first-class function call.
# Each is a serial kernel over the rows ``first .. stop - 1`` of a batch
# (``*_rows``); a single row runs it directly, without starting threads
# (which costs more than the row itself). A batch runs it row by row in
# threads (``*_threads``), passed as a first-class function: the threaded
# kernel then compiles as a small loop instead of a second copy of the whole
# solver (about a second and a half less compilation at a cold start). Each
# row's arithmetic is the same either way.

# The general path takes psi's prepare and pair as the int64 addresses of
# their compiled C wrappers (``_address``) and makes first-class functions of
# them inside (``_intrinsics.function_at``): Numba's dispatch of a first-class function
# argument calls back into Python twice per argument (~2 us each), more than
# a small call computes. The calls themselves are the same as through a
# function argument (Numba calls that address too).

_prepare_at = function_at(PREPARE_SIG)
_pair_at = function_at(PAIR_SIG)


def _address(fn, signature):
    """The C wrapper address of psi function ``fn`` as ``psi.compiled`` gives it."""
    if hasattr(fn, "__wrapper_address__"):
        return fn.__wrapper_address__()
    result = fn.get_compile_result(signature)  # the dispatcher itself (see psi.compiled)
    return result.library.get_pointer_to_function(result.fndesc.llvm_cfunc_wrapper_name)


_WINDOW_FIELD = (_i8, _mat, _f8, _vec, _i8, _i8, _i8, _mat, _vec)
_PSI_FIELD = (_mat, _f8, _vec, _i8, _i8, _i8, _i8, _i8, _mat, _vec)
# The window path's entry kernels take first the address of the window kernel
# they call (``_window_field.address``, ``_window_rows_field.address``).
_WINDOW_SOLVE = (_i8, _mat, _f8, _f8, _f8, _f8, _i8, _vec, _i8, _i8, _i8, _mat, _imat, _ivec, _vec,
                 _mat, _states)
_FIELD = types.float64(_vec, _f8, _vec, _vec, _i8, _i8, _vec)
_field_at = function_at(_FIELD, native=True)
_ROWS_FIELD = types.void(_mat, _vec, _ivec, _i8, _vec, _mat, _i8, _i8, _mat, _vec)
_rows_field_at = function_at(_ROWS_FIELD, native=True)
_PSI_SOLVE = (_mat, _f8, _f8, _f8, _f8, _i8, _vec, _i8, _i8, _i8, _i8, _i8, _mat, _imat, _ivec,
              _vec, _mat, _states)


def _rows(args):
    """The signature of a ``*_rows`` kernel taking ``args``."""
    return types.void(*args, _i8, _i8)


def _threads(args):
    """The signature of the ``*_threads`` kernel running a ``*_rows`` kernel of ``args``."""
    return types.void(types.FunctionType(_rows(args)), *args)


# The single-sample window kernel, compiled on its own for these argument
# types; the field and solve entry kernels call it at its address
# (``_window_field.address``): compiled once, whichever path comes first, where linked
# into them it was optimized again in every function calling it (more than a
# second of a cold start). ``field_and_divergence`` (``augmented_rhs``, which
# the gradient's frozen-step replay integrates) still links it: a copy of the
# same source, the same numbers (tests/test_grad.py, replay bitwise the solve).
_window_field = compile_on_first_call(_FIELD, cache=True, error_model="numpy")(
    window_field_and_divergence.py_func)


@compile_on_first_call(_rows(_WINDOW_FIELD), cache=True)
def _window_field_rows(evaluate_at, X, t, theta, work_size, K, D, G, div, first, stop):
    # One scratch for the rows: its fixed parts (padded centres, W transposed)
    # serve every row, and each evaluation writes the rest (b and c) first.
    work = scratch(theta, work_size, True)
    evaluate = _field_at(evaluate_at)
    for b in range(first, stop):
        div[b] = evaluate(X[b], t, theta, work, K, D, G[b])


# Most rows per task of a threaded field evaluation: tasks share one scratch (its set-up,
# W transposed, costs ~0.3 us), and a batch gives every thread a task. Each row's numbers
# do not depend on how the rows are split.
FIELD_ROWS_PER_TASK = 64


@compile_on_first_call(types.void(*_threads(_WINDOW_FIELD).args, _i8), cache=True,
                       parallel=True)
def _window_field_threads(rows, evaluate_at, X, t, theta, work_size, K, D, G, div, per_task):
    n = X.shape[0]
    tasks = -(-n // per_task)
    for task in prange(tasks):
        first = np.int64(task) * per_task  # prange counts in uint64
        rows(evaluate_at, X, t, theta, work_size, K, D, G, div, first, min(first + per_task, n))


@compile_on_first_call(_rows(_PSI_FIELD), cache=True)
def _psi_field_rows(X, t, theta, ctx_size, prepare_at, pair_at, K, D, G, div, first, stop):
    prepare = _prepare_at(prepare_at)
    pair = _pair_at(pair_at)
    for b in range(first, stop):
        ctx = scratch(theta, ctx_size, False)
        div[b] = psi_field_and_divergence(X[b], t, theta, ctx, prepare, pair, K, D, G[b])


@compile_on_first_call(_threads(_PSI_FIELD), cache=True, parallel=True)
def _psi_field_threads(rows, X, t, theta, ctx_size, prepare, pair, K, D, G, div):
    for b in prange(X.shape[0]):
        row = np.int64(b)
        rows(X, t, theta, ctx_size, prepare, pair, K, D, G, div, row, row + 1)


def field_and_divergence_batch(X, t, theta, ctx_size, window, prepare, pair, K, D, G, div):
    """``G[b] = g(X[b], t)`` and ``div[b] = div g(X[b], t)`` for every row ``b``
    (arguments as ``field_args`` gives them)."""
    if window:
        if X.shape[0] == 1:
            _window_field_rows(_window_field.address, X, t, theta, ctx_size, K, D, G, div, 0, 1)
        else:
            per_task = min(FIELD_ROWS_PER_TASK, -(-X.shape[0] // numba.get_num_threads()))
            _window_field_threads(_window_field_rows.argument, _window_field.address, X, t, theta,
                                  ctx_size, K, D, G, div, per_task)
        return
    functions = _address(prepare, PREPARE_SIG), _address(pair, PAIR_SIG)
    if X.shape[0] == 1:
        _psi_field_rows(X, t, theta, ctx_size, *functions, K, D, G, div, 0, 1)
    else:
        _psi_field_threads(_psi_field_rows.argument, X, t, theta, ctx_size, *functions, K, D, G,
                           div)


_solve_window = ode.make_solver(window_rhs).solve
_solve_psi = ode.make_solver(psi_rhs).solve
_solve_window_lockstep = _lockstep.make_lockstep_solver(window_rows_rhs)

# Samples solved side by side (``_lockstep``) in groups of LOCKSTEP_PAIRS //
# pairs per sample where that is at least 2: K = 4 (6 pairs) in groups of 10,
# K = 8 (28 pairs) in pairs of samples, K >= 9 one by one. A constant of the
# code: each sample's numbers are the same in a group and alone.
LOCKSTEP_PAIRS = 64


def lockstep_group(K):
    """How many samples of ``K`` particles the window solve runs side by side."""
    return max(1, LOCKSTEP_PAIRS // max(K * (K - 1) // 2, 1))


def _looks_up_centres(theta, work_size):
    """Whether the window kernels look this psi's centres up (``rbf.window_exception``):
    the multi-sample kernel computes them, so such a psi is solved one sample at a time."""
    work = np.empty(work_size)
    rbf.window_setup(theta, work)
    return rbf.window_exception(theta, work)[0] == rbf.LOOK_UP_CENTRES


@compile_on_first_call(_rows(_WINDOW_SOLVE), cache=True)
def _window_solve_rows(evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size, K, D, Y,
                       stats, status, t_end, times, states, first, stop):
    for b in range(first, stop):
        p = (evaluate_at, theta, scratch(theta, work_size, True), K, D)
        code, t_reached = _solve_window(p, t0, t1, Y0[b], rtol, atol, max_steps, Y[b], stats[b],
                                        times[b], states[b])
        status[b] = code
        t_end[b] = t_reached


@compile_on_first_call(_threads(_WINDOW_SOLVE), cache=True, parallel=True)
def _window_solve_threads(rows, evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size,
                          K, D, Y, stats, status, t_end, times, states):
    for b in prange(Y0.shape[0]):
        row = np.int64(b)
        rows(evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size, K, D, Y, stats,
             status, t_end, times, states, row, row + 1)


# The multi-sample kernel for the lockstep solve, which calls it at its address
# (``window_rows_rhs``): compiled on its own, for these argument types.
_window_rows_field = compile_on_first_call(_ROWS_FIELD, cache=True, error_model="numpy")(
    window_rows_field_and_divergence.py_func)


@compile_on_first_call(_rows(_WINDOW_SOLVE), cache=True)
def _window_lockstep_rows(evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size, K, D, Y,
                          stats, status, t_end, times, states, first, stop):
    n = stop - first
    works = np.empty((n, work_size))
    for b in range(n):
        rbf.window_setup(theta, works[b])
    p = (evaluate_at, theta, works, K, D, np.empty(n))
    _solve_window_lockstep(p, t0, t1, Y0[first:stop], rtol, atol, max_steps, Y[first:stop],
                           stats[first:stop], status[first:stop], t_end[first:stop],
                           times[first:stop], states[first:stop])


@compile_on_first_call(types.void(*_threads(_WINDOW_SOLVE).args, _i8), cache=True,
                       parallel=True)
def _window_lockstep_threads(rows, evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size,
                             K, D, Y, stats, status, t_end, times, states, group):
    n = Y0.shape[0]
    for task in prange(-(-n // group)):
        first = np.int64(task) * group  # prange counts in uint64
        rows(evaluate_at, Y0, t0, t1, rtol, atol, max_steps, theta, work_size, K, D, Y, stats,
             status, t_end, times, states, first, min(first + group, n))


@compile_on_first_call(_rows(_PSI_SOLVE), cache=True)
def _psi_solve_rows(Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size, prepare_at, pair_at, K,
                    D, Y, stats, status, t_end, times, states, first, stop):
    prepare = _prepare_at(prepare_at)
    pair = _pair_at(pair_at)
    for b in range(first, stop):
        p = (theta, scratch(theta, ctx_size, False), prepare, pair, K, D)
        code, t_reached = _solve_psi(p, t0, t1, Y0[b], rtol, atol, max_steps, Y[b], stats[b],
                                     times[b], states[b])
        status[b] = code
        t_end[b] = t_reached


@compile_on_first_call(_threads(_PSI_SOLVE), cache=True, parallel=True)
def _psi_solve_threads(rows, Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size, prepare, pair,
                       K, D, Y, stats, status, t_end, times, states):
    for b in prange(Y0.shape[0]):
        row = np.int64(b)
        rows(Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size, prepare, pair, K, D, Y, stats,
             status, t_end, times, states, row, row + 1)


def solve_flow_batch(Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size, window, prepare, pair,
                     K, D, Y, stats, status, t_end, times, states):
    """Integrate the augmented ODE for every row of ``Y0``, each on its own steps
    (psi's arguments as ``field_args`` gives them).

    ``Y[b]`` receives the state at ``t1``, ``stats[b]`` the counts
    ``[nfev, naccept, nreject]``, ``status[b]`` an ``ode`` status code,
    ``t_end[b]`` the time reached, ``times[b]`` the times reached by the
    accepted steps (as many as ``times.shape[1]`` allows) and ``states[b]``
    their stage states (as many as ``states.shape[1]`` allows; ``ode``'s
    ``solve``).
    """
    common = (Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size)
    rest = (K, D, Y, stats, status, t_end, times, states)
    if window:
        group = lockstep_group(K)
        # in lockstep only when every thread gets a whole group: a smaller batch
        # runs faster one sample per thread (and a first sample or two then
        # compiles only the one-sample solve)
        if group > 1 and Y0.shape[0] >= numba.get_num_threads() * group \
                and not _looks_up_centres(theta, ctx_size):
            _window_lockstep_threads(_window_lockstep_rows.argument, _window_rows_field.address,
                                     *common, *rest, group)
        elif Y0.shape[0] == 1:
            _window_solve_rows(_window_field.address, *common, *rest, 0, 1)
        else:
            _window_solve_threads(_window_solve_rows.argument, _window_field.address, *common,
                                  *rest)
        return
    functions = _address(prepare, PREPARE_SIG), _address(pair, PAIR_SIG)
    if Y0.shape[0] == 1:
        _psi_solve_rows(*common, *functions, *rest, 0, 1)
    else:
        _psi_solve_threads(_psi_solve_rows.argument, *common, *functions, *rest)
