"""The lockstep solve of several samples (refimpl._lockstep) against the solve of
one sample (ode.make_solver): every output bitwise equal, row by row."""

import numba
import numpy as np
import pytest
from numba import njit

import refimpl
from refimpl import _kernels, ode, rbf
from refimpl._lockstep import make_lockstep_solver
from refimpl.tableau import N_STAGES


def _psi(seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    probe = refimpl.RBFKernel(**kwargs)
    return refimpl.RBFKernel(0.5 * rng.standard_normal(probe.shape), **kwargs)


def _scratch(psi, rows):
    size = rbf.window_work_size(psi.theta)
    works = np.empty((rows, size))
    for b in range(rows):
        rbf.window_setup(psi.theta, works[b])
    return works


def _outputs(rows, n, steps):
    return (np.full((rows, n), np.nan), np.full((rows, 3), -1, dtype=np.int64),
            np.full(rows, -1, dtype=np.int64), np.full(rows, np.nan),
            np.full((rows, steps), np.nan), np.full((rows, steps, N_STAGES, n), np.nan))


def _alone(psi, K, D, t0, t1, Y0, rtol, max_steps, steps):
    """Each row by the one-sample solve."""
    Y, stats, status, t_end, times, states = _outputs(*Y0.shape[:1], Y0.shape[1], steps)
    works = _scratch(psi, 1)
    for b in range(Y0.shape[0]):
        code, t_reached = _kernels._solve_window(
            (_kernels._window_field.address, psi.theta, works[0], K, D), t0, t1, Y0[b], rtol, rtol,
            max_steps, Y[b], stats[b],
            times[b], states[b])
        status[b] = code
        t_end[b] = t_reached
    return Y, stats, status, t_end, times, states


def _lockstep(psi, K, D, t0, t1, Y0, rtol, max_steps, steps):
    """All rows side by side."""
    out = _outputs(*Y0.shape[:1], Y0.shape[1], steps)
    p = (_kernels._window_rows_field.address, psi.theta, _scratch(psi, Y0.shape[0]), K, D,
         np.empty(Y0.shape[0]))
    _kernels._solve_window_lockstep(p, t0, t1, Y0, rtol, rtol, max_steps, *out)
    return out


def _assert_same(got, want):
    """Equal to the bit (NaN where NaN, the sign of a zero)."""
    for name, a, b in zip(("Y", "stats", "status", "t_end", "times", "states"), got, want):
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), name


@pytest.mark.parametrize("K, D", [(2, 3), (3, 2), (4, 2), (5, 3), (8, 1)])
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0)])
def test_lockstep_is_bitwise_the_solve_of_each_sample_alone(K, D, t0, t1):
    """Samples of several sizes side by side, forwards and backwards: states,
    counts, status codes, end times and the recorded steps all equal (the
    recording cut off for the longer solves)."""
    psi = _psi(K)
    rng = np.random.default_rng(K * 10 + D)
    z = rng.standard_normal((11, K, D)) * rng.uniform(0.3, 3.0, (11, 1, 1))
    Y0 = np.concatenate([(z - z.mean(axis=1, keepdims=True)).reshape(11, K * D),
                         rng.standard_normal((11, 1))], axis=1)
    args = (psi, K, D, t0, t1, Y0, 1e-6, 10_000, 9)
    got = _lockstep(*args)
    _assert_same(got, _alone(*args))
    assert np.all(got[2] == ode.SUCCESS)
    assert len(set(got[1][:, ode.NFEV])) > 1, "the samples should take different steps"


def test_samples_that_end_early_drop_out_and_the_rest_go_on():
    """A sample with a non-finite start, samples stopped by max_steps and samples
    that finish, in one group: each ends as it would alone."""
    psi = _psi(1)
    K, D = 4, 2
    rng = np.random.default_rng(5)
    Y0 = np.concatenate([4.0 * rng.standard_normal((10, K * D)), np.zeros((10, 1))], axis=1)
    Y0[3, 2] = np.inf
    Y0[6, 0] = np.nan
    alone = _alone(psi, K, D, 0.0, 1.0, Y0, 1e-9, 1_000, 40)
    steps = alone[1][:, ode.NACCEPT] + alone[1][:, ode.NREJECT]
    max_steps = int(np.median(steps[np.isfinite(Y0).all(axis=1)]))
    args = (psi, K, D, 0.0, 1.0, Y0, 1e-9, max_steps, 40)
    got, want = _lockstep(*args), _alone(*args)
    _assert_same(got, want)
    assert set(got[2]) == {ode.SUCCESS, ode.MAX_STEPS_EXCEEDED, ode.NOT_FINITE}


def _lockstep_batch():
    """A DW4 batch that the flow solves in lockstep groups: every thread gets
    a whole group and a part of one (``solve_flow_batch``'s rule)."""
    group = _kernels.lockstep_group(4)
    assert group > 1
    return numba.get_num_threads() * group + group // 2 + 1


def _grid_two_centres_off():
    mu = np.linspace(0.0, 8.0, 50)
    for k in (5, 20):
        mu[k] = np.nextafter(mu[k], np.inf)
    return mu


@pytest.mark.parametrize("mu", [None, _grid_two_centres_off()])
def test_batched_flow_runs_in_lockstep_groups_and_matches_each_sample_alone(mu):
    """Through EquivariantFlow: DW4 samples in a batch (groups of
    ``lockstep_group(4)``, split over threads) equal the same samples alone;
    also for a grid whose centres the window kernel looks up (not
    ``k spacing + mu_0`` at more than one centre), which the multi-sample
    kernel cannot evaluate and ``solve_flow_batch`` solves one by one."""
    kwargs = {} if mu is None else {"mu": mu}
    psi = _psi(2, **kwargs)
    looks_up = _kernels._looks_up_centres(psi.theta, rbf.window_work_size(psi.theta))
    assert looks_up == (mu is not None)
    flow = refimpl.EquivariantFlow(psi, rtol=1e-7, atol=1e-7, n_particles=4, dim=2)
    n = _lockstep_batch()
    z = refimpl.MeanFreeNormal(4, 2).sample(n, 3)
    x, logdet = flow.forward(z)
    for i in (0, 9, 10, n - 1):
        x_i, logdet_i = flow.forward(z[i:i + 1])
        assert x_i[0].tobytes() == x[i].tobytes() and logdet_i[0] == logdet[i]


@njit
def _blow_up(t, y, out):
    # y_1 = t^5 / 5 is exact at fifth order; once t passes 105, f_0 is 1e308 where
    # y_1 is (nearly) exact, so only at the first-same-as-last stage
    out[1] = t * t * t * t
    exact = t * t * t * t * t / 5.0
    out[0] = 1e308 if (t > 105.0 and abs(y[1] - exact) < 1e-9 * exact) else 0.0


@njit
def _blow_up_rhs(t, y, out, p):
    _blow_up(t, y, out)


@njit
def _blow_up_rows(T, X, rows, n_rows, F, p):
    for q in range(n_rows):
        _blow_up(T[rows[q]], X[rows[q]], F[rows[q]])


def test_an_overflowing_error_norm_ends_both_solves_alike():
    """With finite states the error norm can still be NaN (an estimate and a
    scale that both overflow: rtol = 1e300); both solves end there, alike."""
    y0 = np.array([[1e10, 0.0]])
    settings = (0.0, 1e6, y0, 1e300, 1.0, 200)
    want = _outputs(1, 2, 4)
    code, t_end = ode.make_solver(_blow_up_rhs).solve((), *settings[:2], y0[0], *settings[3:],
                                                      want[0][0], want[1][0], want[4][0],
                                                      want[5][0])
    want[2][0], want[3][0] = code, t_end
    got = _outputs(1, 2, 4)
    make_lockstep_solver(_blow_up_rows)((), *settings, *got)
    assert got[2][0] == ode.NOT_FINITE
    _assert_same(got, want)


@pytest.mark.parametrize("t1, max_steps", [(0.0, 100), (1.0, 0), (1.0, 1), (-1e-300, 100)])
def test_lockstep_edge_cases_end_as_alone(t1, max_steps):
    """No interval, no step allowed, one step allowed, an interval below the
    spacing of the floats: the same ends as the solve of each sample alone."""
    psi = _psi(3)
    rng = np.random.default_rng(9)
    Y0 = np.concatenate([rng.standard_normal((7, 8)), np.zeros((7, 1))], axis=1)
    args = (psi, 4, 2, 0.0, t1, Y0, 1e-6, max_steps, 4)
    _assert_same(_lockstep(*args), _alone(*args))
