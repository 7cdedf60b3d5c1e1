"""``refimpl reproduce``: both experiments, the figure and the files in ``results/``.

Files written (all numbers deterministic given the seed):

``table1.md``, ``table1.json``
    Experiment 1: train/test NLL of nBG and eqBG next to the paper's.
``experiment2.md``, ``experiment2.json``
    Experiment 2: the distinct minima each model's samples relax to.
``figure1.png``
    The paper's Figure 1, panels a--h.
``models/``
    The four trained models (``refimpl.load_model`` reads them).
``data/``
    The MCMC trajectory and the Experiment 2 training set, with the seed.
``run.json``
    Settings, timings and versions.
``.refimpl-reproduce.json``
    The settings, written first: a later run into the same folder with other
    settings is refused (unless ``--overwrite``), one with the same settings
    resumes.
Training checkpoints go to ``checkpoints/`` (named with a hash of the
settings); running the same command again after an interruption resumes
training where it stopped, with bit-identical results.
"""

import dataclasses
import errno
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

from .._version import __version__
from ..io import save_model
from ..files import read_json, save_npz, write_json, write_text
from . import discovery, figure, generalization
from .common import system
from .settings import Settings


# Written into the output folder first: which run the folder belongs to.
RUN_MARKER = ".refimpl-reproduce.json"


def reproduce(out="results", quick=False, seed=0, log=sys.stderr, overwrite=False):
    """Run everything; returns the paths written.

    ``out`` must be a new or empty folder, or one holding results of the same
    settings (the run then resumes from its checkpoints); results of other
    settings are replaced only with ``overwrite=True``. Checked before
    anything is created.
    """
    out = pathlib.Path(out)
    settings = Settings(seed=seed)
    settings = settings.quick() if quick else settings
    run = {"settings": json.loads(json.dumps(dataclasses.asdict(settings))), "quick": quick}
    _check_output_folder(out, run, overwrite)
    write_json(out / RUN_MARKER, run)
    for sub in ("models", "data", "checkpoints"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()

    print(f"refimpl reproduce ({'quick' if quick else 'full'}, seed {seed}) -> {out}/", file=log,
          flush=True)
    experiments = (
        ("experiment1", "Experiment 1: MCMC trajectory, then training nBG and eqBG on its first "
         "half", generalization.run, generalization.table, "table1",
         "# Table 1: negative log-likelihoods"),
        ("experiment2", "Experiment 2: one minimum plus noise; sampling and minimizing",
         discovery.run, discovery.summary, "experiment2", "# Experiment 2: discovered minima"),
    )
    results = []
    for key, banner, run, summarize, stem, heading in experiments:
        print(banner, file=log, flush=True)
        t = time.perf_counter()
        result = run(settings, out / "checkpoints", log=log)
        timings[key] = time.perf_counter() - t
        record, markdown = summarize(result)
        write_text(out / f"{stem}.md", f"{heading}\n\n{markdown}")
        write_json(out / f"{stem}.json", record)
        print(markdown, file=log, flush=True)
        results.append(result)
    exp1, exp2 = results

    potential = system(settings)
    for label, result in (("exp1", exp1), ("exp2", exp2)):
        for name, row in result["models"].items():
            save_model(out / "models" / f"{label}_{name}.npz", row["model"], potential,
                       params=row["params"])
    save_npz(out / "data" / "exp1_trajectory.npz",
                 {"samples": exp1["data"]["samples"], "energies": exp1["data"]["energies"],
                  "seed": np.array(seed), "n_train": np.array(exp1["data"]["n_train"])})
    save_npz(out / "data" / "exp2_training_set.npz",
                 {"samples": exp2["training"]["data"], "state": exp2["training"]["state"],
                  "seed": np.array(seed)})
    t = time.perf_counter()
    figure.draw(out / "figure1.png", exp1, exp2, potential, settings)
    timings["figure"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    write_json(out / "run.json", {
        "settings": dataclasses.asdict(settings), "quick": quick, "timings_seconds": timings,
        "refimpl": __version__, "python": platform.python_version(),
        "machine": platform.machine(), "numpy": np.__version__,
    })
    print(f"done in {timings['total']:.0f} s; results in {out}/", file=log, flush=True)
    return sorted(str(p) for p in out.rglob("*") if p.is_file())


def _check_output_folder(out, run, overwrite):
    """Refuse a file, an unwritable place, or a folder of another run (unless ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the results")
    parent = next((p for p in [out, *out.parents] if p.exists()), pathlib.Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write the results (permission denied)",
                              str(parent))
    if not out.is_dir() or overwrite:
        return
    for name in (RUN_MARKER, "run.json"):  # run.json: results of an older refimpl
        if (out / name).is_file():
            try:
                theirs = read_json(out / name, "results record")
            except ValueError:
                theirs = {}
            if not isinstance(theirs, dict) or any(theirs.get(k) != v for k, v in run.items()):
                raise ValueError(f"{out} holds results of another run ({_describe(theirs)}; "
                                 f"this one is {_describe(run)}{_differences(theirs, run)}); "
                                 "choose another --out, or pass --overwrite to replace them")
            return
    if any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no refimpl results; choose another "
                         "--out, or pass --overwrite to write into it anyway")


def _differences(theirs, run):
    """``"; settings differ in a, b"`` (e.g. after a change of refimpl's settings)."""
    ours = run["settings"]
    other = theirs.get("settings") if isinstance(theirs, dict) else None
    if not isinstance(other, dict) or _describe(theirs) != _describe(run):
        return ""  # quick vs full or another seed: the description says it
    differ = sorted(k for k in set(ours) | set(other) if ours.get(k) != other.get(k))
    return f"; settings differ in {', '.join(differ)}" if differ else ""


def _describe(run):
    settings = run.get("settings") if isinstance(run, dict) else None
    if not isinstance(settings, dict):
        return "unknown settings"
    kind = "quick" if run.get("quick") else "full"
    return f"{kind}, seed {settings.get('seed')}"
