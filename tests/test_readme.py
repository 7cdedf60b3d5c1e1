"""The README's and the tutorial's code examples run as written, and the
README's commands match CI."""

import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, ROOT / "docs" / "tutorial.md", ROOT / "docs" / "verifying-bgflow.md"]
BLOCKS = [(doc.name, block) for doc in DOCUMENTS
          for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)]


def test_readme_starts_with_the_two_set_up_commands():
    lines = README.read_text().splitlines()
    assert lines[0] == "```sh" and lines[3] == "```"
    assert lines[1].endswith("refimpl reproduce")
    assert lines[2].endswith("python -m pytest -q")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "sed -n 2p" in ci  # .ci/run executes the README's second line


@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(BLOCKS)])
def test_documented_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    script = tmp_path / f"example_{index}.py"  # a real file: Numba can cache its functions
    script.write_text(BLOCKS[index][1])
    runpy.run_path(str(script), run_name="__main__")
