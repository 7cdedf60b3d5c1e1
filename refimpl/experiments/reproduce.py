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
Training checkpoints go to ``checkpoints/`` (named with a hash of the
settings); running the same command again after an interruption resumes
training where it stopped, with bit-identical results.
"""

import dataclasses
import pathlib
import platform
import sys
import time

import numpy as np

from .. import __version__
from ..io import save_model
from ..files import save_npz, write_json, write_text
from . import discovery, figure, generalization
from .common import system
from .settings import Settings


def reproduce(out="results", quick=False, seed=0, log=sys.stderr):
    """Run everything; returns the paths written."""
    out = pathlib.Path(out)
    settings = Settings(seed=seed)
    settings = settings.quick() if quick else settings
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
