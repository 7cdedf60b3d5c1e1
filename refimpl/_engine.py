"""The engine under ``EquivariantFlow`` and ``FlowModel``: every kernel call of the flow.

The front end (``refimpl.flow``, ``refimpl.grad``) speaks in configurations
``x (..., K, D)``, trainable parameter vectors and time intervals; it never
builds a ``theta`` or an augmented state. Its entry points here:

``transport(solver, params, x, t_start, t_end, frozen=None, record=False)``
    Carries ``x`` from ``t_start`` to ``t_end``; returns a ``Transport``
    ``(x, logdet, stats, steps)``. Differentiable (autograd) in ``params``
    and ``x``. ``params`` is the vector of ``psi.trainable`` entries, or
    ``None`` for ``psi``'s own. ``frozen`` is a recorded step sequence to
    replay instead of an adaptive solve; ``record=True`` returns the step
    sequence of the adaptive solve.
``field_and_divergence(psi, x, t)``
    ``g(x, t)`` and ``div g(x, t)`` of configurations ``x (..., K, D)``.
``theta_with(psi, params)``
    ``psi.theta`` with ``params`` in its trainable entries (a copy).

Underneath, ``field_and_divergence`` and three functions on augmented rows
``y = [x.ravel(), l]`` of shape ``(B, K D + 1)`` are the only places that
call kernels: ``_solve_kernel`` (adaptive Dormand--Prince,
``refimpl._kernels``), ``_replay_rows`` (the frozen-step map) and
``_adjoint_rows`` (its discrete adjoint, ``refimpl._adjoint``). A
specialized kernel replaces the call in one of them, with no change above.

Gradients. The differentiable map is the *frozen-step* map: the accepted
steps of the adaptive solve, held fixed (``refimpl.grad``). It is the
autograd primitive ``_frozen_map(params, y0, frozen)``, a pure function of
its arguments; its VJP reads everything it needs from them (the step times
travel in ``frozen``), so there is no state shared between a forward pass and
its VJP, and interleaved gradient computations do not interfere. When an
adaptive solve has just produced the end states for exactly these inputs,
they travel in ``frozen.end`` and the replay is skipped: the adaptive solve
and the replay of its steps are bitwise equal (``tests/test_grad.py``). So
do the stage states of its accepted steps (``frozen.states``), at which the
VJP evaluates the pullbacks instead of replaying the steps to find them.
"""

from dataclasses import dataclass
from typing import NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from . import ode
from ._adjoint import _window_vjp, adjoint_batch, rbf_pullback, replay_batch
from ._kernels import field_and_divergence_batch, field_args, psi_args, solve_flow_batch
from .psi import compiled
from .tableau import N_STAGES
from ._validate import as_float_array

# Accepted step times first recorded per sample when a gradient may follow
# (8 bytes each); a solve that takes more steps is repeated with exactly as
# many slots as its longest sample needs (the same solve, so the same result).
INITIAL_RECORDED_STEPS = 256
# When a gradient follows, the solve also records the stage states of its
# accepted steps (N_STAGES (K D + 1) floats per step and sample), so that the
# adjoint need not replay it: first room for this many steps (a repeated solve
# has room for all), and never more than MAX_RECORDED_STATE_BYTES per solve.
# If that cap leaves some sample's steps out, the adjoint replays the whole
# batch instead, in chunks of rows within the cap (the same numbers, more time).
INITIAL_RECORDED_STATE_STEPS = 64
MAX_RECORDED_STATE_BYTES = 2**27


@dataclass(frozen=True)
class SolverStats:
    """Per-sample solver counts, each an int array of the batch shape."""

    nfev: np.ndarray  # right-hand-side evaluations
    naccept: np.ndarray  # accepted steps
    nreject: np.ndarray  # rejected step attempts


class SolverError(RuntimeError):
    """An ODE solve did not reach its end time.

    Attributes ``sample`` (index into the batch), ``status`` (an
    ``refimpl.ode`` status code), ``t`` (the time reached) and ``stats``
    (the ``SolverStats`` of the whole batch, failed samples included).
    """

    def __init__(self, sample, status, t, detail="", stats=None):
        self.sample, self.status, self.t, self.stats = sample, status, t, stats
        super().__init__(f"sample {sample} of the batch: {ode.STATUS_MESSAGES[status]} "
                         f"(stopped at t = {t!r}){detail}")


@dataclass(frozen=True)
class Solver:
    """What a solve needs besides states, parameters and interval."""

    psi: object
    rtol: float
    atol: float
    max_steps: int


class Steps(NamedTuple):
    """Accepted step sequences: step ``i`` of a sample ends at ``times[..., i]``."""

    times: np.ndarray  # float64, batch + (m,); entries past n_steps are unused
    n_steps: np.ndarray  # int64, batch


class Transport(NamedTuple):
    """Result of ``transport``."""

    x: np.ndarray  # end configurations, the shape of the input
    logdet: np.ndarray  # log |det d x_end / d x_start| on the mean-free subspace, batch shape
    stats: SolverStats  # None for a replay of frozen steps
    steps: Steps  # the adaptive solve's steps if record=True, else None


def theta_with(psi, params):
    """``psi.theta`` with ``params`` in the ``psi.trainable`` entries (a copy);
    ``psi.theta`` itself when ``params`` is None."""
    if params is None:
        return psi.theta
    theta = psi.theta.copy()
    theta[psi.trainable] = as_float_array(params, "params", np.shape(psi.trainable))
    return theta


def field_and_divergence(psi, x, t, verdict=None):
    """``g(x, t)`` of shape ``(..., K, D)`` and ``div g(x, t)`` of shape ``(...)``
    for checked configurations ``x`` (float64) and a float ``t``; ``verdict``
    is what ``check_psi(psi)`` just returned, if the caller has it."""
    k, d = x.shape[-2:]
    flat = np.ascontiguousarray(x.reshape(-1, k * d))
    g = np.empty_like(flat)
    div = np.empty(flat.shape[0])
    field_and_divergence_batch(flat, t, psi.theta, *field_args(psi, verdict), k, d, g, div)
    return g.reshape(x.shape), div.reshape(x.shape[:-2])


def transport(solver, params, x, t_start, t_end, frozen=None, record=False):
    """Carry checked configurations ``x (..., K, D)`` from ``t_start`` to ``t_end``.

    See the module docstring. ``x`` and ``params`` may be autograd boxes; the
    returned ``x`` and ``logdet`` then are too. ``frozen`` is ``(times,
    n_steps)`` with the batch shape of ``x`` (as ``Steps`` returns them).
    Raises ``SolverError`` for the first sample (in batch order) an adaptive
    solve could not finish.
    """
    traced = isbox(params) or isbox(x)
    if traced and params is None:
        raise TypeError("differentiate through refimpl.FlowModel, which passes the parameters")
    x_value = getval(x)
    batch_shape, (k, d) = x_value.shape[:-2], x_value.shape[-2:]
    rows = int(np.prod(batch_shape, dtype=np.int64))
    n = k * d
    y0 = anp.concatenate([anp.reshape(x, (rows, n)), np.zeros((rows, 1))], axis=1)
    stats = steps = end = states = None
    if frozen is None:
        end, steps, stats, states = _solve_rows(solver, theta_with(solver.psi, getval(params)),
                                                getval(y0), t_start, t_end, x_value.shape,
                                                record or traced, traced)
        y = end
    else:
        steps = _frozen_rows(frozen, rows)
    if traced or frozen is not None:
        y = _frozen_map(params, y0, _Frozen(solver.psi, t_start, steps, k, d, end, states))
    if record:
        steps = Steps(steps.times.reshape(batch_shape + (-1,)), steps.n_steps.reshape(batch_shape))
    else:
        steps = None
    return Transport(anp.reshape(y[:, :n], x_value.shape), -anp.reshape(y[:, n], batch_shape),
                     stats, steps)


def _frozen_rows(frozen, rows):
    """A user's ``(times, n_steps)`` as row-major ``Steps``, checked."""
    times, n_steps = frozen
    times = np.ascontiguousarray(np.reshape(times, (rows, -1)), dtype=np.float64)
    n_steps = np.ascontiguousarray(np.reshape(n_steps, rows), dtype=np.int64)
    if n_steps.min(initial=0) < 0 or n_steps.max(initial=0) > times.shape[1]:
        raise ValueError("n_steps must lie between 0 and the number of recorded times")
    return Steps(times, n_steps)


# --- the kernel layer: augmented rows (B, K D + 1) ---------------------------------------------

def _solve_rows(solver, theta, y0, t_start, t_end, shape, record, record_states=False):
    """Adaptive solves of the rows of ``y0`` for configurations of ``shape = batch + (K, D)``.

    Returns ``(y_end, Steps or None, SolverStats, states or None)``; the
    steps are row-major; ``states`` (with ``record_states``) holds the stage
    states of the accepted steps, ``(B, m, N_STAGES, K D + 1)``, for the
    samples that took at most ``m`` steps (``INITIAL_RECORDED_STATE_STEPS``).
    """
    width = min(solver.max_steps, INITIAL_RECORDED_STEPS) if record else 0
    state_width = min(width, INITIAL_RECORDED_STATE_STEPS) if record_states else 0
    y, times, counts, states = _solve_kernel(solver, theta, y0, t_start, t_end, shape, width,
                                             state_width)
    n_steps = np.ascontiguousarray(counts[:, ode.NACCEPT])
    if record and n_steps.max(initial=0) > width:
        width = int(n_steps.max())
        y, times, counts, states = _solve_kernel(solver, theta, y0, t_start, t_end, shape,
                                                 width, width if record_states else 0)
    stats = _stats(counts, shape[:-2])
    return y, Steps(times, n_steps) if record else None, stats, states


def _stats(counts, batch_shape):
    return SolverStats(*(counts[:, c].reshape(batch_shape) for c in range(3)))


def _state_record(n_rows, n, width):
    """Room for the stage states of ``width`` steps per row, within the budget."""
    per_step = n_rows * N_STAGES * n * 8
    width = min(width, MAX_RECORDED_STATE_BYTES // max(per_step, 1))
    return np.empty((n_rows, width, N_STAGES, n))


def _solve_kernel(solver, theta, y0, t_start, t_end, shape, width, state_width=0):
    """Run ``solve_flow_batch`` recording ``width`` step times and the stage
    states of ``state_width`` steps (``_state_record``) per sample; returns
    ``(y_end, times, counts, states or None)``."""
    psi = solver.psi
    batch_shape, (k, d) = shape[:-2], shape[-2:]
    n_batch = y0.shape[0]
    y = np.empty_like(y0)
    counts = np.zeros((n_batch, 3), dtype=np.int64)
    status = np.zeros(n_batch, dtype=np.int64)
    t_reached = np.empty(n_batch)
    times = np.empty((n_batch, width))
    states = _state_record(n_batch, y0.shape[1], state_width)
    solve_flow_batch(y0, t_start, t_end, solver.rtol, solver.atol, solver.max_steps, theta,
                     *field_args(psi), k, d, y, counts, status, t_reached, times, states)
    failed = np.flatnonzero(status != ode.SUCCESS)
    if failed.size:
        b = failed[0]
        index = np.unravel_index(b, batch_shape) if batch_shape else ()
        more = f"; {failed.size - 1} more samples failed" if failed.size > 1 else ""
        detail = (f" after {counts[b, ode.NACCEPT]} accepted and {counts[b, ode.NREJECT]}"
                  f" rejected steps (rtol={solver.rtol}, atol={solver.atol},"
                  f" max_steps={solver.max_steps}){more}")
        raise SolverError(tuple(int(i) for i in index), int(status[b]), float(t_reached[b]),
                          detail, _stats(counts, batch_shape))
    return y, times, counts, states if state_width else None


def _replay_rows(psi, theta, y0, t_start, steps, k, d, states=None):
    """The frozen-step map: end states of the rows of ``y0`` after ``steps``;
    with ``states`` (room for every row's steps) also their stage states."""
    y = np.empty_like(y0)
    if states is None:
        states = _state_record(y0.shape[0], y0.shape[1], 0)
    replay_batch(y0, t_start, steps.times, steps.n_steps, theta, *psi_args(psi), k, d, y, states)
    return y


def _adjoint_rows(psi, theta, y0, t_start, steps, y_bar, k, d, states=None):
    """Cotangents ``(theta_bar, y0_bar)`` of the frozen-step map for ``y_bar`` of its output.

    ``states`` are the stage states the adaptive solve recorded for these
    very inputs (``_solve_rows``), or None. If they miss any row's steps,
    every row's steps are replayed (``_replay_rows``) in chunks of rows of at
    most ``MAX_RECORDED_STATE_BYTES`` of stage states, each chunk then swept
    backwards: the same states bitwise, so the same result.
    ``theta_bar`` sums the samples' shares in row order, so it does not
    depend on the number of threads.
    """
    rows, n = y0.shape
    y0_bar = np.empty_like(y_bar)
    theta_bar = np.empty((rows, theta.size))
    width = int(steps.n_steps.max(initial=0))
    chunks = [(0, rows)]
    if states is None or states.shape[1] < width:
        states = None
        chunk = max(1, MAX_RECORDED_STATE_BYTES // max(width * N_STAGES * n * 8, 1))
        chunks = [(start, min(start + chunk, rows)) for start in range(0, rows, chunk)]
    work_size, window, prepare, _ = psi_args(psi)
    functions = [compiled(psi, f) for f in ("pair2", "pair_vjp", "prepare_vjp")]
    rbf_psi = rbf_pullback(psi)
    vjp_at = _window_vjp.address if window and rbf_psi else 0
    for start, stop in chunks:
        part = slice(start, stop)
        part_steps = Steps(steps.times[part], steps.n_steps[part])
        if states is None:
            part_states = np.empty((stop - start, width, N_STAGES, n))
            _replay_rows(psi, theta, y0[part], t_start, part_steps, k, d, part_states)
        else:
            part_states = states[part]
        adjoint_batch(vjp_at, t_start, part_steps.times, part_steps.n_steps, part_states,
                      y_bar[part], theta, work_size, window, prepare, int(psi.ctx_size),
                      *functions, rbf_psi, k, d, y0_bar[part], theta_bar[part])
    return theta_bar.sum(axis=0), y0_bar


# --- the autograd primitive -------------------------------------------------------------------

class _Frozen(NamedTuple):
    """The non-differentiable argument of ``_frozen_map``."""

    psi: object
    t_start: float
    steps: Steps  # row-major
    k: int
    d: int
    end: np.ndarray  # the end states for these very inputs if already known, else None
    states: np.ndarray = None  # their recorded stage states (_solve_rows), or None


@primitive
def _frozen_map(params, y0, frozen):
    """End states ``(B, K D + 1)`` of the frozen-step map from the rows ``y0``."""
    if frozen.end is not None:
        return frozen.end
    theta = theta_with(frozen.psi, params)
    return _replay_rows(frozen.psi, theta, np.ascontiguousarray(y0, dtype=np.float64),
                        frozen.t_start, frozen.steps, frozen.k, frozen.d)


@primitive
def _frozen_map_adjoint(y_bar, params, y0, frozen):
    """``[params_bar, y0_bar.ravel()]`` for the cotangent ``y_bar`` of ``_frozen_map``.

    A primitive with no VJP of its own: the discrete adjoint is first order
    only, so autograd raises ``NotImplementedError`` for a second derivative
    instead of silently returning zeros (``params`` and ``y0`` are arguments
    for that reason).
    """
    psi = frozen.psi
    theta_bar, y0_bar = _adjoint_rows(psi, theta_with(psi, params),
                                      np.ascontiguousarray(y0, dtype=np.float64), frozen.t_start,
                                      frozen.steps, np.ascontiguousarray(y_bar, dtype=np.float64),
                                      frozen.k, frozen.d, frozen.states)
    return np.concatenate([theta_bar[psi.trainable], y0_bar.ravel()])


def _frozen_map_vjp(argnums, ans, args, kwargs):
    params, y0, frozen = args
    n_params = np.size(frozen.psi.trainable)

    def vjp(y_bar):
        flat = _frozen_map_adjoint(y_bar, params, y0, frozen)
        out = {0: flat[:n_params], 1: anp.reshape(flat[n_params:], anp.shape(y0))}
        return tuple(out[a] for a in argnums)

    return vjp


defvjp_argnums(_frozen_map, _frozen_map_vjp)
