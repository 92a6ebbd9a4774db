"""Figures for several inputs or targets: the data, point predictions against the truth, the most
probable component over the inputs, samples and the density over the first two targets at a few
test inputs, each target's PIT histogram and, for a problem with a task error (the robot arm),
where the predicted angles put the hand. One target with several inputs is drawn as D = 1."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mdnlab.eval.figures.style import (
    component_colours,
    limits,
    pit_histogram,
    scatter,
    span,
)
from mdnlab.eval.metrics import predict
from mdnlab.mixtures import Mixture

SHOWN_INPUTS = 3  # test inputs whose predictive distributions the samples/density figures show


def draw(model, datamodule, seed: int) -> dict[str, Figure]:
    problem = datamodule.problem
    test_x, test_t = datamodule.raw["test"]
    m = predict(model, test_x).columns()
    names = (problem.input_names, problem.target_names)
    points = {"mixture mean": m.mean(), "most probable mode": m.highest_mode()}
    shown = _shown_inputs(test_x, problem)
    figures = {
        "data": data_figure(*datamodule.raw["train"], names),
        "predictions": predictions_figure(test_t, points, names[1]),
        "mixture_parameters": components_figure(test_x, m.logits, names[0]),
        "samples": samples_figure(test_x, test_t, m, shown, names, problem, seed),
        "density": density_figure(test_x, datamodule.raw["train"][1], m, shown, names, problem),
        "pit": pit_figure(test_t, m, names[1]),
    }
    if hasattr(problem, "endpoint_errors"):
        figures["endpoint"] = endpoint_figure(test_x, points, problem)
    return figures


def data_figure(x: Tensor, t: Tensor, names) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, values, labels, kind in ((axes[0], x, names[0], "inputs"), (axes[1], t, names[1], "targets")):
        if values.shape[1] > 1:
            scatter(ax, values[:, 0], values[:, 1], alpha=0.4)
            ax.set(xlabel=labels[0], ylabel=labels[1])
        else:
            ax.hist(values[:, 0].numpy(), bins=40, color="tab:blue", alpha=0.8)
            ax.set(xlabel=labels[0], ylabel="count")
        ax.set_title(f"Training {kind}")
    return fig


def predictions_figure(t: Tensor, points: dict[str, Tensor], target_names) -> Figure:
    d = t.shape[1]
    fig, axes = plt.subplots(1, d, figsize=(5 * d, 4.5), squeeze=False)
    for j, ax in enumerate(axes[0]):
        for (name, prediction), colour in zip(points.items(), ("tab:orange", "tab:blue")):
            ax.scatter(t[:, j], prediction[:, j], s=5, alpha=0.4, color=colour, lw=0, label=name)
        low, high = limits(t[:, j])
        ax.plot([low, high], [low, high], "k--", lw=1, label="prediction = truth")
        ax.set(
            title=f"Test predictions of {target_names[j]}",
            xlabel=f"true {target_names[j]}",
            ylabel=f"predicted {target_names[j]}",
        )
        ax.legend(fontsize=8)
    return fig


def components_figure(x: Tensor, logits: Tensor, input_names) -> Figure:
    """Which component is most probable where, and how sure it is (marker alpha = max π)."""
    pi = torch.softmax(logits, -1)
    top = pi.argmax(-1)
    fig, ax = plt.subplots(figsize=(7, 6))
    horizontal = x[:, 1] if x.shape[1] > 1 else torch.zeros(len(x))
    for k, colour in enumerate(component_colours(pi.shape[-1])):
        chosen = top == k
        if chosen.any():
            ax.scatter(
                x[chosen, 0],
                horizontal[chosen],
                s=8,
                color=colour,
                lw=0,
                alpha=0.8,
                label=f"component {k} (mean π {float(pi[chosen, k].mean()):.2f})",
            )
    ax.set(
        title="Most probable mixture component over the test inputs",
        xlabel=input_names[0],
        ylabel=input_names[1] if x.shape[1] > 1 else "",
    )
    ax.legend(fontsize=8, loc="best")
    return fig


def samples_figure(x, t, m: Mixture, shown, names, problem, seed: int) -> Figure:
    draws = m.rows(shown).sample(300, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.5), squeeze=False)
    for ax, i, sample in zip(axes[0], shown.tolist(), draws):
        two = sample.shape[-1] > 1
        ax.scatter(
            sample[:, 0],
            sample[:, 1] if two else torch.zeros(len(sample)),
            s=6,
            alpha=0.4,
            color="tab:red",
            lw=0,
            label="Gumbel-max samples",
        )
        _mark_truth(ax, x[i], t[i], problem)
        ax.set(title=f"Samples at input {_point(x[i])}", xlabel=names[1][0], ylabel=names[1][1] if two else "")
        ax.legend(fontsize=8)
    return fig


def density_figure(x, train_t, m: Mixture, shown, names, problem) -> Figure:
    if m.n_targets < 2:
        return marginal_density_figure(x, train_t, m, shown, names)
    axes_grid = [span(train_t[:, j], 150, margin=0.1) for j in range(2)]
    g0, g1 = torch.meshgrid(*axes_grid, indexing="xy")
    grid = torch.stack([g0.reshape(-1), g1.reshape(-1)], -1)
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.5), squeeze=False)
    for ax, i in zip(axes[0], shown.tolist()):
        # the marginal over the first two targets: the same mixture on those coordinates
        first_two = m.rows(slice(i, i + 1)).first_two()
        # log density, floored 12 nats below the peak: sharp (near-deterministic) modes stay visible
        log_density = first_two.log_prob(grid).reshape(g0.shape)
        image = ax.imshow(
            log_density.clamp_min(float(log_density.max()) - 12),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=(float(axes_grid[0][0]), float(axes_grid[0][-1]), float(axes_grid[1][0]), float(axes_grid[1][-1])),
        )
        _mark_truth(ax, x[i], None, problem)
        ax.set(title=f"log p({names[1][0]}, {names[1][1]} | {_point(x[i])})", xlabel=names[1][0], ylabel=names[1][1])
        fig.colorbar(image, ax=ax, label="log density")
    return fig


def marginal_density_figure(x, train_t, m: Mixture, shown, names) -> Figure:
    grid = span(train_t[:, 0], 300, margin=0.1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i in shown.tolist():
        density = m.rows(slice(i, i + 1)).marginal(0).log_prob(grid.reshape(-1, 1)).exp()
        ax.plot(grid, density, label=f"input {_point(x[i])}")
    ax.set(title="Predictive density at a few test inputs", xlabel=names[1][0], ylabel="density")
    ax.legend(fontsize=8)
    return fig


def pit_figure(t: Tensor, m: Mixture, target_names) -> Figure:
    d = t.shape[1]
    fig, axes = plt.subplots(1, d, figsize=(5 * d, 4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        pit = m.marginal(j).cdf(t[:, j].double())
        pit_histogram(ax, pit, f"PIT of {target_names[j]} (test split)")
    return fig


def endpoint_figure(x: Tensor, points: dict[str, Tensor], problem) -> Figure:
    """Where the predicted joint angles put the end effector, against where it should be."""
    fig, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 5), squeeze=False)
    for ax, (name, theta) in zip(axes[0], points.items()):
        reached = problem.forward_kinematics(theta)
        rmse = float(problem.endpoint_errors(x, theta).square().mean().sqrt())
        scatter(ax, x[:, 0], x[:, 1], alpha=0.4, colour="black", label="target position")
        scatter(ax, reached[:, 0], reached[:, 1], alpha=0.5, colour="tab:red", label=f"reached by the {name}")
        ax.set(title=f"{name}: end-effector RMS error {rmse:.4f}", xlabel="x1", ylabel="x2")
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="lower left")
    return fig


def _shown_inputs(x: Tensor, problem) -> Tensor:
    """SHOWN_INPUTS test rows spread over the first input; for the robot arm, rows that both
    elbow configurations reach, where a model has to keep two modes."""
    candidates = torch.arange(len(x))
    if hasattr(problem, "inverse_kinematics"):
        both = problem.inverse_kinematics(x)[1].all(-1)
        candidates = candidates[both] if both.sum() >= SHOWN_INPUTS else candidates
    order = candidates[x[candidates, 0].argsort()]
    return order[torch.linspace(0, len(order) - 1, SHOWN_INPUTS + 2).long()[1:-1]]


def _mark_truth(ax, x: Tensor, t: Tensor | None, problem) -> None:
    if hasattr(problem, "inverse_kinematics"):
        solutions, inside = problem.inverse_kinematics(x.reshape(1, -1))
        chosen = solutions[0][inside[0]]
        ax.scatter(
            chosen[:, 0],
            chosen[:, 1],
            marker="o",
            s=120,
            facecolors="none",
            lw=1.5,
            edgecolors="white" if t is None else "black",
            label="true solutions",
        )
    elif t is not None:
        ax.scatter(
            t[0],
            t[1] if len(t) > 1 else 0.0,
            marker="o",
            s=120,
            facecolors="none",
            lw=1.5,
            edgecolors="black",
            label="observed target",
        )


def _point(x: Tensor) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in x) + ")"
