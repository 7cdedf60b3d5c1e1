"""Random-walk Metropolis-Hastings for any potential with a Numba energy.

One step from the state ``x`` (all ``K D`` coordinates at once):

.. math::
    x' = x + h\\, \\xi, \\quad \\xi \\sim N(0, I), \\qquad
    \\text{accept if } \\log U < -(\\beta u(x') - \\beta u(x)),
    \\quad U \\sim \\mathrm{Uniform}(0, 1),

with ``beta u`` the reduced energy of the potential (``refimpl.potentials``:
``numba_energy``). The Gaussian proposal is symmetric, so this targets
``exp(-beta u(x))``. A proposal whose energy is ``+inf`` or ``NaN`` is
rejected.

Random numbers and reproducibility
----------------------------------
The Python function draws every random number; the ``@njit(cache=True)``
kernel only loops. Chain ``c`` uses its own two streams,
``rng.spawn(C)[c].spawn(2)``: proposals ``xi`` from the first
(``standard_normal``, ``K D`` per step, row-major), ``log U = -E`` with
``E`` from the second (``standard_exponential``, one per step). Hence

- the result is a deterministic function of the seed;
- a chain's trajectory does not depend on the other chains of the batch (a
  single chain equals chain 0 of a batch with the same seed);
- the numbers are drawn in blocks of at most ``RANDOM_BLOCK_NUMBERS`` to bound
  memory, and because NumPy's streams are the same however they are chunked,
  the block size does not change any result.

Translations and ``mean_free``
------------------------------
Proposing all coordinates makes the centre of mass ``mu(x)`` a random walk
when the energy is translation-invariant (it never feels a restoring force),
so raw samples drift. ``mean_free=True`` returns ``x - mu(x)`` instead. For a
translation-invariant energy this is *exactly* random-walk MH on the
mean-free subspace (the density refimpl's flows model) with proposals
``h P xi``, ``P`` the projection, i.e. mean-free Gaussian steps of scale
``h``: energies and accept decisions do not see ``mu``. For an energy that is
not translation-invariant the projection has no such meaning; use the default.

The paper's DW4 data ("short, out-of-equilibrium" trajectories)
---------------------------------------------------------------
The paper (section 4.1) trains on the first half of one Metropolis-Hastings
trajectory and tests on the second half, and states neither the starting
state, step size, length nor thinning. This function does not choose them:
start one chain (``x0`` of shape ``(K, D)``) at a chosen state, e.g. a local
minimum configuration, run it for far fewer steps than it needs to visit the
permutation- and rotation-equivalent copies of its states, split the
``samples`` in *time* (not at random), and pass ``mean_free=True`` so the data
live where the flows' densities do. Record ``step_size``, ``n_steps``,
``thin`` and the seed with any data set; ``acceptance_rate`` helps choose
``step_size``.
"""

from dataclasses import dataclass

import numpy as np
from numba import types

from ._kernels import compile_on_first_call
from ._validate import (as_configurations, as_generator, as_positive_float, as_positive_int,
                        memory_for)
from .potentials import ENERGY_TYPE, check_numba_energy

# At most this many random numbers (8 bytes each) are held at once: 32 MB.
RANDOM_BLOCK_NUMBERS = 1 << 22

_vec = types.float64[::1]
_mat = types.float64[:, ::1]
_arr3 = types.float64[:, :, ::1]


@compile_on_first_call(types.void(ENERGY_TYPE, _vec, types.int64, types.int64, types.float64,
                                  types.int64, types.int64, _mat, _vec, _arr3, _mat, _arr3, _mat,
                                  types.int64[::1]), cache=True)
def _random_walk(energy, params, n_particles, dim, step_size, thin, step0,
                 x, u, xi, log_u, samples, energies, accepted):
    """Advance every chain ``c`` by ``xi.shape[1]`` steps, in place.

    ``x (C, KD)`` and ``u (C,)`` hold the current states and reduced energies;
    ``step0`` is the number of steps done before this block. The state after
    global step ``s`` (1-based) is stored at row ``s / thin - 1`` of
    ``samples (n_kept, C, KD)`` and ``energies (n_kept, C)`` when ``thin``
    divides ``s``.
    """
    n_chains, n_block, n_coords = xi.shape
    proposal = np.empty(n_coords)
    for c in range(n_chains):
        for s in range(n_block):
            for k in range(n_coords):
                proposal[k] = x[c, k] + step_size * xi[c, s, k]
            u_new = energy(params, proposal, n_particles, dim)
            if log_u[c, s] < u[c] - u_new:  # False for u_new = +inf or NaN: rejected
                for k in range(n_coords):
                    x[c, k] = proposal[k]
                u[c] = u_new
                accepted[c] += 1
            step = step0 + s + 1
            if step % thin == 0:
                row = step // thin - 1
                for k in range(n_coords):
                    samples[row, c, k] = x[c, k]
                energies[row, c] = u[c]


@dataclass(frozen=True)
class MCMCResult:
    """What ``metropolis_hastings`` returns. ``[C]`` is absent for a single chain.

    Attributes
    ----------
    samples : ndarray, shape (n_kept, [C,] K, D)
        The states after steps ``thin, 2 thin, ..., n_kept thin`` (the start
        is not included); mean-free if requested.
    energies : ndarray, shape (n_kept, [C])
        Their reduced energies ``beta u``.
    acceptance_rate : float
        Accepted / proposed moves, over all chains.
    chain_acceptance_rates : ndarray, shape ([C])
        The same per chain.
    final_state : ndarray, shape ([C,] K, D)
        The state after the last step, not projected: pass it as ``x0`` (with
        a fresh ``rng``) to continue the chains.
    n_steps, thin : int
    step_size : float
    """

    samples: np.ndarray
    energies: np.ndarray
    acceptance_rate: float
    chain_acceptance_rates: np.ndarray
    final_state: np.ndarray
    n_steps: int
    thin: int
    step_size: float


def metropolis_hastings(potential, x0, n_steps, step_size, rng, thin=1, mean_free=False):
    """Random-walk Metropolis-Hastings with isotropic Gaussian proposals.

    Parameters
    ----------
    potential : object
        Follows the Numba energy protocol (``refimpl.potentials``), e.g.
        ``refimpl.DoubleWell``; its ``n_particles``/``dim``, if present, must
        match ``x0``.
    x0 : array_like, shape (K, D) or (C, K, D)
        Start of one chain, or of ``C`` independent chains. Its energies
        must be finite.
    n_steps : int
        Proposals per chain.
    step_size : float
        ``h > 0``, the standard deviation of each proposed coordinate move.
    rng : numpy.random.Generator or int
        Source of all randomness (see the module docstring).
    thin : int
        Keep every ``thin``-th state; ``n_kept = n_steps // thin >= 1``.
    mean_free : bool
        Return samples with the centre of mass removed (see the module
        docstring); only meaningful for translation-invariant energies.

    Returns
    -------
    MCMCResult
    """
    kernel, params = check_numba_energy(potential)
    x0 = as_configurations(x0, "x0", getattr(potential, "n_particles", None),
                           getattr(potential, "dim", None))
    if x0.ndim not in (2, 3):
        raise ValueError(f"x0 must have shape (K, D) or (C, K, D), got {x0.shape}")
    n_steps = as_positive_int(n_steps, "n_steps")
    step_size = as_positive_float(step_size, "step_size")
    thin = as_positive_int(thin, "thin")
    if thin > n_steps:
        raise ValueError(f"thin = {thin} > n_steps = {n_steps} keeps no samples")
    if not isinstance(mean_free, (bool, np.bool_)):
        raise TypeError(f"mean_free must be a bool, got {type(mean_free).__name__}")
    gen = as_generator(rng)

    single = x0.ndim == 2
    chains = x0[None] if single else x0
    n_chains, k, d = chains.shape
    if n_chains == 0:
        raise ValueError(f"x0 has shape {x0.shape}: at least one chain is needed")
    n_coords = k * d
    x = chains.reshape(n_chains, n_coords).copy()  # the chains' states, updated in place
    u = np.empty(n_chains)
    for c in range(n_chains):
        u[c] = kernel(params, x[c], k, d)
    if not np.all(np.isfinite(u)):
        bad = int(np.argmax(~np.isfinite(u)))
        raise ValueError(f"x0 of chain {bad} has non-finite energy {u[bad]}; "
                         "start from a configuration with finite energy")

    streams = [child.spawn(2) for child in gen.spawn(n_chains)]
    n_kept = n_steps // thin
    with memory_for("n_steps // thin", n_kept):
        samples = np.empty((n_kept, n_chains, n_coords))
        energies = np.empty((n_kept, n_chains))
    accepted = np.zeros(n_chains, dtype=np.int64)
    block = max(1, RANDOM_BLOCK_NUMBERS // (n_chains * (n_coords + 1)))
    done = 0
    while done < n_steps:
        m = min(block, n_steps - done)
        xi = np.stack([proposals.standard_normal((m, n_coords)) for proposals, _ in streams])
        log_u = np.stack([-uniforms.standard_exponential(m) for _, uniforms in streams])
        _random_walk(kernel, params, k, d, step_size, thin, done, x, u, xi, log_u,
                     samples, energies, accepted)
        done += m

    samples = samples.reshape(n_kept, n_chains, k, d)
    if mean_free:
        samples = samples - samples.mean(axis=-2, keepdims=True)
    rates = accepted / n_steps
    final = x.reshape(n_chains, k, d)
    if single:
        samples, energies, rates, final = samples[:, 0], energies[:, 0], rates[0], final[0]
    return MCMCResult(samples=samples, energies=energies,
                      acceptance_rate=float(accepted.sum() / (n_steps * n_chains)),
                      chain_acceptance_rates=np.asarray(rates), final_state=final,
                      n_steps=n_steps, thin=thin, step_size=step_size)
