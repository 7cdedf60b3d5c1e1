"""The README's results are what the code produces now.

One `refimpl reproduce` at default settings (about a minute on 2 cores) is
rendered by ``scripts/update_readme.py`` and compared with the text between
the README's ``generated`` markers and with ``docs/figure1.png``. When this
fails after a change in arithmetic, run ``python scripts/update_readme.py``
and commit what it writes.
"""

import difflib
import importlib.util
import io
import pathlib

import numpy as np
import pytest

from refimpl.experiments import reproduce

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("update_readme",
                                               ROOT / "scripts" / "update_readme.py")
update_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_readme)

FIX = "README.md is stale: run `python scripts/update_readme.py` and commit the result"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default_run")
    reproduce(out=out, log=io.StringIO())
    return out


def test_readme_numbers_are_those_of_the_default_run(default_run):
    expected = update_readme.render(update_readme.load_run(default_run))
    shown = update_readme.generated_blocks(update_readme.README.read_text())
    assert sorted(shown) == sorted(expected), FIX
    for name, text in expected.items():
        diff = "\n".join(difflib.unified_diff(shown[name].splitlines(), text.splitlines(),
                                              "README.md", "default run", lineterm=""))
        assert shown[name] == text.rstrip("\n"), f"{FIX}\n{diff}"


def test_readme_figure_is_that_of_the_default_run(default_run):
    from PIL import Image

    shown = Image.open(update_readme.FIGURE)
    produced = Image.open(default_run / "figure1.png")
    # Agg's pixels are deterministic for one matplotlib version, not across versions.
    if shown.info.get("Software") != produced.info.get("Software"):
        pytest.skip(f"docs/figure1.png was drawn by {shown.info.get('Software')}, this is "
                    f"{produced.info.get('Software')}")
    assert shown.size == produced.size, FIX
    assert np.array_equal(np.asarray(shown), np.asarray(produced)), FIX


def test_splice_rewrites_only_between_markers_and_needs_every_block():
    text = ("keep 1.00\n<!-- generated: a -->\nold 2.00\n<!-- end generated: a -->\n"
            "keep 3.00\n<!-- generated: b -->\n<!-- end generated: b -->\n")
    new = update_readme.splice(text, {"a": "new 4.00", "b": "x\ny\n"})
    assert new == ("keep 1.00\n<!-- generated: a -->\nnew 4.00\n<!-- end generated: a -->\n"
                   "keep 3.00\n<!-- generated: b -->\nx\ny\n<!-- end generated: b -->\n")
    assert update_readme.generated_blocks(new) == {"a": "new 4.00", "b": "x\ny"}
    with pytest.raises(ValueError, match="markers"):
        update_readme.splice(text, {"a": "new"})
    with pytest.raises(ValueError, match="markers"):
        update_readme.splice(text, {"a": "1", "b": "2", "c": "3"})


def test_performance_verdict_follows_the_numbers():
    """The sentence naming met and missed targets is chosen by the measured
    figures, so it cannot contradict the table (synthetic measurements)."""
    bench = update_readme.json.loads(update_readme.BENCHMARKS.read_text())
    fast = update_readme.json.loads(update_readme.json.dumps(bench))
    for name in ("DW4", "LJ13", "LJ55"):
        fast["rows"][name]["samples_per_s"] = 2.0 * update_readme.TARGETS[name]
    fast["rows"]["train_step"]["mean_s"] = 0.5 * update_readme.TARGETS["train_step_s"]
    fast["rows"]["cold_start"]["empty_cache_s"] = 0.5 * update_readme.TARGETS["cold_start_s"]
    fast["rows"]["single_call_s"] = 0.5 * update_readme.TARGETS["single_call_s"]
    text = update_readme._performance(fast)
    assert "not met: none." in text and "240 000 samples/s" in text
    slow = update_readme.json.loads(update_readme.json.dumps(fast))
    slow["rows"]["LJ55"]["samples_per_s"] = 0.5 * update_readme.TARGETS["LJ55"]
    assert "not met: LJ55." in update_readme._performance(slow)
