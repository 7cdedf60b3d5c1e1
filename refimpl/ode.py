"""Adaptive Dormand--Prince 5(4) integration of one system, in Numba.

The step controller is the textbook one (Hairer, Norsett & Wanner I, Sec.
II.4) in the exact form used by ``scipy.integrate.solve_ivp(method="RK45")``,
so that on the same problem both take the same accepted steps:

* error norm: RMS over the components of ``h sum_s E_s k_s / scale`` with
  ``scale = atol + rtol max(|y|, |y_new|)``;
* a step is accepted when that norm is below 1; the next step is scaled by
  ``SAFETY * err**(-1/5)`` clamped to ``[MIN_FACTOR, MAX_FACTOR]``, and never
  grown right after a rejection;
* the first step follows the Hairer--Wanner rule (``initial_step``).

The right-hand side is a Numba function ``rhs(t, y, out, p)`` writing
``dy/dt`` into ``out``; ``p`` is any tuple of extra arguments passed through.
Everything here is per system: batches are handled by the caller, one
independent step sequence per sample (see ``_kernels.solve_flow_batch``).
``make_solver(rhs)`` builds the Numba solver functions for one ``rhs``.
"""

import collections
import functools
import math

import numpy as np
from numba import njit

from ._intrinsics import borrowed, row
from ._validate import as_positive_float, as_solver_rtol
from .tableau import A, B, C, E, ERROR_ESTIMATOR_ORDER, N_STAGES

SAFETY = 0.9  # multiply the asymptotically optimal step by this
MIN_FACTOR = 0.2  # largest decrease of the step size after one attempt
MAX_FACTOR = 10.0  # largest increase of the step size after one step
ERROR_EXPONENT = -1.0 / (ERROR_ESTIMATOR_ORDER + 1)  # step ~ err**(-1/5)

# Outcome of a solve, one code per sample.
SUCCESS = 0
MAX_STEPS_EXCEEDED = 1
STEP_TOO_SMALL = 2
NOT_FINITE = 3

STATUS_MESSAGES = {
    SUCCESS: "success",
    MAX_STEPS_EXCEEDED: "the number of steps exceeded max_steps",
    STEP_TOO_SMALL: "the step size fell below the spacing of floating-point numbers at t",
    NOT_FINITE: "the state or its derivative became NaN or infinite",
}

# Indices into the per-sample statistics array.
NFEV, NACCEPT, NREJECT = 0, 1, 2


@njit(cache=True)
def rms_norm(v):
    """Root mean square of the entries of ``v``, as ``scipy``'s ``norm``."""
    s = 0.0
    for i in range(v.shape[0]):
        s += v[i] * v[i]
    return math.sqrt(s) / math.sqrt(v.shape[0])


@njit(cache=True)
def all_finite(v):
    for i in range(v.shape[0]):
        if not math.isfinite(v[i]):
            return False
    return True


@njit(cache=True, error_model="numpy")
def error_norm(K, h, y, y_new, rtol, atol, work):
    """RMS norm of the embedded error estimate ``h sum_s E_s k_s / scale``,
    ``scale = atol + rtol max(|y|, |y_new|)``; NaN when ``y_new`` or
    ``K[N_STAGES] = f(t + h, y_new)`` is not finite (``y`` finite, ``atol > 0``),
    and otherwise only in the extreme case where both ``h sum_s E_s k_s`` and
    the scale overflow to inf (inf / inf; a scale beyond 1e308 needs an rtol
    near 1e300): the solve then ends as for a non-finite state.

    The check rides in the terms: ``x - x`` is 0 for a finite ``x`` and NaN
    otherwise, and adding 0 to a term leaves its square as it was. When both
    are finite, so is every stage ``k_0 .. k_5`` (each enters ``y_new``,
    ``k_1`` as ``0 * k_1``), so every term is finite, +-inf (``h != 0``,
    ``scale >= atol > 0``) or, in that extreme case, inf / inf. The terms go in one loop
    (SIMD lanes: no division check under NumPy's error model, and none is
    needed), their squares are summed in order in another. ``work`` is
    scratch of ``y``'s shape.
    """
    n = y.shape[0]
    for i in range(n):
        acc = 0.0
        for j in range(N_STAGES + 1):
            acc += K[j, i] * E[j]
        scale = atol + max(abs(y[i]), abs(y_new[i])) * rtol
        poison = (y_new[i] - y_new[i]) + (K[N_STAGES, i] - K[N_STAGES, i])
        term = acc * h / scale + poison
        work[i] = term * term
    squares = 0.0
    for i in range(n):
        squares += work[i]
    return math.sqrt(squares) / math.sqrt(n)


@njit(cache=True)
def copy_into(out, v):
    """``out[:] = v`` for two vectors of one length, as a loop: Numba's slice
    assignment compiles a formatted shape-mismatch error with it (seconds of
    compile time at a cold start) for a case that cannot occur here."""
    for i in range(out.shape[0]):
        out[i] = v[i]


@functools.lru_cache(maxsize=None)
def make_solver(rhs):
    """Build the Dormand--Prince functions for one right-hand side.

    ``rhs`` is a Numba function ``rhs(t, y, out, p)``. Returns a
    ``Solver`` of Numba functions that call it: ``initial_step``,
    ``rk_step`` and ``solve`` (documented below).

    Why a factory: Numba cannot cache a function that receives another
    Numba function as an argument (its machine code then refers to that
    function's address in this process), whereas a closure over ``rhs`` can
    be called from cached functions. One factory call per ``rhs``, memoized.

    The closures themselves are compiled without ``cache=True``, on purpose:
    Numba keys a closure's cache entry on its pickled free variables, and a
    pickled dispatcher carries a fresh identifier in every process, so such an
    entry could never be found again (every run would add a file). Their
    machine code is cached all the same, inside the cached kernels that call
    them (``_kernels.solve_flow_batch``, ``_adjoint``). Called directly from
    Python (``solve_ivp_rk45``), they compile once per process.
    """

    @njit
    def initial_step(p, t0, y0, f0, t_bound, rtol, atol, work, f1):
        """First step size by the Hairer--Wanner rule (HNW I, II.4, p. 169).

        ``work`` and ``f1`` are scratch arrays of ``y0``'s shape; ``rhs`` is
        called once. Returns the absolute step size.
        """
        interval = abs(t_bound - t0)
        direction = 1.0 if t_bound > t0 else -1.0
        h0, d1 = first_step_trial(y0, f0, interval, rtol, atol, work)
        if h0 == 0.0:
            # d1 overflowed (or d0 / d1 underflowed): scipy's rule then returns
            # min(100 h0, ...) = 0 too; dividing by h0 in first_step would raise.
            return 0.0
        for i in range(y0.shape[0]):
            work[i] = y0[i] + h0 * direction * f0[i]
        rhs(t0 + h0 * direction, work, f1, p)
        return first_step(y0, f0, f1, h0, d1, interval, rtol, atol, work)

    @njit
    def rk_step(p, t, y, h, K, Y, y_new):
        """One Dormand--Prince step from ``(t, y)`` with step ``h``.

        On entry ``K[0]`` holds ``f(t, y)``. On exit ``Y[s]`` (s = 1..5) hold
        the stage states ``y + h sum_j A[s, j] K[j]``, ``K[1..6]`` the stages,
        ``y_new`` the fifth-order solution and ``K[6] = f(t + h, y_new)``
        (FSAL). ``Y`` has shape (6, n); ``Y[0]`` is not touched. Six calls of
        ``rhs``.
        """
        n = y.shape[0]
        for s in range(1, N_STAGES):
            for i in range(n):
                acc = 0.0
                for j in range(s):
                    acc += K[j, i] * A[s, j]
                Y[s, i] = y[i] + acc * h
            rhs(t + C[s] * h, row(Y, s), row(K, s), p)
        for i in range(n):
            acc = 0.0
            for j in range(N_STAGES):
                acc += K[j, i] * B[j]
            y_new[i] = y[i] + h * acc
        rhs(t + h, y_new, row(K, N_STAGES), p)

    # Inlined into its callers (it only allocates and calls integrate): as a
    # function of its own, every kernel calling it optimized integrate's code a
    # second time (0.55 s more to compile a first sample, measured).
    @njit(inline="always")
    def solve(p, t0, t1, y0, rtol, atol, max_steps, y_out, stats, times, states):
        """Integrate ``dy/dt = rhs(t, y)`` from ``t0`` to ``t1`` adaptively.

        Parameters
        ----------
        p : tuple, passed to ``rhs`` unchanged
        t0, t1 : float, ``t0 != t1``; ``t1 < t0`` integrates backwards
        y0 : ndarray, shape (n,)
        rtol, atol : float, positive
        max_steps : int, most step attempts (accepted + rejected)
        y_out : ndarray, shape (n,), receives ``y(t1)`` (or the last state)
        stats : ndarray of int64, shape (3,), receives
            ``[function evaluations, accepted steps, rejected steps]``
        times : ndarray, shape (m,)
            Receives the times reached by the accepted steps, in order, as
            far as it has room (``m = 0`` records nothing). With ``t0`` they
            define the step sequence exactly: step ``n`` goes from
            ``times[n-1]`` to ``times[n]`` with ``h = times[n] - times[n-1]``.
        states : ndarray, shape (m', N_STAGES, n)
            Receives the stage states of the accepted steps, as far as it has
            room (``m' = 0`` records nothing): ``states[n, 0]`` is the state
            the step started from, ``states[n, s]`` the state ``rhs`` was
            evaluated at in stage ``s`` (the ``Y`` of ``rk_step``). With the
            step sequence they are all the discrete adjoint needs
            (``refimpl._adjoint``): no replay of the solve.

        Returns
        -------
        status : int, one of ``SUCCESS``, ``MAX_STEPS_EXCEEDED``,
            ``STEP_TOO_SMALL``, ``NOT_FINITE``
        t : float, the time reached (``t1`` on success)
        """
        n = y0.shape[0]
        scratch = np.empty((2 * N_STAGES + 3, n))
        return integrate(p, t0, t1, y0, rtol, atol, max_steps, y_out, stats, times, states,
                         scratch[: N_STAGES + 1], scratch[N_STAGES + 1: 2 * N_STAGES + 1],
                         scratch[2 * N_STAGES + 1], scratch[2 * N_STAGES + 2])

    @njit
    def integrate(p, t0, t1, y0, rtol, atol, max_steps, y_out, stats, times, states, K, Y,
                  y_new, work):
        """``solve`` in the scratch arrays ``K``, ``Y`` (as for ``rk_step``),
        ``y_new`` and ``work``. These and ``p``'s arrays are borrowed
        (``_intrinsics.borrowed``; the caller holds them), so no call below
        counts references to them: the rhs calls of a step cost no atomic
        operation."""
        p = borrowed(p)
        K = borrowed(K)
        Y = borrowed(Y)
        y_new = borrowed(y_new)
        work = borrowed(work)
        n = y0.shape[0]
        direction = 1.0 if t1 > t0 else -1.0
        y = row(Y, 0)  # the state lives in Y[0], which rk_step reads and never writes
        k_first = row(K, 0)
        k_last = row(K, N_STAGES)
        copy_into(y, y0)
        stats[NFEV] = 0
        stats[NACCEPT] = 0
        stats[NREJECT] = 0

        t = t0
        rhs(t, y, k_first, p)
        stats[NFEV] += 1
        if not all_finite(y) or not all_finite(k_first):
            copy_into(y_out, y)
            return NOT_FINITE, t
        h_abs = initial_step(p, t, y, k_first, t1, rtol, atol, row(Y, 1), y_new)
        stats[NFEV] += 1

        while direction * (t - t1) < 0:
            min_step = smallest_step(t, direction)
            if h_abs < min_step:
                h_abs = min_step
            step_rejected = False
            while True:
                if stats[NACCEPT] + stats[NREJECT] >= max_steps:
                    copy_into(y_out, y)
                    return MAX_STEPS_EXCEEDED, t
                if h_abs < min_step:
                    copy_into(y_out, y)
                    return STEP_TOO_SMALL, t
                t_new = t + h_abs * direction
                if direction * (t_new - t1) > 0:
                    t_new = t1
                h = t_new - t
                h_abs = abs(h)
                rk_step(p, t, y, h, K, Y, y_new)
                stats[NFEV] += N_STAGES
                err = error_norm(K, h, y, y_new, rtol, atol, work)
                if err != err:  # y_new or f(t + h, y_new) not finite
                    copy_into(y_out, y)
                    return NOT_FINITE, t
                h_abs *= step_factor(err, step_rejected)
                if err < 1.0:
                    break
                step_rejected = True
                stats[NREJECT] += 1
            if stats[NACCEPT] < times.shape[0]:
                times[stats[NACCEPT]] = t_new
            if stats[NACCEPT] < states.shape[0]:
                record = row(states, stats[NACCEPT])
                for s in range(N_STAGES):
                    for i in range(n):
                        record[s, i] = Y[s, i]
            stats[NACCEPT] += 1
            t = t_new
            for i in range(n):
                y[i] = y_new[i]
                k_first[i] = k_last[i]
        copy_into(y_out, y)
        return SUCCESS, t

    return Solver(initial_step, rk_step, solve)


Solver = collections.namedtuple("Solver", "initial_step rk_step solve")


def solve_ivp_rk45(rhs, t0, t1, y0, rtol=1e-6, atol=1e-8, max_steps=100_000, p=()):
    """Solve one initial value problem with the project's RK45.

    A thin Python entry to the same solver the flow uses (``make_solver``),
    for checking the integrator on problems with known solutions.

    Parameters
    ----------
    rhs : Numba function ``rhs(t, y, out, p)``
    t0, t1 : float
    y0 : array_like, shape (n,)
    rtol, atol : float
    max_steps : int
    p : tuple, extra arguments for ``rhs``

    Returns
    -------
    y : ndarray, shape (n,), the solution at ``t1``
    info : dict with ``nfev``, ``naccept``, ``nreject`` and ``times`` (the
        times reached by the accepted steps)

    Raises
    ------
    RuntimeError if the solve does not reach ``t1``.
    """
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    rtol = as_solver_rtol(rtol)
    atol = as_positive_float(atol, "atol")
    y = np.empty_like(y0)
    stats = np.zeros(3, dtype=np.int64)
    times = np.empty(max_steps)
    status, t = make_solver(rhs).solve(p, float(t0), float(t1), y0, float(rtol), float(atol),
                                       int(max_steps), y, stats, times,
                                       np.empty((0, N_STAGES, y0.shape[0])))
    if status != SUCCESS:
        raise RuntimeError(f"solve stopped at t={t!r}: {STATUS_MESSAGES[status]}")
    info = {"nfev": int(stats[NFEV]), "naccept": int(stats[NACCEPT]),
            "nreject": int(stats[NREJECT]), "times": times[: stats[NACCEPT]].copy()}
    return y, info


# The controller's decisions as functions of numbers, shared by ``make_solver``'s
# scalar solve and the lockstep solve of several samples (``refimpl._lockstep``):
# one place for each formula (with ``error_norm`` above).


@njit(cache=True)
def first_step_trial(y0, f0, interval, rtol, atol, work):
    """The first half of ``initial_step``: ``(h0, d1)``, the trial step (before
    ``rhs`` is evaluated at ``y0 + h0 f0``) and the scaled norm of ``f0``.
    ``work`` is scratch of ``y0``'s shape."""
    n = y0.shape[0]
    for i in range(n):
        work[i] = y0[i] / (atol + abs(y0[i]) * rtol)
    d0 = rms_norm(work)
    for i in range(n):
        work[i] = f0[i] / (atol + abs(y0[i]) * rtol)
    d1 = rms_norm(work)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    return min(h0, interval), d1


@njit(cache=True)
def first_step(y0, f0, f1, h0, d1, interval, rtol, atol, work):
    """The second half of ``initial_step``: the first step size from the trial
    step ``h0`` and ``f1 = f(t0 + h0, y0 + h0 f0)``."""
    n = y0.shape[0]
    for i in range(n):
        work[i] = (f1[i] - f0[i]) / (atol + abs(y0[i]) * rtol)
    d2 = rms_norm(work) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (ERROR_ESTIMATOR_ORDER + 1))
    return min(100.0 * h0, h1, interval)


@njit(cache=True)
def smallest_step(t, direction):
    """The smallest step allowed at ``t``: ten spacings of the floats there."""
    return 10.0 * abs(np.nextafter(t, direction * np.inf) - t)


@njit(cache=True)
def step_factor(err, rejected):
    """The factor on the step size after an attempt with error norm ``err``
    (accepted if ``err < 1``); ``rejected``: an attempt at this step was
    rejected before (the step is then not grown)."""
    if err < 1.0:
        if err == 0.0:
            factor = MAX_FACTOR
        else:
            factor = min(MAX_FACTOR, SAFETY * err ** ERROR_EXPONENT)
        return min(1.0, factor) if rejected else factor
    return max(MIN_FACTOR, SAFETY * err ** ERROR_EXPONENT)
