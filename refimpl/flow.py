"""The equivariant continuous normalizing flow (seed sections 3.2 and 3.4).

``EquivariantFlow`` integrates the augmented ODE

.. math::
    \\frac{d}{dt}\\begin{bmatrix} x \\\\ l \\end{bmatrix} =
    \\begin{bmatrix} g(x, t) \\\\ -\\operatorname{div} g(x, t) \\end{bmatrix},
    \\qquad x(t_0) = z,\\ l(t_0) = 0,

with the adaptive Dormand--Prince solver of ``refimpl.ode``, one step
sequence per sample. Then ``log q_X(x(t_1)) = log q_Z(z) + l(t_1)`` and
``log |det dx/dz| = -l(t_1)``. The inverse integrates the same system from
``t_1`` back to ``t_0``, and again ``log |det dz/dx| = -l(t_0)``.
"""

from dataclasses import dataclass

import numpy as np

from . import ode
from ._kernels import field_and_divergence_batch, solve_flow_batch
from ._validate import (as_configurations, as_finite_float, as_generator, as_positive_float,
                        as_positive_int, as_solver_rtol)
from .prior import MeanFreeNormal, check_mean_free
from .psi import check_psi


def _flatten(x):
    """``(..., K, D)`` -> ``(B, K * D)`` C-contiguous, with the batch shape."""
    batch_shape = x.shape[:-2]
    k, d = x.shape[-2:]
    return np.ascontiguousarray(x.reshape(-1, k * d)), batch_shape, k, d


def vector_field(x, t, psi):
    """The equivariant field ``g(x, t)`` of seed eq. 3, shape ``(..., K, D)``.

    ``g_i = sum_{j != i} psi(r_ij, t) (x_i - x_j)`` with ``r_ij = |x_i - x_j|``.
    """
    return _field_and_divergence(x, t, psi)[0]


def divergence(x, t, psi):
    """The exact divergence of ``g`` (seed eq. 4, diagonal excluded), shape ``(...)``.

    ``div g = sum_i sum_{j != i} [psi'(r_ij, t) r_ij + D psi(r_ij, t)]``.
    """
    return _field_and_divergence(x, t, psi)[1]


def _field_and_divergence(x, t, psi):
    check_psi(psi)
    x = as_configurations(x)
    t = as_finite_float(t, "t")
    flat, batch_shape, k, d = _flatten(x)
    g = np.empty_like(flat)
    div = np.empty(flat.shape[0])
    field_and_divergence_batch(flat, t, psi.theta, int(psi.ctx_size), psi.prepare, psi.pair,
                               k, d, g, div)
    return g.reshape(x.shape), div.reshape(batch_shape)


class SolverError(RuntimeError):
    """An ODE solve did not reach its end time.

    Attributes ``sample`` (index into the batch), ``status`` (an
    ``refimpl.ode`` status code) and ``t`` (the time reached).
    """

    def __init__(self, sample, status, t, detail=""):
        self.sample, self.status, self.t = sample, status, t
        super().__init__(f"sample {sample} of the batch: {ode.STATUS_MESSAGES[status]} "
                         f"(stopped at t = {t!r}){detail}")


@dataclass(frozen=True)
class SolverStats:
    """Per-sample solver counts, each an int array of the batch shape."""

    nfev: np.ndarray  # right-hand-side evaluations
    naccept: np.ndarray  # accepted steps
    nreject: np.ndarray  # rejected step attempts


class EquivariantFlow:
    """Exact-likelihood flow driven by the equivariant field of ``psi``.

    Parameters
    ----------
    psi : psi object (``refimpl.RBFKernel``, ``refimpl.TanhMLP`` or your own)
    t0, t1 : float
        Integration interval; the prior lives at ``t0``, the data at ``t1``.
    rtol, atol : float
        Tolerances of the adaptive solver, applied to every component of
        the augmented state ``[x, l]``. An ``rtol`` below ``100 eps``
        (2.2e-14) is raised to it with a warning, as scipy does.
    max_steps : int
        Largest number of step attempts per sample before ``SolverError``.
    n_particles, dim : int, optional
        ``K`` and ``D``; needed by ``sample``, and checked against inputs.

    ``forward`` and ``inverse`` accept any configuration: the field commutes
    with translations, so the flow carries the centre of mass along
    unchanged. ``log_prob`` requires mean-free input (the density is defined
    on the mean-free subspace) and raises ``ValueError`` otherwise.

    After each solve, ``last_stats`` holds the per-sample ``SolverStats``.
    """

    def __init__(self, psi, t0=0.0, t1=1.0, rtol=1e-6, atol=1e-8, max_steps=10_000, *,
                 n_particles=None, dim=None):
        check_psi(psi)
        self.psi = psi
        self.t0 = as_finite_float(t0, "t0")
        self.t1 = as_finite_float(t1, "t1")
        if self.t0 == self.t1:
            raise ValueError(f"t0 and t1 must differ, both are {self.t0}")
        self.rtol = as_solver_rtol(rtol, "rtol")
        self.atol = as_positive_float(atol, "atol")
        self.max_steps = as_positive_int(max_steps, "max_steps")
        self.n_particles = None if n_particles is None else as_positive_int(
            n_particles, "n_particles", minimum=2)
        self.dim = None if dim is None else as_positive_int(dim, "dim")
        self.last_stats = None

    def _integrate(self, x, name, t_start, t_end):
        check_psi(self.psi)
        x = as_configurations(x, name, self.n_particles, self.dim)
        flat, batch_shape, k, d = _flatten(x)
        n = k * d
        y0 = np.zeros((flat.shape[0], n + 1))
        y0[:, :n] = flat
        y, _, _ = self.solve_augmented(y0, t_start, t_end, self.psi.theta, k, d, batch_shape)
        return y[:, :n].reshape(x.shape), -y[:, n].reshape(batch_shape)

    def solve_augmented(self, y0, t_start, t_end, theta, k, d, batch_shape, record=0):
        """Solve the augmented ODE for the rows of ``y0 (B, K D + 1)``.

        The engine under ``forward``/``inverse`` and the gradient primitive
        (``refimpl.grad``): ``theta`` replaces ``psi.theta``, ``record`` is the
        number of accepted step times kept per sample. Returns the final
        states ``(B, K D + 1)``, the times ``(B, record)`` and the counts
        ``(B, 3)``; sets ``last_stats``; raises ``SolverError`` for the first
        sample (in ``batch_shape`` order) that did not reach ``t_end``.
        """
        n_batch = y0.shape[0]
        y = np.empty_like(y0)
        stats = np.zeros((n_batch, 3), dtype=np.int64)
        status = np.zeros(n_batch, dtype=np.int64)
        t_reached = np.empty(n_batch)
        times = np.empty((n_batch, record))
        solve_flow_batch(y0, t_start, t_end, self.rtol, self.atol, self.max_steps, theta,
                         int(self.psi.ctx_size), self.psi.prepare, self.psi.pair, k, d, y, stats,
                         status, t_reached, times)
        self.last_stats = SolverStats(*(stats[:, c].reshape(batch_shape) for c in range(3)))
        failed = np.flatnonzero(status != ode.SUCCESS)
        if failed.size:
            b = failed[0]
            index = np.unravel_index(b, batch_shape) if batch_shape else ()
            more = f"; {failed.size - 1} more samples failed" if failed.size > 1 else ""
            detail = (f" after {stats[b, ode.NACCEPT]} accepted and {stats[b, ode.NREJECT]}"
                      f" rejected steps (rtol={self.rtol}, atol={self.atol},"
                      f" max_steps={self.max_steps}){more}")
            raise SolverError(tuple(int(i) for i in index), int(status[b]), float(t_reached[b]),
                              detail)
        return y, times, stats

    def forward(self, z):
        """Push ``z (..., K, D)`` from ``t0`` to ``t1``.

        Returns ``x`` of the same shape and ``logdet = log|det dx/dz|`` of
        shape ``(...)``, the Jacobian taken on the mean-free subspace.
        """
        return self._integrate(z, "z", self.t0, self.t1)

    def inverse(self, x):
        """Pull ``x (..., K, D)`` back from ``t1`` to ``t0``.

        Returns ``z`` and ``logdet = log|det dz/dx|``, shape ``(...)``.
        """
        return self._integrate(x, "x", self.t1, self.t0)

    def log_prob(self, x):
        """Normalized ``log q_X(x)`` for mean-free ``x (..., K, D)``, shape ``(...)``."""
        x = as_configurations(x, "x", self.n_particles, self.dim)
        check_mean_free(x, "x")
        z, logdet = self.inverse(x)
        prior = MeanFreeNormal(x.shape[-2], x.shape[-1])
        return prior.log_prob(z) + logdet

    def sample(self, n, rng):
        """Draw ``n`` samples; returns ``x (n, K, D)`` and ``log q_X(x)`` of shape ``(n,)``.

        Needs ``n_particles`` and ``dim`` set at construction. ``rng`` is a
        ``numpy.random.Generator`` or an integer seed.
        """
        if self.n_particles is None or self.dim is None:
            raise ValueError("sample needs the flow built with n_particles=K and dim=D")
        n = as_positive_int(n, "n")
        prior = MeanFreeNormal(self.n_particles, self.dim)
        z = prior.sample(n, as_generator(rng))
        x, logdet = self.forward(z)
        return x, prior.log_prob(z) - logdet

    def __repr__(self):
        return (f"EquivariantFlow({self.psi!r}, t0={self.t0}, t1={self.t1}, rtol={self.rtol}, "
                f"atol={self.atol}, max_steps={self.max_steps})")
