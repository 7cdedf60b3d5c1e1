"""Figure 1 of the paper, redrawn from our results (matplotlib, PNG).

What is shown and at which resolution is in ``settings.FigureSettings``.
"""

import numpy as np

from .settings import FigureSettings


def _configuration(ax, x, title, color, potential, style):
    """Particles as dots; pairs in the inner well of v (closer than d0) joined by lines."""
    x = np.asarray(x)
    k = x.shape[0]
    for i in range(k):
        for j in range(i + 1, k):
            if np.linalg.norm(x[i] - x[j]) < potential.d0:
                ax.plot(*zip(x[i], x[j]), color="0.6", lw=1, zorder=1)
    ax.scatter(x[:, 0], x[:, 1], s=60, color=color, edgecolor="k", zorder=2)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlim(-style.position_limit, style.position_limit)
    ax.set_ylim(-style.position_limit, style.position_limit)
    ax.set_xticks([])
    ax.set_yticks([])


def draw(path, exp1, exp2, potential, settings, style=FigureSettings()):
    """Write the eight-panel figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=style.size_inches)
    outer = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.35], hspace=0.3)
    top = outer[0].subgridspec(1, 5, wspace=0.4)
    bottom = outer[1].subgridspec(2, 6, hspace=0.35, wspace=0.15)
    colors = {"nBG": "tab:orange", "eqBG": "tab:blue", "data": "0.4"}
    data_energy = exp1["data"]["energies"]
    low, high = np.percentile(data_energy, style.energy_percentiles) + np.multiply(
        style.energy_margins, (-1, 1))
    bins = np.linspace(low, high, style.energy_bins)
    for col, name in enumerate(("nBG", "eqBG")):
        energy = exp1["models"][name]["samples"]["energy"]
        ax = fig.add_subplot(top[0, 2 * col])
        ax.hist(np.clip(energy, low, high), bins=bins, density=True, alpha=0.7,
                color=colors[name], label=f"{name} samples\n(last bin: >= {high:.0f})")
        ax.hist(data_energy, bins=bins, density=True, histtype="step", color="k",
                label="MCMC data")
        ax.set_title(f"{'ac'[col]}) energies, {name}", fontsize=10)
        ax.set_xlabel("u(x) / T")
        ax.legend(fontsize=7)
        ax = fig.add_subplot(top[0, 2 * col + 1])
        x1 = exp1["models"][name]["samples"]["x"][:, 0, :]
        limits = [-style.position_limit, style.position_limit]
        ax.hist2d(x1[:, 0], x1[:, 1], bins=style.position_bins, range=[limits, limits],
                  cmap="viridis")
        ax.set_title(f"{'bd'[col]}) particle 1, {name}", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal")

    ax = fig.add_subplot(top[0, 4])
    d = np.linspace(*style.pair_distance_range, 400)
    scale = 2.0 if potential.pairs == "ordered" else 1.0
    ax.plot(d, scale * potential.pair_potential(d) / potential.temperature, color="k")
    for m in potential.pair_minima():
        ax.axvline(m, color="0.7", ls="--", lw=1)
    ax.set_ylim(*style.pair_energy_limits)
    ax.set_title("e) energy of N = 2 particles", fontsize=10)
    ax.set_xlabel("d = |x_1 - x_2|")
    ax.set_ylabel("u / T")

    panels = (("f", "training data", exp2["training"], colors["data"]),
              ("g", "nBG", exp2["models"]["nBG"], colors["nBG"]),
              ("h", "eqBG", exp2["models"]["eqBG"], colors["eqBG"]))
    for col, (panel, name, block, color) in enumerate(panels):
        for slot in range(2):
            i = block["shown"][slot]
            ax = fig.add_subplot(bottom[0, 2 * col + slot])
            _configuration(ax, block["x"][i], f"{panel}) {name}\nu = {block['energy'][i]:.1f}",
                           color, potential, style)
            ax = fig.add_subplot(bottom[1, 2 * col + slot])
            _configuration(ax, block["minimized"][i],
                           f"minimized: u = {block['minimized_energy'][i]:.1f}", color,
                           potential, style)
    fig.suptitle("Equivariant (eqBG) vs non-equivariant (nBG) Boltzmann generators on DW4 "
                 f"(refimpl, seed {settings.seed}); a-d: Experiment 1, f-h: Experiment 2 "
                 "(top: samples, bottom: after energy minimization)", fontsize=11)
    fig.savefig(path, dpi=style.dpi)
    plt.close(fig)
