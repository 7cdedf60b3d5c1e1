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
from refimpl.cli import main
from refimpl.families import FAMILIES
from refimpl.verify import case_spec, compare, load_golden

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
DIRECT = ("field", "divergence", "energy", "force")
SOLVED = ("forward_x", "forward_logdet", "inverse_z", "inverse_logdet", "log_prob")


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


def field_and_divergence(x, t, psi):
    k, d = x.shape
    i, j = np.nonzero(~np.eye(k, dtype=bool))
    diff = x[i] - x[j]
    r = np.sqrt(np.sum(diff ** 2, axis=1))
    value, slope = psi(r, t)
    g = np.zeros_like(x)
    for m in range(i.size):
        g[i[m]] += value[m] * diff[m]
    return g, float(np.sum(slope * r + d * value))


def double_well(x, e):
    """Energy over ordered pairs and its analytic force."""
    k = x.shape[0]
    energy, force = 0.0, np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            if i != j:
                r_vec = x[i] - x[j]
                r = math.sqrt(r_vec @ r_vec)
                s = r - e["d0"]
                energy += e["a"] * s + e["b"] * s ** 2 + e["c"] * s ** 4
                dv = e["a"] + 2 * e["b"] * s + 4 * e["c"] * s ** 3
                force[i] -= 2 * dv * r_vec / r  # v(r_ij) and v(r_ji) both depend on x_i
    return energy / e["temperature"], force / e["temperature"]


def solve(y_start, t_start, t_end, psi, k, d):
    def rhs(t, y):
        g, div = field_and_divergence(y[:-1].reshape(k, d), t, psi)
        return np.append(g.ravel(), -div)
    sol = solve_ivp(rhs, (t_start, t_end), np.append(y_start.ravel(), 0.0), method="DOP853",
                    rtol=ORACLE_TOL, atol=ORACLE_TOL)
    assert sol.success, sol.message
    return sol.y[:-1, -1].reshape(k, d), -sol.y[-1, -1]


def independent_outputs(golden_path):
    """``{"cases": {case_id: {quantity: value}}}`` computed from the raw golden JSON."""
    golden = json.loads(Path(golden_path).read_text())
    out = {}
    for cid, case in golden["cases"].items():
        p, inp = case["psi"]["params"], case["inputs"]
        psi = functools.partial(PSI[case["psi"]["family"]], p)
        x, z = np.array(inp["x"]), np.array(inp["z"])
        k, d = x.shape
        g, div = field_and_divergence(x, inp["t"], psi)
        fx, fld = solve(z, inp["t0"], inp["t1"], psi, k, d)
        iz, ild = solve(x, inp["t1"], inp["t0"], psi, k, d)
        log_prior = -0.5 * np.sum(iz ** 2) - 0.5 * (k - 1) * d * math.log(2 * math.pi)
        energy, force = double_well(x, golden["energy"])
        values = {"field": g, "divergence": div, "forward_x": fx, "forward_logdet": fld,
                  "inverse_z": iz, "inverse_logdet": ild, "log_prob": log_prior + ild,
                  "energy": energy, "force": force}
        out[cid] = {q: np.asarray(v).tolist() for q, v in values.items()}
    return {"implementation": "tests/test_vectors.py oracle", "cases": out}


@pytest.fixture(scope="module")
def oracle():
    return independent_outputs(GOLDEN_SMALL)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def assert_tight_agreement(golden_path, theirs):
    """The oracle agrees with the golden values far inside the thresholds."""
    golden = load_golden(golden_path)
    parsed = {cid: {q: np.asarray(v) for q, v in c.items()} for cid, c in theirs["cases"].items()}
    for r in compare(golden, parsed):
        assert r.max_rel < (DIRECT_AGREEMENT if r.quantity in DIRECT else SOLVED_AGREEMENT), r


def report_line(out, quantity):
    return next(line for line in out.splitlines() if line.startswith(quantity + " "))


# --- vectors ----------------------------------------------------------------------------------

def test_vectors_is_deterministic_byte_for_byte(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(capsys, "vectors", "--out", a, "--small")[0] == 0
    assert run_cli(capsys, "vectors", "--out", b, "--small")[0] == 0
    assert a.read_bytes() == b.read_bytes()
    fresh, stored = json.loads(a.read_text()), json.loads(GOLDEN_SMALL.read_text())
    assert list(fresh["cases"]) == list(stored["cases"])  # the committed file is this set


def test_golden_small_regression_refimpl_still_computes_the_stored_numbers(tmp_path, capsys):
    golden = load_golden(GOLDEN_SMALL)
    tol = golden["reference_solver"]["rtol"], golden["reference_solver"]["atol"]
    ours = {}
    for cid, case in golden["cases"].items():
        out = vectors.compute_outputs(case_spec(golden, cid), *tol, energy=golden["energy"])
        ours[cid] = {q: v.tolist() for q, v in out.items()}
        for q in DIRECT:  # float64 evaluation: the same numbers to rounding
            ref = case["reference"][q]
            assert np.max(np.abs(out[q] - ref)) <= DIRECT_AGREEMENT * max(1.0, np.max(np.abs(ref)))
        for q in SOLVED:
            ref = case["reference"][q]
            assert np.max(np.abs(out[q] - ref)) <= REGRESSION_FACTOR * (tol[1] + tol[0] * np.max(
                np.abs(ref))), (cid, q)
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "ours.json",
                                                                       {"cases": ours}))
    assert code == 0, out
    assert out.count("PASS") == len(golden["quantities"]) + 1  # each row and the verdict


def test_golden_small_documents_schema_thresholds_and_accuracy():
    golden = json.loads(GOLDEN_SMALL.read_text())
    assert golden["schema_version"] == vectors.SCHEMA_VERSION
    assert set(golden["quantities"]) == set(golden["thresholds"]) == set(DIRECT + SOLVED)
    for q, acc in golden["reference_accuracy"].items():
        # the reference is >= 1e4 times more accurate than the pass/fail threshold
        t = golden["thresholds"][q]
        assert min(acc["max_abs_error"] / t["atol"], acc["max_rel_error"] / t["rtol"]) <= 1e-4, q
    assert golden["reference_solver"]["rtol"] <= 1e-10
    for case in golden["cases"].values():
        assert set(case["reference"]) == set(case["reference_error"]) == set(DIRECT + SOLVED)
        assert case["psi"]["family"] in golden["psi_families"]


def test_full_vectors_cover_dimensions_sizes_and_near_coincident_pairs(tmp_path, capsys):
    path = tmp_path / "full.json"
    assert run_cli(capsys, "vectors", "--out", path)[0] == 0
    golden = json.loads(path.read_text())
    cases = golden["cases"].values()
    assert {c["dim"] for c in cases} == {2, 3}
    assert min(c["n_particles"] for c in cases) == 2 and max(c["n_particles"] for c in cases) >= 13
    assert {c["psi"]["family"] for c in cases} == set(FAMILIES)
    close = [c for c in cases if "near-coincident" in c["description"]]
    assert len(close) >= 2
    for c in close:
        x = np.array(c["inputs"]["x"])
        assert abs(np.linalg.norm(x[0] - x[1]) - vectors.NEAR_DISTANCE) < 1e-12
    assert any(c["inputs"]["t0"] != 0.0 or c["inputs"]["t1"] != 1.0 for c in cases)
    # the independent oracle agrees with every full-set case too
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
    assert_tight_agreement(GOLDEN_SMALL, oracle)


def test_npz_outputs_are_read_like_json(tmp_path, capsys, oracle):
    arrays = {f"{cid}/{q}": np.asarray(v) for cid, c in oracle["cases"].items()
              for q, v in c.items()}
    np.savez(tmp_path / "t.npz", **arrays)
    code, out, err = run_cli(capsys, "verify", GOLDEN_SMALL, tmp_path / "t.npz")
    assert code == 0, out + err


def test_quantities_not_provided_pass_unless_strict(tmp_path, capsys, oracle):
    partial = copy.deepcopy(oracle)
    for c in partial["cases"].values():
        del c["log_prob"], c["force"]
    path = write_json(tmp_path / "t.json", partial)
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, path)
    assert code == 0
    assert report_line(out, "log_prob").endswith("not provided")
    assert "not provided: log_prob, force" in out
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, path, "--strict")
    assert code == 1
    assert "FAIL: log_prob, force" in out


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
                                              ("forward_logdet", 10.0), ("inverse_z", 3.0)])
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


def _psi0(golden, cid):
    case = golden["cases"][cid]
    psi = PSI[case["psi"]["family"]]
    return float(psi(case["psi"]["params"], np.zeros(1), case["inputs"]["t"])[0][0])


MISTAKES = {  # a classic convention error -> the quantities it must fail
    "divergence with the paper's j = i term": (
        lambda c, g, cid: {"divergence": c["divergence"] + g["cases"][cid]["dim"]
                           * g["cases"][cid]["n_particles"] * _psi0(g, cid)}, ["divergence"]),
    "unnormalized prior (bgflow)": (
        lambda c, g, cid: {"log_prob": c["log_prob"] + 0.5 * (g["cases"][cid]["n_particles"] - 1)
                           * g["cases"][cid]["dim"] * math.log(2 * math.pi)}, ["log_prob"]),
    "unordered pairs (bgflow)": (
        lambda c, g, cid: {"energy": c["energy"] / 2,
                           "force": (np.asarray(c["force"]) / 2).tolist()}, ["energy", "force"]),
    "log-det sign": (lambda c, g, cid: {"forward_logdet": -c["forward_logdet"],
                                        "inverse_logdet": -c["inverse_logdet"]},
                     ["forward_logdet", "inverse_logdet"]),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_classic_convention_mistakes_fail(tmp_path, capsys, oracle, mistake):
    golden = json.loads(GOLDEN_SMALL.read_text())
    edit, failing = MISTAKES[mistake]
    bad = copy.deepcopy(oracle)
    for cid, case in bad["cases"].items():
        case.update(edit(case, golden, cid))
    code, out, _ = run_cli(capsys, "verify", GOLDEN_SMALL, write_json(tmp_path / "t.json", bad))
    assert code == 1
    for q in DIRECT + SOLVED:
        assert ("FAIL" in report_line(out, q)) == (q in failing), (q, out)


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
    code, _, err = run_cli(capsys, "vectors", "--out", tmp_path / "no" / "dir.json", "--small")
    assert code == 2 and "cannot write" in err


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
    cases.append((GOLDEN_SMALL, tmp_path / "broken.npz", "not a readable .npz"))
    wrong = json.loads(GOLDEN_SMALL.read_text())
    wrong["schema_version"] = 99
    cases.append((write_json(tmp_path / "g.json", wrong), tmp_path / "ok.json", "schema_version"))
    for golden, theirs, words in cases:
        code, _, err = run_cli(capsys, "verify", golden, theirs)
        assert code == 2 and words in err, (theirs, err)
