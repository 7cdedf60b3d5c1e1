"""The ``refimpl`` command.

``refimpl reproduce`` runs the paper's experiments and writes ``results/``
(the main job); ``refimpl demo`` samples a small equivariant flow and prints
exact log-densities with the solver's statistics. ``refimpl vectors`` writes
golden test vectors and ``refimpl verify`` checks another implementation's
outputs against them (``refimpl.vectors``, ``refimpl.verify``).
"""

import argparse
import sys
import time

import numpy as np


# refimpl demo prints one row per sample; more than this is not a demo.
DEMO_MAX_PRINTED = 1000
# The throughput test's default: 5 000 samples at K = 4, scaled by 1/K^2 (the
# cost of one field evaluation), so that it takes about as long for any K.
DEMO_THROUGHPUT_WORK = 80_000


def _demo(args):
    from . import EquivariantFlow, RBFKernel

    _require(args.seed >= 0, "--seed", args.seed, "a non-negative integer")
    _require(2 <= args.particles, "--particles", args.particles, "at least 2")
    _require(1 <= args.dim, "--dim", args.dim, "at least 1")
    _require(1 <= args.n <= DEMO_MAX_PRINTED, "-n", args.n, f"between 1 and {DEMO_MAX_PRINTED}")
    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        _require(np.isfinite(value) and value > 0, flag, value, "a positive number")
    n_big = args.throughput
    if n_big is None:
        n_big = max(10, DEMO_THROUGHPUT_WORK // args.particles ** 2)
    _require(n_big >= 0, "--throughput", n_big, "0 (off) or a positive number of samples")
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
    if n_big:
        start = time.perf_counter()
        flow.sample(n_big, rng)
        elapsed = time.perf_counter() - start
        print(f"throughput: {n_big} exact-likelihood samples in {elapsed:.2f} s "
              f"({n_big / elapsed:,.0f} samples/s; --throughput N sets the number, 0 skips it)")
    return 0


def _reproduce(args):
    from .experiments import reproduce

    _require(args.seed >= 0, "--seed", args.seed, "a non-negative integer")
    try:
        reproduce(args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite)
    except KeyboardInterrupt as exc:
        print("refimpl reproduce: interrupted; run the same command again to resume from the "
              "checkpoints", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    return 0


def _vectors(args):
    from .vectors import write_vectors

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
    demo.add_argument("--particles", type=int, default=4, help="K (default 4)")
    demo.add_argument("--dim", type=int, default=2, help="D (default 2)")
    demo.add_argument("-n", type=int, default=5,
                      help=f"samples to print (default 5, at most {DEMO_MAX_PRINTED})")
    demo.add_argument("--rtol", type=float, default=1e-5)
    demo.add_argument("--atol", type=float, default=1e-5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--throughput", type=int, default=None, metavar="N",
                      help="samples in the throughput test (default 80000 / K^2, at least 10; "
                      "0 skips it)")
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
