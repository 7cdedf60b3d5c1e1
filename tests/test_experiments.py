"""`refimpl reproduce --quick` end to end, and the experiments' building blocks."""

import importlib.metadata
import json
import pathlib
import re

import numpy as np
import pytest

import refimpl
from refimpl.cli import main
from refimpl.experiments import Settings
from refimpl.experiments import generalization

PROMISED = ["table1.md", "table1.json", "experiment2.md", "experiment2.json", "figure1.png",
            "run.json", "data/exp1_trajectory.npz", "data/exp2_training_set.npz",
            "models/exp1_nBG.npz", "models/exp1_eqBG.npz", "models/exp2_nBG.npz",
            "models/exp2_eqBG.npz"]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Two independent quick runs with the same seed, through the CLI."""
    outs = [tmp_path_factory.mktemp(f"run{i}") for i in range(2)]
    for out in outs:
        assert main(["reproduce", "--quick", "--out", str(out)]) == 0
    return outs


def test_quick_reproduce_writes_every_promised_file(quick_runs):
    out = quick_runs[0]
    for name in PROMISED:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / "table1.json").read_text())
    markdown = (out / "table1.md").read_text()
    for name in ("nBG", "eqBG"):
        row = table[name]
        assert np.isfinite(row["train_nll"]) and np.isfinite(row["test_nll"])
        # the Markdown table shows the JSON's numbers, not stale or swapped ones
        assert (f"| {name} | {row['train_nll']:.2f} | {row['test_nll']:.2f} | "
                f"{row['test_nll'] - row['train_nll']:.2f} |") in markdown
    summary = json.loads((out / "experiment2.json").read_text())
    assert {"nBG", "eqBG", "training_state_energy", "random_start_minima"} <= set(summary)
    lowest = summary["random_start_minima"]["structures"][0]
    assert lowest["is_training_state"]  # the training state is the lowest random-start minimum
    assert lowest["energy"] == summary["training_state_energy"]
    for name in ("nBG", "eqBG"):
        counts = [r["count"] for r in summary[name]["structures"]]
        assert sum(counts) == summary[name]["n_verified_minima"] <= summary[name]["n_samples"]
    run = json.loads((out / "run.json").read_text())
    assert run["quick"] is True and run["settings"]["seed"] == 0


def test_quick_reproduce_is_deterministic_given_the_seed(quick_runs):
    a, b = (json.loads((out / "table1.json").read_text()) for out in quick_runs)
    assert a == b
    a, b = (json.loads((out / "experiment2.json").read_text()) for out in quick_runs)
    assert a == b


def test_saved_models_reload_and_reproduce_the_table(quick_runs):
    out = quick_runs[0]
    table = json.loads((out / "table1.json").read_text())
    data = np.load(out / "data" / "exp1_trajectory.npz")
    train_x = data["samples"][: int(data["n_train"])]
    flow, potential = refimpl.load_model(out / "models" / "exp1_eqBG.npz")
    assert isinstance(potential, refimpl.DoubleWell)
    assert -np.mean(flow.log_prob(train_x)) == pytest.approx(table["eqBG"]["train_nll"],
                                                             abs=1e-12)
    nvp, _ = refimpl.load_model(out / "models" / "exp1_nBG.npz")
    assert -np.mean(nvp.log_prob(nvp.params, train_x)) == pytest.approx(
        table["nBG"]["train_nll"], abs=1e-12)


def test_trajectory_is_mean_free_and_seeded():
    settings = Settings().quick()
    x, energies, acceptance = generalization.trajectory(settings)
    assert x.shape == (settings.mcmc_steps // settings.mcmc_thin, 4, 2)
    assert np.max(np.abs(x.mean(axis=1))) < 1e-12
    assert 0.05 < acceptance < 0.5
    np.testing.assert_array_equal(x, generalization.trajectory(settings)[0])
    np.testing.assert_allclose(energies, refimpl.DoubleWell(4, 2).energy(x), rtol=1e-12)


def test_cli_refuses_a_non_integer_seed_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--seed", "1.5", "--out", str(out)])
    assert info.value.code == 2
    assert "--seed" in capsys.readouterr().err
    assert not out.exists()


def test_version_is_defined_once_in_pyproject():
    root = pathlib.Path(__file__).resolve().parents[1]
    declared = re.search(r'^version = "([^"]+)"$', (root / "pyproject.toml").read_text(),
                         flags=re.M).group(1)
    # a stale install (pyproject changed without pip install -e .) fails here
    assert refimpl.__version__ == declared == importlib.metadata.version("refimpl")
    assignments = [p.relative_to(root) for p in (root / "refimpl").rglob("*.py")
                   if re.search(r"^\s*__version__ =", p.read_text(), flags=re.M)]
    assert assignments == [pathlib.Path("refimpl/_version.py")]


def test_checkpoints_are_tied_to_the_settings(quick_runs):
    from refimpl.experiments.common import settings_tag
    names = sorted(p.name for p in (quick_runs[0] / "checkpoints").iterdir())
    tag = settings_tag(Settings().quick())
    assert len(names) == 4 and all(tag in n for n in names)
    assert settings_tag(Settings()) != tag
