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

    if model.target_dim > 1 or model.input_mean.numel() > 1:
        return multivariate_summary(model, datamodule, inputs, n_samples, seed, temperature, grid_points)
    logits, mu, sigma = predict(model, inputs.reshape(-1, 1).float())
    generator = torch.Generator().manual_seed(seed)
    modes, mode_log_density = mixture.modes(logits, mu, sigma)
    low, high = target_span(model, datamodule)
    grid = torch.linspace(float(low[0]), float(high[0]), grid_points, dtype=torch.float64)
    density = mixture.log_prob(logits.unsqueeze(1), mu.unsqueeze(1), sigma.unsqueeze(1),
                               grid.reshape(1, -1)).exp()
    return {
        "inputs": inputs.double(),
        "samples": mixture.sample(logits, mu, sigma, n_samples, generator=generator,
                                  temperature=temperature),
        "mean": mixture.mean(logits, mu),
        "std": mixture.variance(logits, mu, sigma).sqrt(),
        "most_probable_mode": mixture.highest_mode(modes, mode_log_density),
        "modes": modes,
        "modes_log_density": mode_log_density,
        "pi": torch.softmax(logits, -1),
        "mu": mu,
        "sigma": sigma,
        "grid": grid,
        "density": density,
    }


def multivariate_summary(model, datamodule, inputs: torch.Tensor, n_samples: int, seed: int,
                         temperature: float, grid_points: int) -> dict[str, torch.Tensor]:
    """The same summary for several inputs or targets: inputs (n, I), samples (n, S, D), mean,
    std, most_probable_mode (n, D), modes (n, K, D), pi (n, K), mu (n, K, D), scale (σ (n, K, D)
    or Cholesky factors (n, K, D, D)), and each target's marginal density on its own grid:
    grid (G, D), marginal_density (n, D, G)."""
    from mdnlab import mixture, mvmixture
    from mdnlab.evaluation import predict

    inputs = inputs.reshape(len(inputs), -1)  # one input: (n,) → (n, 1)
    logits, mu, scale = predict(model, inputs.float())
    if mu.dim() == logits.dim():  # one target: the univariate mixture as (n, K, 1)
        mu, scale = mu.unsqueeze(-1), scale.unsqueeze(-1)
    generator = torch.Generator().manual_seed(seed)
    modes, mode_log_density = mvmixture.modes(logits, mu, scale)
    low, high = target_span(model, datamodule)
    grid = torch.stack([torch.linspace(float(lo), float(hi), grid_points, dtype=torch.float64)
                        for lo, hi in zip(low, high)], -1)
    densities = []
    for d in range(mu.shape[-1]):
        m, sd = mvmixture.marginal(mu, scale, d)
        densities.append(mixture.log_prob(logits.unsqueeze(1), m.unsqueeze(1), sd.unsqueeze(1),
                                          grid[:, d].reshape(1, -1)).exp())
    return {
        "inputs": inputs.double(),
        "samples": mvmixture.sample(logits, mu, scale, n_samples, generator=generator,
                                    temperature=temperature),
        "mean": mvmixture.mean(logits, mu),
        "std": torch.diagonal(mvmixture.covariance(logits, mu, scale), dim1=-2, dim2=-1).sqrt(),
        "most_probable_mode": mvmixture.highest_mode(modes, mode_log_density),
        "modes": modes,
        "modes_log_density": mode_log_density,
        "pi": torch.softmax(logits, -1),
        "mu": mu,
        "scale": scale,
        "grid": grid,
        "marginal_density": torch.stack(densities, 1),
    }


def target_span(model, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target, the range the density grid covers: the training targets' range plus 10% each
    side for generated problems (redrawn from the seed), and mean ± 4 standard deviations of the
    training targets (kept in the checkpoint) for a user's file, so sampling never needs the file."""
    if getattr(datamodule, "problem", None) is not None:
        datamodule.prepare_splits()
        targets = datamodule.raw["train"][1].double().reshape(len(datamodule.raw["train"][1]), -1)
        low, high = targets.min(0).values, targets.max(0).values
        pad = 0.1 * (high - low)
        return low - pad, high + pad
    mean, std = model.target_mean.double(), model.target_std.double()
    return mean - 4 * std, mean + 4 * std


def write_npz(summary: dict[str, torch.Tensor], path: Path) -> Path:
    import numpy as np

    np.savez(path, **{k: v.numpy() for k, v in summary.items()})
    return path


def write_csv(summary: dict[str, torch.Tensor], directory: Path) -> list[Path]:
    if "marginal_density" in summary:
        return _write_tables(_multivariate_rows(summary), directory)
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
    return _write_tables(rows, directory)


def _multivariate_rows(summary: dict[str, torch.Tensor]) -> dict[str, tuple[list, list]]:
    n, k, d = summary["mu"].shape
    inputs = summary["inputs"].reshape(n, -1)
    in_cols = [f"input_{i}" for i in range(inputs.shape[1])]
    flat_scale = summary["scale"].reshape(n, k, -1)
    scale_name = "sigma" if summary["scale"].dim() == 3 else "scale_tril"
    header = (in_cols + [f"{c}_{j}" for c in ("mean", "std", "most_probable_mode") for j in range(d)]
              + [f"pi_{c}" for c in range(k)] + [f"mu_{c}_{j}" for c in range(k) for j in range(d)]
              + [f"{scale_name}_{c}_{j}" for c in range(k) for j in range(flat_scale.shape[-1])])
    body = [[*inputs[r].tolist(), *summary["mean"][r].tolist(), *summary["std"][r].tolist(),
             *summary["most_probable_mode"][r].tolist(), *summary["pi"][r].tolist(),
             *summary["mu"][r].reshape(-1).tolist(), *flat_scale[r].reshape(-1).tolist()]
            for r in range(n)]
    samples = [[*inputs[r].tolist(), *draw] for r in range(n) for draw in summary["samples"][r].tolist()]
    density = [[*inputs[r].tolist(), j, t, p] for r in range(n) for j in range(d)
               for t, p in zip(summary["grid"][:, j].tolist(), summary["marginal_density"][r, j].tolist())]
    return {"summary.csv": (header, body),
            "samples.csv": (in_cols + [f"sample_{j}" for j in range(d)], samples),
            "density.csv": (in_cols + ["target_index", "target", "marginal_density"], density)}


def _write_tables(rows: dict[str, tuple[list, list]], directory: Path) -> list[Path]:
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
    model, datamodule = checkpoint.load(cfg.ckpt_path)
    inputs = parse_inputs(cfg.inputs, model.input_mean.numel())
    summary = predictive_summary(model, datamodule, inputs, cfg.n_samples, int(cfg.seed),
                                 float(cfg.temperature), cfg.grid_points)
    out = Path(cfg.paths.output_dir)
    paths = [write_npz(summary, out / "samples.npz")] if cfg.format == "npz" else write_csv(summary, out)
    for n, x in enumerate(inputs.tolist()):
        print(f"input {_fmt(x)}: mean {_fmt(summary['mean'][n].tolist())}, "
              f"std {_fmt(summary['std'][n].tolist())}, "
              f"most probable mode {_fmt(summary['most_probable_mode'][n].tolist())}")
    print("written:", *map(str, paths), sep="\n  ")
    return paths


def parse_inputs(values, input_dim: int) -> torch.Tensor:
    """inputs=[-5,0,5] for one input; inputs=[[0.5,0.3],[0.6,0.2]] (rows) for several."""
    example = "inputs=[-5,0,5]" if input_dim == 1 else \
        "inputs=[" + ",".join(["[" + ",".join(["0.5"] * input_dim) + "]"] * 2) + "]"
    allowed = f"a non-empty list of finite numbers, one row of {input_dim} per input, e.g. {example}"
    try:
        rows = [[float(v)] if input_dim == 1 and not _is_list(v) else [float(c) for c in v]
                for v in values]
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
def main(cfg: DictConfig) -> None:
    run_entry_point(sample_checkpoint, cfg)


if __name__ == "__main__":
    main()
