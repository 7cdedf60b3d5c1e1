"""refimpl: reference implementation of equivariant continuous normalizing flows.

Köhler, Klein, Noé, "Equivariant Flows: sampling configurations for
multi-body systems with symmetric energies". The math, with the paper's errata
fixed, is in the README; the public names are listed in ``__all__``.
"""

from .flow import EquivariantFlow, SolverError, SolverStats, divergence, vector_field
from .prior import MeanFreeNormal, remove_mean
from .mlp import TanhMLP
from .psi import PAIR_SIG, PREPARE_SIG, Psi
from .rbf import RBFKernel

__all__ = [
    "EquivariantFlow", "SolverError", "SolverStats", "divergence", "vector_field",
    "MeanFreeNormal", "remove_mean",
    "Psi", "RBFKernel", "TanhMLP", "PREPARE_SIG", "PAIR_SIG",
]
__version__ = "0.1.0"
