"""Check another implementation against golden vectors (``refimpl.vectors``).

Two entry points share one comparison path (``compare``) and one report:

``check_implementation(golden, implementation)``
    in-process: ``implementation(case) -> {quantity: value}`` is called once
    per golden case and a ``Report`` comes back, so a PyTorch or JAX test is
    ``assert report.passed, report``.
``refimpl verify GOLDEN.json THEIRS`` (``verify``)
    from files; ``THEIRS`` holds the outputs for the same cases:

    ``.json``
        ``{"cases": {case_id: {quantity: value, ...}, ...}}``; a value is a
        number for a scalar quantity, nested lists of shape ``(K, D)``, and
        for a gradient an object ``{name: value}`` (one entry per name in the
        case's ``psi.trainable``). Other top-level keys are ignored.
    ``.npz``
        one array per value, named ``"<case_id>/<quantity>"`` (shape ``()``
        for scalars) or ``"<case_id>/<quantity>/<name>"`` for a gradient.

Quantities are those of the golden file's ``quantities``. Every golden case
must be present (every case of the psi families selected with ``families``,
if given); a quantity is provided either for every case or for none (then
it is reported as not provided, a failure only with ``strict``).
Missing or unknown cases, unknown quantities, wrong shapes and non-finite
or non-numeric values are errors that name the case and the quantity. A
failing quantity is checked against the known convention errors
(``refimpl.diagnose``) and the report names the one that fits.

Golden files are trusted input: ``refimpl vectors`` writes a digest of every
part, and a golden file whose digest no longer matches is refused, naming
the part, unless ``allow_edited=True`` (``--allow-edited-golden``). The digest
is an unkeyed SHA-256: it detects accidental or careless edits, not a
deliberate edit with a recomputed digest. The schema and the thresholds
(positive, finite, at most ``MAX_THRESHOLD``) are checked either way; that cap
is what bounds a deliberate edit.

``verify`` returns the exit code: 0 if every provided quantity is within its
threshold in every case, 1 if any is not, 2 for a bad, edited or mismatched
file.
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .files import NUMERIC_KINDS, FileFormatError, read_json, read_npz
from .vectors import SCHEMA_VERSION, digest_parts, flatten

# A threshold above this would pass outputs that are wrong by more than 1%:
# no quantity here is verified at that level, so such a file is refused.
MAX_THRESHOLD = 1e-2
SHAPES = ("()", "(K, D)", "params")


class VectorsFileError(ValueError):
    """A golden or output file that is malformed or does not match the other."""


def _read_json(path, what):
    """A JSON file through ``refimpl.files.read_json`` (size and depth bounded)."""
    try:
        return read_json(path, what)
    except OSError as exc:
        raise VectorsFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except FileFormatError as exc:
        raise VectorsFileError(str(exc)) from None


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


def _quantity(value, where, expected):
    """One quantity's value as an array, or ``{name: array}`` for a gradient."""
    if not isinstance(expected, dict):
        return _array(value, where, expected)
    if not isinstance(value, dict):
        raise VectorsFileError(f"{where}: a gradient is an object {{name: value}} with the "
                               f"names {', '.join(expected)}; got {type(value).__name__}")
    for name in value:
        if name not in expected:
            raise VectorsFileError(f"{where}: unknown parameter {name!r} (the case's "
                                   f"psi.trainable: {', '.join(expected)})")
    missing = [name for name in expected if name not in value]
    if missing:
        raise VectorsFileError(f"{where}: no gradient for parameter(s) {', '.join(missing)}")
    return {name: _array(value[name], f"{where}, parameter {name!r}", shape)
            for name, shape in expected.items()}


def _check_thresholds(golden, where):
    thresholds = _mapping(golden["thresholds"], f"{where}: thresholds")
    for q in golden["quantities"]:
        t = _mapping(thresholds.get(q), f"{where}: thresholds.{q}")
        for key in ("rtol", "atol"):
            value = float(_array(t.get(key), f"{where}: thresholds.{q}.{key}", ()))
            if not 0.0 < value <= MAX_THRESHOLD:
                raise VectorsFileError(
                    f"{where}: thresholds.{q}.{key} = {value!r} is not in (0, {MAX_THRESHOLD:g}]"
                    " (a threshold must be positive, and one above 1% would pass wrong "
                    "outputs)")


def _check_digest(digest, now, where, allow_edited):
    """The parts whose digest no longer matches the stored ``digest`` (``now``: the
    file's ``digest_parts``); raise unless ``allow_edited``."""
    if not isinstance(digest, dict) or not isinstance(digest.get("parts"), dict):
        changed = ["digest (missing)"]
    else:
        stored = digest["parts"]
        changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        changed = [k if k in stored and k in now else f"{k} ({'added' if k in now else 'removed'})"
                   for k in changed]
    if changed and not allow_edited:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5
                                         else "")
        raise VectorsFileError(f"{where} was edited after refimpl vectors wrote it: {shown} "
                               "no longer match(es) its digest. Regenerate it with refimpl "
                               "vectors, or pass --allow-edited-golden (allow_edited=True) to "
                               "use it anyway")
    return changed


def load_golden(path, allow_edited=False):
    """Read and check a golden file; return it with values as arrays.

    Each case gains ``"shape"`` ``(K, D)``; ``psi.params``, ``inputs`` and
    ``reference`` are converted to arrays (``{name: array}`` for gradients),
    so ``refimpl.vectors.compute_outputs`` takes ``case_spec(golden, case_id)``
    directly. ``golden["edited"]`` lists the parts changed since ``refimpl
    vectors`` wrote the file (only non-empty with ``allow_edited``).
    """
    where = f"golden file {path}"
    golden = _mapping(_read_json(path, "golden file"), where)
    version = golden.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VectorsFileError(f"{where}: schema_version {version!r}, this refimpl reads "
                               f"{SCHEMA_VERSION} (is it a file written by refimpl vectors? "
                               "Regenerate it with this version's refimpl vectors)")
    for key in ("quantities", "thresholds", "cases", "energy", "lennard_jones"):
        if key not in golden:
            raise VectorsFileError(f"{where}: no {key!r}")
    cases = _mapping(golden["cases"], f"{where}: cases")
    if not cases:
        raise VectorsFileError(f"{where} has no cases")
    digest = (golden.get("digest"), digest_parts(golden))  # of the file as parsed
    quantities = _mapping(golden["quantities"], f"{where}: quantities")
    for q, spec in quantities.items():
        if _mapping(spec, f"{where}: quantities.{q}").get("shape") not in SHAPES:
            raise VectorsFileError(f"{where}: quantities.{q}.shape is "
                                   f"{spec.get('shape')!r}, not one of {', '.join(SHAPES)}")
    _check_thresholds(golden, where)
    for cid, case in cases.items():
        _load_case(cid, _mapping(case, f"{where}: case {cid!r}"), quantities, golden,
                   f"{where}: case {cid!r}")
    golden["edited"] = _check_digest(*digest, where, allow_edited)  # after the schema checks
    return golden


def _load_case(cid, case, quantities, golden, where):
    k, d = case.get("n_particles"), case.get("dim")
    if not (type(k) is int and type(d) is int and k >= 2 and d >= 1):
        raise VectorsFileError(f"{where}: n_particles and dim must be integers >= 2, >= 1")
    case["shape"] = (k, d)
    psi = _mapping(case.get("psi"), f"{where}: psi")
    psi["params"] = {n: _value(v, f"{where}: psi.params.{n}")
                     for n, v in _mapping(psi.get("params"), f"{where}: psi.params").items()}
    trainable = psi.get("trainable")
    if not isinstance(trainable, list) or not all(n in psi["params"] for n in trainable):
        raise VectorsFileError(f"{where}: psi.trainable must list names of psi.params")
    case["inputs"] = {n: _value(v, f"{where}: inputs.{n}")
                      for n, v in _mapping(case.get("inputs"), f"{where}: inputs").items()}
    kl = case.get("kl_potential")
    if kl not in ("energy", "lennard_jones"):
        raise VectorsFileError(f"{where}: kl_potential must be 'energy' or 'lennard_jones'")
    ref = _mapping(case.get("reference"), f"{where}: reference")
    for q in quantities:
        if q not in ref:
            raise VectorsFileError(f"{where}: no reference value for {q!r}")
        ref[q] = _quantity(ref[q], f"{where}: reference.{q}", expected_shape(golden, case, q))


def expected_shape(golden, case, quantity):
    """The shape of ``quantity`` in a loaded case; ``{name: shape}`` for a gradient."""
    spec = golden["quantities"][quantity]["shape"]
    if spec == "params":
        params = case["psi"]["params"]
        return {n: np.shape(params[n]) for n in case["psi"]["trainable"]}
    return {"()": (), "(K, D)": case["shape"]}[spec]


def case_spec(golden, case_id):
    """``{"family", "params", "inputs", "kl_potential"}`` of a loaded golden case, for
    ``refimpl.vectors.compute_outputs``."""
    case = golden["cases"][case_id]
    return {"family": case["psi"]["family"], "params": case["psi"]["params"],
            "inputs": case["inputs"], "kl_potential": case["kl_potential"]}


def case_view(golden, case_id):
    """What ``check_implementation`` passes to an implementation: everything a case
    defines except its reference values (arrays are copies).

    Keys: ``id``, ``description``, ``n_particles``, ``dim``, ``family``,
    ``params`` (the formula's parameters), ``trainable`` (names the gradients
    are reported for), ``inputs`` (``x``, ``t``, ``z``, ``t0``, ``t1``,
    ``x_batch``, ``z_batch``), ``energy`` and ``lennard_jones`` (the
    potentials' parameters) and ``kl_potential`` (the one in the KL loss).
    """
    case = golden["cases"][case_id]
    copy = lambda v: v.copy() if isinstance(v, np.ndarray) else v  # noqa: E731
    return {"id": case_id, "description": case.get("description", ""),
            "n_particles": case["shape"][0], "dim": case["shape"][1],
            "family": case["psi"]["family"],
            "params": {n: copy(v) for n, v in case["psi"]["params"].items()},
            "trainable": list(case["psi"]["trainable"]),
            "inputs": {n: copy(v) for n, v in case["inputs"].items()},
            "energy": dict(golden["energy"]), "lennard_jones": dict(golden["lennard_jones"]),
            "kl_potential": case["kl_potential"]}


def check_outputs(raw, golden, source):
    """Validate raw outputs ``{case_id: {quantity: value}}`` against the golden cases.

    Returns them as float64 arrays (``{name: array}`` for gradients); errors
    name ``source``, the case and the quantity.
    """
    quantities, cases = golden["quantities"], golden["cases"]
    for cid in raw:
        if cid not in cases:
            raise VectorsFileError(f"{source}: case {cid!r} is not in the golden file")
    for cid in cases:
        if cid not in raw:
            raise VectorsFileError(f"{source}: case {cid!r} of the golden file is missing")
    out = {}
    for cid, values in raw.items():
        values = _mapping(values, f"{source}: case {cid!r}")
        out[cid] = {}
        for q, v in values.items():
            if q not in quantities:
                raise VectorsFileError(f"{source}: case {cid!r}: unknown quantity {q!r} "
                                       f"(known: {', '.join(quantities)})")
            out[cid][q] = _quantity(v, f"{source}: case {cid!r}, quantity {q!r}",
                                    expected_shape(golden, cases[cid], q))
    for q in quantities:
        have = [cid for cid in cases if q in out[cid]]
        if have and len(have) < len(cases):
            missing = next(cid for cid in cases if q not in out[cid])
            raise VectorsFileError(f"{source}: quantity {q!r} is given for {len(have)} of "
                                   f"{len(cases)} cases but missing in case {missing!r}; "
                                   "provide it for every case or for none")
    if not any(out[cid] for cid in out):
        raise VectorsFileError(f"{source}: no quantity provided in any case: nothing to verify")
    return out


def load_outputs(path, golden):
    """Read another implementation's outputs: ``{case_id: {quantity: value}}``."""
    path = str(path)
    if path.lower().endswith(".json"):
        data = _mapping(_read_json(path, "output file"), f"{path}")
        if "cases" not in data:
            raise VectorsFileError(f"{path}: no 'cases' (expected {{\"cases\": {{case_id: "
                                   f"{{quantity: value}}}}}})")
        raw = _mapping(data["cases"], f"{path}: cases")
    elif path.lower().endswith(".npz"):
        raw = _read_npz(path)
    else:
        raise VectorsFileError(f"{path}: the outputs must be a .json or .npz file")
    return check_outputs(raw, golden, path)


def _read_npz(path):
    """Numeric arrays through ``refimpl.files.read_npz`` (headers checked, no pickles);
    NaNs are reported later, naming the case and quantity."""
    try:
        arrays = read_npz(path, "file of outputs", kinds=NUMERIC_KINDS, finite=False)
    except OSError as exc:
        raise VectorsFileError(f"cannot read output file {path}: {exc.strerror or exc}") \
            from None
    except FileFormatError as exc:
        raise VectorsFileError(str(exc)) from None
    raw = {}
    for name, arr in arrays.items():
        parts = name.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise VectorsFileError(f"{path}: array {name!r} is not named '<case_id>/<quantity>' "
                                   "or '<case_id>/<quantity>/<parameter>'")
        values = raw.setdefault(parts[0], {})
        if len(parts) == 3:
            values.setdefault(parts[1], {})[parts[2]] = arr
        else:
            values[parts[1]] = arr
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
    worst_part: str = ""  # for a gradient: the parameter with the largest deviation there
    failed_cases: int = 0
    failed: list = field(default_factory=list)  # the ids of the failing cases
    diagnoses: list = field(default_factory=list)  # known convention errors that fit

    @property
    def passed(self):
        return self.provided and self.failed_cases == 0


def allowed_deviation(rtol, atol, reference):
    """``atol + rtol * max|reference|`` (at least the smallest normal float)."""
    scale = float(np.max(np.abs(flatten(reference)), initial=0.0))
    return max(atol + rtol * scale, np.finfo(float).tiny)


def deviation(theirs, reference):
    """``max |theirs - reference|`` over all entries (of all named arrays)."""
    return float(np.max(np.abs(flatten(theirs) - flatten(reference)), initial=0.0))


def compare(golden, outputs):
    """One ``Result`` per golden quantity, in the golden file's order."""
    results = []
    for q in golden["quantities"]:
        t = golden["thresholds"][q]
        res = Result(q, float(t["rtol"]), float(t["atol"]),
                     provided=all(q in outputs[cid] for cid in golden["cases"]))
        if res.provided:
            for cid, case in golden["cases"].items():
                ref, theirs = case["reference"][q], outputs[cid][q]
                err = deviation(theirs, ref)
                scale = float(np.max(np.abs(flatten(ref))))
                allowed = allowed_deviation(res.rtol, res.atol, ref)
                res.max_abs = max(res.max_abs, err)
                res.max_rel = max(res.max_rel, err / scale if scale > 0 else
                                  (np.inf if err > 0 else 0.0))
                if err > allowed:
                    res.failed_cases += 1
                    res.failed.append(cid)
                if err / allowed > res.worst_ratio:
                    res.worst_case, res.worst_ratio = cid, err / allowed
                    res.worst_err, res.worst_allowed = err, allowed
                    res.worst_part = (max(ref, key=lambda n: deviation(theirs[n], ref[n]))
                                      if isinstance(ref, dict) else "")
        results.append(res)
    return results


@dataclass(repr=False)
class Report:
    """The outcome of a verification; ``str(report)`` is the readable table.

    ``passed``: every provided quantity agrees in every case (and, with
    ``strict``, every quantity is provided). ``results``: one ``Result`` per
    quantity (deviations, worst case, diagnoses). ``worst``: the ``Result``
    whose worst case is furthest outside (or least inside) its threshold.
    """

    results: list
    n_cases: int
    strict: bool = False
    header: str = ""

    @property
    def passed(self):
        return all(r.passed or (not r.provided and not self.strict) for r in self.results)

    @property
    def failed(self):
        """Names of the quantities that fail (not provided ones count with ``strict``)."""
        return [r.quantity for r in self.results
                if (r.provided and not r.passed) or (not r.provided and self.strict)]

    @property
    def worst(self):
        provided = [r for r in self.results if r.provided]
        return max(provided, key=lambda r: r.worst_ratio) if provided else None

    def __getitem__(self, quantity):
        return next(r for r in self.results if r.quantity == quantity)

    def __str__(self):
        body = format_report(self.results, self.n_cases, self.strict)
        return f"{self.header}\n\n{body}" if self.header else body

    __repr__ = __str__  # pytest shows an assertion message's repr: the table, not the fields


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
                part = f" (parameter {r.worst_part!r})" if r.worst_part else ""
                lines.append(f"  {r.quantity}: worst in case {r.worst_case}{part}, deviation "
                             f"{r.worst_err:.3e} > allowed {r.worst_allowed:.3e}")
                lines.extend(f"    likely cause: {d}" for d in r.diagnoses)
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


def _report(golden, outputs, strict, header):
    """The one comparison path of ``verify`` and ``check_implementation``."""
    from .diagnose import diagnose

    results = compare(golden, outputs)
    for r in results:
        if r.provided and not r.passed:
            r.diagnoses = diagnose(golden, outputs, r)
    if golden.get("edited"):
        header += ("\nWARNING: golden file edited since refimpl vectors wrote it (allowed): "
                   + ", ".join(golden["edited"]))
    return Report(results, len(golden["cases"]), strict, header)


def _golden(golden, allow_edited, families):
    if isinstance(golden, (str, os.PathLike)):
        golden = load_golden(golden, allow_edited)
    elif not (isinstance(golden, dict) and "edited" in golden):
        raise TypeError("golden must be a path or a golden file loaded with load_golden")
    n_all = len(golden["cases"])
    if families:
        golden = select_families(dict(golden), families)
    n_cases = len(golden["cases"])
    which = f"{n_cases} of {n_all} cases: {', '.join(families)}" if families else f"{n_cases} cases"
    return golden, f"schema {golden['schema_version']}, {which}"


def check_implementation(golden, implementation, strict=False, families=None,
                         allow_edited=False):
    """Verify ``implementation`` in-process against golden vectors; returns a ``Report``.

    ``golden`` is a path to a file written by ``refimpl vectors`` (or its
    ``load_golden``); ``implementation(case)`` gets ``case_view`` of each
    case (a dict: ``params``, ``inputs``, ...; no reference values) and
    returns ``{quantity: value}``: numbers or arrays, and ``{name: array}``
    for ``ml_grad``/``kl_grad``. What it leaves out is "not provided" (a
    failure with ``strict``); it must leave out the same quantities in
    every case. Bad outputs raise ``VectorsFileError`` naming the case and
    quantity. Use::

        report = check_implementation("golden.json", my_outputs)
        assert report.passed, report
    """
    golden, which = _golden(golden, allow_edited, families)
    raw = {}
    for cid in golden["cases"]:
        values = implementation(case_view(golden, cid))
        if not isinstance(values, dict):
            raise TypeError(f"implementation(case) must return a dict {{quantity: value}}; for "
                            f"case {cid!r} it returned {type(values).__name__}")
        raw[cid] = {q: _plain(v) for q, v in values.items()}
    name = getattr(implementation, "__qualname__", type(implementation).__name__)
    outputs = check_outputs(raw, golden, f"implementation {name}")
    return _report(golden, outputs, strict, f"refimpl verify: {name} ({which})")


def _plain(value):
    """Tensors and the like as NumPy: anything with ``numpy()`` or ``__array__``."""
    if isinstance(value, dict):
        return {n: _plain(v) for n, v in value.items()}
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            return value.numpy()
        except (TypeError, ValueError, AttributeError):
            pass
    return value


def verify(golden_path, outputs_path, strict=False, families=None, file=None,
           allow_edited=False):
    """Compare, print the report to ``file`` (stdout); return the exit code 0, 1 or 2.

    ``families``: verify only the cases of these psi families (the others may
    then be absent from the outputs).
    """
    file = file or sys.stdout
    try:
        golden, which = _golden(golden_path, allow_edited, families)
        outputs = load_outputs(outputs_path, golden)
    except VectorsFileError as exc:
        print(f"refimpl verify: error: {exc}", file=sys.stderr)
        return 2
    report = _report(golden, outputs, strict,
                     f"refimpl verify: {outputs_path} against golden {golden_path} ({which})")
    print(report, file=file)
    return 0 if report.passed else 1
