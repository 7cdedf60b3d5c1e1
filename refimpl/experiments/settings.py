"""Settings of the paper's experiments, with the reasons for each default.

The paper (section 4) gives the system but not the numerical settings; the
choices here are ours, made once, before looking at the NLLs, to keep the
whole reproduction within minutes on a 2-core laptop:

* **System**: ``DoubleWell(4, 2)`` with the paper's ``a = 0, b = -4, c = 0.9,
  d0 = 4``, ordered pairs, ``T = 1``.
* **Data (Experiment 1)**: one Metropolis--Hastings trajectory from a random
  start ``1.5 N(0, I)``, Gaussian proposals of standard deviation 0.2 on all
  coordinates (about 17 % accepted at ``T = 1``), 40 000 steps, every 20th
  state kept (2 000 samples), centre of mass removed. It is "short and out of
  equilibrium": it relaxes from the random start into one metastable
  structure and, during the run, slowly rotates as a whole; no particle
  exchange happens, so the second half shows the same structure in new
  orientations. The first half trains, the second half tests.
* **Training set (Experiment 2)**: the lowest local minimum found by
  minimizing 60 random starts ``3 N(0, I)`` (wide enough that starts fall
  into every basin the double well's pair distances allow), plus Gaussian
  noise of standard deviation 0.05, 1 000 samples. The distinct minima of
  those 60 starts are reported too, as the landscape the samples are compared
  with.
* **Models**: eqBG = ``EquivariantFlow`` with a 50 x 10 ``RBFKernel`` (zero
  initial weights, i.e. the identity), rtol = atol = 1e-5; nBG = ``RealNVP``
  with 4 affine couplings of 64-64 tanh MLPs on the same mean-free subspace
  coordinates (so both NLLs are normalized on the same reference measure).
* **Training** (both models, same schedule, Adam, batch 64): 300 ML steps at
  learning rate 5e-3, then 200 steps of ``ML + 0.1 KL`` at 1e-3 (the
  weighted sum of the paper's fine-tuning). In the KL term energies above
  100 kT are softened logarithmically (``refimpl.train.linlog_cut``, the
  regularization of the original Boltzmann-generator paper): without it the
  first full run's nBG fine-tuning in Experiment 2 diverged (loss 8 -> 22,
  KL 180; with the learning rate lowered to 2e-4 it still did, KL 4331),
  because a single sample flung far away has a quartic energy of ~1e9.
* **Random streams**: every random number derives from ``seed``; each use
  has its own generator ``default_rng(seed + STREAMS[use])`` (``Settings.rng``),
  so changing how many numbers one use draws leaves the others unchanged.
  Training draws from ``default_rng(seed)`` inside ``refimpl.train.train``.
"""

import dataclasses

import numpy as np

# Offsets of the random streams from ``Settings.seed`` (see the docstring).
# Experiment 1 and Experiment 2 are separate runs, so they may share offsets.
STREAMS = {
    "nvp_init": 0,            # both: the RealNVP's initial weights
    "mcmc": 0,          # Experiment 1: the trajectory's start and proposals
    "exp1_samples": 1,        # Experiment 1: samples for the ESS and the figure
    "random_starts": 0,       # Experiment 2: starts of the landscape minimization
    "training_noise": 2,      # Experiment 2: noise added to the training state
    "exp2_samples": 3,        # Experiment 2: samples that are minimized
}


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 0
    # system
    n_particles: int = 4
    dim: int = 2
    temperature: float = 1.0
    # experiment 1 data
    mcmc_start_scale: float = 1.5
    mcmc_steps: int = 40_000
    mcmc_step_size: float = 0.2
    mcmc_thin: int = 20
    # experiment 2 data
    n_random_starts: int = 60
    random_start_scale: float = 3.0
    noise: float = 0.05
    n_training_states: int = 1_000
    # models
    rtol: float = 1e-5
    atol: float = 1e-5
    rbf_shape: tuple = (50, 10)
    nvp_layers: int = 4
    nvp_hidden: tuple = (64, 64)
    # training
    batch_size: int = 64
    ml_steps: int = 300
    ml_learning_rate: float = 5e-3
    mixed_steps: int = 200
    mixed_kl_weight: float = 0.1
    mixed_learning_rate: float = 1e-3
    energy_cut: float = 100.0
    # evaluation
    n_samples: int = 1_000
    n_minimized: int = 200
    structure_tol: float = 1e-3

    def rng(self, stream):
        """A fresh generator for one use of random numbers (``STREAMS``)."""
        return np.random.default_rng(self.seed + STREAMS[stream])

    def quick(self):
        """A small version for CI and a first look: same code, fewer steps."""
        return dataclasses.replace(self, mcmc_steps=8_000, n_random_starts=12,
                                   n_training_states=200, ml_steps=30, mixed_steps=20,
                                   n_samples=200, n_minimized=24, nvp_hidden=(32, 32))


@dataclasses.dataclass(frozen=True)
class FigureSettings:
    """What Figure 1 shows and at which resolution (no effect on any number).

    Energy histograms (panels a, c) span the MCMC data's central 99 % widened
    by the margins, so the data's peak and the models' tails both show;
    samples above the range land in the last bin. Positions (b, d, f-h) are
    shown in ``[-position_limit, position_limit]^2``, which holds every
    particle of DW4's minima (largest pair distance ~5.7). Panel e draws the
    pair energy over distances around both pair minima (2.51 and 5.49).
    """

    energy_percentiles: tuple = (0.5, 99.5)
    energy_margins: tuple = (5.0, 25.0)
    energy_bins: int = 60
    position_limit: float = 5.0
    position_bins: int = 40
    pair_distance_range: tuple = (1.0, 7.0)
    pair_energy_limits: tuple = (-12.0, 20.0)
    size_inches: tuple = (15.0, 9.0)
    dpi: int = 110


PAPER_TABLE_1 = {"nBG": {"train": -12.64, "test": 372.69}, "eqBG": {"train": 5.91, "test": 6.72}}
