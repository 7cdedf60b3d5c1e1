"""Regenerate the README's results from a ``refimpl reproduce`` run at default settings.

    python scripts/update_readme.py                    # run reproduce (~1 min), rewrite
    python scripts/update_readme.py --results results  # reuse a finished default run
    python scripts/update_readme.py --check            # exit 1 if the README is stale

Every number the run produces is written between the markers
``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` in README.md
(the text in between is replaced, nothing else), and the run's
``figure1.png`` is copied to ``docs/figure1.png``. The Performance table is
rendered the same way from ``docs/benchmarks.json``, which
``python scripts/bench_flow.py --save docs/benchmarks.json`` writes (a measurement of
the machine it runs on, so it is stored rather than re-run). The sentences that
interpret the numbers are written here too, chosen by the numbers, so the
prose cannot contradict the tables. ``tests/test_readme_results.py`` runs
the same default run and fails when README.md differs from it: after any
change that touches arithmetic, run this script and commit what it writes.
"""

import argparse
import dataclasses
import difflib
import json
import pathlib
import re
import shutil
import sys
import tempfile
import textwrap

import refimpl
from refimpl.experiments import Settings, reproduce
from refimpl.experiments.common import system

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURE = ROOT / "docs" / "figure1.png"
# Written by ``python scripts/bench_flow.py --save docs/benchmarks.json`` on the project's
# machine; rendered into the README's Performance section (the figures are the code's,
# measured, not typed in; re-measure and re-run this script to change them).
BENCHMARKS = ROOT / "docs" / "benchmarks.json"
# Issue 10's targets on the project's 2-core machine (rtol = atol = 1e-5, 50 x 10 RBF psi).
TARGETS = {"DW4": 120_000, "LJ13": 15_000, "LJ55": 500, "train_step_s": 6e-3,
           "cold_start_s": 8.0, "single_call_s": 10e-6}
MARKER = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- end generated: (?P=name) -->)", flags=re.S)


def load_run(results):
    """The JSON files of a finished run in ``results``; refuses any run but the default one."""
    results = pathlib.Path(results)
    run = json.loads((results / "run.json").read_text())
    default = json.loads(json.dumps(dataclasses.asdict(Settings())))
    if run["quick"] or run["settings"] != default:
        raise SystemExit(f"{results} is not a run at default settings (refimpl reproduce "
                         "without --quick or --seed)")
    if run["refimpl"] != refimpl.__version__:
        raise SystemExit(f"{results} was written by refimpl {run['refimpl']}, "
                         f"this is {refimpl.__version__}")
    return {"run": run, "table1": json.loads((results / "table1.json").read_text()),
            "experiment2": json.loads((results / "experiment2.json").read_text()),
            "benchmarks": json.loads(BENCHMARKS.read_text())}


def _num(value, digits=2):
    """A signed number as printed in the README (true minus sign)."""
    return f"{value:.{digits}f}".replace("-", "\u2212")


def _sci(value):
    """``1e-05`` printed as ``1e-5``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2),
                  f"{value:g}")


def _power_of_ten(value):
    """``0.001`` printed as ``1e-3``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2),
                  f"{value:.0e}")


def _paragraph(text):
    """Prose wrapped at 96 columns, as the rest of the README, never inside a `code span`
    or a number like ``40 000``."""
    text = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", _KEEP), text)
    text = re.sub(r"(?<=\d) (?=\d{3}\b)", _KEEP, text)
    text = re.sub(r"(?<=\d) x (?=\d)", f"{_KEEP}x{_KEEP}", text)
    wrapped = textwrap.fill(text, 96, break_long_words=False, break_on_hyphens=False)
    return wrapped.replace(_KEEP, " ")


_KEEP = "\x00"  # a space that textwrap must not break at


def _count(n):
    """An integer with a thin space every three digits (``40 000``)."""
    return f"{n:,}".replace(",", " ")


def _setup(s):
    dw = system(_settings(s))
    pairs = dw.pairs
    return _paragraph(
        f"System: {s['n_particles']} particles in {s['dim']}-D with the paper's pairwise double "
        f"well (`a = {dw.a:g}, b = {dw.b:g}, c = {dw.c:g}, d0 = {dw.d0:g}`, {pairs} pairs, "
        f"`T = {s['temperature']:g}`). **eqBG** is the equivariant flow "
        f"({s['rbf_shape'][0]} x {s['rbf_shape'][1]} RBF kernels, rtol = atol = "
        f"{_sci(s['rtol'])}); **nBG** is a RealNVP ({s['nvp_layers']} affine couplings, "
        f"{'-'.join(map(str, s['nvp_hidden']))} MLPs). Both are trained the same way: "
        f"{s['ml_steps']} ML steps, then {s['mixed_steps']} steps of ML + "
        f"{s['mixed_kl_weight']:g} KL (Adam, batch {s['batch_size']}); in the KL term, energies "
        f"above {s['energy_cut']:g} kT are softened logarithmically "
        f"(`refimpl.train.linlog_cut`). Numbers below are from `refimpl reproduce` with seed "
        f"{s['seed']} (refimpl {refimpl.__version__})."
    )


def _settings(s):
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})


def _table1(s, t):
    rows = []
    gaps, paper_gaps = {}, {}
    for name in ("nBG", "eqBG"):
        r, p = t[name], t["paper"][name]
        gaps[name] = r["test_nll"] - r["train_nll"]
        paper_gaps[name] = p["test"] - p["train"]
        rows.append(f"| {name} | {_num(r['train_nll'])} | {_num(r['test_nll'])} | "
                    f"**{_num(gaps[name])}** | {_num(p['train'])} | {_num(p['test'])} |")
    subspace = (s["n_particles"] - 1) * s["dim"]
    if gaps["eqBG"] < gaps["nBG"]:
        finding = (f"The finding reproduces: eqBG's test NLL is {_num(gaps['eqBG'])} nats above "
                   f"its train NLL, while nBG loses {_num(gaps['nBG'])} nats on the unseen half "
                   "of the trajectory.")
    else:
        finding = (f"The finding does NOT reproduce in this run: eqBG's train-test gap "
                   f"({_num(gaps['eqBG'])} nats) is not smaller than nBG's "
                   f"({_num(gaps['nBG'])}).")
    if gaps["nBG"] < paper_gaps["nBG"]:
        finding += (f" Our nBG gap is smaller than the paper's {_num(paper_gaps['nBG'], 0)} "
                    "nats; we cannot tell what their nBG did differently (most likely a "
                    "RealNVP on all raw coordinates, whose density is degenerate for mean-free "
                    "data, see `refimpl/realnvp.py`).")
    ess = {name: t[name]["ess"] for name in ("nBG", "eqBG")}
    return "\n".join([
        _paragraph(
            "**Experiment 1 (Table 1): generalization.** One short Metropolis–Hastings "
            f"trajectory ({_count(s['mcmc_steps'])} steps from a random start, every "
            f"{s['mcmc_thin']}th state kept); the first half trains, the second half tests."),
        "",
        "| model | train NLL | test NLL | test − train | paper train | paper test |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        _paragraph(
            f"NLL = −mean log q_X(x) in nats, with q_X normalized on the {subspace}-dimensional "
            "mean-free subspace in orthonormal coordinates, for both models (the nBG works in "
            "a fixed orthonormal basis of that subspace, so the numbers are comparable). The "
            f"paper does not state its normalization; compare the gaps. {finding} The "
            f"effective sample size of reweighting {_count(s['n_samples'])} samples to the "
            f"Boltzmann distribution is {ess['eqBG']:.0f} (eqBG) and {ess['nBG']:.0f} (nBG) "
            "after this short training."),
    ])


def _energies(rows):
    return ", ".join(_num(r["energy"]) for r in rows)


def _experiment2(s, e):
    n = s["n_minimized"]
    starts = e["random_start_minima"]
    known = starts["structures"]
    table = ["| model | samples relaxing to the training state | distinct minima | "
             "minima not in the training set (u: samples) |", "| --- | ---: | ---: | ---: |"]
    found = {}
    for name in ("nBG", "eqBG"):
        rows = e[name]["structures"]
        at_state = sum(r["count"] for r in rows if r["is_training_state"])
        new = [r for r in rows if not r["is_training_state"]]
        found[name] = (at_state, rows, new)
        detail = ", ".join(f"{_num(r['energy'])}: {r['count']}" for r in new)
        detail = f" ({detail})" if new else ""
        table.append(f"| {name} | {at_state} / {n} | {len(rows)} | {len(new)}{detail} |")
    unverified = {name: n - e[name]["n_verified_minima"] for name in ("nBG", "eqBG")}
    lines = [_paragraph(
        "**Experiment 2: discovering unseen metastable states.** Minimizing "
        f"{starts['n_starts']} random starts gives {len(known)} distinct minima "
        f"(u = {_energies(known)}); the training set is the lowest of them plus Gaussian noise "
        f"of {s['noise']:g} ({_count(s['n_training_states'])} configurations). After training, "
        f"{n} samples of each model are minimized with a trust-region Newton method (exact "
        "Hessian) and the minima are grouped up to permutation, rotation, reflection and "
        "translation."),
        "",
        *table,
        "",
    ]
    prose = ""
    if any(unverified.values()):
        prose = ("Samples that did not relax to a verified minimum: "
                 + ", ".join(f"{k} {v}" for k, v in unverified.items()) + ". ")
    eq_at, eq_rows, eq_new = found["eqBG"]
    nbg_at, nbg_rows, nbg_new = found["nBG"]
    if nbg_new:
        nbg = f"the nBG's samples relax to {len(nbg_new)} minima besides the training state"
    else:
        nbg = "every minimum the nBG's samples relax to is the training state"
    beyond = [r for r in eq_rows if not r["from_random_starts"]]
    covered = sum(1 for r in eq_rows if r["from_random_starts"])
    eq = (f"the eqBG's relax to {len(eq_new)} minima that were never in the data; with the "
          f"training state they include {'all ' if covered == len(known) else ''}{covered} of "
          f"the {len(known)} minima of the random starts"
          + (f" and {len(beyond)} that none of the random starts reached "
             f"(u = {_energies(beyond)})" if beyond else "") + ".")
    if len(eq_new) > len(nbg_new):
        prose += f"As in the paper, {nbg}, while {eq}"
    else:
        prose += (f"Unlike the paper, the eqBG does not find more unseen minima than the nBG in "
                  f"this run: {nbg}; {eq}")
    return "\n".join(lines + [_paragraph(prose)])


def _rate(value):
    """Samples/s rounded to three significant digits, printed with thin spaces."""
    digits = max(len(str(int(value))) - 3, 0)
    return _count(int(round(value, -digits)))


def _performance(b):
    """The Performance table and the paragraphs that read it, from ``bench_flow.py --save``."""
    m, rows = b["machine"], b["rows"]
    train = rows["train_step"]
    cold = rows["cold_start"]
    per_pair = {c["K"]: c["ns_per_pair"] for c in b["cost_vs_k"]}
    met = {"DW4": rows["DW4"]["samples_per_s"] >= TARGETS["DW4"],
           "LJ13": rows["LJ13"]["samples_per_s"] >= TARGETS["LJ13"],
           "LJ55": rows["LJ55"]["samples_per_s"] >= TARGETS["LJ55"],
           "training step": train["mean_s"] <= TARGETS["train_step_s"],
           "cold start": cold["empty_cache_s"] <= TARGETS["cold_start_s"],
           "single call": rows["single_call_s"] <= TARGETS["single_call_s"]}
    load = f"{m['load_average'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end"
    lines = [_paragraph(
        f"Measured on {m['date']} with `python scripts/bench_flow.py --save docs/benchmarks.json"
        f"{' --quick' if b.get('quick') else ''}` (refimpl {b.get('refimpl', '?')}): {m['cpu']}, "
        f"{m['cores']} cores, {m['threads']} Numba threads, Python {m['python']}, NumPy "
        f"{m['numpy']}, Numba {m['numba']}; load average {load}."), "",
        "| | measured | target (issue 10) |", "| --- | ---: | ---: |"]
    for name, (k, d) in (("DW4", (4, 2)), ("LJ13", (13, 3)), ("LJ55", (55, 3))):
        lines.append(f"| {name} (K = {k}, D = {d}) sampling | "
                     f"{_rate(rows[name]['samples_per_s'])} samples/s | "
                     f">= {_count(TARGETS[name])} |")
    lines += [
        f"| DW4 training step (ML + KL, batch 64) | {train['mean_s'] * 1e3:.1f} ms mean, "
        f"{train['best_s'] * 1e3:.1f} ms best (forward {train['forward'] * 1e3:.1f}, adjoint "
        f"{train['adjoint'] * 1e3:.1f}) | <= {TARGETS['train_step_s'] * 1e3:g} ms |",
        f"| cold start: import + compile + first sample | {cold['empty_cache_s']:.1f} s "
        f"({cold['warm_cache_s']:.2f} s with a warm cache)" + (
            f"; a first batch of 1 000 samples, which compiles the lockstep solve instead: "
            f"{cold['batch_empty_cache_s']:.1f} s ({cold['batch_warm_cache_s']:.2f} s)"
            if "batch_empty_cache_s" in cold else "")
        + f" | <= {TARGETS['cold_start_s']:g} s |",
        f"| one `vector_field` call on one (4, 2) configuration | "
        f"{rows['single_call_s'] * 1e6:.1f} us | <= {TARGETS['single_call_s'] * 1e6:g} us |",
        "| one field + divergence evaluation, per pair, K = 4 / 13 / 55 (1 thread) | "
        + " / ".join(f"{per_pair[k]:.0f}" for k in (4, 13, 55)) + " ns | |", ""]
    hit = [name for name, ok in met.items() if ok]
    missed = [name for name, ok in met.items() if not ok]
    verdict = (f"Targets met in this run: {', '.join(hit) if hit else 'none'}; not met: "
               f"{', '.join(missed) if missed else 'none'}.")
    grows = "; ".join(f"K = {c['K']}: {c['ns_per_pair']:.0f} ns per pair, "
                      f"{c['us_per_sample']:.2f} us per sample" for c in b["cost_vs_k"])
    tolerance = sorted(b["tolerance"], key=lambda r: -r["tol"])
    tol_text = ", ".join(f"{_power_of_ten(r['tol'])}: {r['nfev_per_sample']:.0f} evaluations, "
                         f"{_rate(r['samples_per_s'])} samples/s" for r in tolerance)
    threads = "; ".join(
        f"{r['system']} " + " -> ".join(f"{_rate(v)} ({t} thread{'s' * (int(t) > 1)})"
                                        for t, v in sorted(r["samples_per_s"].items(),
                                                           key=lambda kv: int(kv[0])))
        for r in b["threads"])
    sc = b["scipy"]
    prose = (f"{verdict} How cost grows with K (one field + divergence evaluation, one thread): "
             f"{grows}. DW4 against the tolerance ({m['threads']} threads): {tol_text}. "
             f"Threads (samples are independent): {threads}. The scipy baseline (a loop of "
             f"`solve_ivp(method=\"RK45\")` with a vectorized NumPy right-hand side, warm-up "
             f"excluded): {_rate(sc['samples_per_s'])} DW4 samples/s against refimpl's "
             f"{_rate(sc['refimpl_one_thread'])} on one thread "
             f"({sc['refimpl_one_thread'] / sc['samples_per_s']:.0f}x).")
    if "exp" in b:
        prose += (f" refimpl's own `exp` in an array loop: {b['exp']['ns_own_exp']:.2f} ns per "
                  f"call, `math.exp` {b['exp']['ns_math_exp']:.2f} ns.")
    return "\n".join(lines + [_paragraph(prose)])


def render(data):
    """``{block name: Markdown}`` for the README, from ``load_run``'s output."""
    s = data["run"]["settings"]
    return {"setup": _setup(s), "table1": _table1(s, data["table1"]),
            "experiment2": _experiment2(s, data["experiment2"]),
            "performance": _performance(data["benchmarks"])}


def splice(text, blocks):
    """``text`` with the body of each marked block replaced by ``blocks[name]``."""
    seen = [m.group("name") for m in MARKER.finditer(text)]
    if sorted(seen) != sorted(blocks):
        raise ValueError(f"README markers {seen} do not match the generated blocks "
                         f"{sorted(blocks)}")
    return MARKER.sub(lambda m: m.group(1) + blocks[m.group("name")].rstrip("\n") + "\n"
                      + m.group(4), text)


def generated_blocks(text):
    """``{name: body}`` of the marked blocks in ``text``."""
    return {m.group("name"): m.group("body").rstrip("\n") for m in MARKER.finditer(text)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", help="a finished `refimpl reproduce` output folder "
                        "(default: run it now, in a temporary folder)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if README.md differs from the run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results
        if results is None:
            results = pathlib.Path(tmp) / "results"
            reproduce(out=results)
        data = load_run(results)
        text = README.read_text()
        new = splice(text, render(data))
        if args.check:
            if new != text:
                sys.stdout.writelines(difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), "README.md", "generated"))
                return 1
            print("README.md matches the run")
            return 0
        README.write_text(new)
        shutil.copyfile(pathlib.Path(results) / "figure1.png", FIGURE)
    print(f"rewrote the generated blocks of {README.relative_to(ROOT)} and "
          f"{FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
