"""Bad input to every public function and constructor: the error names the culprit.

Table-driven: each case is ``(id, call, exception type, words)``; the test
asserts that ``call()`` raises exactly that type (or a subclass) and that
every one of ``words`` appears in the message, so a message that stops naming
the argument, field or flag fails the test. Valid-but-unusual inputs that
used to be refused (read-only, memory-mapped, float32, 0-d ``t``) are in
``ACCEPTED``, each compared with the plain float64 result. The CLI table is at
the end; file readers are in ``test_bad_inputs_files.py``.
"""

import numpy as np
import pytest
from cli_helpers import run_cli

from refimpl import (BgflowKernel, DoubleWell, EquivariantFlow, FlowModel, LennardJones,
                     MeanFreeNormal, RBFKernel, RealNVP, SolverError, TanhMLP, divergence,
                     effective_sample_size, helmert_basis, load_model, log_weights,
                     metropolis_hastings, normalized_weights, remove_mean, reweighted_mean,
                     save_model, vector_field)
from refimpl.cli import main
from refimpl.files import FileFormatError
from refimpl.train import Phase, kl_loss, train

RNG = np.random.default_rng(0)
X = remove_mean(RNG.standard_normal((3, 4, 2)))
PSI = RBFKernel(0.02 * RNG.standard_normal((50, 10)))
FLOW = EquivariantFlow(PSI, n_particles=4, dim=2)
MODEL = FlowModel(FLOW)
NVP = RealNVP(4, 2, n_layers=2, hidden=(8,))
DW = DoubleWell(4, 2)
LJ = LennardJones(4, 2)
MFN = MeanFreeNormal(4, 2)
BG_ARGS = (np.linspace(0.0, 5.0, 6), 1.0, np.linspace(0.0, 1.0, 3), 0.5)


def _bg(**changes):
    args = dict(zip(("mus", "gammas", "mus_time", "gammas_time"), BG_ARGS))
    args.update(changes)
    return BgflowKernel(**args)


def _scaled(s):
    """A mean-free configuration batch scaled by ``s`` (no overflow in the scaling itself)."""
    return X * s


def _not_mean_free():
    x = X.copy()
    x[1, :, 0] += 0.1
    return x


def _coincident():
    x = X[0].copy()
    x[1] = x[0]
    return x


NAN_X = X.copy()
NAN_X[0, 1, 1] = np.nan

# The public functions of a configuration batch x (K = 4, D = 2), by name: the bad
# configurations below go to the first twelve, unusual layouts of X to ACCEPTED_FUNCTIONS.
OF_X = {
    "remove_mean": remove_mean,
    "MeanFreeNormal.log_prob": MFN.log_prob,
    "vector_field": lambda x: vector_field(x, 0.5, PSI),
    "divergence": lambda x: divergence(x, 0.5, PSI),
    "flow.forward": FLOW.forward,
    "flow.log_prob": FLOW.log_prob,
    "DoubleWell.energy": DW.energy,
    "DoubleWell.force": DW.force,
    "LennardJones.energy": LJ.energy,
    "LennardJones.force": LJ.force,
    "RealNVP.log_prob": lambda x: NVP.log_prob(NVP.params, x),
    "FlowModel.log_prob": lambda x: MODEL.log_prob(MODEL.params, x),
    "kernel energy (MCMC path)": lambda x: __import__("refimpl").potentials.kernel_energy(DW, x),
}

# (id, call, exception type, words the message must contain)
CASES = [
    # ---- configurations: type, rank, size, finiteness, range (one row per entry point)
    *[(f"{name}-{label}", (lambda f=f, v=v: f(v)), exc, words)
      for name, f in list(OF_X.items())[:12]
      for label, v, exc, words in [
          ("complex", X.astype(complex), TypeError, ["complex"]),
          ("string", X.astype(str), TypeError, ["string"]),
          ("bool", X > 0, TypeError, ["boolean"]),
          ("object", np.array([[None, 1.0], [2.0, 3.0]], dtype=object), TypeError, ["object"]),
          ("ragged", [[1.0, 2.0], [3.0]], TypeError, ["rectangular"]),
          ("nan", NAN_X, ValueError, ["NaN", "(0, 1, 1)"]),
          ("huge", _scaled(1e200), ValueError, ["out of range", "rescale"]),
          ("rank-1", np.zeros(3), ValueError, ["(..., K, D)"]),
      ]],
    *[(f"{name}-wrong-size", f, ValueError, words) for name, f, words in [
        ("MeanFreeNormal.log_prob", lambda: MFN.log_prob(np.zeros((3, 2))), ["K = 3", "K = 4"]),
        ("flow.log_prob", lambda: FLOW.log_prob(np.zeros((4, 3))), ["D = 3", "D = 2"]),
        ("DoubleWell.energy", lambda: DW.energy(np.zeros((5, 2))), ["K = 5"]),
        ("RealNVP.log_prob", lambda: NVP.log_prob(NVP.params, np.zeros((4, 1))), ["D = 1"]),
        ("one particle", lambda: remove_mean(np.zeros((1, 2))), ["K = 2"]),
        ("no dimension", lambda: remove_mean(np.zeros((3, 0))), ["D >= 1"]),
    ]],
    *[(f"{name}-not-mean-free", f, ValueError, ["mean-free", "remove_mean"]) for name, f in [
        ("MeanFreeNormal.log_prob", lambda: MFN.log_prob(_not_mean_free())),
        ("flow.log_prob", lambda: FLOW.log_prob(_not_mean_free())),
        ("RealNVP.log_prob", lambda: NVP.log_prob(NVP.params, _not_mean_free())),
        ("FlowModel.log_prob", lambda: MODEL.log_prob(MODEL.params, _not_mean_free())),
    ]],
    # ---- finite in, finite out or a ValueError that says why
    ("DoubleWell.energy-overflow", lambda: DW.energy(_scaled(1e100)), ValueError,
     ["DoubleWell.energy", "overflows", "x[0]"]),
    ("DoubleWell.force-overflow", lambda: DW.force(_scaled(1e120)), ValueError,
     ["DoubleWell.force", "overflows"]),
    ("DoubleWell.force-coincident", lambda: DW.force(_coincident()), ValueError,
     ["particles 0 and 1 coincide"]),
    ("LennardJones.force-coincident", lambda: LJ.force(_coincident()), ValueError,
     ["particles 0 and 1 coincide"]),
    ("LennardJones.energy-tether-overflow",
     lambda: LennardJones(4, 2, tether=1e300).energy(_scaled(1e10)), ValueError,
     ["LennardJones.energy", "overflows"]),
    ("remove_mean-1e308", lambda: remove_mean([[1e308, 0.0], [1e308, 0.0], [-1e308, 0.0]]),
     ValueError, ["out of range"]),
    # ---- t, the time argument
    ("vector_field-t-nan", lambda: vector_field(X, np.nan, PSI), ValueError, ["t", "finite"]),
    ("vector_field-t-inf", lambda: vector_field(X, np.inf, PSI), ValueError, ["t", "finite"]),
    ("vector_field-t-string", lambda: vector_field(X, "0.5", PSI), TypeError, ["t"]),
    ("vector_field-t-vector", lambda: vector_field(X, np.array([0.1, 0.2]), PSI), TypeError,
     ["t"]),
    ("divergence-t-complex", lambda: divergence(X, 0.5 + 1j, PSI), TypeError, ["t"]),
    ("divergence-t-bool", lambda: divergence(X, True, PSI), TypeError, ["t"]),
    ("psi.values-t-none", lambda: PSI.values(np.ones(3), None), TypeError, ["t"]),
    ("psi.values-r-complex", lambda: PSI.values(np.ones(3) + 1j, 0.5), TypeError,
     ["r", "complex"]),
    ("psi.values-r-nan", lambda: PSI.values(np.array([1.0, np.nan]), 0.5), ValueError, ["r"]),
    ("vector_field-psi-none", lambda: vector_field(X, 0.5, None), TypeError, ["psi"]),
    # ---- EquivariantFlow constructor and methods
    ("flow-rtol-negative", lambda: EquivariantFlow(PSI, rtol=-1.0), ValueError, ["rtol"]),
    ("flow-atol-zero", lambda: EquivariantFlow(PSI, atol=0.0), ValueError, ["atol"]),
    ("flow-atol-nan", lambda: EquivariantFlow(PSI, atol=np.nan), ValueError, ["atol"]),
    ("flow-t0-string", lambda: EquivariantFlow(PSI, t0="0"), TypeError, ["t0"]),
    ("flow-t1-inf", lambda: EquivariantFlow(PSI, t1=np.inf), ValueError, ["t1"]),
    ("flow-max-steps-float", lambda: EquivariantFlow(PSI, max_steps=10.5), TypeError,
     ["max_steps"]),
    ("flow-max-steps-zero", lambda: EquivariantFlow(PSI, max_steps=0), ValueError,
     ["max_steps"]),
    ("flow-n-particles-one", lambda: EquivariantFlow(PSI, n_particles=1), ValueError,
     ["n_particles"]),
    ("flow-dim-bool", lambda: EquivariantFlow(PSI, dim=True), TypeError, ["dim"]),
    ("flow-psi-wrong", lambda: EquivariantFlow(object()), TypeError, ["psi"]),
    ("flow.sample-n-zero", lambda: FLOW.sample(0, 0), ValueError, ["n"]),
    ("flow.sample-n-float", lambda: FLOW.sample(2.5, 0), TypeError, ["n"]),
    ("flow.sample-n-huge", lambda: FLOW.sample(10**13, 0), ValueError, ["n =", "memory"]),
    ("flow.sample-rng-negative", lambda: FLOW.sample(2, -1), ValueError, ["rng", "-1"]),
    ("flow.sample-rng-string", lambda: FLOW.sample(2, "seed"), TypeError, ["rng"]),
    ("flow.sample-rng-float", lambda: FLOW.sample(2, 1.5), TypeError, ["rng"]),
    # ---- MeanFreeNormal
    ("MeanFreeNormal-K-one", lambda: MeanFreeNormal(1, 2), ValueError, ["n_particles"]),
    ("MeanFreeNormal-K-float", lambda: MeanFreeNormal(4.0, 2), TypeError, ["n_particles"]),
    ("MeanFreeNormal-D-zero", lambda: MeanFreeNormal(4, 0), ValueError, ["dim"]),
    ("MeanFreeNormal.sample-n-negative", lambda: MFN.sample(-3, 0), ValueError, ["n"]),
    ("MeanFreeNormal.sample-n-huge", lambda: MFN.sample(10**13, 0), ValueError,
     ["n =", "memory"]),
    ("MeanFreeNormal.sample-rng-negative", lambda: MFN.sample(2, -5), ValueError, ["rng"]),
    ("helmert_basis-K-one", lambda: helmert_basis(1, 2), ValueError, ["n_particles"]),
    ("helmert_basis-D-string", lambda: helmert_basis(3, "2"), TypeError, ["dim"]),
    # ---- RBFKernel
    ("RBF-mu-equal", lambda: RBFKernel(mu=[1.0, 1.0, 1.0]), ValueError, ["mu", "all equal"]),
    ("RBF-mu-2d", lambda: RBFKernel(mu=np.ones((2, 3))), ValueError, ["mu", "1-D"]),
    ("RBF-mu-empty", lambda: RBFKernel(mu=[]), ValueError, ["mu"]),
    ("RBF-mu-nan", lambda: RBFKernel(mu=[0.0, np.nan]), ValueError, ["mu"]),
    ("RBF-mu-huge", lambda: RBFKernel(mu=[0.0, 1e200]), ValueError, ["mu", "out of range"]),
    ("RBF-mu-complex", lambda: RBFKernel(mu=[0.0, 1j]), TypeError, ["mu", "complex"]),
    ("RBF-nu-string", lambda: RBFKernel(nu=["0", "1"]), TypeError, ["nu", "string"]),
    ("RBF-t-range-empty", lambda: RBFKernel(t_range=(0.5, 0.5)), ValueError,
     ["t_range", "n_time=1"]),
    ("RBF-t-range-scalar", lambda: RBFKernel(t_range=0.5), TypeError, ["t_range", "pair"]),
    ("RBF-t-range-three", lambda: RBFKernel(t_range=(0, 1, 2)), TypeError, ["t_range"]),
    ("RBF-t-range-reversed", lambda: RBFKernel(t_range=(1.0, 0.0)), ValueError, ["t_range"]),
    ("RBF-t-range-nan", lambda: RBFKernel(t_range=(0.0, np.nan)), ValueError, ["t_range"]),
    ("RBF-r-max-tiny", lambda: RBFKernel(r_max=1e-300), ValueError, ["r_max", "overflows"]),
    ("RBF-r-max-negative", lambda: RBFKernel(r_max=-1.0), ValueError, ["r_max"]),
    ("RBF-r-max-string", lambda: RBFKernel(r_max="8"), TypeError, ["r_max"]),
    ("RBF-n-distance-one", lambda: RBFKernel(n_distance=1), ValueError, ["n_distance"]),
    ("RBF-n-time-float", lambda: RBFKernel(n_time=2.0), TypeError, ["n_time"]),
    ("RBF-gamma-zero", lambda: RBFKernel(gamma=0.0), ValueError, ["gamma"]),
    ("RBF-gamma-t-inf", lambda: RBFKernel(gamma_t=np.inf), ValueError, ["gamma_t"]),
    ("RBF-weights-shape", lambda: RBFKernel(np.zeros((3, 3))), ValueError,
     ["weights", "(50, 10)"]),
    ("RBF-weights-complex", lambda: RBFKernel(np.zeros((50, 10)) + 0j), TypeError,
     ["weights", "complex"]),
    ("RBF-weights-nan", lambda: RBFKernel(np.full((50, 10), np.nan)), ValueError,
     ["weights"]),
    ("RBF-from-theta-short", lambda: RBFKernel.from_theta([1.0, 2.0]), ValueError,
     ["theta"]),
    ("RBF-from-theta-layout", lambda: RBFKernel.from_theta(PSI.theta[:-1]), ValueError,
     ["theta", "layout"]),
    # ---- TanhMLP
    ("MLP-hidden-zero", lambda: TanhMLP(0), ValueError, ["hidden"]),
    ("MLP-hidden-float", lambda: TanhMLP(3.5), TypeError, ["hidden"]),
    ("MLP-rng-negative", lambda: TanhMLP(4, rng=-2), ValueError, ["rng"]),
    ("MLP-a-shape", lambda: TanhMLP(4, a=np.ones(3)), ValueError, ["a", "(4,)"]),
    ("MLP-v-complex", lambda: TanhMLP(4, v=np.ones(4) * 1j), TypeError, ["v", "complex"]),
    ("MLP-b-nan", lambda: TanhMLP(4, b=np.full(4, np.nan)), ValueError, ["b"]),
    ("MLP-v0-inf", lambda: TanhMLP(4, v0=np.inf), ValueError, ["v0"]),
    ("MLP-v0-string", lambda: TanhMLP(4, v0="0"), TypeError, ["v0"]),
    ("MLP-from-theta-layout", lambda: TanhMLP.from_theta(np.ones(7)), ValueError,
     ["theta", "layout"]),
    # ---- BgflowKernel
    ("Bgflow-width-tiny", lambda: _bg(gammas=1e-200), ValueError, ["gammas", "1e-50"]),
    ("Bgflow-time-width-tiny", lambda: _bg(gammas_time=1e-200), ValueError,
     ["gammas_time", "1e-50"]),
    ("Bgflow-width-negative", lambda: _bg(gammas=-1.0), ValueError, ["gammas", "positive"]),
    ("Bgflow-width-nan", lambda: _bg(gammas=np.nan), ValueError, ["gammas"]),
    ("Bgflow-mus-2d", lambda: _bg(mus=np.ones((2, 2))), ValueError, ["mus"]),
    ("Bgflow-mus-huge", lambda: _bg(mus=[0.0, 1e200]), ValueError, ["mus", "out of range"]),
    ("Bgflow-mus-time-string", lambda: _bg(mus_time=["a"]), TypeError, ["mus_time"]),
    ("Bgflow-weights-shape", lambda: _bg(weights=np.ones((2, 2))), ValueError, ["weights"]),
    ("Bgflow-bias-complex", lambda: _bg(bias=np.ones(3) * 1j), TypeError, ["bias"]),
    ("Bgflow-from-arrays-missing", lambda: BgflowKernel.from_arrays(mus=np.ones(2)),
     ValueError, ["missing", "neg_log_gammas"]),
    ("Bgflow-from-arrays-narrow",
     lambda: BgflowKernel.from_arrays(**{**_bg().arrays(), "neg_log_gammas": np.full(6, 300.0)}),
     ValueError, ["neg_log_gammas", "1e-50"]),
    ("Bgflow-from-theta-layout", lambda: BgflowKernel.from_theta(np.ones(9)), ValueError,
     ["theta"]),
    ("Bgflow.bgflow_divergence-x-complex", lambda: _bg().bgflow_divergence(X + 0j, 0.5),
     TypeError, ["x", "complex"]),
    # ---- RealNVP
    ("RealNVP-K-one", lambda: RealNVP(1, 2), ValueError, ["n_particles"]),
    ("RealNVP-layers-zero", lambda: RealNVP(4, 2, n_layers=0), ValueError, ["n_layers"]),
    ("RealNVP-hidden-int", lambda: RealNVP(4, 2, hidden=8), TypeError, ["hidden"]),
    ("RealNVP-hidden-zero", lambda: RealNVP(4, 2, hidden=(0,)), ValueError, ["hidden"]),
    ("RealNVP-init-scale-negative", lambda: RealNVP(4, 2, init_scale=-1.0), ValueError,
     ["init_scale"]),
    ("RealNVP-clamp-zero", lambda: RealNVP(4, 2, scale_clamp=0.0), ValueError,
     ["scale_clamp"]),
    ("RealNVP-rng-negative", lambda: RealNVP(4, 2, rng=-1), ValueError, ["rng"]),
    ("RealNVP.log_prob-params-shape", lambda: NVP.log_prob(np.zeros(3), X), ValueError,
     ["params"]),
    ("RealNVP.log_prob-params-nan", lambda: NVP.log_prob(np.full(NVP.n_params, np.nan), X),
     ValueError, ["params"]),
    ("RealNVP.sample-n-huge", lambda: NVP.sample(NVP.params, 10**13, 0), ValueError,
     ["n =", "memory"]),
    ("RealNVP.forward-z-shape", lambda: NVP.forward(NVP.params, np.zeros((2, 5))), ValueError,
     ["z", "(..., 6)"]),
    ("RealNVP.from_coordinates-u-complex", lambda: NVP.from_coordinates(np.zeros(6) + 0j),
     TypeError, ["u", "complex"]),
    # ---- potentials
    ("DoubleWell-a-nan", lambda: DoubleWell(4, 2, a=np.nan), ValueError, ["a"]),
    ("DoubleWell-b-string", lambda: DoubleWell(4, 2, b="1"), TypeError, ["b"]),
    ("DoubleWell-pairs-bad", lambda: DoubleWell(4, 2, pairs="all"), ValueError, ["pairs"]),
    ("DoubleWell-pairs-int", lambda: DoubleWell(4, 2, pairs=1), TypeError, ["pairs"]),
    ("DoubleWell-temperature-zero", lambda: DoubleWell(4, 2, temperature=0.0), ValueError,
     ["temperature"]),
    ("DoubleWell-K-float", lambda: DoubleWell(4.5, 2), TypeError, ["n_particles"]),
    ("DoubleWell.pair_potential-d-complex", lambda: DW.pair_potential(np.ones(2) * 1j),
     TypeError, ["d"]),
    ("LennardJones-epsilon-zero", lambda: LennardJones(4, 2, epsilon=0.0), ValueError,
     ["epsilon"]),
    ("LennardJones-r-m-inf", lambda: LennardJones(4, 2, r_m=np.inf), ValueError, ["r_m"]),
    ("LennardJones-tether-negative", lambda: LennardJones(4, 2, tether=-1.0), ValueError,
     ["tether"]),
    ("LennardJones.pair_potential-r-string", lambda: LJ.pair_potential(["1"]), TypeError,
     ["r"]),
    # ---- Metropolis-Hastings
    ("mcmc-x0-complex", lambda: metropolis_hastings(DW, X[0] + 0j, 10, 0.1, 0), TypeError,
     ["x0"]),
    ("mcmc-x0-rank", lambda: metropolis_hastings(DW, np.zeros((2, 3, 4, 2)), 10, 0.1, 0),
     ValueError, ["x0"]),
    ("mcmc-n-steps-zero", lambda: metropolis_hastings(DW, X[0], 0, 0.1, 0), ValueError,
     ["n_steps"]),
    ("mcmc-step-size-negative", lambda: metropolis_hastings(DW, X[0], 10, -0.1, 0),
     ValueError, ["step_size"]),
    ("mcmc-thin-too-large", lambda: metropolis_hastings(DW, X[0], 10, 0.1, 0, thin=20),
     ValueError, ["thin"]),
    ("mcmc-mean-free-string", lambda: metropolis_hastings(DW, X[0], 10, 0.1, 0,
                                                          mean_free="yes"),
     TypeError, ["mean_free"]),
    ("mcmc-rng-negative", lambda: metropolis_hastings(DW, X[0], 10, 0.1, -1), ValueError,
     ["rng"]),
    ("mcmc-potential-plain", lambda: metropolis_hastings(object(), X[0], 10, 0.1, 0),
     TypeError, ["numba_energy"]),
    ("mcmc-x0-coincident-lj", lambda: metropolis_hastings(LJ, _coincident(), 10, 0.1, 0),
     ValueError, ["x0", "energy"]),
    ("mcmc-n-steps-huge", lambda: metropolis_hastings(DW, X[0], 10**14, 0.1, 0), ValueError,
     ["n_steps", "memory"]),
    # ---- reweighting
    ("log_weights-energy-complex", lambda: log_weights([1j, 1.0], [0.0, 0.0]), TypeError,
     ["reduced_energy", "complex"]),
    ("log_weights-log-q-string", lambda: log_weights([1.0, 2.0], ["a", "b"]), TypeError,
     ["log_q"]),
    ("log_weights-length", lambda: log_weights([1.0, 2.0], [0.0]), ValueError,
     ["reduced_energy", "log_q"]),
    ("log_weights-energy-nan", lambda: log_weights([np.nan, 2.0], [0.0, 0.0]), ValueError,
     ["reduced_energy", "NaN"]),
    ("log_weights-energy-minus-inf", lambda: log_weights([-np.inf, 2.0], [0.0, 0.0]),
     ValueError, ["reduced_energy", "-inf"]),
    ("log_weights-log-q-inf", lambda: log_weights([1.0, 2.0], [np.inf, 0.0]), ValueError,
     ["log_q"]),
    ("log_weights-empty", lambda: log_weights([], []), ValueError, ["reduced_energy"]),
    ("normalized_weights-plus-inf", lambda: normalized_weights([np.inf, 0.0]), ValueError,
     ["log_w", "+inf"]),
    ("normalized_weights-all-minus-inf", lambda: normalized_weights([-np.inf, -np.inf]),
     ValueError, ["finite weight"]),
    ("normalized_weights-2d", lambda: normalized_weights(np.zeros((2, 2))), ValueError,
     ["log_w", "1-D"]),
    ("effective_sample_size-bool", lambda: effective_sample_size([True, False]), TypeError,
     ["log_w", "boolean"]),
    ("reweighted_mean-values-inf", lambda: reweighted_mean([1.0, np.inf], [0.0, 0.0]),
     ValueError, ["values"]),
    ("reweighted_mean-values-complex", lambda: reweighted_mean([1.0, 1j], [0.0, 0.0]),
     TypeError, ["values", "complex"]),
    ("reweighted_mean-length", lambda: reweighted_mean([1.0, 2.0, 3.0], [0.0, 0.0]),
     ValueError, ["values", "log_w"]),
    ("reweighted_mean-values-2d", lambda: reweighted_mean(np.ones((2, 2)), [0.0, 0.0]),
     ValueError, ["values", "1-D"]),
    # ---- training
    ("Phase-w-ml-nan", lambda: Phase(10, w_ml=np.nan), ValueError, ["w_ml"]),
    ("Phase-w-kl-inf", lambda: Phase(10, w_kl=np.inf), ValueError, ["w_kl"]),
    ("Phase-w-ml-complex", lambda: Phase(10, w_ml=1j), TypeError, ["w_ml"]),
    ("Phase-weights-zero", lambda: Phase(10, w_ml=0.0, w_kl=0.0), ValueError,
     ["w_ml", "w_kl"]),
    ("Phase-weight-negative", lambda: Phase(10, w_ml=-1.0), ValueError, ["w_ml"]),
    ("Phase-n-steps-zero", lambda: Phase(0), ValueError, ["n_steps"]),
    ("Phase-n-steps-float", lambda: Phase(1.5), TypeError, ["n_steps"]),
    ("Phase-learning-rate-zero", lambda: Phase(10, learning_rate=0.0), ValueError,
     ["learning_rate"]),
    ("train-schedule-empty", lambda: train(MODEL, data=X, schedule=[]), ValueError,
     ["schedule", "empty"]),
    ("train-schedule-int", lambda: train(MODEL, data=X, schedule=5), TypeError, ["schedule"]),
    ("train-schedule-entry", lambda: train(MODEL, data=X, schedule=["x"]), TypeError,
     ["schedule[0]"]),
    ("train-data-missing", lambda: train(MODEL, schedule=[Phase(1)]), ValueError, ["data"]),
    ("train-data-empty", lambda: train(MODEL, data=np.zeros((0, 4, 2)), schedule=[Phase(1)]),
     ValueError, ["data", "non-empty"]),
    ("train-data-complex", lambda: train(MODEL, data=X + 0j, schedule=[Phase(1)]), TypeError,
     ["data", "complex"]),
    ("train-data-single", lambda: train(MODEL, data=X[0], schedule=[Phase(1)]), ValueError,
     ["data", "(N, K, D)"]),
    ("train-potential-missing", lambda: train(MODEL, schedule=[Phase(1, 0.0, 1.0)]),
     ValueError, ["potential"]),
    ("train-seed-negative", lambda: train(MODEL, data=X, schedule=[Phase(1)], seed=-1),
     ValueError, ["seed"]),
    ("train-seed-string", lambda: train(MODEL, data=X, schedule=[Phase(1)], seed="0"),
     TypeError, ["seed"]),
    ("train-energy-cut-nan", lambda: train(MODEL, data=X, schedule=[Phase(1)],
                                           energy_cut=np.nan), ValueError, ["energy_cut"]),
    ("train-batch-size-zero", lambda: train(MODEL, data=X, schedule=[Phase(1)], batch_size=0),
     ValueError, ["batch_size"]),
    ("train-kl-batch-size-float", lambda: train(MODEL, data=X, schedule=[Phase(1)],
                                                kl_batch_size=2.5), TypeError,
     ["kl_batch_size"]),
    ("train-checkpoint-every-zero", lambda: train(MODEL, data=X, schedule=[Phase(1)],
                                                  checkpoint_every=0), ValueError,
     ["checkpoint_every"]),
    ("train-params-nan", lambda: train(MODEL, np.full(MODEL.params.size, np.nan), data=X,
                                       schedule=[Phase(1)]), ValueError, ["params"]),
    ("train-params-string", lambda: train(MODEL, np.array(["a"]), data=X,
                                          schedule=[Phase(1)]), TypeError, ["params"]),
    ("train-batch-size-huge", lambda: train(MODEL, data=X, schedule=[Phase(1)],
                                            batch_size=10**12, log_every=0), ValueError,
     ["batch_size", "memory"]),
    ("train-data-not-mean-free", lambda: train(MODEL, data=_not_mean_free(),
                                               schedule=[Phase(1)]), ValueError,
     ["data", "mean-free"]),
    ("helmert_basis-huge", lambda: helmert_basis(10**6, 3), ValueError,
     ["n_particles", "memory"]),
    ("RBFKernel-n-distance-too-many", lambda: RBFKernel(n_distance=10**5 + 1), ValueError,
     ["n_distance", "at most"]),
    ("RBFKernel-n-time-too-many", lambda: RBFKernel(n_time=10**5 + 1), ValueError,
     ["n_time", "at most"]),
    ("EquivariantFlow-max-steps-2-63", lambda: EquivariantFlow(PSI, max_steps=2**63),
     ValueError, ["max_steps", "at most"]),
    ("EquivariantFlow-max-steps-1e30", lambda: EquivariantFlow(PSI, max_steps=10**30),
     ValueError, ["max_steps", "at most"]),
    ("from_npz-text-file", lambda: BgflowKernel.from_npz(__file__), FileFormatError,
     [__file__, "not a bgflow kernel file (.npz): not a zip"]),
    ("kl_loss-n-zero", lambda: kl_loss(NVP, NVP.params, DW, 0, 0), ValueError, ["n"]),
    ("ml_loss-model-array", lambda: __import__("refimpl.train").train.ml_loss(X, None, X),
     TypeError, ["model", "log_prob"]),
    ("kl_loss-potential-none", lambda: kl_loss(NVP, NVP.params, None, 2, 0), TypeError,
     ["potential", "energy"]),
    ("train-model-none", lambda: train(None, data=X, schedule=[Phase(1)]), TypeError,
     ["model"]),
    ("train-potential-array", lambda: train(MODEL, data=X, potential=X,
                                            schedule=[Phase(1, 1.0, 0.1)]), TypeError,
     ["potential", "energy"]),
    ("linlog_cut-cut-string", lambda: __import__("refimpl.train").train.linlog_cut(
        np.ones(2), "1"), TypeError, ["energy_cut"]),
    ("DoubleWell.pair_potential-overflow", lambda: DW.pair_potential([1e100]), ValueError,
     ["pair_potential", "1e+100"]),
    ("LennardJones.pair_potential-overflow", lambda: LJ.pair_potential([1e-60]), ValueError,
     ["pair_potential", "1e-60"]),
    # ---- model files: writing
    ("save_model-path-none", lambda: save_model(None, NVP), TypeError, ["path"]),
    ("load_model-path-none", lambda: load_model(None), TypeError, ["path"]),
    ("from_npz-path-int", lambda: BgflowKernel.from_npz(3.5), TypeError, ["path"]),
    ("load_model-folder", lambda: load_model("/"), IsADirectoryError, ["/", "folder"]),
    ("save_model-unknown", lambda: save_model("/tmp/never-written.npz", object()), TypeError,
     ["model", "cannot save"]),
    ("save_model-params-shape", lambda: save_model("/tmp/never-written.npz", NVP,
                                                   params=np.zeros(2)), ValueError,
     ["params"]),
    ("save_model-potential-unknown", lambda: save_model("/tmp/never-written.npz", NVP,
                                                        potential=object()), TypeError,
     ["potential"]),
]

assert len(CASES) >= 150, len(CASES)


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "allow_pickle" not in message and "Traceback" not in message


# ---------------------------------------------------------------- accepted, not refused

def _read_only(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _memmap(tmp_path, a):
    np.save(tmp_path / "a.npy", a)
    return np.load(tmp_path / "a.npy", mmap_mode="r")


def _strided(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
    wide[..., ::2] = a
    return wide[..., ::2]


ACCEPTED_FUNCTIONS = [(name, OF_X[name]) for name in [
    "vector_field", "divergence", "flow.log_prob", "DoubleWell.energy", "DoubleWell.force",
    "LennardJones.force", "kernel energy (MCMC path)", "MeanFreeNormal.log_prob",
    "RealNVP.log_prob"]]


@pytest.mark.parametrize("name, f", ACCEPTED_FUNCTIONS, ids=[c[0] for c in ACCEPTED_FUNCTIONS])
@pytest.mark.parametrize("layout", ["read-only", "memory-mapped", "non-contiguous"])
def test_unusual_layouts_give_the_plain_result(tmp_path, name, f, layout):
    make = {"read-only": _read_only, "memory-mapped": lambda a: _memmap(tmp_path, a),
            "non-contiguous": _strided}[layout]
    x = make(X)
    assert not (x.flags.writeable and x.flags.c_contiguous)
    np.testing.assert_array_equal(f(x), f(X))
    assert np.array_equal(x, X)  # the input is not modified


def test_psi_values_accept_read_only_distances():
    r = _read_only([0.5, 1.0, 2.0])
    for got, want in zip(PSI.values(r, 0.5), PSI.values(np.array([0.5, 1.0, 2.0]), 0.5)):
        np.testing.assert_array_equal(got, want)


def test_zero_dimensional_t_is_a_time():
    np.testing.assert_array_equal(vector_field(X, np.array(0.5), PSI), vector_field(X, 0.5, PSI))
    np.testing.assert_array_equal(divergence(X, np.float32(0.5), PSI),
                                  divergence(X, float(np.float32(0.5)), PSI))


# Rounding a mean-free float64 configuration to float32 leaves a centre of
# mass of up to ~eps32 * max|x|; at this scale that is far above the float64
# tolerance (1e-10 relative), so the test fails if the tolerance ignores dtype.
FLOAT32_SCALE = 30.0


@pytest.mark.parametrize("name, log_prob", [
    ("MeanFreeNormal", MFN.log_prob), ("EquivariantFlow", FLOW.log_prob),
    ("RealNVP", lambda x: NVP.log_prob(NVP.params, x)),
])
def test_float32_mean_free_configurations_are_accepted(name, log_prob):
    x32 = (X * FLOAT32_SCALE).astype(np.float32)
    assert np.max(np.abs(x32.astype(np.float64).mean(axis=-2))) > 1e-10 * FLOAT32_SCALE
    got = log_prob(x32)
    want = log_prob(remove_mean(x32.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # but a float32 configuration off the subspace by more than its rounding is refused
    shifted = x32.copy()
    shifted[..., 0] += np.float32(1e-3)
    with pytest.raises(ValueError, match="mean-free"):
        log_prob(shifted)


# ---------------------------------------------------------------- model files

def _model_file(tmp_path, **changes):
    path = tmp_path / "m.npz"
    save_model(path, NVP, DW)
    with np.load(path) as f:
        arrays = dict(f)
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


MODEL_FILE_CASES = [
    ("n_particles float", {"n_particles": np.array(4.7)}, ["'n_particles'", "integer"]),
    ("dim negative", {"dim": np.array(-3)}, ["'dim'", "-3"]),
    ("n_layers string", {"n_layers": np.array("4")}, ["'n_layers'"]),
    ("hidden zero", {"hidden": np.array([0])}, ["'hidden'"]),
    ("params complex", {"params": NVP.params + 0j}, ["'params'", "complex"]),
    ("params nan", {"params": np.full(NVP.n_params, np.nan)}, ["'params'", "NaN"]),
    ("claims K = 6000", {"n_particles": np.array(6000)}, ["'params'", "n_particles=6000"]),
    ("init_scale inf", {"init_scale": np.array(np.inf)}, ["'init_scale'"]),
    ("kind unknown", {"kind": np.array("gan")}, ["'kind'", "gan"]),
    ("kind number", {"kind": np.array(3)}, ["'kind'"]),
    ("potential unknown", {"potential_kind": np.array("Morse")}, ["'potential_kind'", "Morse"]),
    ("potential values short", {"potential_values": np.zeros(2)}, ["'potential_values'"]),
    ("potential size wrong", {"potential_size": np.array([4])}, ["'potential_size'"]),
    ("potential negative temperature",
     {"potential_values": np.array([0.0, -4.0, 0.9, 4.0, -1.0])}, ["temperature"]),
    ("unknown field", {"extra": np.zeros(2)}, ["'extra'"]),
    ("object field", {"params": np.array([object()], dtype=object)}, ["'params'", "pickle"]),
    ("version 2", {"version": np.array(2)}, ["version 2"]),
    ("format other", {"format": np.array("zip")}, ["'zip'"]),
]


@pytest.mark.parametrize("label, changes, words", MODEL_FILE_CASES,
                         ids=[c[0] for c in MODEL_FILE_CASES])
def test_a_bad_model_file_names_file_and_field(tmp_path, label, changes, words):
    path = _model_file(tmp_path, **changes)
    with pytest.raises(FileFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_a_model_file_with_too_narrow_bgflow_kernels_is_refused(tmp_path):
    psi = _bg()
    theta = psi.theta.copy()
    theta[4 + psi.shape[0]: 4 + 2 * psi.shape[0]] = 300.0  # neg_log_gammas: width e^-300
    # such a flow cannot be built (check_psi refuses it): edit a saved file
    save_model(tmp_path / "bg.npz", EquivariantFlow(psi))
    with np.load(tmp_path / "bg.npz") as f:
        arrays = dict(f)
    np.savez(tmp_path / "bg.npz", **{**arrays, "psi_theta": theta})
    with pytest.raises(FileFormatError, match="neg_log_gammas"):
        load_model(tmp_path / "bg.npz")


def test_flow_model_file_fields_are_range_checked(tmp_path):
    path = tmp_path / "flow.npz"
    save_model(path, FLOW)
    with np.load(path) as f:
        arrays = dict(f)
    for field, value, word in [("max_steps", np.array(1e30), "'max_steps'"),
                               ("max_steps", np.array(0), "'max_steps'"),
                               ("rtol", np.array(-1.0), "rtol"),
                               ("psi_family", np.array("Nope"), "'psi_family'"),
                               ("psi_theta", np.ones(3), "theta")]:
        np.savez(path, **{**arrays, field: value})
        with pytest.raises(FileFormatError, match=word):
            load_model(path)


# ---------------------------------------------------------------- the command line

CLI_CASES = [
    # (argv, words on stderr)
    (["demo", "-n", "0"], ["-n"]),
    (["demo", "-n", "100000000000"], ["-n", "1000"]),
    (["demo", "-n", "1e11"], ["-n", "invalid int"]),
    (["demo", "--particles", "1"], ["--particles"]),
    (["demo", "--dim", "0"], ["--dim"]),
    (["demo", "--particles", "100000"], ["--particles", "300"]),
    (["demo", "--dim", "50"], ["--dim", "10"]),
    (["vectors", "--out", "."], ["--out", "folder"]),
    (["demo", "--rtol", "-1"], ["--rtol"]),
    (["demo", "--atol", "nan"], ["--atol"]),
    (["demo", "--throughput", "-1"], ["--throughput"]),
    (["demo", "--seed", "x"], ["--seed"]),
    (["demo", "--seed", "-1"], ["--seed"]),
    (["reproduce", "--seed", "-1"], ["--seed"]),
    (["reproduce", "--bogus"], ["--bogus"]),
    (["vectors"], ["--out"]),
    (["verify", "only-one.json"], ["theirs"]),
    (["reproduce", "--quick", "--out", "/proc/refimpl-never"], ["--out", "/proc/refimpl-never"]),
    (["nonsense"], ["nonsense"]),
]


@pytest.mark.parametrize("argv, words", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_usage_errors_are_one_line_with_exit_2(capsys, argv, words):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_reproduce_refuses_a_file_and_foreign_folders_before_creating_anything(tmp_path,
                                                                                capsys):
    (tmp_path / "a-file").write_text("x")
    code, _, err = run_cli(capsys, "reproduce", "--out", tmp_path / "a-file", "--quick")
    assert code == 2 and "is a file" in err and len(err.splitlines()) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "reproduce", "--out", foreign, "--quick")
    assert code == 2 and "--overwrite" in err and "another --out" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_reproduce_refuses_results_of_other_settings(tmp_path, capsys):
    from refimpl.experiments.reproduce import RUN_MARKER
    from refimpl.experiments.settings import Settings
    import dataclasses
    import json

    out = tmp_path / "results"
    out.mkdir()
    full = {"settings": json.loads(json.dumps(dataclasses.asdict(Settings(seed=0)))),
            "quick": False}
    (out / RUN_MARKER).write_text(json.dumps(full))
    code, _, err = run_cli(capsys, "reproduce", "--out", out, "--quick")
    assert code == 2
    assert "full, seed 0" in err and "quick, seed 0" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER]
    # same kind and seed, but written with other settings (e.g. by another refimpl version)
    quick = {"settings": json.loads(json.dumps(dataclasses.asdict(Settings(seed=0).quick()))),
             "quick": True}
    quick["settings"]["mcmc_steps"] += 1
    (out / RUN_MARKER).write_text(json.dumps(quick))
    code, _, err = run_cli(capsys, "reproduce", "--out", out, "--quick")
    assert code == 2 and "settings differ in mcmc_steps" in err


def test_verify_on_hostile_files_is_one_line_exit_2(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(capsys, "verify", deep, deep)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_corrupted_checkpoint_says_what_to_do(tmp_path):
    checkpoint = tmp_path / "run.ckpt.npz"
    checkpoint.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(FileFormatError) as info:
        train(NVP, data=X, schedule=[Phase(1)], checkpoint=checkpoint, resume=True,
              log_every=0)
    assert str(checkpoint) in str(info.value) and "delete" in str(info.value)


def test_bgflow_theta_round_trip_is_not_range_checked():
    # refimpl.vectors names gradients by putting them in a theta (copy_with): a gradient
    # entry of 150 for neg_log_gammas is not a width; the constructors check widths.
    psi = _bg()
    theta = psi.theta.copy()
    theta[psi.trainable] = 0.0
    theta[4 + psi.shape[0]: 4 + 2 * psi.shape[0]] = 150.0  # header of 4, mus, neg_log_gammas
    assert np.all(psi.copy_with(theta).arrays()["neg_log_gammas"] == 150.0)
    with pytest.raises(ValueError, match="neg_log_gammas"):
        BgflowKernel.from_arrays(**psi.copy_with(theta).arrays())


class _BrokenPotential:
    """A potential whose energy is NaN for some configurations (a user's bug)."""

    n_particles, dim = 4, 2

    def energy(self, x):
        import autograd.numpy as anp
        return anp.sum(x * x, axis=(-2, -1)) * np.nan


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the diverging run overflows on its way
@pytest.mark.parametrize("schedule, data, words", [
    ([Phase(2, w_ml=0.0, w_kl=1.0)], None, ["step 0", "KL loss is not finite", "energy_cut"]),
    ([Phase(2, w_ml=1.0, w_kl=0.0, learning_rate=1e300)], X,
     ["step 1", "ML loss is not finite", "learning_rate"]),
])
def test_a_non_finite_loss_names_its_cause(schedule, data, words):
    with pytest.raises(FloatingPointError) as info:
        train(NVP, data=data, potential=_BrokenPotential(), schedule=schedule, log_every=0,
              batch_size=3)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the diverging run overflows on its way
def test_a_diverged_solve_names_the_training_step_and_what_to_try():
    model = FlowModel(EquivariantFlow(RBFKernel(0.02 * RNG.standard_normal((50, 10))),
                                      n_particles=4, dim=2))
    with pytest.raises(SolverError) as info:
        train(model, data=X, schedule=[Phase(3, learning_rate=1e300)], log_every=0,
              batch_size=3)
    message = str(info.value)
    for word in ["training step", "learning_rate", "energy_cut", "stopped at t"]:
        assert word in message, message
    assert isinstance(info.value.__cause__, SolverError)
    assert info.value.sample == info.value.__cause__.sample


def test_effective_sample_size_of_extreme_weights_warns_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the second weight is exp(-2e308) relative to the first: exactly one sample counts
        assert effective_sample_size([1e308, -1e308]) == 1.0
        assert effective_sample_size([-1e308, 1e308, 1e308]) == 2.0
    # equal weights count fully however large their logarithm (log n is not rounded away)
    assert effective_sample_size([1e20, 1e20]) == 2.0
    assert np.array_equal(normalized_weights([1e20, 1e20, -np.inf]), [0.5, 0.5, 0.0])


def test_demo_runs_with_a_chosen_or_no_throughput_test(capsys):
    assert main(["demo", "-n", "2", "--throughput", "3"]) == 0
    assert "throughput: 3 exact-likelihood samples" in capsys.readouterr().out
    assert main(["demo", "-n", "1", "--throughput", "0"]) == 0
    assert "throughput" not in capsys.readouterr().out


def test_demo_default_throughput_test_stops_at_its_sample_cap(monkeypatch):
    from refimpl import cli

    drawn = []
    fake = type("Flow", (), {"sample": lambda self, n, rng: drawn.append(n)})()
    monkeypatch.setattr(cli, "DEMO_THROUGHPUT_SECONDS", float("inf"))
    done, _ = cli._throughput(fake, None)
    assert done == sum(drawn) == cli.DEMO_THROUGHPUT_MAX
    assert drawn[:4] == [1, 2, 4, 8]  # doubling batches


def test_times_beyond_max_coordinate_are_refused_by_name():
    """Hypothesis found NaN: TanhMLP's a r + c t with a r = +inf and c t = -inf
    (r ~ 1e293, t = -1e273, a = c = 1e100). Times are bounded like coordinates."""
    mlp = TanhMLP(8, a=np.full(8, 1e100), c=np.full(8, 1e100), b=np.ones(8),
                  v=np.ones(8), v0=0.0)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    for call in (lambda: mlp.values(np.array([1.3e293]), -1e273),
                 lambda: vector_field(x, 1e151, mlp),
                 lambda: EquivariantFlow(mlp, t1=2e150)):
        with pytest.raises(ValueError, match="out of range"):
            call()
    value, slope = mlp.values(np.array([1.3e293]), -1e150)
    assert np.isfinite(value[0]) and np.isfinite(slope[0])
