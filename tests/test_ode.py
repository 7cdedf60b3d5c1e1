"""The hand-written Dormand--Prince RK45 against independent oracles: exact
tableau identities and scipy's arrays, closed-form solutions, the order of
convergence, ``scipy.integrate.solve_ivp(method="RK45")`` on the flow's
augmented ODE (written again in plain NumPy), and the failure modes.

Why parity is tested twice. The error estimate ``h sum_s E_s k_s`` is a sum
of O(|f|) terms that cancel down to O(h^4) (``sum E = 0`` and more), so its
relative rounding error, about eps |f| / |sum_s E_s k_s|, is large for steps
that are short on the solution's time scale (the first ones), and the next
step size inherits a fifth of it. Stock scipy forms its sums with BLAS
(``np.dot``, ``np.linalg.norm``: other order, FMA) and the NumPy twin rounds
``f`` differently from the Numba kernel, so against stock scipy the step sizes
agree to ~1e-6, not to rounding; the integer counts agree exactly. Given the
same ``f`` values and scipy's controller with left-to-right sums, the step
sequences agree to rounding (in fact bit for bit): the second parity test.
"""

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.integrate._ivp.common as scipy_common
import scipy.integrate._ivp.rk as scipy_rk
from numba import njit
from scipy.integrate import RK45, solve_ivp

import refimpl
from refimpl import ode, tableau
from refimpl._kernels import augmented_rhs, psi_args, scratch

EPS = np.finfo(float).eps

# Both tableaus hold the same fractions rounded to double; allow one unit in the last place.
TABLEAU_MAX_ULP = 1
# A sum of correctly rounded coefficients is off by at most eps/2 per |term|; fsum adds no more.
ROUNDING_PER_TERM = EPS
# b_i c_i^(q-1) adds up to q - 1 <= 4 more roundings per term (largest seen: 0.8 eps per |term|).
QUADRATURE_ROUNDING_PER_TERM = 4 * EPS
# Global error is local errors propagated and summed over the interval, so it may exceed
# the per-step tolerance by a modest factor (largest seen here: 4).
GLOBAL_ERROR_FACTOR = 10.0
# Work caps per rtol: about 1.5x the largest nfev seen on the problems below (regression guard).
NFEV_CAP = {1e-3: 130, 1e-6: 560, 1e-9: 1900}
# Measured order may differ from the nominal 5 by pre-asymptotic terms (diffrax's criterion).
ORDER_SLACK = 0.9
# ... measured on errors this far above rounding, so that they are truncation errors.
TRUNCATION_FLOOR = 1e3 * EPS
# Same f values and summation order: the step sequences may differ only by rounding.
PARITY_RTOL = 1e-12
# Against stock scipy with the NumPy twin (module docstring): accepted times agree to this
# fraction of the interval (largest seen: 4e-8; one different accept/reject moves them ~1e-2)
MESH_TOL = 1e-6
# ... and endpoints, which differ by about (global error) x (relative step shift), to this
# fraction of the solver's own error scale atol + rtol |y| (largest seen: 4e-6).
ENDPOINT_TOL_SCALED = 1e-4
# NumPy twin vs Numba kernel, relative to the largest component: the kernel builds the RBFs
# by exact ratios (~1e-13, rbf.py) and sums in another order (largest seen: 2e-14).
TWIN_RTOL = 1e-12

FLOW_RTOL, FLOW_ATOL = 1e-6, 1e-8
Z_SCALE = 1.5  # prior draws spread so that pair distances fall among the RBF centres (0..8)


# ---------------------------------------------------------------------------
# 1. Tableau

def test_tableau_consistency_identities():
    def close_to(values, target):
        return abs(math.fsum(values) - target) <= ROUNDING_PER_TERM * math.fsum(np.abs(values))

    assert close_to(tableau.B, 1.0)
    assert close_to(tableau.B_HAT, 1.0)
    assert close_to(tableau.E, 0.0)
    for row, c in zip(tableau.A, tableau.C):
        assert close_to(row, c)
    diff = tableau.B_HAT - tableau.B
    bound = ROUNDING_PER_TERM * (np.abs(tableau.B_HAT) + np.abs(tableau.B))
    assert np.all(np.abs(tableau.E - diff) <= bound)
    assert tableau.B[tableau.N_STAGES] == 0.0


def test_weights_satisfy_quadrature_order_conditions():
    c = np.append(tableau.C, 1.0)  # the FSAL stage sits at t + h
    for weights, order in ((tableau.B, tableau.ORDER),
                           (tableau.B_HAT, tableau.ERROR_ESTIMATOR_ORDER)):
        for q in range(1, order + 1):  # sum_i b_i c_i^(q-1) = 1/q integrates t^(q-1) exactly
            terms = weights * c ** (q - 1)
            bound = QUADRATURE_ROUNDING_PER_TERM * math.fsum(np.abs(terms))
            assert abs(math.fsum(terms) - 1.0 / q) <= bound


def test_check_tableau_raises_for_a_wrong_coefficient_even_under_python_O():
    # a plain assert would be skipped under -O; check_tableau runs at import
    code = ("from refimpl import tableau as t; t.B = t.B.copy(); t.B[2] = 500 / 1112; "
            "t.check_tableau()")
    run = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "ValueError" in run.stderr and "sum(B) must be 1" in run.stderr
    tableau.check_tableau()  # the real tableau passes


def test_tableau_equals_scipy_rk45_arrays():
    np.testing.assert_array_max_ulp(tableau.A, RK45.A, maxulp=TABLEAU_MAX_ULP)
    np.testing.assert_array_max_ulp(tableau.B[:RK45.n_stages], RK45.B, maxulp=TABLEAU_MAX_ULP)
    np.testing.assert_array_max_ulp(tableau.C, RK45.C, maxulp=TABLEAU_MAX_ULP)
    np.testing.assert_array_max_ulp(tableau.E, RK45.E, maxulp=TABLEAU_MAX_ULP)
    assert (tableau.N_STAGES, tableau.ORDER, tableau.ERROR_ESTIMATOR_ORDER) == (
        RK45.n_stages, RK45.order, RK45.error_estimator_order)


# ---------------------------------------------------------------------------
# 2. Known solutions

@njit(cache=True)
def decay_rhs(t, y, out, p):
    out[0] = -p[0] * y[0]


@njit(cache=True)
def oscillator_rhs(t, y, out, p):
    out[0] = y[1]
    out[1] = -y[0]


@njit(cache=True)
def cosine_rhs(t, y, out, p):
    out[0] = math.cos(t)


@njit(cache=True)
def rational_rhs(t, y, out, p):
    out[0] = -2.0 * t * y[0] * y[0]  # y = 1 / (1 + t^2) for y(0) = 1


@njit(cache=True)
def square_rhs(t, y, out, p):
    out[0] = y[0] * y[0]  # y = 1 / (1 - t) for y(0) = 1: blows up at t = 1


@njit(cache=True)
def poisoned_rhs(t, y, out, p):
    out[0] = p[0] if t >= p[1] else -y[0]  # the value p[0] from time p[1] on


@njit(cache=True)
def poisoned_at_state_rhs(t, y, out, p):
    for i in range(y.shape[0]):
        out[i] = math.cos(t + i) - 0.3 * y[i]
    if y[0] == p[0]:  # at this one state, the last component is p[1]
        out[y.shape[0] - 1] = p[1]


RATE = 0.7


def _oscillator_exact(t):
    return np.array([math.cos(t), -math.sin(t)])


def _decay_exact(t):
    return np.array([math.exp(-RATE * t)])


# name: (rhs, p, t0, t1, y0, exact solution)
PROBLEMS = {
    "decay": (decay_rhs, (RATE,), 0.0, 5.0, [1.0], _decay_exact),
    "decay_backwards": (decay_rhs, (RATE,), 5.0, 0.0, _decay_exact(5.0), _decay_exact),
    "oscillator": (oscillator_rhs, (), 0.0, 10.0, [1.0, 0.0], _oscillator_exact),
    "oscillator_backwards": (oscillator_rhs, (), 3.0, -4.0, _oscillator_exact(3.0),
                             _oscillator_exact),
    "cosine": (cosine_rhs, (), 0.0, 10.0, [2.0], lambda t: np.array([2.0 + math.sin(t)])),
}
TOLERANCES = [(1e-3, 1e-6), (1e-6, 1e-9), (1e-9, 1e-12)]


@pytest.mark.parametrize("rtol, atol", TOLERANCES)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_known_solution_within_tolerance_with_capped_work(name, rtol, atol):
    rhs, p, t0, t1, y0, exact = PROBLEMS[name]
    y, info = ode.solve_ivp_rk45(rhs, t0, t1, y0, rtol, atol, p=p)
    y_true = exact(t1)
    assert np.max(np.abs(y - y_true) / (atol + rtol * np.abs(y_true))) < GLOBAL_ERROR_FACTOR
    assert info["nfev"] < NFEV_CAP[rtol]
    assert info["nfev"] == 2 + 6 * (info["naccept"] + info["nreject"])
    times = info["times"]
    assert times[-1] == t1 and np.all(np.diff(times, prepend=t0) * (t1 - t0) > 0)


# ---------------------------------------------------------------------------
# 3. Convergence order

def _fixed_steps(rhs, t0, t1, y0, n_steps, p=()):
    """``n_steps`` equal steps of the solver's own Dormand--Prince step, no error control."""
    rk_step = ode.make_solver(rhs).rk_step
    y = np.array(y0, dtype=np.float64)
    stages = np.empty((tableau.N_STAGES + 1, y.size))
    states = np.empty((tableau.N_STAGES, y.size))
    y_new = np.empty(y.size)
    h = (t1 - t0) / n_steps
    rhs(t0, y, stages[0], p)
    for step in range(n_steps):
        rk_step(p, t0 + step * h, y, h, stages, states, y_new)
        y[:] = y_new
        stages[0] = stages[tableau.N_STAGES]  # first same as last
    return y


@pytest.mark.parametrize("rhs, t1, y0, exact", [
    (oscillator_rhs, 4.0, [1.0, 0.0], _oscillator_exact),
    (rational_rhs, 3.0, [1.0], lambda t: np.array([1.0 / (1.0 + t * t)])),
])
def test_fixed_step_error_decreases_at_fifth_order(rhs, t1, y0, exact):
    n_steps = np.array([16, 32, 64, 128])  # errors from ~1e-6 down to ~1e-12
    errors = [np.max(np.abs(_fixed_steps(rhs, 0.0, t1, y0, n) - exact(t1)))
              for n in n_steps]
    assert min(errors) > TRUNCATION_FLOOR
    slope = np.polyfit(np.log(t1 / n_steps), np.log(errors), 1)[0]
    assert abs(slope - tableau.ORDER) < ORDER_SLACK


# ---------------------------------------------------------------------------
# 4. Parity with scipy on the flow's augmented ODE

def numpy_augmented_rhs(psi, n_particles, dim):
    """``d/dt [x, l] = [g, -div g]`` for an ``RBFKernel``, in plain NumPy."""
    mu, nu, weights = psi.mu.copy(), psi.nu.copy(), psi.weights.copy()
    gamma, gamma_t = psi.gamma, psi.gamma_t
    off_diagonal = ~np.eye(n_particles, dtype=bool)

    def rhs(t, y):
        x = y[:-1].reshape(n_particles, dim)
        d_ij = x[:, None, :] - x[None, :, :]
        r_ij = np.sqrt(np.sum(d_ij ** 2, axis=-1))
        time_weights = weights @ np.exp(-gamma_t * (t - nu) ** 2)  # c_k = sum_l W_kl b_l(t)
        u = r_ij[..., None] - mu
        dist_rbf = np.exp(-gamma * u ** 2)
        psi_ij = np.where(off_diagonal, dist_rbf @ time_weights, 0.0)
        dpsi_ij = np.where(off_diagonal, (-2.0 * gamma * u * dist_rbf) @ time_weights, 0.0)
        g = np.sum(psi_ij[..., None] * d_ij, axis=1)
        div = np.sum(dpsi_ij * r_ij + dim * psi_ij)
        return np.append(g.ravel(), -div)

    return rhs


def refimpl_augmented_rhs(psi, n_particles, dim):
    """The right-hand side refimpl's solver integrates (``_kernels.augmented_rhs``), for scipy."""
    ctx_size, window, _, _ = psi_args(psi)
    p = (psi.theta, scratch(psi.theta, ctx_size, window), psi.prepare, psi.pair, n_particles, dim,
         window)

    def rhs(t, y):
        out = np.empty_like(y)
        augmented_rhs(t, y, out, p)
        return out

    return rhs


def _flow_case(n_particles, dim, weight_scale):
    rng = np.random.default_rng([n_particles, dim, int(100 * weight_scale)])
    psi = refimpl.RBFKernel(weight_scale * rng.standard_normal((50, 10)))
    z = Z_SCALE * rng.standard_normal((1, n_particles, dim))
    return psi, z


def _refimpl_times(flow, y0, t0, t1, n_particles, dim):
    """End state, accepted step times and counts of refimpl's solve of one sample."""
    inverse = (t0, t1) == (flow.t1, flow.t0)
    z = y0[:-1].reshape(1, n_particles, dim)
    x, logdet, stats = (flow.inverse if inverse else flow.forward)(z, return_stats=True)
    times, n_steps = refimpl.FlowModel(flow).step_times(flow.psi.theta[flow.psi.trainable], z,
                                                        inverse=inverse)
    counts = np.zeros(3, dtype=np.int64)
    counts[[ode.NFEV, ode.NACCEPT, ode.NREJECT]] = stats.nfev[0], stats.naccept[0], stats.nreject[0]
    return np.append(x.ravel(), -logdet[0]), times[0, :n_steps[0]], counts


# weight scale 0.05: a gentle flow; 2.0: a stiffer one with tens of rejected steps
FLOW_CASES = [(k, d, direction, scale) for k in (2, 4, 7) for d in (2, 3)
              for direction in ("forward", "inverse") for scale in (0.05, 2.0)]


@pytest.mark.parametrize("n_particles, dim, direction, weight_scale", FLOW_CASES)
def test_flow_matches_scipy_rk45_on_numpy_augmented_ode(n_particles, dim, direction,
                                                          weight_scale):
    psi, z = _flow_case(n_particles, dim, weight_scale)
    flow = refimpl.EquivariantFlow(psi, 0.0, 1.0, FLOW_RTOL, FLOW_ATOL)
    x, logdet = getattr(flow, direction)(z)
    t0, t1 = (flow.t0, flow.t1) if direction == "forward" else (flow.t1, flow.t0)
    y0 = np.append(z.ravel(), 0.0)
    sol = solve_ivp(numpy_augmented_rhs(psi, n_particles, dim), (t0, t1), y0, method="RK45",
                    rtol=FLOW_RTOL, atol=FLOW_ATOL)
    assert sol.success
    naccept = len(sol.t) - 1
    nreject = (sol.nfev - 2) // 6 - naccept  # scipy: 2 evaluations to start, 6 per attempt
    stats = flow.last_stats
    assert (stats.nfev[0], stats.naccept[0], stats.nreject[0]) == (sol.nfev, naccept, nreject)
    assert nreject > 0 or weight_scale < 1  # the stiffer case exercises rejected steps
    y_scipy = sol.y[:, -1]
    y_flow = np.append(x.ravel(), -logdet[0])
    scaled = np.abs(y_flow - y_scipy) / (FLOW_ATOL + FLOW_RTOL * np.abs(y_scipy))
    assert np.max(scaled) < ENDPOINT_TOL_SCALED
    _, times, _ = _refimpl_times(flow, y0, t0, t1, n_particles, dim)
    assert np.max(np.abs(times - sol.t[1:])) < MESH_TOL * abs(t1 - t0)


def _left_to_right(K, weights):
    """``sum_j weights[j] K[j]`` accumulated in order from 0.0, as a plain loop does."""
    acc = np.zeros(K.shape[1])
    for j in range(len(weights)):
        acc = acc + K[j] * weights[j]
    return acc


def _sequential_rk_step(fun, t, y, f, h, A, B, C, K):
    """scipy's ``rk_step`` with the stage sums formed left to right instead of by BLAS."""
    K[0] = f
    for s in range(1, len(C)):
        K[s] = fun(t + C[s] * h, y + _left_to_right(K[:s], A[s, :s]) * h)
    y_new = y + h * _left_to_right(K, B)
    f_new = fun(t + h, y_new)
    K[-1] = f_new
    return y_new, f_new


def _sequential_norm(x):
    """scipy's RMS ``norm`` with the squares summed left to right."""
    total = 0.0
    for v in x:
        total += v * v
    return math.sqrt(total) / math.sqrt(x.size)


class SequentialRK45(RK45):
    """scipy's RK45 controller, unchanged, with the error sum formed left to right."""

    def _estimate_error(self, K, h):
        return _left_to_right(K, self.E) * h


@pytest.mark.parametrize("n_particles, dim, direction, weight_scale", FLOW_CASES)
def test_step_sequence_equals_scipy_controller_given_same_rhs_values(
        monkeypatch, n_particles, dim, direction, weight_scale):
    monkeypatch.setattr(scipy_rk, "rk_step", _sequential_rk_step)
    monkeypatch.setattr(scipy_rk, "norm", _sequential_norm)
    monkeypatch.setattr(scipy_common, "norm", _sequential_norm)
    psi, z = _flow_case(n_particles, dim, weight_scale)
    flow = refimpl.EquivariantFlow(psi, 0.0, 1.0, FLOW_RTOL, FLOW_ATOL)
    t0, t1 = (flow.t0, flow.t1) if direction == "forward" else (flow.t1, flow.t0)
    y0 = np.append(z.ravel(), 0.0)
    sol = solve_ivp(refimpl_augmented_rhs(psi, n_particles, dim), (t0, t1), y0,
                    method=SequentialRK45, rtol=FLOW_RTOL, atol=FLOW_ATOL)
    assert sol.success
    y_end, times, stats = _refimpl_times(flow, y0, t0, t1, n_particles, dim)
    assert (stats[ode.NFEV], stats[ode.NACCEPT]) == (sol.nfev, len(sol.t) - 1)
    # same f values, same arithmetic in the same order: bit-identical
    np.testing.assert_array_equal(np.diff(times, prepend=t0), np.diff(sol.t))
    np.testing.assert_array_equal(y_end, sol.y[:, -1])


def test_numpy_twin_matches_refimpl_field_and_divergence():
    # Precondition of the parity tests: both right-hand sides are the same ODE.
    psi, z = _flow_case(7, 3, 2.0)
    y = np.append(z.ravel(), 0.0)
    x = z.reshape(1, 7, 3)
    for t in (0.0, 0.37, 1.0):
        f_numpy = numpy_augmented_rhs(psi, 7, 3)(t, y)
        f_public = np.append(refimpl.vector_field(x, t, psi), -refimpl.divergence(x, t, psi))
        f_solver = refimpl_augmented_rhs(psi, 7, 3)(t, y)
        np.testing.assert_array_equal(f_solver, f_public)
        np.testing.assert_allclose(f_public, f_numpy, rtol=0,
                                   atol=TWIN_RTOL * np.max(np.abs(f_numpy)))


# ---------------------------------------------------------------------------
# 5. Failures: a clear error, never a hang or a silent NaN

def _stop_time(error):  # solve_ivp_rk45's message: "solve stopped at t=...: <status>"
    return float(re.search(r"stopped at t=([^:]+):", str(error)).group(1))


def test_max_steps_error_names_the_only_hard_sample():
    rng = np.random.default_rng(1)
    psi = refimpl.RBFKernel(5.0 * rng.standard_normal((50, 10)))
    # Pair distances >= 50, far beyond the RBF centres: psi = 0, the flow is the identity.
    far = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    near = Z_SCALE * rng.standard_normal((4, 2))  # hundreds of steps
    flow = refimpl.EquivariantFlow(psi, max_steps=50)
    flow.forward(np.stack([far, far, far]))  # the easy samples alone succeed
    batch = np.stack([far, far, near, far]).reshape(2, 2, 4, 2)
    with pytest.raises(refimpl.SolverError) as info:
        flow.forward(batch)
    err = info.value
    assert err.sample == (1, 0)
    assert err.status == ode.MAX_STEPS_EXCEEDED
    assert f"sample {err.sample}" in str(err) and "max_steps" in str(err)
    assert 0.0 < err.t < 1.0
    stats = flow.last_stats
    assert stats.naccept[1, 0] + stats.nreject[1, 0] == 50  # stopped at max_steps attempts
    assert stats.naccept[0, 0] + stats.nreject[0, 0] < 50


@pytest.mark.parametrize("value, t_poison", [(math.nan, 0.5), (math.inf, 0.5), (math.nan, 0.0)])
def test_non_finite_rhs_stops_with_not_finite_status(value, t_poison):
    with pytest.raises(RuntimeError, match=re.escape(ode.STATUS_MESSAGES[ode.NOT_FINITE])) as info:
        ode.solve_ivp_rk45(poisoned_rhs, 0.0, 1.0, [1.0], 1e-6, 1e-9, p=(value, t_poison))
    assert 0.0 <= _stop_time(info.value) <= t_poison  # the last good state, before the poison


def _recorded_solve(rhs, p, y0, rtol, atol, room):
    n = len(y0)
    y, stats = np.empty(n), np.zeros(3, dtype=np.int64)
    times, states = np.full(room, np.nan), np.full((room, tableau.N_STAGES, n), np.nan)
    status, t = ode.make_solver(rhs).solve(p, 0.0, 2.0, np.asarray(y0, dtype=float), rtol, atol,
                                          10_000, y, stats, times, states)
    return status, t, y, stats, times, states


# A stage that is not finite anywhere in a step must stop the solve at the step's start, with
# the step sequence unchanged until then, whichever stage it is: k_1 enters the solution with
# weight 0 (0 * inf = NaN), and f(t + h, y_new) (stage 6, the next step's first) enters it not
# at all. The poison sits at one state that only that stage visits (exact equality), found by a
# clean solve; the step's start is where that clean solve was.
@pytest.mark.parametrize("value", [math.inf, math.nan])
@pytest.mark.parametrize("stage", [1, 3, 5, 6])
def test_non_finite_stage_stops_the_solve_at_the_step_start(stage, value):
    y0, tols, step = [0.4, 0.1, -0.3], (1e-8, 1e-10), 5
    status, _, _, stats, times, states = _recorded_solve(poisoned_at_state_rhs, (np.inf, 0.0),
                                                         y0, *tols, 64)
    assert status == ode.SUCCESS and stats[ode.NACCEPT] > step + 1
    # stage s of step m was evaluated at states[m, s]; stage 6 at the next step's start
    target = states[step + 1, 0, 0] if stage == 6 else states[step, stage, 0]
    visited = states[: step + 1, :, 0].ravel()
    assert np.count_nonzero(visited == target) == (0 if stage == 6 else 1)
    status, t, y, stats, _, _ = _recorded_solve(poisoned_at_state_rhs, (target, value), y0,
                                                *tols, 0)
    assert status == ode.NOT_FINITE
    assert t == times[step - 1]
    np.testing.assert_array_equal(y, states[step, 0])
    assert stats[ode.NACCEPT] == step


class _UnboundedRBF(refimpl.RBFKernel):
    """An RBFKernel without the MAX_PARAMETER bound on its weights, to drive the
    solver's own overflow handling (check_psi refuses such weights otherwise)."""

    def check_ranges(self):
        pass


def test_overflowing_psi_raises_solver_error_not_finite():
    psi = _UnboundedRBF(np.full((50, 10), np.finfo(float).max))
    z = Z_SCALE * np.random.default_rng(2).standard_normal((2, 4, 2))
    with pytest.raises(refimpl.SolverError) as info:
        refimpl.EquivariantFlow(psi).forward(z)
    assert info.value.status == ode.NOT_FINITE and info.value.sample == (0,)
    assert re.search(r"1 more sample", str(info.value))


def test_finite_time_blowup_stops_where_scipy_does():
    message = re.escape(ode.STATUS_MESSAGES[ode.STEP_TOO_SMALL])
    with pytest.raises(RuntimeError, match=message) as info:
        ode.solve_ivp_rk45(square_rhs, 0.0, 2.0, [1.0], 1e-6, 1e-9)
    t_stop = _stop_time(info.value)
    sol = solve_ivp(lambda t, y: y * y, (0.0, 2.0), [1.0], method="RK45", rtol=1e-6, atol=1e-9)
    assert sol.status == -1  # scipy: "Required step size is less than spacing between numbers."
    assert t_stop == pytest.approx(sol.t[-1], rel=PARITY_RTOL)


# Regression: when rms(f0 / scale) overflowed to inf, h0 = 0.01 d0 / d1 = 0 and
# the first-step rule divided by h0 (ZeroDivisionError under Numba's Python
# error model; SystemError naming no sample inside the parallel flow kernel).
def test_huge_finite_rhs_is_integrated_like_scipy():
    # f = 1e160 is finite, but (f / scale)^2 overflows in the initial-step norm.
    y, info = ode.solve_ivp_rk45(poisoned_rhs, 0.0, 1.0, [1.0], 1e-6, 1e-9, p=(1e160, 0.0))
    with np.errstate(all="ignore"):
        sol = solve_ivp(lambda t, y: np.array([1e160]), (0.0, 1.0), [1.0], method="RK45",
                        rtol=1e-6, atol=1e-9)
    assert sol.success
    assert y[0] == pytest.approx(sol.y[0, -1], rel=PARITY_RTOL)
    assert info["nfev"] == sol.nfev


def test_huge_finite_psi_is_integrated_like_scipy():
    # A finite field whose error norms overflow: scipy integrates it (its particles fly apart
    # beyond the RBF centres, where psi vanishes), so refimpl must too, with scipy's steps.
    psi = _UnboundedRBF(np.full((50, 10), 1e150))
    z = Z_SCALE * np.random.default_rng(3).standard_normal((1, 4, 2))
    flow = refimpl.EquivariantFlow(psi, 0.0, 1.0, FLOW_RTOL, FLOW_ATOL)
    x, logdet = flow.forward(z)
    with np.errstate(all="ignore"):
        sol = solve_ivp(numpy_augmented_rhs(psi, 4, 2), (0.0, 1.0), np.append(z.ravel(), 0.0),
                        method="RK45", rtol=FLOW_RTOL, atol=FLOW_ATOL)
    assert sol.success
    assert flow.last_stats.nfev[0] == sol.nfev
    y_flow = np.append(x.ravel(), -logdet[0])
    scaled = np.abs(y_flow - sol.y[:, -1]) / (FLOW_ATOL + FLOW_RTOL * np.abs(sol.y[:, -1]))
    assert np.max(scaled) < ENDPOINT_TOL_SCALED