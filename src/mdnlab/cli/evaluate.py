"""mdn-eval ckpt_path=<file>: score a checkpoint on a split of the data it was trained on,
rebuilt from the checkpoint itself; prints the metrics and writes them to metrics.json in
this command's own run directory (with run.json, as mdn-train's)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mdnlab.cli import usage
from mdnlab.cli.entry import check_log_folder, run_entry_point
from mdnlab.config import CONFIG_DIR
from mdnlab.errors import ConfigError
from mdnlab.training.single import quiet_lightning


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    from mdnlab import checkpoint
    from mdnlab.eval.metrics import evaluate
    from mdnlab.io import write_json_atomic

    if cfg.split not in ("train", "val", "test"):
        raise ConfigError("split", cfg.split, "one of train, val, test")
    quiet_lightning()
    moved = {"path": cfg.data.path} if cfg.get("data") and cfg.data.get("path") else None
    if moved and "path" not in checkpoint.read(cfg.ckpt_path).get("datamodule_hyper_parameters", {}):
        raise ConfigError("data.path", cfg.data.path, "null: only a data=table checkpoint reads a file")
    model, datamodule = checkpoint.load(cfg.ckpt_path, data=moved)
    if datamodule is None:
        raise ConfigError("ckpt_path", cfg.ckpt_path, "a checkpoint that records its datamodule")
    datamodule.prepare_splits()
    if len(datamodule.raw[cfg.split][0]) == 0:
        present = ", ".join(name for name in ("train", "val", "test") if len(datamodule.raw[name][0]))
        raise ConfigError("split", cfg.split, f"one of {present}: this checkpoint's data have no {cfg.split} split")
    metrics = evaluate(model, datamodule, cfg.split)
    out = Path(cfg.paths.output_dir)
    write_json_atomic(out / "metrics.json", {"metrics": metrics, "ckpt_path": str(cfg.ckpt_path)})
    write_json_atomic(
        out / "run.json", {"run_dir": str(out), "ckpt_path": str(cfg.ckpt_path), "split": cfg.split, "metrics": metrics}
    )
    for name, value in sorted(metrics.items()):
        print(f"{name:32s} {value:.6g}")
    print(f"written to {out / 'metrics.json'}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    run_entry_point(evaluate_checkpoint, cfg)


def main() -> None:
    usage.help_if_asked(usage.EVAL)
    check_log_folder(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
