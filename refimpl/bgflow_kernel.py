r"""bgflow's ``KernelDynamics`` as a psi family: normalized RBFs in distance and time.

As in bgflow (``bgflow/nn/flow/dynamics/kernel_dynamic.py``, with
``rbf_kernels`` and ``distances_from_vectors`` from ``bgflow/utils``):

.. math::
    g_k(d) = e^{-(d - \mu_k)^2 / \gamma_k^2}, \quad
    K_k(d) = \frac{g_k(d)}{10^{-6} + \sum_m g_m(d)}, \quad
    T_s(t) = \frac{h_s(t)}{10^{-6} + \sum_m h_m(t)}, \quad
    h_s(t) = e^{-(t - \nu_s)^2 / \beta_s^2},

    \psi(d, t) = \sum_s T_s(t) \Big[\sum_k \big(K_k(d) + \iota_k^2\big) W_{ks} + b_s\Big],
    \qquad d = \sqrt{\lVert x_i - x_j \rVert^2 + 10^{-6}},

and ``g_i = sum_{j != i} psi(d_ij, t) (x_i - x_j)``. bgflow stores the widths
as ``neg_log_gammas = -log(gammas)`` and uses ``1 / gamma^2 =
exp(neg_log_gammas)^2``; so does this module. Trainable, as in bgflow: the
weights ``W``, bias ``b`` and importance ``iota``; the log-widths too with
``optimize_d_gammas`` / ``optimize_t_gammas`` (bgflow's flags of the same name).

Exact divergence, and where bgflow's deviates
---------------------------------------------
``pair`` returns the radial function of the *true* distance ``r``,
``psi~(r) = psi(sqrt(r^2 + 1e-6))``, with its exact derivative
``psi'(d) r / d``, so ``refimpl.divergence`` is the exact divergence of
bgflow's field: ``sum_{i != j} [psi'(d) r^2 / d + D psi(d)]``. bgflow's own
``forward`` returns ``sum_{i != j} [psi'_bg(d) d + D psi(d)]``
(``bgflow_divergence`` below reproduces it), which differs per ordered pair by

1. the regularization: ``psi'(d) (d - r^2 / d) = psi'(d) 1e-6 / d``;
2. its ``dK_k``: ``g'_k / Q - g_k S' / (1e-6 + S^2)`` instead of the exact
   ``g'_k / Q - g_k S' / Q^2`` (``S = sum_m g_m``, ``Q = 1e-6 + S``), which
   adds ``d N S' 1e-6 (1 - 2 S - 1e-6) / (Q^2 (1e-6 + S^2))``, ``N = sum_k c_k g_k``
   (``c`` below): relative error ~``1e-6 / S^2`` in that term, O(1) once S < ~1e-3.

Measured (``tests/test_bgflow_kernel.py``), E-NF's DW4 settings (50 centres
on [0, 8], gammas 0.5; 10 in time, gammas 0.3; W ~ N(0, 1/50)), K = 4, D = 2,
all pair distances in [0.3, 7]: deviation / sum|terms| has median ~1e-7 and
max 1.3e-6, over 99% of it item 1. Past the last centre, where ``S`` falls
from ~1e-2 to ~1e-7 (d ~ 9 to 10.2 here), item 2 dominates: for one pair at
d = 9.5 bgflow's divergence is 8.6 against the exact -0.079.

Parameter and scratch layout
----------------------------
``theta = [n_k, n_s, opt_d, opt_t, mus (n_k), neg_log_gammas (n_k), mus_time
(n_s), neg_log_gammas_time (n_s), importance (n_k), weights (n_k n_s,
row-major), bias (n_s)]``; ``ctx = [c (n_k), c0, a (n_k), T (n_s), g (n_k)]``
with ``c_k = sum_s W_ks T_s``, ``c0 = sum_s T_s b_s + sum_k iota_k^2 c_k`` (so
``psi = sum_k K_k c_k + c0``), ``a_k = 1 / gamma_k^2`` and ``g`` scratch.

Files from bgflow
-----------------
``from_npz`` reads an ``.npz`` with the arrays (bgflow's attribute names
without the underscore): ``mus (n_k,)``, ``neg_log_gammas (n_k,)``,
``mus_time (n_s,)``, ``neg_log_gammas_time (n_s,)``, ``importance (n_k,)``,
``weights (n_k, n_s)``, ``bias (1, n_s)`` or ``(n_s,)``; a log-width may be a
scalar or have one element (broadcast, as torch would). From a bgflow
``KernelDynamics`` ``kd`` (its ``_mus``, ``_neg_log_gammas``, ... attributes)::

    import numpy as np
    names = "mus neg_log_gammas mus_time neg_log_gammas_time importance weights bias".split()
    np.savez("kd.npz", **{n: getattr(kd, f"_{n}").detach().cpu().double().numpy() for n in names})

The snippet converts to float64; bgflow models usually run in float32, which
differs from this float64 evaluation at float32 rounding. bgflow without
``mus_time`` fails in its constructor (``log(None)``), so time arrays are required.
"""

import math

import numpy as np
from numba import njit

from ._exp import exp
from ._validate import as_configurations, as_float_array, as_time, check_range
from .files import read_npz
from .psi import MAX_PARAMETER, Psi, check_parameter, family_function

KERNEL_EPS = 1e-6    # bgflow's rbf_kernels: K_k = g_k / (KERNEL_EPS + sum_m g_m)
DISTANCE_EPS = 1e-6  # bgflow's distances_from_vectors: d = sqrt(r^2 + DISTANCE_EPS)
# Narrowest kernel width accepted: with widths >= 1e-50 the kernel's
# 1/width^2 (<= 1e100) times squared distances of configurations within
# MAX_COORDINATE stays finite, so fields and divergences are finite (1e-100
# gives NaN at coordinates ~1e149).
MIN_WIDTH = 1e-50
MAX_NEG_LOG_GAMMA = -math.log(MIN_WIDTH)
NPZ_NAMES = ("mus", "neg_log_gammas", "mus_time", "neg_log_gammas_time", "importance",
             "weights", "bias")
_HEADER = 4


@njit(cache=True)
def _offsets(n_k, n_s):
    """Starts of mus, neg_log_gammas, mus_time, neg_log_gammas_time, importance, W, bias."""
    mu = _HEADER
    im = mu + 2 * n_k + 2 * n_s
    return mu, mu + n_k, mu + 2 * n_k, mu + 2 * n_k + n_s, im, im + n_k, im + n_k + n_k * n_s


@njit(cache=True)
def _time_exponent(theta, t, l_at, nu_at):
    """``((t - nu_s) exp(l_s))^2``, the exponent of time Gaussian ``s``: scaled
    before squaring, so a tiny width factor and a huge ``t`` give a finite
    number (or ``inf``), never ``inf * 0``."""
    scaled = (t - theta[nu_at]) * exp(theta[l_at])
    return scaled * scaled


@family_function("prepare")
def _prepare(theta, t, ctx):
    n_k, n_s = int(theta[0]), int(theta[1])
    mu, lg, mt, lt, im, w0, b0 = _offsets(n_k, n_s)
    for k in range(n_k):
        inv = exp(theta[lg + k])
        ctx[n_k + 1 + k] = inv * inv
    t0 = 2 * n_k + 1
    total = 0.0
    for s in range(n_s):
        ctx[t0 + s] = exp(-_time_exponent(theta, t, lt + s, mt + s))
        total += ctx[t0 + s]
    c0 = 0.0
    for s in range(n_s):
        ctx[t0 + s] /= KERNEL_EPS + total
        c0 += ctx[t0 + s] * theta[b0 + s]
    for k in range(n_k):
        acc = 0.0
        for s in range(n_s):
            acc += theta[w0 + k * n_s + s] * ctx[t0 + s]
        ctx[k] = acc
        c0 += theta[im + k] ** 2 * acc
    ctx[n_k] = c0


@njit(cache=True)
def _time_bar(theta, ctx, ctx_bar, s):
    """Cotangent of ``T_s`` from those of ``c`` and ``c0``."""
    n_k, n_s = int(theta[0]), int(theta[1])
    mu, lg, mt, lt, im, w0, b0 = _offsets(n_k, n_s)
    c0_bar = ctx_bar[n_k]
    acc = c0_bar * theta[b0 + s]
    for k in range(n_k):
        acc += (ctx_bar[k] + c0_bar * theta[im + k] ** 2) * theta[w0 + k * n_s + s]
    return acc


@family_function("prepare_vjp")
def _prepare_vjp(theta, t, ctx, ctx_bar, theta_bar):
    n_k, n_s = int(theta[0]), int(theta[1])
    mu, lg, mt, lt, im, w0, b0 = _offsets(n_k, n_s)
    t0 = 2 * n_k + 1
    c0_bar = ctx_bar[n_k]
    for s in range(n_s):
        theta_bar[b0 + s] += c0_bar * ctx[t0 + s]
    for k in range(n_k):
        theta_bar[im + k] += c0_bar * 2.0 * theta[im + k] * ctx[k]
        c_bar = ctx_bar[k] + c0_bar * theta[im + k] ** 2
        for s in range(n_s):
            theta_bar[w0 + k * n_s + s] += c_bar * ctx[t0 + s]
        if theta[2] != 0.0:  # d a_k / d neg_log_gamma_k = 2 a_k
            theta_bar[lg + k] += ctx_bar[n_k + 1 + k] * 2.0 * ctx[n_k + 1 + k]
    if theta[3] == 0.0:
        return
    # T_s = h_s / (eps + sum h): h_bar_s h_s = (T_bar_s - sum_m T_bar_m T_m) T_s, and
    # h_s = exp(-(t - nu_s)^2 exp(2 l_s)) gives d h_s / d l_s = -2 (t - nu_s)^2 exp(2 l_s) h_s
    mean = 0.0
    for s in range(n_s):
        mean += _time_bar(theta, ctx, ctx_bar, s) * ctx[t0 + s]
    for s in range(n_s):
        q = _time_exponent(theta, t, lt + s, mt + s)
        # q T_s -> 0 where T_s underflows to 0, also where q overflowed to inf
        q_h = q * ctx[t0 + s] if ctx[t0 + s] > 0.0 else 0.0
        theta_bar[lt + s] += (_time_bar(theta, ctx, ctx_bar, s) - mean) * -2.0 * q_h


@njit(cache=True)
def _sums(theta, ctx, d):
    """Fill scratch ``g_k(d)``; return ``S, S', S'', N, N', N''`` (``N = sum_k c_k g_k``)."""
    n_k = int(theta[0])
    e0 = 2 * n_k + int(theta[1]) + 1
    s0 = s1 = s2 = n0 = n1 = n2 = 0.0
    for k in range(n_k):
        a = ctx[n_k + 1 + k]
        u = d - theta[_HEADER + k]
        g = exp(-(u * u) * a)
        ctx[e0 + k] = g
        g1 = -2.0 * a * u * g
        g2 = (4.0 * a * a * u * u - 2.0 * a) * g
        s0 += g
        s1 += g1
        s2 += g2
        n0 += ctx[k] * g
        n1 += ctx[k] * g1
        n2 += ctx[k] * g2
    return s0, s1, s2, n0, n1, n2


@family_function("pair")
def _pair(theta, ctx, r):
    d = math.sqrt(r * r + DISTANCE_EPS)
    s0, s1, s2, n0, n1, n2 = _sums(theta, ctx, d)
    q = KERNEL_EPS + s0
    slope = n1 / q - n0 * s1 / (q * q)
    return n0 / q + ctx[int(theta[0])], slope * (r / d)


@family_function("pair2")
def _pair2(theta, ctx, r):
    d = math.sqrt(r * r + DISTANCE_EPS)
    s0, s1, s2, n0, n1, n2 = _sums(theta, ctx, d)
    q = KERNEL_EPS + s0
    slope = n1 / q - n0 * s1 / (q * q)
    curv = n2 / q - (2.0 * n1 * s1 + n0 * s2) / (q * q) + 2.0 * n0 * s1 * s1 / (q * q * q)
    rho = r / d
    # psi~(r) = psi(d(r)): psi~'' = psi''(d) (r/d)^2 + psi'(d) d''(r), d'' = eps / d^3
    curv_r = curv * rho * rho + slope * DISTANCE_EPS / d ** 3
    return n0 / q + ctx[int(theta[0])], slope * rho, curv_r


@family_function("pair_vjp")
def _pair_vjp(theta, ctx, r, g_psi, g_dpsi, ctx_bar, theta_bar):
    n_k = int(theta[0])
    e0 = 2 * n_k + int(theta[1]) + 1
    d = math.sqrt(r * r + DISTANCE_EPS)
    s0, s1, s2, n0, n1, n2 = _sums(theta, ctx, d)
    q = KERNEL_EPS + s0
    g_slope = g_dpsi * (r / d)  # cotangent of psi'(d)
    ctx_bar[n_k] += g_psi
    for k in range(n_k):
        g = ctx[e0 + k]
        a = ctx[n_k + 1 + k]
        u = d - theta[_HEADER + k]
        g1 = -2.0 * a * u * g
        # psi = N / Q + c0, psi' = N' / Q - N S' / Q^2
        ctx_bar[k] += g_psi * g / q + g_slope * (g1 / q - g * s1 / (q * q))
        if theta[2] != 0.0:
            share = (ctx[k] - n0 / q) / q  # d psi / d g_k = d psi' / d g'_k
            g_bar = g_psi * share + g_slope * (2.0 * n0 * s1 / q - n1 - ctx[k] * s1) / (q * q)
            g1_bar = g_slope * share
            # d g_k / d a_k = -u^2 g_k, d g'_k / d a_k = -2 u g_k (1 - a_k u^2)
            ctx_bar[n_k + 1 + k] += -u * u * g * g_bar - 2.0 * u * g * (1.0 - a * u * u) * g1_bar


class BgflowKernel(Psi):
    """bgflow's ``KernelDynamics`` psi (see the module docstring).

    Parameters
    ----------
    mus, gammas : array_like, shape (n_k,)
        Distance centres and widths (``gammas`` may be a positive scalar).
    mus_time, gammas_time : array_like, shape (n_s,)
        Time centres and widths.
    weights : array_like, shape (n_k, n_s), optional
        ``W``; zeros by default (the identity flow; bgflow draws ``N(0, 1/n_k)``).
    bias : array_like, shape (n_s,) or (1, n_s), optional; importance : shape (n_k,)
        Zeros by default, as in bgflow. (Note: ``iota`` enters as ``iota^2``,
        so its gradient vanishes at ``iota = 0`` and it never leaves zero.)
    optimize_d_gammas, optimize_t_gammas : bool
        Also train ``neg_log_gammas`` / ``neg_log_gammas_time``.
    """

    prepare = staticmethod(_prepare)
    pair = staticmethod(_pair)
    pair2 = staticmethod(_pair2)
    pair_vjp = staticmethod(_pair_vjp)
    prepare_vjp = staticmethod(_prepare_vjp)

    def __init__(self, mus, gammas, mus_time, gammas_time, *, weights=None, bias=None,
                 importance=None, optimize_d_gammas=False, optimize_t_gammas=False):
        logs = []
        for name, width in (("gammas", gammas), ("gammas_time", gammas_time)):
            width = as_float_array(width, name)
            if np.any(width <= 0):
                raise ValueError(f"{name} must be positive, got {np.min(width):.3g}")
            if np.any(width < MIN_WIDTH):
                raise ValueError(f"{name} must be at least {MIN_WIDTH:g} (narrower kernels "
                                 f"overflow float64), got {np.min(width):.3g}")
            logs.append(-np.log(width))
        self._assemble(mus=mus, neg_log_gammas=logs[0], mus_time=mus_time,
                       neg_log_gammas_time=logs[1], importance=importance, weights=weights,
                       bias=bias, flags=(optimize_d_gammas, optimize_t_gammas))

    def _assemble(self, flags, checked=True, **arrays):
        mus = as_float_array(arrays["mus"], "mus")
        mus_time = as_float_array(arrays["mus_time"], "mus_time")
        if mus.ndim != 1 or mus.size < 1 or mus_time.ndim != 1 or mus_time.size < 1:
            raise ValueError(f"mus and mus_time must be 1-D and non-empty, got shapes "
                             f"{mus.shape} and {mus_time.shape}")
        n_k, n_s = mus.size, mus_time.size
        shapes = {"neg_log_gammas": (n_k,), "neg_log_gammas_time": (n_s,), "importance": (n_k,),
                  "weights": (n_k, n_s), "bias": (n_s,)}
        parts = []
        for name, shape in shapes.items():
            value = arrays[name]
            value = np.zeros(shape) if value is None else as_float_array(value, name)
            if name.startswith("neg_log") and value.shape in [(), (1,)]:
                value = np.full(shape, value.item())  # broadcast, as torch would
            if name == "bias" and value.shape == (1, n_s):
                value = value[0]
            parts.append(as_float_array(value, name, shape).ravel())
        flags = [float(bool(f)) for f in flags]
        nlg, nlgt, importance, weights, bias = parts
        if checked:  # skipped by from_theta: a theta may also carry gradients
            _check_ranges(mus, nlg, mus_time, nlgt)
        super().__init__(np.concatenate([[n_k, n_s], flags, mus, nlg, mus_time, nlgt,
                                         importance, weights, bias]))
        self.ctx_size = 3 * n_k + n_s + 1
        _, lg, _, lt, im, _, _ = _offsets(n_k, n_s)
        ranges = [np.arange(im, self.theta.size)]
        ranges += [np.arange(lg, lg + n_k)] if flags[0] else []
        ranges += [np.arange(lt, lt + n_s)] if flags[1] else []
        self.trainable = np.sort(np.concatenate(ranges)).astype(np.int64)
        self.differentiable = self.trainable.copy()

    @classmethod
    def from_arrays(cls, optimize_d_gammas=False, optimize_t_gammas=False, **arrays):
        """Build from bgflow's arrays (the names in ``NPZ_NAMES``, log-widths as stored)."""
        missing = [name for name in NPZ_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"missing bgflow arrays {missing}; need {list(NPZ_NAMES)}")
        psi = object.__new__(cls)
        psi._assemble(flags=(optimize_d_gammas, optimize_t_gammas),
                      **{name: arrays[name] for name in NPZ_NAMES})
        return psi

    @classmethod
    def from_npz(cls, path, optimize_d_gammas=False, optimize_t_gammas=False):
        """Load the arrays listed in the module docstring from an ``.npz``.

        The file is read by ``refimpl.files.read_npz`` (no pickles, only the
        names in ``NPZ_NAMES``, float arrays); errors name the file and the array.
        """
        arrays = read_npz(path, "bgflow kernel file", required=NPZ_NAMES,
                          fields={name: "f" for name in NPZ_NAMES})
        try:
            return cls.from_arrays(optimize_d_gammas, optimize_t_gammas, **arrays)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{path}: {exc}") from None

    def arrays(self):
        """bgflow's named arrays (copies), as in ``NPZ_NAMES``; ``np.savez(path,
        **psi.arrays())`` writes a file that ``from_npz`` reads."""
        return _named_arrays(self.theta)

    @classmethod
    def from_theta(cls, theta):
        """Rebuild from a parameter vector in the layout above (e.g. a saved one)."""
        theta = as_float_array(theta, "theta")
        if theta.ndim != 1 or theta.size < _HEADER:
            raise ValueError("theta is too short for a BgflowKernel")
        n_k, n_s = int(theta[0]), int(theta[1])
        if n_k != theta[0] or n_s != theta[1] or n_k < 1 or n_s < 1 \
                or theta.size != _HEADER + 3 * n_k + 3 * n_s + n_k * n_s \
                or not set(theta[2:4]) <= {0.0, 1.0}:
            raise ValueError(f"theta of length {theta.size} does not fit the BgflowKernel layout")
        psi = object.__new__(cls)
        # unchecked ranges: theta vectors also carry gradients (refimpl.vectors names them
        # through copy_with); the arrays' shapes and finiteness are still checked
        psi._assemble(flags=(bool(theta[2]), bool(theta[3])), checked=False,
                      **_named_arrays(theta))
        return psi

    def check_ranges(self):
        """``ValueError`` unless widths are at least ``MIN_WIDTH``, centres within
        ``MAX_COORDINATE`` (the constructors check these; ``from_theta`` does not),
        and weights, bias and importance**2 at most ``refimpl.psi.MAX_PARAMETER``
        (``check_psi`` calls this whenever a kernel is used)."""
        a = self.arrays()
        _check_ranges(a["mus"], a["neg_log_gammas"], a["mus_time"], a["neg_log_gammas_time"])
        check_parameter(a["weights"], "weights")
        check_parameter(a["bias"], "bias")
        # importance enters squared
        check_parameter(a["importance"], "importance", math.sqrt(MAX_PARAMETER))

    @property
    def shape(self):
        """``(n_k, n_s)``: numbers of distance and time centres."""
        return int(self.theta[0]), int(self.theta[1])

    @property
    def weights(self):
        """``W``, shape (n_k, n_s): a view into ``theta``."""
        n_k, n_s = self.shape
        w0 = _offsets(n_k, n_s)[5]
        return self.theta[w0: w0 + n_k * n_s].reshape(n_k, n_s)

    def values(self, r, t):
        """``Psi.values``; distances beyond ``MAX_COORDINATE`` are refused, as the
        regularized distance ``sqrt(r^2 + eps)`` would overflow."""
        check_range(as_float_array(r, "r"), "r")
        return super().values(r, t)

    def bgflow_divergence(self, x, t):
        """bgflow's divergence (``forward`` returns its negative): regularized ``d``,
        approximate ``dK``; shape ``x.shape[:-2]``. ``refimpl.divergence`` is the exact one."""
        x = as_configurations(x, "x")
        t = as_time(t)
        # (t - mu)^2 / width^2 may overflow for |t| ~ 1e154: exp(-inf) = 0 is then exact
        with np.errstate(over="ignore"):
            return self._bgflow_divergence(x, t)

    def _bgflow_divergence(self, x, t):
        k, dim = x.shape[-2:]
        off = ~np.eye(k, dtype=bool)
        r = np.sqrt(np.sum((x[..., :, None, :] - x[..., None, :, :]) ** 2, axis=-1))[..., off]
        value, slope = psi_numpy(self.arrays(), r, t, bgflow_slope=True)
        return np.sum(np.sqrt(r * r + DISTANCE_EPS) * slope + dim * value, axis=-1)

    def __repr__(self):
        n_k, n_s = self.shape
        return f"BgflowKernel({n_k} distance x {n_s} time centres)"


def _check_ranges(mus, neg_log_gammas, mus_time, neg_log_gammas_time):
    for name, logs in (("neg_log_gammas", neg_log_gammas),
                       ("neg_log_gammas_time", neg_log_gammas_time)):
        if np.any(logs > MAX_NEG_LOG_GAMMA):
            raise ValueError(f"{name} holds {np.max(logs):.4g}, i.e. a width "
                             f"exp(-{np.max(logs):.4g}); widths below {MIN_WIDTH:g} make the "
                             "kernel overflow float64: use wider kernels")
    check_range(mus, "mus")
    check_range(mus_time, "mus_time")


def _named_arrays(theta):
    """bgflow's named arrays (copies) from a parameter vector."""
    n_k, n_s = int(theta[0]), int(theta[1])
    mu, lg, mt, lt, im, w0, b0 = _offsets(n_k, n_s)
    return {"mus": theta[mu:lg].copy(), "neg_log_gammas": theta[lg:mt].copy(),
            "mus_time": theta[mt:lt].copy(), "neg_log_gammas_time": theta[lt:im].copy(),
            "importance": theta[im:w0].copy(), "weights": theta[w0:b0].reshape(n_k, n_s).copy(),
            "bias": theta[b0:].reshape(1, n_s).copy()}


def psi_numpy(p, r, t, bgflow_slope=False):
    """``(psi, dpsi/dr)`` of the formula above in NumPy, for an array of distances ``r``.

    ``p`` holds bgflow's named arrays (``BgflowKernel.arrays()``, ``bias`` of
    shape ``(n_s,)`` or ``(1, n_s)``); the float dtype of ``p``, ``r`` and
    ``t`` is kept (``refimpl.vectors`` evaluates it in extended precision).
    The slope is the exact derivative in the true distance ``r`` (through
    ``d``): this is the reference of the golden vectors and an oracle of the
    Numba ``pair``, which ``tests/test_bgflow_kernel.py`` checks against its
    own transcription of bgflow. With ``bgflow_slope=True`` the slope is
    instead bgflow's approximate derivative in ``d`` (its ``dK``, item 2 of
    the module docstring), from which ``bgflow_divergence`` is built.
    """
    d = np.sqrt(r * r + DISTANCE_EPS)
    u = d[..., None] - p["mus"]
    a = np.exp(p["neg_log_gammas"]) ** 2
    g = np.exp(-u * u * a)
    g1 = -2.0 * a * u * g
    s0 = np.sum(g, axis=-1, keepdims=True)
    s1 = np.sum(g1, axis=-1, keepdims=True)
    q = KERNEL_EPS + s0
    h = np.exp(-(t - p["mus_time"]) ** 2 * np.exp(p["neg_log_gammas_time"]) ** 2)
    time = h / (KERNEL_EPS + np.sum(h))
    c = p["weights"] @ time
    c0 = np.ravel(p["bias"]) @ time + (p["importance"] ** 2) @ c
    if bgflow_slope:
        return (g / q) @ c + c0, (g1 / q - g * s1 / (KERNEL_EPS + s0 ** 2)) @ c
    return (g / q) @ c + c0, ((g1 / q - g * s1 / q ** 2) @ c) * r / d
