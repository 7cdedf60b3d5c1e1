"""The ``refimpl`` command.

``refimpl reproduce`` runs the paper's experiments and writes ``results/``
(the main job); ``refimpl demo`` samples a small equivariant flow and prints
exact log-densities with the solver's statistics. ``refimpl vectors`` writes
golden test vectors and ``refimpl verify`` checks another implementation's
outputs against them (``refimpl.vectors``, ``refimpl.verify``).
"""

import argparse
import os
import sys
import time

import numpy as np


# refimpl demo prints one row per sample; more than this is not a demo.
DEMO_MAX_PRINTED = 1000
# A sample costs K^2 D per field evaluation times a number of steps that grows
# with K: about 3 s per sample at K = 300 on a loaded 2-core machine. Larger
# systems belong in a script, not in the demo.
DEMO_MAX_PARTICLES = 300
DEMO_MAX_DIM = 10
# The throughput test samples in doubling batches until it has spent this long
# or drawn DEMO_THROUGHPUT_MAX samples (5 000 at K = 4 take ~0.5 s).
DEMO_THROUGHPUT_SECONDS = 2.0
DEMO_THROUGHPUT_MAX = 5_000


def _demo(args):
    from . import EquivariantFlow, RBFKernel

    _require(args.seed >= 0, "--seed", args.seed, "a non-negative integer")
    _require(2 <= args.particles <= DEMO_MAX_PARTICLES, "--particles", args.particles,
             f"between 2 and {DEMO_MAX_PARTICLES}")
    _require(1 <= args.dim <= DEMO_MAX_DIM, "--dim", args.dim, f"between 1 and {DEMO_MAX_DIM}")
    _require(1 <= args.n <= DEMO_MAX_PRINTED, "-n", args.n, f"between 1 and {DEMO_MAX_PRINTED}")
    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        _require(np.isfinite(value) and value > 0, flag, value, "a positive number")
    if args.throughput is not None:
        _require(args.throughput >= 0, "--throughput", args.throughput,
                 "0 (off) or a positive number of samples")
    rng = np.random.default_rng(args.seed)
    k, d = args.particles, args.dim
    print(f"refimpl demo: K = {k} particles in D = {d}, seed {args.seed}")
    print("compiling/loading Numba kernels (first run compiles, ~10-20 s) ...", flush=True)
    start = time.perf_counter()
    psi = RBFKernel(0.02 * rng.standard_normal((50, 10)))
    flow = EquivariantFlow(psi, rtol=args.rtol, atol=args.atol, n_particles=k, dim=d)
    x, log_q, stats = flow.sample(args.n, rng, return_stats=True)
    print(f"ready after {time.perf_counter() - start:.1f} s\n")
    print(f"psi: {psi!r}\nflow: {flow!r}\n")
    print(f"{'sample':>6} {'log q_X(x)':>14} {'log_prob(x)':>14} {'|diff|':>9} {'nfev':>5} "
          f"{'acc':>4} {'rej':>4}")
    log_prob = flow.log_prob(x)
    for i in range(args.n):
        print(f"{i:>6} {log_q[i]:>14.8f} {log_prob[i]:>14.8f} {abs(log_q[i] - log_prob[i]):>9.2e} "
              f"{stats.nfev[i]:>5} {stats.naccept[i]:>4} {stats.nreject[i]:>4}")
    print(f"\nlog q_X(x) comes from the forward solve (prior density plus the integrated"
          f"\ndivergence); log_prob(x) solves backwards from x. Both are exact up to the solver"
          f"\ntolerance (rtol={args.rtol:g}, atol={args.atol:g}); tighten it to shrink |diff|.")
    if args.throughput != 0:
        n_big, elapsed = _throughput(flow, rng, args.throughput)
        rate = n_big / elapsed
        print(f"throughput: {n_big} exact-likelihood samples in {elapsed:.2f} s "
              f"({rate:,.0f} samples/s" if rate >= 10 else f"({rate:.2f} samples/s",
              "--throughput N sets the number, 0 skips it)", sep="; ")
    return 0


def _throughput(flow, rng, n=None):
    """Time ``n`` samples, or doubling batches within ``DEMO_THROUGHPUT_SECONDS`` if ``n`` is None."""
    if n is not None:
        start = time.perf_counter()
        flow.sample(n, rng)
        return n, time.perf_counter() - start
    done, elapsed, batch = 0, 0.0, 1
    while done < DEMO_THROUGHPUT_MAX and elapsed < DEMO_THROUGHPUT_SECONDS:
        size = min(batch, DEMO_THROUGHPUT_MAX - done)
        start = time.perf_counter()
        flow.sample(size, rng)
        elapsed += time.perf_counter() - start
        done, batch = done + size, 2 * batch
    return done, elapsed


def _reproduce(args):
    from .experiments import reproduce

    _require(args.seed >= 0, "--seed", args.seed, "a non-negative integer")
    try:
        reproduce(args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite)
    except OSError as exc:  # reproduce writes and reads only inside --out: name the flag
        if not exc.strerror:
            raise
        raise UsageError(f"--out {args.out}: {_describe(exc)}") from None
    except KeyboardInterrupt as exc:
        print("refimpl reproduce: interrupted; run the same command again to resume from the "
              "checkpoints", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    return 0


def _vectors(args):
    from .vectors import write_vectors

    if os.path.isdir(args.out):  # say so now, not after generating the vectors
        raise UsageError(f"--out {args.out} is a folder; give a file name, e.g. golden.json")
    try:
        golden = write_vectors(args.out, small=args.small)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"refimpl vectors: wrote {len(golden['cases'])} cases to {args.out}")
    print("reference error (estimated): max abs, max rel; pass/fail thresholds: rtol, atol")
    print(f"{'quantity':<16}{'max abs':>10}{'max rel':>10}{'rtol':>8}{'atol':>8}")
    for q, acc in golden["reference_accuracy"].items():
        t = golden["thresholds"][q]
        err, rel = ("-" if acc[key] is None else f"{acc[key]:.1e}"
                    for key in ("max_abs_error", "max_rel_error"))
        print(f"{q:<16}{err:>10}{rel:>10}{t['rtol']:>8.0e}{t['atol']:>8.0e}")
    return 0


def _verify(args):
    from .verify import verify

    return verify(args.golden, args.theirs, strict=args.strict, families=args.family,
                  allow_edited=args.allow_edited_golden)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage text."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(ValueError):
    """A command-line value out of range; the message names the flag."""


def _require(ok, flag, value, what):
    if not ok:
        raise UsageError(f"{flag} must be {what}, got {value}")


def _describe(exc):
    """One line for an exception that reaches the command line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read"
    if isinstance(exc, MemoryError):
        return f"not enough memory ({exc or 'allocation failed'}); ask for less"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv=None):
    parser = _Parser(prog="refimpl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser("reproduce", help="run the paper's experiments, write results/")
    rep.add_argument("--out", default="results", help="output folder (default results/)")
    rep.add_argument("--quick", action="store_true",
                     help="a small version (seconds once the kernels are compiled)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--overwrite", action="store_true",
                     help="replace results in --out made with other settings (refused otherwise)")
    rep.set_defaults(run=_reproduce)
    demo = sub.add_parser("demo", help="sample a small equivariant flow with exact log-densities")
    demo.add_argument("--particles", type=int, default=4,
                      help=f"K (default 4, at most {DEMO_MAX_PARTICLES})")
    demo.add_argument("--dim", type=int, default=2, help=f"D (default 2, at most {DEMO_MAX_DIM})")
    demo.add_argument("-n", type=int, default=5,
                      help=f"samples to print (default 5, at most {DEMO_MAX_PRINTED})")
    demo.add_argument("--rtol", type=float, default=1e-5)
    demo.add_argument("--atol", type=float, default=1e-5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--throughput", type=int, default=None, metavar="N",
                      help=f"samples in the throughput test (default: as many as fit in "
                      f"{DEMO_THROUGHPUT_SECONDS:g} s, at most {DEMO_THROUGHPUT_MAX}; 0 skips it)")
    demo.set_defaults(run=_demo)
    vec = sub.add_parser("vectors", help="write golden test vectors (JSON) for checking "
                         "another implementation")
    vec.add_argument("--out", required=True, help="output file, e.g. golden.json")
    vec.add_argument("--small", action="store_true", help="a few small cases only")
    vec.set_defaults(run=_vectors)
    ver = sub.add_parser("verify", help="compare another implementation's outputs with golden "
                         "vectors; exit 0 pass, 1 fail, 2 bad files")
    ver.add_argument("golden", help="golden vectors written by refimpl vectors")
    ver.add_argument("theirs", help="outputs for the same cases: .json "
                     "{\"cases\": {case_id: {quantity: value}}} or .npz '<case_id>/<quantity>'")
    ver.add_argument("--strict", action="store_true",
                     help="quantities not provided count as failures")
    ver.add_argument("--family", action="append", metavar="NAME",
                     help="verify only the cases of this psi family (e.g. RBFKernel); "
                     "repeatable")
    ver.add_argument("--allow-edited-golden", action="store_true",
                     help="use a golden file whose digest no longer matches (edited after "
                     "refimpl vectors wrote it); its schema and thresholds are still checked")
    ver.set_defaults(run=_verify)
    args = parser.parse_args(argv)
    from .flow import SolverError

    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RecursionError, MemoryError, SolverError) as exc:
        # user errors (bad values, bad or unreadable files): one line, exit 2
        print(f"refimpl {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
