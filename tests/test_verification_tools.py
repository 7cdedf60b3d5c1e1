"""The verification tools can fail: each test below catches a named defect of
`refimpl verify` or of refimpl.testing that the rest of the suite would miss
(found by scripts/mutation_check.py)."""

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import Phase, settings

import refimpl
from refimpl.cli import main
from refimpl.testing import DivergenceTests, assert_equivariant, assert_invariant

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden_small.json"


def _outputs_with_one_deviation(golden, quantity, case_id, deviation):
    """Every case's reference value of ``quantity``, one entry of ``case_id`` moved."""
    outputs = {}
    for cid, case in golden["cases"].items():
        value = np.array(case["reference"][quantity], dtype=float)
        if cid == case_id:
            value.flat[0] += deviation
        outputs[cid] = {quantity: value.tolist()}
    return {"cases": outputs}


@pytest.mark.parametrize("quantity", ["field", "log_prob"])
def test_verify_allows_atol_plus_rtol_times_scale_and_no_more(quantity, tmp_path, capsys):
    """Defects: `verify` ignoring atol (allowing only rtol * scale) or ignoring
    rtol (only atol). The deviations sit between the two bounds."""
    golden = json.loads(GOLDEN.read_text())
    scales = {cid: np.max(np.abs(case["reference"][quantity]))
              for cid, case in golden["cases"].items()}
    case_id = max(scales, key=scales.get)  # the largest scale: rtol matters most there
    t = golden["thresholds"][quantity]
    rel = t["rtol"] * scales[case_id]
    # rel + atol / 2 exceeds atol alone too, so ignoring rtol fails the first deviation
    assert rel > t["atol"] / 2
    for fraction, expected in ((0.5, 0), (1.5, 1)):
        mine = tmp_path / f"mine_{fraction}.json"
        mine.write_text(json.dumps(_outputs_with_one_deviation(
            golden, quantity, case_id, rel + fraction * t["atol"])))
        assert main(["verify", str(GOLDEN), str(mine)]) == expected, (fraction,
                                                                       capsys.readouterr().out)


def _distance_01(x):
    """|x_0 - x_1|: invariant under rotations and translations, not permutations."""
    return np.linalg.norm(x[..., 0, :] - x[..., 1, :], axis=-1)


def test_assert_invariant_applies_the_permutation():
    """Defect: `assert_invariant` ignoring the permutation passes this function."""
    x = np.random.default_rng(0).normal(size=(2, 3, 2))
    theta = 0.7
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    assert_invariant(_distance_01, x, rotation=rotation, permutation=np.array([1, 0, 2]),
                     translation=np.array([1.0, -2.0]))  # swapping 0 and 1 keeps it
    with pytest.raises(AssertionError, match="permutation"):
        assert_invariant(_distance_01, x, permutation=np.array([0, 2, 1]))


def test_assert_equivariant_applies_the_permutation():
    """Defect: `assert_equivariant` ignoring the permutation passes a per-particle weighting."""
    weights = np.array([1.0, 2.0, 3.0])[:, None]
    x = np.random.default_rng(1).normal(size=(2, 3, 2))
    assert_equivariant(lambda y: weights * y, x, translation=None, kind="vector",
                       rotation=np.array([[0.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(AssertionError, match="permutation"):
        assert_equivariant(lambda y: weights * y, x, permutation=np.array([2, 0, 1]),
                           kind="vector")


class _RBFDivergence(DivergenceTests):
    """DivergenceTests alone, without FieldSymmetryTests (it used to need its ``_case``)."""

    __test__ = False  # run explicitly below
    n_particles, dim = (2, 4), 2
    psi = refimpl.RBFKernel(np.full((50, 10), 0.05))

    def field(self, x):
        return refimpl.vector_field(x, 0.5, self.psi)

    def divergence(self, x):
        return refimpl.divergence(x, 0.5, self.psi)


class _WrongDivergence(_RBFDivergence):
    def divergence(self, x):  # a spurious D K c, like the paper's j = i term D K psi(0, t)
        k, d = x.shape[-2:]
        return super().divergence(x) + 0.1 * d * k


def test_divergence_tests_run_when_subclassed_alone():
    tests = _RBFDivergence()
    tests.test_divergence_is_invariant()
    tests.test_divergence_is_the_jacobian_trace()
    # the first falsifying example is enough: no shrinking (which takes a minute)
    wrong = settings(max_examples=5, phases=[Phase.generate], database=None)(
        _WrongDivergence.test_divergence_is_the_jacobian_trace)
    with pytest.raises(AssertionError):
        wrong(_WrongDivergence())


def test_checkers_work_without_hypothesis():
    code = textwrap.dedent("""
        import sys

        class NoHypothesis:
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ModuleNotFoundError("No module named 'hypothesis' (blocked)")

        sys.meta_path.insert(0, NoHypothesis())
        import numpy as np
        from refimpl.testing import assert_equivariant, assert_invariant

        x = np.random.default_rng(0).normal(size=(3, 2))
        assert_equivariant(lambda y: 2 * y, x, permutation=np.array([2, 0, 1]), kind="vector")
        try:
            assert_invariant(lambda y: y[..., 0, 0], x, permutation=np.array([1, 0, 2]))
        except AssertionError:
            pass
        else:
            raise SystemExit("assert_invariant passed a non-invariant function")
        try:
            from refimpl.testing import configurations
        except ImportError as exc:
            assert "hypothesis" in str(exc), exc
        else:
            raise SystemExit("configurations imported without hypothesis")
        assert "hypothesis" not in sys.modules
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
