"""The predictive distribution at given inputs, summarised for ``mdn-sample``: draws, mean,
standard deviation, modes, the mixture's parameters and each target's density on a grid. One
path for one and for D targets; with one target the target axis is dropped."""

from __future__ import annotations

import torch
from torch import Tensor

from mdnlab.eval.metrics import predict
from mdnlab.eval.sampled import densest_draw, draws_of
from mdnlab.mixtures import CHUNK_ELEMENTS


def predictive_summary(
    model, inputs: Tensor, n_samples: int, seed: int, temperature: float, low: Tensor, high: Tensor, grid_points: int
) -> dict[str, Tensor]:
    """float64 tensors by name, for n inputs (rows of ``inputs``), K components, D targets:

        inputs (n, I)   samples (n, S, D)   mean, std, most_probable_mode (n, D)
        modes (n, K, D) with modes_log_density (n, K)   pi (n, K)   mu (n, K, D)
        scale: σ (n, K, D) or Cholesky factors (n, K, D, D)
        grid (G, D) from ``low`` to ``high``, marginal_density (n, D, G)

    With one target: samples (n, S), mean ... (n,), modes and mu (n, K), ``sigma`` (n, K),
    grid (G,) and ``density`` (n, G); with one input, inputs (n,).

    A model that is not a mixture (a flow) gives no π, μ, σ or modes: its mean and std are those
    of the draws, its most probable mode the densest of its first draws (``eval.sampled``), and
    with one target its density on the grid comes from ``log_prob`` (with several, the joint
    ``log_prob`` gives no marginal, so there is none).
    """
    inputs = inputs.reshape(len(inputs), -1).double()
    if not hasattr(model, "predictive_mixture"):
        return _distribution_summary(model, inputs, n_samples, seed, low, high, grid_points)
    m = predict(model, inputs.float()).columns()
    modes = m.modes()
    grid = torch.stack(
        [torch.linspace(float(lo), float(hi), grid_points, dtype=torch.float64) for lo, hi in zip(low, high)], -1
    )
    densities = [
        m.marginal(d).map(lambda p: p.unsqueeze(1)).log_prob(grid[:, d].reshape(1, -1)).exp()
        for d in range(m.n_targets)
    ]
    summary = {
        "inputs": inputs if inputs.shape[1] > 1 else inputs.reshape(-1),
        "samples": _draw(m, n_samples, torch.Generator().manual_seed(seed), temperature),
        "mean": m.mean(),
        "std": m.std(),
        "most_probable_mode": m.highest_mode(modes),
        "modes": modes[0],
        "modes_log_density": modes[1],
        "pi": torch.softmax(m.logits, -1),
        "mu": m.mu,
        "scale": m.scale,
        "grid": grid,
        "marginal_density": torch.stack(densities, 1),
    }
    return _one_target(summary) if m.n_targets == 1 else summary


@torch.no_grad()
def _distribution_summary(
    model, inputs: Tensor, n_samples: int, seed: int, low: Tensor, high: Tensor, grid_points: int
) -> dict[str, Tensor]:
    predictive = model.eval().predictive_distribution(inputs.float())
    draws = draws_of(predictive, n_samples, seed).double().transpose(0, 1)  # (n, S, D)
    grid = torch.stack(
        [torch.linspace(float(lo), float(hi), grid_points, dtype=torch.float64) for lo, hi in zip(low, high)], -1
    )
    summary = {
        "inputs": inputs if inputs.shape[1] > 1 else inputs.reshape(-1),
        "samples": draws,
        "mean": draws.mean(1),
        "std": draws.std(1),
        "most_probable_mode": densest_draw(predictive, draws.transpose(0, 1)),
        "grid": grid,
    }
    if draws.shape[-1] > 1:
        return summary
    log_density = predictive.log_prob(grid.reshape(-1, 1, 1).to(torch.get_default_dtype()))  # (G, n)
    summary["density"] = log_density.double().exp().T
    return {**summary, **{k: summary[k].squeeze(-1) for k in ("samples", "mean", "std", "most_probable_mode", "grid")}}


def _draw(m, n_samples: int, generator: torch.Generator, temperature: float) -> Tensor:
    """(n, S, D) draws, in chunks of S that keep the (S, n, K) Gumbel noise bounded; one call,
    the same draws, when it fits."""
    per_sample = len(m.logits) * m.logits.shape[-1]
    chunk = max(1, CHUNK_ELEMENTS // per_sample)
    sizes = [min(chunk, n_samples - i) for i in range(0, n_samples, chunk)]
    return torch.cat([m.sample(size, generator=generator, temperature=temperature) for size in sizes], dim=-2)


def _one_target(summary: dict[str, Tensor]) -> dict[str, Tensor]:
    """The D = 1 summary without its target axis, σ as ``sigma`` and the density as ``density``."""
    out = dict(summary)
    for name in ("samples", "mean", "std", "most_probable_mode", "modes", "mu"):
        out[name] = summary[name].squeeze(-1)
    out["sigma"] = out.pop("scale").squeeze(-1)
    out["grid"] = summary["grid"].squeeze(-1)
    out["density"] = out.pop("marginal_density").squeeze(1)
    return out


def target_span(model, datamodule) -> tuple[Tensor, Tensor]:
    """Per target, the range the density grid covers: the training targets' range plus 10% each
    side for a problem that draws its own points (redrawn from the seed), and mean ± 4 standard
    deviations of the training targets (kept in the checkpoint) for a user's file, so sampling
    never needs the file."""
    if datamodule is not None and hasattr(datamodule.problem, "sample"):
        datamodule.prepare_splits()
        targets = datamodule.raw["train"][1].double().reshape(len(datamodule.raw["train"][1]), -1)
        low, high = targets.min(0).values, targets.max(0).values
        pad = 0.1 * (high - low)
        return low - pad, high + pad
    mean, std = model.target_mean.double(), model.target_std.double()
    return mean - 4 * std, mean + 4 * std
