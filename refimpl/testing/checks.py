"""Symmetry checkers that work on any NumPy-in/NumPy-out callable.

Plain NumPy: usable without hypothesis (the strategies and test classes
need it).
"""

import numpy as np

# Default tolerances of the symmetry checkers, for float64 outputs of order one:
# rounding gives ~1e-15 relative, cancellation among O(K) pair terms a few
# orders more, so 1e-9 leaves ample headroom yet is far below any real defect.
EQUIVARIANCE_RTOL = 1e-9
EQUIVARIANCE_ATOL = 1e-12
# The centre of mass of an output is a sum of K terms that cancel exactly in
# exact arithmetic; in float64 it is off by ~K u max|term|.
MEAN_FREE_RTOL = 1e-10
MEAN_FREE_ATOL = 1e-12
# Central differences with step eps: truncation ~eps^2 |g'''| / 6 and rounding
# ~u |g| / eps, both ~1e-11 per diagonal entry when g and its derivatives are
# of order one, summed over K D entries. Narrow features raise the truncation
# error (refimpl's default RBFs, of width 0.16, give ~1e-8 relative): 1e-6.
JACOBIAN_EPS = 1e-5
JACOBIAN_RTOL = 1e-6
JACOBIAN_ATOL = 1e-7


def _positive(value, name):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


# ---------------------------------------------------------------------------
# Group action


def act(x, rotation=None, permutation=None, translation=None):
    """``(g . x)_i = Q x_{pi(i)} + b`` for ``x (..., K, D)``; ``None`` is the identity.

    For tangent vectors (velocities, forces) pass ``translation=None``.
    """
    y = np.asarray(x, dtype=np.float64)
    if permutation is not None:
        y = y[..., np.asarray(permutation), :]
    if rotation is not None:
        y = y @ np.asarray(rotation, dtype=np.float64).T
    if translation is not None:
        y = y + np.asarray(translation, dtype=np.float64)
    return y


def _check_inputs(x, rotation, permutation, translation):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"x must be a finite array of shape (..., K, D), got shape {x.shape}")
    k, d = x.shape[-2:]
    if rotation is not None:
        q = np.asarray(rotation, dtype=np.float64)
        if q.shape != (d, d) or np.abs(q.T @ q - np.eye(d)).max() > 1e-10:
            raise ValueError(f"rotation must be an orthogonal ({d}, {d}) matrix")
    if permutation is not None:
        p = np.asarray(permutation)
        if p.shape != (k,) or sorted(p.tolist()) != list(range(k)):
            raise ValueError(f"permutation must be a permutation of range({k}), got {p}")
    if translation is not None and np.shape(translation) != (d,):
        raise ValueError(f"translation must have shape ({d},), got {np.shape(translation)}")
    return x


def _describe(rotation, permutation, translation):
    parts = []
    if permutation is not None:
        parts.append(f"permutation pi = {np.asarray(permutation).tolist()}")
    if rotation is not None:
        q = np.asarray(rotation)
        kind = "rotation" if np.linalg.det(q) > 0 else "reflection"
        matrix = np.array2string(q, precision=6, separator=", ").replace("\n", "")
        parts.append(f"{kind} Q (det {np.linalg.det(q):+.0f}) = {matrix}")
    if translation is not None:
        parts.append(f"translation b = {np.array2string(np.asarray(translation), precision=6)}")
    return "; ".join(parts) if parts else "identity"


def _call(f, x, name):
    out = np.asarray(f(x), dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise AssertionError(f"{name} returned NaN or infinite values for an input of shape "
                             f"{x.shape}")
    return out


def _index(flat, shape):
    """Batch index of a flat position, as a tuple of plain ints."""
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _assert_close_blocks(actual, expected, rtol, atol, what, element):
    """Norm-wise check per configuration: ``max|a - e| <= atol + rtol max|e|``.

    Norm-wise rather than entry-wise because an orthogonal map mixes
    components, so each component's rounding scales with the whole vector.
    """
    k, d = expected.shape[-2:]
    a = actual.reshape(-1, k, d)
    e = expected.reshape(-1, k, d)
    err = np.abs(a - e)
    worst = err.reshape(len(e), -1).max(axis=1)
    size = np.abs(e).reshape(len(e), -1).max(axis=1)
    allowed = atol + rtol * size
    if np.all(worst <= allowed):
        return
    with np.errstate(divide="ignore", invalid="ignore"):  # atol = rtol = 0 is allowed
        b = int(np.argmax(np.nan_to_num(worst / allowed, nan=0.0, posinf=np.inf)))
    i, c = np.unravel_index(int(np.argmax(err[b])), (k, d))
    where = "" if expected.ndim == 2 else f" in configuration {_index(b, expected.shape[:-2])}"
    raise AssertionError(
        f"{what}{where}\n  group element applied: {element}\n"
        f"  worst deviation {worst[b]:.3e} (absolute) at particle {i}, coordinate {c}; "
        f"relative to max|expected| = {size[b]:.3e}: {worst[b] / max(size[b], 1e-300):.3e}\n"
        f"  tolerance atol + rtol * max|expected| = {allowed[b]:.3e} "
        f"(rtol={rtol:g}, atol={atol:g})")


def _assert_close_scalars(actual, expected, scale, scale_name, rtol, atol, what, element):
    """Entry-wise check ``|a - e| <= atol + rtol * scale``."""
    err = np.abs(actual - expected)
    allowed = atol + rtol * scale
    if np.all(err <= allowed):
        return
    with np.errstate(divide="ignore", invalid="ignore"):  # atol = rtol = 0 is allowed
        b = _index(int(np.argmax(np.nan_to_num(err / allowed, nan=0.0, posinf=np.inf))),
                   np.shape(err))
    raise AssertionError(
        f"{what}{f' in configuration {b}' if b else ''}\n  {element}\n"
        f"  deviation {err[b]:.3e} (absolute); relative to {scale_name} = {scale[b]:.3e}: "
        f"{err[b] / max(scale[b], 1e-300):.3e}\n"
        f"  tolerance atol + rtol * {scale_name} = {allowed[b]:.3e} (rtol={rtol:g}, atol={atol:g})")


# ---------------------------------------------------------------------------
# Checkers


def assert_equivariant(f, x, *, rotation=None, permutation=None, translation=None, kind="map",
                       rtol=EQUIVARIANCE_RTOL, atol=EQUIVARIANCE_ATOL):
    """Assert ``f(g . x) == g . f(x)`` for ``f: (..., K, D) -> (..., K, D)``.

    Parameters
    ----------
    f : callable
        NumPy in, NumPy out, called on ``x`` and on ``g . x`` (same shape).
    x : ndarray, shape (..., K, D)
    rotation : ndarray, shape (D, D), optional
        Any orthogonal matrix (rotations and reflections).
    permutation : int ndarray, shape (K,), optional
    translation : ndarray, shape (D,), optional
    kind : {"map", "vector"}
        ``"map"``: ``f`` returns points (a flow ``x -> F(x)``), so the
        output translates with the input: ``F(Qx_pi + b) = Q F(x)_pi + b``.
        ``"vector"``: ``f`` returns tangent vectors (a velocity field, a
        force), which a translation leaves unchanged:
        ``g(Qx_pi + b) = Q g(x)_pi``. Rotations and permutations act the
        same in both cases.
    rtol, atol : float
        Per configuration, ``max|f(g.x) - g.f(x)| <= atol + rtol *
        max|g.f(x)|`` (maxima over the K D entries). Defaults
        ``EQUIVARIANCE_RTOL = 1e-9``, ``EQUIVARIANCE_ATOL = 1e-12``.

    Raises
    ------
    AssertionError
        Naming the group element, the worst absolute and relative deviation
        and the tolerance.
    """
    if kind not in ("map", "vector"):
        raise ValueError(f"kind must be 'map' or 'vector', got {kind!r}")
    x = _check_inputs(x, rotation, permutation, translation)
    fx = _call(f, x, "f")
    if fx.shape != x.shape:
        raise ValueError(f"f must map shape {x.shape} to the same shape, got {fx.shape}")
    fgx = _call(f, act(x, rotation, permutation, translation), "f")
    expected = act(fx, rotation, permutation, translation if kind == "map" else None)
    _assert_close_blocks(fgx, expected, rtol, atol,
                         f"not equivariant (kind={kind!r}): f(g.x) != g.f(x)",
                         _describe(rotation, permutation, translation))


def assert_invariant(f, x, *, rotation=None, permutation=None, translation=None,
                     rtol=EQUIVARIANCE_RTOL, atol=EQUIVARIANCE_ATOL):
    """Assert ``f(g . x) == f(x)`` for scalar outputs (a divergence, an energy, a log-density).

    Parameters
    ----------
    f : callable
        ``(..., K, D) -> (...)`` (any output shape, the same for both calls).
    x, rotation, permutation, translation
        As in ``assert_equivariant``. Leave ``translation`` out for functions
        defined on the mean-free subspace only.
    rtol, atol : float
        Entry-wise ``|f(g.x) - f(x)| <= atol + rtol |f(x)|``. Defaults
        ``EQUIVARIANCE_RTOL = 1e-9``, ``EQUIVARIANCE_ATOL = 1e-12``.
    """
    x = _check_inputs(x, rotation, permutation, translation)
    fx = _call(f, x, "f")
    fgx = _call(f, act(x, rotation, permutation, translation), "f")
    if fgx.shape != fx.shape:
        raise ValueError(f"f returned shapes {fx.shape} and {fgx.shape} for x and g.x")
    _assert_close_scalars(fgx, fx, np.abs(fx), "|f(x)|", rtol, atol,
                          "not invariant: f(g.x) != f(x)",
                          "group element applied: " + _describe(rotation, permutation,
                                                                translation))


def assert_mean_free_preserved(f, x, *, rtol=MEAN_FREE_RTOL, atol=MEAN_FREE_ATOL):
    """Assert that ``f`` maps mean-free configurations to mean-free outputs.

    ``x`` is first centred (``x - mean_i x_i``); then per configuration
    ``max_d |(1/K) sum_i f(x)_id| <= atol + rtol * max|f(x)|``. For a vector
    field this is ``sum_i g_i = 0`` (the flow stays on the mean-free
    subspace); for a map ``F`` it is ``F(subspace) in subspace``.
    Defaults ``MEAN_FREE_RTOL = 1e-10``, ``MEAN_FREE_ATOL = 1e-12``.
    """
    x = _check_inputs(x, None, None, None)
    x = x - x.mean(axis=-2, keepdims=True)
    fx = _call(f, x, "f")
    if fx.shape != x.shape:
        raise ValueError(f"f must map shape {x.shape} to the same shape, got {fx.shape}")
    centre = np.abs(fx.mean(axis=-2)).max(axis=-1)
    size = np.abs(fx).max(axis=(-2, -1))
    _assert_close_scalars(centre, np.zeros_like(centre), size, "max|f(x)|", rtol, atol,
                          "output not mean-free: max_d |(1/K) sum_i f(x)_id| too large",
                          "no group element; input: the centred configuration x - mean(x)")


def assert_divergence_matches_jacobian(field, div, x, *, eps=JACOBIAN_EPS, rtol=JACOBIAN_RTOL,
                                       atol=JACOBIAN_ATOL):
    """Assert ``div(x) == trace(d field / d x)``, the Jacobian by central differences.

    Parameters
    ----------
    field : callable
        ``(n, K, D) -> (n, K, D)``; called once, on ``2 K D`` perturbed
        copies of every configuration in ``x``.
    div : callable
        ``(..., K, D) -> (...)``, called on ``x``.
    x : ndarray, shape (..., K, D)
    eps : float
        Absolute step of the central difference ``(g_m(x + eps e_m) -
        g_m(x - eps e_m)) / (2 eps)`` (the exact floating-point step is
        used as the denominator). Default ``JACOBIAN_EPS = 1e-5``, suited to
        coordinates of order one. Keep particles apart by much more than
        ``eps``: a pair field is only C^1 where two particles coincide.
    rtol, atol : float
        ``|div - trace| <= atol + rtol * sum_m |J_mm|`` (the sum of
        magnitudes, since the trace may cancel to zero). Defaults
        ``JACOBIAN_RTOL = 1e-6``, ``JACOBIAN_ATOL = 1e-7``.
    """
    x = _check_inputs(x, None, None, None)
    eps = _positive(eps, "eps")
    k, d = x.shape[-2:]
    n_coords = k * d
    flat = x.reshape(-1, n_coords)
    step = eps * np.eye(n_coords)
    plus = flat[:, None, :] + step  # (n, KD, KD): row m is x + eps e_m
    minus = flat[:, None, :] - step
    both = np.concatenate([plus, minus]).reshape(-1, k, d)
    g = _call(field, both, "field").reshape(2, len(flat), n_coords, n_coords)
    m = np.arange(n_coords)
    h = plus[:, m, m] - minus[:, m, m]
    diagonal = (g[0][:, m, m] - g[1][:, m, m]) / h
    trace = diagonal.sum(axis=-1).reshape(x.shape[:-2])
    size = np.abs(diagonal).sum(axis=-1).reshape(x.shape[:-2])
    value = _call(div, x, "div")
    if value.shape != trace.shape:
        raise ValueError(f"div must return shape {trace.shape}, got {value.shape}")
    _assert_close_scalars(value, trace, size, "sum_m |J_mm|", rtol, atol,
                          "divergence != trace of the central-difference Jacobian",
                          f"no group element; central differences with eps = {eps:g}")
