"""Gaussian radial basis functions in distance and time (the paper's psi).

Layout of the parameters and the per-sample scratch:

``theta = [n_r, n_t, gamma, gamma_t, spacing, mu (n_r), nu (n_t), W (n_r n_t, row-major)]``
    ``spacing = mu[k+1] - mu[k]`` if the distance centres are equally spaced,
    else 0. Only ``W`` is trainable.
``ctx = [c (n_r), b (n_t), e (n_r)]``
    ``b_l = exp(-gamma_t (t - nu_l)^2)``, ``c_k = sum_l W_kl b_l`` (set by
    ``prepare``) and ``e_k = exp(-gamma (r - mu_k)^2)`` (scratch of the pair
    functions).
"""

import math

import numpy as np
from numba import njit

from ._exp import exp
from ._intrinsics import stack_array
from ._validate import (as_finite_float, as_float_array, as_positive_float, as_positive_int,
                        check_range)
from .psi import Psi, check_parameter, family_function

_HEADER = 5
# n_distance and n_time are checked against this before their centres are allocated: a
# kernel of more centres is a typo (1e5 centres already cost 1e5 exponentials per pair).
MAX_CENTRES = 10**5


@njit(cache=True)
def time_basis(theta, t, b, b0=0):
    """``b_l = exp(-gamma_t (t - nu_l)^2)`` into ``b[b0 + l]``."""
    n_r = int(theta[0])
    n_t = int(theta[1])
    gamma_t = theta[3]
    nu0 = _HEADER + n_r
    for l in range(n_t):
        b[b0 + l] = exp(-gamma_t * (t - theta[nu0 + l]) ** 2)


@njit(cache=True)
def coefficients(theta, t, b, c):
    """``b(t)`` into ``b`` (``time_basis``) and ``c_k = sum_l W_kl b_l`` into ``c``."""
    n_r = int(theta[0])
    n_t = int(theta[1])
    w0 = _HEADER + n_r + n_t
    time_basis(theta, t, b)
    for k in range(n_r):
        acc = 0.0
        for l in range(n_t):
            acc += theta[w0 + k * n_t + l] * b[l]
        c[k] = acc


@family_function("prepare")
def _prepare(theta, t, ctx):
    n_r = int(theta[0])
    n_t = int(theta[1])
    coefficients(theta, t, ctx[n_r: n_r + n_t], ctx[:n_r])


@family_function("prepare_vjp")
def _prepare_vjp(theta, t, ctx, ctx_bar, theta_bar):
    n_r = int(theta[0])
    n_t = int(theta[1])
    add_coefficients_vjp(theta, ctx[n_r: n_r + n_t], ctx_bar, theta_bar)


@njit(cache=True)
def add_coefficients_vjp(theta, b, c_bar, theta_bar):
    """Pull the cotangent ``c_bar`` of ``c = W b`` (``coefficients``) back to
    ``W``: ``theta_bar[W_kl] += c_bar[k] b[l]``."""
    n_r = int(theta[0])
    n_t = int(theta[1])
    w0 = _HEADER + n_r + n_t
    for k in range(n_r):
        for l in range(n_t):
            theta_bar[w0 + k * n_t + l] += c_bar[k] * b[l]


# Gaussians below this value are dropped: each dropped term of psi is at most
# 1e-22 |c_k|, and all of them together at most 1e-22 max|c| / (1 - rho), far
# below the ~1e-16 rounding of the sum itself (and 1e-19 for the slope terms).
GAUSSIAN_CUTOFF = 1e-22


@njit(cache=True)
def nearest_centre(r, mu_first, spacing, n_r):
    """Index of the centre nearest to ``r`` on the grid ``mu_first + k spacing``,
    clamped to ``0..n_r - 1`` before the conversion to an integer; a NaN ``r``
    gives 0 (a comparison with NaN is false), never an index off the grid."""
    position = (r - mu_first) / spacing
    position = position if position > 0.0 else 0.0
    position = position if position < n_r - 1.0 else n_r - 1.0
    return int(round(position))


@njit(cache=True)
def _gaussians(theta, r, e):
    """Fill ``e[k] = exp(-gamma (r - mu_k)^2)`` where it matters; return ``(lo, hi)``.

    Entries ``lo..hi`` (inclusive) are set; outside them the Gaussians are
    below ``GAUSSIAN_CUTOFF`` and count as zero. For equally spaced centres
    they follow from the nearest one by exact ratios instead of one ``exp``
    each: with ``d_k = r - mu_k``, ``e_{k+1} = e_k q_k`` where
    ``q_k = exp(gamma spacing (2 d_k - spacing))`` and ``q_{k+1} = q_k rho``,
    ``rho = exp(-2 gamma spacing^2)`` (mirrored downwards). Away from the
    nearest centre every ratio is at most 1, so nothing overflows and the
    values only fall, which is what makes the cutoff safe. Three ``exp`` per
    distance instead of ``n_r``; agrees with the direct formula to about
    1e-13 relative to the sum of |terms|.
    """
    n_r = int(theta[0])
    gamma = theta[2]
    spacing = theta[4]
    mu = theta[_HEADER: _HEADER + n_r]
    if spacing <= 0.0:
        for k in range(n_r):
            e[k] = exp(-gamma * (r - mu[k]) ** 2)
        return 0, n_r - 1
    k0 = nearest_centre(r, mu[0], spacing, n_r)
    d0 = r - mu[k0]
    e[k0] = exp(-gamma * d0 * d0)
    rho = exp(-2.0 * gamma * spacing * spacing)
    value = e[k0]
    q = exp(gamma * spacing * (2.0 * d0 - spacing))
    hi = k0
    while hi + 1 < n_r:
        value *= q
        q *= rho
        if value < GAUSSIAN_CUTOFF:
            break
        hi += 1
        e[hi] = value
    value = e[k0]
    q = exp(-gamma * spacing * (2.0 * d0 + spacing))
    lo = k0
    while lo > 0:
        value *= q
        q *= rho
        if value < GAUSSIAN_CUTOFF:
            break
        lo -= 1
        e[lo] = value
    return lo, hi


@njit(cache=True)
def _gaussians_in_ctx(theta, ctx, r):
    """``_gaussians`` into the scratch part of ``ctx``; returns ``(lo, hi, e, mu, gamma)``."""
    n_r = int(theta[0])
    n_t = int(theta[1])
    e = ctx[n_r + n_t: 2 * n_r + n_t]
    lo, hi = _gaussians(theta, r, e)
    return lo, hi, e, theta[_HEADER: _HEADER + n_r], theta[2]


@njit(cache=True)
def slope_term(gamma, d, w):
    """``-2 gamma d w``, the term of d psi / d r of a centre at distance ``d``
    with weighted Gaussian ``w``; exactly 0 where ``w`` is 0, also where
    ``2 gamma d`` overflows (a Gaussian far out underflows to 0 while
    ``gamma d`` can exceed 1e308: inf * 0 would give NaN)."""
    return -2.0 * gamma * d * w if w != 0.0 else 0.0


@family_function("pair")
def _pair(theta, ctx, r):
    lo, hi, e, mu, gamma = _gaussians_in_ctx(theta, ctx, r)
    value = 0.0
    slope = 0.0
    for k in range(lo, hi + 1):
        w = ctx[k] * e[k]
        value += w
        slope += slope_term(gamma, r - mu[k], w)
    return value, slope


@family_function("pair2")
def _pair2(theta, ctx, r):
    value, slope, curvature, _, _ = pair2_keeping_gaussians(theta, ctx, r)
    return value, slope, curvature


@family_function("pair_vjp")
def _pair_vjp(theta, ctx, r, g_psi, g_dpsi, ctx_bar, theta_bar):
    lo, hi, _, _, _ = _gaussians_in_ctx(theta, ctx, r)
    add_pair_vjp(theta, ctx, r, lo, hi, g_psi, g_dpsi, ctx_bar)


@njit(cache=True)
def pair2_keeping_gaussians(theta, ctx, r):
    """``pair2``'s ``(value, slope, curvature)``, and the range ``(lo, hi)`` of
    the Gaussians it summed, which stay in the scratch part of ``ctx`` for
    ``add_pair_vjp`` (a pullback that needs them again computes them once)."""
    lo, hi, e, mu, gamma = _gaussians_in_ctx(theta, ctx, r)
    value = 0.0
    slope = 0.0
    curvature = 0.0
    for k in range(lo, hi + 1):
        d = r - mu[k]
        w = ctx[k] * e[k]
        value += w
        slope += slope_term(gamma, d, w)
        curvature += (4.0 * gamma * gamma * d * d - 2.0 * gamma) * w if w != 0.0 else 0.0
    return value, slope, curvature, lo, hi


@njit(cache=True)
def add_pair_vjp(theta, ctx, r, lo, hi, g_psi, g_dpsi, ctx_bar):
    """``pair_vjp`` with the Gaussians ``lo..hi`` of ``r`` already in ``ctx``'s
    scratch: adds the pullback of ``(psi, psi')`` to ``c`` into ``ctx_bar``."""
    n_r = int(theta[0])
    n_t = int(theta[1])
    e = ctx[n_r + n_t: 2 * n_r + n_t]
    mu = theta[_HEADER: _HEADER + n_r]
    gamma = theta[2]
    for k in range(lo, hi + 1):
        if e[k] != 0.0:  # else the term is 0 (and its factor may have overflowed)
            ctx_bar[k] += (g_psi - 2.0 * gamma * (r - mu[k]) * g_dpsi) * e[k]


# The specialized kernel of ``refimpl._kernels`` evaluates psi on a fixed window
# of 2 WINDOW + 1 centres around the nearest one, with ``c`` zero-padded past
# both ends of the grid: no data-dependent loop exit, no indirect call. They
# apply when every Gaussian outside the window is below GAUSSIAN_CUTOFF
# (``fits_window``), so they drop nothing ``_pair`` keeps; the terms they add
# are below the cutoff (or have ``c = 0``).
WINDOW = 10


def fits_window(theta):
    """Whether the fixed-window kernels may evaluate the RBF psi of ``theta``.

    Needs equally spaced centres, and the first centre outside the window,
    at least ``(WINDOW + 1/2) spacing`` from ``r``, below the cutoff (with a
    factor e to spare for the rounding of the nearest-centre index).
    """
    gamma, spacing = float(theta[2]), float(theta[4])
    return spacing > 0.0 and (gamma * (spacing * (WINDOW + 0.5)) ** 2
                              >= 1.0 - math.log(GAUSSIAN_CUTOFF))


# ``window_prepare`` works in SIMD lanes of this many float64 (an AVX-512
# register; narrower machines take two or four steps per lane group): it
# computes ``b(t)`` for the time centres rounded up to a multiple of LANES
# (``nu`` is stored zero-padded in the scratch) and ``c(t)`` for the distance
# centres rounded up likewise (``W^T`` is zero-padded), so no loop of it ends
# in a scalar remainder.
LANES = 8
# Blocks of ``window_prepare``: ``b`` for up to TIME_BLOCK time centres at a
# time, ``c`` accumulated on the stack for up to C_BLOCK centres at a time.
TIME_BLOCK = 64
C_BLOCK = 256


@njit(cache=True)
def _window_layout(n_r, n_t):
    """Offsets in the fixed-window scratch ``[c padded, mu padded, b, W^T,
    exception, nu padded]`` and the row length ``n_c`` of ``W^T`` (``c`` and
    its right padding, rounded up to ``LANES``; zeros past ``n_r``);
    ``exception``: see ``window_exception``; ``nu`` padded with zeros to a
    multiple of ``LANES``."""
    n_c = -(-(n_r + WINDOW) // LANES) * LANES
    mu0 = WINDOW + n_c
    b0 = mu0 + n_r + 2 * WINDOW
    wt0 = b0 + n_t
    fix0 = wt0 + n_t * n_c
    nu0 = fix0 + 2
    return n_c, mu0, b0, wt0, fix0, nu0, nu0 + -(-n_t // LANES) * LANES


def window_work_size(theta):
    """Length of the per-sample scratch of the fixed-window kernels."""
    return _window_layout(int(theta[0]), int(theta[1]))[-1]


@njit(cache=True)
def window_setup(theta, work):
    """Fill the fixed parts of ``work``: padded centres, the zero padding of
    ``c``, ``W`` transposed and zero-padded (``W^T[l, k]`` at ``l n_c + k``),
    the centre off ``k spacing + mu_0`` (``window_exception``) and the time
    centres ``nu`` zero-padded.

    Centres past the grid continue its spacing; their ``c`` is 0, so they
    add exact zeros.
    """
    n_r = int(theta[0])
    n_t = int(theta[1])
    spacing = theta[4]
    n_c, mu0, b0, wt0, fix0, nu0, size = _window_layout(n_r, n_t)
    for m in range(size):
        work[m] = 0.0
    for l in range(n_t):
        work[nu0 + l] = theta[_HEADER + n_r + l]
    for m in range(n_r + 2 * WINDOW):
        k = m - WINDOW
        if 0 <= k < n_r:
            work[mu0 + m] = theta[_HEADER + k]
        else:
            work[mu0 + m] = theta[_HEADER] + k * spacing
    w0 = _HEADER + n_r + n_t
    for k in range(n_r):
        for l in range(n_t):
            work[wt0 + l * n_c + k] = theta[w0 + k * n_t + l]
    work[fix0] = NO_EXCEPTION
    for k in range(n_r):
        stored, computed = theta[_HEADER + k], k * spacing + theta[_HEADER]
        if stored != computed or math.copysign(1.0, stored) != math.copysign(1.0, computed):
            work[fix0] = WINDOW + k if work[fix0] == NO_EXCEPTION else LOOK_UP_CENTRES
            work[fix0 + 1] = stored


# ``window_exception``'s index where every centre is ``k spacing + mu_0`` in
# float64, and where more than one is not (the kernels then look them all up).
NO_EXCEPTION = -1
LOOK_UP_CENTRES = -2


@njit(cache=True)
def window_exception(theta, work):
    """``(padded index, value)`` of the one centre off ``k spacing + mu_0``, as
    ``window_setup`` stored it; the index is ``NO_EXCEPTION`` if there is none
    (``np.linspace`` grids have at most their endpoint) and
    ``LOOK_UP_CENTRES`` if there are more."""
    fix0 = _window_layout(int(theta[0]), int(theta[1]))[4]
    return int(work[fix0]), work[fix0 + 1]


@njit(cache=True)
def window_mu_offset(n_r, n_t):
    """Where the padded centres start in the fixed-window scratch: ``mu_k`` is
    at ``window_mu_offset + WINDOW + k``, ``c_k`` at ``WINDOW + k``."""
    return _window_layout(n_r, n_t)[1]


@njit(cache=True)
def window_basis_offset(n_r, n_t):
    """Where ``b(t)`` starts in the fixed-window scratch: ``b_l`` is at
    ``window_basis_offset + l`` (after ``window_prepare``)."""
    return _window_layout(n_r, n_t)[2]


@njit(cache=True, error_model="numpy")
def window_prepare(theta, t, work):
    """``b(t)`` and ``c(t)`` into ``work``, bitwise as ``coefficients`` computes them.

    ``b`` by ``time_basis``'s expression, in SIMD lanes over the zero-padded
    ``nu`` (``exp`` gives the same bits in a vector lane as alone); ``c_k``
    as the same products ``W_kl b_l`` summed in the same order (``l``
    increasing from ``0.0``), vectorized across ``k`` (``_add_to_c``). The
    padding past ``n_r`` (``W^T`` zero there) gets ``0 + 0 b_l = 0``, as
    ``window_setup`` left it. Up to ``TIME_BLOCK`` time centres and
    ``C_BLOCK`` distance centres (the benchmark's 50 x 10 psi, for one) in
    one block; larger kernels in blocks of these (the same sums, in the
    same order).
    """
    n_r = int(theta[0])
    n_t = int(theta[1])
    n_c, mu0, b0, wt0, fix0, nu0, size = _window_layout(n_r, n_t)
    gamma_t = theta[3]
    n_k = -(-n_r // LANES) * LANES
    b = stack_array(TIME_BLOCK)
    c = stack_array(C_BLOCK)
    if n_t <= TIME_BLOCK and n_k <= C_BLOCK:
        # The loops below would run once; without them it costs ~35 % less.
        _time_basis_block(work, t, gamma_t, nu0, b0, 0, n_t, b)
        _add_to_c(work, wt0, n_c, b, 0, n_t, 0, n_k, c)
        return
    for l0 in range(0, n_t, TIME_BLOCK):
        n_l = min(TIME_BLOCK, n_t - l0)
        _time_basis_block(work, t, gamma_t, nu0, b0, l0, n_l, b)
        for k0 in range(0, n_k, C_BLOCK):
            _add_to_c(work, wt0, n_c, b, l0, n_l, k0, min(C_BLOCK, n_k - k0), c)


# Indices into ``work`` below are unsigned: Numba tests a signed index for a
# negative value (counted from the end), and as the offsets here come from
# ``theta``, LLVM cannot drop that test, which turns every vector load or
# store into a gather or scatter.


@njit(cache=True, error_model="numpy", inline="always")
def _time_basis_block(work, t, gamma_t, nu0, b0, l0, n_l, b):
    """``b_l`` for ``l = l0 .. l0 + n_l - 1`` into ``b[l - l0]`` and
    ``work[b0 + l]``, the expression of ``time_basis``; the loop runs over
    the lanes rounded up to ``LANES`` (``nu`` is zero-padded in ``work``)."""
    at = np.uint64(nu0 + l0)
    for m in range(np.uint64(-(-n_l // LANES) * LANES)):
        b[m] = exp(-gamma_t * (t - work[at + m]) ** 2)
    at = np.uint64(b0 + l0)
    for m in range(np.uint64(n_l)):
        work[at + m] = b[m]


@njit(cache=True, error_model="numpy", inline="always")
def _add_to_c(work, wt0, n_c, b, l0, n_l, k0, n_block, c):
    """``c_k += W_kl b_l`` for ``l = l0 .. l0 + n_l - 1`` in turn and
    ``k = k0 .. k0 + n_block - 1``, ``c_k`` in ``work`` (starting from
    ``0.0`` if ``l0 == 0``), ``b_l`` in ``b[l - l0]``. The partial sums stay
    on the stack (``c``) for the block, and in registers over 8 rows of
    ``W^T`` at a time (then 2, then 1: ``_add_rows``).

    Kept small in machine code, which every kernel linking it optimizes
    again: ``n_block`` is a multiple of ``LANES``, and written as
    ``n_block // LANES * LANES`` LLVM knows it and leaves out the scalar
    remainder of each vector loop; ``c`` starts from zeros on the stack
    rather than from a select in the first step (which LLVM split into two
    copies of each loop). With those remainders and copies and a 4-row step
    it cost ~1 s more CPU time in a cold start (import + first DW4 sample,
    empty Numba cache) for no measurable speed.
    """
    n_block = np.uint64(n_block // LANES) * np.uint64(LANES)
    c_at = np.uint64(WINDOW + k0)
    if l0 > 0:
        for k in range(n_block):
            c[k] = work[c_at + k]
    else:
        for k in range(n_block):
            c[k] = 0.0
    rows_at = wt0 + l0 * n_c + k0
    l = 0
    while l + 8 <= n_l:
        _add_rows(work, rows_at, n_c, b, l, 8, c, n_block)
        l += 8
    while l + 2 <= n_l:
        _add_rows(work, rows_at, n_c, b, l, 2, c, n_block)
        l += 2
    if l < n_l:
        _add_rows(work, rows_at, n_c, b, l, 1, c, n_block)
    for k in range(n_block):
        work[c_at + k] = c[k]


@njit(cache=True, error_model="numpy", inline="always")
def _add_rows(work, rows_at, n_c, b, l, rows, c, n_block):
    """``c[k] += W^T[l + j, k] b[l + j]`` for ``j = 0 .. rows - 1`` in turn,
    ``k < n_block``; ``W^T[l + j]`` starts at ``work[rows_at + (l + j) n_c]``.
    ``rows`` is a literal: LLVM unrolls the loop over ``j``, keeps the
    partial sums in registers and vectorizes the loop over ``k``."""
    for k in range(n_block):
        acc = c[k]
        for j in range(rows):
            acc += work[np.uint64(rows_at + (l + j) * n_c) + k] * b[l + j]
        c[k] = acc


class RBFKernel(Psi):
    r"""Gaussian RBFs in distance and time.

    .. math::
        \psi(r, t) = \sum_{k, l} W_{kl}\, e^{-\gamma (r - \mu_k)^2}\, e^{-\gamma_t (t - \nu_l)^2}

    Parameters
    ----------
    weights : array_like, shape (n_distance, n_time), optional
        ``W``; zeros by default (the identity flow). The only trainable part.
    n_distance, n_time : int
        Numbers of centres (ignored where ``mu``/``nu`` are given).
    r_max : float
        Distance centres are equally spaced on ``[0, r_max]``.
    t_range : (float, float)
        Time centres are equally spaced on this interval.
    mu, nu : array_like, optional
        Explicit centres.
    gamma, gamma_t : float, optional
        Inverse squared widths; default ``1 / (2 spacing^2)``, so neighbouring
        Gaussians overlap at one standard deviation.
    """

    prepare = staticmethod(_prepare)
    pair = staticmethod(_pair)
    pair2 = staticmethod(_pair2)
    pair_vjp = staticmethod(_pair_vjp)
    prepare_vjp = staticmethod(_prepare_vjp)

    def __init__(self, weights=None, *, n_distance=50, n_time=10, r_max=8.0,
                 t_range=(0.0, 1.0), mu=None, nu=None, gamma=None, gamma_t=None):
        mu_name = "mu" if mu is not None else "r_max (the centres mu)"
        if mu is None:
            n_distance = as_positive_int(n_distance, "n_distance", minimum=2,
                                         maximum=MAX_CENTRES)
            mu = np.linspace(0.0, as_positive_float(r_max, "r_max"), n_distance)
        if nu is None:
            n_time = as_positive_int(n_time, "n_time", minimum=1, maximum=MAX_CENTRES)
            lo, hi = _interval(t_range, "t_range")
            if n_time > 1 and lo == hi:
                raise ValueError(f"t_range = ({lo}, {hi}) is empty: {n_time} time centres "
                                 "need t_range[0] < t_range[1] (or n_time=1)")
            nu = np.linspace(lo, hi, n_time)
        mu, nu = _centres(mu, "mu"), _centres(nu, "nu")
        gamma = _width(mu, mu_name, gamma, "gamma")
        gamma_t = _width(nu, "nu", gamma_t, "gamma_t")
        shape = (mu.size, nu.size)
        weights = np.zeros(shape) if weights is None else as_float_array(weights, "weights", shape)
        super().__init__(np.concatenate([[mu.size, nu.size, gamma, gamma_t, _uniform_spacing(mu)],
                                         mu, nu, weights.ravel()]))
        self.ctx_size = 2 * mu.size + nu.size
        self.trainable = np.arange(_HEADER + mu.size + nu.size, self.theta.size)
        self.differentiable = self.trainable.copy()

    @classmethod
    def from_theta(cls, theta):
        """Rebuild from a parameter vector in the layout above (e.g. a saved one)."""
        theta = as_float_array(theta, "theta")
        if theta.ndim != 1 or theta.size < _HEADER:
            raise ValueError("theta is too short for an RBFKernel")
        n_r, n_t = int(theta[0]), int(theta[1])
        if n_r != theta[0] or n_t != theta[1] or n_r < 1 or n_t < 1 \
                or theta.size != _HEADER + n_r + n_t + n_r * n_t:
            raise ValueError(f"theta of length {theta.size} does not fit the RBFKernel layout")
        mu = theta[_HEADER: _HEADER + n_r]
        nu = theta[_HEADER + n_r: _HEADER + n_r + n_t]
        weights = theta[_HEADER + n_r + n_t:].reshape(n_r, n_t)
        return cls(weights, mu=mu, nu=nu, gamma=theta[2], gamma_t=theta[3])

    def check_ranges(self):
        """``ValueError`` unless ``gamma``, ``gamma_t`` and the weights are at
        most ``refimpl.psi.MAX_PARAMETER`` (``check_psi`` calls this; the
        constructor, used by ``from_theta`` for gradient vectors too, does not)."""
        check_parameter(self.gamma, "gamma")
        check_parameter(self.gamma_t, "gamma_t")
        check_parameter(self.weights, "weights")

    @property
    def shape(self):
        return int(self.theta[0]), int(self.theta[1])

    @property
    def gamma(self):
        return float(self.theta[2])

    @property
    def gamma_t(self):
        return float(self.theta[3])

    @property
    def mu(self):
        """Distance centres (read-only: build a new kernel to change them)."""
        return _read_only(self.theta[_HEADER: _HEADER + self.shape[0]])

    @property
    def nu(self):
        """Time centres (read-only: build a new kernel to change them)."""
        n_r, n_t = self.shape
        return _read_only(self.theta[_HEADER + n_r: _HEADER + n_r + n_t])

    @property
    def weights(self):
        """``W``, shape (n_distance, n_time): a view into ``theta``."""
        n_r, n_t = self.shape
        return self.theta[_HEADER + n_r + n_t:].reshape(n_r, n_t)

    def __repr__(self):
        n_r, n_t = self.shape
        return f"RBFKernel({n_r} x {n_t} centres, gamma={self.gamma:.4g}, gamma_t={self.gamma_t:.4g})"


def _read_only(view):
    view.flags.writeable = False
    return view


def _uniform_spacing(mu):
    """``mu[1] - mu[0]`` if ``mu`` is increasing and equally spaced to rounding, else 0."""
    if mu.size < 2:
        return 0.0
    step = (mu[-1] - mu[0]) / (mu.size - 1)
    ideal = mu[0] + step * np.arange(mu.size)
    if step > 0 and np.max(np.abs(mu - ideal)) <= 8 * np.finfo(float).eps * np.max(np.abs(mu)):
        return float(step)
    return 0.0


def _interval(pair, name):
    """``(lo, hi)`` from a pair of finite numbers with ``lo <= hi``."""
    if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (start, end) of numbers, got {pair!r}")
    lo, hi = (as_finite_float(v, name) for v in pair)
    if lo > hi:
        raise ValueError(f"{name} = ({lo}, {hi}) must be increasing")
    return lo, hi


def _centres(centres, name):
    """A non-empty 1-D array of finite centres within MAX_COORDINATE."""
    centres = as_float_array(centres, name)
    if centres.ndim != 1 or centres.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array of centres, got shape "
                         f"{centres.shape}")
    check_range(centres, name)
    return centres


def _width(centres, name, gamma, gamma_name):
    """``gamma`` if given, else ``1 / (2 spacing^2)`` of the centres, with clear errors."""
    if gamma is not None:
        return as_positive_float(gamma, gamma_name)
    if centres.size < 2:
        return 0.5
    spacing = np.float64(np.max(centres) - np.min(centres)) / (centres.size - 1)
    if spacing == 0.0:
        raise ValueError(f"{name} has {centres.size} centres all equal to {centres[0]}: "
                         f"give distinct centres, or {gamma_name} explicitly")
    with np.errstate(over="ignore", divide="ignore"):
        gamma = float(1.0 / (2.0 * spacing ** 2))
    if not np.isfinite(gamma):
        raise ValueError(f"{name} centres are {spacing:.3g} apart; the default "
                         f"{gamma_name} = 1 / (2 spacing^2) overflows float64: spread the "
                         f"centres or give {gamma_name} explicitly")
    return gamma


def psi_numpy(p, r, t):
    """``(psi, dpsi/dr)`` by the direct double sum in NumPy, for an array of distances ``r``.

    ``p`` holds the formula's parameters ``mu, nu, gamma, gamma_t, weights``
    (``refimpl.families``); the float dtype of ``p``, ``r`` and ``t`` is kept
    (``refimpl.vectors`` evaluates it in extended precision). The oracle of
    the Numba ``pair`` (which sums the Gaussians by ratios from the nearest
    centre, ``tests/test_psi.py``) and the reference of the golden vectors.
    """
    time_rbf = np.exp(-p["gamma_t"] * (t - p["nu"]) ** 2)
    d = r[..., None] - p["mu"]
    dist_rbf = np.exp(-p["gamma"] * d * d)
    c = p["weights"] @ time_rbf
    return dist_rbf @ c, (-2.0 * p["gamma"] * d * dist_rbf) @ c
