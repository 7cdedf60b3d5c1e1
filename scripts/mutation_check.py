"""A small curated mutation run: does the test suite catch realistic one-line bugs?

    python scripts/mutation_check.py            # all mutants (~15-25 min on 2 cores)
    python scripts/mutation_check.py -k verify  # only mutants whose name contains "verify"
    python scripts/mutation_check.py --list     # the mutants, without running anything

Each mutant is a small textual edit of one file of the package (a tableau
digit, a sign, a dropped factor or term, a tolerance ignored, ...) together
with the test modules that should catch it. The tracked files of this
checkout are copied to a temporary folder; there each mutant is applied,
the Numba cache of the copy is cleared (kernels are cached per source file,
so a stale cache would hide the mutant), its tests run with ``pytest -x``,
and the file is restored. This checkout is never modified. A mutant is
*killed* when its tests fail (or cannot even import the package); a mutant
whose text no longer occurs in the code is reported as stale, so the list
needs care when the code changes. Not part of CI: it compiles every kernel
once per mutant.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str          # relative to the repository
    edits: tuple       # ((old, new), ...): each old text must occur exactly once
    tests: tuple       # test modules that should kill it


MUTANTS = (
    Mutant("tableau digit", "refimpl/tableau.py",
           (("-71 / 1920", "-71 / 1902"),), ("tests/test_ode.py",)),
    Mutant("controller safety factor", "refimpl/ode.py",
           (("SAFETY = 0.9 ", "SAFETY = 0.8 "),), ("tests/test_ode.py",)),
    Mutant("error norm misses a non-finite f(t + h, y_new)", "refimpl/ode.py",
           (("poison = (y_new[i] - y_new[i]) + (K[N_STAGES, i] - K[N_STAGES, i])",
             "poison = y_new[i] - y_new[i]"),), ("tests/test_ode.py",)),
    Mutant("divergence includes j = i", "refimpl/_kernels.py",
           (("for j in range(i + 1, K):", "for j in range(i, K):"),), ("tests/test_kernels.py",)),
    Mutant("field sign of particle i", "refimpl/_kernels.py",
           (("g[i * D + d] += value * diff", "g[i * D + d] -= value * diff"),),
           ("tests/test_kernels.py",)),
    Mutant("prior constant", "refimpl/prior.py",
           (("- 0.5 * event_dim * np.log(2 * np.pi)", "- 0.5 * event_dim * np.log(np.pi)"),),
           ("tests/test_prior.py", "tests/test_flow.py")),
    Mutant("log-det sign", "refimpl/_engine.py",
           (("-anp.reshape(y[:, n], batch_shape)", "anp.reshape(y[:, n], batch_shape)"),),
           ("tests/test_flow.py",)),
    Mutant("missing factor 2 in the RBF's psi' terms (rbf.slope_term)", "refimpl/rbf.py",
           (("return -2.0 * gamma * d * w if w != 0.0 else 0.0",
             "return -gamma * d * w if w != 0.0 else 0.0"),),
           ("tests/test_kernels.py", "tests/test_psi.py")),
    Mutant("window kernel halves psi' above the nearest centre", "refimpl/_kernels.py",
           (("w = work[c0 + m] * value\n            total += w\n"
             "            total_slope += rbf.slope_term(gamma, r_lane - mu_k, w)",
             "w = work[c0 + m] * value\n            total += w\n"
             "            total_slope += rbf.slope_term(gamma, r_lane - mu_k, 0.5 * w)"),),
           ("tests/test_kernels.py", "tests/test_fast_paths.py")),
    Mutant("window kernel leaves the last lane's distance squared", "refimpl/_kernels.py",
           (("        # each: ~4 % of an evaluation at K = 13)\n        for lane in range(lanes):",
             "        # each: ~4 % of an evaluation at K = 13)\n        for lane in range(lanes - 1):"),),
           ("tests/test_kernels.py", "tests/test_fast_paths.py")),
    Mutant("multi-sample kernel starts the next sample at pair (0, 2)", "refimpl/_kernels.py",
           (("                i = 0\n                j = 1\n                q += 1",
             "                i = 0\n                j = 2\n                q += 1"),),
           ("tests/test_lockstep.py",)),
    Mutant("lockstep carries the wrong stage into the next step (FSAL)", "refimpl/_lockstep.py",
           (("K[0, b, i] = K[N_STAGES, b, i]", "K[0, b, i] = K[N_STAGES - 1, b, i]"),),
           ("tests/test_lockstep.py",)),
    Mutant("lockstep also for grids whose centres are looked up", "refimpl/_kernels.py",
           (("and not _looks_up_centres(theta, ctx_size):", "and True:"),),
           ("tests/test_lockstep.py",)),
    Mutant("lockstep forgets a rejection", "refimpl/_lockstep.py",
           (("                    rejected[b] = True\n", "                    rejected[b] = False\n"),),
           ("tests/test_lockstep.py",)),
    Mutant("adjoint window pullback drops psi''", "refimpl/_adjoint.py",
           (("total_bend + (bend if kept else 0.0)", "total_bend"),),
           ("tests/test_grad.py",)),
    Mutant("generic pair halves psi'", "refimpl/rbf.py",
           (("slope += slope_term(gamma, r - mu[k], w)",
             "slope += slope_term(gamma, r - mu[k], 0.5 * w)"),),
           ("tests/test_kernels.py", "tests/test_psi.py")),
    Mutant("the gradient's pair2 halves psi'", "refimpl/rbf.py",
           (("slope += slope_term(gamma, d, w)", "slope += slope_term(gamma, d, 0.5 * w)"),),
           ("tests/test_grad.py", "tests/test_psi.py")),
    Mutant("dropped adjoint term", "refimpl/_adjoint.py",
           (("ybar[i] += stage_bar[i]", "ybar[i] += 0.0 * stage_bar[i]"),),
           ("tests/test_grad.py",)),
    Mutant("Adam without bias correction", "refimpl/train.py",
           (("m_hat = self.m / (1 - self.beta1 ** self.count)", "m_hat = self.m"),),
           ("tests/test_train.py",)),
    Mutant("Metropolis acceptance sign", "refimpl/mcmc.py",
           (("if log_u[c, s] < u[c] - u_new:", "if log_u[c, s] < u_new - u[c]:"),),
           ("tests/test_mcmc.py",)),
    Mutant("ESS formula", "refimpl/reweight.py",
           (("return 1.0 / np.sum(w * w)", "return 1.0 / np.sum(w)"),),
           ("tests/test_train.py", "tests/test_bad_inputs.py")),
    Mutant("reweighting normalization", "refimpl/reweight.py",
           (("return w / np.sum(w)", "return w"),),
           ("tests/test_train.py", "tests/test_bad_inputs.py")),
    Mutant("DoubleWell parameter b", "refimpl/potentials.py",
           (("a=0.0, b=-4.0, c=0.9, d0=4.0", "a=0.0, b=-3.0, c=0.9, d0=4.0"),),
           ("tests/test_potentials.py",)),
    Mutant("Lennard-Jones force sign", "refimpl/potentials.py",
           (("w = 12.0 * self.epsilon * (q * q - q)", "w = -12.0 * self.epsilon * (q * q - q)"),),
           ("tests/test_potentials.py",)),
    Mutant("verify ignores atol", "refimpl/verify.py",
           (("return max(atol + rtol * scale,", "return max(rtol * scale,"),),
           ("tests/test_vectors.py", "tests/test_verification_tools.py")),
    Mutant("verify ignores rtol", "refimpl/verify.py",
           (("return max(atol + rtol * scale,", "return max(atol,"),),
           ("tests/test_vectors.py", "tests/test_verification_tools.py")),
    Mutant("assert_invariant ignores the permutation", "refimpl/testing/checks.py",
           (('    fx = _call(f, x, "f")\n    fgx = _call(f, act(x, rotation, permutation, '
             'translation), "f")',
             '    fx = _call(f, x, "f")\n    fgx = _call(f, act(x, rotation, None, '
             'translation), "f")'),),
           ("tests/test_symmetry.py", "tests/test_verification_tools.py")),
    Mutant("assert_equivariant ignores the permutation", "refimpl/testing/checks.py",
           (('fgx = _call(f, act(x, rotation, permutation, translation), "f")\n'
             '    expected = act(fx, rotation, permutation,',
             'fgx = _call(f, act(x, rotation, None, translation), "f")\n'
             '    expected = act(fx, rotation, None,'),),
           ("tests/test_symmetry.py", "tests/test_verification_tools.py")),
    Mutant("exp clamp loses NaN", "refimpl/_exp.py",
           (("x = X_MAX if x > X_MAX else x", "x = x if x < X_MAX else X_MAX"),),
           ("tests/test_exp.py",)),
    Mutant("exp rounds r and 1 + q separately", "refimpl/_exp.py",
           (("exp_r = hi + (lo + (e + s))", "exp_r = 1.0 + (r + s)"),), ("tests/test_exp.py",)),
    Mutant("exp scales by 2**n in one factor", "refimpl/_exp.py",
           (("(exp_r * _power_of_two(half)) * _power_of_two(k - half)",
             "exp_r * _power_of_two(k)"),), ("tests/test_exp.py",)),
)


def _copy_checkout(dest):
    """The tracked files of this checkout, as they are on disk, into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _clear_numba_cache(copy):
    for cache in (copy / "refimpl").rglob("__pycache__"):
        shutil.rmtree(cache)


def _pytest(copy, tests, env):
    """Exit code and last output line of ``pytest -x`` on ``tests`` in the copy (with
    the failing test's summary line, if one failed)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                          *tests], cwd=copy, env=env, capture_output=True, text=True)
    lines = (run.stdout + run.stderr).strip().splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")]
    last = lines[-1] if lines else ""
    return run.returncode, f"{last}; {failed[0][:200]}" if failed else last


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in mutants:
            print(f"{m.name:<45} {m.path:<28} {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="refimpl-mutants-") as tmp:
        copy = pathlib.Path(tmp)
        _copy_checkout(copy)
        # the copy's package, not the installed one, is what the tests import
        env = dict(os.environ, PYTHONPATH=str(copy))
        where = subprocess.run([sys.executable, "-c", "import refimpl; print(refimpl.__file__)"],
                               cwd=copy, env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"the tests would import refimpl from {where}, not from the copy")
        baseline = sorted({t for m in mutants for t in m.tests})
        print(f"baseline: {' '.join(baseline)}", flush=True)
        code, last = _pytest(copy, baseline, env)
        if code != 0:
            raise SystemExit(f"the unmutated tests fail ({last}); fix that first")
        results = []
        for m in mutants:
            path = copy / m.path
            original = path.read_text()
            text = original
            stale = [old for old, _ in m.edits if text.count(old) != 1]
            if stale:
                results.append((m, "STALE", f"text not found exactly once: {stale[0]!r}"))
                print(f"STALE   {m.name}", flush=True)
                continue
            for old, new in m.edits:
                text = text.replace(old, new)
            start = time.perf_counter()
            try:
                path.write_text(text)
                _clear_numba_cache(copy)
                code, last = _pytest(copy, m.tests, env)
            finally:
                path.write_text(original)
                _clear_numba_cache(copy)
            verdict = "killed" if code != 0 else "SURVIVED"
            results.append((m, verdict, last))
            print(f"{verdict:<8}{m.name} ({time.perf_counter() - start:.0f} s): {last}",
                  flush=True)
    killed = sum(v == "killed" for _, v, _ in results)
    survived = [m.name for m, v, _ in results if v == "SURVIVED"]
    stale = [m.name for m, v, _ in results if v == "STALE"]
    print(f"\n{killed} of {len(results) - len(stale)} mutants killed"
          + (f"; survived: {', '.join(survived)}" if survived else "")
          + (f"; stale (update MUTANTS): {', '.join(stale)}" if stale else ""))
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
