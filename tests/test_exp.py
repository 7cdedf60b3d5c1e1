"""refimpl._exp.exp against higher-precision oracles, np.exp, and itself in a vector loop.

Oracles: mpmath (arbitrary precision) everywhere, and for the million-point
sweep the platform's extended ``expl`` through ``np.longdouble`` where that
has a 64-bit significand (x86), itself checked against mpmath here. Where
``long double`` is only a double, the sweep uses mpmath on fewer points.
"""

import math
import platform
import re

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from refimpl import _exp
from refimpl._exp import exp

mpmath.mp.prec = 120
# The documented accuracy (module docstring): the contract is at most 1 ulp of
# the true value for a normal result; the bound of the rounding errors worked
# out there is 0.84 ulp, checked here (an uncompensated 1 + q exceeds it).
ULP_BOUND = 0.85
SUBNORMAL_SPACING = 2.0**-1074
DBL_MIN = 2.0**-1022
# exp(x) > DBL_MAX exactly for x > X_OVERFLOW (the largest double below ln DBL_MAX).
LN_DBL_MAX = mpmath.log(mpmath.mpf(np.finfo(np.float64).max))
X_OVERFLOW = 709.782712893384
# exp(x) < 2**-1075 (half the smallest subnormal: rounds to 0) for x < ln(2**-1075).
LN_HALF_TINY = mpmath.log(mpmath.mpf(2) ** -1075)
# np.longdouble as an oracle: expl is accurate to about an ulp of a 64-bit
# significand; 2**-60 relative leaves room for that and is 2**-8 of a double ulp.
EXTENDED = np.finfo(np.longdouble).nmant >= 63
EXTENDED_RTOL = 2.0**-60


@njit(error_model="numpy")
def exp_loop(a, out):
    """The loop LLVM vectorizes (runtime trip count, nothing else in the body)."""
    for i in range(a.size):
        out[i] = exp(a[i])


def _exp_array(x):
    out = np.empty_like(x)
    exp_loop(x, out)
    return out


def _sweep_points(n, rng):
    """Points over [-745.2, 709.8]: uniform, dense near 0, near the overflow and
    underflow thresholds, and at and between integer multiples of ln 2."""
    ln2 = math.log(2.0)
    k = rng.integers(-1075, 1025, n // 4).astype(float)
    parts = [
        rng.uniform(-745.2, 709.8, n // 5),
        rng.uniform(-1.0, 1.0, n // 10),
        rng.choice([-1.0, 1.0], n // 10) * 10.0 ** rng.uniform(-20.0, 0.0, n // 10),
        X_OVERFLOW + rng.uniform(-1e-3, 1e-3, n // 20),
        rng.uniform(-745.2, -708.3, n // 20),  # subnormal results
        k * ln2 + rng.uniform(-1e-9, 1e-9, k.size),
        (k + 0.5) * ln2 + rng.uniform(-1e-9, 1e-9, k.size),
    ]
    return np.concatenate(parts)


def _mp_exp(x):
    return mpmath.exp(mpmath.mpf(float(x)))


def _ulp(true):
    """The float64 ulp at a true value ``true`` (mpmath number or long double array)."""
    if isinstance(true, np.ndarray):
        _, e = np.frexp(true)
        return np.maximum(np.ldexp(np.ones_like(true), e - 53), SUBNORMAL_SPACING)
    return max(mpmath.ldexp(1, mpmath.frexp(true)[1] - 53), SUBNORMAL_SPACING)


def _errors_in_ulps(x, y):
    """|y - exp(x)| in ulps of the true value, for finite true values."""
    if EXTENDED:
        true = np.exp(x.astype(np.longdouble))
        return np.asarray(np.abs(y.astype(np.longdouble) - true) / _ulp(true), dtype=float)
    return np.array([float(abs(mpmath.mpf(float(b)) - _mp_exp(a)) / _ulp(_mp_exp(a)))
                     for a, b in zip(x, y)])


def _check_contract(x, y):
    """Every result of ``exp`` at ``x`` against the documented contract; returns
    the ulp errors of the normal results."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    assert np.array_equal(np.isnan(y), np.isnan(x))
    assert np.all(y[x == np.inf] == np.inf) and np.all(y[x == -np.inf] == 0.0)
    finite = np.isfinite(x)
    over = finite & (x > X_OVERFLOW)
    assert np.all(y[over] == np.inf)
    assert np.all(y[finite & (x < float(LN_HALF_TINY))] == 0.0)
    rest = finite & ~over
    errors = _errors_in_ulps(x[rest], y[rest])
    assert np.all(np.isfinite(y[rest]))
    normal = y[rest] >= DBL_MIN
    assert np.all(errors[normal] <= ULP_BOUND), (np.max(errors), x[rest][np.argmax(errors)])
    # below DBL_MIN the ulp is the subnormal spacing 2**-1074: at most one of them
    assert np.all(errors[~normal] <= 1.0)
    return errors[normal]


def _long_double_to_mpf(value):
    """A long double as an mpmath number, exactly (its significand as two doubles)."""
    m, e = np.frexp(value)
    hi = float(m)
    return mpmath.ldexp(mpmath.mpf(hi) + float(m - np.longdouble(hi)), int(e))


def test_extended_oracle_agrees_with_mpmath():
    if not EXTENDED:
        pytest.skip("long double is a plain double here; the sweep uses mpmath")
    x = _sweep_points(20_000, np.random.default_rng(1))[::5]
    mp_true = [_mp_exp(v) for v in x]
    worst = max(abs(_long_double_to_mpf(e) - t) / t
                for e, t in zip(np.exp(x.astype(np.longdouble)), mp_true))
    assert worst <= EXTENDED_RTOL


def test_million_points_within_an_ulp_of_the_true_value():
    n = 1_000_000 if EXTENDED else 20_000
    x = _sweep_points(n, np.random.default_rng(0))
    errors = _check_contract(x, _exp_array(x))
    assert x.size == n and errors.size > 0.8 * n  # about a tenth overflow or is subnormal


def test_within_an_ulp_of_numpy_exp():
    x = _sweep_points(1_000_000, np.random.default_rng(2))
    x = x[x <= X_OVERFLOW]
    y, want = _exp_array(x), np.exp(x)
    spacing = np.maximum(np.spacing(want), SUBNORMAL_SPACING)
    assert np.all(np.abs(y - want) <= spacing)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_contract_for_any_float(x):
    _check_contract([x], [exp(x)])


@given(st.floats(-745.2, 709.8))
def test_contract_in_the_finite_range_against_mpmath(x):
    y = exp(x)
    if x > X_OVERFLOW:
        assert y == math.inf
        return
    true = _mp_exp(x)
    assert abs(mpmath.mpf(y) - true) <= ULP_BOUND * _ulp(true)


def test_special_values():
    assert exp(0.0) == 1.0 and exp(-0.0) == 1.0
    assert exp(math.inf) == math.inf and exp(-math.inf) == 0.0
    assert math.isnan(exp(math.nan))
    assert exp(1e308) == math.inf and exp(-1e308) == 0.0
    assert exp(X_OVERFLOW) < math.inf and exp(np.nextafter(X_OVERFLOW, 710.0)) == math.inf
    assert exp(5e-324) == 1.0 and exp(-5e-324) == 1.0


def test_overflow_and_underflow_exactly_at_the_thresholds():
    """inf exactly where exp(x) > DBL_MAX, 0 where exp(x) < 2**-1075, on the
    thousand doubles either side of each threshold."""
    for threshold in (LN_DBL_MAX, LN_HALF_TINY):
        x0 = float(threshold)
        x = x0 + np.arange(-1000, 1001) * np.spacing(x0)
        y = _exp_array(x)
        above = np.array([mpmath.mpf(v) > threshold for v in x])
        if threshold == LN_DBL_MAX:
            assert np.all(np.isinf(y[above])) and np.all(np.isfinite(y[~above]))
        else:
            assert np.all(y[~above] == 0.0) and np.all(y[above] > 0.0)
    assert float(LN_DBL_MAX) == X_OVERFLOW and mpmath.mpf(X_OVERFLOW) < LN_DBL_MAX


def test_vector_loop_and_scalar_calls_give_the_same_bits():
    rng = np.random.default_rng(3)
    x = np.concatenate([_sweep_points(3000, rng),
                        [0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324]])
    rng.shuffle(x)
    x = x[:2999]  # not a multiple of any vector width: the scalar remainder runs too
    scalar = np.array([exp(v) for v in x])
    for start in range(4):  # shifted starts: each value lands in another lane
        assert np.array_equal(_exp_array(x[start:]).view(np.int64), scalar[start:].view(np.int64))


def test_range_reduction_constants():
    ln2 = mpmath.log(2)
    hi_mantissa, _ = math.frexp(_exp.LN2_HI)
    assert (hi_mantissa * 2**42).is_integer()  # 42 significant bits: n * LN2_HI exact, |n| < 2**11
    assert abs(mpmath.mpf(_exp.LN2_HI) + _exp.LN2_LO - ln2) < mpmath.mpf(2) ** -100
    assert _exp.INV_LN2 == float(1 / ln2)


def test_taylor_truncation_bound_of_the_docstring():
    r_max = mpmath.mpf("0.3466")
    assert r_max > mpmath.log(2) / 2 * (1 + mpmath.mpf(2) ** -40)
    worst = max(abs(mpmath.exp(r) - sum(r**k / mpmath.factorial(k) for k in range(14)))
                for r in mpmath.linspace(-r_max, r_max, 201))
    assert worst < 5.9e-18 < 2.0**-57


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="reads x86-64 assembly")
def test_the_loop_vectorizes_without_calls_or_fma():
    _exp_array(np.ones(3))  # compile (not cached: its assembly is readable)
    asm = exp_loop.inspect_asm(exp_loop.signatures[0])
    body = asm[:asm.index(".Lfunc_end0")]  # the compiled loop; its Python wrapper follows
    assert not re.search(r"\bcall", body)
    assert re.search(r"\bv?(mul|add)pd\b.*%[xyz]mm", body)  # packed (SIMD) float64 arithmetic
    assert not re.search(r"fma|vf(n?m)(add|sub)", body)
