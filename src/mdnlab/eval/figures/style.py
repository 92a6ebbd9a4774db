"""What every figure shares: matplotlib set up for files only, one colour per mixture component
across every panel, axis spans and scatter style. matplotlib costs ~0.5 s to import, so nothing
imports this package until figures are drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only; never a window
matplotlib.rcParams["figure.constrained_layout.use"] = True  # no clipped labels

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

GRID_POINTS = 400


def component_colours(k: int) -> list:
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def span(values: Tensor, n: int, margin: float = 0.05) -> Tensor:
    low, high = float(values.min()), float(values.max())
    pad = margin * (high - low or 1.0)
    return torch.linspace(low - pad, high + pad, n, dtype=torch.float64)


def limits(values: Tensor) -> tuple[float, float]:
    ends = span(values, 2, margin=0.1)
    return float(ends[0]), float(ends[1])


def scatter(ax, x, t, alpha=0.3, colour="tab:blue", label=None) -> None:
    ax.scatter(x, t, s=6, alpha=alpha, color=colour, lw=0, label=label)


def pit_histogram(ax, pit: Tensor, title: str) -> None:
    ax.hist(pit.numpy(), bins=20, range=(0, 1), density=True, color="tab:blue", alpha=0.8)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="calibrated (uniform)")
    ax.set(title=title, xlabel="PIT value", ylabel="density")
    ax.legend(fontsize=8)
