"""The corner figure of a posterior at one observation: the reference samples against the
model's, every 1-D and 2-D marginal, with the model's marginal densities drawn exactly (a
Gaussian mixture's marginals are closed form; ``eval.posterior.MixturePosterior``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from mdnlab.eval.figures.style import plt

GRID = 60  # points per axis of a 2-D panel's density
SHOWN = 2000  # reference samples drawn as dots in a 2-D panel


def corner_figure(
    posterior: Any, reference: Tensor, draws: Tensor, names: Sequence[str], truth: Tensor, title: str
) -> Figure:
    """D × D panels: on the diagonal the reference's histogram and the model's marginal density
    (exact, or the draws' histogram where it is not), below it the reference's samples and the
    model's 2-D marginal density as contours; the true parameters marked."""
    d = reference.shape[-1]
    fig, axes = plt.subplots(d, d, figsize=(1.7 * d + 1, 1.7 * d + 1), squeeze=False)
    both = torch.cat([reference.double(), draws.double()])
    low, high = torch.quantile(both, 0.002, 0), torch.quantile(both, 0.998, 0)
    grids = [torch.linspace(float(low[i]), float(high[i]), GRID, dtype=torch.float64) for i in range(d)]
    exact = posterior.exact_marginals
    for i in range(d):
        for j in range(d):
            ax = axes[i][j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                ax.hist(reference[:, i].numpy(), bins=80, density=True, color="0.6", label="reference")
                if exact:
                    density = posterior.marginal_log_prob([i], grids[i][:, None]).exp()
                    ax.plot(grids[i].numpy(), density.numpy(), color="tab:orange", label="MDN (exact)")
                else:
                    ax.hist(draws[:, i].numpy(), bins=80, density=True, histtype="step", color="tab:orange")
                ax.axvline(float(truth[i]), color="k", lw=0.8)
                ax.set_yticks([])
            else:
                ax.scatter(reference[:SHOWN, j].numpy(), reference[:SHOWN, i].numpy(), s=1, color="0.6", alpha=0.4)
                if exact:
                    gx, gy = torch.meshgrid(grids[j], grids[i], indexing="xy")
                    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
                    density = posterior.marginal_log_prob([j, i], points).exp().reshape(GRID, GRID)
                    ax.contour(gx.numpy(), gy.numpy(), density.numpy(), levels=4, colors="tab:orange", linewidths=0.8)
                else:
                    ax.scatter(draws[:SHOWN, j].numpy(), draws[:SHOWN, i].numpy(), s=1, color="tab:orange", alpha=0.3)
                ax.plot(float(truth[j]), float(truth[i]), "k+", ms=8)
                ax.set_ylim(float(low[i]), float(high[i]))
            ax.set_xlim(float(low[j]), float(high[j]))
            if i == d - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    return fig
