"""Benchmark: the rows of issue 10's table and how the cost grows.

The psi is the benchmark's: 50 x 10 RBF kernels on [0, 8] x [0, 1], weights
0.02 N(0, 1) (seed 0); rtol = atol = 1e-5 unless stated. Every time is the
best of several repeats (the figure least disturbed by other processes);
the load average is printed with the machine, and on a shared machine the
figures are lower bounds of what it can do.

Rows (one line each):
  * exact-likelihood sampling, samples/s with all threads: DW4 (K = 4,
    D = 2), LJ13 (K = 13, D = 3), LJ55 (K = 55, D = 3), prior samples pushed
    through ``EquivariantFlow.forward``;
  * one DW4 training step (ML + KL, batch 64; ``bench_train.py``);
  * cold start: import + compile + a first DW4 sample, in a fresh process
    with an empty Numba cache (``NUMBA_CACHE_DIR``), and the same with the
    cache that run filled; the same for a first batch of 1000 samples (which
    runs, and compiles, the lockstep solve);
  * one ``vector_field(x, t, psi)`` call on a single (4, 2) configuration.
Then: cost per pair and per sample of one field + divergence evaluation as K
grows (one thread), nanoseconds per exponential in an array loop (refimpl's
own ``_exp.exp``, which vectorizes, against ``math.exp``), samples/s against the tolerance and the thread count,
and a fair scipy baseline: a loop of ``solve_ivp(method="RK45")`` with a
vectorized NumPy right-hand side (the same field and divergence), timed
after a warm-up, against refimpl on one thread.

Usage: python scripts/bench_flow.py [--json] [--quick] [--save FILE]
"""

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
from scipy.integrate import solve_ivp

import refimpl
from refimpl._exp import exp as own_exp
from refimpl.files import write_json

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bench_train  # noqa: E402

SYSTEMS = {"DW4": (4, 2), "LJ13": (13, 3), "LJ55": (55, 3)}


def _psi():
    return refimpl.RBFKernel(0.02 * np.random.default_rng(0).standard_normal((50, 10)))


def _best(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _with_threads(threads, fn):
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


def throughput(k, d, tol, n, threads, repeat=3):
    """Samples/s of ``forward`` on ``n`` prior samples, and the mean nfev per sample."""
    flow = refimpl.EquivariantFlow(_psi(), rtol=tol, atol=tol, n_particles=k, dim=d)
    z = refimpl.MeanFreeNormal(k, d).sample(n, 1)

    def run():
        flow.forward(z[:2])
        return _best(lambda: flow.forward(z), repeat)

    seconds = _with_threads(threads, run)
    return n / seconds, float(flow.last_stats.nfev.mean())


def field_cost(k, d, n, repeat=15):
    """Seconds per pair and per sample of one field + divergence evaluation, one thread."""
    psi = _psi()
    x = np.random.default_rng(1).standard_normal((n, k, d))
    seconds = _with_threads(1, lambda: (refimpl.divergence(x[:2], 0.5, psi),
                                        _best(lambda: refimpl.divergence(x, 0.5, psi),
                                              repeat))[1])
    per_sample = seconds / n
    return per_sample / (k * (k - 1) / 2), per_sample


@numba.njit(error_model="numpy")
def _own_exp_loop(a, out):
    for i in range(a.size):
        out[i] = own_exp(a[i])


@numba.njit(error_model="numpy")
def _math_exp_loop(a, out):
    for i in range(a.size):
        out[i] = math.exp(a[i])


def exp_cost(n=100_000, repeat=20):
    """Seconds per exponential of refimpl's own exp and of ``math.exp``, each in
    the same array loop (one thread), on arguments in [-50, 0] as in the kernels."""
    a = np.random.default_rng(2).uniform(-50.0, 0.0, n)
    out = np.empty_like(a)
    times = []
    for loop in (_own_exp_loop, _math_exp_loop):
        loop(a[:8], out[:8])  # compile outside the timing
        times.append(_best(lambda: loop(a, out), repeat) / n)
    return times


def single_call(calls=2000, repeat=7):
    """Seconds per ``vector_field`` call on one (4, 2) configuration."""
    psi = _psi()
    x = np.random.default_rng(1).standard_normal((4, 2))
    refimpl.vector_field(x, 0.5, psi)

    def loop():
        for _ in range(calls):
            refimpl.vector_field(x, 0.5, psi)

    return _best(loop, repeat) / calls


def numpy_rhs(psi, k, d):
    """The augmented right-hand side ``[g, -div g]`` in vectorized NumPy (direct double sum)."""
    mu, nu, weights = psi.mu, psi.nu, psi.weights
    gamma, gamma_t = psi.gamma, psi.gamma_t
    i, j = np.triu_indices(k, 1)

    def rhs(t, y):
        x = y[:-1].reshape(k, d)
        diff = x[i] - x[j]
        r = np.sqrt(np.einsum("pd,pd->p", diff, diff))
        c = weights @ np.exp(-gamma_t * (t - nu) ** 2)
        u = r[:, None] - mu
        e = np.exp(-gamma * u * u)
        value = e @ c
        slope = (-2.0 * gamma * u * e) @ c
        g = np.zeros((k, d))
        np.add.at(g, i, value[:, None] * diff)
        np.add.at(g, j, -value[:, None] * diff)
        div = 2.0 * np.sum(slope * r + d * value)
        return np.append(g.ravel(), -div)

    return rhs


def scipy_baseline(tol, n):
    """Samples/s of a ``solve_ivp`` loop over DW4 samples with ``numpy_rhs``, after a warm-up."""
    k, d = SYSTEMS["DW4"]
    rhs = numpy_rhs(_psi(), k, d)
    z = refimpl.MeanFreeNormal(k, d).sample(n, 1)
    y0 = np.concatenate([z.reshape(n, -1), np.zeros((n, 1))], axis=1)
    solve_ivp(rhs, (0.0, 1.0), y0[0], method="RK45", rtol=tol, atol=tol)  # warm-up
    nfev = []

    def loop():
        nfev.clear()
        for row in y0:
            nfev.append(solve_ivp(rhs, (0.0, 1.0), row, method="RK45", rtol=tol, atol=tol).nfev)

    return n / _best(loop, 2), float(np.mean(nfev))


_FIRST_RUN = (
    "import time; t = time.perf_counter(); import refimpl; "
    "f = refimpl.EquivariantFlow(refimpl.RBFKernel(), n_particles=4, dim=2); f.sample({n}, 0); "
    "print(time.perf_counter() - t)"
)


def cold_start(n=2):
    """Seconds for import + a first sampling of ``n`` DW4 samples in fresh processes: with
    an empty Numba cache (everything compiles), then with the cache that run filled."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", _FIRST_RUN.format(n=n)], env=env,
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--quick", action="store_true", help="fewer samples (noisier figures)")
    parser.add_argument("--save", metavar="FILE",
                        help="also write the JSON document to FILE (docs/benchmarks.json is "
                        "what scripts/update_readme.py renders into the README)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    report = {"machine": bench_train.machine(), "tol": 1e-5, "rows": {}, "cost_vs_k": [],
              "exp": {}, "tolerance": [], "threads": [], "scipy": {}}
    threads = report["machine"]["threads"]

    def say(text):
        if not args.json:
            print(text, flush=True)

    m = report["machine"]
    say(f"machine: {m['cpu']}, {m['cores']} cores, {threads} Numba threads, numba {m['numba']}, "
        f"load average {m['load_average'][0]:.2f} at start\n")
    say("rows of issue 10 (rtol = atol = 1e-5, 50 x 10 RBF psi)")
    sizes = {"DW4": 20_000, "LJ13": 2_000, "LJ55": 60}
    for name, (k, d) in SYSTEMS.items():
        n = max(int(sizes[name] * scale), 10)
        rate, nfev = throughput(k, d, 1e-5, n, threads)
        report["rows"][name] = {"samples_per_s": rate, "nfev_per_sample": nfev, "n": n}
        say(f"  {name:<5} (K = {k:>2}, D = {d}) sampling: {rate:>10,.0f} samples/s "
            f"({threads} threads, {nfev:.0f} evaluations per sample)")
    total, split, best = bench_train.time_steps(repeats=max(int(20 * scale), 5))
    report["rows"]["train_step"] = {"best_s": best, "mean_s": total, **split}
    say(f"  DW4 training step (ML + KL, batch 64): {best * 1e3:.1f} ms best, {total * 1e3:.1f} ms "
        f"mean (forward {split['forward'] * 1e3:.1f}, adjoint {split['adjoint'] * 1e3:.1f})")
    cold, warm = cold_start()
    # a first batch large enough for the lockstep solve compiles that path instead
    batch_cold, batch_warm = cold_start(1000)
    report["rows"]["cold_start"] = {"empty_cache_s": cold, "warm_cache_s": warm,
                                    "batch_empty_cache_s": batch_cold,
                                    "batch_warm_cache_s": batch_warm}
    say(f"  cold start (import + compile + first DW4 sample, empty Numba cache): {cold:.1f} s "
        f"(with a warm cache: {warm:.2f} s); a first batch of 1000 samples: {batch_cold:.1f} s "
        f"({batch_warm:.2f} s)")
    one = single_call()
    report["rows"]["single_call_s"] = one
    say(f"  one vector_field call on a single (4, 2) configuration: {one * 1e6:.1f} us")

    say("\ncost of one field + divergence evaluation (one thread)")
    for k, d in [(4, 2), (13, 3), (55, 3), (128, 3)]:
        per_pair, per_sample = field_cost(k, d, max(int(200_000 * scale) // (k * k), 20))
        report["cost_vs_k"].append({"K": k, "D": d, "ns_per_pair": per_pair * 1e9,
                                    "us_per_sample": per_sample * 1e6})
        say(f"  K = {k:>3}, D = {d}: {per_pair * 1e9:6.1f} ns per pair, "
            f"{per_sample * 1e6:8.2f} us per sample")
    own, libm = exp_cost()
    report["exp"] = {"ns_own_exp": own * 1e9, "ns_math_exp": libm * 1e9}
    say(f"  exp in an array loop: refimpl's own (vectorized) {own * 1e9:.2f} ns, math.exp "
        f"{libm * 1e9:.2f} ns per call")

    say(f"\nDW4 samples/s against the tolerance ({threads} threads)")
    for tol in (1e-3, 1e-7, 1e-9):
        n = max(int(10_000 * scale * (1e-5 / tol) ** 0.2), 10)
        rate, nfev = throughput(4, 2, tol, n, threads)
        report["tolerance"].append({"tol": tol, "samples_per_s": rate, "nfev_per_sample": nfev})
        say(f"  tol {tol:.0e}: {rate:>10,.0f} samples/s, {nfev:6.1f} evaluations per sample")
        if tol == 1e-3:  # the 1e-5 row is the DW4 row above
            dw4 = report["rows"]["DW4"]
            report["tolerance"].append({"tol": 1e-5, "samples_per_s": dw4["samples_per_s"],
                                        "nfev_per_sample": dw4["nfev_per_sample"]})
            say(f"  tol 1e-05: {dw4['samples_per_s']:>10,.0f} samples/s, "
                f"{dw4['nfev_per_sample']:6.1f} evaluations per sample")

    say("\nsamples/s against the number of threads (tol 1e-5)")
    for name, (k, d) in SYSTEMS.items():
        n = max(int(sizes[name] * scale), 10)
        rates = {1: throughput(k, d, 1e-5, n, 1)[0], threads: report["rows"][name]["samples_per_s"]}
        report["threads"].append({"system": name, "samples_per_s": rates})
        say(f"  {name:<5} " + ", ".join(f"{t} thread{'s' * (t > 1)}: {r:>9,.0f}"
                                         for t, r in rates.items()))

    n_scipy = max(int(40 * scale), 10)
    scipy_rate, scipy_nfev = scipy_baseline(1e-5, n_scipy)
    ours = report["threads"][0]["samples_per_s"][1]
    report["scipy"] = {"samples_per_s": scipy_rate, "nfev_per_sample": scipy_nfev,
                       "refimpl_one_thread": ours}
    say(f"\nscipy baseline, DW4, tol 1e-5: solve_ivp loop with a vectorized NumPy right-hand "
        f"side {scipy_rate:,.0f} samples/s ({scipy_nfev:.0f} evaluations per sample); refimpl on "
        f"one thread {ours:,.0f} samples/s ({ours / scipy_rate:,.0f} x)")
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    report["machine"]["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    report["quick"] = args.quick
    report["refimpl"] = refimpl.__version__
    if args.save:
        write_json(args.save, report)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        say(f"\nload average at the end: {report['machine']['load_average_end'][0]:.2f}")


if __name__ == "__main__":
    main()
