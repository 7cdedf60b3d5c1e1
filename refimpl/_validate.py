"""Input checks shared by the public functions.

Everything public validates here, in Python, before any Numba kernel runs: a
kernel given a wrong shape would read out of bounds instead of raising.
"""

import numbers

import numpy as np


def as_configurations(x, name="x", n_particles=None, dim=None):
    """Return ``x`` as a C-contiguous float64 array of shape ``(..., K, D)``.

    Raises ``ValueError`` for a rank below 2, fewer than two particles,
    ``D < 1``, a mismatch with ``n_particles``/``dim`` when given, or
    non-finite entries; ``TypeError`` for non-numeric input.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of shape (..., K, D): {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (..., K, D) with K particles in D "
                         f"dimensions; got shape {arr.shape}")
    k, d = arr.shape[-2:]
    if k < 2:
        raise ValueError(f"{name} needs at least K = 2 particles; got shape {arr.shape}")
    if d < 1:
        raise ValueError(f"{name} needs D >= 1 dimensions; got shape {arr.shape}")
    if n_particles is not None and k != n_particles:
        raise ValueError(f"{name} has K = {k} particles (shape {arr.shape}); "
                         f"expected K = {n_particles}")
    if dim is not None and d != dim:
        raise ValueError(f"{name} has D = {d} dimensions (shape {arr.shape}); expected D = {dim}")
    check_finite(arr, name)
    return arr


def check_finite(arr, name):
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or infinite values (first at index {tuple(bad)})")


def as_float_array(a, name, shape=None):
    """A finite float64 C-contiguous array, optionally of a given shape."""
    try:
        arr = np.ascontiguousarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array: {exc}") from None
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    check_finite(arr, name)
    return arr


def as_finite_float(v, name):
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def as_positive_float(v, name):
    v = as_finite_float(v, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {v}")
    return v


# scipy's RK45 raises any rtol below 100 eps to that value (with a warning);
# refimpl does the same, so that its steps stay scipy's at every tolerance.
MIN_RTOL = 100 * np.finfo(float).eps


def as_solver_rtol(v, name="rtol"):
    """A positive rtol, raised to ``MIN_RTOL`` with a warning as scipy does."""
    v = as_positive_float(v, name)
    if v < MIN_RTOL:
        import warnings
        warnings.warn(f"{name} = {v:g} is below 100 eps; using {MIN_RTOL:g} (as scipy does)",
                      stacklevel=3)
        v = MIN_RTOL
    return v


def as_positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")
    return v


def as_generator(rng):
    """Accept a ``numpy.random.Generator`` or an integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError("rng must be a numpy.random.Generator or an integer seed, "
                    f"got {type(rng).__name__}")
