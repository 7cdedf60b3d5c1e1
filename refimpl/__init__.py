"""refimpl: reference implementation of equivariant continuous normalizing flows.

Köhler, Klein, Noé, "Equivariant Flows: sampling configurations for
multi-body systems with symmetric energies". The math, with the paper's errata
fixed, is in the README; the public names are listed in ``__all__``.
Training lives in ``refimpl.train`` (``train``, ``Phase``, the losses),
the paper's experiments in ``refimpl.experiments``, the property-testing
toolkit in ``refimpl.testing`` (needs hypothesis: ``pip install refimpl[testing]``).
"""

from . import ode
from ._version import __version__
from .bgflow_kernel import BgflowKernel
from .flow import (EquivariantFlow, SolverError, SolverStats, divergence, field_and_divergence,
                   vector_field)
from .grad import FlowModel
from .io import load_model, save_model
from .mcmc import MCMCResult, metropolis_hastings
from .mlp import TanhMLP
from .potentials import DoubleWell, LennardJones
from .prior import MeanFreeNormal, helmert_basis, remove_mean
from .psi import PAIR_SIG, PREPARE_SIG, Psi
from .rbf import RBFKernel
from .realnvp import RealNVP
from .reweight import effective_sample_size, log_weights, normalized_weights, reweighted_mean

__all__ = [
    "EquivariantFlow", "SolverError", "SolverStats", "divergence", "field_and_divergence",
    "vector_field",
    "MeanFreeNormal", "remove_mean",
    "Psi", "RBFKernel", "TanhMLP", "BgflowKernel", "PREPARE_SIG", "PAIR_SIG",
    "FlowModel", "RealNVP", "helmert_basis",
    "DoubleWell", "LennardJones", "metropolis_hastings", "MCMCResult",
    "save_model", "load_model",
    "log_weights", "normalized_weights", "effective_sample_size", "reweighted_mean",
]
