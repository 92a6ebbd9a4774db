"""mdn-sample ckpt_path=<file> inputs=[-5,0,5]: for each input, draws from the predictive
mixture and its summary (mean, standard deviation, modes, π, μ, σ, density on a grid), written
to samples.npz or to CSV files in this command's run directory."""

from __future__ import annotations

import csv
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from mdnlab.config import CONFIG_DIR, ConfigError
from mdnlab.entry import run_entry_point

FORMATS = ("npz", "csv")


def predictive_summary(model, datamodule, inputs: torch.Tensor, n_samples: int, seed: int,
                       temperature: float, grid_points: int) -> dict[str, torch.Tensor]:
    """Everything mdn-sample writes, as float64 tensors keyed by name."""
    from mdnlab import mixture
    from mdnlab.evaluation import predict

    logits, mu, sigma = predict(model, inputs.reshape(-1, 1).float())
    generator = torch.Generator().manual_seed(seed)
    modes, mode_log_density = mixture.modes(logits, mu, sigma)
    datamodule.prepare_splits()
    targets = datamodule.raw["train"][1].reshape(-1).double()
    pad = 0.1 * float(targets.max() - targets.min())
    grid = torch.linspace(float(targets.min()) - pad, float(targets.max()) + pad, grid_points,
                          dtype=torch.float64)
    density = mixture.log_prob(logits.unsqueeze(1), mu.unsqueeze(1), sigma.unsqueeze(1),
                               grid.reshape(1, -1)).exp()
    return {
        "inputs": inputs.double(),
        "samples": mixture.sample(logits, mu, sigma, n_samples, generator=generator,
                                  temperature=temperature),
        "mean": mixture.mean(logits, mu),
        "std": mixture.variance(logits, mu, sigma).sqrt(),
        "most_probable_mode": mixture.most_probable_mode(logits, mu, sigma),
        "modes": modes,
        "modes_log_density": mode_log_density,
        "pi": torch.softmax(logits, -1),
        "mu": mu,
        "sigma": sigma,
        "grid": grid,
        "density": density,
    }


def write_npz(summary: dict[str, torch.Tensor], path: Path) -> Path:
    import numpy as np

    np.savez(path, **{k: v.numpy() for k, v in summary.items()})
    return path


def write_csv(summary: dict[str, torch.Tensor], directory: Path) -> list[Path]:
    k = summary["pi"].shape[-1]
    rows = {"summary.csv": (["input", "mean", "std", "most_probable_mode"]
                            + [f"{p}_{i}" for p in ("pi", "mu", "sigma") for i in range(k)], [])}
    for n, x in enumerate(summary["inputs"].tolist()):
        rows["summary.csv"][1].append(
            [x, *(summary[c][n].item() for c in ("mean", "std", "most_probable_mode")),
             *(summary[p][n, i].item() for p in ("pi", "mu", "sigma") for i in range(k))])
    rows["samples.csv"] = (["input", "sample"], [[x, s] for n, x in enumerate(summary["inputs"].tolist())
                                                 for s in summary["samples"][n].tolist()])
    rows["density.csv"] = (["input", "target", "density"],
                           [[x, t, d] for n, x in enumerate(summary["inputs"].tolist())
                            for t, d in zip(summary["grid"].tolist(), summary["density"][n].tolist())])
    paths = []
    for name, (header, body) in rows.items():
        with open(directory / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body)
        paths.append(directory / name)
    return paths


def sample_checkpoint(cfg: DictConfig) -> list[Path]:
    from mdnlab import checkpoint

    if cfg.format not in FORMATS:
        raise ConfigError("format", cfg.format, "one of " + ", ".join(FORMATS))
    for key in ("n_samples", "grid_points"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(key, cfg[key], "an integer ≥ 1")
    if isinstance(cfg.temperature, bool) or not isinstance(cfg.temperature, (int, float)) \
            or not cfg.temperature > 0:
        raise ConfigError("temperature", cfg.temperature, "a number > 0")
    try:
        inputs = torch.tensor([float(v) for v in cfg.inputs], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ConfigError("inputs", cfg.inputs, "a list of numbers, e.g. inputs=[-5,0,5]") from None
    if inputs.numel() == 0 or not torch.isfinite(inputs).all():
        raise ConfigError("inputs", list(cfg.inputs), "a non-empty list of finite numbers")
    model, datamodule = checkpoint.load(cfg.ckpt_path)
    summary = predictive_summary(model, datamodule, inputs, cfg.n_samples, int(cfg.seed),
                                 float(cfg.temperature), cfg.grid_points)
    out = Path(cfg.paths.output_dir)
    paths = [write_npz(summary, out / "samples.npz")] if cfg.format == "npz" else write_csv(summary, out)
    for n, x in enumerate(inputs.tolist()):
        print(f"input {x:g}: mean {summary['mean'][n]:.4f}, std {summary['std'][n]:.4f}, "
              f"most probable mode {summary['most_probable_mode'][n]:.4f}")
    print("written:", *map(str, paths), sep="\n  ")
    return paths


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
def main(cfg: DictConfig) -> None:
    run_entry_point(sample_checkpoint, cfg)


if __name__ == "__main__":
    main()
