"""The seed notebook's figures, for any fitted model, as matplotlib figures.

Imported only when figures are drawn (matplotlib costs ~0.5 s to import). One colour per
mixture component across every panel.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only; never a window
matplotlib.rcParams["figure.constrained_layout.use"] = True  # no clipped labels

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from mdnlab import mixture  # noqa: E402
from mdnlab.evaluation import predict  # noqa: E402

FIGURES = ("data", "mse_fit", "mdn_bands", "mixture_parameters", "samples", "density", "pit")
GRID_POINTS = 400


def component_colours(k: int) -> list:
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def draw_all(model, datamodule, seed: int = 0) -> dict[str, Figure]:
    """All seven figures for a fitted model and the data it was trained on."""
    datamodule.prepare_splits()
    labels = _labels(datamodule)
    train_x, train_t = (t.reshape(-1) for t in datamodule.raw["train"])
    grid = _span(train_x, GRID_POINTS)
    params = predict(model, grid.reshape(-1, 1).float())
    test_x, test_t = datamodule.raw["test"]
    pit = mixture.cdf(*predict(model, test_x), test_t.reshape(-1).double())
    return {
        "data": data_figure(train_x, train_t, labels),
        "mse_fit": mse_fit_figure(datamodule, seed),
        "mdn_bands": bands_figure(grid, params, train_x, train_t, labels),
        "mixture_parameters": parameters_figure(grid, params, labels),
        "samples": samples_figure(grid, params, train_x, train_t, labels, seed),
        "density": density_figure(grid, params, train_t, datamodule.problem, labels),
        "pit": pit_figure(pit),
    }


def render_all(figures: dict[str, Figure], directory: Path) -> dict:
    """Render each figure once: write <directory>/<name>.png and return the RGB pixels (H, W, 3)
    for the loggers, so TensorBoard does not draw every figure a second time."""
    import numpy as np
    from matplotlib.image import imsave

    directory.mkdir(parents=True, exist_ok=True)
    pixels = {}
    for name, fig in figures.items():
        fig.set_dpi(100)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        imsave(directory / f"{name}.png", rgb)
        pixels[name] = rgb
        plt.close(fig)
    return pixels


# ---- the figures ----------------------------------------------------------------------------

def data_figure(x: Tensor, t: Tensor, labels: tuple[str, str]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    _scatter(ax, x, t, alpha=0.4)
    ax.set(title=f"Training data: {labels[1]} against {labels[0]}", xlabel=labels[0], ylabel=labels[1])
    return fig


def mse_fit_figure(datamodule, seed: int) -> Figure:
    """Least squares on both directions of the same draw: fine on y(x), useless on x(y)."""
    from mdnlab.problems import Sinusoid

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    problem = datamodule.problem
    pool_in, pool_t = datamodule.raw["train"]
    if problem.direction == "inverted":
        pool_in, pool_t = pool_t, pool_in  # back to (x, y)
    for ax, direction in zip(axes, ("forward", "inverted")):
        inputs, targets = (pool_in, pool_t) if direction == "forward" else (pool_t, pool_in)
        grid = _span(inputs.reshape(-1), GRID_POINTS)
        fitted = fit_least_squares(inputs, targets, grid.reshape(-1, 1).float(), seed)
        _scatter(ax, inputs.reshape(-1), targets.reshape(-1), alpha=0.25)
        ax.plot(grid, fitted, color="tab:red", lw=2, label="MLP fitted by MSE")
        oracle = Sinusoid(direction=direction, noise_std=problem.noise_std,
                          x_low=problem.x_low, x_high=problem.x_high)
        if problem.noise_std > 0:
            ax.plot(grid, oracle.moments(grid)[0], "k--", lw=1, label="true E[target | input]")
        names = ("x", "y") if direction == "forward" else ("y", "x")
        ax.set(title=f"{direction}: {names[1]}({names[0]}) by least squares",
               xlabel=names[0], ylabel=names[1])
        ax.legend(loc="upper left", fontsize=8)
    return fig


def bands_figure(grid, params, x, t, labels) -> Figure:
    logits, mu, sigma = params
    pi = torch.softmax(logits, -1)
    fig, ax = plt.subplots(figsize=(7, 6))
    _scatter(ax, x, t, alpha=0.2, colour="black")
    for k, colour in enumerate(component_colours(mu.shape[-1])):
        # fade each component where it carries little weight, so the bands read as the density
        ax.plot(grid, mu[:, k], color=colour, lw=1.5, label=f"component {k}")
        ax.fill_between(grid, mu[:, k] - sigma[:, k], mu[:, k] + sigma[:, k], color=colour,
                        alpha=0.25 * float(pi[:, k].max()))
    ax.set(title="Mixture components: μ_k ± σ_k over the data", xlabel=labels[0], ylabel=labels[1],
           ylim=_limits(t))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def parameters_figure(grid, params, labels) -> Figure:
    logits, mu, sigma = params
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 8))
    series = ((torch.softmax(logits, -1), "π_k = p(c = k | input)"), (sigma, "σ_k"), (mu, "μ_k"))
    for ax, (values, title) in zip(axes, series):
        for k, colour in enumerate(component_colours(values.shape[-1])):
            ax.plot(grid, values[:, k], color=colour, label=f"k={k}")
        ax.set_title(title)
    axes[0].legend(loc="upper right", fontsize=8, ncol=min(5, logits.shape[-1]))
    axes[-1].set_xlabel(labels[0])
    return fig


def samples_figure(grid, params, x, t, labels, seed: int) -> Figure:
    draws = mixture.sample(*params, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
    fig, ax = plt.subplots(figsize=(7, 6))
    _scatter(ax, x, t, alpha=0.2, label="data")
    ax.scatter(grid, draws, s=6, alpha=0.5, color="tab:red", label="Gumbel-max samples")
    ax.set(title="Samples from the mixture, one per input", xlabel=labels[0], ylabel=labels[1],
           ylim=_limits(t))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def density_figure(grid, params, t, problem, labels) -> Figure:
    targets = _span(t, 300)
    logits, mu, sigma = (p.unsqueeze(1) for p in params)  # (inputs, 1, K) against (targets,)
    model_density = mixture.log_prob(logits, mu, sigma, targets.reshape(1, -1)).exp()
    panels = [("model p(target | input)", model_density)]
    if getattr(problem, "noise_std", 0) > 0:
        panels.append(("true p(target | input)", problem.log_density_grid(grid, targets).exp()))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False,
                             layout="constrained")
    # the true density spikes where the x range truncates it; a high quantile keeps the
    # colour scale on the bulk of the mass
    vmax = float(torch.quantile(torch.cat([p.reshape(-1)[::7] for _, p in panels]).float(), 0.995))
    extent = (float(grid[0]), float(grid[-1]), float(targets[0]), float(targets[-1]))
    for ax, (title, density) in zip(axes[0], panels):
        image = ax.imshow(density.T, origin="lower", aspect="auto", extent=extent, vmin=0,
                          vmax=vmax, cmap="viridis")
        ax.set(title=title, xlabel=labels[0], ylabel=labels[1])
    fig.colorbar(image, ax=axes[0].tolist(), label="density")
    return fig


def pit_figure(pit: Tensor) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = 20
    ax.hist(pit.numpy(), bins=bins, range=(0, 1), density=True, color="tab:blue", alpha=0.8)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="calibrated (uniform)")
    ax.set(title="PIT histogram on the test split: F(target | input)", xlabel="PIT value",
           ylabel="density")
    ax.legend(fontsize=8)
    return fig


# ---- helpers --------------------------------------------------------------------------------

def fit_least_squares(inputs: Tensor, targets: Tensor, grid: Tensor, seed: int,
                      steps: int = 600) -> Tensor:
    """The seed's baseline (1→20 tanh→1, MSE) fitted in plain torch, for the figure only."""
    generator = torch.Generator().manual_seed(seed)
    x_mean, x_std = inputs.mean(), inputs.std()
    t_mean, t_std = targets.mean(), targets.std()
    x, t = (inputs - x_mean) / x_std, (targets - t_mean) / t_std
    w1 = (torch.randn(1, 20, generator=generator) * 1.5).requires_grad_(True)
    b1 = (torch.randn(20, generator=generator)).requires_grad_(True)
    w2 = (torch.randn(20, 1, generator=generator) / math.sqrt(20)).requires_grad_(True)
    b2 = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=1e-2)
    for _ in range(steps):
        loss = (torch.tanh(x @ w1 + b1) @ w2 + b2 - t).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        g = (grid - x_mean) / x_std
        return ((torch.tanh(g @ w1 + b1) @ w2 + b2) * t_std + t_mean).reshape(-1)


def _labels(datamodule) -> tuple[str, str]:
    direction = getattr(datamodule.problem, "direction", "forward")
    return ("input y", "target x") if direction == "inverted" else ("input x", "target y")


def _span(values: Tensor, n: int, margin: float = 0.05) -> Tensor:
    low, high = float(values.min()), float(values.max())
    pad = margin * (high - low or 1.0)
    return torch.linspace(low - pad, high + pad, n, dtype=torch.float64)


def _limits(values: Tensor) -> tuple[float, float]:
    span = _span(values, 2, margin=0.1)
    return float(span[0]), float(span[1])


def _scatter(ax, x, t, alpha=0.3, colour="tab:blue", label=None) -> None:
    ax.scatter(x, t, s=6, alpha=alpha, color=colour, lw=0, label=label)
