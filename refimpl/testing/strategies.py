"""Hypothesis strategies for particle configurations and their symmetry group."""

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import ndtri

from .checks import _positive

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
