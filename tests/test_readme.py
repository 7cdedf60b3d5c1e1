"""The README's code examples run as written, and its commands match CI."""

import pathlib
import re
import runpy

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_set_up_commands():
    lines = README.read_text().splitlines()
    assert lines[0] == "```sh" and lines[3] == "```"
    assert lines[1].endswith("refimpl reproduce")
    assert lines[2].endswith("python -m pytest -q")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "sed -n 2p" in ci  # .ci/run executes the README's second line


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    script = tmp_path / f"readme_example_{index}.py"  # a real file: Numba can cache its functions
    script.write_text(BLOCKS[index])
    runpy.run_path(str(script), run_name="__main__")
