"""What both scoring paths share (the mixture's closed forms in ``metrics``, any distribution's
draws in ``sampled``): the errors of point predictions and the calibration read off PIT values."""

from __future__ import annotations

import torch
from torch import Tensor

NLL_MISS_THRESHOLD = 6.0  # nats; a held-out point above this is (nearly always) a missed mode


def point_errors(points: dict[str, Tensor], t: Tensor) -> dict[str, float]:
    """Errors of the mixture mean (MSE, MAE), the most probable mode (MSE, MAE) and the top
    component's μ (MAE, for a mixture), averaged over points and targets."""
    errors = {
        "mse": (points["mean"] - t).square().mean().item(),
        "mae": (points["mean"] - t).abs().mean().item(),
        "mse_mode": (points["mode"] - t).square().mean().item(),
        "mae_mode": (points["mode"] - t).abs().mean().item(),
    }
    if "top_component" in points:
        errors["mae_top_component"] = (points["top_component"] - t).abs().mean().item()
    return errors


def pit_ks_statistic(pit: Tensor) -> float:
    """Kolmogorov–Smirnov distance between the PIT values and U(0, 1): 0 for perfect calibration."""
    u, _ = pit.reshape(-1).sort()
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=u.dtype)
    return torch.maximum(i / n - u, u - (i - 1) / n).max().item()


def calibration(pit: Tensor) -> dict[str, float]:
    """From PIT values F(t | x): the KS distance to U(0, 1) and the shares of targets inside the
    central 50% and 90% intervals."""
    return {
        "pit_ks": pit_ks_statistic(pit),
        "coverage_50": ((pit >= 0.25) & (pit <= 0.75)).double().mean().item(),
        "coverage_90": ((pit >= 0.05) & (pit <= 0.95)).double().mean().item(),
    }
