"""The equivariant continuous normalizing flow (paper sections 3.2 and 3.4, eqs. 1-4).

``EquivariantFlow`` integrates the augmented ODE

.. math::
    \\frac{d}{dt}\\begin{bmatrix} x \\\\ l \\end{bmatrix} =
    \\begin{bmatrix} g(x, t) \\\\ -\\operatorname{div} g(x, t) \\end{bmatrix},
    \\qquad x(t_0) = z,\\ l(t_0) = 0,

with the adaptive Dormand--Prince solver of ``refimpl.ode``, one step
sequence per sample. Then ``log q_X(x(t_1)) = log q_Z(z) + l(t_1)`` and
``log |det dx/dz| = -l(t_1)``. The inverse integrates the same system from
``t_1`` back to ``t_0``, and again ``log |det dz/dx| = -l(t_0)``.

Every solve goes through ``refimpl._engine`` (``transport``), the one place
that calls the solver kernels. ``refimpl.FlowModel`` is the differentiable
view of a flow: its methods run this module's ``_transport``, ``_log_prob``
and ``_sample`` with the parameters as an explicit argument, so both front
ends compute the same numbers by the same code.
"""

from autograd.tracer import getval, isbox

from . import _engine
from ._engine import SolverError, SolverStats
from ._validate import (MAX_STEPS_LIMIT, as_configurations, as_generator,
                        as_positive_float, as_positive_int, as_solver_rtol, as_time)
from .prior import MeanFreeNormal, standard_normal_log_prob
from .psi import check_psi

__all__ = ["EquivariantFlow", "SolverError", "SolverStats", "divergence", "field_and_divergence",
           "vector_field"]


def vector_field(x, t, psi):
    """The equivariant field ``g(x, t)`` of paper eq. 3 (section 3.4), shape ``(..., K, D)``.

    ``g_i = sum_{j != i} psi(r_ij, t) (x_i - x_j)`` with ``r_ij = |x_i - x_j|``.
    """
    return _field_and_divergence(x, t, psi)[0]


def divergence(x, t, psi):
    """The exact divergence of ``g`` (paper eq. 4 without its j = i terms; README, "The math"), shape ``(...)``.

    ``div g = sum_i sum_{j != i} [psi'(r_ij, t) r_ij + D psi(r_ij, t)]``.
    """
    return _field_and_divergence(x, t, psi)[1]


def field_and_divergence(x, t, psi):
    """``(vector_field(x, t, psi), divergence(x, t, psi))`` from one evaluation.

    Each of the two computes both (one pass over the pairs); this returns
    both for the price of one call: the right-hand side ``[g, -div g]`` of the
    augmented ODE, for ``scipy.integrate.solve_ivp`` say.
    """
    return _field_and_divergence(x, t, psi)


def _field_and_divergence(x, t, psi):
    verdict = check_psi(psi)
    return _engine.field_and_divergence(psi, as_configurations(x), as_time(t),
                                        verdict)


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

    Solver statistics: every method takes ``return_stats=True`` to return
    the per-sample ``SolverStats`` of its solve as an extra last element. For
    convenience ``last_stats`` also holds those of the latest ``forward``,
    ``inverse``, ``log_prob``, ``sample`` or ``push`` call on this object (also one that
    raised ``SolverError``); nothing else sets it (``FlowModel``'s solves do
    not), and it is not meant for concurrent use of one flow from threads.
    """

    def __init__(self, psi, t0=0.0, t1=1.0, rtol=1e-6, atol=1e-8, max_steps=10_000, *,
                 n_particles=None, dim=None):
        check_psi(psi)
        self.psi = psi
        self.t0 = as_time(t0, "t0")
        self.t1 = as_time(t1, "t1")
        if self.t0 == self.t1:
            raise ValueError(f"t0 and t1 must differ, both are {self.t0}")
        self.rtol = as_solver_rtol(rtol, "rtol")
        self.atol = as_positive_float(atol, "atol")
        self.max_steps = as_positive_int(max_steps, "max_steps", maximum=MAX_STEPS_LIMIT)
        self.n_particles = None if n_particles is None else as_positive_int(
            n_particles, "n_particles", minimum=2)
        self.dim = None if dim is None else as_positive_int(dim, "dim")
        self.last_stats = None

    # --- the one implementation, shared with refimpl.FlowModel ----------------------------------
    # ``params`` is None (psi's own parameters) or the trainable vector, possibly an autograd
    # box. _log_prob, _sample and _push return their values followed by the SolverStats of the solve.

    def _transport(self, params, x, inverse=False, frozen=None, record=False):
        """``_engine.transport`` of configurations ``x`` over this flow's interval."""
        name = "x" if inverse else "z"
        x_value = as_configurations(getval(x), name, self.n_particles, self.dim)
        t_start, t_end = (self.t1, self.t0) if inverse else (self.t0, self.t1)
        solver = _engine.Solver(self.psi, self.rtol, self.atol, self.max_steps)
        return _engine.transport(solver, params, x if isbox(x) else x_value, t_start, t_end,
                                 frozen, record)

    def _log_prob(self, params, x):
        x_value = as_configurations(getval(x), "x", self.n_particles, self.dim, mean_free=True)
        z, logdet, stats, _ = self._transport(params, x if isbox(x) else x_value, inverse=True)
        k, d = x_value.shape[-2:]
        return standard_normal_log_prob(z, (k - 1) * d) + logdet, stats

    def _sample(self, params, n, rng):
        if self.n_particles is None or self.dim is None:
            raise ValueError("sample needs the flow built with n_particles=K and dim=D")
        n = as_positive_int(n, "n")
        prior = MeanFreeNormal(self.n_particles, self.dim)
        return self._push(params, prior.sample(n, as_generator(rng)))

    def _push(self, params, z):
        z = as_configurations(getval(z), "z", self.n_particles, self.dim, mean_free=True)
        x, logdet, stats, _ = self._transport(params, z)
        k, d = z.shape[-2:]
        return x, standard_normal_log_prob(z, (k - 1) * d) - logdet, stats

    def _public(self, compute, return_stats):
        """Run ``compute() -> (*values, stats)`` for a public method: ``last_stats`` set."""
        check_psi(self.psi)
        try:
            *values, stats = compute()
        except SolverError as err:
            self.last_stats = err.stats
            raise
        self.last_stats = stats
        if return_stats:
            values.append(stats)
        return values[0] if len(values) == 1 else tuple(values)

    # --- public -----------------------------------------------------------------------------------

    def forward(self, z, return_stats=False):
        """Push ``z (..., K, D)`` from ``t0`` to ``t1``.

        Returns ``x`` of the same shape and ``logdet = log|det dx/dz|`` of
        shape ``(...)``, the Jacobian taken on the mean-free subspace (and
        the ``SolverStats`` if ``return_stats``).
        """
        return self._public(lambda: self._transport(None, z)[:3], return_stats)

    def inverse(self, x, return_stats=False):
        """Pull ``x (..., K, D)`` back from ``t1`` to ``t0``.

        Returns ``z`` and ``logdet = log|det dz/dx|``, shape ``(...)`` (and
        the ``SolverStats`` if ``return_stats``).
        """
        return self._public(lambda: self._transport(None, x, inverse=True)[:3], return_stats)

    def log_prob(self, x, return_stats=False):
        """Normalized ``log q_X(x)`` for mean-free ``x (..., K, D)``, shape ``(...)``."""
        return self._public(lambda: self._log_prob(None, x), return_stats)

    def sample(self, n, rng, return_stats=False):
        """Draw ``n`` samples; returns ``x (n, K, D)`` and ``log q_X(x)`` of shape ``(n,)``.

        Needs ``n_particles`` and ``dim`` set at construction. ``rng`` is a
        ``numpy.random.Generator`` or an integer seed.
        """
        return self._public(lambda: self._sample(None, n, rng), return_stats)

    def push(self, z, return_stats=False):
        """``x = F(z)`` and ``log q_X(x)`` for given mean-free prior samples ``z (..., K, D)``.

        What ``sample`` returns, with the prior samples drawn by the caller
        (``sample(n, rng)`` is ``push`` of ``n`` draws of ``MeanFreeNormal``).
        """
        return self._public(lambda: self._push(None, z), return_stats)

    def __repr__(self):
        return (f"EquivariantFlow({self.psi!r}, t0={self.t0}, t1={self.t1}, rtol={self.rtol}, "
                f"atol={self.atol}, max_steps={self.max_steps})")
