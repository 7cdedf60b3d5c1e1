"""Plain NumPy transcriptions of the formulas, written independently of the
Numba kernels, to serve as oracles in the tests."""

import numpy as np


def rbf_psi(psi, r, t):
    """psi(r, t) and d psi / d r for ``refimpl.RBFKernel`` by the direct double sum."""
    r = np.asarray(r, dtype=float)
    time_rbf = np.exp(-psi.gamma_t * (t - psi.nu) ** 2)
    d = r[..., None] - psi.mu
    dist_rbf = np.exp(-psi.gamma * d ** 2)
    c = psi.weights @ time_rbf
    return dist_rbf @ c, (-2.0 * psi.gamma * d * dist_rbf) @ c


def mlp_psi(mlp, r, t):
    """psi(r, t) and d psi / d r for ``refimpl.TanhMLP``."""
    h = mlp.hidden
    th = mlp.theta
    v0, a, c, b, v = th[1], th[2:2 + h], th[2 + h:2 + 2 * h], th[2 + 2 * h:2 + 3 * h], th[2 + 3 * h:]
    r = np.asarray(r, dtype=float)
    s = np.tanh(a * r[..., None] + c * t + b)
    return v0 + s @ v, (a * (1 - s ** 2)) @ v


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
