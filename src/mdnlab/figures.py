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
    """All seven figures for a fitted model and the data it was trained on (one input, one
    target); ``draw_multivariate`` for anything wider."""
    datamodule.prepare_splits()
    if datamodule.input_dim > 1 or datamodule.target_dim > 1:
        return draw_multivariate(model, datamodule, seed)
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
    """Least squares on both directions of the same draw: fine on y(x), useless on x(y). For
    data without a known problem, least squares on the data as they are."""
    from mdnlab.problems import Sinusoid

    problem = datamodule.problem
    if not isinstance(problem, Sinusoid):
        x, t = datamodule.raw["train"]
        labels = _labels(datamodule)
        grid = _span(x.reshape(-1), GRID_POINTS)
        fig, ax = plt.subplots(figsize=(7, 5))
        _scatter(ax, x.reshape(-1), t.reshape(-1), alpha=0.3)
        ax.plot(grid, fit_least_squares(x, t, grid.reshape(-1, 1).float(), seed), color="tab:red",
                lw=2, label="MLP fitted by MSE")
        ax.set(title=f"{labels[1]} against {labels[0]} by least squares", xlabel=labels[0],
               ylabel=labels[1])
        ax.legend(loc="upper left", fontsize=8)
        return fig
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
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
                      steps: int = 150) -> Tensor:
    """The seed's baseline (1→20 tanh→1, MSE) fitted in plain torch, for the figure only, by
    L-BFGS (61 parameters, full batch: a fraction of the time Adam needs to get as close)."""
    generator = torch.Generator().manual_seed(seed)
    x_mean, x_std = inputs.mean(), inputs.std()
    t_mean, t_std = targets.mean(), targets.std()
    x, t = (inputs - x_mean) / x_std, (targets - t_mean) / t_std
    w1 = (torch.randn(1, 20, generator=generator) * 1.5).requires_grad_(True)
    b1 = (torch.randn(20, generator=generator)).requires_grad_(True)
    w2 = (torch.randn(20, 1, generator=generator) / math.sqrt(20)).requires_grad_(True)
    b2 = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w1, b1, w2, b2], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (torch.tanh(x @ w1 + b1) @ w2 + b2 - t).square().mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        g = (grid - x_mean) / x_std
        return ((torch.tanh(g @ w1 + b1) @ w2 + b2) * t_std + t_mean).reshape(-1)


def _labels(datamodule) -> tuple[str, str]:
    return f"input {datamodule.input_names[0]}", f"target {datamodule.target_names[0]}"


def _span(values: Tensor, n: int, margin: float = 0.05) -> Tensor:
    low, high = float(values.min()), float(values.max())
    pad = margin * (high - low or 1.0)
    return torch.linspace(low - pad, high + pad, n, dtype=torch.float64)


def _limits(values: Tensor) -> tuple[float, float]:
    span = _span(values, 2, margin=0.1)
    return float(span[0]), float(span[1])


def _scatter(ax, x, t, alpha=0.3, colour="tab:blue", label=None) -> None:
    ax.scatter(x, t, s=6, alpha=alpha, color=colour, lw=0, label=label)


# ---- several inputs or targets ----------------------------------------------------------------

MULTIVARIATE_FIGURES = ("data", "predictions", "mixture_parameters", "samples", "density", "pit")
SHOWN_INPUTS = 3  # test inputs whose predictive distributions the samples/density figures show


def draw_multivariate(model, datamodule, seed: int = 0) -> dict[str, Figure]:
    """Figures for several inputs or targets: the data, point predictions against the truth,
    the most probable component over the inputs, samples and the density over the first two
    targets at a few test inputs, and each target's PIT histogram. A problem with an
    end-effector error (the robot arm) adds where the predicted angles put the hand."""
    from mdnlab import mvmixture

    test_x, test_t = datamodule.raw["test"]
    logits, mu, scale = predict(model, test_x)
    if mu.dim() == logits.dim():  # one target: as a (N, K, 1) mixture
        mu, scale = mu.unsqueeze(-1), scale.unsqueeze(-1)
    names = (datamodule.input_names, datamodule.target_names)
    points = {"mixture mean": mvmixture.mean(logits, mu),
              "most probable mode": mvmixture.most_probable_mode(logits, mu, scale)}
    shown = _shown_inputs(test_x, datamodule.problem)
    figures = {
        "data": multivariate_data_figure(*datamodule.raw["train"], names),
        "predictions": predictions_figure(test_t, points, names[1]),
        "mixture_parameters": components_figure(test_x, logits, names[0]),
        "samples": multivariate_samples_figure(test_x, test_t, (logits, mu, scale), shown, names,
                                               datamodule.problem, seed),
        "density": multivariate_density_figure(test_x, datamodule.raw["train"][1], (logits, mu, scale),
                                               shown, names, datamodule.problem),
        "pit": marginal_pit_figure(test_t, (logits, mu, scale), names[1]),
    }
    if hasattr(datamodule.problem, "endpoint_errors"):
        figures["endpoint"] = endpoint_figure(test_x, points, datamodule.problem)
    return figures


def multivariate_data_figure(x: Tensor, t: Tensor, names) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, values, labels, kind in ((axes[0], x, names[0], "inputs"), (axes[1], t, names[1], "targets")):
        if values.shape[1] > 1:
            _scatter(ax, values[:, 0], values[:, 1], alpha=0.4)
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
        low, high = _limits(t[:, j])
        ax.plot([low, high], [low, high], "k--", lw=1, label="prediction = truth")
        ax.set(title=f"Test predictions of {target_names[j]}", xlabel=f"true {target_names[j]}",
               ylabel=f"predicted {target_names[j]}")
        ax.legend(fontsize=8)
    return fig


def components_figure(x: Tensor, logits: Tensor, input_names) -> Figure:
    """Which component is most probable where, and how sure it is (marker alpha = max π)."""
    pi = torch.softmax(logits, -1)
    top = pi.argmax(-1)
    colours = component_colours(pi.shape[-1])
    fig, ax = plt.subplots(figsize=(7, 6))
    horizontal = x[:, 1] if x.shape[1] > 1 else torch.zeros(len(x))
    for k, colour in enumerate(colours):
        chosen = top == k
        if chosen.any():
            ax.scatter(x[chosen, 0], horizontal[chosen], s=8, color=colour, lw=0,
                       alpha=0.8, label=f"component {k} (mean π {float(pi[chosen, k].mean()):.2f})")
    ax.set(title="Most probable mixture component over the test inputs", xlabel=input_names[0],
           ylabel=input_names[1] if x.shape[1] > 1 else "")
    ax.legend(fontsize=8, loc="best")
    return fig


def multivariate_samples_figure(x, t, params, shown, names, problem, seed: int) -> Figure:
    from mdnlab import mvmixture

    logits, mu, scale = params
    draws = mvmixture.sample(logits[shown], mu[shown], scale[shown], 300,
                             generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.5), squeeze=False)
    for ax, i, sample in zip(axes[0], shown.tolist(), draws):
        two = sample.shape[-1] > 1
        ax.scatter(sample[:, 0], sample[:, 1] if two else torch.zeros(len(sample)), s=6, alpha=0.4,
                   color="tab:red", lw=0, label="Gumbel-max samples")
        _mark_truth(ax, x[i], t[i], problem)
        ax.set(title=f"Samples at input {_point(x[i])}", xlabel=names[1][0],
               ylabel=names[1][1] if two else "")
        ax.legend(fontsize=8)
    return fig


def multivariate_density_figure(x, train_t, params, shown, names, problem) -> Figure:
    from mdnlab import mvmixture

    logits, mu, scale = params
    if mu.shape[-1] < 2:
        return marginal_density_figure(x, train_t, params, shown, names)
    axes_grid = [_span(train_t[:, j], 150, margin=0.1) for j in range(2)]
    g0, g1 = torch.meshgrid(*axes_grid, indexing="xy")
    grid = torch.stack([g0.reshape(-1), g1.reshape(-1)], -1)
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.5), squeeze=False)
    for ax, i in zip(axes[0], shown.tolist()):
        # the marginal over the first two targets: the same mixture on those coordinates
        m, sub = mu[i:i + 1, :, :2], _first_two(mu[i:i + 1], scale[i:i + 1])
        # log density, floored 12 nats below the peak: sharp (near-deterministic) modes stay visible
        log_density = mvmixture.log_prob(logits[i:i + 1], m, sub, grid).reshape(g0.shape)
        image = ax.imshow(log_density.clamp_min(float(log_density.max()) - 12), origin="lower",
                          aspect="auto", cmap="viridis",
                  extent=(float(axes_grid[0][0]), float(axes_grid[0][-1]),
                          float(axes_grid[1][0]), float(axes_grid[1][-1])))
        _mark_truth(ax, x[i], None, problem)
        ax.set(title=f"log p({names[1][0]}, {names[1][1]} | {_point(x[i])})", xlabel=names[1][0],
               ylabel=names[1][1])
        fig.colorbar(image, ax=ax, label="log density")
    return fig


def marginal_density_figure(x, train_t, params, shown, names) -> Figure:
    logits, mu, scale = params
    grid = _span(train_t[:, 0], 300, margin=0.1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i in shown.tolist():
        density = mixture.log_prob(logits[i:i + 1], mu[i:i + 1, :, 0], scale[i:i + 1, :, 0],
                                   grid.reshape(-1, 1)).exp()
        ax.plot(grid, density, label=f"input {_point(x[i])}")
    ax.set(title="Predictive density at a few test inputs", xlabel=names[1][0], ylabel="density")
    ax.legend(fontsize=8)
    return fig


def marginal_pit_figure(t: Tensor, params, target_names) -> Figure:
    from mdnlab import mvmixture

    logits, mu, scale = params
    d = t.shape[1]
    fig, axes = plt.subplots(1, d, figsize=(5 * d, 4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        m, sd = mvmixture.marginal(mu, scale, j)
        pit = mixture.cdf(logits, m, sd, t[:, j].double())
        ax.hist(pit.numpy(), bins=20, range=(0, 1), density=True, color="tab:blue", alpha=0.8)
        ax.axhline(1.0, color="black", ls="--", lw=1, label="calibrated (uniform)")
        ax.set(title=f"PIT of {target_names[j]} (test split)", xlabel="PIT value", ylabel="density")
        ax.legend(fontsize=8)
    return fig


def endpoint_figure(x: Tensor, points: dict[str, Tensor], problem) -> Figure:
    """Where the predicted joint angles put the end effector, against where it should be."""
    fig, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 5), squeeze=False)
    for ax, (name, theta) in zip(axes[0], points.items()):
        reached = problem.forward_kinematics(theta)
        rmse = float(problem.endpoint_errors(x, theta).square().mean().sqrt())
        _scatter(ax, x[:, 0], x[:, 1], alpha=0.4, colour="black", label="target position")
        _scatter(ax, reached[:, 0], reached[:, 1], alpha=0.5, colour="tab:red",
                 label=f"reached by the {name}")
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


def _first_two(mu: Tensor, scale: Tensor) -> Tensor:
    """The scale of the marginal over the first two targets (Cholesky of Σ[:2, :2])."""
    if scale.dim() == mu.dim() + 1:
        return torch.linalg.cholesky((scale @ scale.transpose(-1, -2))[..., :2, :2])
    return scale[..., :2]


def _mark_truth(ax, x: Tensor, t: Tensor | None, problem) -> None:
    if hasattr(problem, "inverse_kinematics"):
        solutions, inside = problem.inverse_kinematics(x.reshape(1, -1))
        chosen = solutions[0][inside[0]]
        ax.scatter(chosen[:, 0], chosen[:, 1], marker="o", s=120, facecolors="none", lw=1.5,
                   edgecolors="white" if t is None else "black", label="true solutions")
    elif t is not None:
        ax.scatter(t[0], t[1] if len(t) > 1 else 0.0, marker="o", s=120, facecolors="none", lw=1.5,
                   edgecolors="black", label="observed target")


def _point(x: Tensor) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in x) + ")"
