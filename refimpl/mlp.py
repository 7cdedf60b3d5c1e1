"""A one-hidden-layer tanh network in ``(r, t)``: a second psi family.

``theta = [H, v0, a (H), c (H), b (H), v (H)]`` with

.. math::
    \\psi(r, t) = v_0 + \\sum_h v_h \\tanh(a_h r + c_h t + b_h),

``ctx = [c_h t + b_h for h < H]``. Everything but ``H`` is trainable.
With ``s_h = tanh(a_h r + ctx_h)`` and ``s'_h = 1 - s_h^2``:
``psi' = sum_h v_h a_h s'_h`` and ``psi'' = -2 sum_h v_h a_h^2 s_h s'_h``.
"""

import math

import numpy as np
from numba import njit

from ._validate import as_finite_float, as_float_array, as_generator, as_positive_int
from .psi import Psi, check_parameter, family_function

_HEADER = 2


@family_function("prepare")
def _prepare(theta, t, ctx):
    hidden = int(theta[0])
    c0 = _HEADER + hidden
    b0 = _HEADER + 2 * hidden
    for h in range(hidden):
        ctx[h] = theta[c0 + h] * t + theta[b0 + h]


@family_function("prepare_vjp")
def _prepare_vjp(theta, t, ctx, ctx_bar, theta_bar):
    hidden = int(theta[0])
    c0 = _HEADER + hidden
    b0 = _HEADER + 2 * hidden
    for h in range(hidden):
        theta_bar[c0 + h] += ctx_bar[h] * t
        theta_bar[b0 + h] += ctx_bar[h]


@family_function("pair")
def _pair(theta, ctx, r):
    hidden = int(theta[0])
    v0 = _HEADER + 3 * hidden
    value = theta[1]
    slope = 0.0
    for h in range(hidden):
        a = theta[_HEADER + h]
        s = math.tanh(a * r + ctx[h])
        value += theta[v0 + h] * s
        slope += theta[v0 + h] * a * (1.0 - s * s)
    return value, slope


@family_function("pair2")
def _pair2(theta, ctx, r):
    hidden = int(theta[0])
    v0 = _HEADER + 3 * hidden
    value = theta[1]
    slope = 0.0
    curvature = 0.0
    for h in range(hidden):
        a = theta[_HEADER + h]
        v = theta[v0 + h]
        s = math.tanh(a * r + ctx[h])
        ds = 1.0 - s * s
        value += v * s
        slope += v * a * ds
        curvature += -2.0 * v * a * a * s * ds
    return value, slope, curvature


@family_function("pair_vjp")
def _pair_vjp(theta, ctx, r, g_psi, g_dpsi, ctx_bar, theta_bar):
    hidden = int(theta[0])
    v0 = _HEADER + 3 * hidden
    theta_bar[1] += g_psi
    for h in range(hidden):
        a = theta[_HEADER + h]
        v = theta[v0 + h]
        s = math.tanh(a * r + ctx[h])
        ds = 1.0 - s * s
        dds = -2.0 * s * ds  # d(ds)/d(pre-activation)
        # psi   = ... + v s,        d/d pre = v ds
        # psi'  = ... + v a ds,     d/d pre = v a dds
        g_pre = g_psi * v * ds + g_dpsi * v * a * dds
        theta_bar[v0 + h] += g_psi * s + g_dpsi * a * ds
        theta_bar[_HEADER + h] += g_pre * r + g_dpsi * v * ds
        ctx_bar[h] += g_pre


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

    prepare = staticmethod(_prepare)
    pair = staticmethod(_pair)
    pair2 = staticmethod(_pair2)
    pair_vjp = staticmethod(_pair_vjp)
    prepare_vjp = staticmethod(_prepare_vjp)

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
        self.trainable = np.arange(1, self.theta.size)
        self.differentiable = self.trainable.copy()

    @classmethod
    def from_theta(cls, theta):
        """Rebuild from a parameter vector in the layout above (e.g. a saved one)."""
        theta = as_float_array(theta, "theta")
        hidden = int(theta[0]) if theta.ndim == 1 and theta.size else 0
        if hidden < 1 or hidden != theta[0] or theta.size != _HEADER + 4 * hidden:
            raise ValueError(f"theta of length {theta.size} does not fit the TanhMLP layout")
        return cls(hidden, **_named_arrays(theta))

    def check_ranges(self):
        """``ValueError`` unless every parameter is at most
        ``refimpl.psi.MAX_PARAMETER`` in size (``check_psi`` calls this)."""
        for name, value in _named_arrays(self.theta).items():
            check_parameter(value, name)

    @property
    def hidden(self):
        return int(self.theta[0])

    def arrays(self):
        """The formula's parameters ``{a, c, b, v: (H,) arrays, v0: float}`` (copies)."""
        return _named_arrays(self.theta)

    def __repr__(self):
        return f"TanhMLP(hidden={self.hidden})"


def _named_arrays(theta):
    """The formula's parameters (copies) from a parameter vector."""
    h = int(theta[0])
    a, c, b, v = (theta[_HEADER + q * h: _HEADER + (q + 1) * h].copy() for q in range(4))
    return {"a": a, "c": c, "b": b, "v": v, "v0": float(theta[1])}


def psi_numpy(p, r, t):
    """``(psi, dpsi/dr)`` in NumPy, for an array of distances ``r``.

    ``p`` holds the formula's parameters (``TanhMLP.arrays()``); the float
    dtype of ``p``, ``r`` and ``t`` is kept (``refimpl.vectors`` evaluates it
    in extended precision). The oracle of the Numba ``pair``
    (``tests/test_psi.py``) and the reference of the golden vectors.
    """
    s = np.tanh(p["a"] * r[..., None] + p["c"] * t + p["b"])
    return p["v0"] + s @ p["v"], (p["a"] * (1.0 - s * s)) @ p["v"]
