r"""An exponential for the Numba kernels: within an ulp, the same bits everywhere, vectorizable.

``math.exp`` inside a Numba loop is a call into the platform's libm: one
value at a time (LLVM's loop vectorizer does not vectorize through it), a few
nanoseconds each, and a last bit that depends on that libm. :func:`exp` below
uses only float64 additions, subtractions and multiplications, a few integer
operations on the bits, and selects instead of branches, so

* a loop ``for i in range(n): out[i] = exp(a[i])`` vectorizes (SIMD), and a
  value's bits are the same whether it is computed in such a loop or alone;
* the result is the same on every IEEE-754 machine (x86-64, ARM): every
  operation is a correctly rounded float64 operation in a fixed order, and
  without fastmath LLVM neither reorders them nor fuses a multiply and an add
  into an FMA.

The method is the textbook one (e.g. Muller, *Elementary Functions*, ch. 11;
Cody and Waite 1980):

1. ``n = round(x / ln 2)``, by adding and subtracting ``1.5 * 2**52`` (the
   addition rounds to an integer, ties to even); ``|n| <= 1076`` after the
   clamp below;
2. ``r = x - n ln 2`` with ln 2 in two parts (Cody--Waite): ``LN2_HI`` has 42
   significant bits, so ``n * LN2_HI`` and ``x - n * LN2_HI`` are exact for
   ``|n| < 2**11``; ``n * LN2_LO`` is the small correction, and the rounding
   error of subtracting it is carried along (``e`` below). ``|r| < 0.3466``
   (``ln 2 / 2`` plus the rounding of ``x / ln 2``);
3. ``exp(r) = 1 + q`` with ``q = r + e + s``, ``s`` the Taylor polynomial
   ``sum_{k=2}^{13} r**k / k!`` (Horner). Truncation error:
   ``|exp(r) - T_13(r)| <= 0.3466**14 / 14! * exp(0.3466) < 5.9e-18 < 2**-57``
   (relative to ``exp(r) >= 0.707``: below 0.07 ulp). ``1 + r`` is split
   exactly into ``hi + lo`` (Fast2Sum), and ``hi + (lo + (e + s))`` rounds
   once where it matters;
4. ``exp(x) = 2**n * exp(r)``, with ``2**n`` built from the exponent bits in
   two normal factors ``2**(n // 2) * 2**(n - n // 2)``: the first product
   is exact, the second rounds once, so overflow gives ``inf``, underflow
   ``0`` and results in the subnormal range come out rounded from the
   (already rounded) ``exp(r)``, without a branch.

Accuracy: at most 1 ulp for every normal result, and at most ``2**-1074``
(the subnormal spacing) for a subnormal one. Worked out by hand, the errors
before the final rounding are, in units of ``2**-53``, at ``r = ln 2 / 2``:
truncation 0.05, using ``r`` for ``r + e`` in the polynomial 0.10, the
rounding of ``p`` 0.06, of ``r * r`` 0.07, of ``s``, ``e + s`` and ``lo +
...`` 0.06 each: 0.47, or 0.24 ulp of a result in ``[1, 2)``; at ``r = -ln 2
/ 2`` the same terms add up to 0.33, and the ulp of a result in ``[0.5, 1)``
is ``2**-53``. With the final rounding: at most 0.84 ulp (about 0.92 of the
subnormal spacing there). ``tests/test_exp.py`` checks 0.85 against mpmath
and 80-bit ``expl`` on a million points; the largest error seen (10 million
points) is 0.70 ulp. Rounding ``r`` and ``1 + r`` instead of carrying ``e``
and ``lo`` reaches 0.98 ulp. ``inf`` exactly where ``exp(x)`` exceeds the largest double
(``x > 709.782712893384``), ``0`` where it is below ``2**-1075`` (``x <
-745.1332191019412``, it rounds to 0), ``exp(+-inf) = inf, 0``,
``exp(nan) = nan`` and ``exp(+-0) = 1`` exactly.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE-754 bits of a float64, as an int64 (a bit cast, no conversion)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 ``bits`` (a bit cast)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# Arguments beyond these give inf and 0 anyway; clamping keeps n (and the
# exponent fields below) in range. exp(709.8) > DBL_MAX, exp(-746) < 2**-1076.
X_MAX = 709.8
X_MIN = -746.0
INV_LN2 = 1.4426950408889634  # 1 / ln 2 rounded to float64
# ln 2 = LN2_HI + LN2_LO (error < 2**-100): LN2_HI is ln 2 rounded to 42
# significant bits, so n * LN2_HI is exact for |n| < 2**11.
LN2_HI = float.fromhex("0x1.62e42fefa3800p-1")
LN2_LO = float.fromhex("0x1.ef35793c76730p-45")
# x / ln2 + SHIFT rounds to an integer: float64s near 1.5 * 2**52 are spaced by 1.
SHIFT = 1.5 * 2.0**52
# The bits of SHIFT + n minus those of SHIFT are n (|n| < 2**51).
SHIFT_BITS = int(np.float64(SHIFT).view(np.int64))
EXPONENT_BIAS = 1023
MANTISSA_BITS = 52
# Taylor coefficients 1 / k! (k = 0 ... 13), each rounded to float64.
INV_FACTORIAL = tuple(1.0 / math.factorial(k) for k in range(14))


@njit(cache=True, error_model="numpy")
def _power_of_two(k):
    """``2.0**k`` for an integer ``-1022 <= k <= 1023``, from its exponent bits."""
    return _bits_float((k + EXPONENT_BIAS) << MANTISSA_BITS)


@njit(cache=True, error_model="numpy")
def exp(x):
    """``e**x`` for a float64 ``x``, within an ulp (module docstring), no libm call."""
    # Clamp; a NaN compares false and passes through unchanged.
    x = X_MAX if x > X_MAX else x
    x = X_MIN if x < X_MIN else x
    # 1. n = round(x / ln 2), an integer-valued float.
    shifted = x * INV_LN2 + SHIFT
    n = shifted - SHIFT
    # 2. r = x - n ln 2 = r_hi - c; e is what rounding r lost (r + e = r_hi - c
    # up to 2**-80).
    r_hi = x - n * LN2_HI
    c = n * LN2_LO
    r = r_hi - c
    e = (r_hi - r) - c
    # 3. s = exp(r) - 1 - r, Horner; then 1 + r = hi + lo exactly.
    f = INV_FACTORIAL
    p = f[13]
    p = f[12] + r * p
    p = f[11] + r * p
    p = f[10] + r * p
    p = f[9] + r * p
    p = f[8] + r * p
    p = f[7] + r * p
    p = f[6] + r * p
    p = f[5] + r * p
    p = f[4] + r * p
    p = f[3] + r * p
    p = f[2] + r * p
    s = (r * r) * p
    hi = 1.0 + r
    lo = (1.0 - hi) + r
    exp_r = hi + (lo + (e + s))
    # 4. times 2**n = 2**half * 2**(n - half), both factors normal.
    k = _float_bits(shifted) - SHIFT_BITS
    half = k >> 1
    return (exp_r * _power_of_two(half)) * _power_of_two(k - half)
