"""Benchmark: exact-likelihood sampling throughput of EquivariantFlow.

Prints, for 50 x 10 RBF kernels (weights 0.02 N(0, 1), seed 0):
  * samples per second with all threads and with one, and function
    evaluations per sample, for K = 4, D = 2 at rtol = atol = 1e-5 and 1e-8,
    and for K = 13 and K = 55 in D = 3 at 1e-5;
  * the cost of one field evaluation per pair as K grows (should be flat:
    the cost per evaluation grows as K^2);
  * the same K = 4 solve done by a Python loop over scipy's solve_ivp with
    the same Numba field as right-hand side, and the ratio;
  * the Numba compile time of a first run (fresh cache, in a subprocess) and
    the import time with a warm cache.

Usage: python scripts/bench_flow.py [--quick]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
from scipy.integrate import solve_ivp

import refimpl


def _timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(k, d, tol, n, threads):
    rng = np.random.default_rng(0)
    psi = refimpl.RBFKernel(0.02 * rng.standard_normal((50, 10)))
    flow = refimpl.EquivariantFlow(psi, rtol=tol, atol=tol, n_particles=k, dim=d)
    z = refimpl.MeanFreeNormal(k, d).sample(n, 1)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        flow.forward(z[:2])
        seconds = _timed(lambda: flow.forward(z))
    finally:
        numba.set_num_threads(before)
    return n / seconds, float(flow.last_stats.nfev.mean()), float(flow.last_stats.nreject.mean())


def per_pair_cost(k, d, n):
    psi = refimpl.RBFKernel(0.02 * np.random.default_rng(0).standard_normal((50, 10)))
    x = np.random.default_rng(1).standard_normal((n, k, d))
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        refimpl.divergence(x[:2], 0.5, psi)
        seconds = _timed(lambda: refimpl.divergence(x, 0.5, psi))
    finally:
        numba.set_num_threads(before)
    return seconds / n / (k * (k - 1) / 2)


def scipy_loop(tol, n):
    k, d = 4, 2
    rng = np.random.default_rng(0)
    psi = refimpl.RBFKernel(0.02 * rng.standard_normal((50, 10)))
    z = refimpl.MeanFreeNormal(k, d).sample(n, 1)

    def rhs(t, y):
        x = y[:-1].reshape(1, k, d)
        return np.append(refimpl.vector_field(x, t, psi).ravel(), -refimpl.divergence(x, t, psi))

    start = time.perf_counter()
    for i in range(n):
        solve_ivp(rhs, (0.0, 1.0), np.append(z[i].ravel(), 0.0), method="RK45", rtol=tol, atol=tol)
    return n / (time.perf_counter() - start)


_FIRST_RUN = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); "
    "import refimpl; "
    "f = refimpl.EquivariantFlow(refimpl.RBFKernel(), n_particles=4, dim=2); f.sample(2, 0); "
    "print(time.perf_counter() - t)"
)


def compile_times():
    """Run a first sample twice in fresh processes on a copy of the package
    without its Numba cache: the first run compiles, the second loads."""
    import importlib.util
    import pathlib
    import shutil

    source = pathlib.Path(importlib.util.find_spec("refimpl").origin).parent
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(source, pathlib.Path(tmp) / "refimpl",
                        ignore=shutil.ignore_patterns("__pycache__"))
        env = dict(os.environ, NUMBA_CACHE_DIR=str(pathlib.Path(tmp) / "numba-cache"))
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", _FIRST_RUN, tmp], env=env,
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (noisier figures)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    threads = numba.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba {numba.__version__}, {threads} threads")
    print("\nthroughput (50 x 10 RBF kernels, weights 0.02 N(0,1))")
    print(f"{'K':>3} {'D':>2} {'tol':>6} {'samples/s':>11} {'1 thread':>10} {'nfev/sample':>12}"
          f" {'rejected':>9}")
    for k, d, tol, n in [(4, 2, 1e-5, 40_000), (4, 2, 1e-8, 10_000), (13, 3, 1e-5, 4_000),
                         (55, 3, 1e-5, 200)]:
        n = max(int(n * scale), 20)
        rate, nfev, nrej = throughput(k, d, tol, n, threads)
        rate1, _, _ = throughput(k, d, tol, n, 1)
        print(f"{k:>3} {d:>2} {tol:>6.0e} {rate:>11,.0f} {rate1:>10,.0f} {nfev:>12.1f} {nrej:>9.2f}")

    print("\ncost of one field + divergence evaluation per pair (1 thread)")
    base = None
    for k in (4, 13, 55):
        cost = per_pair_cost(k, 3, max(int(200_000 * scale) // (k * k), 50))
        base = base or cost
        print(f"  K = {k:>2}: {cost * 1e9:7.1f} ns per pair ({cost / base:.2f} x K = 4)")

    n_scipy = max(int(200 * scale), 10)
    scipy_rate = scipy_loop(1e-5, n_scipy)
    ours, _, _ = throughput(4, 2, 1e-5, max(int(40_000 * scale), 20), threads)
    print(f"\nscipy solve_ivp loop, K = 4, tol 1e-5: {scipy_rate:,.0f} samples/s; "
          f"refimpl is {ours / scipy_rate:,.0f} x faster")

    cold, warm = compile_times()
    print(f"\nfirst run with an empty Numba cache (import + compile + 2 samples): {cold:.1f} s")
    print(f"run with a warm cache (import + 2 samples): {warm:.2f} s")


if __name__ == "__main__":
    main()
