"""The registry of psi families: adding a family is one entry in ``FAMILIES``.

``FAMILIES`` maps a family's name (its class name) to a ``Family``: the
class, how to read the parameters **of its formula** (``mu``, ``weights``,
...) off a psi object and build one from them, the formula in NumPy, and how
to draw example parameters. Its users: model files (``refimpl.io``, which
store a psi by family name and ``theta``), the golden vectors
(``refimpl.vectors``, which describe a psi by family name and formula
parameters, never by refimpl's ``theta`` layout), ``refimpl verify
--family`` and the tests.

Each family's NumPy formula (``Family.numpy``) is the ``psi_numpy`` function
beside the family's Numba kernels, its one NumPy transcription in the
package: it is the reference the golden vectors evaluate in extended
precision, and the oracle the tests hold the Numba ``pair`` to.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import bgflow_kernel, mlp, rbf
from .bgflow_kernel import BgflowKernel
from .mlp import TanhMLP
from .rbf import RBFKernel


@dataclass(frozen=True)
class Family:
    """How a psi family is written to and read from files."""

    cls: type  # the psi class; model files rebuild it with cls.from_theta
    prefix: str  # of case ids, e.g. "rbf"
    formula: str  # the formula, with the meaning and shape of each parameter
    params: Callable  # psi object -> {name: float or ndarray}
    build: Callable  # {name: float or ndarray} -> psi object
    # (params, r, t) -> (psi, dpsi/dr) for an array r, in NumPy, keeping the float dtype
    # of its arguments (refimpl.vectors evaluates it in extended precision)
    numpy: Callable
    # (rng, size, t0, t1) -> params, the linear ones of unit scale; size is "small",
    # "medium" or "paper" (the paper's DW4 psi)
    example: Callable
    linear: tuple = ()  # the parameters psi is linear in (jointly)
    # Gradients are reported per named parameter (refimpl.vectors.named_gradient): the
    # parameters the family can train, and how to build a psi with all of them trainable
    # (None: ``build`` already does).
    trainable_params: tuple = ()
    build_trainable: Callable = None


def _rbf_example(rng, size, t0, t1):
    n_r, n_t, r_max = {"small": (6, 3, 6.0), "medium": (16, 4, 8.0), "paper": (50, 10, 8.0)}[size]
    psi = RBFKernel(rng.standard_normal((n_r, n_t)), n_distance=n_r, n_time=n_t, r_max=r_max,
                    t_range=(t0, t1))
    return _rbf_params(psi)


def _rbf_params(psi):
    return {"mu": psi.mu.copy(), "nu": psi.nu.copy(), "gamma": psi.gamma,
            "gamma_t": psi.gamma_t, "weights": psi.weights.copy()}


def _rbf_build(p):
    return RBFKernel(p["weights"], mu=p["mu"], nu=p["nu"], gamma=p["gamma"], gamma_t=p["gamma_t"])


def _mlp_example(rng, size, t0, t1):
    hidden = {"small": 4, "medium": 8, "paper": 16}[size]
    return {"a": 0.5 * rng.standard_normal(hidden), "c": rng.standard_normal(hidden),
            "b": rng.standard_normal(hidden), "v": rng.standard_normal(hidden),
            "v0": float(rng.standard_normal())}


def _bgflow_example(rng, size, t0, t1):
    # "paper": E-NF's DW4 settings (50 centres on [0, 8], widths 0.5; 10 in time, 0.3)
    n_k, n_s = {"small": (6, 3), "medium": (16, 4), "paper": (50, 10)}[size]
    mus, mus_time = np.linspace(0.0, 8.0, n_k), np.linspace(t0, t1, n_s)
    width = 0.5 if size == "paper" else mus[1] - mus[0]
    width_t = 0.3 if size == "paper" else mus_time[1] - mus_time[0]
    return {"mus": mus, "neg_log_gammas": np.full(n_k, -np.log(width)), "mus_time": mus_time,
            "neg_log_gammas_time": np.full(n_s, -np.log(width_t)),
            "importance": 0.5 * rng.standard_normal(n_k),
            "weights": rng.standard_normal((n_k, n_s)), "bias": rng.standard_normal(n_s)}


def _bgflow_params(psi):
    arrays = psi.arrays()
    arrays["bias"] = arrays["bias"].ravel()
    return arrays


FAMILIES = {
    "RBFKernel": Family(
        cls=RBFKernel, prefix="rbf",
        formula="psi(r, t) = sum_{k,l} weights[k][l] exp(-gamma (r - mu[k])^2) "
                "exp(-gamma_t (t - nu[l])^2); mu (n_r,), nu (n_t,), weights (n_r, n_t), "
                "gamma and gamma_t scalars",
        params=_rbf_params, build=_rbf_build, numpy=rbf.psi_numpy, example=_rbf_example,
        linear=("weights",), trainable_params=("weights",)),
    "TanhMLP": Family(
        cls=TanhMLP, prefix="mlp",
        formula="psi(r, t) = v0 + sum_h v[h] tanh(a[h] r + c[h] t + b[h]); a, c, b, v (H,), "
                "v0 scalar",
        params=TanhMLP.arrays, build=lambda p: TanhMLP(len(p["a"]), **p), numpy=mlp.psi_numpy,
        example=_mlp_example, linear=("v", "v0"), trainable_params=("a", "c", "b", "v", "v0")),
    "BgflowKernel": Family(
        cls=BgflowKernel, prefix="bgflow",
        formula="bgflow's KernelDynamics: psi(r, t) = sum_s T_s(t) [sum_k (K_k(d) + "
                "importance[k]^2) weights[k][s] + bias[s]] with d = sqrt(r^2 + 1e-6), "
                "K_k(d) = g_k(d) / (1e-6 + sum_m g_m(d)), g_k(d) = exp(-(d - mus[k])^2 "
                "exp(neg_log_gammas[k])^2), T_s(t) = h_s(t) / (1e-6 + sum_m h_m(t)), "
                "h_s(t) = exp(-(t - mus_time[s])^2 exp(neg_log_gammas_time[s])^2); mus, "
                "neg_log_gammas, importance (n_k,); mus_time, neg_log_gammas_time, bias "
                "(n_s,); weights (n_k, n_s). dpsi/dr is the exact derivative (through d); "
                "bgflow's own divergence approximates it and differs by ~1e-7 relative "
                "(refimpl/bgflow_kernel.py), which fails the divergence threshold.",
        params=_bgflow_params, build=lambda p: BgflowKernel.from_arrays(**p),
        numpy=bgflow_kernel.psi_numpy, example=_bgflow_example, linear=("weights", "bias"),
        trainable_params=("weights", "bias", "importance", "neg_log_gammas",
                          "neg_log_gammas_time"),
        build_trainable=lambda p: BgflowKernel.from_arrays(True, True, **p)),
}
