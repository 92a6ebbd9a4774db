"""mdn-sample plot=true: at each input asked for, the predictive density of each target on its
grid, with a histogram of the draws and the most probable mode."""

from __future__ import annotations

from matplotlib.figure import Figure

from mdnlab.eval.figures.style import plt


def predictive_figure(summary: dict, target_names) -> Figure:
    """One row per input, one panel per target (the marginal density for several targets, where the
    model gives one)."""
    one = summary["mean"].dim() == 1
    n = len(summary["mean"])
    d = 1 if one else summary["mean"].shape[-1]
    inputs = summary["inputs"].reshape(n, -1)
    fig, axes = plt.subplots(n, d, figsize=(5.5 * d, 2.8 * n), squeeze=False)
    for i in range(n):
        for j in range(d):
            grid = summary["grid"] if one else summary["grid"][:, j]
            density = summary["density"][i] if one else summary.get("marginal_density", [None] * n)[i]
            density = density if one or density is None else density[j]
            draws = summary["samples"][i] if one else summary["samples"][i, :, j]
            mode = summary["most_probable_mode"][i] if one else summary["most_probable_mode"][i, j]
            ax = axes[i][j]
            ax.hist(
                draws.numpy(),
                bins=60,
                range=(float(grid[0]), float(grid[-1])),
                density=True,
                color="tab:blue",
                alpha=0.35,
                label=f"{draws.numel()} samples",
            )
            if density is not None:  # a flow over several targets has no marginal density
                ax.plot(grid, density, color="tab:red", lw=1.5, label="predictive density")
            ax.axvline(float(mode), color="black", ls="--", lw=1, label="most probable mode")
            point = ", ".join(f"{float(v):.3g}" for v in inputs[i])
            point = f"({point})" if inputs.shape[1] > 1 else point
            ax.set(title=f"p({target_names[j]} | input = {point})", xlabel=target_names[j], ylabel="density")
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    return fig
