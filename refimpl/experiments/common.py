"""What both experiments share: the system, the two models, their training."""

import dataclasses
import hashlib
import json
import sys
import time

import numpy as np

from ..flow import EquivariantFlow
from .._version import __version__
from ..grad import FlowModel
from ..potentials import DoubleWell
from ..rbf import RBFKernel
from ..realnvp import RealNVP
from ..reweight import effective_sample_size, log_weights
from ..train import Phase, train


def system(settings):
    """The paper's DW4 energy (section 4: ``DoubleWell``'s defaults, ordered pairs)."""
    return DoubleWell(settings.n_particles, settings.dim, temperature=settings.temperature)


def make_models(settings):
    """``{"nBG": RealNVP, "eqBG": FlowModel}``, both untrained (identity maps)."""
    k, d = settings.n_particles, settings.dim
    flow = EquivariantFlow(RBFKernel(n_distance=settings.rbf_shape[0],
                                     n_time=settings.rbf_shape[1]),
                           rtol=settings.rtol, atol=settings.atol, n_particles=k, dim=d)
    nvp = RealNVP(k, d, n_layers=settings.nvp_layers, hidden=settings.nvp_hidden,
                  rng=settings.rng("nvp_init"))
    return {"nBG": nvp, "eqBG": FlowModel(flow)}


def schedule(settings):
    """ML first, then the weighted ML + KL fine-tuning."""
    return [Phase(settings.ml_steps, 1.0, 0.0, settings.ml_learning_rate),
            Phase(settings.mixed_steps, 1.0, settings.mixed_kl_weight,
                  settings.mixed_learning_rate)]


def train_both(settings, data, potential, label, checkpoint_dir=None, log=sys.stderr):
    """Train nBG and eqBG on ``data`` with the same schedule and seed.

    Returns ``{name: (model, params, seconds, history)}``.
    """
    out = {}
    for name, model in make_models(settings).items():
        print(f"[{label}] training {name} ({np.size(model.params)} parameters)", file=log,
              flush=True)
        checkpoint = None if checkpoint_dir is None else \
            checkpoint_dir / f"{label}_{name}_{settings_tag(settings)}.ckpt.npz"
        start = time.perf_counter()
        total = settings.ml_steps + settings.mixed_steps
        state = train(model, data=data, potential=potential, schedule=schedule(settings),
                      batch_size=settings.batch_size, seed=settings.seed, checkpoint=checkpoint,
                      checkpoint_every=100, resume=True, log_every=max(total // 5, 1), log=log,
                      energy_cut=settings.energy_cut)
        out[name] = (model, state.params, time.perf_counter() - start, state.history)
    return out


def settings_tag(settings):
    """A short hash of the settings and refimpl's version: a checkpoint is
    resumed only by the same run of the same code."""
    text = json.dumps({"settings": dataclasses.asdict(settings), "refimpl": __version__},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sample_summary(model, params, potential, n, rng):
    """Samples of a trained model, their energies, log-densities and the ESS."""
    x, log_q = model.sample(params, n, rng)
    x, log_q = np.asarray(x), np.asarray(log_q)
    energy = potential.energy(x)
    ess = effective_sample_size(log_weights(energy, log_q))
    return {"x": x, "log_q": log_q, "energy": energy, "ess": float(ess)}
