"""The seed notebook's figures, for one input and one target: the data, least squares on every
direction of the draw, μ_k ± σ_k bands, π/σ/μ against the input, Gumbel-max samples, the model's
density beside the true one, and the PIT histogram."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mdnlab.eval.figures.style import (
    GRID_POINTS,
    component_colours,
    limits,
    pit_histogram,
    scatter,
    span,
)
from mdnlab.eval.metrics import predict
from mdnlab.eval.sampled import DRAWS, draw_pit, draws_of
from mdnlab.mixtures import Mixture


def draw(model, datamodule, least_squares, seed: int) -> dict[str, Figure]:
    """The seven figures (five for a family without components: no bands, no π/σ/μ);
    ``least_squares`` is [(problem, inputs, targets, fitted model), ...], the training split
    read in each direction its problem has, with a least-squares fit each."""
    problem = datamodule.problem
    labels = (f"input {problem.input_names[0]}", f"target {problem.target_names[0]}")
    train_x, train_t = (t.reshape(-1) for t in datamodule.raw["train"])
    grid, targets = span(train_x, GRID_POINTS), span(train_t, 300)
    test_x, test_t = datamodule.raw["test"]
    figures = {"data": data_figure(train_x, train_t, labels), "mse_fit": least_squares_figure(least_squares)}
    if hasattr(model, "predictive_mixture"):
        m = predict(model, grid.reshape(-1, 1).float())
        draws = m.sample(1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        density = m.map(lambda p: p.unsqueeze(1)).log_prob(targets.reshape(1, -1)).exp()  # (inputs, targets)
        pit = predict(model, test_x).cdf(test_t.reshape(-1).double())
        figures["mdn_bands"] = bands_figure(grid, m, train_x, train_t, labels)
        figures["mixture_parameters"] = parameters_figure(grid, m, labels)
    else:  # any torch Distribution: its draws and its log_prob
        with torch.no_grad():
            predictive = model.eval().predictive_distribution(grid.reshape(-1, 1).float())
            draws = draws_of(predictive, 1, seed).reshape(-1)
            density = predictive.log_prob(targets.reshape(-1, 1, 1).float()).double().exp().T
            pit = draw_pit(
                draws_of(model.predictive_distribution(test_x.float()), DRAWS, seed).double(),
                test_t.reshape(-1, 1).double(),
            )
    figures["samples"] = samples_figure(grid, draws, train_x, train_t, labels)
    figures["density"] = density_figure(grid, density, targets, problem, labels)
    figures["pit"] = pit_figure(pit)
    return figures


def data_figure(x: Tensor, t: Tensor, labels: tuple[str, str]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter(ax, x, t, alpha=0.4)
    ax.set(title=f"Training data: {labels[1]} against {labels[0]}", xlabel=labels[0], ylabel=labels[1])
    return fig


def least_squares_figure(views) -> Figure:
    """Least squares on each direction of the same draw (the sinusoid: fine on y(x), useless on
    x(y)), with the true E[target | input] where the problem knows it."""
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views) + 1, 4.5), squeeze=False)
    for ax, (problem, inputs, targets, fitted) in zip(axes[0], views):
        grid = span(inputs.reshape(-1), GRID_POINTS)
        scatter(ax, inputs.reshape(-1), targets.reshape(-1), alpha=0.25)
        ax.plot(
            grid, predict(fitted, grid.reshape(-1, 1).float()).mean(), color="tab:red", lw=2, label="MLP fitted by MSE"
        )
        if problem.has_oracle:
            ax.plot(grid, problem.moments(grid)[0], "k--", lw=1, label="true E[target | input]")
        x_name, t_name = problem.input_names[0], problem.target_names[0]
        ax.set(title=f"{t_name}({x_name}) by least squares", xlabel=x_name, ylabel=t_name)
        ax.legend(loc="upper left", fontsize=8)
    return fig


def bands_figure(grid, m: Mixture, x, t, labels) -> Figure:
    logits, mu, sigma = m
    pi = torch.softmax(logits, -1)
    fig, ax = plt.subplots(figsize=(7, 6))
    scatter(ax, x, t, alpha=0.2, colour="black")
    for k, colour in enumerate(component_colours(mu.shape[-1])):
        # fade each component where it carries little weight, so the bands read as the density
        ax.plot(grid, mu[:, k], color=colour, lw=1.5, label=f"component {k}")
        ax.fill_between(
            grid, mu[:, k] - sigma[:, k], mu[:, k] + sigma[:, k], color=colour, alpha=0.25 * float(pi[:, k].max())
        )
    ax.set(title="Mixture components: μ_k ± σ_k over the data", xlabel=labels[0], ylabel=labels[1], ylim=limits(t))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def parameters_figure(grid, m: Mixture, labels) -> Figure:
    logits, mu, sigma = m
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 8))
    series = ((torch.softmax(logits, -1), "π_k = p(c = k | input)"), (sigma, "σ_k"), (mu, "μ_k"))
    for ax, (values, title) in zip(axes, series):
        for k, colour in enumerate(component_colours(values.shape[-1])):
            ax.plot(grid, values[:, k], color=colour, label=f"k={k}")
        ax.set_title(title)
    axes[0].legend(loc="upper right", fontsize=8, ncol=min(5, logits.shape[-1]))
    axes[-1].set_xlabel(labels[0])
    return fig


def samples_figure(grid, draws: Tensor, x, t, labels) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 6))
    scatter(ax, x, t, alpha=0.2, label="data")
    ax.scatter(grid, draws, s=6, alpha=0.5, color="tab:red", label="samples")
    ax.set(
        title="Samples from the predictive distribution, one per input",
        xlabel=labels[0],
        ylabel=labels[1],
        ylim=limits(t),
    )
    ax.legend(loc="upper left", fontsize=8)
    return fig


def density_figure(grid, model_density: Tensor, targets: Tensor, problem, labels) -> Figure:
    """The model's density (inputs, targets) beside the true one, as images."""
    panels = [("model p(target | input)", model_density)]
    if problem.has_oracle:
        panels.append(("true p(target | input)", problem.log_density_grid(grid, targets).exp()))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False, layout="constrained")
    # the true density spikes where the x range truncates it; a high quantile keeps the
    # colour scale on the bulk of the mass
    vmax = float(torch.quantile(torch.cat([p.reshape(-1)[::7] for _, p in panels]).float(), 0.995))
    extent = (float(grid[0]), float(grid[-1]), float(targets[0]), float(targets[-1]))
    for ax, (title, density) in zip(axes[0], panels):
        image = ax.imshow(density.T, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=vmax, cmap="viridis")
        ax.set(title=title, xlabel=labels[0], ylabel=labels[1])
    fig.colorbar(image, ax=axes[0].tolist(), label="density")
    return fig


def pit_figure(pit: Tensor) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    pit_histogram(ax, pit, "PIT histogram on the test split: F(target | input)")
    return fig
