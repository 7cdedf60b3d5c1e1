"""Experiment 2 (paper section 4.2): discovering metastable states not in the data.

Train both models on one minimum-energy state plus tiny noise, sample them,
minimize each sample's energy with a trust-region Newton method (exact
Hessian, no momentum), and count the distinct minima up to permutation,
rotation, reflection and translation (``refimpl.minima``).
"""

import numpy as np

from ..minima import cluster_minima, is_local_minimum, matches_any, minimize_energies
from ..prior import remove_mean
from .common import sample_summary, system, train_both


def random_start_minima(settings):
    """Minimize ``n_random_starts`` random configurations (the landscape reference).

    Returns the ``MinimizationResult``; its lowest verified minimum is the
    training state.
    """
    starts = settings.random_start_scale * settings.rng("random_starts").standard_normal(
        (settings.n_random_starts, settings.n_particles, settings.dim))
    return minimize_energies(system(settings), starts)


def training_state(found):
    """The lowest verified minimum of ``random_start_minima``: ``(x (K, D), energy)``."""
    ok = np.flatnonzero(found.success)
    if ok.size == 0:
        raise RuntimeError("no random start converged to a minimum")
    best = ok[np.argmin(found.energies[ok])]
    return found.x[best], float(found.energies[best])


def _relaxed(potential, x):
    """Minimize samples; keep only verified local minima."""
    result = minimize_energies(potential, x)
    verified = np.array([ok and is_local_minimum(potential, m).is_minimum
                         for ok, m in zip(result.success, result.x)])
    return result, verified


def _structures(result, verified, reference, settings, landscape=None):
    """Distinct minima of ``result.x[verified]``, each compared with the training
    state ``reference (K, D)`` and, if given, the random-start minima
    ``landscape (M, K, D)``."""
    clusters = cluster_minima(result.x[verified], result.energies[verified],
                              tol=settings.structure_tol)
    rows = []
    for rep, energy, count in zip(clusters.representatives, clusters.energies, clusters.counts):
        rows.append({"energy": float(energy), "count": int(count),
                     "is_training_state": bool(matches_any(rep, reference[None],
                                                           settings.structure_tol)),
                     "sorted_pair_distances": np.sort(
                         np.linalg.norm(rep[:, None] - rep[None], axis=-1)[
                             np.triu_indices(rep.shape[0], 1)]).round(4).tolist(),
                     "configuration": np.asarray(rep).round(6).tolist()})
        if landscape is not None:
            rows[-1]["from_random_starts"] = bool(matches_any(rep, landscape,
                                                              settings.structure_tol))
    return rows, clusters


def _shown(labels, verified):
    """Two sample indices to draw, from different structures where possible."""
    idx = np.flatnonzero(verified)
    if idx.size == 0:
        return [0, 1]
    first = idx[0]
    other = [i for i, lab in zip(idx, labels) if lab != labels[0]]
    return [int(first), int(other[0] if other else (idx[1] if idx.size > 1 else first))]


def run(settings, checkpoint_dir=None, log=None):
    potential = system(settings)
    found = random_start_minima(settings)
    state, state_energy = training_state(found)
    landscape_rows, landscape = _structures(found, found.success, state, settings)
    noise = settings.noise * settings.rng("training_noise").standard_normal(
        (settings.n_training_states,) + state.shape)
    data = remove_mean(state + noise)
    trained = train_both(settings, data, potential, "exp2", checkpoint_dir,
                         **({} if log is None else {"log": log}))
    shown = data[: settings.n_minimized]
    result, verified = _relaxed(potential, shown)
    training = {"data": data, "state": state, "state_energy": state_energy,
                "x": shown, "energy": potential.energy(shown), "minimized": result.x,
                "minimized_energy": result.energies, "shown": [0, 1]}
    training["structures"], _ = _structures(result, verified, state, settings,
                                            landscape.representatives)
    models = {}
    for name, (model, params, seconds, history) in trained.items():
        drawn = sample_summary(model, params, potential, settings.n_minimized,
                               settings.rng("exp2_samples"))
        result, verified = _relaxed(potential, drawn["x"])
        rows, clusters = _structures(result, verified, state, settings,
                                     landscape.representatives)
        models[name] = {
            "x": drawn["x"], "energy": drawn["energy"], "minimized": result.x,
            "minimized_energy": result.energies, "verified": verified,
            "shown": _shown(clusters.labels, verified), "structures": rows,
            "model": model, "params": params, "training_seconds": seconds, "history": history,
        }
    return {"training": training, "models": models,
            "random_starts": {"n_starts": int(found.x.shape[0]),
                              "n_minima": int(np.sum(found.success)),
                              "structures": landscape_rows}}


def summary(result):
    """Experiment 2 summary as a JSON-ready dict and as Markdown."""
    starts = result["random_starts"]
    record = {"training_state_energy": result["training"]["state_energy"],
              "training_set_minima": result["training"]["structures"],
              "random_start_minima": starts}
    lines = [f"Random starts: {starts['n_starts']} minimized, {starts['n_minima']} to verified "
             f"minima, {len(starts['structures'])} distinct structure(s): energies "
             + ", ".join(f"{r['energy']:.3f} ({r['count']})" for r in starts["structures"])
             + ".", "",
             f"Training state: energy {result['training']['state_energy']:.3f} "
             f"(u / T); the noisy training set relaxes to "
             f"{len(result['training']['structures'])} structure(s).", ""]
    for name in ("nBG", "eqBG"):
        block = result["models"][name]
        rows = block["structures"]
        new = [r for r in rows if not r["is_training_state"]]
        record[name] = {"n_samples": int(block["x"].shape[0]),
                        "n_verified_minima": int(np.sum(block["verified"])),
                        "n_distinct": len(rows), "n_new": len(new), "structures": rows}
        lines.append(f"**{name}**: {len(block['x'])} samples, "
                     f"{int(np.sum(block['verified']))} relaxed to verified minima, "
                     f"{len(rows)} distinct structure(s), {len(new)} not in the training set.")
        lines += ["", "| energy | samples | training state? | from random starts? | "
                  "sorted pair distances |", "| ---: | ---: | :---: | :---: | --- |"]
        for r in rows:
            lines.append(f"| {r['energy']:.3f} | {r['count']} | "
                         f"{'yes' if r['is_training_state'] else 'new'} | "
                         f"{'yes' if r['from_random_starts'] else 'no'} | "
                         f"{', '.join(f'{v:.3f}' for v in r['sorted_pair_distances'])} |")
        lines.append("")
    return record, "\n".join(lines)
