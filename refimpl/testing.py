"""Hypothesis strategies and symmetry checkers for *any* particle model.

The functions here know nothing about refimpl's internals: a checker takes a
plain NumPy-in/NumPy-out callable, so the same property tests run against
refimpl, a PyTorch or JAX model wrapped in a few lines, or C++ bindings.
Requires ``hypothesis`` (refimpl's ``testing`` extra; the ``test`` extra has it too).

Conventions
-----------
A configuration ``x`` has shape ``(..., K, D)``: ``K`` particles in ``D``
dimensions. A group element ``g = (pi, Q, b)`` -- a permutation ``pi`` of the
particles (an index array), an orthogonal ``Q`` (rotation or reflection) and
a translation ``b`` -- acts on configurations by

.. math::
    (g \\cdot x)_i = Q\\, x_{\\pi(i)} + b ,

in NumPy ``x[..., pi, :] @ Q.T + b`` (see ``act``). Tangent vectors (a
velocity, a force) transform with the linear part only: ``Q v_{pi(i)}``.

Strategies: ``configurations``, ``orthogonal_matrices``, ``permutations``,
``translations``, ``group_elements``. Checkers: ``assert_equivariant``,
``assert_invariant``, ``assert_mean_free_preserved``,
``assert_divergence_matches_jacobian``. Test classes to subclass in a pytest
module (hypothesis tests written once, for any model):
``FieldSymmetryTests``, ``DivergenceTests``, ``FlowSymmetryTests``. Each checker raises
``AssertionError`` with the tolerance, the worst absolute and relative
deviation and the group element that was applied.

Example
-------
Wrap your model as NumPy in, NumPy out, and let hypothesis draw the cases::

    import numpy as np, torch
    from hypothesis import given, strategies as st
    from refimpl.testing import (assert_equivariant, configurations,
                                 group_elements)

    def velocity(x):                                  # (..., K, D) -> (..., K, D)
        with torch.no_grad():
            return model(torch.from_numpy(x), t=0.5).numpy()

    @given(st.data())
    def test_velocity_is_equivariant(data):
        x = data.draw(configurations(n_particles=5, dim=3, batch_shape=(4,)))
        g = data.draw(group_elements(5, 3, translation_scale=2.0))
        assert_equivariant(velocity, x, **g._asdict(), kind="vector",
                           rtol=1e-5, atol=1e-6)      # float32 model

``kind="vector"`` because a velocity does not move when the configuration is
translated; use ``kind="map"`` for a flow ``x -> F(x)``, whose output
translates with its input.

Choosing tolerances
-------------------
The defaults suit float64 code with outputs of order one: they leave several
orders of magnitude above rounding and catch any defect larger than about
``1e-9`` relative. A float32 model needs about ``rtol=1e-5``. A map computed
by an adaptive ODE solver is equivariant only to the solver's global error
(the transformed input takes different steps), so derive ``rtol``/``atol``
from the solver's tolerances, not from rounding.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

try:
    from hypothesis import given
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("refimpl.testing needs hypothesis: pip install 'refimpl[testing]'") from exc

__all__ = [
    "GroupElement", "act", "configurations", "orthogonal_matrices", "permutations",
    "translations", "group_elements", "assert_equivariant", "assert_invariant",
    "assert_mean_free_preserved", "assert_divergence_matches_jacobian",
    "FieldSymmetryTests", "DivergenceTests", "FlowSymmetryTests",
]

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

# Entries of the "Gaussian" matrix behind orthogonal_matrices: hypothesis
# draws u in [-U, U], mapped by the normal quantile of (1 + u) / 2, so a
# uniform u gives a standard normal entry, bounded by |ndtri(1e-4)| = 3.7.
_GAUSSIAN_U = 1.0 - 2e-4
# Orthogonality the strategies guarantee (Householder QR is backward stable).
_ORTHOGONALITY_TOL = 1e-12


class GroupElement(NamedTuple):
    """A group element ``(g . x)_i = Q x_{pi(i)} + b``; ``None`` means identity.

    ``g._asdict()`` gives the keyword arguments of the checkers.
    """

    rotation: np.ndarray = None  # Q, shape (D, D), orthogonal (det +1 or -1)
    permutation: np.ndarray = None  # pi, int array of shape (K,)
    translation: np.ndarray = None  # b, shape (D,)


# ---------------------------------------------------------------------------
# Strategies


def _int_strategy(value, name, minimum):
    """An int, a ``(lo, hi)`` range (inclusive) or a strategy -> a strategy of ints."""
    if isinstance(value, st.SearchStrategy):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")
        return st.just(int(value))
    lo, hi = value
    if not minimum <= lo <= hi:
        raise ValueError(f"{name} range must satisfy {minimum} <= lo <= hi, got {value}")
    return st.integers(int(lo), int(hi))


def _bounded_floats(bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False, width=64)


def _positive(value, name):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


@st.composite
def configurations(draw, n_particles=(2, 8), dim=(2, 3), scale=3.0, mean_free=False,
                   min_separation=None, batch_shape=()):
    """Configurations of shape ``batch_shape + (K, D)``, float64, entries in ``[-scale, scale]``.

    Parameters
    ----------
    n_particles, dim : int, (int, int) or SearchStrategy
        ``K >= 2`` and ``D >= 1``: fixed, or drawn from an inclusive range
        (defaults ``(2, 8)`` and ``(2, 3)``).
    scale : float
        Bound on the absolute value of every coordinate (before centring),
        default 3.
    mean_free : bool
        Subtract the centre of mass ``(1/K) sum_i x_i`` from each configuration.
    min_separation : float, optional
        If given, every pair of particles is at least this far apart: the
        particles sit on distinct sites of a cubic lattice of spacing
        ``2 * min_separation`` inside the box, each moved by at most
        ``min_separation / 2`` per axis (no rejection sampling). Raises
        ``ValueError`` if ``K`` sites do not fit in the box.
    batch_shape : tuple of int or SearchStrategy of tuples
        Leading dimensions; ``()`` gives a single ``(K, D)`` configuration.

    Without ``min_separation`` the coordinates are arbitrary bounded floats,
    which includes coincident particles (``r_ij = 0``), a legitimate edge case.
    """
    k = draw(_int_strategy(n_particles, "n_particles", 2))
    d = draw(_int_strategy(dim, "dim", 1))
    scale = _positive(scale, "scale")
    shape = draw(batch_shape) if isinstance(batch_shape, st.SearchStrategy) else batch_shape
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if min_separation is None:
        # fill=st.nothing(): draw every entry, else hypothesis fills most of
        # the array with one value and most particles coincide.
        x = draw(hnp.arrays(np.float64, (n, k, d), elements=_bounded_floats(scale),
                            fill=st.nothing()))
    else:
        x = np.stack([draw(_separated(k, d, scale, _positive(min_separation, "min_separation")))
                      for _ in range(n)]) if n else np.empty((0, k, d))
    if mean_free:
        x = x - x.mean(axis=-2, keepdims=True)
    return x.reshape(shape + (k, d))


def _separated(k, d, scale, min_separation):
    """One ``(K, D)`` configuration on distinct lattice sites plus bounded jitter."""
    spacing = 2.0 * min_separation
    jitter = spacing / 4.0  # pairs on distinct sites stay >= spacing - 2 jitter apart
    sites_per_axis = int(np.floor((2.0 * scale - 2.0 * jitter) / spacing)) + 1
    if 2.0 * scale < 2.0 * jitter or sites_per_axis ** d < k:
        raise ValueError(f"{k} particles {min_separation} apart do not fit in [-{scale}, "
                         f"{scale}]^{d}; increase scale or decrease min_separation")
    n_sites = sites_per_axis ** d
    sites = st.lists(st.integers(0, n_sites - 1), min_size=k, max_size=k, unique=True)
    jitters = hnp.arrays(np.float64, (k, d), elements=_bounded_floats(jitter), fill=st.nothing())

    def build(args):
        index, move = args
        grid = np.array(np.unravel_index(index, (sites_per_axis,) * d), dtype=np.float64).T
        return np.clip(-scale + jitter + spacing * grid + move, -scale, scale)

    return st.tuples(sites, jitters).map(build)


@st.composite
def orthogonal_matrices(draw, dim, reflections=True):
    """Orthogonal ``(D, D)`` float64 matrices: rotations and, optionally, reflections.

    ``Q`` is the QR factor of a matrix ``A`` whose entries are the normal
    quantiles of hypothesis-drawn floats, with the signs fixed so that
    ``diag(R) >= 0``; for Gaussian ``A`` this ``Q`` is Haar-distributed on
    O(D) (Mezzadri 2007). It is then moved into SO(D) (first column negated
    if ``det Q = -1``) and, if ``reflections``, a drawn boolean negates the
    first column again, so hypothesis explores both components equally and
    shrinks towards the identity. Householder QR gives an orthogonal ``Q``
    even for a singular ``A``, so nothing is rejected.

    Parameters
    ----------
    dim : int
    reflections : bool
        ``True``: ``det Q`` is +1 or -1 (all of O(D)); ``False``: always +1.
    """
    d = int(dim)
    if d < 1:
        raise ValueError(f"dim must be at least 1, got {d}")
    u = draw(hnp.arrays(np.float64, (d, d), elements=_bounded_floats(_GAUSSIAN_U),
                        fill=st.nothing()))
    q, r = np.linalg.qr(ndtri(0.5 * (1.0 + u)))
    q = q * np.where(np.diag(r) < 0.0, -1.0, 1.0)
    if np.linalg.det(q) < 0.0:
        q[:, 0] = -q[:, 0]
    if reflections and draw(st.booleans()):
        q[:, 0] = -q[:, 0]
    assert np.abs(q.T @ q - np.eye(d)).max() < _ORTHOGONALITY_TOL
    return q


def permutations(n):
    """Permutations of ``range(n)`` as int index arrays ``pi`` (``x[..., pi, :]``)."""
    return st.permutations(range(int(n))).map(lambda p: np.asarray(p, dtype=np.intp))


def translations(dim, scale=3.0):
    """Translation vectors ``b``, shape ``(D,)``, entries in ``[-scale, scale]``."""
    return hnp.arrays(np.float64, (int(dim),), elements=_bounded_floats(_positive(scale, "scale")))


@st.composite
def group_elements(draw, n_particles, dim, reflections=True, translation_scale=None):
    """A ``GroupElement`` for ``K`` particles in ``D`` dimensions.

    ``translation`` is ``None`` unless ``translation_scale`` is given (a
    density on the mean-free subspace, for instance, is not defined at
    translated inputs).
    """
    rotation = draw(orthogonal_matrices(dim, reflections=reflections))
    permutation = draw(permutations(n_particles))
    translation = None
    if translation_scale is not None:
        translation = draw(translations(dim, translation_scale))
    return GroupElement(rotation, permutation, translation)


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


# ---------------------------------------------------------------------------
# Test classes to subclass: the same property tests for any model


class _PropertyTests:
    """Gives every subclass its own hypothesis test per ``_property_*`` method.

    Hypothesis refuses one ``@given`` function shared by several test classes
    (its example database and health checks are per function), so the tests
    are created here, once per subclass, as ``test_*`` methods.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            if name.startswith("_property_"):
                test_name = "test_" + name[len("_property_"):]
                cls._add_test(test_name, getattr(cls, name))

    @classmethod
    def _add_test(cls, test_name, check):
        def test(self, data):
            check(self, data)

        test.__name__ = test_name
        test.__qualname__ = f"{cls.__qualname__}.{test_name}"
        test.__doc__ = check.__doc__
        setattr(cls, test_name, given(data=st.data())(test))


class FieldSymmetryTests(_PropertyTests):
    """Property tests of an equivariant vector field; subclass and fill in.

    Set ``n_particles`` and ``dim`` (ints or ``(lo, hi)`` ranges) and define
    ``field(self, x)`` mapping ``(..., K, D) -> (..., K, D)``; pytest then
    collects two hypothesis tests (equivariance under a random group
    element, translation invariance included; centre of mass preserved).
    Define ``divergence(self, x) -> (...)`` too and subclass
    ``DivergenceTests`` to check it. Tolerances are class attributes::

        class TestMyField(FieldSymmetryTests, DivergenceTests):
            n_particles, dim, rtol, atol = 5, 3, 1e-5, 1e-6
            def field(self, x): return my_model.velocity(x)
            def divergence(self, x): return my_model.divergence(x)
    """

    n_particles = (2, 6)
    dim = (2, 3)
    scale = 3.0
    rtol = EQUIVARIANCE_RTOL
    atol = EQUIVARIANCE_ATOL

    def field(self, x):
        raise NotImplementedError("define field(self, x) in the subclass")

    def _case(self, data, translation_scale=3.0, mean_free=False):
        x = data.draw(configurations(self.n_particles, self.dim, self.scale, mean_free=mean_free,
                                     min_separation=getattr(self, "min_separation", None),
                                     batch_shape=(2,)))
        k, d = x.shape[-2:]
        g = data.draw(group_elements(k, d, translation_scale=translation_scale))
        return x, g

    def _property_field_is_equivariant(self, data):
        x, g = self._case(data)
        assert_equivariant(self.field, x, **g._asdict(), kind="vector", rtol=self.rtol,
                           atol=self.atol)

    def _property_field_keeps_the_centre_of_mass(self, data):
        x, _ = self._case(data)
        assert_mean_free_preserved(lambda y: y + self.field(y), x, rtol=self.rtol,
                                   atol=self.atol)


class DivergenceTests(_PropertyTests):
    """Property tests of a divergence: invariant, equal to the Jacobian trace.

    Needs ``field(self, x)`` and ``divergence(self, x)``; ``jacobian_eps``,
    ``jacobian_rtol`` and ``jacobian_atol`` set the central-difference check
    (keep ``min_separation`` well above ``jacobian_eps``).
    """

    jacobian_eps = JACOBIAN_EPS
    jacobian_rtol = JACOBIAN_RTOL
    jacobian_atol = JACOBIAN_ATOL
    min_separation = 0.25

    def divergence(self, x):
        raise NotImplementedError("define divergence(self, x) in the subclass")

    def _property_divergence_is_invariant(self, data):
        x, g = self._case(data)
        assert_invariant(self.divergence, x, **g._asdict(), rtol=self.rtol, atol=self.atol)

    def _property_divergence_is_the_jacobian_trace(self, data):
        x, _ = self._case(data, translation_scale=None)
        assert_divergence_matches_jacobian(self.field, self.divergence, x, eps=self.jacobian_eps,
                                           rtol=self.jacobian_rtol, atol=self.jacobian_atol)


class FlowSymmetryTests(FieldSymmetryTests):
    """Property tests of a flow map ``x -> F(x)`` with its log-determinant.

    Define ``flow(self, x) -> (y, logdet)``; ``rtol``/``atol`` should follow
    from the solver's tolerances (the transformed input takes other steps).
    """

    def flow(self, x):
        raise NotImplementedError("define flow(self, x) -> (y, logdet) in the subclass")

    def field(self, x):  # the displacement F(x) - x is translation invariant and equivariant
        return self.flow(x)[0] - x

    def _property_flow_is_an_equivariant_map(self, data):
        x, g = self._case(data)
        assert_equivariant(lambda y: self.flow(y)[0], x, **g._asdict(), kind="map",
                           rtol=self.rtol, atol=self.atol)

    def _property_logdet_is_invariant(self, data):
        x, g = self._case(data)
        assert_invariant(lambda y: self.flow(y)[1], x, **g._asdict(), rtol=self.rtol,
                         atol=self.atol)
