"""Parameter gradients of the equivariant flow with autograd.

The whole batched solve is one autograd primitive (``refimpl._engine``, the
same code ``EquivariantFlow`` runs). Its forward pass is the adaptive solve,
recording the times its accepted steps reached; its vector-Jacobian product
is the discrete adjoint of that frozen-step map, in Numba
(``refimpl._adjoint``). So the gradient is the *exact* derivative of the
numbers the forward pass returned: step sizes are control decisions, not
part of the function. The primitive is a pure function of its arguments, so
gradient computations may be interleaved or nested in any order. It matches
central differences of the frozen-step map to rounding, and the
gradient of the continuous flow to within the solver tolerance. Only first
derivatives exist: asking autograd for a second one (a Hessian, a gradient
of a gradient) raises ``NotImplementedError``.

Parameters are the trainable entries of ``psi.theta`` (``psi.trainable``),
as one flat vector ``params``. ``FlowModel`` bundles the differentiable
functions used for training::

    model = FlowModel(flow)
    loss = lambda p: -np.mean(model.log_prob(p, x_data))
    g = autograd.grad(loss)(model.params)
"""

from autograd.tracer import getval

from ._engine import theta_with
from .flow import EquivariantFlow
from .psi import check_psi


def _values(values, stats, return_stats):
    return (*values, stats) if return_stats else values


class FlowModel:
    """Differentiable view of an ``EquivariantFlow`` for training.

    ``params`` is the vector of trainable parameters (a copy); every method
    takes ``params`` explicitly so that autograd can trace it. The solver
    settings, ``n_particles`` and ``dim`` come from ``flow``, and so does the
    implementation: ``flow.log_prob(x)`` and ``FlowModel(flow).log_prob(
    model.params, x)`` run the same code and return the same numbers. Every
    method takes ``return_stats=True`` to also return the ``SolverStats`` of
    its solve (``None`` for a replay of frozen steps); it never changes
    ``flow.last_stats``.
    """

    def __init__(self, flow):
        if not isinstance(flow, EquivariantFlow):
            raise TypeError(f"flow must be an EquivariantFlow, got {type(flow).__name__}")
        check_psi(flow.psi, gradients=True)
        self.flow = flow

    def _check(self):
        """``check_psi`` again: ``flow.psi.theta`` may have been edited in place
        since ``__init__`` (a few microseconds when it was not)."""
        check_psi(self.flow.psi, gradients=True)

    @property
    def params(self):
        self._check()
        return self.flow.psi.theta[self.flow.psi.trainable].copy()

    def with_params(self, params):
        """A new ``EquivariantFlow`` with ``params`` in place (same settings)."""
        self._check()
        f = self.flow
        return EquivariantFlow(f.psi.copy_with(theta_with(f.psi, getval(params))), f.t0, f.t1,
                               f.rtol, f.atol, f.max_steps, n_particles=f.n_particles, dim=f.dim)

    def forward(self, params, z, frozen=None, return_stats=False):
        """``(x, log|det dx/dz|)``, differentiable in ``params`` and ``z``.

        ``frozen=(times, n_steps)`` (from ``step_times``) replays a fixed
        step sequence instead of solving adaptively.
        """
        self._check()
        x, logdet, stats, _ = self.flow._transport(params, z, frozen=frozen)
        return _values((x, logdet), stats, return_stats)

    def inverse(self, params, x, frozen=None, return_stats=False):
        """``(z, log|det dz/dx|)``, differentiable in ``params`` and ``x``."""
        self._check()
        z, logdet, stats, _ = self.flow._transport(params, x, inverse=True, frozen=frozen)
        return _values((z, logdet), stats, return_stats)

    def step_times(self, params, x, inverse=False):
        """The accepted step sequence of an adaptive solve from ``x``.

        Returns ``(times, n_steps)`` with shapes ``batch + (m,)`` and
        ``batch``: step ``i`` of a sample goes from ``times[i-1]`` (the start
        time for ``i = 0``) to ``times[i]``. Pass them as ``frozen=`` to
        ``forward``/``inverse`` to evaluate the frozen-step map, whose exact
        derivative is what ``autograd`` returns for the adaptive solve.
        """
        self._check()
        steps = self.flow._transport(getval(params), getval(x), inverse, record=True).steps
        return steps.times, steps.n_steps

    def log_prob(self, params, x, return_stats=False):
        """Normalized ``log q_X(x)`` of mean-free ``x (..., K, D)``."""
        self._check()
        log_q, stats = self.flow._log_prob(params, x)
        return (log_q, stats) if return_stats else log_q

    def sample(self, params, n, rng, return_stats=False):
        """``n`` samples ``x (n, K, D)`` and their ``log q_X``, reparameterized."""
        self._check()
        x, log_q, stats = self.flow._sample(params, n, rng)
        return _values((x, log_q), stats, return_stats)

    def push(self, params, z, return_stats=False):
        """``x = F(z)`` and ``log q_X(x)`` for given prior samples ``z``, differentiable
        in ``params`` (``EquivariantFlow.push``)."""
        self._check()
        x, log_q, stats = self.flow._push(params, z)
        return _values((x, log_q), stats, return_stats)
