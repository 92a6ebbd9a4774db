"""mdn-train: compose the config, validate it, fit, score the best checkpoint on the test split,
and leave everything in the run directory (config, TensorBoard events, checkpoints,
metrics.json)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mdnlab.config import CONFIG_DIR, validate
from mdnlab.entry import quiet_lightning, resume_arguments, run_entry_point



def train(cfg: DictConfig) -> dict[str, float]:
    """Fit one experiment; returns its final metrics (empty on ranks other than 0)."""
    datamodule, model, trainer = build(cfg)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=_resume_from(cfg))
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    return finish(cfg, trainer, model, datamodule, fit_seconds)


def _resume_from(cfg: DictConfig) -> str | None:
    """ckpt_path, or (auto_resume) the job directory's own last.ckpt: a requeued cluster job
    starts again in the same directory and picks up where it was stopped."""
    if cfg.get("ckpt_path") is not None:
        return str(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return str(last) if cfg.get("auto_resume", True) and last.is_file() else None


def build(cfg: DictConfig):
    """Validate the config, seed, and instantiate (datamodule, model, trainer) from it."""
    validate(cfg)
    import lightning as L
    import torch
    from hydra.utils import instantiate

    quiet_lightning()
    if cfg.get("torch_threads") is not None:
        torch.set_num_threads(int(cfg.torch_threads))
        os.environ["OMP_NUM_THREADS"] = str(int(cfg.torch_threads))  # for spawned DDP ranks too
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # seed 0 is a seed
    datamodule = instantiate(cfg.data)
    # the data decide the model's input and target sizes; optimizer/scheduler stay configs
    model = instantiate(cfg.model, input_dim=datamodule.input_dim, target_dim=datamodule.target_dim,
                        _recursive_=False)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = _callbacks(cfg, f"val/{model.metric}", has_logger=bool(loggers),
                           validates=has_validation(cfg))
    extra = {}
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        # submitit owns requeueing (hydra.launcher.max_num_timeout); Lightning must not also
        # catch SLURM's signal and requeue the job a second time
        extra["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    return datamodule, model, trainer


def has_validation(cfg: DictConfig) -> bool:
    """Whether the run's data keep a validation split (data.val_fraction > 0)."""
    return OmegaConf.select(cfg, "data.val_fraction", default=0.1) > 0


def _callbacks(cfg: DictConfig, monitor: str, has_logger: bool, validates: bool = True) -> list:
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = []
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        if callback_cfg is None:
            continue
        if "monitor" in callback_cfg and not validates:
            continue  # early stopping and the best checkpoint need a validation split
        extra = {"monitor": monitor} if "monitor" in callback_cfg else {}
        callbacks.append(instantiate(callback_cfg, **extra))
    if not has_logger:  # the LR monitor has nowhere to write (and Lightning refuses it)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def finish(cfg: DictConfig, trainer, model, datamodule, fit_seconds: float) -> dict[str, float]:
    """Score the best checkpoint, log the scores and hparams, write metrics.json."""
    from mdnlab import checkpoint as ckpt
    from mdnlab.evaluation import evaluate, write_json_atomic

    checkpoint = trainer.checkpoint_callback
    tested_path = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    choice = cfg.get("test_checkpoint", "auto")
    if choice == "auto":
        choice = "best" if has_validation(cfg) else "last"
    if choice == "last":  # the weights as training left them
        tested_path = str(last) if last.is_file() else ""
    tested_model = ckpt.load(tested_path)[0] if tested_path else model.cpu()
    metrics = evaluate(tested_model, datamodule, "test")
    run_dir = Path(cfg.paths.output_dir)
    monitor = f"val/{model.metric}"
    best_score = getattr(checkpoint, "best_model_score", None) if checkpoint else None
    if best_score is None:
        best_score = trainer.callback_metrics.get(monitor)
    metrics[f"val/best_{model.metric}"] = float(best_score) if best_score is not None else float("nan")
    metrics["train/epochs"] = float(trainer.current_epoch)
    metrics["train/steps"] = float(trainer.global_step)
    figures = draw_figures(tested_model, datamodule, run_dir, int(cfg.seed)) if cfg.get("figures", True) else {}
    for logger in trainer.loggers:
        if figures and hasattr(logger.experiment, "add_image"):
            for name, rgb in figures.items():
                logger.experiment.add_image(f"figures/{name}", rgb, trainer.global_step,
                                            dataformats="HWC")
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")},
                           step=trainer.global_step)
        logger.log_hyperparams(hparams_of(cfg), metrics={
            f"hp/best_val_{model.metric}": metrics[f"val/best_{model.metric}"],
            f"hp/test_{model.metric}": metrics[f"test/{model.metric}"]})
        logger.save()
    # metrics.json holds only what the seed determines (so two runs of one seed match byte for
    # byte); where and how long goes to run.json
    write_json_atomic(run_dir / "metrics.json", {
        "metrics": metrics, "experiment": experiment_name(), "overrides": _task_overrides()})
    write_json_atomic(run_dir / "run.json", {
        "run_dir": str(run_dir), "tested_checkpoint": tested_path, "fit_seconds": fit_seconds})
    print(f"run dir: {run_dir}")
    print(summary_line(metrics))
    return metrics


def draw_figures(model, datamodule, run_dir: Path, seed: int) -> dict:
    """The seven figures as PNG files in <run dir>/figures; their pixels for the loggers."""
    from mdnlab import figures

    return figures.render_all(figures.draw_all(model, datamodule, seed=seed), run_dir / "figures")


def summary_line(metrics: dict[str, float]) -> str:
    parts = [f"test/nll {metrics['test/nll']:.4f}"]
    if "test/oracle_nll" in metrics:
        parts.append(f"oracle {metrics['test/oracle_nll']:.4f} "
                     f"(excess {metrics['test/excess_nll']:.4f})")
    parts.append(f"test/mse {metrics['test/mse']:.4f}")
    return " | ".join(parts)


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The scalar knobs of a run, flat, for TensorBoard's HPARAMS tab."""
    flat: dict[str, Any] = {"seed": cfg.seed, "experiment": experiment_name()}
    for group in ("data", "model", "trainer"):
        container = OmegaConf.to_container(cfg.get(group) or {}, resolve=True)
        for key, value in _flatten(container, group).items():
            if isinstance(value, (int, float, str, bool)) and not key.endswith("_partial_"):
                flat[key] = value
    return flat


def _flatten(tree: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def experiment_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.choices.get("experiment") or "")


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = run_entry_point(train, cfg) or {}
    # What a sweeper (e.g. Optuna) minimises: the validation score, never a test number.
    return metrics.get("val/best_nll", metrics.get("val/best_mse"))


def main() -> None:
    """mdn-train [overrides] | mdn-train resume=<run dir> | mdn-train -m <sweep overrides>"""
    sys.argv = resume_arguments(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
