"""Golden files and output files that must not fool ``refimpl verify``.

Golden files are trusted input: an edited one is refused (exit 2, naming the
part that changed) unless ``--allow-edited-golden``; thresholds and schema are
checked either way, so no threshold (negative, infinite, 1e300) makes garbage
pass. Every case asserts the exit code or exception and the words of the
message that name the offending part.
"""

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refimpl.vectors import digest_parts
from refimpl.verify import MAX_THRESHOLD, VectorsFileError, check_implementation, load_golden

from cli_helpers import run_cli, write_json

GOLDEN_SMALL = Path(__file__).parent / "data" / "golden_small.json"


@pytest.fixture(scope="module")
def raw():
    return json.loads(GOLDEN_SMALL.read_text())


@pytest.fixture(scope="module")
def garbage(raw):
    """Outputs that are wrong everywhere: zeros of the right shapes."""
    golden = load_golden(GOLDEN_SMALL)
    out = {}
    for cid, case in golden["cases"].items():
        out[cid] = {q: ({n: np.zeros_like(a).tolist() for n, a in v.items()}
                        if isinstance(v, dict) else np.zeros_like(v).tolist())
                    for q, v in case["reference"].items()}
    return {"cases": out}


def _set(path):
    """An edit setting the entry at ``path`` (keys separated by '/') of the raw golden file."""
    *parents, last = path.split("/")

    def edit(g, value):
        for key in parents:
            g = g[key]
        g[last] = value
    return edit


def _edited(tmp_path, raw, edit):
    """The raw golden file changed by ``edit``, and its path written in ``tmp_path``."""
    bad = copy.deepcopy(raw)
    edit(bad)
    return bad, write_json(tmp_path / "g.json", bad)


THRESHOLD_EDITS = [  # (where, value): never accepted, override or not
    ("thresholds/field/rtol", -1e-10), ("thresholds/field/atol", 0.0),
    ("thresholds/log_prob/rtol", float("inf")), ("thresholds/energy/atol", 1e300),
    ("thresholds/kl_grad/rtol", 1.0), ("thresholds/force/rtol", "1e-10"),
    ("thresholds/ml_grad/atol", None), ("thresholds/divergence", 1e-10),
]


@pytest.mark.parametrize("where, value", THRESHOLD_EDITS, ids=[f"{w}={v}" for w, v in
                                                                THRESHOLD_EDITS])
def test_bad_thresholds_are_refused_even_with_the_override(tmp_path, capsys, raw, garbage,
                                                          where, value):
    bad = copy.deepcopy(raw)
    _set(where)(bad, value)
    text = json.dumps(bad).replace("Infinity", "1e999")  # JSON has no inf: 1e999 parses as inf
    path = tmp_path / "g.json"
    path.write_text(text)
    theirs = write_json(tmp_path / "t.json", garbage)
    for extra in ([], ["--allow-edited-golden"]):
        code, out, err = run_cli(capsys, "verify", path, theirs, *extra)
        assert code == 2 and out == "", (extra, out)
        assert "thresholds." + where.split("/")[1] in err, err
        assert "Traceback" not in err
    if isinstance(value, float) and MAX_THRESHOLD < value < float("inf"):
        assert f"(0, {MAX_THRESHOLD:g}]" in err


EDITS = [  # (label, edit of the raw golden file, the part the message must name)
    ("a reference value", lambda g: g["cases"]["rbf_k4_d2"]["reference"].__setitem__(
        "energy", 0.0), "cases/rbf_k4_d2"),
    ("an input", lambda g: g["cases"]["mlp_close_k3_d3"]["inputs"].__setitem__("t", 0.5),
     "cases/mlp_close_k3_d3"),
    ("a threshold, loosened within bounds", lambda g: _set("thresholds/field/rtol")(g, 1e-3),
     "thresholds"),
    ("the energy", lambda g: g["energy"].__setitem__("b", -3.0), "energy"),
    ("a case removed", lambda g: g["cases"].pop("bgflow_k4_d2"), "cases/bgflow_k4_d2 (removed)"),
    ("a case added", lambda g: g["cases"].__setitem__("extra", copy.deepcopy(
        g["cases"]["rbf_k4_d2"])), "cases/extra (added)"),
    ("the digest removed", lambda g: g.pop("digest"), "digest (missing)"),
    ("the digest edited", lambda g: g["digest"]["parts"].__setitem__("energy", "0" * 64),
     "energy"),
]


@pytest.mark.parametrize("label", [e[0] for e in EDITS])
def test_edited_golden_files_are_refused_naming_the_part(tmp_path, capsys, raw, garbage, label):
    _, edit, part = next(e for e in EDITS if e[0] == label)
    bad, path = _edited(tmp_path, raw, edit)
    theirs = copy.deepcopy(garbage)
    if "extra" in bad["cases"]:
        theirs["cases"]["extra"] = theirs["cases"]["rbf_k4_d2"]
    theirs["cases"] = {cid: v for cid, v in theirs["cases"].items() if cid in bad["cases"]}
    theirs = write_json(tmp_path / "t.json", theirs)
    code, out, err = run_cli(capsys, "verify", path, theirs)
    assert code == 2 and out == ""
    assert "was edited after refimpl vectors wrote it" in err and part in err, err
    assert "--allow-edited-golden" in err
    with pytest.raises(VectorsFileError, match="edited"):
        load_golden(path)
    # with the override the file is used, the report says so, and garbage still fails
    code, out, err = run_cli(capsys, "verify", path, theirs, "--allow-edited-golden")
    assert code == 1, err
    assert "WARNING: golden file edited" in out and part.split(" ")[0] in out


def test_the_override_lets_a_deliberately_loosened_threshold_work(tmp_path, capsys, raw):
    """The override exists for this: a verifier of a float32 model loosens a threshold."""
    loose = copy.deepcopy(raw)
    loose["thresholds"]["field"].update(rtol=1e-5, atol=1e-5)
    path = write_json(tmp_path / "g.json", loose)
    golden = load_golden(path, allow_edited=True)
    assert golden["edited"] == ["thresholds"]

    def float32_field(case):  # stands for a float32 model: the exact field rounded
        exact = golden["cases"][case["id"]]["reference"]["field"]
        return {"field": exact.astype(np.float32).astype(np.float64)}
    assert check_implementation(golden, float32_field).passed
    with pytest.raises(VectorsFileError, match="thresholds"):
        check_implementation(path, float32_field)


def test_the_digest_does_not_stop_a_deliberate_edit_the_threshold_cap_does(tmp_path, capsys,
                                                                            raw, garbage):
    """The digest is unkeyed (README "Errors and guarantees"): an edit with a recomputed
    digest loads as unedited. What bounds it is the cap on thresholds."""
    def loosen(value):
        def edit(g):
            _set("thresholds/field/rtol")(g, value)
            g["digest"]["parts"] = digest_parts(g)
        return edit
    _, path = _edited(tmp_path, raw, loosen(MAX_THRESHOLD))
    assert load_golden(path)["edited"] == []
    _, path = _edited(tmp_path, raw, loosen(10 * MAX_THRESHOLD))
    code, _, err = run_cli(capsys, "verify", path, write_json(tmp_path / "t.json", garbage))
    assert code == 2 and f"thresholds.field.rtol = {10 * MAX_THRESHOLD!r}" in err, err


SCHEMA_EDITS = [  # (label, edit, words) refused even with the override
    ("empty", lambda g: g.clear(), "schema_version None"),
    ("cases not an object", lambda g: g.__setitem__("cases", []), "cases: expected a JSON object"),
    ("unknown shape", lambda g: g["quantities"]["field"].__setitem__("shape", "(K,)"),
     "quantities.field.shape"),
    ("n_particles 4.7", lambda g: g["cases"]["rbf_k4_d2"].__setitem__("n_particles", 4.7),
     "n_particles"),
    ("n_particles True", lambda g: g["cases"]["rbf_k4_d2"].__setitem__("n_particles", True),
     "n_particles"),
    ("reference shape", lambda g: g["cases"]["rbf_k4_d2"]["reference"].__setitem__(
        "field", [[1.0]]), "reference.field"),
    ("reference NaN", lambda g: g["cases"]["rbf_k4_d2"]["reference"].__setitem__(
        "divergence", float("nan")), "reference.divergence"),
    ("gradient names", lambda g: g["cases"]["mlp_k4_d2"]["reference"]["ml_grad"].pop("v0"),
     "v0"),
    ("trainable not a parameter", lambda g: g["cases"]["rbf_k4_d2"]["psi"].__setitem__(
        "trainable", ["nope"]), "psi.trainable"),
    ("kl_potential", lambda g: g["cases"]["rbf_k4_d2"].__setitem__("kl_potential", "gravity"),
     "kl_potential"),
    ("no lennard_jones", lambda g: g.pop("lennard_jones"), "'lennard_jones'"),
    ("schema 1", lambda g: g.__setitem__("schema_version", 1), "schema_version 1"),
]


@pytest.mark.parametrize("label", [e[0] for e in SCHEMA_EDITS])
def test_schema_errors_are_refused_even_with_the_override(tmp_path, capsys, raw, garbage, label):
    _, edit, words = next(e for e in SCHEMA_EDITS if e[0] == label)
    _, path = _edited(tmp_path, raw, edit)
    code, out, err = run_cli(capsys, "verify", path, write_json(tmp_path / "t.json", garbage),
                             "--allow-edited-golden")
    assert code == 2 and words in err, err
    assert "Traceback" not in err


def test_deeply_nested_json_is_refused_not_a_recursion_error(tmp_path, capsys, garbage):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    ok = write_json(tmp_path / "t.json", garbage)
    for golden, theirs in ((deep, ok), (GOLDEN_SMALL, deep)):
        code, out, err = run_cli(capsys, "verify", golden, theirs)
        assert code == 2 and "nested" in err and str(deep) in err, err


def _npz_with_member(path, name, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name + ".npy", payload)
    return path


def test_npz_claiming_a_huge_array_is_refused_before_allocating(tmp_path, capsys):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**12,)})
    path = _npz_with_member(tmp_path / "t.npz", "rbf_k4_d2/field", buf.getvalue())
    code, out, err = run_cli(capsys, "verify", GOLDEN_SMALL, path)
    assert code == 2 and "rbf_k4_d2/field" in err and "claims" in err, err


@pytest.mark.parametrize("payload, words", [
    (np.array(["a"]), "dtype"),  # strings are not numbers
    (np.zeros((4, 2), dtype=np.complex128), "dtype"),
])
def test_npz_with_non_numeric_arrays_is_refused(tmp_path, capsys, payload, words):
    path = tmp_path / "t.npz"
    np.savez(path, **{"rbf_k4_d2/field": payload})
    code, _, err = run_cli(capsys, "verify", GOLDEN_SMALL, path)
    assert code == 2 and "rbf_k4_d2/field" in err and words in err, err


@pytest.mark.parametrize("name, words", [
    ("rbf_k4_d2/ml_grad/weights/extra", "is not named"),
    ("rbf_k4_d2//field", "is not named"),
])
def test_npz_member_names_are_checked(tmp_path, capsys, name, words):
    path = tmp_path / "t.npz"
    np.savez(path, **{name: np.zeros(3)})
    code, _, err = run_cli(capsys, "verify", GOLDEN_SMALL, path)
    assert code == 2 and words in err, err


@pytest.mark.parametrize("value, words", [
    ({"weights": [[0.0]]}, "parameter 'weights'"),
    ([1.0, 2.0], "a gradient is an object"),
    ({"weights": "x"}, "expected numbers"),
    ({"weights": np.zeros((6, 3)).tolist(), "nope": 1.0}, "unknown parameter 'nope'"),
])
def test_malformed_gradients_are_refused(tmp_path, capsys, garbage, value, words):
    bad = copy.deepcopy(garbage)
    bad["cases"]["rbf_k4_d2"]["ml_grad"] = value
    code, _, err = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 2 and "'rbf_k4_d2'" in err and "'ml_grad'" in err and words in err, err


def test_garbage_fails_every_quantity(tmp_path, capsys, garbage):
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", garbage))
    assert code == 1
    assert "FAIL: " in out and "(0 of 15 quantities pass)" in out
