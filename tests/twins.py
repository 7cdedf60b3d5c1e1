"""Plain NumPy transcriptions of the formulas, written independently of the
Numba kernels, to serve as oracles in the tests: the field and divergence here,
psi by each family's NumPy formula in the package."""

import numpy as np

from refimpl.families import FAMILIES


def numpy_psi(psi, r, t):
    """psi(r, t) and d psi / d r of a registered family's psi object by the family's
    NumPy formula (``refimpl.families``: one per family, beside its Numba kernels)."""
    family = FAMILIES[type(psi).__name__]
    return family.numpy(family.params(psi), np.asarray(r, dtype=float), t)


def field(x, t, psi_fn):
    """g_i = sum_{j != i} psi(r_ij, t) (x_i - x_j) for one configuration (K, D)."""
    diff = x[:, None, :] - x[None, :, :]
    r = np.sqrt(np.sum(diff ** 2, axis=-1))
    value, _ = psi_fn(r, t)
    np.fill_diagonal(value, 0.0)
    return np.sum(value[..., None] * diff, axis=1)


def divergence(x, t, psi_fn):
    """sum_i sum_{j != i} [psi'(r_ij) r_ij + D psi(r_ij)] for one configuration (K, D)."""
    k, d = x.shape
    diff = x[:, None, :] - x[None, :, :]
    r = np.sqrt(np.sum(diff ** 2, axis=-1))
    value, slope = psi_fn(r, t)
    terms = slope * r + d * value
    return np.sum(terms) - np.trace(terms)
