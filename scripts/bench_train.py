"""Benchmark: one training step of the equivariant Boltzmann generator.

ML + KL loss on DW4 (K = 4, D = 2), batch 64, 50 x 10 RBF kernels,
rtol = atol = 1e-5, weights 0.02 N(0, 1) (seed 0). Prints the time per step
(best and mean of 20) and its split (forward solves vs. the adjoint, each the
best of the 20 steps), then the peak memory of one gradient for batch 256
and its growth with the number of solver steps.

Usage: python scripts/bench_train.py
"""

import os
import pathlib
import platform
import time
import tracemalloc

import autograd
import numba
import numpy as np

import refimpl
from refimpl.train import kl_loss, ml_loss


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "threads": numba.get_num_threads(),
            "numba": numba.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def _model(tol=1e-5, scale=0.02):
    psi = refimpl.RBFKernel(scale * np.random.default_rng(0).standard_normal((50, 10)))
    return refimpl.FlowModel(refimpl.EquivariantFlow(psi, rtol=tol, atol=tol, n_particles=4,
                                                     dim=2))


def _step_function(model, batch):
    dw = refimpl.DoubleWell(4, 2)
    data = refimpl.MeanFreeNormal(4, 2).sample(4096, 1) * 2.0

    def loss(p, rng):
        x = data[rng.integers(0, data.shape[0], batch)]
        return ml_loss(model, p, x) + kl_loss(model, p, dw, batch, rng)

    return autograd.value_and_grad(loss)


class _Timer:
    """Accumulates the time spent inside the solve and adjoint kernels."""

    def __init__(self):
        self.seconds = {"forward": 0.0, "adjoint": 0.0}
        self._originals = {}

    def wrap(self, module, name, label):
        original = getattr(module, name)
        self._originals[(module, name)] = original

        def timed(*args):
            start = time.perf_counter()
            original(*args)
            self.seconds[label] += time.perf_counter() - start

        setattr(module, name, timed)

    def restore(self):
        for (module, name), original in self._originals.items():
            setattr(module, name, original)


def time_steps(batch=64, repeats=20):
    """Mean and best seconds per step over ``repeats`` steps, and the split.

    The split holds, for the forward solves and for the adjoint, the least
    time a step spent in them (best of ``repeats``, each part on its own:
    on a shared machine the best step need not hold the best of each part).
    """
    model = _model()
    step = _step_function(model, batch)
    rng = np.random.default_rng(0)
    params = model.params
    step(params, rng)  # compile / warm up
    timer = _Timer()
    import refimpl._engine as engine
    timer.wrap(engine, "solve_flow_batch", "forward")
    timer.wrap(engine, "adjoint_batch", "adjoint")
    durations = []
    split = {label: np.inf for label in timer.seconds}
    try:
        for _ in range(repeats):
            for label in timer.seconds:
                timer.seconds[label] = 0.0
            start = time.perf_counter()
            step(params, rng)
            durations.append(time.perf_counter() - start)
            for label, seconds in timer.seconds.items():
                split[label] = min(split[label], seconds)
    finally:
        timer.restore()
    return float(np.mean(durations)), {k: float(v) for k, v in split.items()}, \
        float(np.min(durations))


def peak_memory(batch, tol):
    model = _model(tol)
    step = _step_function(model, batch)
    rng = np.random.default_rng(0)
    step(model.params, rng)
    tracemalloc.start()
    step(model.params, rng)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    z = refimpl.MeanFreeNormal(4, 2).sample(batch, 3)
    stats = model.forward(model.params, z, return_stats=True)[2]
    return peak, float(stats.naccept.mean())


def main():
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} Numba threads, numba "
          f"{m['numba']}, load average {m['load_average'][0]:.2f}")
    total, split, best = time_steps()
    other = best - sum(split.values())
    print(f"\ntraining step (ML + KL, batch 64, K = 4, D = 2, 50 x 10 RBF, tol 1e-5): "
          f"{best * 1e3:.1f} ms best, {total * 1e3:.1f} ms mean of 20")
    print(f"  best of 20 per part: forward solves {split['forward'] * 1e3:.1f} ms, adjoint "
          f"{split['adjoint'] * 1e3:.1f} ms; the rest of the best step (autograd, NumPy, "
          f"Python) {other * 1e3:.1f} ms")
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    print("\npeak traced memory of one ML + KL gradient, batch 256 "
          "(tracemalloc: NumPy arrays as allocated, among them the stage-state records\n"
          "  of the two solves, room for 64 steps per sample of which only the steps taken are "
          "written;\n  Numba's per-sample scratch is not traced)")
    for tol in (1e-4, 1e-5, 1e-7, 1e-9):
        peak, steps = peak_memory(256, tol)
        print(f"  tol {tol:.0e}: {peak / 2**20:6.1f} MiB, {steps:5.1f} accepted steps per sample")


if __name__ == "__main__":
    main()
