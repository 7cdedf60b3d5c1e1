"""Training a Boltzmann generator: losses, Adam, schedules, checkpoints.

A *model* here is anything with a flat parameter vector ``params`` and two
functions of it that autograd can differentiate:
``log_prob(params, x)`` and ``sample(params, n, rng) -> (x, log_q)``
(``refimpl.grad.FlowModel`` for the equivariant flow, ``refimpl.RealNVP``
for the baseline). A *potential* has ``energy(x)``, the reduced energy
``u(x) / T``, written in ``autograd.numpy``.

Losses (paper section 2; README, "The math"):

* ML: ``-mean log q_X(x_data)``;
* KL (reverse, energy-based): ``mean_z [u(F(z)) / T + log q_X(F(z))]``,
  equal to ``KL(q || p)`` up to ``log Z``;
* a weighted sum ``w_ml ML + w_kl KL``; the schedule is a list of phases.

``train`` is deterministic given its seed: every random number (minibatch
indices, prior samples) comes from one ``numpy.random.Generator`` whose
state is checkpointed with the parameters and the optimizer, so a run that
is interrupted and resumed ends with bit-identical parameters.
"""

import dataclasses
import hashlib
import json
import os
import signal
import sys
import time

import autograd
import autograd.numpy as anp
import numpy as np

from ._validate import (as_configurations, as_finite_float, as_float_array, as_positive_float,
                        as_positive_int, memory_for)
from ._engine import SolverError
from ._version import __version__
from .files import FileFormatError, read_npz, save_npz

CHECKPOINT_FORMAT = "refimpl-checkpoint"
CHECKPOINT_VERSION = 1
_CHECKPOINT_FIELDS = {"format": "U", "version": "iu", "params": "f", "adam_m": "f",
                      "adam_v": "f", "adam_count": "iu", "step": "iu", "rng_state": "U",
                      "history": "f", "fingerprint": "U"}


def ml_loss(model, params, x):
    """Maximum-likelihood loss ``-mean log q_X(x)`` over a batch of data."""
    _require_methods(model, "model", ("log_prob",))
    return -anp.mean(model.log_prob(params, x))


def _require_methods(obj, name, methods):
    """``TypeError`` naming ``name`` unless ``obj`` has each of ``methods``."""
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"{name} must have {', '.join(m + '()' for m in methods)} "
                        f"(see refimpl.train); a {type(obj).__name__} lacks "
                        f"{', '.join(missing)}")


def kl_loss(model, params, potential, n, rng, energy_cut=None):
    """Reverse KL up to ``log Z``: ``mean [u(x) / T + log q_X(x)]``, x ~ q_X.

    ``energy_cut`` (reduced units) replaces energies above it by
    ``cut + log(1 + u - cut)`` (``linlog_cut``), the regularization of Noé et
    al. (Science 2019) that keeps a few samples of astronomically high energy
    from dominating the gradient; ``None`` uses the energy as it is.
    """
    _require_methods(model, "model", ("sample",))
    _require_methods(potential, "potential", ("energy",))
    x, log_q = model.sample(params, n, rng)
    energy = potential.energy(x)
    if energy_cut is not None:
        energy = linlog_cut(energy, energy_cut)
    return anp.mean(energy + log_q)


def linlog_cut(energy, cut):
    """``u`` below ``cut``, ``cut + log(1 + u - cut)`` above; continuous with slope 1."""
    cut = as_finite_float(cut, "energy_cut")
    excess = anp.maximum(energy - cut, 0.0)
    return anp.where(energy <= cut, energy, cut + anp.log1p(excess))


@dataclasses.dataclass(frozen=True)
class Phase:
    """``n_steps`` optimizer steps minimizing ``w_ml ML + w_kl KL``."""

    n_steps: int
    w_ml: float = 1.0
    w_kl: float = 0.0
    learning_rate: float = 1e-3

    def __post_init__(self):
        as_positive_int(self.n_steps, "n_steps")
        w_ml, w_kl = as_finite_float(self.w_ml, "w_ml"), as_finite_float(self.w_kl, "w_kl")
        if w_ml < 0 or w_kl < 0 or w_ml + w_kl == 0:
            raise ValueError(f"loss weights w_ml = {w_ml} and w_kl = {w_kl} must be "
                             "non-negative and not both zero")
        as_positive_float(self.learning_rate, "learning_rate")


class Adam:
    """Adam (Kingma & Ba 2015) with its whole state in three arrays and a count.

    ``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``, bias-corrected.
    """

    def __init__(self, size, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.count = 0

    def step(self, params, grad, learning_rate):
        self.count += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        m_hat = self.m / (1 - self.beta1 ** self.count)
        v_hat = self.v / (1 - self.beta2 ** self.count)
        return params - learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs: saved in every checkpoint."""

    params: np.ndarray
    adam: Adam
    rng: np.random.Generator
    step: int = 0
    history: list = dataclasses.field(default_factory=list)  # (step, ml, kl, total)
    fingerprint: str = ""  # what produced it: a resumed run must match (``_fingerprint``)


def train(model, params=None, *, data=None, potential=None, schedule, batch_size=64,
          kl_batch_size=None, seed=0, checkpoint=None, checkpoint_every=100, resume=False,
          log_every=50, log=sys.stderr, callback=None, energy_cut=None):
    """Minimize the scheduled losses with Adam; returns the final ``TrainState``.

    Parameters
    ----------
    model : object with ``params``, ``log_prob(params, x)``, ``sample(params, n, rng)``
    params : ndarray, optional; initial parameters (default ``model.params``)
    data : ndarray (N, K, D), mean-free training configurations (for ML)
    potential : object with ``energy(x)`` (for KL)
    schedule : list of ``Phase``
    batch_size : int, data minibatch size (drawn with replacement)
    kl_batch_size : int, prior samples per KL estimate (default ``batch_size``)
    seed : int, seeds the one generator all random numbers come from
    checkpoint : path, optional; written atomically every ``checkpoint_every``
        steps, at the end, and when the run is interrupted (Ctrl-C or SIGTERM:
        the current step is finished first), after which ``KeyboardInterrupt``
        propagates
    resume : bool; continue from ``checkpoint`` if it exists
    log_every : int; progress lines (step, losses, steps/s, ETA) to ``log``;
        0 turns them off
    callback : callable, optional; called with the ``TrainState`` after each step
    energy_cut : float, optional; regularizes the KL loss's energies (``kl_loss``)
    """
    _require_methods(model, "model", ("log_prob", "sample"))
    if not hasattr(model, "params") and params is None:
        raise TypeError(f"model must have params (or pass params=): a {type(model).__name__} "
                        "has none")
    if potential is not None:
        _require_methods(potential, "potential", ("energy",))
    phases = _phases(schedule)
    total = sum(p.n_steps for p in phases)
    if any(p.w_ml > 0 for p in phases):
        if data is None:
            raise ValueError("a phase with w_ml > 0 needs data")
        # refimpl's own models take mean-free configurations only: say so naming data
        # (a user's model may take any)
        data = as_configurations(data, "data",
                                 mean_free=type(model).__module__.startswith("refimpl."))
        if data.ndim != 3 or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty batch of configurations (N, K, D), "
                             f"got shape {data.shape}")
    seed = as_positive_int(seed, "seed", minimum=0)
    if energy_cut is not None:
        energy_cut = as_finite_float(energy_cut, "energy_cut")
    if any(p.w_kl > 0 for p in phases) and potential is None:
        raise ValueError("a phase with w_kl > 0 needs a potential")
    batch_size = as_positive_int(batch_size, "batch_size")
    kl_batch_size = batch_size if kl_batch_size is None else as_positive_int(kl_batch_size,
                                                                              "kl_batch_size")
    checkpoint_every = as_positive_int(checkpoint_every, "checkpoint_every")
    start = as_float_array(model.params if params is None else params, "params")
    if start.ndim != 1:
        raise ValueError(f"params must be a flat parameter vector, got shape {start.shape}")
    fingerprint = _fingerprint(phases, batch_size, kl_batch_size, seed, energy_cut, data, start)
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        try:
            state = load_checkpoint(checkpoint)
        except FileFormatError as exc:
            raise FileFormatError(f"{exc}. The checkpoint cannot be resumed: delete "
                                  f"{checkpoint} to start this training from step 0") from None
        if state.params.shape != start.shape:
            raise ValueError(f"checkpoint {checkpoint} holds {state.params.size} parameters, "
                             f"the model has {start.size}")
        if state.fingerprint != fingerprint:
            ours, theirs = json.loads(fingerprint), json.loads(state.fingerprint or "{}")
            differ = sorted(k for k in ours if ours.get(k) != theirs.get(k))
            raise ValueError(f"checkpoint {checkpoint} was written by a different run "
                             f"(differs in {', '.join(differ)}); remove it or change the path")
    else:
        state = TrainState(start.copy(), Adam(start.size), np.random.default_rng(seed),
                           fingerprint=fingerprint)

    parts = {}

    def objective(p, weights, batch, rng):
        w_ml, w_kl = weights
        ml = ml_loss(model, p, batch) if w_ml > 0 else 0.0
        kl = kl_loss(model, p, potential, kl_batch_size, rng, energy_cut) if w_kl > 0 else 0.0
        parts["ml"], parts["kl"] = autograd.tracer.getval(ml), autograd.tracer.getval(kl)
        return w_ml * ml + w_kl * kl

    gradient = autograd.value_and_grad(objective)
    started = time.perf_counter()
    first_step = state.step
    with _DeferredInterrupt() as interrupt:
        while state.step < total:
            phase = _phase_at(phases, state.step)
            batch = None
            if phase.w_ml > 0:
                with memory_for("batch_size", batch_size):
                    batch = data[state.rng.integers(0, data.shape[0], batch_size)]
            # a MemoryError in the step is blamed on the larger batch it uses
            size = (("kl_batch_size", kl_batch_size)
                    if phase.w_kl > 0 and kl_batch_size > batch_size else ("batch_size", batch_size))
            try:
                with memory_for(*size):
                    value, grad = gradient(state.params, (phase.w_ml, phase.w_kl), batch,
                                           state.rng)
            except SolverError as exc:
                raise _diverged(exc, state.step) from exc
            if not np.all(np.isfinite(grad)) or not np.isfinite(value):
                raise FloatingPointError(_non_finite_message(state.step, phase, parts))
            state.params = state.adam.step(state.params, grad, phase.learning_rate)
            state.step += 1
            state.history.append((state.step, float(parts["ml"]), float(parts["kl"]),
                                  float(value)))
            if log_every and (state.step % log_every == 0 or state.step == total):
                _log_progress(log, state, total, first_step, started)
            if callback is not None:
                callback(state)
            if checkpoint is not None and (state.step % checkpoint_every == 0
                                           or state.step == total
                                           or interrupt.requested is not None):
                save_checkpoint(checkpoint, state)
            if interrupt.requested is not None:
                where = f"checkpoint written to {checkpoint}" if checkpoint else "no checkpoint"
                print(f"\ninterrupted after step {state.step}: {where}", file=log, flush=True)
                raise TrainingInterrupted(interrupt.requested,
                                          f"training interrupted after step {state.step}")
    return state


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the step in which SIGINT or SIGTERM (``signum``) arrived."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


class _DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) and SIGTERM into a flag checked between steps.

    A step is never cut in half, so the checkpoint written on interruption
    is exactly the state after the last completed step and a resumed run is
    bit-identical. A second signal interrupts at once.
    """

    def __enter__(self):
        self.requested = None  # the signal number once one arrived
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # e.g. started under nohup: stay uninterruptible
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise TrainingInterrupted(signum, "interrupted again")
        self.requested = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _fingerprint(phases, batch_size, kl_batch_size, seed, energy_cut, data, start):
    """The settings that determine a run, as JSON (data and start by SHA-256)."""
    digest = lambda a: None if a is None else hashlib.sha256(  # noqa: E731
        np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()
    return json.dumps({
        "refimpl": __version__, "schedule": [dataclasses.astuple(p) for p in phases],
        "batch_size": batch_size, "kl_batch_size": kl_batch_size, "seed": seed,
        "energy_cut": energy_cut, "data": digest(data), "start": digest(start),
    }, sort_keys=True)


def _phases(schedule):
    """The schedule as a non-empty list of ``Phase`` (tuples are ``Phase`` arguments)."""
    if isinstance(schedule, Phase):
        schedule = [schedule]
    try:
        entries = list(schedule)
    except TypeError:
        raise TypeError(f"schedule must be a list of Phase, got {type(schedule).__name__}") \
            from None
    if not entries:
        raise ValueError("schedule is empty: give at least one Phase, e.g. [Phase(1000)]")
    phases = []
    for i, p in enumerate(entries):
        if isinstance(p, Phase):
            phases.append(p)
            continue
        try:
            phases.append(Phase(*p))
        except TypeError as exc:
            raise TypeError(f"schedule[{i}] must be a Phase or a tuple (n_steps, w_ml, w_kl, "
                            f"learning_rate): {exc}") from None
    return phases


def _non_finite_message(step, phase, parts):
    """Why a step's loss or gradient is not finite, and what to try."""
    ml, kl = float(parts.get("ml", 0.0)), float(parts.get("kl", 0.0))
    if phase.w_kl > 0 and not np.isfinite(kl):
        cause = ("the KL loss is not finite: the potential's energy (or log q) of a sampled "
                 "configuration is infinite or NaN; pass energy_cut to bound the energies, or "
                 "lower learning_rate")
    elif phase.w_ml > 0 and not np.isfinite(ml):
        cause = ("the ML loss is not finite: log q of a data configuration is infinite or NaN; "
                 "check the data, or lower learning_rate")
    else:
        cause = "the losses are finite but their gradient is not; lower learning_rate"
    return (f"non-finite loss or gradient at step {step} (ML = {ml:.6g}, KL = {kl:.6g}): "
            f"{cause}")


def _diverged(exc, step):
    """The ``SolverError`` of a training step, naming the step and what to try."""
    base = str(SolverError(exc.sample, exc.status, exc.t))
    detail = str(exc)[len(base):] if str(exc).startswith(base) else ""
    return SolverError(exc.sample, exc.status, exc.t,
                       f"{detail}; at training step {step} the flow's ODE could not be solved "
                       f"with the current parameters: the run has most likely diverged; lower "
                       f"learning_rate, or pass energy_cut to bound the KL loss's energies",
                       exc.stats)


def _phase_at(phases, step):
    """The phase of 0-based ``step``; the caller keeps ``step`` below the schedule's total."""
    ends = np.cumsum([phase.n_steps for phase in phases])
    return phases[int(np.searchsorted(ends, step, side="right"))]


def _log_progress(log, state, total, first_step, started):
    done = state.step - first_step
    rate = done / max(time.perf_counter() - started, 1e-9)
    step, ml, kl, value = state.history[-1]
    eta = (total - state.step) / rate if rate > 0 else float("inf")
    print(f"step {step:>6}/{total}  ML {ml:10.4f}  KL {kl:10.4f}  loss {value:10.4f}  "
          f"{rate:6.1f} steps/s  ETA {eta:6.0f} s", file=log, flush=True)


def save_checkpoint(path, state):
    """Write ``state`` to ``path`` (an ``.npz``) atomically (``refimpl.files.save_npz``)."""
    rng_state = json.dumps(state.rng.bit_generator.state)
    history = np.array(state.history, dtype=np.float64).reshape(-1, 4)
    arrays = {
        "format": np.array(CHECKPOINT_FORMAT), "version": np.array(CHECKPOINT_VERSION),
        "params": state.params, "adam_m": state.adam.m, "adam_v": state.adam.v,
        "adam_count": np.array(state.adam.count), "step": np.array(state.step),
        "rng_state": np.array(rng_state), "history": history,
        "fingerprint": np.array(state.fingerprint),
    }
    save_npz(path, arrays)


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint``.

    Raises ``FileFormatError`` (a ``ValueError``) naming the file and the
    field for a truncated, corrupted or foreign file.
    """
    f = read_npz(path, "training checkpoint", fields=_CHECKPOINT_FIELDS,
                 required=list(_CHECKPOINT_FIELDS),
                 file_format=(CHECKPOINT_FORMAT, CHECKPOINT_VERSION))
    params = f.floats("params", ndim=1)
    adam = Adam(params.size)
    adam.m = f.floats("adam_m", shape=params.shape)
    adam.v = f.floats("adam_v", shape=params.shape)
    adam.count = f.integer("adam_count", minimum=0)
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = json.loads(f.string("rng_state"))
    except (ValueError, TypeError, KeyError) as exc:
        raise FileFormatError(f"{path}: field 'rng_state' is not a random-generator state "
                              f"({exc})") from None
    history = f.floats("history", ndim=2)
    if history.shape[1:] != (4,):
        raise FileFormatError(f"{path}: field 'history' has shape {history.shape}, expected "
                              "(steps, 4)")
    history = [(int(s), ml, kl, v) for s, ml, kl, v in history.tolist()]
    return TrainState(params, adam, rng, f.integer("step", minimum=0), history,
                      f.string("fingerprint"))
