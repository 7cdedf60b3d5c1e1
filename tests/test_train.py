"""Training, checkpoints, model files and reweighting."""

import os
import signal

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.misc.optimizers import adam as autograd_adam

import refimpl
from refimpl.grad import FlowModel
from refimpl.io import load_model, save_model
from refimpl.mcmc import metropolis_hastings
from refimpl.potentials import DoubleWell
from refimpl.realnvp import RealNVP
from refimpl.reweight import effective_sample_size, log_weights, reweighted_mean
from refimpl.train import Adam, Phase, kl_loss, linlog_cut, load_checkpoint, train


def _flow_model(k=4, d=2, tol=1e-5):
    return FlowModel(refimpl.EquivariantFlow(refimpl.RBFKernel(), rtol=tol, atol=tol,
                                             n_particles=k, dim=d))


@pytest.fixture(scope="module")
def dw4_data():
    """Short Metropolis-Hastings runs of the paper's DW4 from a square of side 4."""
    dw = DoubleWell(4, 2)
    square = np.array([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    starts = square + 0.1 * np.random.default_rng(0).standard_normal((8, 4, 2))
    run = metropolis_hastings(dw, starts, 4000, 0.3, 1, thin=20, mean_free=True)
    samples = run.samples.reshape(-1, 4, 2)
    return dw, samples[::2], samples[1::2]


def test_adam_matches_autograds_reference_optimizer():
    target = np.linspace(-1, 2, 7)
    loss = lambda p: anp.sum((p - target) ** 4 + anp.sin(p))  # noqa: E731
    want = autograd_adam(lambda p, i: grad(loss)(p), np.zeros(7), num_iters=60, step_size=0.05)
    opt = Adam(7)
    p = np.zeros(7)
    for _ in range(60):
        p = opt.step(p, grad(loss)(p), 0.05)
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-14)


def test_ml_training_lowers_held_out_nll(dw4_data):
    dw, train_x, test_x = dw4_data
    model = _flow_model()
    before = -np.mean(model.log_prob(model.params, test_x))
    state = train(model, data=train_x, schedule=[Phase(60, learning_rate=0.02)],
                  batch_size=64, seed=0, log_every=0)
    after = -np.mean(model.log_prob(state.params, test_x))
    assert after < before - 0.5, (before, after)


def test_kl_training_lowers_the_kl_loss():
    dw = DoubleWell(4, 2)
    model = _flow_model()
    estimate = lambda p: float(kl_loss(model, p, dw, 512, 99))  # noqa: E731
    before = estimate(model.params)
    state = train(model, potential=dw, schedule=[Phase(40, w_ml=0.0, w_kl=1.0,
                                                       learning_rate=0.02)],
                  batch_size=64, seed=1, log_every=0)
    assert estimate(state.params) < before - 1.0


def test_interrupted_and_resumed_training_is_bit_identical(tmp_path, dw4_data):
    dw, train_x, _ = dw4_data
    schedule = [Phase(6, learning_rate=0.02), Phase(6, w_ml=1.0, w_kl=0.5, learning_rate=0.01)]
    settings = dict(data=train_x, potential=dw, schedule=schedule, batch_size=16, seed=3,
                    log_every=0)
    reference = train(_flow_model(), **settings)

    path = tmp_path / "run.npz"

    def interrupt_at_step_4(state):
        if state.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(_flow_model(), checkpoint=path, checkpoint_every=1000, callback=interrupt_at_step_4,
              **settings)
    assert load_checkpoint(path).step == 4
    resumed = train(_flow_model(), checkpoint=path, resume=True, **settings)
    assert resumed.step == 12
    np.testing.assert_array_equal(resumed.params, reference.params)
    assert resumed.history == reference.history


def test_progress_lines_show_step_losses_rate_and_eta(dw4_data, capsys):
    import sys
    train(_flow_model(), data=dw4_data[1], schedule=[Phase(4)], batch_size=8, log_every=2,
          log=sys.stdout)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("steps/s" in line and "ETA" in line for line in out)
    assert out[-1].startswith("step      4/4")


def test_checkpoint_files_that_are_damaged_are_refused(tmp_path, dw4_data):
    path = tmp_path / "ck.npz"
    train(_flow_model(), data=dw4_data[1], schedule=[Phase(2)], batch_size=8, log_every=0,
          checkpoint=path)
    raw = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_checkpoint(tmp_path / "truncated.npz")
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "flipped.npz")
    model_path = tmp_path / "model.npz"
    save_model(model_path, _flow_model())
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(model_path)
    with pytest.raises(ValueError, match="holds"):
        train(FlowModel(refimpl.EquivariantFlow(refimpl.RBFKernel(n_distance=5),
                                                n_particles=4, dim=2)),
              data=dw4_data[1], schedule=[Phase(1)], checkpoint=path, resume=True, log_every=0)


def test_saved_flow_and_potential_load_with_identical_outputs(tmp_path):
    rng = np.random.default_rng(4)
    bgflow = refimpl.BgflowKernel(np.linspace(0, 8, 12), np.full(12, 0.5), np.linspace(0, 1, 4),
                                  np.full(4, 0.3),
                                  weights=0.02 * rng.standard_normal((12, 4)),
                                  optimize_d_gammas=True)
    for psi in (refimpl.RBFKernel(0.02 * rng.standard_normal((50, 10))),
                refimpl.TanhMLP(5, rng=2, v=0.1 * rng.standard_normal(5)), bgflow):
        flow = refimpl.EquivariantFlow(psi, rtol=1e-7, atol=1e-9, max_steps=500, n_particles=4,
                                       dim=2)
        dw = DoubleWell(4, 2, pairs="unordered", temperature=2.0)
        save_model(tmp_path / "m.npz", flow, dw)
        loaded, potential = load_model(tmp_path / "m.npz")
        z = refimpl.MeanFreeNormal(4, 2).sample(5, 0)
        for a, b in zip(loaded.forward(z), flow.forward(z)):
            np.testing.assert_array_equal(a, b)
        assert (loaded.rtol, loaded.atol, loaded.max_steps) == (1e-7, 1e-9, 500)
        assert type(loaded.psi) is type(psi)
        np.testing.assert_array_equal(loaded.psi.trainable, psi.trainable)
        np.testing.assert_array_equal(potential.energy(z), dw.energy(z))
        assert potential.pairs == "unordered"


def test_saved_realnvp_loads_with_identical_outputs(tmp_path):
    model = RealNVP(4, 2, n_layers=2, hidden=(8,), rng=1)
    params = model.params + 0.01 * np.random.default_rng(0).standard_normal(model.n_params)
    save_model(tmp_path / "r.npz", model, params=params)
    loaded, potential = load_model(tmp_path / "r.npz")
    x = refimpl.MeanFreeNormal(4, 2).sample(6, 1)
    np.testing.assert_array_equal(loaded.log_prob(loaded.params, x), model.log_prob(params, x))
    assert potential is None


def test_model_files_that_are_damaged_are_refused(tmp_path):
    save_model(tmp_path / "m.npz", _flow_model())
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:100])
    with pytest.raises(ValueError, match="cut.npz"):
        load_model(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", format=np.array("refimpl-model"), version=np.array(99))
    with pytest.raises(ValueError, match="version 99"):
        load_model(tmp_path / "other.npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["psi_theta"] = arrays["psi_theta"][:-3]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="layout"):
        load_model(tmp_path / "short.npz")
    with pytest.raises(TypeError):
        save_model(tmp_path / "x.npz", object())


def test_reweighting_recovers_an_analytic_expectation():
    """Prior N(0, I) on the subspace, target N(0, s^2 I): E_p|x|^2 = (K-1) D s^2."""
    k, d, s = 4, 2, 1.3
    prior = refimpl.MeanFreeNormal(k, d)
    x = prior.sample(20_000, 5)
    reduced_energy = np.sum(x ** 2, axis=(1, 2)) / (2 * s ** 2)
    log_w = log_weights(reduced_energy, prior.log_prob(x))
    mean, error = reweighted_mean(np.sum(x ** 2, axis=(1, 2)), log_w)
    exact = (k - 1) * d * s ** 2
    assert abs(mean - exact) < 4 * error, (mean, exact, error)
    assert error < 0.05 * exact
    assert 1 < effective_sample_size(log_w) < 20_000


def test_reweighting_rejects_bad_input():
    with pytest.raises(ValueError):
        log_weights(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        reweighted_mean(np.zeros(2), np.array([np.nan, 0.0]))
    with pytest.raises(ValueError):
        effective_sample_size(np.array([-np.inf, -np.inf]))
    assert effective_sample_size(np.zeros(10)) == pytest.approx(10.0)


def test_linlog_cut_is_identity_below_the_cut_and_logarithmic_above():
    u = np.array([-50.0, 0.0, 99.0, 100.0, 101.0, 1e9])
    cut = linlog_cut(u, 100.0)
    np.testing.assert_array_equal(cut[:4], u[:4])
    np.testing.assert_allclose(cut[4:], 100.0 + np.log1p(u[4:] - 100.0), rtol=1e-15)
    slope = grad(lambda v: anp.sum(linlog_cut(v, 100.0)))(u)
    np.testing.assert_allclose(slope, [1, 1, 1, 1, 0.5, 1 / (1e9 - 99)], rtol=1e-12)


def test_reweighted_dw4_energy_agrees_with_a_long_mcmc_estimate():
    """A briefly trained DW4 Boltzmann generator, reweighted, against MCMC.

    At T = 3 the pair barrier (8.9 in u) is 3 kT, so 16 Metropolis chains mix
    and their chain means give an honest error bar; the BG's self-normalized
    estimate carries its delta-method error. Both must agree within 4 combined
    standard errors; the raw (unweighted) BG mean is off by far more.
    """
    dw = DoubleWell(4, 2, temperature=3.0)
    starts = 2.0 * np.random.default_rng(0).standard_normal((16, 4, 2))
    run = metropolis_hastings(dw, starts, 100_000, 0.4, 1, thin=50, mean_free=True)
    chain_means = run.energies[200:].mean(axis=0)  # after 10 000 steps of burn-in
    mcmc, mcmc_error = chain_means.mean(), chain_means.std(ddof=1) / np.sqrt(chain_means.size)
    model = _flow_model()
    state = train(model, data=run.samples[200:].reshape(-1, 4, 2), potential=dw, batch_size=64,
                  schedule=[Phase(200, learning_rate=5e-3), Phase(100, 1.0, 0.2, 1e-3)],
                  seed=0, log_every=0, energy_cut=100.0)
    x, log_q = model.sample(state.params, 4000, 3)
    energy = dw.energy(x)
    log_w = log_weights(energy, log_q)
    estimate, error = reweighted_mean(energy, log_w)
    combined = np.hypot(error, mcmc_error)
    assert effective_sample_size(log_w) > 100
    assert abs(estimate - mcmc) < 4 * combined, (estimate, error, mcmc, mcmc_error)
    assert abs(np.mean(energy) - mcmc) > 4 * combined  # reweighting was needed


def test_a_checkpoint_is_resumed_only_by_the_run_that_wrote_it(tmp_path, dw4_data):
    path = tmp_path / "run.npz"
    settings = dict(data=dw4_data[1], schedule=[Phase(2)], batch_size=8, log_every=0,
                    checkpoint=path, resume=True)
    train(_flow_model(), seed=0, **settings)
    with pytest.raises(ValueError, match="different run.*seed"):
        train(_flow_model(), seed=1, **settings)
    with pytest.raises(ValueError, match="data"):
        train(_flow_model(), seed=0, **dict(settings, data=dw4_data[2]))
    assert train(_flow_model(), seed=0, **settings).step == 2  # the same run resumes


def test_sigterm_interrupts_after_the_step_and_names_the_signal(tmp_path, dw4_data):
    def terminate_at_step_2(state):
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    from refimpl.train import TrainingInterrupted
    with pytest.raises(TrainingInterrupted) as info:
        train(_flow_model(), data=dw4_data[1], schedule=[Phase(5)], batch_size=8, log_every=0,
              checkpoint=tmp_path / "t.npz", callback=terminate_at_step_2)
    assert info.value.signum == signal.SIGTERM
    assert load_checkpoint(tmp_path / "t.npz").step == 2


def test_an_ignored_sigint_stays_ignored(dw4_data):
    def interrupt(state):
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        state = train(_flow_model(), data=dw4_data[1], schedule=[Phase(3)], batch_size=8,
                      log_every=0, callback=interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert state.step == 3


def test_bad_training_settings_are_refused(dw4_data):
    with pytest.raises(ValueError):
        train(_flow_model(), data=dw4_data[1], schedule=[Phase(2)], checkpoint_every=0)
    with pytest.raises(ValueError, match="needs a potential"):
        train(_flow_model(), data=dw4_data[1], schedule=[Phase(2, 1.0, 0.5)])
    with pytest.raises(ValueError, match="needs data"):
        train(_flow_model(), potential=DoubleWell(4, 2), schedule=[Phase(2)])


def test_infinite_weights_and_energies_are_refused():
    with pytest.raises(ValueError, match="-inf"):
        log_weights(np.array([0.0, -np.inf]), np.zeros(2))
    with pytest.raises(ValueError, match="log_q"):
        log_weights(np.zeros(2), np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match=r"\+inf"):
        effective_sample_size(np.array([0.0, np.inf]))
    np.testing.assert_array_equal(log_weights(np.array([1.0, np.inf]), np.zeros(2)),
                                  [-1.0, -np.inf])  # an infinite energy has weight 0
