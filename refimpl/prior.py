"""The mean-free Gaussian prior (paper section 3.3, with the mean as centre).

Densities in refimpl live on the ``(K - 1) D``-dimensional subspace of
mean-free configurations, measured in orthonormal coordinates on it. In such
coordinates ``z = z' - mu(z')`` with ``z' ~ N(0, I)`` is a standard normal,
and ``|z|^2`` (the sum over all ``K D`` entries) equals the squared norm of its
coordinates. Hence the normalized log-density

.. math::
    \\log q_Z(z) = -\\tfrac12 \\lVert z \\rVert^2 - \\tfrac{(K-1) D}{2} \\log 2\\pi .

bgflow's ``MeanFreeNormalDistribution`` reports ``-|z|^2 / 2`` without the
constant: add ``-((K - 1) D / 2) log(2 pi)`` to its values to compare.
"""

import autograd.numpy as anp
import numpy as np

from ._validate import (MEAN_FREE_RTOL, as_configurations, as_generator,  # noqa: F401
                        as_positive_int, check_mean_free, memory_for)

def standard_normal_log_prob(z, event_dim, axis=(-2, -1)):
    """``-|z|^2 / 2 - (event_dim / 2) log(2 pi)``, summing ``|z|^2`` over ``axis``.

    The log-density of a standard normal in ``event_dim`` orthonormal
    coordinates; ``autograd.numpy``, so it differentiates. With ``axis``
    ``(-2, -1)`` and ``event_dim = (K - 1) D`` it is ``MeanFreeNormal``'s.
    """
    return -0.5 * anp.sum(z * z, axis=axis) - 0.5 * event_dim * np.log(2 * np.pi)


def remove_mean(x):
    """Subtract the centre of mass ``mu(x) = (1/K) sum_i x_i`` from ``x (..., K, D)``."""
    x = as_configurations(x)
    return x - x.mean(axis=-2, keepdims=True)


def helmert_basis(n_particles, dim):
    """Orthonormal basis ``Q (K D, (K-1) D)`` of the mean-free subspace (Helmert contrasts).

    ``x = Q u`` maps coordinates ``u`` on the subspace to mean-free
    configurations (flattened), and ``u = Q^T x`` back.
    """
    k = as_positive_int(n_particles, "n_particles", minimum=2)
    d = as_positive_int(dim, "dim")
    with memory_for("n_particles", k):
        h = np.zeros((k - 1, k))
        for j in range(1, k):
            h[j - 1, :j] = 1.0
            h[j - 1, j] = -float(j)
            h[j - 1] /= np.sqrt(j * (j + 1.0))
        return np.kron(h.T, np.eye(d))


class MeanFreeNormal:
    """Standard normal on the mean-free subspace of ``K`` particles in ``D`` dims.

    Parameters
    ----------
    n_particles : int, K >= 2
    dim : int, D >= 1
    """

    def __init__(self, n_particles, dim):
        self.n_particles = as_positive_int(n_particles, "n_particles", minimum=2)
        self.dim = as_positive_int(dim, "dim")

    @property
    def event_dim(self):
        """Dimension ``(K - 1) D`` of the subspace the density lives on."""
        return (self.n_particles - 1) * self.dim

    def sample(self, n, rng):
        """``n`` mean-free samples, shape ``(n, K, D)``.

        ``rng`` is a ``numpy.random.Generator`` or an integer seed.
        """
        n = as_positive_int(n, "n")
        gen = as_generator(rng)
        with memory_for("n", n):
            z = gen.standard_normal((n, self.n_particles, self.dim))
        return z - z.mean(axis=-2, keepdims=True)

    def log_prob(self, z):
        """Normalized log-density of mean-free ``z (..., K, D)``, shape ``(...)``.

        Raises ``ValueError`` for a configuration that is not mean-free: it has
        density zero on the subspace, and silently projecting it would hide
        a caller's bug.
        """
        z = as_configurations(z, "z", self.n_particles, self.dim, mean_free=True)
        return standard_normal_log_prob(z, self.event_dim)

    def __repr__(self):
        return f"MeanFreeNormal(n_particles={self.n_particles}, dim={self.dim})"
