"""Butcher tableau of the Dormand--Prince 5(4) pair ("RK45", "DOPRI5").

Notation as in Hairer, Norsett & Wanner, *Solving Ordinary Differential
Equations I*, Sec. II.4 and II.5: stage ``s`` is evaluated at ``t + C[s] h`` on
``y + h sum_j A[s, j] k_j``; the fifth-order solution is ``y + h sum_s B[s] k_s``
and the embedded fourth-order one uses ``B_HAT``.

The pair is "first same as last" (FSAL): in the full seven-stage tableau the
seventh row of ``A`` equals ``B``, so the seventh stage ``k_7 = f(t + h,
y_new)`` is the first stage of the next step. ``A`` below holds the six rows
that are computed within a step.
The error estimate therefore has seven weights, ``E = B_HAT - B`` with
``B[6] = 0``.

References
----------
J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta formulae",
J. Comput. Appl. Math. 6 (1980) 19-26.
"""

import numpy as np

N_STAGES = 6  # stages per step (the 7th, FSAL stage is the next step's 1st)
ORDER = 5  # order of the propagated solution
ERROR_ESTIMATOR_ORDER = 4  # order of the embedded solution

C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])

A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1 / 5, 0.0, 0.0, 0.0, 0.0],
    [3 / 40, 9 / 40, 0.0, 0.0, 0.0],
    [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
])

# Weights of the fifth-order solution, padded with the FSAL stage's zero.
B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])

# Weights of the embedded fourth-order solution.
B_HAT = np.array([5179 / 57600, 0.0, 7571 / 16695, 393 / 640,
                  -92097 / 339200, 187 / 2100, 1 / 40])

# Error weights E = B_HAT - B, written from their exact fractions rather than
# computed by subtraction, so that they are the correctly rounded values (the
# same literals scipy.integrate.RK45 uses; parity depends on it).
E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200,
              -22 / 525, 1 / 40])


def check_tableau(atol=1e-15):
    """Raise ``ValueError`` if the tableau is inconsistent (checked at import).

    Checks the row-sum condition ``sum_j A[s, j] = C[s]``, consistency
    ``sum(B) = sum(B_HAT) = 1``, ``E = B_HAT - B`` and that the FSAL stage has zero weight in ``B``.
    A real check, not ``assert``: ``python -O`` would skip that.
    """
    conditions = (
        (np.allclose(A.sum(axis=1), C, rtol=0, atol=atol), "rows of A must sum to C"),
        (abs(B.sum() - 1.0) <= atol, "sum(B) must be 1"),
        (abs(B_HAT.sum() - 1.0) <= atol, "sum(B_HAT) must be 1"),
        (np.allclose(E, B_HAT - B, rtol=0, atol=atol), "E must equal B_HAT - B"),
        (abs(E.sum()) <= atol, "sum(E) must be 0"),
        (B[N_STAGES] == 0.0, "the FSAL stage must not enter the propagated solution"),
    )
    broken = [message for ok, message in conditions if not ok]
    if broken:
        raise ValueError("inconsistent Dormand-Prince tableau: " + "; ".join(broken))


check_tableau()
