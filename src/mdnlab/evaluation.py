"""Metrics of a fitted model on a split, in original units, against the oracle where the problem
has one. One code path for the end of training, ``mdn-eval`` and the reports."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mdnlab import mixture, mvmixture

NLL_MISS_THRESHOLD = 6.0  # nats; a held-out point above this is (nearly always) a missed mode


@torch.no_grad()
def predict(model, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The model's predictive mixture (logits, μ, σ) in original units, float64, on the CPU."""
    model = model.eval()
    params = model.predictive_mixture(inputs.to(model.device, model.dtype))
    return tuple(p.detach().to("cpu", torch.float64) for p in params)


def mixture_metrics(logits: Tensor, mu: Tensor, sigma: Tensor, targets: Tensor,
                    points: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Scores of a predictive mixture against targets of shape (N,) or (N, 1); ``points`` are
    its ``point_predictions`` when the caller already has them."""
    t = targets.reshape(-1).to(torch.float64)
    log_p = mixture.log_prob(logits, mu, sigma, t)
    pit = mixture.cdf(logits, mu, sigma, t)
    return {
        "nll": -log_p.mean().item(),
        "frac_nll_above_6": (-log_p > NLL_MISS_THRESHOLD).double().mean().item(),
        "crps": mixture.crps(logits, mu, sigma, t).mean().item(),
        **point_errors(points or point_predictions(logits, mu, sigma), t),
        "pit_ks": pit_ks_statistic(pit),
        "coverage_50": ((pit >= 0.25) & (pit <= 0.75)).double().mean().item(),
        "coverage_90": ((pit >= 0.05) & (pit <= 0.95)).double().mean().item(),
        "effective_components": mixture.effective_components(logits).item(),
        "min_sigma": sigma.min().item(),
    }


def multivariate_metrics(logits: Tensor, mu: Tensor, scale: Tensor, targets: Tensor,
                         points: dict[str, Tensor] | None = None, seed: int = 0) -> dict[str, float]:
    """Scores of a mixture over D-dimensional targets (N, D). Point errors are averaged over
    the D targets; CRPS, PIT and coverage are those of each one-dimensional marginal, averaged
    over targets (``_<name>`` suffixes give each); the energy score is the multivariate CRPS
    (Monte Carlo, 200 draws from a fixed seed, so a run's numbers repeat)."""
    t = targets.to(torch.float64)
    log_p = mvmixture.log_prob(logits, mu, scale, t)
    generator = torch.Generator().manual_seed(seed)
    out = {
        "nll": -log_p.mean().item(),
        "energy_score": mvmixture.energy_score(logits, mu, scale, t, generator=generator).mean().item(),
        **point_errors(points or point_predictions(logits, mu, scale), t),
        "effective_components": mixture.effective_components(logits).item(),
    }
    per_dim = []
    for d in range(t.shape[-1]):
        m, sd = mvmixture.marginal(mu, scale, d)
        pit = mixture.cdf(logits, m, sd, t[:, d])
        per_dim.append({
            "crps": mixture.crps(logits, m, sd, t[:, d]).mean().item(),
            "pit_ks": pit_ks_statistic(pit),
            "coverage_50": ((pit >= 0.25) & (pit <= 0.75)).double().mean().item(),
            "coverage_90": ((pit >= 0.05) & (pit <= 0.95)).double().mean().item(),
            "min_sigma": sd.min().item(),
        })
    for name in per_dim[0]:
        values = [row[name] for row in per_dim]
        out[name] = min(values) if name == "min_sigma" else sum(values) / len(values)
        out.update({f"{name}_{d}": v for d, v in enumerate(values)})
    return out


def point_predictions(logits: Tensor, mu: Tensor, scale: Tensor) -> dict[str, Tensor]:
    """The mixture's point predictions, by name: mean, most probable mode, top component's μ."""
    module = mvmixture if mu.dim() == logits.dim() + 1 else mixture
    return {"mean": module.mean(logits, mu), "mode": module.most_probable_mode(logits, mu, scale),
            "top_component": module.most_probable_component_mean(logits, mu)}


def point_errors(points: dict[str, Tensor], t: Tensor) -> dict[str, float]:
    """Errors of the mixture mean (MSE, MAE), the most probable mode (MSE, MAE) and the top
    component's μ (MAE), averaged over points and targets."""
    return {"mse": (points["mean"] - t).square().mean().item(),
            "mae": (points["mean"] - t).abs().mean().item(),
            "mse_mode": (points["mode"] - t).square().mean().item(),
            "mae_mode": (points["mode"] - t).abs().mean().item(),
            "mae_top_component": (points["top_component"] - t).abs().mean().item()}


def pit_ks_statistic(pit: Tensor) -> float:
    """Kolmogorov–Smirnov distance between the PIT values and U(0, 1): 0 for perfect calibration."""
    u, _ = pit.reshape(-1).sort()
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=u.dtype)
    return torch.maximum(i / n - u, u - (i - 1) / n).max().item()


def oracle_metrics(problem, inputs: Tensor, targets: Tensor, nll: float) -> dict[str, float]:
    """Bayes NLL on the very same points, the excess over it (a low-noise estimate of the KL gap,
    E[KL(p_true ‖ p_model)]) and the MSE floor E[Var(target | input)]."""
    log_density, _, variance = problem.oracle(inputs, targets)
    oracle_nll = -log_density.mean().item()
    return {"oracle_nll": oracle_nll, "excess_nll": nll - oracle_nll,
            "mse_floor": variance.mean().item()}


def evaluate(model, datamodule, split: str = "test") -> dict[str, float]:
    """All metrics of ``model`` on ``split``, named ``<split>/<metric>``."""
    datamodule.prepare_splits()
    inputs, targets = datamodule.raw[split]
    params = predict(model, inputs)
    points = point_predictions(*params)  # mean-shift once, for the metrics and the task error
    if params[1].dim() == params[0].dim() + 1:  # μ (N, K, D): several targets
        metrics = multivariate_metrics(*params, targets, points)
    else:
        metrics = mixture_metrics(*params, targets, points)
    problem = getattr(datamodule, "problem", None)
    if problem is not None and hasattr(problem, "log_density") and problem.noise_std > 0:
        metrics.update(oracle_metrics(problem, inputs, targets, metrics["nll"]))
    if problem is not None and hasattr(problem, "endpoint_errors"):
        for name, prediction in points.items():
            errors = problem.endpoint_errors(inputs, prediction)
            metrics[f"endpoint_rmse_{name}"] = errors.square().mean().sqrt().item()
    metrics["n_points"] = float(len(targets))
    return {f"{split}/{name}": value for name, value in metrics.items()}


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a file so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
