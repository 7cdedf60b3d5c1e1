"""Local energy minima of sampled configurations, counted up to symmetry (Experiment 2).

The paper minimizes each sample's energy "using a non-momentum second-order
optimizer" (here: trust-region Newton with autograd's exact Hessian,
``minimize_energies``), then counts the distinct minima up to permutation,
rotation, reflection and translation (``same_structure``, ``cluster_minima``).
"""

import functools
import itertools
import math
from dataclasses import dataclass

import autograd
import autograd.numpy as anp
import numpy as np
from scipy.optimize import minimize

from ._validate import as_configurations, as_float_array, as_positive_float, as_positive_int
from .prior import helmert_basis

# Eigenvalues with |lambda| <= ZERO_MODE_RTOL * max|lambda| count as zero modes
# (rotations). Near a minimum with gradient g the rotational eigenvalues are
# O(|g| |u'''| / lambda) ~ 1e-8 relative for |g| ~ 1e-6; the smallest genuine
# curvature at the DoubleWell minima (K = 2, 3, 4) is >= 0.05 of the largest.
ZERO_MODE_RTOL = 1e-6
# is_local_minimum's default force bound: 100x the minimizer's default gtol,
# so a converged minimum passes after a round trip through x = Q u.
CHECK_GTOL = 1e-6
# Newton polish: at most POLISH_STEPS steps, each at most POLISH_MAX_STEP long
# (deep in the quadratic basin: the cubic term |u'''| |p| / lambda_min is
# ~50 * 1e-3 / 13, a few per cent, for the double well).
POLISH_STEPS = 8
POLISH_MAX_STEP = 1e-3
# Structures are the same if they align to within this (max coordinate
# difference): a converged minimum is located to ~gtol / lambda_min ~ 1e-9,
# distinct double-well minima differ by O(1) (pair minima at 2.51 and 5.49).
STRUCTURE_TOL = 1e-4
# Permutations are enumerated (pruned); K! grows too fast beyond this.
MAX_PERMUTED_PARTICLES = 8
# Singular values of a centred configuration below this (relative) count as 0
# for its rank: a collinear state has fewer rotational zero modes.
RANK_RTOL = 1e-8


@dataclass(frozen=True)
class MinimizationResult:
    """Outcome of ``minimize_energies``; rows with ``success`` False are NOT minima."""

    x: np.ndarray                # (N, K, D) final configurations, mean-free
    energies: np.ndarray         # (N,) energy at x
    grad_norms: np.ndarray       # (N,) norm of the gradient in internal coordinates
    min_eigenvalues: np.ndarray  # (N,) smallest internal Hessian eigenvalue
    success: np.ndarray          # (N,) bool: grad_norm <= gtol and Hessian PSD
    n_iter: np.ndarray           # (N,) trust-region iterations + Newton polish steps
    messages: tuple              # N str: why each run stopped

    @property
    def minima(self):
        """The verified minima only, ``x[success]``."""
        return self.x[self.success]


@dataclass(frozen=True)
class MinimumCheck:
    """``is_minimum``: small force and no negative curvature (second-order necessary);
    ``strict``: also no flat directions but rotations, i.e. isolated up to symmetry."""

    is_minimum: bool
    strict: bool
    grad_norm: float
    eigenvalues: np.ndarray  # ((K-1) D,) ascending, Hessian on the mean-free subspace
    n_zero_modes: int
    expected_zero_modes: int  # rotations: D(D-1)/2 unless the state is degenerate


@dataclass(frozen=True)
class Clusters:
    """Distinct structures from ``cluster_minima``, lowest energy first."""

    representatives: np.ndarray  # (M, K, D) lowest-energy member of each structure
    energies: np.ndarray         # (M,) their energies
    counts: np.ndarray           # (M,) members per structure
    labels: np.ndarray           # (N,) structure index of every input
    energy_spread: np.ndarray    # (M,) max |energy - representative energy| over members


class _Internal:
    """Energy of internal coordinates ``u`` (``x = Q u``) with exact derivatives.

    ``potential.energy`` must accept a batch ``(B, K, D)``, as refimpl's do.
    The Hessian is one reverse-over-reverse pass over ``B = (K-1) D`` copies
    of ``u``: the batch gradient ``G(U)`` has row b = ``g(U_b)``, so
    ``d/dU sum_b G(U)[b, b]`` has row b = ``H(u)[b]``. Same values as
    ``autograd.hessian`` up to rounding, ~3x faster than its separate passes.
    """

    def __init__(self, potential, k, d):
        self.k, self.d = k, d
        self.basis = helmert_basis(k, d)
        self.n = n = self.basis.shape[1]

        def batch_energy(u):  # (..., n) -> (B,)
            return potential.energy(anp.reshape(anp.dot(u, self.basis.T), (-1, k, d)))

        def diagonal_of_batch_gradient(u):
            return anp.sum(autograd.grad(lambda v: anp.sum(batch_energy(v)))(u) * np.eye(n))

        self._hessian = autograd.grad(diagonal_of_batch_gradient)
        self.value_and_grad = autograd.value_and_grad(lambda u: batch_energy(u)[0])

    def hessian(self, u):
        h = self._hessian(np.tile(u, (self.n, 1)))
        return 0.5 * (h + h.T)

    def eigh(self, u):
        """Eigenvalues (ascending) and eigenvectors of H(u); NaN if H is not finite."""
        h = self.hessian(u)
        if not np.all(np.isfinite(h)):
            return np.full(self.n, np.nan), np.full((self.n, self.n), np.nan)
        return np.linalg.eigh(h)

    def to_u(self, x):
        return self.basis.T @ x.reshape(-1)

    def to_x(self, u):
        return (self.basis @ u).reshape(self.k, self.d)


def _check_potential(potential, x, ndim):
    if not callable(getattr(potential, "energy", None)):
        raise TypeError(f"potential must have an energy(x) method, got {type(potential).__name__}")
    x = as_configurations(x, "x", getattr(potential, "n_particles", None),
                          getattr(potential, "dim", None))
    if x.ndim != ndim:
        raise ValueError(f"x must have shape {'(N, K, D)' if ndim == 3 else '(K, D)'}, "
                         f"got {x.shape}")
    return x


def minimize_energies(potential, x, *, gtol=1e-8, max_iter=200):
    """Locally minimize ``potential.energy`` from each configuration of ``x (N, K, D)``.

    scipy's ``trust-exact`` (Nocedal & Wright, *Numerical Optimization*, 4.3;
    Moré & Sorensen 1983) in the ``(K-1) D`` coordinates ``u`` of the
    mean-free subspace, ``x = Q u`` (``helmert_basis``): no translation zero
    modes. The ``D(D-1)/2`` rotation zero modes remain and make ``H``
    singular at a minimum; trust-exact copes, as it never inverts ``H`` but
    solves ``(H + lambda I) p = -g`` with ``lambda >= 0`` making the matrix
    positive definite, and the gradient of a rotation-invariant energy is
    orthogonal to the rotation orbit: it converges to the orbit of minima,
    at an arbitrary rotation.

    scipy accepts steps by comparing energies; once the predicted decrease
    ``~|g|^2 / lambda`` is below the energy's rounding it stops ("failure to
    predict improvement") at ``|g|`` ~ 1e-7. Up to ``POLISH_STEPS`` Newton
    steps with the pseudo-inverse (zero modes dropped), each kept only if it
    shrinks the still-accurate gradient, then finish.

    ``success`` is True only if the final gradient norm is ``<= gtol`` and no
    Hessian eigenvalue is below ``-ZERO_MODE_RTOL * max|eigenvalue|``;
    failures (``max_iter`` reached, saddle points, non-finite energies) keep
    their last point and a reason in ``messages``. Deterministic.
    """
    x = _check_potential(potential, x, 3)
    gtol = as_positive_float(gtol, "gtol")
    max_iter = as_positive_int(max_iter, "max_iter")
    n, k, d = x.shape
    internal = _Internal(potential, k, d)
    out_x, energies, grad_norms, min_eigs = np.empty_like(x), np.empty(n), np.empty(n), np.empty(n)
    success, n_iter, messages = np.zeros(n, bool), np.zeros(n, int), []
    for i in range(n):
        with np.errstate(divide="ignore", invalid="ignore"):  # non-finite: reported below
            u, n_iter[i], message = _minimize_one(internal, internal.to_u(x[i]), gtol,
                                                  max_iter)
            energy, grad = internal.value_and_grad(u)
            w = internal.eigh(u)[0]
        grad_norms[i], min_eigs[i] = np.linalg.norm(grad), w[0]
        if not (np.isfinite(energy) and np.all(np.isfinite(grad)) and np.all(np.isfinite(w))):
            message = f"non-finite energy or derivatives (coincident particles?); {message}"
        elif grad_norms[i] > gtol:
            message = f"not converged, |g| = {grad_norms[i]:.3g} > gtol; {message}"
        elif w[0] < -ZERO_MODE_RTOL * np.max(np.abs(w)):
            message = f"saddle point, Hessian eigenvalue {w[0]:.3g} < 0; {message}"
        else:
            success[i] = True
        energies[i], out_x[i] = energy, internal.to_x(u)
        messages.append(message)
    return MinimizationResult(out_x, energies, grad_norms, min_eigs, success, n_iter,
                              tuple(messages))


def _minimize_one(internal, u0, gtol, max_iter):
    energy, grad = internal.value_and_grad(u0)
    if not (np.isfinite(energy) and np.all(np.isfinite(grad))):
        return u0, 0, "non-finite energy or gradient at the start"
    try:
        res = minimize(internal.value_and_grad, u0, jac=True, hess=internal.hessian,
                       method="trust-exact", options={"gtol": gtol, "maxiter": max_iter})
    except np.linalg.LinAlgError as exc:
        return u0, 0, f"linear algebra error: {exc}"
    if res.status != 2:
        return res.x, res.nit, f"trust-exact: {res.message}"
    u, steps = _newton_polish(internal, res.x, gtol)
    return u, res.nit + steps, (f"trust-exact stalled at the energy's rounding "
                                f"(|g| = {np.linalg.norm(res.jac):.3g}); {steps} Newton steps")


def _newton_polish(internal, u, gtol):
    """Newton steps with the Hessian's pseudo-inverse, judged by the gradient norm."""
    g = internal.value_and_grad(u)[1]
    for step in range(POLISH_STEPS):
        if np.linalg.norm(g) <= gtol:
            return u, step
        w, v = internal.eigh(u)
        scale = np.max(np.abs(w))
        if not w[0] >= -ZERO_MODE_RTOL * scale:
            return u, step  # negative curvature (or NaN): not in a minimum's basin
        keep = w > ZERO_MODE_RTOL * scale
        p = -v[:, keep] @ ((v[:, keep].T @ g) / w[keep])
        g_new = internal.value_and_grad(u + p)[1]
        if np.linalg.norm(p) > POLISH_MAX_STEP or not np.linalg.norm(g_new) < np.linalg.norm(g):
            return u, step
        u, g = u + p, g_new
    return u, POLISH_STEPS


def _expected_zero_modes(x):
    """Rotational zero modes: ``D(D-1)/2`` minus the rotations fixing the span of ``x``."""
    d = x.shape[-1]
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    rank = int(np.sum(s > RANK_RTOL * max(s[0], np.finfo(float).tiny)))
    return d * (d - 1) // 2 - (d - rank) * (d - rank - 1) // 2


def is_local_minimum(potential, x, *, gtol=CHECK_GTOL, tol=ZERO_MODE_RTOL):
    """Check that one configuration ``x (K, D)`` is a local minimum of ``potential.energy``.

    The gradient on the mean-free subspace, from ``potential.force`` if it has
    one (an independent route), else autograd, must have norm <= ``gtol``;
    the exact Hessian there must have eigenvalues ``>= -tol * max|lambda|``
    (relative, so independent of the temperature). Zero modes are the
    ``|lambda| <= tol * max|lambda|``. Returns a ``MinimumCheck``.
    """
    x = _check_potential(potential, x, 2)
    gtol, tol = as_positive_float(gtol, "gtol"), as_positive_float(tol, "tol")
    internal = _Internal(potential, *x.shape)
    u = internal.to_u(x)
    if callable(getattr(potential, "force", None)):
        grad = -internal.basis.T @ np.asarray(potential.force(x)).reshape(-1)
    else:
        grad = internal.value_and_grad(u)[1]
    grad_norm, w = float(np.linalg.norm(grad)), internal.eigh(u)[0]
    expected = _expected_zero_modes(x)
    if not (np.isfinite(grad_norm) and np.all(np.isfinite(w))):
        return MinimumCheck(False, False, grad_norm, w, 0, expected)
    scale = np.max(np.abs(w))
    is_min = bool(grad_norm <= gtol and w[0] >= -tol * scale)
    n_zero = int(np.sum(np.abs(w) <= tol * scale))
    return MinimumCheck(is_min, is_min and n_zero == expected, grad_norm, w, n_zero, expected)


def _pair_distances(x):
    return np.sqrt(np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1))


def _sorted_distances(x):
    i, j = np.triu_indices(len(x), 1)
    return np.sort(_pair_distances(x)[i, j])


@functools.lru_cache(maxsize=MAX_PERMUTED_PARTICLES)
def _permutations(k):
    perms = np.array(list(itertools.permutations(range(k))), dtype=np.intp).reshape(-1, k)
    perms.flags.writeable = False  # cached and shared
    return perms


def _candidate_permutations(xc, yc, slack):
    """Permutations (y's particle i <-> x's perm[i]) whose distances agree within ``slack``.

    Only a necessary condition: if ``|R a_i - y_i| <= r`` for all i, every
    distance to the centre and every pair distance changes by at most ``2 r``.
    """
    perms = _permutations(len(xc))
    radii = np.linalg.norm(xc, axis=1)[perms] - np.linalg.norm(yc, axis=1)
    perms = perms[np.all(np.abs(radii) <= slack, axis=1)]
    dx = _pair_distances(xc)[perms[:, :, None], perms[:, None, :]]
    return perms[np.all(np.abs(dx - _pair_distances(yc)) <= slack, axis=(1, 2))]


def _same_centred(xc, yc, tol, xs, ys):
    """``same_structure`` for centred ``xc, yc`` with their sorted pair distances."""
    slack = 2.0 * math.sqrt(xc.shape[1]) * tol  # per-particle shift <= sqrt(D) tol
    # Sorted pair distances are a cheap reject but not a complete invariant:
    # homometric point sets (same multiset of distances, not congruent, e.g.
    # {0,1,4,10,12,17} and {0,1,8,11,13,17}) exist, so a pass is only a
    # candidate, confirmed by aligning the coordinates.
    if np.max(np.abs(xs - ys)) > slack:
        return False
    for perm in _candidate_permutations(xc, yc, slack):
        a = xc[perm]
        # orthogonal Procrustes: with a^T y = U S V^T, R = V U^T minimizes
        # sum_i |R a_i - y_i|^2 over O(D), reflections (det R = -1) included
        u, _, vt = np.linalg.svd(a.T @ yc)
        if np.max(np.abs(a @ (vt.T @ u.T).T - yc)) <= tol:
            return True
    return False


def _check_permutable(x, tol):
    if x.shape[-2] > MAX_PERMUTED_PARTICLES:
        raise ValueError(f"permutations are enumerated; K = {x.shape[-2]} > "
                         f"{MAX_PERMUTED_PARTICLES} particles is too many")
    return as_positive_float(tol, "tol")


def same_structure(x, y, tol=STRUCTURE_TOL):
    """True if ``x, y (K, D)`` agree up to permutation, rotation, reflection and translation.

    I.e. if a permutation ``P`` and an orthogonal ``R`` give
    ``max |R (x_P - mean x) - (y - mean y)| <= tol``. ``R`` is the orthogonal
    Procrustes solution for each permutation consistent with the distances;
    it is Frobenius- rather than max-norm-optimal, so a match right at the
    threshold could be missed: choose ``tol`` far from both the minimizer's
    accuracy and the gaps between structures (``STRUCTURE_TOL``).
    """
    x, y = as_configurations(x, "x"), as_configurations(y, "y")
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both have shape (K, D); got {x.shape} and {y.shape}")
    tol = _check_permutable(x, tol)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    return _same_centred(xc, yc, tol, _sorted_distances(xc), _sorted_distances(yc))


def matches_any(x, references, tol=STRUCTURE_TOL):
    """Whether ``x (K, D)`` is ``same_structure`` as any ``references`` (M, K, D) or (K, D)."""
    refs = as_configurations(references, "references")
    refs = refs[None] if refs.ndim == 2 else refs
    if refs.ndim != 3:
        raise ValueError(f"references must have shape (M, K, D) or (K, D), got {refs.shape}")
    return any(same_structure(x, ref, tol) for ref in refs)


def cluster_minima(x, energies, *, tol=STRUCTURE_TOL):
    """Group ``x (N, K, D)`` with ``energies (N,)`` into distinct structures up to symmetry.

    Greedy in order of increasing energy (ties by index): a configuration
    joins the first representative it is ``same_structure`` with, else it
    founds a new one. With ``tol`` far below the gaps between structures the
    grouping does not depend on the order. Pass verified minima only
    (``MinimizationResult.minima``). Returns ``Clusters``.
    """
    x = as_configurations(x, "x")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (N, K, D), got {x.shape}")
    energies = as_float_array(energies, "energies", shape=(x.shape[0],))
    tol = _check_permutable(x, tol)
    centred = x - x.mean(axis=1, keepdims=True)
    sorted_d = [_sorted_distances(c) for c in centred]
    reps, labels = [], np.empty(len(x), int)
    for i in np.argsort(energies, kind="stable"):
        for m, r in enumerate(reps):
            if _same_centred(centred[r], centred[i], tol, sorted_d[r], sorted_d[i]):
                labels[i] = m
                break
        else:
            labels[i] = len(reps)
            reps.append(i)
    spread = [np.max(np.abs(energies[labels == m] - energies[r])) for m, r in enumerate(reps)]
    return Clusters(x[reps].reshape(-1, *x.shape[1:]), energies[reps],
                    np.bincount(labels, minlength=len(reps)), labels, np.array(spread))
