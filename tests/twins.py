"""Plain NumPy transcriptions of the formulas, written independently of the
Numba kernels, to serve as oracles in the tests: the field and divergence here,
psi by each family's NumPy formula in the package; and the stress distances at
which the tests compare the RBF kernels' fixed-window paths with the general ones."""

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


# RBFKernel arguments of layouts that fit the fixed-window kernels (rbf.fits_window)
WINDOW_LAYOUTS = [
    {},  # the benchmark's 50 x 10 layout
    {"n_distance": 5, "n_time": 3},  # fewer centres than the window
    {"n_distance": 80, "r_max": 3.0, "gamma": 400.0},  # narrow Gaussians
    {"mu": np.linspace(1.0, 6.0, 30)},  # grid not starting at 0: r below the first centre
]


def stress_distances(mu, rng, far, n_random):
    """Distances that stress an RBF kernel on the centres ``mu`` (equally
    spaced): 0 and nearly 0, at and between every centre, just past both
    halves of a spacing, past the end of the grid by up to 30 spacings, the
    distances ``far``, and ``n_random`` uniform ones up to 2 past the grid."""
    spacing = mu[1] - mu[0]
    return np.concatenate([[0.0, 1e-300, 1e-9], mu, mu + 0.5 * spacing, mu + 0.4999 * spacing,
                           mu[-1] + spacing * np.array([0.51, 1.0, 3.0, 10.5, 30.0]),
                           far, rng.uniform(0.0, mu[-1] + 2.0, n_random)])
