"""Several samples' adaptive solves side by side, in lockstep.

Every solve of ``ode``'s Dormand--Prince integrator asks for its right-hand
side in the same pattern: ``f(t0, y0)``, one evaluation for the first step
size, then six per step attempt, accepted or rejected. Samples solved side
by side therefore ask at the same moments, each at its own time and state,
and one call of a kernel that evaluates several samples at once serves them
all (``_kernels.window_rows_field_and_divergence``: with a few particles a
sample has too few pairs to fill the SIMD lanes, several samples fill them).

Each sample keeps its own steps, step sizes, rejections and end: a sample
whose solve has ended drops out of the evaluations, and the rest go on. Every
number of a sample is computed by the same expressions in the same order as
``ode.make_solver``'s ``solve`` computes it for that sample alone (the
controller's formulas are ``ode``'s functions), so results, counts, status
codes and recorded steps are bitwise those of the solve of one sample, in
any group and with any number of threads.
"""

import functools

import numpy as np
from numba import njit

from . import ode
from ._intrinsics import borrowed
from .tableau import A, B, C, N_STAGES


@functools.lru_cache(maxsize=None)
def make_lockstep_solver(rows_rhs):
    """The lockstep solve for one multi-sample right-hand side.

    ``rows_rhs(T, X, lanes, n_lanes, F, p)`` writes ``F[b] = f(T[b], X[b])``
    for ``b = lanes[q]``, ``q < n_lanes`` (``X`` and ``F`` of shape (L, n)).
    A factory for the reason given in ``ode.make_solver``, memoized.
    """

    # Inlined into its callers (it only allocates and calls lockstep), as ode's
    # solve is: as a function of its own it cost 0.75 s of cold start, measured.
    @njit(inline="always")
    def solve_lockstep(p, t0, t1, Y0, rtol, atol, max_steps, Y, stats, status, t_end, times,
                       states):
        """``ode``'s ``solve`` for every row of ``Y0`` (shape (L, n)), side by side.

        The outputs are those of ``solve`` row by row: ``Y[b]`` the state
        reached, ``stats[b]`` ``[nfev, naccept, nreject]``, ``status[b]``
        the status code, ``t_end[b]`` the time reached, ``times[b]`` and
        ``states[b]`` the recorded steps (as far as they have room).
        """
        L, n = Y0.shape
        return lockstep(p, t0, t1, Y0, rtol, atol, max_steps, Y, stats, status, t_end, times,
                        states, np.empty((N_STAGES + 1, L, n)), np.empty((N_STAGES, L, n)),
                        np.empty((L, n)))

    @njit
    def lockstep(p, t0, t1, Y0, rtol, atol, max_steps, Y, stats, status, t_end, times, states,
                 K, Ys, y_new):
        """``solve_lockstep`` in the scratch arrays ``K``, ``Ys`` and ``y_new``.
        These, ``Y`` and ``p``'s arrays are borrowed (``_intrinsics.borrowed``;
        the caller holds them), so their rows cost no reference counting (as
        in ``ode``'s ``integrate``)."""
        L, n = Y0.shape
        direction = 1.0 if t1 > t0 else -1.0
        interval = abs(t1 - t0)
        K = borrowed(K)  # K[s, b]: stage s of sample b
        Ys = borrowed(Ys)  # Ys[0, b]: the state; Ys[s, b]: stage state s
        y_new = borrowed(y_new)
        p = borrowed(p)
        Y = borrowed(Y)
        # (np.empty and a loop: np.full, np.zeros and np.ones each cost a
        # compilation of their own at a cold start)
        work = np.empty(n)
        T = np.empty(L)
        t = np.empty(L)
        h = np.empty(L)
        h_abs = np.empty(L)
        t_new = np.empty(L)
        min_step = np.empty(L)
        trial = np.empty(L)
        d1 = np.empty(L)
        rejected = np.empty(L, dtype=np.bool_)
        fresh = np.empty(L, dtype=np.bool_)  # at the start of a step (not a retry)
        lanes = np.empty(L, dtype=np.int64)  # the samples still being solved
        probe = np.empty(L, dtype=np.int64)
        for b in range(L):
            t[b] = t0
            h[b] = 0.0
            h_abs[b] = 0.0
            t_new[b] = 0.0
            min_step[b] = 0.0
            trial[b] = 0.0
            d1[b] = 0.0
            rejected[b] = False
            fresh[b] = True
            lanes[b] = b
            T[b] = t0
            stats[b, ode.NFEV] = 1
            stats[b, ode.NACCEPT] = 0
            stats[b, ode.NREJECT] = 0
            for i in range(n):
                Ys[0, b, i] = Y0[b, i]
        y = Ys[0]
        rows_rhs(T, y, lanes, L, K[0], p)
        active = 0
        for q in range(L):
            b = lanes[q]
            if not ode.all_finite(y[b]) or not ode.all_finite(K[0, b]):
                _end(b, ode.NOT_FINITE, t0, y, Y, status, t_end)
                continue
            lanes[active] = b
            active += 1
        # the first step size (ode's initial_step), one evaluation each
        n_probe = 0
        for q in range(active):
            b = lanes[q]
            trial[b], d1[b] = ode.first_step_trial(y[b], K[0, b], interval, rtol, atol, work)
            stats[b, ode.NFEV] += 1
            if trial[b] == 0.0:  # as initial_step: no evaluation
                continue
            for i in range(n):
                y_new[b, i] = y[b, i] + trial[b] * direction * K[0, b, i]
            T[b] = t0 + trial[b] * direction
            probe[n_probe] = b
            n_probe += 1
        rows_rhs(T, y_new, probe, n_probe, K[1], p)
        for q in range(n_probe):
            b = probe[q]
            h_abs[b] = ode.first_step(y[b], K[0, b], K[1, b], trial[b], d1[b], interval, rtol,
                                      atol, work)
        while active > 0:
            # each sample's next attempt, or its end
            going = 0
            for q in range(active):
                b = lanes[q]
                if fresh[b]:
                    if not direction * (t[b] - t1) < 0:
                        _end(b, ode.SUCCESS, t[b], y, Y, status, t_end)
                        continue
                    min_step[b] = ode.smallest_step(t[b], direction)
                    if h_abs[b] < min_step[b]:
                        h_abs[b] = min_step[b]
                    rejected[b] = False
                    fresh[b] = False
                if stats[b, ode.NACCEPT] + stats[b, ode.NREJECT] >= max_steps:
                    _end(b, ode.MAX_STEPS_EXCEEDED, t[b], y, Y, status, t_end)
                    continue
                if h_abs[b] < min_step[b]:
                    _end(b, ode.STEP_TOO_SMALL, t[b], y, Y, status, t_end)
                    continue
                t_new[b] = t[b] + h_abs[b] * direction
                if direction * (t_new[b] - t1) > 0:
                    t_new[b] = t1
                h[b] = t_new[b] - t[b]
                h_abs[b] = abs(h[b])
                lanes[going] = b
                going += 1
            active = going
            if active == 0:
                break
            # the attempt: ode's rk_step, stage by stage for all samples at once
            for s in range(1, N_STAGES):
                for q in range(active):
                    b = lanes[q]
                    for i in range(n):
                        acc = 0.0
                        for j in range(s):
                            acc += K[j, b, i] * A[s, j]
                        Ys[s, b, i] = y[b, i] + acc * h[b]
                    T[b] = t[b] + C[s] * h[b]
                rows_rhs(T, Ys[s], lanes, active, K[s], p)
            for q in range(active):
                b = lanes[q]
                for i in range(n):
                    acc = 0.0
                    for j in range(N_STAGES):
                        acc += K[j, b, i] * B[j]
                    y_new[b, i] = y[b, i] + h[b] * acc
                T[b] = t[b] + h[b]
            rows_rhs(T, y_new, lanes, active, K[N_STAGES], p)
            # each sample's verdict on its attempt
            going = 0
            for q in range(active):
                b = lanes[q]
                stats[b, ode.NFEV] += N_STAGES
                err = ode.error_norm(K[:, b], h[b], y[b], y_new[b], rtol, atol, work)
                if err != err:  # as ode's solve: y_new or f(t + h, y_new) not finite
                    _end(b, ode.NOT_FINITE, t[b], y, Y, status, t_end)
                    continue
                h_abs[b] *= ode.step_factor(err, rejected[b])
                if err < 1.0:
                    accepted = stats[b, ode.NACCEPT]
                    if accepted < times.shape[1]:
                        times[b, accepted] = t_new[b]
                    if accepted < states.shape[1]:
                        for s in range(N_STAGES):
                            for i in range(n):
                                states[b, accepted, s, i] = Ys[s, b, i]
                    stats[b, ode.NACCEPT] += 1
                    t[b] = t_new[b]
                    for i in range(n):
                        y[b, i] = y_new[b, i]
                        K[0, b, i] = K[N_STAGES, b, i]
                    fresh[b] = True
                else:
                    rejected[b] = True
                    stats[b, ode.NREJECT] += 1
                lanes[going] = b
                going += 1
            active = going

    return solve_lockstep


@njit(cache=True)
def _end(b, code, t, y, Y, status, t_end):
    """Sample ``b``'s solve ends with ``code`` at ``t`` in state ``y[b]``."""
    status[b] = code
    t_end[b] = t
    for i in range(y.shape[1]):
        Y[b, i] = y[b, i]
