"""Figures of a fitted model: they only draw. Whatever they show that needs fitting (the
least-squares baseline) is fitted by training code and passed in.

Import this package only when drawing: it loads matplotlib.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # noqa: E402  (isort: after the backend is set)

from mdnlab.eval.figures import (  # first: style sets matplotlib's file-only backend
    many,
    one,
)
from mdnlab.eval.figures.style import plt

FIGURES = ("data", "mse_fit", "mdn_bands", "mixture_parameters", "samples", "density", "pit")


def shows_least_squares(datamodule) -> bool:
    """Whether ``draw_all`` wants least-squares fits (the one-input, one-target figures)."""
    return datamodule.input_dim == 1 and datamodule.target_dim == 1


def draw_all(model, datamodule, least_squares=(), seed: int = 0) -> dict[str, Figure]:
    """The figures for a fitted model and the data it was trained on: ``FIGURES`` for one input
    and one target (``least_squares`` as ``one.draw`` takes it), ``many.draw``'s otherwise."""
    datamodule.prepare_splits()
    if shows_least_squares(datamodule):
        return one.draw(model, datamodule, least_squares, seed)
    return many.draw(model, datamodule, seed)


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
