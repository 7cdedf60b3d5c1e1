"""Golden test vectors for checking another implementation against refimpl.

``refimpl vectors --out FILE.json [--small]`` writes a language-neutral JSON
file of *cases*. Each case names a psi family and its parameters **as they
appear in the family's formula** (not refimpl's internal ``theta`` layout),
the inputs, and refimpl's reference outputs with an estimate of their error.
The file documents itself (``conventions``, ``quantities``, ``psi_families``,
``thresholds``, ``reference_accuracy``); ``refimpl verify`` (``refimpl.verify``)
compares another implementation's outputs with it.

Every psi family registered in ``refimpl.families.FAMILIES`` gets the same
set of cases (``SMALL`` or ``FULL`` geometries); a new family needs only its
entry there.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from . import __version__
from .families import FAMILIES
from .flow import EquivariantFlow, divergence, vector_field
from .potentials import DoubleWell
from .prior import MeanFreeNormal, remove_mean

SCHEMA_VERSION = 1
SEED = 20191106  # fixed: the same command writes byte-identical files
# Reference flow solves: 100x tighter than the 1e-10 asked of a reference, yet
# well above rounding (~1e-15 per step): measured error ~1e-13..1e-11.
REFERENCE_TOL = 1e-12
# The accuracy check re-solves at this tolerance; DOPRI5's error falls ~10x per
# decade of tolerance, so |reference - check| measures the reference's error.
CHECK_TOL = 1e-13
# Also written: how far refimpl's own solver lands at these (typical) tolerances.
SOLVER_SENSITIVITY_TOLS = (1e-8, 1e-10)
# Recommended to other implementations: refimpl's own solve at 1e-10 lands ~1e-9
# from the reference, 1e3 inside the 1e-6 thresholds of the solved quantities.
RECOMMENDED_TOL = 1e-10
MAX_STEPS = 1_000_000  # never reached: a 1e-13 solve of these flows takes < 1000 steps
# Distance of the near-coincident pair: exposes regularized distances
# sqrt(r^2 + eps) and unit vectors (x_i - x_j) / r that are fine at r ~ 1.
NEAR_DISTANCE = 1e-4
# Every example psi is rescaled to max |psi| = PSI_STRENGTH / K on the grid below:
# relative particle speeds stay O(1), log-determinants O(1), nothing blows up.
PSI_STRENGTH = 0.5
STRENGTH_GRID_R = np.linspace(0.0, 8.0, 161)
STRENGTH_GRID_T = 9  # time points on [t0, t1]
# The accuracy of direct quantities is measured against np.longdouble where that is
# wider than float64 (x86 80-bit extended: eps 1.1e-19).
EXTENDED_PRECISION = np.finfo(np.longdouble).eps < 1e-18
X_SPREAD = 1.5  # std of the x inputs: pair distances ~2-6, where the double well lives
ERROR_DIGITS = 2  # error estimates are estimates: two significant digits
ENERGY = {"potential": "DoubleWell", "a": 0.0, "b": -4.0, "c": 0.9, "d0": 4.0,
          "pairs": "ordered", "temperature": 1.0}

QUANTITIES = {  # name -> (shape, inputs, meaning)
    "field": ("(K, D)", ["x", "t"], "g(x, t)"),
    "divergence": ("()", ["x", "t"], "div g(x, t), diagonal excluded"),
    "forward_x": ("(K, D)", ["z", "t0", "t1"], "x(t1) of the flow started at x(t0) = z"),
    "forward_logdet": ("()", ["z", "t0", "t1"], "log|det dx(t1)/dz| = -l(t1)"),
    "inverse_z": ("(K, D)", ["x", "t0", "t1"], "z = x(t0) of the flow ending at x(t1) = x"),
    "inverse_logdet": ("()", ["x", "t0", "t1"], "log|det dz/dx| = -l(t0)"),
    "log_prob": ("()", ["x", "t0", "t1"], "log q_X(x) = log q_Z(inverse_z) + inverse_logdet"),
    "energy": ("()", ["x"], "DoubleWell reduced energy u(x) / T, ordered pairs"),
    "force": ("(K, D)", ["x"], "-d energy / dx"),
}
FLOW_QUANTITIES = ("forward_x", "forward_logdet", "inverse_z", "inverse_logdet", "log_prob")

# Pass/fail tolerances of ``refimpl verify``, by how a quantity is computed.
THRESHOLD_REASONS = {
    "direct": "A direct float64 evaluation. The reference is within ~1e-14 relative of the "
              "exact value (reference_accuracy); another float64 implementation differs by "
              "summation order and libm ulps, ~K eps max|term| ~ 1e-14, so 1e-10 leaves a "
              "margin of 1e4. Formula errors are far larger: a j = i term, a missing factor D, "
              "a sign, unordered pairs, a regularized distance sqrt(r^2 + eps) at the "
              "near-coincident pair.",
    "solved": "The result of an adaptive ODE solve. Another solver takes other steps, so "
              "agreement is limited by its tolerance, not by rounding. The reference is within "
              "~1e-11 of the exact flow; refimpl's own DOPRI5 lands within ~2e-7 of it at "
              "rtol = atol = 1e-8 and ~1e-9 at 1e-10 (solver_sensitivity): run yours at 1e-10. "
              "Errors of convention are >= 1e-2: the log-det sign, the prior constant "
              "((K-1) D / 2) log(2 pi) >= 1.8, the time interval.",
}
DIRECT_TOL = 1e-10  # rtol = atol for "direct" quantities
SOLVED_TOL = 1e-6  # rtol = atol for "solved" quantities
THRESHOLDS = {q: {"rtol": SOLVED_TOL if q in FLOW_QUANTITIES else DIRECT_TOL,
                  "atol": SOLVED_TOL if q in FLOW_QUANTITIES else DIRECT_TOL,
                  "basis": "solved" if q in FLOW_QUANTITIES else "direct"} for q in QUANTITIES}
COMPARISON = ("For each case and quantity: err = max over entries |theirs - reference|, "
              "scale = max over entries |reference|; the quantity passes in the case iff "
              "err <= atol + rtol * scale, and passes iff it passes in every case. "
              "'rel' in reports is err / scale.")

CONVENTIONS = {
    "numbers": "IEEE float64 written with round-trip precision (shortest repr, <= 17 "
               "significant digits); read them with a correctly rounding parser.",
    "configurations": "x and z are K x D nested lists: row i holds the D coordinates of "
                      "particle i. All x and z inputs are mean-free to rounding.",
    "mean_free": "The centre of mass is the mean mu(x) = (1/K) sum_i x_i (the paper prints a "
                 "sum). Densities live on the (K-1) D dimensional subspace mu(x) = 0, in "
                 "orthonormal coordinates on it.",
    "field": "g_i(x, t) = sum_{j != i} psi(r_ij, t) (x_i - x_j), r_ij = |x_i - x_j| (Euclidean).",
    "divergence": "div g(x, t) = sum_i sum_{j != i} [dpsi/dr(r_ij, t) r_ij + D psi(r_ij, t)]. "
                  "The paper's eq. 4 lets j run over j = i too; that adds a spurious "
                  "D K psi(0, t). The diagonal is excluded here.",
    "prior": "log q_Z(z) = -|z|^2 / 2 - ((K-1) D / 2) log(2 pi), |z|^2 the sum of squares of "
             "all K D entries: normalized on the mean-free subspace. bgflow omits the "
             "constant; add it to bgflow's values.",
    "flow": "Augmented ODE d/dt [x, l] = [g(x, t), -div g(x, t)]. forward: x(t0) = z, "
            "l(t0) = 0, solve to t1; forward_x = x(t1), forward_logdet = log|det dx/dz| = "
            "-l(t1). inverse: x(t1) = x, l(t1) = 0, solve back to t0; inverse_z = x(t0), "
            "inverse_logdet = log|det dz/dx| = -l(t0). log_prob(x) = log q_Z(inverse_z) + "
            "inverse_logdet. The flow keeps the centre of mass fixed, so the determinant on "
            "the mean-free subspace equals the full K D one. t0, t1 differ between cases.",
    "energy": "energy(x) = u(x) / T, u(x) = sum over ORDERED pairs i != j of v(r_ij) (each "
              "pair twice, the paper's convention), v(d) = a (d-d0) + b (d-d0)^2 + "
              "c (d-d0)^4, with a, b, c, d0, T from 'energy'. bgflow's "
              "MultiDoubleWellPotential sums unordered pairs: half of this. "
              "force(x) = -d energy / dx.",
}


@dataclass(frozen=True)
class Geometry:
    name: str
    k: int
    d: int
    size: str  # "small", "medium" or "paper": the size of the example psi
    close: bool = False  # particles 0 and 1 at distance NEAR_DISTANCE, in x and in z
    t0: float = 0.0
    t1: float = 1.0
    note: str = ""


SMALL = (Geometry("k4_d2", 4, 2, "small", note="the paper's DW4 size"),
         Geometry("close_k3_d3", 3, 3, "small", close=True, note="near-coincident pair"))
FULL = (Geometry("k2_d2", 2, 2, "small", note="one pair"),
        Geometry("k4_d2", 4, 2, "paper", note="the paper's DW4 system and psi size"),
        Geometry("k3_d3", 3, 3, "small"),
        Geometry("k7_d2", 7, 2, "medium", t0=-0.25, t1=1.5, note="time interval [-0.25, 1.5]"),
        Geometry("k13_d3", 13, 3, "medium", note="LJ13 size"),
        Geometry("close_k4_d2", 4, 2, "medium", close=True, note="near-coincident pair"),
        Geometry("close_k6_d3", 6, 3, "small", close=True, note="near-coincident pair"))


def _configuration(rng, geo, spread):
    x = spread * rng.standard_normal((geo.k, geo.d))
    if geo.close:
        u = rng.standard_normal(geo.d)
        x[1] = x[0] + NEAR_DISTANCE * u / np.linalg.norm(u)
    return remove_mean(x)


def _rescale(family, params, k, t0, t1):
    """Scale the linear parameters so that max |psi| on the grid is PSI_STRENGTH / K."""
    peak = max(np.max(np.abs(family.numpy(params, STRENGTH_GRID_R, t)[0]))
               for t in np.linspace(t0, t1, STRENGTH_GRID_T))
    factor = PSI_STRENGTH / (k * peak)
    return {n: (v * factor if n in family.linear else v) for n, v in params.items()}


def _case_inputs(rng, family, geo):
    params = family.example(rng, geo.size, geo.t0, geo.t1)
    params = _rescale(family, params, geo.k, geo.t0, geo.t1)
    params = family.params(family.build(params))  # as the family stores them (float64)
    t = geo.t0 + rng.uniform() * (geo.t1 - geo.t0)
    inputs = {"x": _configuration(rng, geo, X_SPREAD), "t": t,
              "z": _configuration(rng, geo, 1.0), "t0": geo.t0, "t1": geo.t1}
    return params, inputs


def compute_outputs(case, rtol=REFERENCE_TOL, atol=REFERENCE_TOL, energy=None):
    """refimpl's outputs for one case (``{"family", "params", "inputs"}``, arrays).

    Returns ``{quantity: ndarray}`` for every quantity in ``QUANTITIES``; the
    flow quantities come from solves at ``rtol``, ``atol``.
    """
    family = FAMILIES[case["family"]]
    psi = family.build(case["params"])
    inp = case["inputs"]
    x, z = np.asarray(inp["x"], float)[None], np.asarray(inp["z"], float)[None]
    k, d = x.shape[-2:]
    flow = EquivariantFlow(psi, inp["t0"], inp["t1"], rtol, atol, MAX_STEPS)
    fx, fld = flow.forward(z)
    iz, ild = flow.inverse(x)
    e = {n: v for n, v in (energy or ENERGY).items() if n != "potential"}
    well = DoubleWell(k, d, **e)
    out = {"field": vector_field(x, inp["t"], psi), "divergence": divergence(x, inp["t"], psi),
           "forward_x": fx, "forward_logdet": fld, "inverse_z": iz, "inverse_logdet": ild,
           "log_prob": MeanFreeNormal(k, d).log_prob(iz) + ild,
           "energy": well.energy(x), "force": well.force(x)}
    return {q: np.asarray(v, dtype=np.float64)[0] for q, v in out.items()}


def _extended(case):
    """field, divergence, energy, force of ``case`` in extended precision (np.longdouble)."""
    ld = np.longdouble
    p = {n: np.asarray(v, dtype=ld) for n, v in case["params"].items()}
    x = np.asarray(case["inputs"]["x"], dtype=ld)
    k, d = x.shape
    i, j = np.nonzero(~np.eye(k, dtype=bool))  # ordered pairs
    diff = x[i] - x[j]
    r = np.sqrt(np.sum(diff * diff, axis=-1))
    value, slope = FAMILIES[case["family"]].numpy(p, r, ld(case["inputs"]["t"]))
    g = np.zeros((k, d), dtype=ld)
    np.add.at(g, i, value[:, None] * diff)
    s = r - ld(ENERGY["d0"])
    beta = 1 / ld(ENERGY["temperature"])
    v = ld(ENERGY["a"]) * s + ld(ENERGY["b"]) * s ** 2 + ld(ENERGY["c"]) * s ** 4
    dv = ld(ENERGY["a"]) + 2 * ld(ENERGY["b"]) * s + 4 * ld(ENERGY["c"]) * s ** 3
    f = np.zeros((k, d), dtype=ld)  # d/dx_i of sum_{ordered} v: each pair twice -> 2 dv/dr
    np.add.at(f, i, -2 * beta * (dv / r)[:, None] * diff)
    return {"field": g, "divergence": np.sum(slope * r + d * value),
            "energy": beta * np.sum(v), "force": f}


def _max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.longdouble) - np.asarray(b, np.longdouble))))


def _round(v):
    return float(f"{v:.{ERROR_DIGITS}g}")


def _errors(case, ref):
    """Estimated error of each reference quantity (None: not measurable here)."""
    if EXTENDED_PRECISION:
        ext = _extended(case)
        err = {q: _max_abs(ref[q], ext[q]) for q in ext}
    else:
        err = dict.fromkeys(("field", "divergence", "energy", "force"))
    check = compute_outputs(case, CHECK_TOL, CHECK_TOL)
    err.update({q: _max_abs(ref[q], check[q]) for q in FLOW_QUANTITIES})
    return err


def _jsonable(v):
    return v.tolist() if isinstance(v, np.ndarray) else float(v)


def _make_case(rng, name, family, geo):
    """One case as written to the file, with its unrounded errors and solver deviations."""
    params, inputs = _case_inputs(rng, family, geo)
    spec = {"family": name, "params": params, "inputs": inputs}
    ref = compute_outputs(spec)
    err = _errors(spec, ref)
    loose = {}
    for tol in SOLVER_SENSITIVITY_TOLS:
        out = compute_outputs(spec, tol, tol)
        loose[tol] = {q: _max_abs(out[q], ref[q]) for q in FLOW_QUANTITIES}
    case = {"description": f"{name}, K = {geo.k}, D = {geo.d}" + (f"; {geo.note}" * bool(geo.note)),
            "n_particles": geo.k, "dim": geo.d,
            "psi": {"family": name, "params": {n: _jsonable(v) for n, v in params.items()}},
            "inputs": {n: _jsonable(v) for n, v in inputs.items()},
            "reference": {q: _jsonable(v) for q, v in ref.items()},
            "reference_error": {q: None if e is None else _round(e) for q, e in err.items()}}
    rel = {q: None if e is None else e / max(float(np.max(np.abs(ref[q]))), 1e-300)
           for q, e in err.items()}
    return case, err, rel, loose


def _summary(errors, method):
    """``reference_accuracy`` of one quantity from its per-case (abs, rel) errors."""
    if any(e is None for e, _ in errors):
        return {"max_abs_error": None, "max_rel_error": None,
                "method": "not measured: np.longdouble is not wider than float64 here"}
    return {"max_abs_error": _round(max(e for e, _ in errors)),
            "max_rel_error": _round(max(r for _, r in errors)), "method": method}


def generate(small=False):
    """The golden vectors as a JSON-ready dict (deterministic)."""
    rng = np.random.default_rng(SEED)
    cases, errors = {}, {q: [] for q in QUANTITIES}
    sensitivity = {tol: dict.fromkeys(FLOW_QUANTITIES, 0.0) for tol in SOLVER_SENSITIVITY_TOLS}
    for name, family in FAMILIES.items():
        for geo in SMALL if small else FULL:
            case, err, rel, loose = _make_case(rng, name, family, geo)
            cases[f"{family.prefix}_{geo.name}"] = case
            for q in QUANTITIES:
                errors[q].append((err[q], rel[q]))
            for tol, dev in loose.items():
                for q, e in dev.items():
                    sensitivity[tol][q] = max(sensitivity[tol][q], e)
    methods = {q: f"|reference - refimpl's solve at rtol = atol = {CHECK_TOL:g}|"
               if q in FLOW_QUANTITIES else
               "|reference - extended-precision (np.longdouble) evaluation of the formula|"
               for q in QUANTITIES}
    return {
        "schema_version": SCHEMA_VERSION,
        "title": "refimpl golden vectors: equivariant continuous normalizing flows "
                 "(Koehler, Klein, Noe)",
        "generator": f"refimpl {__version__}: refimpl vectors{' --small' * small}, seed {SEED}",
        "how_to_use": "For each case, rebuild psi from psi.family and psi.params (formula in "
                      "psi_families), evaluate the quantities on the case's inputs, write them "
                      "as {\"cases\": {case_id: {quantity: value}}} (JSON) or as arrays named "
                      "'<case_id>/<quantity>' (.npz), and run: refimpl verify GOLDEN THEIRS. "
                      "Quantities you leave out are reported as not provided.",
        "conventions": CONVENTIONS,
        "quantities": {q: {"shape": s, "inputs": i, "meaning": m}
                       for q, (s, i, m) in QUANTITIES.items()},
        "psi_families": {n: f.formula for n, f in FAMILIES.items()},
        "energy": ENERGY,
        "reference_solver": {
            "method": "Dormand-Prince 5(4), adaptive (scipy RK45 controller), error norm over "
                      "the augmented state [x, l]",
            "rtol": REFERENCE_TOL, "atol": REFERENCE_TOL},
        "recommended_solver_tolerance": {"rtol": RECOMMENDED_TOL, "atol": RECOMMENDED_TOL},
        "thresholds": THRESHOLDS,
        "threshold_reasons": THRESHOLD_REASONS,
        "comparison": COMPARISON,
        "reference_accuracy": {q: _summary(errors[q], methods[q]) for q in QUANTITIES},
        "solver_sensitivity": {
            "meaning": "max over cases of |refimpl's solve at rtol = atol = tol - reference|",
            **{f"{tol:g}": {q: _round(e) for q, e in s.items()} for tol, s in sensitivity.items()}},
        "cases": cases,
    }


def dumps(obj, indent=0):
    """JSON text: objects indented, numeric rows on one line, floats as repr."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f"{pad}  {json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"
    if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
        rows = [f"{pad}  {dumps(v, indent + 2)}" for v in obj]
        return "[\n" + ",\n".join(rows) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def write_vectors(path, small=False):
    """Generate the vectors and write them to ``path`` atomically; return the dict."""
    golden = generate(small)
    text = dumps(golden) + "\n"
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return golden
