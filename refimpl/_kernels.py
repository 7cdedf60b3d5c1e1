"""Numba kernels: the equivariant field, its exact divergence, batched solves.

Configurations are stored flat, ``x[i * D + d]`` for particle ``i`` and
coordinate ``d``; the augmented ODE state is ``y = [x, l]`` of length
``K * D + 1``. Every loop is explicit and runs in float64 without fastmath,
so a result depends only on its own inputs: batches are split over threads
one sample at a time, and each sample's arithmetic is the same in any batch
and with any number of threads.
"""

import functools
import math

import numpy as np
from numba import njit, prange, types

from . import ode, rbf
from .psi import PAIR_TYPE, PREPARE_TYPE, compiled


@njit(cache=True, error_model="numpy")
def field_and_divergence(x, t, theta, ctx, prepare, pair, K, D, g, window):
    r"""Write ``g(x, t)`` (seed eq. 3) into ``g``; return ``div g`` (eq. 4).

    .. math::
        g_i = \sum_{j \ne i} \psi(r_{ij}, t)\,(x_i - x_j), \qquad
        \operatorname{div} g = \sum_i \sum_{j \ne i}
            \big[\psi'(r_{ij}, t)\, r_{ij} + D\, \psi(r_{ij}, t)\big]

    Each unordered pair is visited once: it adds to ``g_i`` and subtracts
    from ``g_j``, and counts twice in the divergence. The diagonal ``j = i``
    is excluded (the seed's eq. 4 erratum, DESIGN.md section 1). At
    ``r_ij = 0`` the pair contributes ``D psi(0, t)`` twice to the divergence
    and nothing to the field, which is the limit of the formula.

    With ``window`` true, psi is the RBF family evaluated by its fixed-window
    functions (``rbf.window_pair``, called directly so that it inlines) and
    ``ctx`` is their scratch (``window_args``); otherwise psi's own
    ``prepare`` and ``pair`` are called. Only ``x[:K * D]`` is read and
    ``g[:K * D]`` written.
    """
    if window:
        rbf.window_prepare(theta, t, ctx)
    else:
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
            if window:
                value, slope = rbf.window_pair(theta, ctx, r)
            else:
                value, slope = pair(theta, ctx, r)
            for d in range(D):
                diff = x[i * D + d] - x[j * D + d]
                g[i * D + d] += value * diff
                g[j * D + d] -= value * diff
            div += slope * r + D * value
    return 2.0 * div


@njit(cache=True)
def augmented_rhs(t, y, out, p):
    """``d/dt [x, l] = [g(x, t), -div g(x, t)]``; ``p = (theta, ctx, prepare, pair, K, D, window)``."""
    theta, ctx, prepare, pair, K, D, window = p
    out[K * D] = -field_and_divergence(y, t, theta, ctx, prepare, pair, K, D, out, window)


@njit(cache=True)
def scratch(theta, ctx_size, window):
    """The per-sample ``ctx`` of ``field_and_divergence``: ``ctx_size`` entries,
    with the fixed parts of the window scratch filled in ``window`` mode."""
    ctx = np.empty(max(ctx_size, 1))
    if window:
        rbf.window_setup(theta, ctx)
    return ctx


def psi_args(psi):
    """``(ctx_size, window, prepare, pair)`` as the kernels take them for ``psi``
    (checked with ``psi.check_psi``).

    ``window`` is true for an RBF psi that fits the fixed-window kernels
    (``rbf.fits_window``); ``ctx_size`` is then the size of their scratch.
    The functions are passed as compiled addresses (``psi.compiled``).
    """
    if psi.pair is rbf.RBFKernel.pair and psi.prepare is rbf.RBFKernel.prepare \
            and rbf.fits_window(psi.theta):
        ctx_size, window = rbf.window_work_size(psi.theta), True
    else:
        ctx_size, window = int(psi.ctx_size), False
    return ctx_size, window, compiled(psi, "prepare"), compiled(psi, "pair")


_solve_augmented = ode.make_solver(augmented_rhs).solve

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
        self._dispatcher = None

    @property
    def dispatcher(self):
        """The compiled Numba function (compiled now if it was not yet)."""
        if self._dispatcher is None:
            self._dispatcher = njit(self._signature, **self._options)(self._fn)
        return self._dispatcher

    def __call__(self, *args):
        return self.dispatcher(*args)


_f8 = types.float64
_i8 = types.int64
_vec = types.float64[::1]
_mat = types.float64[:, ::1]
_imat = types.int64[:, ::1]
_ivec = types.int64[::1]
_b1 = types.boolean


_FIELD_SIG = types.void(_mat, _f8, _vec, _i8, _b1, PREPARE_TYPE, PAIR_TYPE, _i8, _i8, _mat, _vec)


@compile_on_first_call(_FIELD_SIG, cache=True, parallel=True)
def field_and_divergence_batch(X, t, theta, ctx_size, window, prepare, pair, K, D, G, div):
    """``G[b] = g(X[b], t)`` and ``div[b] = div g(X[b], t)`` for every row ``b``."""
    for b in prange(X.shape[0]):
        ctx = scratch(theta, ctx_size, window)
        div[b] = field_and_divergence(X[b], t, theta, ctx, prepare, pair, K, D, G[b], window)


@compile_on_first_call(_FIELD_SIG, cache=True)
def field_and_divergence_one(X, t, theta, ctx_size, window, prepare, pair, K, D, G, div):
    """``field_and_divergence_batch`` for a single row, without starting threads
    (which costs more than the row itself: the same arithmetic)."""
    ctx = scratch(theta, ctx_size, window)
    div[0] = field_and_divergence(X[0], t, theta, ctx, prepare, pair, K, D, G[0], window)


@compile_on_first_call(types.void(_mat, _f8, _f8, _f8, _f8, _i8, _vec, _i8, _b1, PREPARE_TYPE,
                                  PAIR_TYPE, _i8, _i8, _mat, _imat, _ivec, _vec, _mat),
                       cache=True, parallel=True)
def solve_flow_batch(Y0, t0, t1, rtol, atol, max_steps, theta, ctx_size, window, prepare, pair,
                     K, D, Y, stats, status, t_end, times):
    """Integrate the augmented ODE for every row of ``Y0``, each on its own steps.

    ``Y[b]`` receives the state at ``t1``, ``stats[b]`` the counts
    ``[nfev, naccept, nreject]``, ``status[b]`` an ``ode`` status code,
    ``t_end[b]`` the time reached and ``times[b]`` the times reached by the
    accepted steps (as many as ``times.shape[1]`` allows).
    """
    for b in prange(Y0.shape[0]):
        p = (theta, scratch(theta, ctx_size, window), prepare, pair, K, D, window)
        code, t_reached = _solve_augmented(p, t0, t1, Y0[b], rtol, atol, max_steps,
                                          Y[b], stats[b], times[b])
        status[b] = code
        t_end[b] = t_reached
