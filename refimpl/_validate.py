"""Input checks shared by the public functions.

Everything public validates here, in Python, before any Numba kernel runs: a
kernel given a wrong shape would read out of bounds instead of raising.
"""

import contextlib
import math
import numbers

import numpy as np


# Largest coordinate accepted as a configuration entry. Squared pair distances
# then stay below 4 D 1e300, finite in float64 for any D < 4e7, so every
# kernel computes with finite distances; larger inputs are refused with a
# ValueError instead of producing inf or NaN downstream.
MAX_COORDINATE = 1e150

# A configuration counts as mean-free when its centre is this small relative
# to its largest coordinate: float64 rounding of ``remove_mean`` gives ~1e-16.
# Inputs of lower precision (float32) get MEAN_FREE_ULPS of their own epsilon.
MEAN_FREE_RTOL = 1e-10
MEAN_FREE_ULPS = 8

# dtype kinds refused as numbers, with what they are.
_NOT_REAL = {"b": "boolean", "c": "complex", "U": "string", "S": "bytes", "O": "object",
             "V": "structured", "M": "datetime", "m": "timedelta"}


def _real_ndarray(a, name):
    """``a`` as an ndarray of real numbers (not yet converted); TypeError naming ``name``."""
    try:
        arr = np.asarray(a)
    except Exception:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of real numbers; got an object NumPy "
                        f"cannot make a rectangular array of ({type(a).__name__})") from None
    if arr.dtype.kind not in "iuf":
        what = _NOT_REAL.get(arr.dtype.kind, str(arr.dtype))
        hint = " (convert with float() or np.asarray(..., dtype=float))" \
            if arr.dtype.kind in "USb" else ""
        raise TypeError(f"{name} must be a real numeric array; got a {what} array "
                        f"(dtype {arr.dtype}){hint}")
    return arr


def as_float_array(a, name, shape=None, finite=True):
    """A writable, C-contiguous float64 copy of the real array ``a``.

    Read-only, memory-mapped, non-contiguous, integer and float32 inputs are
    accepted (copied); boolean, complex, string and object arrays raise
    ``TypeError`` naming ``name``. With ``finite`` (the default) NaN and
    infinities raise ``ValueError``.
    """
    arr = _float_copy(_real_ndarray(a, name))
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if finite:
        check_finite(arr, name)
    return arr


def _float_copy(arr):
    return np.array(arr, dtype=np.float64, order="C", copy=True)


def as_configurations(x, name="x", n_particles=None, dim=None, mean_free=False):
    """Return ``x`` as a writable C-contiguous float64 copy of shape ``(..., K, D)``.

    Raises ``ValueError`` for a rank below 2, fewer than two particles,
    ``D < 1``, a mismatch with ``n_particles``/``dim`` when given, non-finite
    entries or entries beyond ``MAX_COORDINATE``; ``TypeError`` for
    non-real input (see ``as_float_array``). With ``mean_free``, every
    configuration must be mean-free to the precision of the input's dtype.
    """
    original = _real_ndarray(x, name)
    arr = _float_copy(original)
    # One pass over |x| tells whether every entry is finite and within
    # MAX_COORDINATE (NaN compares false); only if not are the two checks that
    # find and name the first bad entry needed, each in its place below.
    clean = arr.size == 0 or np.abs(arr).max() <= MAX_COORDINATE
    if not clean:
        check_finite(arr, name)
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
    if not clean:
        check_range(arr, name)
    if mean_free:
        eps = np.finfo(original.dtype).eps if original.dtype.kind == "f" else 0.0
        check_mean_free(arr, name, max(MEAN_FREE_RTOL, MEAN_FREE_ULPS * eps))
        if eps > np.finfo(np.float64).eps:
            # mean-free to its own precision (e.g. float32): project exactly, so
            # that float64 steps downstream see a mean-free configuration too
            arr -= arr.mean(axis=-2, keepdims=True)
    return arr


def check_range(arr, name, limit=MAX_COORDINATE):
    """``ValueError`` naming ``name`` if an entry of ``arr`` exceeds ``limit`` in size."""
    if arr.size and np.abs(arr).max() > limit:
        bad = tuple(int(i) for i in np.argwhere(np.abs(arr) > limit)[0])
        raise ValueError(f"{name} is out of range: entry {bad} is {arr[bad]:.3g}, beyond "
                         f"+-{limit:.0e} (squared distances would overflow float64); "
                         "rescale the coordinates")


def check_mean_free(x, name="x", rtol=MEAN_FREE_RTOL):
    """Raise ``ValueError`` unless every configuration in ``x`` is mean-free.

    The centre of mass must be below ``rtol (1 + max |x|)`` per configuration.
    """
    centre = np.abs(x.mean(axis=-2)).max(axis=-1)
    size = 1.0 + np.abs(x).max(axis=(-2, -1))
    bad = centre > rtol * size
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0])
        raise ValueError(
            f"{name} must be mean-free (densities live on the mean-free subspace): "
            f"configuration {first if bad.ndim else '()'} has centre of mass of size "
            f"{np.atleast_1d(centre)[first]:.3g}; apply refimpl.remove_mean first")


def check_finite(arr, name):
    """``ValueError`` naming ``name`` and the first index if ``arr`` holds NaN or inf."""
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        where = f" at index {bad if len(bad) != 1 else bad[0]}" if bad else ""
        raise ValueError(f"{name} contains NaN or infinite values (first {arr[bad]}{where}); "
                         "every entry must be finite")


def as_finite_float(v, name):
    """A finite real number (Python or NumPy scalar, or 0-d array) as ``float``."""
    if type(v) is float and math.isfinite(v):  # the common case, answered at once
        return v
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iuf":
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating,
                                                             np.integer)):
        raise TypeError(f"{name} must be a real number, got {_describe(v)}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def as_time(v, name="t"):
    """A time ``t``: a finite real number within ``MAX_COORDINATE`` (as coordinates,
    so that psi's time terms, such as ``c t`` of ``TanhMLP`` or ``(t - nu)^2``,
    stay finite or overflow alone, never meet an infinity of the other sign)."""
    v = as_finite_float(v, name)
    if abs(v) > MAX_COORDINATE:
        raise ValueError(f"{name} = {v:.3g} is out of range: beyond +-{MAX_COORDINATE:.0e}")
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


# The solver counts steps in 64-bit integers; a larger bound overflows them (and in a model
# file it is surely corruption). Used by EquivariantFlow and refimpl.io.
MAX_STEPS_LIMIT = 2**62


def as_positive_int(v, name, minimum=1, maximum=None):
    """An integer (Python, NumPy or 0-d array) in ``[minimum, maximum]`` as ``int``."""
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_describe(v)}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return v


def as_generator(rng, name="rng"):
    """Accept a ``numpy.random.Generator`` or a non-negative integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.ndarray) and rng.ndim == 0 and rng.dtype.kind in "iu":
        rng = rng[()]
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"{name} must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator or a non-negative integer seed, "
                    f"got {_describe(rng)}")


def _describe(v):
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


@contextlib.contextmanager
def memory_for(name, value):
    """Turn a ``MemoryError`` inside the block into a ``ValueError`` naming ``name = value``."""
    try:
        yield
    except MemoryError as exc:
        raise ValueError(f"{name} = {value} needs more memory than is available ({exc}); "
                         f"ask for a smaller {name}") from None
