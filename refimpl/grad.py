"""Parameter gradients of the equivariant flow with autograd.

The whole batched solve is one autograd primitive. Its forward pass is the
adaptive solve of ``EquivariantFlow``, recording the times its accepted steps
reached; its vector-Jacobian product is the discrete adjoint of that
frozen-step map, in Numba (``refimpl._adjoint``). So the gradient is the
*exact* derivative of the numbers the forward pass returned (DESIGN.md
section 3): step sizes are control decisions, not part of the function. It
matches central differences of the frozen-step map to rounding, and the
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

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from ._adjoint import adjoint_batch, replay_batch
from ._validate import as_configurations, as_float_array, as_generator, as_positive_int
from .flow import EquivariantFlow
from .prior import MeanFreeNormal, check_mean_free, standard_normal_log_prob
from .psi import check_psi

# Accepted step times first recorded per sample when a gradient may follow
# (8 bytes each); a solve that takes more steps is repeated with exactly as
# many slots as its longest sample needs (the same solve, so the same result).
INITIAL_RECORDED_STEPS = 256


class _SolveSpec:
    """What the primitive needs besides its differentiable inputs; it is
    filled by the forward pass (times, number of steps) for the VJP."""

    def __init__(self, flow, t_start, t_end, k, d, batch_shape, frozen=None, record=True):
        self.flow, self.t_start, self.t_end = flow, t_start, t_end
        self.k, self.d, self.batch_shape = k, d, batch_shape
        self.frozen = frozen  # (times, n_steps) to replay instead of an adaptive solve
        self.record = record  # keep the step times (only needed if a gradient follows)
        self.theta = self.times = self.n_steps = self.y0 = None


@primitive
def _solve(params, y0, spec):
    """Final augmented states ``(B, K D + 1)`` of the rows of ``y0``."""
    flow = spec.flow
    theta = flow.psi.theta.copy()
    theta[flow.psi.trainable] = as_float_array(params, "params", flow.psi.trainable.shape)
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    if spec.frozen is not None:
        times, n_steps = spec.frozen
        y = np.empty_like(y0)
        replay_batch(y0, spec.t_start, times, n_steps, theta, int(flow.psi.ctx_size),
                     flow.psi.prepare, flow.psi.pair, spec.k, spec.d, y)
        spec.theta, spec.times, spec.n_steps, spec.y0 = theta, times, n_steps, y0
        return y
    record = min(flow.max_steps, INITIAL_RECORDED_STEPS) if spec.record else 0
    solve = (lambda width: flow.solve_augmented(y0, spec.t_start, spec.t_end, theta, spec.k,
                                                spec.d, spec.batch_shape, record=width))
    y, times, stats = solve(record)
    n_steps = np.ascontiguousarray(stats[:, 1])
    if spec.record and n_steps.max(initial=0) > record:
        y, times, stats = solve(int(n_steps.max()))
    spec.theta, spec.times, spec.n_steps, spec.y0 = theta, times, n_steps, y0
    return y


@primitive
def _adjoint(g, params, y0, spec):
    """``[params_bar, y0_bar.ravel()]`` for the cotangent ``g`` of ``_solve``'s output.

    A primitive with no VJP of its own: the discrete adjoint is first order
    only, so autograd raises ``NotImplementedError`` for a second derivative
    instead of silently returning zeros (``params`` and ``y0`` are passed for
    that reason; their values are the ones the forward pass stored).
    """
    psi = spec.flow.psi
    g = np.ascontiguousarray(g, dtype=np.float64)
    y0_bar = np.empty_like(g)
    theta_bar = np.empty((g.shape[0], psi.theta.size))
    adjoint_batch(spec.y0, spec.t_start, spec.times, spec.n_steps, g, spec.theta,
                  int(psi.ctx_size), psi.prepare, psi.pair, psi.pair2, psi.pair_vjp,
                  psi.prepare_vjp, spec.k, spec.d, y0_bar, theta_bar)
    return np.concatenate([theta_bar.sum(axis=0)[psi.trainable], y0_bar.ravel()])


def _solve_vjp(argnums, ans, args, kwargs):
    params, y0, spec = args
    n_params = spec.flow.psi.trainable.size

    def vjp(g):
        flat = _adjoint(g, params, y0, spec)
        out = {0: flat[:n_params], 1: anp.reshape(flat[n_params:], anp.shape(y0))}
        return tuple(out[a] for a in argnums)

    return vjp


defvjp_argnums(_solve, _solve_vjp)


def _initial_states(flow, x, name):
    """Checked ``x (..., K, D)`` and the augmented initial states ``[x, 0]`` as rows.

    The rows stay an autograd box when ``x`` is one, so gradients reach ``x``.
    """
    x_value = as_configurations(getval(x), name, flow.n_particles, flow.dim)
    k, d = x_value.shape[-2:]
    rows = int(np.prod(x_value.shape[:-2], dtype=np.int64))
    flat = anp.reshape(x if isbox(x) else x_value, (rows, k * d))
    return x_value, anp.concatenate([flat, anp.zeros((rows, 1))], axis=1)


def _transform(flow, params, x, t_start, t_end, name, frozen=None):
    x_value, y0 = _initial_states(flow, x, name)
    batch_shape = x_value.shape[:-2]
    k, d = x_value.shape[-2:]
    n = k * d
    rows = y0.shape[0]
    if frozen is not None:
        times, n_steps = frozen
        times = np.ascontiguousarray(np.reshape(times, (rows, -1)), dtype=np.float64)
        n_steps = np.ascontiguousarray(np.reshape(n_steps, rows), dtype=np.int64)
        if n_steps.min(initial=0) < 0 or n_steps.max(initial=0) > times.shape[1]:
            raise ValueError("n_steps must lie between 0 and the number of recorded times")
        frozen = times, n_steps
    traced = isbox(params) or isbox(x)
    y = _solve(params, y0, _SolveSpec(flow, t_start, t_end, k, d, batch_shape, frozen, traced))
    return anp.reshape(y[:, :n], x_value.shape), -anp.reshape(y[:, n], batch_shape)


class FlowModel:
    """Differentiable view of an ``EquivariantFlow`` for training.

    ``params`` is the vector of trainable parameters (a copy); every method
    takes ``params`` explicitly so that autograd can trace it. The solver
    settings, ``n_particles`` and ``dim`` come from ``flow``.
    """

    def __init__(self, flow):
        if not isinstance(flow, EquivariantFlow):
            raise TypeError(f"flow must be an EquivariantFlow, got {type(flow).__name__}")
        check_psi(flow.psi, gradients=True)
        self.flow = flow

    @property
    def params(self):
        return self.flow.psi.theta[self.flow.psi.trainable].copy()

    def with_params(self, params):
        """A new ``EquivariantFlow`` with ``params`` in place (same settings)."""
        psi = self.flow.psi
        theta = psi.theta.copy()
        theta[psi.trainable] = as_float_array(getval(params), "params", psi.trainable.shape)
        f = self.flow
        return EquivariantFlow(psi.copy_with(theta), f.t0, f.t1, f.rtol, f.atol, f.max_steps,
                               n_particles=f.n_particles, dim=f.dim)

    def forward(self, params, z, frozen=None):
        """``(x, log|det dx/dz|)``, differentiable in ``params`` and ``z``.

        ``frozen=(times, n_steps)`` (from ``step_times``) replays a fixed
        step sequence instead of solving adaptively.
        """
        return _transform(self.flow, params, z, self.flow.t0, self.flow.t1, "z", frozen)

    def inverse(self, params, x, frozen=None):
        """``(z, log|det dz/dx|)``, differentiable in ``params`` and ``x``."""
        return _transform(self.flow, params, x, self.flow.t1, self.flow.t0, "x", frozen)

    def step_times(self, params, x, inverse=False):
        """The accepted step sequence of an adaptive solve from ``x``.

        Returns ``(times, n_steps)`` with shapes ``batch + (m,)`` and
        ``batch``: step ``i`` of a sample goes from ``times[i-1]`` (the start
        time for ``i = 0``) to ``times[i]``. Pass them as ``frozen=`` to
        ``forward``/``inverse`` to evaluate the frozen-step map, whose exact
        derivative is what ``autograd`` returns for the adaptive solve.
        """
        f = self.flow
        t_start, t_end = (f.t1, f.t0) if inverse else (f.t0, f.t1)
        x_value, y0 = _initial_states(f, getval(x), "x")
        batch_shape, (k, d) = x_value.shape[:-2], x_value.shape[-2:]
        spec = _SolveSpec(f, t_start, t_end, k, d, batch_shape)
        _solve(getval(params), y0, spec)
        return spec.times.reshape(batch_shape + (-1,)), spec.n_steps.reshape(batch_shape)

    def log_prob(self, params, x):
        """Normalized ``log q_X(x)`` of mean-free ``x (..., K, D)``."""
        x_value = as_configurations(getval(x), "x", self.flow.n_particles, self.flow.dim)
        check_mean_free(x_value, "x")
        z, logdet = self.inverse(params, x)
        k, d = x_value.shape[-2:]
        return standard_normal_log_prob(z, (k - 1) * d) + logdet

    def sample(self, params, n, rng):
        """``n`` samples ``x (n, K, D)`` and their ``log q_X``, reparameterized."""
        f = self.flow
        if f.n_particles is None or f.dim is None:
            raise ValueError("sample needs the flow built with n_particles=K and dim=D")
        n = as_positive_int(n, "n")
        prior = MeanFreeNormal(f.n_particles, f.dim)
        z = prior.sample(n, as_generator(rng))
        x, logdet = self.forward(params, z)
        return x, prior.log_prob(z) - logdet

