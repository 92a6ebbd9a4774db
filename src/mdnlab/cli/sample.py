"""mdn-sample ckpt_path=<file> inputs=[-5,0,5]: for each input, draws from the predictive
mixture and its summary (mean, standard deviation, modes, π, μ, σ, density on a grid), written
to samples.npz or to CSV files in this command's run directory, listed in its run.json."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from mdnlab.cli import usage
from mdnlab.cli.entry import check_log_folder, run_entry_point
from mdnlab.config import CONFIG_DIR, check_seed
from mdnlab.errors import ConfigError, fits_in_memory, integer

FORMATS = ("npz", "csv")


def sample_checkpoint(cfg: DictConfig) -> list[Path]:
    from mdnlab import checkpoint
    from mdnlab.eval.predictive import predictive_summary, target_span
    from mdnlab.io import write_json_atomic

    check_seed("seed", cfg.seed)
    if cfg.format not in FORMATS:
        raise ConfigError("format", cfg.format, "one of " + ", ".join(FORMATS))
    for key in ("n_samples", "grid_points"):
        integer(key, cfg[key], 1)
    if isinstance(cfg.temperature, bool) or not isinstance(cfg.temperature, (int, float)) or not cfg.temperature > 0:
        raise ConfigError("temperature", cfg.temperature, "a number > 0")
    model, datamodule = checkpoint.load(cfg.ckpt_path)
    if cfg.temperature != 1 and not hasattr(model, "predictive_mixture"):
        raise ConfigError(
            "temperature", cfg.temperature, "1 for a model that is not a mixture (it tempers the choice of component)"
        )
    inputs = parse_inputs(cfg.inputs, model.input_mean.numel())
    per_draw = 8 * 4 * model.target_dim  # float64 draws, and their copies on the way to a file
    fits_in_memory("n_samples", cfg.n_samples, len(inputs) * cfg.n_samples * per_draw, len(inputs) * per_draw)
    low, high = target_span(model, datamodule)
    summary = predictive_summary(
        model, inputs, cfg.n_samples, int(cfg.seed), float(cfg.temperature), low, high, cfg.grid_points
    )
    out = Path(cfg.paths.output_dir)
    paths = [write_npz(summary, out / "samples.npz")] if cfg.format == "npz" else write_csv(summary, out)
    if cfg.get("plot"):
        paths.append(plot(summary, datamodule, model.target_dim, out / "predictive.png"))
    write_json_atomic(
        out / "run.json", {"run_dir": str(out), "ckpt_path": str(cfg.ckpt_path), "files": [str(p) for p in paths]}
    )
    for n, x in enumerate(inputs.tolist()):
        print(
            f"input {_fmt(x)}: mean {_fmt(summary['mean'][n].tolist())}, "
            f"std {_fmt(summary['std'][n].tolist())}, "
            f"most probable mode {_fmt(summary['most_probable_mode'][n].tolist())}"
        )
    print("written:", *map(str, paths), sep="\n  ")
    return paths


def plot(summary: dict[str, torch.Tensor], datamodule, target_dim: int, path: Path) -> Path:
    from mdnlab.eval.figures.predictive import predictive_figure
    from mdnlab.eval.figures.style import plt

    names = datamodule.target_names if datamodule is not None else [f"target {j}" for j in range(target_dim)]
    figure = predictive_figure(summary, names)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_npz(summary: dict[str, torch.Tensor], path: Path) -> Path:
    import numpy as np

    np.savez(path, **{k: v.numpy() for k, v in summary.items()})
    return path


def write_csv(summary: dict[str, torch.Tensor], directory: Path) -> list[Path]:
    """summary.csv (a row per input), samples.csv (a row per draw), density.csv (a row per grid
    point and target). With one input or one target, its columns carry no index suffix."""
    n = len(summary["mean"])
    one_target = summary["mean"].dim() == 1
    d = 1 if one_target else summary["mean"].shape[-1]
    inputs = summary["inputs"].reshape(n, -1)
    in_cols = ["input"] if inputs.shape[1] == 1 else [f"input_{i}" for i in range(inputs.shape[1])]

    def cols(name: str, *counts: int) -> list[str]:  # name, name_0, name_0_1, ... (targets last)
        shown = counts[:-1] if one_target else counts
        index = [[]]
        for count in shown:
            index = [i + [j] for i in index for j in range(count)]
        return [name + "".join(f"_{j}" for j in i) for i in index]

    columns = lambda key: summary[key].reshape(n, -1)  # noqa: E731
    header = in_cols + cols("mean", d) + cols("std", d) + cols("most_probable_mode", d)
    body = [inputs, columns("mean"), columns("std"), columns("most_probable_mode")]
    if "pi" in summary:  # a mixture: its parameters too
        k = summary["pi"].shape[1]
        scale = summary["sigma"] if one_target else summary["scale"]
        scale_name = "sigma" if scale[0, 0].numel() == d else "scale_tril"  # D σ's or a D×D factor
        header += [f"pi_{c}" for c in range(k)] + cols("mu", k, d) + cols(scale_name, k, scale[0, 0].numel())
        body += [columns("pi"), columns("mu"), scale.reshape(n, -1)]
    draws = summary["samples"].reshape(n, -1, d)
    samples = [[*inputs[r].tolist(), *draw] for r in range(n) for draw in draws[r].tolist()]
    tables = {
        "summary.csv": (header, torch.cat(body, 1).tolist()),
        "samples.csv": (in_cols + cols("sample", d), samples),
    }
    if "density" not in summary and "marginal_density" not in summary:
        return _write_tables(tables, directory)
    grid = summary["grid"].reshape(-1, d)
    density = (summary["density"] if one_target else summary["marginal_density"]).reshape(n, d, -1)
    density_rows = [
        [*inputs[r].tolist(), *([] if one_target else [j]), t, p]
        for r in range(n)
        for j in range(d)
        for t, p in zip(grid[:, j].tolist(), density[r, j].tolist())
    ]
    density_cols = ["target", "density"] if one_target else ["target_index", "target", "marginal_density"]
    return _write_tables({**tables, "density.csv": (in_cols + density_cols, density_rows)}, directory)


def _write_tables(rows: dict[str, tuple[list, list]], directory: Path) -> list[Path]:
    paths = []
    for name, (header, body) in rows.items():
        with open(directory / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body)
        paths.append(directory / name)
    return paths


def parse_inputs(values, input_dim: int) -> torch.Tensor:
    """inputs=[-5,0,5] for one input; inputs=[[0.5,0.3],[0.6,0.2]] (rows) for several."""
    example = (
        "inputs=[-5,0,5]"
        if input_dim == 1
        else "inputs=[" + ",".join(["[" + ",".join(["0.5"] * input_dim) + "]"] * 2) + "]"
    )
    allowed = f"a non-empty list of finite numbers, one row of {input_dim} per input, e.g. {example}"
    try:
        rows = [[float(v)] if input_dim == 1 and not _is_list(v) else [float(c) for c in v] for v in values]
    except (TypeError, ValueError):
        raise ConfigError("inputs", _plain(values), allowed) from None
    inputs = torch.tensor(rows, dtype=torch.float64)
    if not rows or inputs.shape[1] != input_dim or not torch.isfinite(inputs).all():
        raise ConfigError("inputs", _plain(values), allowed)
    return inputs.reshape(-1) if input_dim == 1 else inputs


def _is_list(value) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")


def _plain(values):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(values) if OmegaConf.is_config(values) else values


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else "(" + ", ".join(f"{v:.4g}" for v in value) + ")"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
def _hydra_main(cfg: DictConfig) -> None:
    run_entry_point(sample_checkpoint, cfg)


def main() -> None:
    usage.help_if_asked(usage.SAMPLE)
    check_log_folder(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
