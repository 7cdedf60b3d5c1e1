"""Golden vectors (``refimpl vectors``) and their checker (``refimpl verify``).

The oracle here plays "another implementation": it reads only the golden
file's documented schema (psi parameters by the formula's names, inputs,
conventions) and recomputes every quantity by an independent route, plain
NumPy transcriptions of the formulas for field, divergence and energy and
``scipy.integrate.solve_ivp(method="DOP853")`` (another method than refimpl's
Dormand-Prince 5(4)) for the flow. So ``verify`` passing on it cross-checks
the golden values as well as the checker.
"""

import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from refimpl import vectors
from refimpl.families import FAMILIES
from refimpl.verify import (VectorsFileError, case_spec, case_view, check_implementation, compare,
                            load_golden)

from cli_helpers import run_cli, write_json

GOLDEN_SMALL = Path(__file__).parent / "data" / "golden_small.json"
# The oracle's DOP853 tolerance: its endpoints are then within ~1e-11 of the
# exact flow, far inside the 1e-6 thresholds of the solved quantities.
ORACLE_TOL = 1e-12
# The oracle's direct quantities agree with the golden ones to float64
# rounding of sums of O(K^2) terms: 1e-12 relative is ~1e3 x that.
DIRECT_AGREEMENT = 1e-12
# Solved quantities: two solvers at 1e-12, each ~1e-11 from the exact flow.
SOLVED_AGREEMENT = 1e-9
# Regression: refimpl recomputing the golden file's flow quantities at the
# file's reference tolerance reproduces them to rounding on this machine, and
# to ~1e-12 elsewhere (libm ulps nudge the steps); 100 x the tolerance catches
# any real change of the solve.
REGRESSION_FACTOR = 100.0
DIRECT = ("field", "divergence", "energy", "force", "lj_energy", "lj_force")
SOLVED = ("forward_x", "forward_logdet", "inverse_z", "inverse_logdet", "log_prob", "ml_loss",
          "kl_loss")
GRADIENTS = ("ml_grad", "kl_grad")
# Central differences of the oracle's losses along a random unit direction per named
# parameter array, step FD_STEP: truncation ~FD_STEP^2 |d^3 L| and solver noise
# ~1e-12 |L| / FD_STEP. Measured on the small set: |fd - g.v| / |g| <= 2.2e-8 at 1e-5
# (2.2e-6 at 1e-4, truncation); FD_AGREEMENT leaves a margin of 45 and is still 10 x
# tighter than the 1e-5 gradient threshold.
FD_STEP = 1e-5
FD_AGREEMENT = 1e-6


# --- an independent implementation, from the golden file's schema only ---------------------

def psi_rbf(p, r, t):
    """psi and dpsi/dr of the RBF family, straight from the formula."""
    d = r[:, None] - np.asarray(p["mu"])[None, :]
    dist = np.exp(-p["gamma"] * d ** 2)
    time = np.exp(-p["gamma_t"] * (t - np.asarray(p["nu"])) ** 2)
    coef = np.asarray(p["weights"]) @ time
    return dist @ coef, (-2.0 * p["gamma"] * d * dist) @ coef


def psi_mlp(p, r, t):
    """psi and dpsi/dr of the tanh-MLP family, straight from the formula."""
    a, c, b, v = (np.asarray(p[n]) for n in "acbv")
    s = np.tanh(np.outer(r, a) + c * t + b)
    return p["v0"] + s @ v, (1.0 - s ** 2) @ (a * v)


def psi_bgflow(p, r, t):
    """psi and dpsi/dr of bgflow's KernelDynamics, through d = sqrt(r^2 + 1e-6)."""
    mus, w = np.asarray(p["mus"]), np.asarray(p["weights"])
    d = np.sqrt(r ** 2 + 1e-6)
    inv2 = np.exp(np.asarray(p["neg_log_gammas"])) ** 2
    g = np.exp(-np.subtract.outer(d, mus) ** 2 * inv2)
    dg = -2.0 * np.subtract.outer(d, mus) * inv2 * g
    total, dtotal = g.sum(axis=1, keepdims=True), dg.sum(axis=1, keepdims=True)
    kern = g / (1e-6 + total)
    dkern = dg / (1e-6 + total) - g * dtotal / (1e-6 + total) ** 2
    h = np.exp(-(t - np.asarray(p["mus_time"])) ** 2
               * np.exp(np.asarray(p["neg_log_gammas_time"])) ** 2)
    time = h / (1e-6 + h.sum())
    importance2 = np.asarray(p["importance"]) ** 2
    value = ((kern + importance2) @ w + np.asarray(p["bias"])) @ time
    return value, (dkern @ w @ time) * r / d


PSI = {"RBFKernel": psi_rbf, "TanhMLP": psi_mlp, "BgflowKernel": psi_bgflow}


def field_and_divergence(x, t, psi, eps=0.0):
    """Field and divergence; ``eps > 0``: the mistake of a distance sqrt(r^2 + eps)."""
    k, d = x.shape
    i, j = np.nonzero(~np.eye(k, dtype=bool))
    diff = x[i] - x[j]
    r = np.sqrt(np.sum(diff ** 2, axis=1) + eps)
    value, slope = psi(r, t)
    g = np.zeros_like(x)
    for m in range(i.size):
        g[i[m]] += value[m] * diff[m]
    return g, float(np.sum(slope * r + d * value))


def double_well(x, e, eps=0.0):
    """Energy over ordered pairs and its analytic force."""
    k = x.shape[0]
    energy, force = 0.0, np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            if i != j:
                r_vec = x[i] - x[j]
                r = math.sqrt(r_vec @ r_vec + eps)
                s = r - e["d0"]
                energy += e["a"] * s + e["b"] * s ** 2 + e["c"] * s ** 4
                dv = e["a"] + 2 * e["b"] * s + 4 * e["c"] * s ** 3
                force[i] -= 2 * dv * r_vec / r  # v(r_ij) and v(r_ji) both depend on x_i
    return energy / e["temperature"], force / e["temperature"]


def lennard_jones(x, e, eps=0.0):
    """Energy over unordered pairs and its analytic force."""
    k = x.shape[0]
    energy, force = 0.0, np.zeros_like(x)
    for i in range(k):
        for j in range(i + 1, k):
            r_vec = x[i] - x[j]
            r = math.sqrt(r_vec @ r_vec + eps)
            q = (e["r_m"] / r) ** 6
            energy += e["epsilon"] * (q * q - 2 * q)
            dv = -12 * e["epsilon"] * (q * q - q) / r
            force[i] -= dv * r_vec / r
            force[j] += dv * r_vec / r
    return energy / e["temperature"], force / e["temperature"]


POTENTIALS = {"DoubleWell": double_well, "LennardJones": lennard_jones}


def solve_batch(starts, t_start, t_end, psi, k, d):
    """End states and log-dets of the augmented flow from each row of ``starts (B, K, D)``,
    all in one DOP853 solve."""
    b, n = len(starts), k * d

    def rhs(t, y):
        y = y.reshape(b, n + 1)
        out = np.empty_like(y)
        for m in range(b):
            g, div = field_and_divergence(y[m, :n].reshape(k, d), t, psi)
            out[m, :n], out[m, n] = g.ravel(), -div
        return out.ravel()
    y0 = np.concatenate([np.reshape(starts, (b, n)), np.zeros((b, 1))], axis=1)
    sol = solve_ivp(rhs, (t_start, t_end), y0.ravel(), method="DOP853",
                    rtol=ORACLE_TOL, atol=ORACLE_TOL)
    assert sol.success, sol.message
    y = sol.y[:, -1].reshape(b, n + 1)
    return y[:, :n].reshape(b, k, d), -y[:, n]


def solve(y_start, t_start, t_end, psi, k, d):
    x, logdet = solve_batch(np.asarray(y_start)[None], t_start, t_end, psi, k, d)
    return x[0], logdet[0]


def log_prior(z):
    k, d = z.shape[-2:]
    return -0.5 * np.sum(z ** 2, axis=(-2, -1)) - 0.5 * (k - 1) * d * math.log(2 * math.pi)


def interval(inp, unit_time=False):
    """The case's [t0, t1], or the mistaken [0, 1]."""
    return (0.0, 1.0) if unit_time else (inp["t0"], inp["t1"])


def losses(golden, case, params=None, logdet_sign=1, energy_factors=None, unit_time=False):
    """The oracle's ML and KL losses of a raw golden case (``params`` replaces psi.params).

    The other arguments make a mistake: the log-det with sign ``logdet_sign`` in
    log q_X, a potential multiplied by ``energy_factors[name]``, the flow over [0, 1].
    """
    psi = functools.partial(PSI[case["psi"]["family"]], params or case["psi"]["params"])
    inp = case["inputs"]
    t0, t1 = interval(inp, unit_time)
    xb, zb = np.array(inp["x_batch"]), np.array(inp["z_batch"])
    k, d = xb.shape[1:]
    z_of_x, inverse_logdet = solve_batch(xb, t1, t0, psi, k, d)
    ml = -np.mean(log_prior(z_of_x) + logdet_sign * inverse_logdet)
    x_of_z, forward_logdet = solve_batch(zb, t0, t1, psi, k, d)
    spec = golden[case["kl_potential"]]
    factor = (energy_factors or {}).get(spec["potential"], 1)
    energy = [factor * POTENTIALS[spec["potential"]](x, spec)[0] for x in x_of_z]
    kl = np.mean(np.array(energy) + log_prior(zb) - logdet_sign * forward_logdet)
    return {"ml_loss": ml, "kl_loss": kl}


def independent_outputs(golden_path, eps=0.0, unit_time=False, **mistakes):
    """``{"cases": {case_id: {quantity: value}}}`` computed from the raw golden JSON.

    ``eps``, ``unit_time`` and ``mistakes`` (of ``losses``) make a classic mistake.
    """
    golden = json.loads(Path(golden_path).read_text())
    out = {}
    for cid, case in golden["cases"].items():
        p, inp = case["psi"]["params"], case["inputs"]
        psi = functools.partial(PSI[case["psi"]["family"]], p)
        x, z = np.array(inp["x"]), np.array(inp["z"])
        k, d = x.shape
        t0, t1 = interval(inp, unit_time)
        g, div = field_and_divergence(x, inp["t"], psi, eps)
        fx, fld = solve(z, t0, t1, psi, k, d)
        iz, ild = solve(x, t1, t0, psi, k, d)
        energy, force = double_well(x, golden["energy"], eps)
        lj_energy, lj_force = lennard_jones(x, golden["lennard_jones"], eps)
        values = {"field": g, "divergence": div, "forward_x": fx, "forward_logdet": fld,
                  "inverse_z": iz, "inverse_logdet": ild, "log_prob": log_prior(iz) + ild,
                  "energy": energy, "force": force, "lj_energy": lj_energy,
                  "lj_force": lj_force,
                  **losses(golden, case, unit_time=unit_time, **mistakes)}
        out[cid] = {q: np.asarray(v).tolist() for q, v in values.items()}
    return {"implementation": "tests/test_vectors.py oracle", "cases": out}


@pytest.fixture(scope="module")
def oracle():
    return independent_outputs(GOLDEN_SMALL)


def assert_tight_agreement(golden_path, theirs):
    """The oracle agrees with the golden values far inside the thresholds."""
    golden = load_golden(golden_path)
    parsed = {cid: {q: np.asarray(v) for q, v in c.items()} for cid, c in theirs["cases"].items()}
    for r in compare(golden, parsed):
        assert r.max_rel < (DIRECT_AGREEMENT if r.quantity in DIRECT else SOLVED_AGREEMENT), r


def report_line(out, quantity):
    return next(line for line in out.splitlines() if line.startswith(quantity + " "))


def to_json(values):
    """refimpl's outputs as JSON values (gradients stay objects)."""
    return {q: ({n: np.asarray(a).tolist() for n, a in v.items()} if isinstance(v, dict)
                else np.asarray(v).tolist()) for q, v in values.items()}


# --- vectors ----------------------------------------------------------------------------------

# Parts of a golden file computed by floating-point arithmetic: a kernel that changes its
# rounding changes them (within their stated accuracy) without changing the set.
COMPUTED_PARTS = ("reference_accuracy", "solver_sensitivity", "digest")
COMPUTED_CASE_PARTS = ("reference", "reference_error")
# Error estimates (two digits, of rounding or truncation) agree to this factor when only
# rounding changed; a changed formula or solver moves them by orders of magnitude.
ESTIMATE_FACTOR = 10.0


def _same_size(a, b, floor=0.0):
    return a is None or b is None or max(a, b) <= ESTIMATE_FACTOR * max(min(a, b), floor)


def assert_same_golden_set(fresh, stored):
    """``stored`` is the set ``fresh`` is: every part not computed by arithmetic equal,
    each reference within the two files' stated errors of each other, and the error
    estimates of the same size."""
    assert list(fresh) == list(stored)
    for key in fresh:
        if key not in COMPUTED_PARTS + ("cases",):
            assert fresh[key] == stored[key], key  # thresholds, conventions, quantities, ...
    for key in ("reference_accuracy", "solver_sensitivity"):
        for q, est in fresh[key].items():
            if isinstance(est, dict):
                assert est.keys() == stored[key][q].keys(), (key, q)
                for name, v in est.items():
                    w = stored[key][q][name]
                    assert v == w if isinstance(v, str) else _same_size(v, w), (key, q, name)
            else:
                assert est == stored[key][q], (key, q)
    assert list(fresh["cases"]) == list(stored["cases"])
    for cid, case in fresh["cases"].items():
        old = stored["cases"][cid]
        assert list(case) == list(old), cid
        for part in case:
            if part not in COMPUTED_CASE_PARTS:
                assert case[part] == old[part], (cid, part)  # inputs, psi, shape, ...
        assert case["reference"].keys() == old["reference"].keys(), cid
        for q, ref in case["reference"].items():
            a, b = vectors.flatten(ref), vectors.flatten(old["reference"][q])
            assert a.shape == b.shape, (cid, q)
            e_new, e_old = case["reference_error"][q], old["reference_error"][q]
            rounding = 4 * np.spacing(np.max(np.abs(b)))  # the last bits of both files
            stated = (e_old + (e_old if e_new is None else e_new) if e_old is not None
                      else DIRECT_AGREEMENT * max(1.0, np.max(np.abs(b))))
            assert np.max(np.abs(a - b)) <= stated + rounding, (cid, q)
            assert _same_size(e_new, e_old, rounding), (cid, q)


def test_vectors_is_deterministic_and_the_committed_small_set_is_its_output(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(capsys, "vectors", "--out", a, "--small")[0] == 0
    assert run_cli(capsys, "vectors", "--out", b, "--small")[0] == 0
    assert a.read_bytes() == b.read_bytes()
    # The committed file is this set. Not byte for byte: a kernel that changes its
    # rounding changes the references' last bits (and so the digest); the regression test
    # below then still passes, and so does this comparison within the stated accuracy.
    fresh, stored = json.loads(a.read_text()), json.loads(GOLDEN_SMALL.read_text())
    assert_same_golden_set(fresh, stored)
    edits = [(("thresholds", "field", "rtol"), 1.001), (("conventions",), 1),
             (("quantities", "field"), 1), (("cases", "rbf_k4_d2", "reference", "divergence"),
                                            1 + 1e-9),
             (("cases", "mlp_k4_d2", "reference_error", "kl_grad"), 100.0),
             (("solver_sensitivity", "1e-08", "kl_grad"), 100.0)]
    for path, factor in edits:  # the comparison sees a changed threshold, convention, value
        edited = copy.deepcopy(stored)
        parent = functools.reduce(lambda d, k: d[k], path[:-1], edited)
        value = parent[path[-1]]
        parent[path[-1]] = value * factor if isinstance(value, float) else "changed"
        with pytest.raises(AssertionError):
            assert_same_golden_set(fresh, edited)


def test_golden_small_regression_refimpl_still_computes_the_stored_numbers(tmp_path, capsys):
    golden = load_golden(GOLDEN_SMALL)
    tol = golden["reference_solver"]["rtol"], golden["reference_solver"]["atol"]
    ours = {}
    for cid, case in golden["cases"].items():
        out = vectors.compute_outputs(case_spec(golden, cid), *tol, energy=golden["energy"],
                                      lennard_jones=golden["lennard_jones"])
        ours[cid] = to_json(out)
        for q in DIRECT:  # float64 evaluation: the same numbers to rounding
            ref = case["reference"][q]
            assert np.max(np.abs(out[q] - ref)) <= DIRECT_AGREEMENT * max(1.0, np.max(np.abs(ref)))
        for q in SOLVED + GRADIENTS:
            ref, mine = vectors.flatten(case["reference"][q]), vectors.flatten(out[q])
            assert np.max(np.abs(mine - ref)) <= REGRESSION_FACTOR * (tol[1] + tol[0] * np.max(
                np.abs(ref))), (cid, q)
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "ours.json",
                                                                       {"cases": ours}))
    assert code == 0, out
    assert out.count("PASS") == len(golden["quantities"]) + 1  # each row and the verdict


def test_golden_small_documents_schema_thresholds_and_accuracy():
    golden = json.loads(GOLDEN_SMALL.read_text())
    assert golden["schema_version"] == vectors.SCHEMA_VERSION
    everything = set(DIRECT + SOLVED + GRADIENTS)
    assert set(golden["quantities"]) == set(golden["thresholds"]) == everything
    for q, acc in golden["reference_accuracy"].items():
        # the reference is >= 1e4 times more accurate than the pass/fail threshold
        t = golden["thresholds"][q]
        assert min(acc["max_abs_error"] / t["atol"], acc["max_rel_error"] / t["rtol"]) <= 1e-4, q
        assert t["basis"] in golden["threshold_reasons"]
    assert golden["reference_solver"]["rtol"] <= 1e-10
    assert golden["recommended_solver_tolerance"]["rtol"] == 1e-10
    for q in SOLVED + GRADIENTS:  # refimpl at the recommended tolerance: far inside
        assert golden["solver_sensitivity"]["1e-10"][q] < 1e-2 * golden["thresholds"][q]["atol"] \
            * max(1.0, max(np.max(np.abs(vectors.flatten(c["reference"][q])))
                           for c in golden["cases"].values())), q
    for case in golden["cases"].values():
        assert set(case["reference"]) == set(case["reference_error"]) == everything
        assert case["psi"]["family"] in golden["psi_families"]
        assert set(case["reference"]["ml_grad"]) == set(case["psi"]["trainable"]) \
            == set(FAMILIES[case["psi"]["family"]].trainable_params)
        assert case["kl_potential"] == ("lennard_jones" if case["dim"] == 3 else "energy")
        for name in case["psi"]["trainable"]:
            assert np.shape(case["reference"]["kl_grad"][name]) \
                == np.shape(case["psi"]["params"][name])


def test_reference_gradients_match_central_differences_of_the_oracle():
    """Independent of autograd and refimpl's adjoint: each named gradient array, projected on
    a random direction, against central differences of the oracle's scipy-solved losses."""
    golden = json.loads(GOLDEN_SMALL.read_text())
    rng = np.random.default_rng(7)
    checked = 0
    for cid, case in golden["cases"].items():
        params = case["psi"]["params"]
        for name in case["psi"]["trainable"]:
            base = np.asarray(params[name], dtype=float)
            v = rng.standard_normal(base.shape)
            v /= np.linalg.norm(v)
            plus, minus = (losses(golden, case, {**params, name: (base + s * FD_STEP * v).tolist()})
                           for s in (1, -1))
            for loss, grad in (("ml_loss", "ml_grad"), ("kl_loss", "kl_grad")):
                fd = (plus[loss] - minus[loss]) / (2 * FD_STEP)
                g = np.asarray(case["reference"][grad][name])
                assert abs(fd - np.sum(g * v)) <= FD_AGREEMENT * np.linalg.norm(g), (cid, grad, name)
                checked += 1
    assert checked == 2 * sum(len(c["psi"]["trainable"]) for c in golden["cases"].values())


def test_named_gradient_reads_the_formulas_layout():
    """named_gradient inverts the family's placement of its trainable arrays in theta."""
    rng = np.random.default_rng(3)
    for name, family in FAMILIES.items():
        params = family.params(family.build(family.example(rng, "small", 0.0, 1.0)))
        psi = (family.build_trainable or family.build)(params)
        other = {n: (rng.standard_normal(np.shape(v)) if np.ndim(v) else float(rng.normal()))
                 if n in family.trainable_params else v for n, v in params.items()}
        theta = (family.build_trainable or family.build)(other).theta
        named = vectors.named_gradient(family, psi, theta[psi.trainable])
        assert list(named) == list(family.trainable_params), name
        for n in family.trainable_params:
            assert np.array_equal(named[n], other[n]), (name, n)
        assert psi.trainable.size == sum(np.size(other[n]) for n in family.trainable_params)


def test_full_vectors_cover_dimensions_sizes_and_near_coincident_pairs(tmp_path, capsys,
                                                                        monkeypatch):
    full = vectors.FULL
    assert {g.d for g in full} == {2, 3}
    assert min(g.k for g in full) == 2 and max(g.k for g in full) >= 13
    assert sum(g.close for g in full) >= 2 and {g.size for g in full} == {"small", "medium",
                                                                           "paper"}
    assert any((g.t0, g.t1) != (0.0, 1.0) for g in full)
    # generating all of FULL takes ~10 s; the two geometries the small set lacks (K = 13, a
    # 2-D near-coincident pair) go through the same code and are checked by the oracle
    monkeypatch.setattr(vectors, "FULL", tuple(g for g in full if g.name in
                                               ("k13_d3", "close_k4_d2")))
    path = tmp_path / "full.json"
    assert run_cli(capsys, "vectors", "--out", path)[0] == 0
    golden = json.loads(path.read_text())
    assert {c["psi"]["family"] for c in golden["cases"].values()} == set(FAMILIES)
    for c in golden["cases"].values():
        if "near-coincident" in c["description"]:
            x = np.array(c["inputs"]["x"])
            assert abs(np.linalg.norm(x[0] - x[1]) - vectors.NEAR_DISTANCE) < 1e-12
    theirs = independent_outputs(path)
    code, out, _ = run_cli(capsys, "verify", path, write_json(tmp_path / "theirs.json", theirs))
    assert code == 0, out
    assert_tight_agreement(path, theirs)


# --- verify: agreement --------------------------------------------------------------------

def test_independent_oracle_passes_and_agrees_tightly(tmp_path, capsys, oracle):
    theirs = write_json(tmp_path / "t.json", oracle)
    code, out, err = run_cli(capsys, "verify", GOLDEN_SMALL, theirs)
    assert code == 0, out + err
    for q in DIRECT + SOLVED:
        assert report_line(out, q).endswith("PASS")
    for q in GRADIENTS:  # the oracle checks gradients by directional differences only
        assert report_line(out, q).endswith("not provided")
    assert_tight_agreement(GOLDEN_SMALL, oracle)


def refimpl_implementation(tol=1e-10, **edits):
    """refimpl itself as "another implementation" for check_implementation, at ``tol``;
    ``edits``: quantity -> function(case, value) making a mistake."""
    def implementation(case):
        spec = {k: case[k] for k in ("family", "params", "inputs", "kl_potential")}
        out = vectors.compute_outputs(spec, tol, tol, energy=case["energy"],
                                      lennard_jones=case["lennard_jones"])
        for q, edit in edits.items():
            out[q] = edit(case, out[q])
        return out
    return implementation


def test_check_implementation_in_process_passes_and_reports(capsys):
    report = check_implementation(GOLDEN_SMALL, refimpl_implementation())
    assert report.passed, report
    assert all(r.provided and r.passed for r in report.results)
    text = str(report)
    assert "PASS: 15 of 15 quantities agree in all 6 cases" in text
    assert repr(report) == text  # what `assert report.passed, report` prints
    assert report.worst.worst_ratio == max(r.worst_ratio for r in report.results) < 1e-2


def test_check_implementation_and_cli_share_one_comparison(tmp_path, capsys):
    golden = load_golden(GOLDEN_SMALL)
    implementation = refimpl_implementation(
        divergence=lambda case, v: v * (1 + 1e-6), kl_grad=lambda case, g: {
            n: a + 1e-3 * np.max(np.abs(a)) if n == case["trainable"][0] else a
            for n, a in g.items()})
    report = check_implementation(golden, implementation, families=["TanhMLP", "RBFKernel"])
    assert not report.passed and report.failed == ["divergence", "kl_grad"]
    assert report["kl_grad"].worst_part in ("weights", "a")
    ours = {cid: to_json(implementation(case_view(golden, cid))) for cid, c in
            golden["cases"].items() if c["psi"]["family"] != "BgflowKernel"}
    path = write_json(tmp_path / "ours.json", {"cases": ours})
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, path, "--family", "TanhMLP",
                           "--family", "RBFKernel")
    assert code == 1
    assert out.split("\n\n", 1)[1].strip() == str(report).split("\n\n", 1)[1].strip()
    assert "4 of 6 cases: TanhMLP, RBFKernel" in out


def test_check_implementation_rejects_bad_outputs_naming_case_and_quantity():
    with pytest.raises(VectorsFileError, match=r"'rbf_k4_d2'.*'field'.*shape \(2, 4\)"):
        check_implementation(GOLDEN_SMALL, lambda case: {"field": np.zeros((2, case["n_particles"]))
                                                         if case["id"] == "rbf_k4_d2"
                                                         else np.zeros((case["n_particles"],
                                                                        case["dim"]))})
    with pytest.raises(VectorsFileError, match="no gradient for parameter"):
        check_implementation(GOLDEN_SMALL, lambda case: {"ml_grad": {}})
    with pytest.raises(TypeError, match="must return a dict"):
        check_implementation(GOLDEN_SMALL, lambda case: 1.0)
    seen = []
    check_implementation(GOLDEN_SMALL, lambda case: seen.append(case) or {"energy": 0.0})
    assert all("reference" not in case and set(case["inputs"]) >= {"x", "x_batch", "z_batch"}
               for case in seen)


def test_npz_outputs_are_read_like_json(tmp_path, capsys, oracle):
    golden = load_golden(GOLDEN_SMALL)
    arrays = {f"{cid}/{q}": np.asarray(v) for cid, c in oracle["cases"].items()
              for q, v in c.items()}
    for cid in golden["cases"]:  # gradients as '<case_id>/<quantity>/<name>'
        for n, g in golden["cases"][cid]["reference"]["ml_grad"].items():
            arrays[f"{cid}/ml_grad/{n}"] = g
    np.savez(tmp_path / "t.npz", **arrays)
    code, out, err = run_cli(capsys, "verify", GOLDEN_SMALL, tmp_path / "t.npz")
    assert code == 0, out + err
    assert report_line(out, "ml_grad").endswith("PASS")


def test_quantities_not_provided_pass_unless_strict(tmp_path, capsys, oracle):
    partial = copy.deepcopy(oracle)
    for c in partial["cases"].values():
        del c["log_prob"], c["force"]
    path = write_json(tmp_path / "t.json", partial)
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, path)
    assert code == 0
    assert report_line(out, "log_prob").endswith("not provided")
    assert "not provided: log_prob, force, ml_grad, kl_grad" in out
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, path, "--strict")
    assert code == 1
    assert "FAIL: log_prob, force, ml_grad, kl_grad" in out


def test_family_selection_verifies_a_subset(tmp_path, capsys, oracle):
    golden = json.loads(GOLDEN_SMALL.read_text())
    rbf = [cid for cid, c in golden["cases"].items() if c["psi"]["family"] == "RBFKernel"]
    only = write_json(tmp_path / "t.json", {"cases": {cid: oracle["cases"][cid] for cid in rbf}})
    code, _, err = run_cli(capsys, "verify", GOLDEN_SMALL, only)
    assert code == 2 and "missing" in err  # without --family every case is required
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, only, "--family", "RBFKernel")
    assert code == 0 and f"{len(rbf)} of {len(golden['cases'])} cases: RBFKernel" in out
    code, _, err = run_cli(capsys, "verify", GOLDEN_SMALL, only, "--family", "Nope")
    assert code == 2 and "no cases of psi family 'Nope'" in err


# --- verify: failures ---------------------------------------------------------------------

@pytest.mark.parametrize("quantity, factor", [("divergence", 10.0), ("force", 10.0),
                                              ("forward_logdet", 10.0), ("inverse_z", 3.0),
                                              ("lj_energy", 10.0), ("kl_loss", 10.0)])
def test_perturbation_beyond_threshold_fails_naming_quantity_and_case(tmp_path, capsys, oracle,
                                                                      quantity, factor):
    golden = json.loads(GOLDEN_SMALL.read_text())
    cid = list(golden["cases"])[-1]
    ref = np.asarray(golden["cases"][cid]["reference"][quantity])
    t = golden["thresholds"][quantity]
    bad = copy.deepcopy(oracle)
    value = ref.copy()
    value.flat[-1] += factor * (t["atol"] + t["rtol"] * np.max(np.abs(ref)))
    bad["cases"][cid][quantity] = value.tolist()
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 1
    line = report_line(out, quantity)
    assert cid in line and "FAIL in 1 of" in line
    assert f"FAIL: {quantity} (" in out
    assert all(report_line(out, q).endswith("PASS") for q in DIRECT + SOLVED if q != quantity)
    assert "likely cause" not in out  # a perturbation is no known convention error


def _psi0(golden, cid):
    case = golden["cases"][cid]
    psi = PSI[case["psi"]["family"]]
    return float(psi(case["psi"]["params"], np.zeros(1), case["inputs"]["t"])[0][0])


def _prior_constant(golden, cid, dims):
    return 0.5 * dims(golden["cases"][cid]["n_particles"], golden["cases"][cid]["dim"]) \
        * math.log(2 * math.pi)


def _offset(c, g, cid, dims, sign):
    """log-densities with a prior constant ((K-1) D or -D, as ``dims``) added."""
    const = sign * _prior_constant(g, cid, dims)
    return {"log_prob": c["log_prob"] + const, "ml_loss": c["ml_loss"] - const,
            "kl_loss": c["kl_loss"] + const}


def _float32(c, g, cid):
    case = g["cases"][cid]
    spec = {"family": case["psi"]["family"], "params": case["psi"]["params"],
            "inputs": case["inputs"]}
    with np.errstate(over="ignore"):  # float32 Lennard-Jones overflows at the close pair
        single = vectors.direct_quantities(spec, np.float32)  # the formulas in float32
    return {q: np.asarray(single[q], dtype=np.float64).tolist()
            for q in ("field", "divergence", "energy", "force")}


FLOW = ("forward_x", "forward_logdet", "inverse_z", "inverse_logdet", "log_prob",
        "ml_loss", "kl_loss")
# name -> (oracle settings with the mistake, edit of its outputs (case, golden, case_id),
#          {failing quantity: the diagnosis it must get}, quantities that may fail too)
MISTAKES = {
    "divergence with the paper's j = i term": (
        {}, lambda c, g, cid: {"divergence": c["divergence"] + g["cases"][cid]["dim"]
                               * g["cases"][cid]["n_particles"] * _psi0(g, cid)},
        {"divergence": "j = i terms"}, ()),
    "unnormalized prior (bgflow)": (
        {}, lambda c, g, cid: _offset(c, g, cid, lambda k, d: (k - 1) * d, 1),
        dict.fromkeys(["log_prob", "ml_loss", "kl_loss"], "unnormalized prior"), ()),
    "prior normalized in K D dimensions": (
        {}, lambda c, g, cid: _offset(c, g, cid, lambda k, d: d, -1),
        dict.fromkeys(["log_prob", "ml_loss", "kl_loss"], "prior in K D dimensions"), ()),
    "unordered DoubleWell pairs (bgflow)": (
        {"energy_factors": {"DoubleWell": 0.5}},
        lambda c, g, cid: {"energy": c["energy"] / 2,
                           "force": (np.asarray(c["force"]) / 2).tolist()},
        {"energy": "unordered pairs", "force": "unordered pairs",
         "kl_loss": "KL energy halved"}, ()),
    "ordered Lennard-Jones pairs": (
        {"energy_factors": {"LennardJones": 2.0}},
        lambda c, g, cid: {"lj_energy": c["lj_energy"] * 2,
                           "lj_force": (np.asarray(c["lj_force"]) * 2).tolist()},
        {"lj_energy": "ordered pairs", "lj_force": "ordered pairs",
         "kl_loss": "KL energy doubled"}, ()),
    "log-det sign": (
        {}, lambda c, g, cid: {"forward_logdet": -c["forward_logdet"],
                               "inverse_logdet": -c["inverse_logdet"]},
        dict.fromkeys(["forward_logdet", "inverse_logdet"], "log-det sign"), ()),
    "log-det sign in the change of variables": (
        {"logdet_sign": -1}, lambda c, g, cid: {"log_prob": c["log_prob"]
                                                - 2 * c["inverse_logdet"]},
        {"log_prob": "log-det sign in log_prob", "ml_loss": "log-det sign in ml_loss",
         "kl_loss": "log-det sign in kl_loss"}, ()),
    "time over [0, 1]": (
        {"unit_time": True}, lambda c, g, cid: {},
        dict.fromkeys(FLOW, "time interval"), ()),
    "regularized distance sqrt(r^2 + 1e-8)": (
        {"eps": 1e-8}, lambda c, g, cid: {},
        {"field": "regularized distance", "divergence": "regularized distance"},
        ("energy", "force", "lj_energy", "lj_force")),
    "regularized distance sqrt(r^2 + 3e-12)": (  # an eps diagnose does not try: close pairs
        {"eps": 3e-12}, lambda c, g, cid: {}, {"divergence": "regularized distance"},
        ("field", "energy", "force", "lj_energy", "lj_force")),
    "float32 arithmetic": (
        {}, _float32, dict.fromkeys(["field", "divergence", "energy", "force"], "float32"), ()),
}


@functools.lru_cache(maxsize=None)
def _oracle_with(settings):
    return independent_outputs(GOLDEN_SMALL, **json.loads(settings))


@pytest.mark.parametrize("mistake", MISTAKES)
def test_classic_convention_mistakes_fail_and_are_diagnosed(mistake):
    """Outputs computed with exactly that mistake fail where it shows, and verify names it."""
    golden = json.loads(GOLDEN_SMALL.read_text())
    settings, edit, diagnoses, may_fail = MISTAKES[mistake]
    bad = copy.deepcopy(_oracle_with(json.dumps(settings, sort_keys=True)))
    for cid, case in bad["cases"].items():
        case.update(edit(case, golden, cid))
    report = check_implementation(GOLDEN_SMALL, lambda case: bad["cases"][case["id"]])
    assert set(diagnoses) <= set(report.failed) <= set(diagnoses) | set(may_fail), report
    for q in report.failed:  # quantities that may fail get the mistake's own diagnosis
        expected = diagnoses.get(q, next(iter(diagnoses.values())))
        assert [d.split(":")[0] for d in report[q].diagnoses] == [expected], (q, str(report))


@pytest.mark.parametrize("mistake", ["gradient sign", "bgflow's energy convention",
                                     "ordered Lennard-Jones pairs"])
def test_gradient_mistakes_are_diagnosed(mistake):
    negate = lambda case, g: {n: -v for n, v in g.items()}  # noqa: E731
    exact = refimpl_implementation()
    if mistake == "gradient sign":
        implementation = refimpl_implementation(ml_grad=negate, kl_grad=negate)
        expected = {"ml_grad": "gradient sign", "kl_grad": "gradient sign"}
    elif mistake == "bgflow's energy convention":  # the DoubleWell over unordered pairs
        def implementation(case):
            return exact({**case, "energy": {**case["energy"], "pairs": "unordered"}})
        expected = {"energy": "unordered pairs", "force": "unordered pairs",
                    "kl_loss": "KL energy halved", "kl_grad": "KL gradient, energy halved"}
    else:  # Lennard-Jones over ordered pairs: twice the energy, i.e. u / (T / 2)
        def implementation(case):
            lj = case["lennard_jones"]
            return exact({**case, "lennard_jones": {**lj, "temperature": lj["temperature"] / 2}})
        expected = {"lj_energy": "ordered pairs", "lj_force": "ordered pairs",
                    "kl_loss": "KL energy doubled", "kl_grad": "KL gradient, energy doubled"}
    report = check_implementation(GOLDEN_SMALL, implementation)
    assert report.failed == list(expected), report
    for q, name in expected.items():
        assert [d.split(":")[0] for d in report[q].diagnoses] == [name], str(report)
    assert "likely cause" in str(report)


def _field_and_divergence_outputs(dtype=np.float64, edit_params=lambda family, p: p):
    """The oracle's field and divergence of every case, computed in ``dtype`` from
    parameters changed by ``edit_params``."""
    golden = json.loads(GOLDEN_SMALL.read_text())
    out = {}
    for cid, case in golden["cases"].items():
        family = case["psi"]["family"]
        p = {n: np.asarray(v, dtype=dtype) for n, v in case["psi"]["params"].items()}
        psi = functools.partial(PSI[family], edit_params(family, p))
        g, div = field_and_divergence(np.asarray(case["inputs"]["x"], dtype=dtype),
                                      dtype(case["inputs"]["t"]), psi)
        out[cid] = {"field": np.asarray(g, dtype=np.float64), "divergence": float(div)}
    return out


def test_float32_diagnosis_needs_float32_sized_deviations_not_just_small_ones():
    """A float32 implementation with its own order of operations is diagnosed as float32;
    a float64 one with a 1e-5 relative error in gamma (deviations of ~5e-6 relative, once
    taken for float32 rounding) is not."""
    single = _field_and_divergence_outputs(np.float32)
    report = check_implementation(GOLDEN_SMALL, lambda case: single[case["id"]])
    assert report.failed == ["field", "divergence"], report
    for q in report.failed:
        assert [d.split(":")[0] for d in report[q].diagnoses] == ["float32"], str(report)

    def wrong_gamma(family, p):
        return {**p, "gamma": p["gamma"] * (1 + 1e-5)} if family == "RBFKernel" else p
    wrong = _field_and_divergence_outputs(edit_params=wrong_gamma)
    report = check_implementation(GOLDEN_SMALL, lambda case: wrong[case["id"]],
                                  families=["RBFKernel"])
    assert report.failed == ["field", "divergence"], report
    assert report["field"].diagnoses == report["divergence"].diagnoses == [], str(report)


def test_cli_prints_the_diagnosis(tmp_path, capsys, oracle):
    golden = json.loads(GOLDEN_SMALL.read_text())
    bad = copy.deepcopy(oracle)
    for cid, case in bad["cases"].items():
        case.update(_offset(case, golden, cid, lambda k, d: (k - 1) * d, 1))
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 1
    assert out.count("likely cause: unnormalized prior: off by exactly ((K-1) D / 2) log(2 pi)") \
        == 3


def test_bgflows_own_approximate_divergence_fails(tmp_path, capsys, oracle):
    from refimpl import BgflowKernel
    golden = json.loads(GOLDEN_SMALL.read_text())
    bad = copy.deepcopy(oracle)
    edited = 0
    for cid, case in golden["cases"].items():
        if case["psi"]["family"] == "BgflowKernel":
            psi = BgflowKernel.from_arrays(**case["psi"]["params"])
            x = np.array(case["inputs"]["x"])
            bad["cases"][cid]["divergence"] = float(psi.bgflow_divergence(x, case["inputs"]["t"]))
            edited += 1
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 1 and edited >= 2
    assert f"FAIL in {edited} of" in report_line(out, "divergence")
    assert "likely cause: bgflow's divergence" in out


def _first(data):
    return next(iter(data["cases"].values()))


MALFORMED = {  # name -> (edit of the oracle's outputs, words the error must contain)
    "missing case": (lambda d: d["cases"].pop("mlp_k4_d2"), ["'mlp_k4_d2'", "missing"]),
    "unknown case": (lambda d: d["cases"].__setitem__("extra", {}), ["'extra'", "not in"]),
    "unknown quantity": (lambda d: _first(d).__setitem__("logdet", 1.0),
                         ["'rbf_k4_d2'", "unknown quantity 'logdet'"]),
    "wrong shape": (lambda d: _first(d).__setitem__("field", [[0.0, 1.0]]),
                    ["'rbf_k4_d2'", "'field'", "shape (1, 2)", "(4, 2)"]),
    "batch axis": (lambda d: _first(d).__setitem__("energy", [1.0]),
                   ["'energy'", "shape (1,)", "single number"]),
    "NaN": (lambda d: _first(d).__setitem__("divergence", float("nan")),
            ["'rbf_k4_d2'", "'divergence'", "NaN"]),
    "not a number": (lambda d: _first(d).__setitem__("log_prob", "-8.1"),
                     ["'log_prob'", "expected numbers"]),
    "quantity in some cases only": (lambda d: _first(d).pop("energy"),
                                    ["'energy'", "missing in case 'rbf_k4_d2'"]),
    "no cases key": (lambda d: d.pop("cases"), ["no 'cases'"]),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_outputs_are_refused_with_a_clear_message(tmp_path, capsys, oracle, name):
    edit, words = MALFORMED[name]
    bad = copy.deepcopy(oracle)
    edit(bad)
    code, out, err = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 2
    assert err.startswith("refimpl verify: error:")
    for word in words:
        assert word in err, (word, err)


def test_vectors_reports_an_unwritable_path(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, _, err = run_cli(capsys, "vectors", "--out", tmp_path / "a_file" / "g.json", "--small")
    assert code == 2 and "cannot write" in err
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]  # nothing left behind


def test_unreadable_files_are_refused(tmp_path, capsys, oracle):
    garbage = tmp_path / "t.json"
    garbage.write_text("{not json")
    cases = [(GOLDEN_SMALL, garbage, "not valid JSON"),
             (GOLDEN_SMALL, tmp_path / "absent.json", "cannot read"),
             (GOLDEN_SMALL, write_json(tmp_path / "t.txt", oracle), ".json or .npz"),
             (garbage, write_json(tmp_path / "ok.json", oracle), "golden file")]
    np.savez(tmp_path / "flat.npz", field=np.zeros((4, 2)))
    cases.append((GOLDEN_SMALL, tmp_path / "flat.npz", "'<case_id>/<quantity>'"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    cases.append((GOLDEN_SMALL, tmp_path / "broken.npz", "is not a file of outputs (.npz)"))
    wrong = json.loads(GOLDEN_SMALL.read_text())
    wrong["schema_version"] = 99
    cases.append((write_json(tmp_path / "g.json", wrong), tmp_path / "ok.json", "schema_version"))
    for golden, theirs, words in cases:
        code, _, err = run_cli(capsys, "verify", golden, theirs)
        assert code == 2 and words in err, (theirs, err)
