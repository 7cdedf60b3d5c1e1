"""Target energies: the paper's multi-particle double well, and Lennard-Jones.

Every ``energy`` here is a *reduced* energy, the potential energy divided by
the temperature ``T`` (in units where ``k_B = 1``):

.. math::
    \\beta u(x) = u(x) / T ,

so that the Boltzmann density is ``exp(-energy(x)) / Z``; it is what the KL
loss, the reweighting and Metropolis-Hastings use. At ``T = 1`` (the
default) the two coincide.

Each potential offers three ways to evaluate itself, checked against each
other in ``tests/test_potentials.py``:

``energy(x)``
    ``(..., K, D) -> (...)``, written with ``autograd.numpy``: autograd
    differentiates it, e.g. inside a KL loss whose ``x`` depends on flow
    parameters. Distances are taken over the pairs ``i < j`` only, so no
    ``sqrt(0)`` of the diagonal poisons the gradient.
``force(x)``
    ``-d energy / dx``, analytic, plain NumPy, shape ``(..., K, D)``.
``numba_energy``
    The same reduced energy of one configuration as a Numba kernel, for
    ``refimpl.mcmc``.

The Numba energy protocol
-------------------------
A potential usable by ``refimpl.mcmc.metropolis_hastings`` has an attribute
``numba_energy``: a pair ``(kernel, params)`` (a ``NumbaEnergy`` or any
2-tuple) where

``params``
    1-D C-contiguous float64 array with *all* numbers the kernel needs
    (the temperature included).
``kernel``
    a Numba function compiled with ``ENERGY_SIG``,
    ``kernel(params, x, K, D) -> float``: the reduced energy of one
    configuration stored row-major, ``x[i * D + k]`` = coordinate ``k`` of
    particle ``i``. It must not modify its arguments or draw random numbers,
    and must return ``+inf`` (not raise) where the energy is infinite:
    Metropolis-Hastings rejects such proposals, and ``NaN`` ones too.

Optional attributes ``n_particles`` and ``dim`` are checked against the
configurations a caller passes. Callers receive the kernel as a first-class
function of type ``ENERGY_TYPE``, so their own compiled code is cached and
does not recompile for a new potential: compile yours with
``@njit(ENERGY_SIG, cache=True)`` (``tests/test_mcmc.py`` has two examples).
``kernel_energy(potential, x)`` evaluates any such kernel on a batch, to test
it against a NumPy formula.
"""

import math
from typing import NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd.tracer import Box, getval
from numba import njit, types
from numba.core.registry import CPUDispatcher

from ._kernels import compile_on_first_call
from ._validate import (as_configurations, as_finite_float, as_float_array, as_positive_float,
                        as_positive_int)

_vec = types.float64[::1]
ENERGY_SIG = types.float64(_vec, _vec, types.int64, types.int64)
ENERGY_TYPE = types.FunctionType(ENERGY_SIG)

PAIRS = ("ordered", "unordered")
# Roots of v'(s) whose imaginary part is below this (relative to the largest
# root) count as real; np.roots computes them as companion-matrix eigenvalues.
_REAL_ROOT_TOL = 1e-8


class NumbaEnergy(NamedTuple):
    """The ``numba_energy`` of a potential; see the module docstring."""

    kernel: object  # Numba function compiled with ENERGY_SIG
    params: np.ndarray  # 1-D C-contiguous float64


def check_numba_energy(potential):
    """``potential.numba_energy`` as a ``NumbaEnergy``; TypeError/ValueError if malformed."""
    pair = getattr(potential, "numba_energy", None)
    if pair is None:
        raise TypeError(f"{type(potential).__name__} does not follow the Numba energy protocol "
                        "(refimpl.potentials): it has no 'numba_energy'")
    try:
        kernel, params = pair
    except (TypeError, ValueError):
        raise TypeError("numba_energy must be a pair (kernel, params)") from None
    if isinstance(kernel, CPUDispatcher) and getattr(kernel, "_energy_signature", None) is \
            ENERGY_SIG and ENERGY_SIG.args not in [tuple(s) for s in kernel.signatures]:
        kernel.compile(ENERGY_SIG.args)  # a built-in kernel met for the first time
    if not isinstance(kernel, CPUDispatcher) or \
            ENERGY_SIG.args not in [tuple(s) for s in kernel.signatures]:
        raise TypeError("the numba_energy kernel must be a Numba function compiled with "
                        "refimpl.potentials.ENERGY_SIG, i.e. @njit(ENERGY_SIG)")
    if not (isinstance(params, np.ndarray) and params.dtype == np.float64 and params.ndim == 1
            and params.flags.c_contiguous):
        raise TypeError("numba_energy params must be a 1-D C-contiguous float64 array")
    if not np.all(np.isfinite(params)):
        raise ValueError("numba_energy params contain NaN or infinite values")
    return NumbaEnergy(kernel, params)


def _energy_kernel(fn):
    """``@njit(ENERGY_SIG, cache=True)`` for the built-in potentials, compiled (or
    loaded from Numba's cache) when ``check_numba_energy`` first meets it instead
    of at import: a flow that never evaluates a potential compiles none."""
    dispatcher = njit(cache=True)(fn)
    dispatcher._energy_signature = ENERGY_SIG
    return dispatcher


@compile_on_first_call(types.void(ENERGY_TYPE, _vec, types.float64[:, ::1], types.int64,
                                  types.int64, _vec), cache=True)
def _kernel_energies(kernel, params, x, n_particles, dim, out):
    for n in range(x.shape[0]):
        out[n] = kernel(params, x[n], n_particles, dim)


def kernel_energy(potential, x):
    """Reduced energies of ``x (..., K, D)`` from ``potential.numba_energy``, shape ``(...)``."""
    kernel, params = check_numba_energy(potential)
    x = as_configurations(x, "x", getattr(potential, "n_particles", None),
                          getattr(potential, "dim", None))
    k, d = x.shape[-2:]
    flat = np.ascontiguousarray(x.reshape(-1, k * d))
    out = np.empty(flat.shape[0])
    _kernel_energies(kernel, params, flat, k, d, out)
    return out.reshape(x.shape[:-2])


class _PairPotential:
    """Shared plumbing: sizes, temperature, pair indices, input checks."""

    def __init__(self, n_particles, dim, temperature):
        self.n_particles = as_positive_int(n_particles, "n_particles", minimum=2)
        self.dim = as_positive_int(dim, "dim")
        self.temperature = as_positive_float(temperature, "temperature")
        self._i, self._j = np.triu_indices(self.n_particles, 1)
        # scatter (K, P): the force on particle i is sum_p S[i, p] f_p
        scatter = np.zeros((self.n_particles, self._i.size))
        scatter[self._i, np.arange(self._i.size)] = 1.0
        scatter[self._j, np.arange(self._i.size)] = -1.0
        self._scatter = scatter

    def _input(self, x):
        """Validate ``x``; keep an autograd box as it is so the trace survives."""
        checked = as_configurations(getval(x), "x", self.n_particles, self.dim)
        return x if isinstance(x, Box) else checked

    def _checked(self, values, x, what, inf_when_coincident=False):
        """Return ``values`` (energies ``(...)`` or forces ``(..., K, D)``) if finite.

        Otherwise raise a ``ValueError`` naming the first configuration of
        ``x`` and the reason: two coincident particles (where the quantity is
        undefined), or a value beyond float64. ``inf_when_coincident`` lets
        ``+inf`` through where particles coincide (the LJ energy there).
        Autograd boxes pass unchecked (their value is checked by the loss).
        """
        if isinstance(values, Box):
            return values
        per_config = values if values.ndim == x.ndim - 2 else np.max(np.abs(values), (-2, -1))
        bad = ~np.isfinite(per_config)
        with np.errstate(over="ignore"):
            apart = np.sum(self._pair_differences(x) ** 2, axis=-1) > 0.0
        coincident = ~np.all(apart, axis=-1)
        if inf_when_coincident:
            bad &= ~(coincident & (per_config == np.inf))
        if not np.any(bad):
            return values
        first = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0])
        where = f"x[{', '.join(map(str, first))}]" if bad.ndim else "x"
        name = f"{type(self).__name__}.{what}"
        if np.atleast_1d(coincident)[first]:
            p = int(np.argmin(np.atleast_1d(apart)[first] if apart.ndim > 1 else apart))
            raise ValueError(f"{name} is undefined for {where}: particles {self._i[p]} and "
                             f"{self._j[p]} coincide; move them apart")
        size = np.max(np.abs(np.atleast_3d(x)[first] if x.ndim > 2 else x))
        raise ValueError(f"{name} of {where} overflows float64 (largest |coordinate| "
                         f"{size:.3g}): x is out of the range this potential can represent; "
                         "rescale it or use a smaller potential scale")

    def _pair_differences(self, x):
        """``r_ij = x_i - x_j`` for the pairs ``i < j``, shape ``(..., P, D)``."""
        return x[..., self._i, :] - x[..., self._j, :]

    def _forces_from_pairs(self, w, r):
        """Forces ``F_i = sum_p S_ip w_p r_p`` for pair weights ``w (..., P)``."""
        return self._scatter @ (w[..., None] * r)

    @property
    def numba_energy(self):
        return NumbaEnergy(self._kernel, self._params())


@njit(cache=True)
def _squared_distance(x, i, j, dim):
    """``|x_i - x_j|^2`` for a configuration stored row-major."""
    sq = 0.0
    for k in range(dim):
        diff = x[i * dim + k] - x[j * dim + k]
        sq += diff * diff
    return sq


@_energy_kernel
def _double_well_kernel(params, x, n_particles, dim):
    a, b, c, d0, scale = params[0], params[1], params[2], params[3], params[4]
    total = 0.0
    for i in range(n_particles):
        for j in range(i + 1, n_particles):
            s = math.sqrt(_squared_distance(x, i, j, dim)) - d0
            s2 = s * s
            total += a * s + b * s2 + c * s2 * s2
    return scale * total


class DoubleWell(_PairPotential):
    r"""The multi-particle double-well energy of the paper (section 4).

    .. math::
        u(x) = \sum_{i \ne j} v(r_{ij}), \qquad
        v(d) = a (d - d_0) + b (d - d_0)^2 + c (d - d_0)^4 ,

    and ``energy(x)`` returns the **reduced energy** ``u(x) / T``.

    Parameters
    ----------
    n_particles, dim : int
        ``K >= 2`` particles in ``D`` dimensions (the paper: ``K = 4, D = 2``).
    a, b, c, d0 : float
        Pair-potential coefficients; the paper's ``0, -4, 0.9, 4``.
    pairs : {"ordered", "unordered"}
        ``"ordered"`` sums over ``i != j``, each pair twice (the paper's
        convention, the default); ``"unordered"`` over ``i < j``, half of
        it (bgflow's ``MultiDoubleWellPotential``).
    temperature : float
        ``T > 0``, dividing ``u``.
    """

    _kernel = staticmethod(_double_well_kernel)

    def __init__(self, n_particles, dim, a=0.0, b=-4.0, c=0.9, d0=4.0, pairs="ordered",
                 temperature=1.0):
        super().__init__(n_particles, dim, temperature)
        self.a, self.b, self.c, self.d0 = (as_finite_float(v, n) for v, n in
                                           ((a, "a"), (b, "b"), (c, "c"), (d0, "d0")))
        if not isinstance(pairs, str):
            raise TypeError(f"pairs must be one of {PAIRS}, got {type(pairs).__name__}")
        if pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}, got {pairs!r}")
        self.pairs = pairs
        # each unordered pair counts twice in the ordered sum; T divides everything
        self._scale = (2.0 if pairs == "ordered" else 1.0) / self.temperature

    def pair_potential(self, d):
        """``v(d)`` for an array of distances (energy units: not divided by ``T``, not doubled)."""
        d = as_float_array(d, "d")
        with np.errstate(over="ignore", invalid="ignore"):
            s = d - self.d0
            v = self.a * s + self.b * s ** 2 + self.c * s ** 4
        if not np.all(np.isfinite(v)):
            bad = d[~np.isfinite(v)].flat[0]
            raise ValueError(f"DoubleWell.pair_potential overflows float64 at d = {bad:.3g}: "
                             "d is out of the range this potential can represent")
        return v

    def _dv(self, d):
        s = d - self.d0
        return self.a + 2.0 * self.b * s + 4.0 * self.c * s ** 3

    def energy(self, x):
        """Reduced energy ``u(x) / T`` of ``x (..., K, D)``, shape ``(...)``; autograd traces it."""
        x = self._input(x)
        with np.errstate(over="ignore", invalid="ignore"):
            r = self._pair_differences(x)
            s = anp.sqrt(anp.sum(r * r, axis=-1)) - self.d0
            s2 = s * s
            u = self._scale * anp.sum(self.a * s + self.b * s2 + self.c * s2 * s2, axis=-1)
        return self._checked(u, getval(x), "energy")

    def force(self, x):
        """``-d energy / dx``, shape ``(..., K, D)`` (undefined where two particles coincide)."""
        x = as_configurations(x, "x", self.n_particles, self.dim)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r = self._pair_differences(x)
            d = np.sqrt(np.sum(r * r, axis=-1))
            f = self._forces_from_pairs(-self._scale * self._dv(d) / d, r)
        return self._checked(f, x, "force")

    def pair_minima(self):
        """Distances ``d > 0`` at which ``v`` has a local minimum, ascending.

        For ``a = 0, b < 0 < c`` these are ``d0 -+ sqrt(-b / (2c))`` (about
        2.509 and 5.491 for the paper's values). Otherwise the real roots of
        the cubic ``v'(d) = a + 2b s + 4c s^3``, ``s = d - d0``, with
        ``v''(d) > 0``, each refined by Newton steps.
        """
        if self.a == 0.0 and self.b < 0.0 < self.c:
            w = math.sqrt(-self.b / (2.0 * self.c))
            minima = np.array([self.d0 - w, self.d0 + w])
            return minima[minima > 0.0]  # a distance is positive
        roots = np.roots([4.0 * self.c, 0.0, 2.0 * self.b, self.a])
        scale = max(1.0, float(np.max(np.abs(roots)))) if roots.size else 1.0
        s = np.sort(roots[np.abs(roots.imag) <= _REAL_ROOT_TOL * scale].real)
        for _ in range(3):  # Newton polish on v'(s) = 0
            curvature = 2.0 * self.b + 12.0 * self.c * s ** 2
            safe = np.where(curvature != 0.0, curvature, 1.0)
            s = s - np.where(curvature != 0.0, self._dv(s + self.d0) / safe, 0.0)
        keep = (2.0 * self.b + 12.0 * self.c * s ** 2 > 0.0) & (s + self.d0 > 0.0)
        return s[keep] + self.d0

    def _params(self):
        return np.array([self.a, self.b, self.c, self.d0, self._scale])

    def __repr__(self):
        return (f"DoubleWell(n_particles={self.n_particles}, dim={self.dim}, a={self.a}, "
                f"b={self.b}, c={self.c}, d0={self.d0}, pairs={self.pairs!r}, "
                f"temperature={self.temperature})")


@_energy_kernel
def _lennard_jones_kernel(params, x, n_particles, dim):
    epsilon, r_m2, tether, beta = params[0], params[1], params[2], params[3]
    total = 0.0
    for i in range(n_particles):
        for j in range(i + 1, n_particles):
            sq = _squared_distance(x, i, j, dim)
            if sq == 0.0:
                return math.inf  # coincident particles (and no ZeroDivisionError)
            q = (r_m2 / sq) ** 3
            total += epsilon * q * (q - 2.0)
    if tether != 0.0:
        spread = 0.0
        for k in range(dim):
            centre = 0.0
            for i in range(n_particles):
                centre += x[i * dim + k]
            centre /= n_particles
            for i in range(n_particles):
                diff = x[i * dim + k] - centre
                spread += diff * diff
        total += tether * spread
    return beta * total


class LennardJones(_PairPotential):
    r"""Lennard-Jones particles, optionally tethered to their centre of mass.

    .. math::
        u(x) = \sum_{i<j} \epsilon \left[ \left(\frac{r_m}{r_{ij}}\right)^{12}
               - 2 \left(\frac{r_m}{r_{ij}}\right)^{6} \right]
               + k_t \sum_i \lVert x_i - \mu(x) \rVert^2 ,
        \qquad \mu(x) = \frac1K \sum_i x_i ,

    summed over unordered pairs; ``energy(x)`` returns the **reduced energy**
    ``u(x) / T``. The pair minimum is ``-epsilon`` at ``r = r_m``. The
    harmonic tether (``k_t``, ``tether``) keeps a cluster such as LJ13 from
    evaporating, as in the follow-up literature; it is invariant under
    translations, rotations, reflections and permutations like the pair sum.

    Parameters
    ----------
    n_particles, dim : int
    epsilon, r_m : float
        Well depth and position, both ``> 0``.
    tether : float
        ``k_t >= 0``; 0 (default) switches the tether off.
    temperature : float
        ``T > 0``.
    """

    _kernel = staticmethod(_lennard_jones_kernel)

    def __init__(self, n_particles, dim, epsilon=1.0, r_m=1.0, tether=0.0, temperature=1.0):
        super().__init__(n_particles, dim, temperature)
        self.epsilon = as_positive_float(epsilon, "epsilon")
        self.r_m = as_positive_float(r_m, "r_m")
        self.tether = as_finite_float(tether, "tether")
        if self.tether < 0:
            raise ValueError(f"tether must be >= 0, got {self.tether}")

    def pair_potential(self, r):
        """``epsilon [(r_m/r)^12 - 2 (r_m/r)^6]`` for an array of distances (energy units)."""
        r = as_float_array(r, "r")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            q = (self.r_m / r) ** 6
            v = self.epsilon * q * (q - 2.0)
        # +inf at r = 0 (coincident particles), as in energy; any other non-finite
        # value (r so small, or negative, that v overflows) is refused
        bad = ~np.isfinite(v) & ~((r == 0.0) & (v == np.inf))
        if np.any(bad):
            raise ValueError(f"LennardJones.pair_potential overflows float64 at r = "
                             f"{r[bad].flat[0]:.3g}: r is out of the range this potential can "
                             "represent")
        return v

    def energy(self, x):
        """Reduced energy ``u(x) / T`` of ``x (..., K, D)``, shape ``(...)``; autograd traces it.

        ``+inf`` where two particles coincide; ``ValueError`` where the energy
        overflows float64 otherwise.
        """
        x = self._input(x)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            r = self._pair_differences(x)
            q = (self.r_m ** 2 / anp.sum(r * r, axis=-1)) ** 3
            u = self.epsilon * anp.sum(q * (q - 2.0), axis=-1)  # inf, not inf - inf, at r = 0
            if self.tether != 0.0:
                centred = x - anp.mean(x, axis=-2, keepdims=True)
                u = u + self.tether * anp.sum(centred * centred, axis=(-2, -1))
            u = u / self.temperature
        return self._checked(u, getval(x), "energy", inf_when_coincident=True)

    def force(self, x):
        """``-d energy / dx``, shape ``(..., K, D)``.

        The tether's force is ``-2 k_t (x_i - mu) / T``: the dependence of
        ``mu`` on ``x`` drops out because ``sum_i (x_i - mu) = 0``.
        """
        x = as_configurations(x, "x", self.n_particles, self.dim)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            r = self._pair_differences(x)
            sq = np.sum(r * r, axis=-1)
            q = (self.r_m ** 2 / sq) ** 3
            # -dv/dr / r with v = eps (q^2 - 2q), q = (r_m / r)^6, dq/dr = -6 q / r
            w = 12.0 * self.epsilon * (q * q - q) / sq / self.temperature
            f = self._forces_from_pairs(w, r)
            if self.tether != 0.0:
                f = f - (2.0 * self.tether / self.temperature) * (x - x.mean(axis=-2,
                                                                          keepdims=True))
        return self._checked(f, x, "force")

    def _params(self):
        return np.array([self.epsilon, self.r_m ** 2, self.tether, 1.0 / self.temperature])

    def __repr__(self):
        return (f"LennardJones(n_particles={self.n_particles}, dim={self.dim}, "
                f"epsilon={self.epsilon}, r_m={self.r_m}, tether={self.tether}, "
                f"temperature={self.temperature})")
