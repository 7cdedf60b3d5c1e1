"""Metropolis-Hastings: exact moments of tiny targets, reproducibility, chain independence.

The statistical tests run C independent chains (fixed seeds) and treat the
per-chain averages as C independent estimates, so their spread gives a
standard error that accounts for the autocorrelation within a chain. A test
passes when the grand average is within ``Z_MAX`` standard errors of the
exact value, and it also asserts that the standard error is small enough for
the comparison to have power (a wrong target would be caught).
"""

import math

import numpy as np
import pytest
from numba import njit
from scipy import integrate

from refimpl import mcmc
from refimpl.mcmc import MCMCResult, metropolis_hastings
from refimpl.potentials import ENERGY_SIG, DoubleWell, LennardJones

# |estimate - exact| / SE: a normal deviate beyond 4 has probability 6e-5.
Z_MAX = 4.0
# Recorded energies vs the NumPy energy of the recorded samples: rounding of
# a sum of ~10 terms of size ~50.
ENERGY_ATOL = 1e-10


# --- tiny test potentials through the Numba energy protocol -------------------

@njit(ENERGY_SIG, cache=True)
def _quartic_wells(params, x, n_particles, dim):
    """Every coordinate in its own double well h (x^2 - 1)^2."""
    total = 0.0
    for k in range(n_particles * dim):
        total += params[0] * (x[k] * x[k] - 1.0) ** 2
    return total


@njit(ENERGY_SIG, cache=True)
def _gaussian(params, x, n_particles, dim):
    """(x - m)^T P (x - m) / 2 for two coordinates; params = [m0, m1, P00, P01, P11]."""
    y0 = x[0] - params[0]
    y1 = x[1] - params[1]
    return 0.5 * (params[2] * y0 * y0 + 2.0 * params[3] * y0 * y1 + params[4] * y1 * y1)


@njit(cache=True)
def _untyped(params, x, n_particles, dim):
    return 0.0


class KernelPotential:
    """A potential that is nothing but its Numba energy."""

    def __init__(self, kernel, params):
        self.numba_energy = (kernel, np.asarray(params, dtype=np.float64))


WELL_HEIGHT = 2.0
WELLS = KernelPotential(_quartic_wells, [WELL_HEIGHT])
MEAN = np.array([1.0, -0.5])
COVARIANCE = np.array([[1.0, 0.6], [0.6, 0.5]])
PRECISION = np.linalg.inv(COVARIANCE)
GAUSSIAN = KernelPotential(_gaussian, [*MEAN, PRECISION[0, 0], PRECISION[0, 1], PRECISION[1, 1]])


def _chain_estimates(samples, burn_in, statistic):
    """``statistic`` averaged over each chain after burn-in: (C, ...) independent estimates."""
    kept = samples[burn_in:]
    return np.stack([statistic(kept[:, c]).mean(axis=0) for c in range(kept.shape[1])])


def _assert_within_standard_errors(estimates, exact, max_se, what):
    mean = estimates.mean(axis=0)
    se = estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates))
    assert np.all(se < max_se), f"{what}: standard error {se} too large for the test to have power"
    z = np.abs(mean - exact) / se
    assert np.all(z < Z_MAX), f"{what}: estimate {mean}, exact {exact}, SE {se}, z = {z}"


def test_double_well_coordinates_have_the_exact_mean_and_second_moment():
    weight = lambda x: math.exp(-WELL_HEIGHT * (x * x - 1.0) ** 2)  # noqa: E731
    norm = integrate.quad(weight, -np.inf, np.inf)[0]
    second = integrate.quad(lambda x: x * x * weight(x), -np.inf, np.inf)[0] / norm
    rng = np.random.default_rng(11)
    x0 = rng.choice([-1.0, 1.0], size=(16, 2, 1))
    result = metropolis_hastings(WELLS, x0, 20_000, 0.8, rng)
    x = result.samples[..., 0]  # (n, C, 2); a chain's two coordinates share accept decisions
    # one estimate per chain (averaged over its coordinates); the mean needs
    # hops between the wells, and the SE bound checks there were enough
    _assert_within_standard_errors(_chain_estimates(x, 2000, lambda y: y.mean(-1)), 0.0, 0.05,
                                   "mean")
    _assert_within_standard_errors(_chain_estimates(x, 2000, lambda y: (y * y).mean(-1)),
                                   second, 0.01, "second moment")


def test_gaussian_mean_and_covariance_are_exact():
    rng = np.random.default_rng(12)
    x0 = np.zeros((24, 2, 1))
    result = metropolis_hastings(GAUSSIAN, x0, 10_000, 1.0, rng)
    x = result.samples[..., 0]  # (n, C, 2)
    _assert_within_standard_errors(_chain_estimates(x, 1000, lambda y: y), MEAN, 0.02, "mean")
    y = x - MEAN
    outer = lambda y: np.stack([y[:, 0] ** 2, y[:, 0] * y[:, 1], y[:, 1] ** 2], -1)  # noqa: E731
    exact = COVARIANCE[[0, 0, 1], [0, 1, 1]]
    _assert_within_standard_errors(_chain_estimates(y, 1000, outer), exact, 0.02, "covariance")


def test_acceptance_rate_lies_in_0_1_and_decreases_with_step_size():
    x0 = np.zeros((4, 2, 1))
    rates = [metropolis_hastings(GAUSSIAN, x0, 5000, h, 3).acceptance_rate
             for h in (0.05, 0.3, 1.0, 3.0, 10.0)]
    assert all(0.0 < r < 1.0 for r in rates), rates
    assert all(a > b for a, b in zip(rates, rates[1:])), rates


def _dw4_start():
    square = 2.5 * np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return square - square.mean(axis=0)


def _assert_same_result(a, b):
    for field in ("samples", "energies", "chain_acceptance_rates", "final_state"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.acceptance_rate == b.acceptance_rate


def test_same_seed_gives_identical_results():
    dw = DoubleWell(4, 2)
    run = lambda rng: metropolis_hastings(dw, _dw4_start(), 500, 0.2, rng, thin=3)  # noqa: E731
    _assert_same_result(run(5), run(5))
    _assert_same_result(run(np.random.default_rng(5)), run(np.random.default_rng(5)))
    assert not np.array_equal(run(5).samples, run(6).samples)


def test_a_chain_does_not_depend_on_the_other_chains_of_the_batch():
    dw = DoubleWell(4, 2, temperature=2.0)
    start = _dw4_start()
    others = np.random.default_rng(0).standard_normal((2, 3, 4, 2))
    batch_a = metropolis_hastings(dw, np.concatenate([start[None], others[0]]), 400, 0.3, 9)
    batch_b = metropolis_hastings(dw, np.concatenate([start[None], others[1]]), 400, 0.3, 9)
    alone = metropolis_hastings(dw, start, 400, 0.3, 9)
    np.testing.assert_array_equal(batch_a.samples[:, 0], batch_b.samples[:, 0])
    np.testing.assert_array_equal(batch_a.samples[:, 0], alone.samples)
    np.testing.assert_array_equal(batch_a.energies[:, 0], alone.energies)
    assert batch_a.chain_acceptance_rates[0] == alone.chain_acceptance_rates
    # ...and the chains do differ from each other
    assert not np.array_equal(batch_a.samples[:, 1], batch_a.samples[:, 2])


def test_random_number_block_size_does_not_change_the_result(monkeypatch):
    dw = DoubleWell(4, 2)
    x0 = np.stack([_dw4_start(), _dw4_start() + 1.0])
    default = metropolis_hastings(dw, x0, 300, 0.2, 4, thin=2)
    monkeypatch.setattr(mcmc, "RANDOM_BLOCK_NUMBERS", 7)  # a block of one step at a time
    _assert_same_result(default, metropolis_hastings(dw, x0, 300, 0.2, 4, thin=2))


def test_thinning_keeps_every_thin_th_state_of_the_same_chain():
    dw = DoubleWell(4, 2)
    full = metropolis_hastings(dw, _dw4_start(), 100, 0.2, 8)
    thinned = metropolis_hastings(dw, _dw4_start(), 100, 0.2, 8, thin=7)
    assert thinned.samples.shape == (14, 4, 2) and thinned.energies.shape == (14,)
    np.testing.assert_array_equal(thinned.samples, full.samples[6::7])
    np.testing.assert_array_equal(thinned.energies, full.energies[6::7])
    np.testing.assert_array_equal(thinned.final_state, full.final_state)


@pytest.mark.parametrize("pot", [DoubleWell(4, 2), LennardJones(4, 2, tether=0.5)],
                         ids=["dw4", "lj4"])
def test_recorded_energies_are_the_energies_of_the_samples(pot):
    x0 = np.stack([_dw4_start() * s for s in (0.45, 0.5)])
    result = metropolis_hastings(pot, x0, 2000, 0.05, 2, thin=10)
    assert isinstance(result, MCMCResult)
    assert result.samples.shape == (200, 2, 4, 2) and result.energies.shape == (200, 2)
    assert result.chain_acceptance_rates.shape == (2,)
    assert 0.0 < result.acceptance_rate < 1.0
    np.testing.assert_allclose(result.energies, pot.energy(result.samples), rtol=0,
                               atol=ENERGY_ATOL)


def test_mean_free_samples_are_the_raw_samples_minus_their_centre():
    dw = DoubleWell(4, 2)
    x0 = _dw4_start() + np.array([3.0, -1.0])
    raw = metropolis_hastings(dw, x0, 1000, 0.3, 21)
    free = metropolis_hastings(dw, x0, 1000, 0.3, 21, mean_free=True)
    np.testing.assert_array_equal(free.samples, raw.samples - raw.samples.mean(axis=-2,
                                                                               keepdims=True))
    assert np.max(np.abs(free.samples.mean(axis=-2))) < 1e-14
    np.testing.assert_array_equal(free.energies, raw.energies)
    np.testing.assert_allclose(dw.energy(free.samples), free.energies, atol=ENERGY_ATOL)
    np.testing.assert_array_equal(free.final_state, raw.final_state)  # not projected
    assert np.max(np.abs(raw.samples.mean(axis=-2) - [3.0, -1.0])) > 0.1, "the centre wanders"


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(potential=object()), TypeError, "numba_energy"),
    (dict(potential=KernelPotential(_untyped, [0.0])), TypeError, "ENERGY_SIG"),
    (dict(potential=KernelPotential(_quartic_wells, [np.nan])), ValueError, "params"),
    (dict(x0=np.zeros((2, 2, 4, 2))), ValueError, r"\(C, K, D\)"),
    (dict(x0=np.zeros(8)), ValueError, "shape"),
    (dict(x0=np.zeros((3, 2))), ValueError, "K = 4"),
    (dict(x0=np.full((4, 2), np.nan)), ValueError, "NaN"),
    (dict(n_steps=0), ValueError, "n_steps"),
    (dict(n_steps=10.0), TypeError, "n_steps"),
    (dict(step_size=0.0), ValueError, "step_size"),
    (dict(step_size=-0.1), ValueError, "step_size"),
    (dict(thin=11), ValueError, "keeps no samples"),
    (dict(rng="seed"), TypeError, "rng"),
    (dict(mean_free="yes"), TypeError, "mean_free"),
    (dict(potential=LennardJones(4, 2), x0=np.zeros((4, 2))), ValueError, "chain 0"),
])
def test_bad_inputs_raise(kwargs, exc, match):
    args = dict(potential=DoubleWell(4, 2), x0=_dw4_start(), n_steps=10, step_size=0.1, rng=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        metropolis_hastings(**args)


def test_an_empty_batch_of_chains_is_refused():
    from refimpl.potentials import DoubleWell
    with pytest.raises(ValueError, match="at least one chain"):
        metropolis_hastings(DoubleWell(4, 2), np.zeros((0, 4, 2)), 10, 0.1, 0)
