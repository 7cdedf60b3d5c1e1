"""Scalar functions ``psi(r, t)`` of a pair distance that drive the flow.

The dynamics (seed eq. 3) move particle ``i`` along ``sum_j psi(r_ij, t)
(x_i - x_j)``; any C^2 function of the distance (and time) gives an
equivariant field. This module defines how a psi family plugs into the Numba
kernels, and ships two families.

The psi protocol
----------------
A psi object has

``theta``
    1-D C-contiguous float64 array holding *all* its numbers (layout chosen
    by the family; it may start with integer sizes stored as floats).
``ctx_size``
    length of a scratch array the kernels allocate per sample.
``prepare``
    Numba function compiled with ``PREPARE_SIG``, ``prepare(theta, t, ctx)``:
    everything that depends on ``t`` only, computed once per evaluation of
    the field and stored in ``ctx``.
``pair``
    Numba function compiled with ``PAIR_SIG``, ``pair(theta, ctx, r) ->
    (psi, dpsi_dr)``: the value and radial derivative at one distance.

The kernels receive ``prepare`` and ``pair`` as first-class functions of
those fixed signatures, so a new family (yours included) needs no change to
the kernels and does not force them to recompile: compile your two functions
with ``@njit(PREPARE_SIG, cache=True)`` and ``@njit(PAIR_SIG, cache=True)``
and subclass ``Psi``. ``tests/test_psi.py`` has a complete example.
"""

import math

import numpy as np
from numba import njit, types
from numba.core.registry import CPUDispatcher

from ._validate import as_finite_float, as_float_array, as_positive_float, as_positive_int, as_generator

_vec = types.float64[::1]
PREPARE_SIG = types.void(_vec, types.float64, _vec)
PAIR_SIG = types.UniTuple(types.float64, 2)(_vec, _vec, types.float64)
PREPARE_TYPE = types.FunctionType(PREPARE_SIG)
PAIR_TYPE = types.FunctionType(PAIR_SIG)


@njit(types.void(PREPARE_TYPE, PAIR_TYPE, _vec, types.int64, _vec, types.float64, _vec, _vec),
      cache=True)
def _psi_values(prepare, pair, theta, ctx_size, r, t, out_psi, out_dpsi):
    ctx = np.empty(max(ctx_size, 1))
    prepare(theta, t, ctx)
    for i in range(r.shape[0]):
        out_psi[i], out_dpsi[i] = pair(theta, ctx, r[i])


class Psi:
    """Base class of psi families; see the module docstring for the protocol."""

    prepare = None
    pair = None
    ctx_size = 0

    def __init__(self, theta):
        self.theta = as_float_array(theta, "theta")
        if self.theta.ndim != 1:
            raise ValueError(f"theta must be 1-D, got shape {self.theta.shape}")

    def values(self, r, t):
        """``(psi(r, t), d psi / d r (r, t))`` for an array of distances ``r``."""
        r = as_float_array(r, "r")
        t = as_finite_float(t, "t")
        flat = np.ascontiguousarray(r.ravel())
        out_psi = np.empty_like(flat)
        out_dpsi = np.empty_like(flat)
        check_psi(self)
        _psi_values(self.prepare, self.pair, self.theta, int(self.ctx_size), flat, t,
                    out_psi, out_dpsi)
        return out_psi.reshape(r.shape), out_dpsi.reshape(r.shape)

    def __call__(self, r, t):
        """``psi(r, t)`` for an array of distances ``r`` at time ``t``."""
        return self.values(r, t)[0]

    def copy_with(self, theta):
        """The same family with new parameters ``theta`` (same layout)."""
        theta = as_float_array(theta, "theta", shape=self.theta.shape)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.theta = theta.copy()
        return new


def check_psi(psi):
    """Raise ``TypeError``/``ValueError`` unless ``psi`` follows the protocol."""
    for attr in ("theta", "ctx_size", "prepare", "pair"):
        if not hasattr(psi, attr):
            raise TypeError(f"psi must follow the psi protocol (refimpl.psi); it has no {attr!r}")
    for attr, sig in (("prepare", PREPARE_SIG), ("pair", PAIR_SIG)):
        fn = getattr(psi, attr)
        if not isinstance(fn, CPUDispatcher) or sig.args not in [tuple(s) for s in fn.signatures]:
            raise TypeError(f"psi.{attr} must be a Numba function compiled with "
                            f"refimpl.psi.{attr.upper()}_SIG, i.e. @njit({attr.upper()}_SIG)")
    theta = psi.theta
    if not (isinstance(theta, np.ndarray) and theta.dtype == np.float64 and theta.ndim == 1
            and theta.flags.c_contiguous):
        raise TypeError("psi.theta must be a 1-D C-contiguous float64 array")
    if not np.all(np.isfinite(theta)):
        raise ValueError("psi.theta contains NaN or infinite values")
    as_positive_int(psi.ctx_size, "psi.ctx_size", minimum=0)


# ---------------------------------------------------------------------------
# Gaussian radial basis functions in distance and time.
# theta = [n_r, n_t, gamma, gamma_t, spacing, mu (n_r), nu (n_t), W (n_r * n_t, row-major)]
#   spacing = mu[k+1] - mu[k] if the distance centres are equally spaced, else 0
# ctx   = [sum_l W_kl b_l  for k < n_r,  b_l = exp(-gamma_t (t - nu_l)^2)  for l < n_t]
_RBF_HEADER = 5


@njit(PREPARE_SIG, cache=True)
def _rbf_prepare(theta, t, ctx):
    n_r = int(theta[0])
    n_t = int(theta[1])
    gamma_t = theta[3]
    nu = theta[_RBF_HEADER + n_r: _RBF_HEADER + n_r + n_t]
    w0 = _RBF_HEADER + n_r + n_t
    time_rbf = ctx[n_r: n_r + n_t]
    for l in range(n_t):
        time_rbf[l] = math.exp(-gamma_t * (t - nu[l]) ** 2)
    for k in range(n_r):
        acc = 0.0
        for l in range(n_t):
            acc += theta[w0 + k * n_t + l] * time_rbf[l]
        ctx[k] = acc


@njit(PAIR_SIG, cache=True)
def _rbf_pair(theta, ctx, r):
    """``sum_k ctx_k e_k`` and its r-derivative, ``e_k = exp(-gamma (r - mu_k)^2)``.

    For equally spaced centres (``spacing > 0``) the Gaussians follow from the
    nearest one by exact ratios instead of one ``exp`` each: with
    ``d_k = r - mu_k``, ``e_{k+1} = e_k q_k`` where
    ``q_k = exp(gamma spacing (2 d_k - spacing))`` and ``q_{k+1} = q_k rho``,
    ``rho = exp(-2 gamma spacing^2)`` (and mirrored downwards). Moving away
    from the nearest centre every ratio is at most 1, so nothing overflows, and
    the walk stops once a Gaussian underflows to 0 (all further ones would
    too). Three ``exp`` per pair instead of ``n_r``; the result agrees with the
    direct sum to about 1e-13 relative (rounding of the products).
    """
    n_r = int(theta[0])
    gamma = theta[2]
    spacing = theta[4]
    mu = theta[_RBF_HEADER: _RBF_HEADER + n_r]
    if spacing <= 0.0:
        value = 0.0
        slope = 0.0
        for k in range(n_r):
            d = r - mu[k]
            w = ctx[k] * math.exp(-gamma * d * d)
            value += w
            slope += -2.0 * gamma * d * w
        return value, slope
    k0 = int(round((r - mu[0]) / spacing))
    k0 = min(max(k0, 0), n_r - 1)
    d0 = r - mu[k0]
    e0 = math.exp(-gamma * d0 * d0)
    value = ctx[k0] * e0
    slope = -2.0 * gamma * d0 * value
    rho = math.exp(-2.0 * gamma * spacing * spacing)
    e = e0
    q = math.exp(gamma * spacing * (2.0 * d0 - spacing))
    for k in range(k0 + 1, n_r):
        e *= q
        q *= rho
        if e == 0.0:
            break
        w = ctx[k] * e
        value += w
        slope += -2.0 * gamma * (r - mu[k]) * w
    e = e0
    q = math.exp(-gamma * spacing * (2.0 * d0 + spacing))
    for k in range(k0 - 1, -1, -1):
        e *= q
        q *= rho
        if e == 0.0:
            break
        w = ctx[k] * e
        value += w
        slope += -2.0 * gamma * (r - mu[k]) * w
    return value, slope


class RBFKernel(Psi):
    r"""Gaussian RBFs in distance and time.

    .. math::
        \psi(r, t) = \sum_{k, l} W_{kl}\, e^{-\gamma (r - \mu_k)^2}\, e^{-\gamma_t (t - \nu_l)^2}

    Parameters
    ----------
    weights : array_like, shape (n_distance, n_time), optional
        ``W``; zeros by default (the identity flow).
    n_distance, n_time : int
        Numbers of centres (ignored where ``mu``/``nu`` are given).
    r_max : float
        Distance centres are equally spaced on ``[0, r_max]``.
    t_range : (float, float)
        Time centres are equally spaced on this interval.
    mu, nu : array_like, optional
        Explicit centres.
    gamma, gamma_t : float, optional
        Inverse squared widths; default ``1 / (2 spacing^2)``, so neighbouring
        Gaussians overlap at one standard deviation.
    """

    ctx_size = 0
    prepare = staticmethod(_rbf_prepare)
    pair = staticmethod(_rbf_pair)

    def __init__(self, weights=None, *, n_distance=50, n_time=10, r_max=8.0,
                 t_range=(0.0, 1.0), mu=None, nu=None, gamma=None, gamma_t=None):
        if mu is None:
            n_distance = as_positive_int(n_distance, "n_distance", minimum=2)
            mu = np.linspace(0.0, as_positive_float(r_max, "r_max"), n_distance)
        if nu is None:
            n_time = as_positive_int(n_time, "n_time", minimum=1)
            lo, hi = (as_finite_float(v, "t_range") for v in t_range)
            nu = np.linspace(lo, hi, n_time)
        mu = as_float_array(mu, "mu").ravel()
        nu = as_float_array(nu, "nu").ravel()
        if mu.size < 1 or nu.size < 1:
            raise ValueError("mu and nu need at least one centre each")
        if gamma is None:
            gamma = 1.0 / (2.0 * _spacing(mu) ** 2)
        if gamma_t is None:
            gamma_t = 1.0 / (2.0 * _spacing(nu) ** 2)
        gamma = as_positive_float(gamma, "gamma")
        gamma_t = as_positive_float(gamma_t, "gamma_t")
        shape = (mu.size, nu.size)
        weights = np.zeros(shape) if weights is None else as_float_array(weights, "weights", shape)
        super().__init__(np.concatenate([[mu.size, nu.size, gamma, gamma_t, _uniform_spacing(mu)],
                                         mu, nu, weights.ravel()]))
        self.ctx_size = mu.size + nu.size

    @property
    def shape(self):
        return int(self.theta[0]), int(self.theta[1])

    @property
    def gamma(self):
        return float(self.theta[2])

    @property
    def gamma_t(self):
        return float(self.theta[3])

    @property
    def mu(self):
        return self.theta[_RBF_HEADER: _RBF_HEADER + self.shape[0]]

    @property
    def nu(self):
        n_r, n_t = self.shape
        return self.theta[_RBF_HEADER + n_r: _RBF_HEADER + n_r + n_t]

    @property
    def weights(self):
        """``W``, shape (n_distance, n_time): a view into ``theta``."""
        n_r, n_t = self.shape
        return self.theta[_RBF_HEADER + n_r + n_t:].reshape(n_r, n_t)

    def __repr__(self):
        n_r, n_t = self.shape
        return f"RBFKernel({n_r} x {n_t} centres, gamma={self.gamma:.4g}, gamma_t={self.gamma_t:.4g})"


def _uniform_spacing(mu):
    """``mu[1] - mu[0]`` if ``mu`` is increasing and equally spaced to rounding, else 0."""
    if mu.size < 2:
        return 0.0
    step = (mu[-1] - mu[0]) / (mu.size - 1)
    ideal = mu[0] + step * np.arange(mu.size)
    if step > 0 and np.max(np.abs(mu - ideal)) <= 8 * np.finfo(float).eps * np.max(np.abs(mu)):
        return float(step)
    return 0.0


def _spacing(centres):
    if centres.size < 2:
        return 1.0
    return float(np.max(centres) - np.min(centres)) / (centres.size - 1)


# ---------------------------------------------------------------------------
# One hidden tanh layer in (r, t).
# theta = [H, v0, a (H), c (H), b (H), v (H)]
# psi(r, t) = v0 + sum_h v_h tanh(a_h r + c_h t + b_h)
# ctx   = [c_h t + b_h  for h < H]
_MLP_HEADER = 2


@njit(PREPARE_SIG, cache=True)
def _mlp_prepare(theta, t, ctx):
    hidden = int(theta[0])
    c0 = _MLP_HEADER + hidden
    b0 = _MLP_HEADER + 2 * hidden
    for h in range(hidden):
        ctx[h] = theta[c0 + h] * t + theta[b0 + h]


@njit(PAIR_SIG, cache=True)
def _mlp_pair(theta, ctx, r):
    hidden = int(theta[0])
    value = theta[1]
    slope = 0.0
    v0 = _MLP_HEADER + 3 * hidden
    for h in range(hidden):
        a = theta[_MLP_HEADER + h]
        s = math.tanh(a * r + ctx[h])
        value += theta[v0 + h] * s
        slope += theta[v0 + h] * a * (1.0 - s * s)
    return value, slope


class TanhMLP(Psi):
    r"""A one-hidden-layer tanh network in ``(r, t)``.

    .. math::
        \psi(r, t) = v_0 + \sum_h v_h \tanh(a_h r + c_h t + b_h)

    Parameters
    ----------
    hidden : int
        Number of hidden units ``H``.
    rng : numpy.random.Generator or int
        Draws ``a ~ N(0, 1/4)``, ``c ~ N(0, 1)``, ``b ~ N(0, 1)``; the output
        weights ``v`` and ``v0`` start at zero (the identity flow).
    a, c, b, v : array_like, shape (hidden,), optional; v0 : float
        Explicit parameters, overriding the random ones.
    """

    prepare = staticmethod(_mlp_prepare)
    pair = staticmethod(_mlp_pair)

    def __init__(self, hidden=16, *, rng=0, a=None, c=None, b=None, v=None, v0=0.0):
        hidden = as_positive_int(hidden, "hidden")
        gen = as_generator(rng)
        drawn = {"a": 0.5 * gen.standard_normal(hidden), "c": gen.standard_normal(hidden),
                 "b": gen.standard_normal(hidden), "v": np.zeros(hidden)}
        given = {"a": a, "c": c, "b": b, "v": v}
        parts = [as_float_array(drawn[k] if given[k] is None else given[k], k, (hidden,))
                 for k in ("a", "c", "b", "v")]
        super().__init__(np.concatenate([[hidden, as_finite_float(v0, "v0")], *parts]))
        self.ctx_size = hidden

    @property
    def hidden(self):
        return int(self.theta[0])

    def __repr__(self):
        return f"TanhMLP(hidden={self.hidden})"
