"""The non-equivariant baseline "nBG": a RealNVP of affine couplings (Dinh et al. 2016).

Reference measure
-----------------
The density lives on the same space, with the same normalization, as
``MeanFreeNormal`` and ``EquivariantFlow``: the ``n = (K - 1) D``-dimensional
subspace of mean-free configurations, measured in orthonormal coordinates.
We fix the orthonormal basis ``Q`` (shape ``(K D, n)``) given by the
**Helmert contrasts** in particle space times the identity in space,

.. math::
    H_{j i} = \\begin{cases} 1/\\sqrt{j (j+1)} & i < j \\\\
              -j/\\sqrt{j (j+1)} & i = j \\\\ 0 & i > j \\end{cases}
    \\quad (j = 1, \\dots, K-1), \\qquad Q = H^T \\otimes I_D ,

a closed form (no SVD, hence no sign or ordering ambiguity), deterministic in
``K, D`` alone. Column ``(j - 1) D + d`` of ``Q`` is contrast ``j`` in spatial
direction ``d``. A mean-free ``x (..., K, D)`` has coordinates
``u = x.ravel() @ Q`` and ``x = (u @ Q.T).reshape(K, D)``; as ``Q`` has
orthonormal columns, ``|u| = |x|`` and log-densities in ``u`` are log-densities
on the subspace. The RealNVP ``F`` maps ``z ~ N(0, I_n)`` to ``u = F(z)``, so

.. math::
    \\log q(x) = -\\tfrac12 \\lVert z \\rVert^2 - \\tfrac n2 \\log 2\\pi
                 + \\log\\lvert\\det \\partial z / \\partial u\\rvert ,
    \\quad z = F^{-1}(Q^T x) ,

which at the identity initialization equals ``MeanFreeNormal(K, D).log_prob(x)``.

What the paper most likely did instead
--------------------------------------
The seed says only "RealNVP layers [Dinh et al.] as used in [Noé et al. 2019]",
not in which coordinates they act. The Boltzmann generator set-up of Noé et
al. (and bgflow) is most likely: a RealNVP on all ``K D`` Cartesian
coordinates with a standard normal prior on ``R^{K D}``; the other common
choice removes the centre non-orthonormally, e.g. models the ``(K - 1) D``
coordinates ``y_i = x_i - x_K`` relative to one particle. Consequences:

* On ``R^{K D}`` the mean-free data lie on a null set: the density is
  degenerate, and maximum likelihood can lower the NLL without bound by
  squeezing the centre-of-mass directions. Such NLLs mix the fit on the
  subspace with that collapse and are not comparable with a subspace density
  (on uncentred data they also include ``D`` centre-of-mass dimensions).
  The paper's negative nBG train NLL (Table 1, -12.64 vs eqBG 5.91) is consistent
  with, though no proof of, such a collapse.
* A non-orthonormal linear chart shifts every log-density by a constant:
  for ``y_i = x_i - x_K``, ``log q_y = log q_u - (D/2) log K`` (the Gram
  determinant of ``e_i - e_K`` is ``K`` per spatial direction), i.e. NLLs are
  ``log 4 ~ 1.386`` larger at ``K = 4, D = 2``; train/test gaps are unchanged.

Couplings
---------
Layer ``l`` splits the coordinates by parity, keeps ``u_A`` (indices with
``(i + l)`` odd) and maps ``u_B`` (``(i + l)`` even) affinely,
``y_B = u_B exp(s(u_A)) + t(u_A)``, with ``s, t`` from a tanh MLP. The log
scale is soft-clamped, ``s = c tanh(s_raw / c)`` with ``c = scale_clamp``:
slope 1 at 0 (the unclamped RealNVP near the identity), bounded by ``c`` so
that no layer can blow up or collapse a coordinate by more than ``exp(c)``.
For ``n = 1`` (``K = 2, D = 1``) every layer is an unconditioned affine map.
The last linear layer of every conditioner starts at zero, so the initial
flow is the identity; the other weights are ``N(0, init_scale^2 / fan_in)``,
biases zero. Everything is written in ``autograd.numpy``: all entry points
are pure functions of the flat parameter vector ``params``.

Batch independence
------------------
A configuration's result must not depend on which others share its batch.
BLAS ``dot`` does not promise that (a single row goes through ``gemv``, a
batch through ``gemm``, with different summation orders), so every matrix
product here is ``rowwise_dot``: a small Numba loop that sums each row in a
fixed order, registered as an autograd primitive with its VJPs and JVPs.
"""

import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defvjp, primitive
from autograd.tracer import isbox
from numba import njit

from ._validate import (as_configurations, as_finite_float, as_float_array, as_generator,
                        as_positive_float, as_positive_int, check_finite, memory_for)
from .prior import helmert_basis, standard_normal_log_prob


@njit(cache=True)
def _rowwise_dot_kernel(h, w, out):
    for r in range(h.shape[0]):
        for o in range(w.shape[1]):
            out[r, o] = 0.0
        for i in range(h.shape[1]):
            for o in range(w.shape[1]):
                out[r, o] += h[r, i] * w[i, o]


def _flat_rows(a):
    """``a (..., m)`` as ``(N, m)``; explicit N, as ``-1`` is ambiguous when ``m = 0``."""
    return anp.reshape(a, (int(np.prod(a.shape[:-1])), a.shape[-1]))


@primitive
def rowwise_dot(h, w):
    """``h (..., m) @ w (m, p)``, each row summed over ``i = 0..m-1`` in order."""
    rows = np.ascontiguousarray(_flat_rows(h), dtype=np.float64)
    out = np.empty((rows.shape[0], w.shape[1]))
    _rowwise_dot_kernel(rows, np.ascontiguousarray(w, dtype=np.float64), out)
    return out.reshape(h.shape[:-1] + (w.shape[1],))


defvjp(rowwise_dot,
       lambda ans, h, w: lambda g: anp.dot(g, anp.transpose(w)),
       lambda ans, h, w: lambda g: anp.dot(anp.transpose(_flat_rows(h)), _flat_rows(g)))
defjvp(rowwise_dot,
       lambda g, ans, h, w: rowwise_dot(g, w),
       lambda g, ans, h, w: rowwise_dot(h, g))


def n_coupling_params(event_dim, n_layers, hidden):
    """Number of parameters of a ``RealNVP`` (``event_dim = (K - 1) D``), without building it.

    Layer ``l`` moves the coordinates ``i`` with ``i + l`` even (all of them
    when ``event_dim = 1``); its conditioner maps the kept ones through
    ``hidden`` to a shift and a log-scale per moved coordinate.
    """
    total = 0
    for layer in range(n_layers):
        move = event_dim if event_dim == 1 else (event_dim + 1 - layer % 2) // 2
        widths = (event_dim - move,) + tuple(hidden) + (2 * move,)
        total += sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return total


class RealNVP:
    """RealNVP on orthonormal coordinates of the mean-free subspace.

    Parameters
    ----------
    n_particles : int, K >= 2
    dim : int, D >= 1
    n_layers : int, number of affine couplings (alternating parity masks)
    hidden : tuple of int, hidden widths of each coupling's tanh MLP
    rng : int or numpy.random.Generator, draws the initial weights
    init_scale : float >= 0, weights ``~ N(0, init_scale^2 / fan_in)``
    scale_clamp : float > 0, bound ``c`` of the log-scale ``s = c tanh(s_raw / c)``

    Attributes
    ----------
    params : ndarray, shape (n_params,), initial parameters (the identity flow)
    basis : ndarray, shape (K D, (K-1) D), the Helmert basis ``Q``
    """

    def __init__(self, n_particles, dim, n_layers=4, hidden=(64, 64), rng=0,
                 init_scale=1.0, scale_clamp=2.0):
        self.n_particles = as_positive_int(n_particles, "n_particles", minimum=2)
        self.dim = as_positive_int(dim, "dim")
        self.n_layers = as_positive_int(n_layers, "n_layers")
        if isinstance(hidden, (int, np.integer)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a tuple of widths, got {hidden!r}")
        self.hidden = tuple(as_positive_int(w, "hidden width") for w in hidden)
        init_scale = as_finite_float(init_scale, "init_scale")
        if init_scale < 0:
            raise ValueError(f"init_scale must be non-negative, got {init_scale}")
        self.init_scale = init_scale
        self.scale_clamp = as_positive_float(scale_clamp, "scale_clamp")
        self.basis = helmert_basis(self.n_particles, self.dim)
        n = self.event_dim
        idx = np.arange(n)
        self._splits, self._shapes = [], []
        for layer in range(self.n_layers):
            keep = idx[(idx + layer) % 2 == 1] if n > 1 else idx[:0]
            move = idx[(idx + layer) % 2 == 0] if n > 1 else idx
            order = np.argsort(np.concatenate([keep, move]))  # [u_A, y_B] -> coordinate order
            self._splits.append((keep, move, order))
            widths = (keep.size,) + self.hidden + (2 * move.size,)
            self._shapes.append([((a, b), (b,)) for a, b in zip(widths[:-1], widths[1:])])
        self.n_params = n_coupling_params(n, self.n_layers, self.hidden)
        self.params = self._initial_params(as_generator(rng))

    @property
    def event_dim(self):
        """Dimension ``(K - 1) D`` of the subspace the density lives on."""
        return (self.n_particles - 1) * self.dim

    def _initial_params(self, gen):
        chunks = []
        for layer in self._shapes:
            for i, (w_shape, b_shape) in enumerate(layer):
                std = 0.0 if i == len(layer) - 1 else self.init_scale / np.sqrt(max(w_shape[0], 1))
                chunks += [std * gen.standard_normal(w_shape).ravel(), np.zeros(b_shape)]
        return np.concatenate(chunks)

    def unflatten(self, params):
        """Per layer, the list of ``(W, b)`` of its conditioner MLP (views of ``params``)."""
        params = self._check_params(params)
        layers, start = [], 0
        for layer in self._shapes:
            weights = []
            for w_shape, b_shape in layer:
                size = w_shape[0] * w_shape[1]
                w = anp.reshape(params[start:start + size], w_shape)
                b = params[start + size:start + size + b_shape[0]]
                start += size + b_shape[0]
                weights.append((w, b))
            layers.append(weights)
        return layers

    def _check_params(self, params):
        if isbox(params):
            if params.shape != (self.n_params,):
                raise ValueError(f"params must have shape ({self.n_params},), got {params.shape}")
            return params
        return as_float_array(params, "params", shape=(self.n_params,))

    def _check_coordinates(self, u, name):
        if not isbox(u):
            u = as_float_array(u, name)
        if u.ndim < 1 or u.shape[-1] != self.event_dim:
            raise ValueError(f"{name} must have shape (..., {self.event_dim}) (coordinates on the "
                             f"(K-1)*D-dimensional mean-free subspace), got {u.shape}")
        return u

    def _shift_log_scale(self, weights, u_keep, n_move):
        h = u_keep
        for w, b in weights[:-1]:
            h = anp.tanh(rowwise_dot(h, w) + b)
        w, b = weights[-1]
        out = rowwise_dot(h, w) + b
        c = self.scale_clamp
        return out[..., n_move:], c * anp.tanh(out[..., :n_move] / c)

    def forward(self, params, z):
        """Map prior coordinates ``z (..., n)`` to ``u = F(z)``; return ``(u, log|det du/dz|)``."""
        z = self._check_coordinates(z, "z")
        logdet = anp.zeros(z.shape[:-1])
        for weights, (keep, move, order) in zip(self.unflatten(params), self._splits):
            t, s = self._shift_log_scale(weights, z[..., keep], move.size)
            y = z[..., move] * anp.exp(s) + t
            z = anp.concatenate([z[..., keep], y], axis=-1)[..., order]
            logdet = logdet + anp.sum(s, axis=-1)
        return z, logdet

    def inverse(self, params, u):
        """Map coordinates ``u (..., n)`` to ``z = F^{-1}(u)``; return ``(z, log|det dz/du|)``."""
        u = self._check_coordinates(u, "u")
        logdet = anp.zeros(u.shape[:-1])
        layers = self.unflatten(params)
        for weights, (keep, move, order) in reversed(list(zip(layers, self._splits))):
            t, s = self._shift_log_scale(weights, u[..., keep], move.size)
            y = (u[..., move] - t) * anp.exp(-s)
            u = anp.concatenate([u[..., keep], y], axis=-1)[..., order]
            logdet = logdet - anp.sum(s, axis=-1)
        return u, logdet

    def to_coordinates(self, x):
        """Orthonormal coordinates ``u (..., n)`` of mean-free ``x (..., K, D)``."""
        x = self._check_configurations(x)
        return rowwise_dot(anp.reshape(x, x.shape[:-2] + (x.shape[-2] * x.shape[-1],)),
                           self.basis)

    def from_coordinates(self, u):
        """Mean-free configurations ``x (..., K, D)`` with coordinates ``u (..., n)``."""
        u = self._check_coordinates(u, "u")
        x = rowwise_dot(u, self.basis.T)
        return anp.reshape(x, u.shape[:-1] + (self.n_particles, self.dim))

    def _check_configurations(self, x):
        if isbox(x):  # differentiating w.r.t. x: shape only, the value is traced
            if x.ndim < 2 or x.shape[-2:] != (self.n_particles, self.dim):
                raise ValueError(f"x must have shape (..., {self.n_particles}, {self.dim}), "
                                 f"got {x.shape}")
            return x
        x = as_configurations(x, "x", self.n_particles, self.dim, mean_free=True)
        return x

    def log_prob(self, params, x):
        """Normalized log-density on the mean-free subspace of ``x (..., K, D)``, shape ``(...)``.

        Raises ``ValueError`` for a configuration that is not mean-free.
        """
        z, logdet = self.inverse(params, self.to_coordinates(x))
        return standard_normal_log_prob(z, self.event_dim, axis=-1) + logdet

    def sample(self, params, n, rng):
        """``n`` samples ``x (n, K, D)`` and their ``log_q (n,)``, reparameterized in ``params``.

        The standard normal is drawn with ``rng`` (a Generator or an integer
        seed) and pushed through the flow, so autograd differentiates ``x``
        and ``log_q`` with respect to ``params``.
        """
        n = as_positive_int(n, "n")
        with memory_for("n", n):
            z = as_generator(rng).standard_normal((n, self.event_dim))
        u, logdet = self.forward(params, z)
        log_q = standard_normal_log_prob(z, self.event_dim, axis=-1) - logdet
        if not isbox(u):
            check_finite(u, "sampled coordinates")
        return self.from_coordinates(u), log_q

    def __repr__(self):
        return (f"RealNVP(n_particles={self.n_particles}, dim={self.dim}, "
                f"n_layers={self.n_layers}, hidden={self.hidden}, "
                f"scale_clamp={self.scale_clamp})")
