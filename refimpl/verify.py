"""``refimpl verify GOLDEN.json THEIRS``: check another implementation against golden vectors.

``GOLDEN.json`` is written by ``refimpl vectors`` (``refimpl.vectors``).
``THEIRS`` holds the other implementation's outputs for the same cases:

``.json``
    ``{"cases": {case_id: {quantity: value, ...}, ...}}``; a value is a number
    for a scalar quantity and nested lists of shape ``(K, D)`` otherwise.
    Other top-level keys are ignored.
``.npz``
    one array per value, named ``"<case_id>/<quantity>"`` (shape ``()`` for
    scalars), e.g. ``np.savez(path, **{"rbf_k4_d2/field": g, ...})``.

Quantities are those of the golden file's ``quantities``. Every golden case
must be present (every case of the psi families selected with ``families``,
if given); a quantity is provided either for every case or for none (then
it is reported as not provided, a failure only with ``strict``).
Missing or unknown cases, unknown quantities, wrong shapes and non-finite
or non-numeric values are errors that name the case and the quantity.

``verify`` returns the exit code: 0 if every provided quantity is within its
threshold in every case, 1 if any is not, 2 for a bad or mismatched file.
"""

import json
import sys
import zipfile
from dataclasses import dataclass

import numpy as np

from .vectors import SCHEMA_VERSION


class VectorsFileError(ValueError):
    """A golden or output file that is malformed or does not match the other."""


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise VectorsFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VectorsFileError(f"{what} {path} is not valid JSON: {exc}") from None


def _array(value, where, shape=None):
    """``value`` as a finite float64 array (of ``shape`` if given); errors name ``where``."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nested lists
        raise VectorsFileError(f"{where}: not a rectangular array of numbers") from None
    if arr.dtype.kind not in "iuf":
        raise VectorsFileError(f"{where}: expected numbers, got {_describe(value, arr)}")
    arr = arr.astype(np.float64)
    if shape is not None and arr.shape != tuple(shape):
        want = "() (a single number)" if shape == () else str(tuple(shape))
        raise VectorsFileError(f"{where}: shape {arr.shape}, expected {want}")
    if not np.all(np.isfinite(arr)):
        raise VectorsFileError(f"{where}: contains NaN or infinite values")
    return arr


def _value(value, where):
    """A parameter or input: a float for a number, else a float64 array."""
    arr = _array(value, where)
    return float(arr) if arr.ndim == 0 else arr


def _describe(value, arr):
    if arr.dtype == object or isinstance(value, (dict, str)) or value is None:
        return f"{type(value).__name__} {str(value)[:40]!r}"
    return f"dtype {arr.dtype}"


def _mapping(obj, where):
    if not isinstance(obj, dict):
        raise VectorsFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_golden(path):
    """Read and check a golden file; return it with ``reference`` values as arrays.

    Each case gains ``"shape"`` ``(K, D)``; ``psi.params`` and ``inputs`` are
    converted to arrays, so ``refimpl.vectors.compute_outputs`` takes a case
    (``{"family", "params", "inputs"}`` via ``case_spec``) directly.
    """
    golden = _mapping(_read_json(path, "golden file"), f"golden file {path}")
    version = golden.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VectorsFileError(f"golden file {path}: schema_version {version!r}, this refimpl "
                               f"reads {SCHEMA_VERSION} (is it a file written by refimpl vectors?)")
    for key in ("quantities", "thresholds", "cases"):
        if key not in golden:
            raise VectorsFileError(f"golden file {path}: no {key!r}")
    quantities = _mapping(golden["quantities"], f"golden file {path}: quantities")
    thresholds = _mapping(golden["thresholds"], f"golden file {path}: thresholds")
    for q in quantities:
        _mapping(quantities[q], f"golden file {path}: quantities.{q}")
        t = _mapping(thresholds.get(q), f"golden file {path}: thresholds.{q}")
        for key in ("rtol", "atol"):
            _array(t.get(key), f"golden file {path}: thresholds.{q}.{key}", ())
    cases = _mapping(golden["cases"], f"golden file {path}: cases")
    if not cases:
        raise VectorsFileError(f"golden file {path} has no cases")
    for cid, case in cases.items():
        where = f"golden file {path}: case {cid!r}"
        case = _mapping(case, where)
        k, d = case.get("n_particles"), case.get("dim")
        if not (isinstance(k, int) and isinstance(d, int) and k >= 2 and d >= 1):
            raise VectorsFileError(f"{where}: n_particles and dim must be integers >= 2, >= 1")
        case["shape"] = (k, d)
        ref = _mapping(case.get("reference"), f"{where}: reference")
        for q in quantities:
            if q not in ref:
                raise VectorsFileError(f"{where}: no reference value for {q!r}")
            ref[q] = _array(ref[q], f"{where}: reference.{q}", _shape(quantities[q], k, d))
        psi = _mapping(case.get("psi"), f"{where}: psi")
        psi["params"] = {n: _value(v, f"{where}: psi.params.{n}")
                         for n, v in _mapping(psi.get("params"), f"{where}: psi.params").items()}
        case["inputs"] = {n: _value(v, f"{where}: inputs.{n}")
                          for n, v in _mapping(case.get("inputs"), f"{where}: inputs").items()}
    return golden


def _shape(spec, k, d):
    shapes = {"()": (), "(K, D)": (k, d)}
    if spec.get("shape") not in shapes:
        raise VectorsFileError(f"golden file: unknown shape {spec.get('shape')!r}")
    return shapes[spec["shape"]]


def case_spec(golden, case_id):
    """``{"family", "params", "inputs"}`` of a loaded golden case, for ``compute_outputs``."""
    case = golden["cases"][case_id]
    return {"family": case["psi"]["family"], "params": case["psi"]["params"],
            "inputs": case["inputs"]}


def load_outputs(path, golden):
    """Read another implementation's outputs: ``{case_id: {quantity: float64 array}}``."""
    path = str(path)
    if path.lower().endswith(".json"):
        data = _mapping(_read_json(path, "output file"), f"{path}")
        if "cases" not in data:
            raise VectorsFileError(f"{path}: no 'cases' (expected {{\"cases\": {{case_id: "
                                   f"{{quantity: value}}}}}})")
        raw = {cid: _mapping(v, f"{path}: case {cid!r}")
               for cid, v in _mapping(data["cases"], f"{path}: cases").items()}
    elif path.lower().endswith(".npz"):
        raw = _read_npz(path)
    else:
        raise VectorsFileError(f"{path}: the outputs must be a .json or .npz file")
    quantities, cases = golden["quantities"], golden["cases"]
    for cid in raw:
        if cid not in cases:
            raise VectorsFileError(f"{path}: case {cid!r} is not in the golden file")
    for cid in cases:
        if cid not in raw:
            raise VectorsFileError(f"{path}: case {cid!r} of the golden file is missing")
    out = {}
    for cid, values in raw.items():
        k, d = cases[cid]["shape"]
        out[cid] = {}
        for q, v in values.items():
            if q not in quantities:
                raise VectorsFileError(f"{path}: case {cid!r}: unknown quantity {q!r} "
                                       f"(known: {', '.join(quantities)})")
            out[cid][q] = _array(v, f"{path}: case {cid!r}, quantity {q!r}",
                                 _shape(quantities[q], k, d))
    for q in quantities:
        have = [cid for cid in cases if q in out[cid]]
        if have and len(have) < len(cases):
            missing = next(cid for cid in cases if q not in out[cid])
            raise VectorsFileError(f"{path}: quantity {q!r} is given for {len(have)} of "
                                   f"{len(cases)} cases but missing in case {missing!r}; "
                                   "provide it for every case or for none")
    if not any(out[cid] for cid in out):
        raise VectorsFileError(f"{path}: no quantity provided in any case: nothing to verify")
    return out


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except OSError as exc:
        raise VectorsFileError(f"cannot read output file {path}: {exc}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise VectorsFileError(f"{path} is not a readable .npz of numeric arrays: {exc}") \
            from None
    raw = {}
    for name, arr in arrays.items():
        cid, sep, q = name.rpartition("/")
        if not sep or not cid or not q:
            raise VectorsFileError(f"{path}: array {name!r} is not named '<case_id>/<quantity>'")
        raw.setdefault(cid, {})[q] = arr
    return raw


@dataclass
class Result:
    """The comparison of one quantity over all cases."""

    quantity: str
    rtol: float
    atol: float
    provided: bool
    max_abs: float = 0.0  # max over cases of max |theirs - reference|
    max_rel: float = 0.0  # max over cases of that / max |reference|
    worst_case: str = ""  # the case with the largest deviation / allowed
    worst_ratio: float = -1.0  # below any ratio: the first case is the worst until beaten
    worst_err: float = 0.0  # the deviation and the allowed deviation in the worst case
    worst_allowed: float = 0.0
    failed_cases: int = 0

    @property
    def passed(self):
        return self.provided and self.failed_cases == 0


def compare(golden, outputs):
    """One ``Result`` per golden quantity, in the golden file's order."""
    results = []
    for q in golden["quantities"]:
        t = golden["thresholds"][q]
        res = Result(q, float(t["rtol"]), float(t["atol"]),
                     provided=all(q in outputs[cid] for cid in golden["cases"]))
        if res.provided:
            for cid, case in golden["cases"].items():
                ref = case["reference"][q]
                err = float(np.max(np.abs(outputs[cid][q] - ref)))
                scale = float(np.max(np.abs(ref)))
                allowed = max(res.atol + res.rtol * scale, np.finfo(float).tiny)
                res.max_abs = max(res.max_abs, err)
                res.max_rel = max(res.max_rel, err / scale if scale > 0 else
                                  (np.inf if err > 0 else 0.0))
                res.failed_cases += err > allowed
                if err / allowed > res.worst_ratio:
                    res.worst_case, res.worst_ratio = cid, err / allowed
                    res.worst_err, res.worst_allowed = err, allowed
        results.append(res)
    return results


def format_report(results, n_cases, strict=False):
    """The per-quantity table and a verdict, as text."""
    lines = [f"{'quantity':<16}{'cases':>6}{'max abs dev':>13}{'max rel dev':>13}{'rtol':>8}"
             f"{'atol':>8}  {'worst case':<22}{'dev/allowed':>12}  result"]
    for r in results:
        if not r.provided:
            lines.append(f"{r.quantity:<16}{'-':>6}{'-':>13}{'-':>13}{r.rtol:>8.0e}{r.atol:>8.0e}"
                         f"  {'-':<22}{'-':>12}  not provided" + (" (FAIL: --strict)"
                                                                    if strict else ""))
            continue
        verdict = "PASS" if r.passed else f"FAIL in {r.failed_cases} of {n_cases}"
        lines.append(f"{r.quantity:<16}{n_cases:>6}{r.max_abs:>13.2e}{r.max_rel:>13.2e}"
                     f"{r.rtol:>8.0e}{r.atol:>8.0e}  {r.worst_case:<22}{r.worst_ratio:>12.2e}  "
                     f"{verdict}")
    failed = [r.quantity for r in results if r.provided and not r.passed]
    absent = [r.quantity for r in results if not r.provided]
    passed = len(results) - len(failed) - len(absent)
    lines.append("")
    lines.append("deviation in a case = max |theirs - reference| over entries; rel = that / max "
                 "|reference|; allowed = atol + rtol * max |reference|")
    if failed or (strict and absent):
        lines.append(f"FAIL: {', '.join(failed + (absent if strict else []))}"
                     f" ({passed} of {len(results)} quantities pass)")
        for r in results:
            if r.provided and not r.passed:
                lines.append(f"  {r.quantity}: worst in case {r.worst_case}, deviation "
                             f"{r.worst_err:.3e} > allowed {r.worst_allowed:.3e}")
    else:
        lines.append(f"PASS: {passed} of {len(results)} quantities agree in all {n_cases} cases"
                     + (f"; not provided: {', '.join(absent)}" if absent else ""))
    return "\n".join(lines)


def select_families(golden, families):
    """Keep only the golden cases of the psi ``families`` (names); error if one has none."""
    known = sorted({case["psi"].get("family") for case in golden["cases"].values()})
    for name in families:
        if name not in known:
            raise VectorsFileError(f"the golden file has no cases of psi family {name!r} "
                                   f"(it has {', '.join(map(str, known))})")
    golden["cases"] = {cid: case for cid, case in golden["cases"].items()
                       if case["psi"].get("family") in families}
    return golden


def verify(golden_path, outputs_path, strict=False, families=None, file=None):
    """Compare, print the report to ``file`` (stdout); return the exit code 0, 1 or 2.

    ``families``: verify only the cases of these psi families (the others may
    then be absent from the outputs).
    """
    file = file or sys.stdout
    try:
        golden = load_golden(golden_path)
        n_all = len(golden["cases"])
        if families:
            select_families(golden, families)
        outputs = load_outputs(outputs_path, golden)
    except VectorsFileError as exc:
        print(f"refimpl verify: error: {exc}", file=sys.stderr)
        return 2
    n_cases = len(golden["cases"])
    which = f"{n_cases} of {n_all} cases: {', '.join(families)}" if families else f"{n_cases} cases"
    print(f"refimpl verify: {outputs_path} against golden {golden_path} "
          f"(schema {golden['schema_version']}, {which})\n", file=file)
    results = compare(golden, outputs)
    print(format_report(results, n_cases, strict), file=file)
    ok = all(r.passed or (not r.provided and not strict) for r in results)
    return 0 if ok else 1
