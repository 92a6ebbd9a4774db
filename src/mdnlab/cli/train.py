"""mdn-train: compose the config, check it, fit, score the chosen checkpoint on the test split,
and leave everything in the run directory (config, TensorBoard events, checkpoints,
metrics.json, run.json, figures)."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mdnlab.cli import rundir, usage
from mdnlab.cli.config import CONFIG_DIR, check_run, has_validation, instantiate_checked
from mdnlab.cli.entry import check_log_folder, quiet_lightning, resume_arguments, run_entry_point
from mdnlab.errors import ConfigError, Interrupted, NonFiniteLossError


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit one experiment; returns its final metrics (empty on ranks other than 0). A run
    directory that already holds this config's finished run is left as it is (rundir.check)."""
    run_dir = Path(cfg.paths.output_dir)
    finished = rundir.check(cfg, run_dir)  # before anything (Lightning included) writes or logs
    if finished is not None:
        return finished
    datamodule, model, trainer = build(cfg)
    resume_from = _resume_from(cfg, model, run_dir)
    rundir.start(cfg, run_dir)
    if trainer.is_global_zero:
        if OmegaConf.select(cfg, "extras.print_config"):
            rundir.print_config_tree(cfg, run_dir)
        tags = f" | tags: {', '.join(map(str, cfg.tags))}" if cfg.get("tags") else ""
        say(f"run dir: {run_dir}", rundir.config_summary(cfg) + tags, f"watch it: tensorboard --logdir {run_dir}")
    start = time.perf_counter()
    _fit(trainer, model, datamodule, resume_from, run_dir)
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    return finish(cfg, trainer, model, datamodule, fit_seconds)


def _fit(trainer, model, datamodule, resume_from: str | None, run_dir: Path) -> None:
    """Trainer.fit, with a SIGTERM (Lightning stops after the epoch, having checkpointed it) or
    a diverged loss as one line that says what the run directory holds."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:
        raise Interrupted(f"stopped by SIGTERM after {trainer.current_epoch} epochs (global step "
                          f"{trainer.global_step}); {_last_state(run_dir)}: continue with mdn-train "
                          f"resume={run_dir}") from None
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error}; {_last_state(run_dir)}") from None


def _last_state(run_dir: Path) -> str:
    from mdnlab import checkpoint

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written before it"
    return f"{last} holds the state of global step {checkpoint.read(last)['global_step']}"


def build(cfg: DictConfig):
    """Check the config, seed, and instantiate (datamodule, model, trainer) from it."""
    check_run(cfg)
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from mdnlab.checkpoint import SafeCheckpointIO

    quiet_lightning()
    if cfg.get("torch_threads") is not None:
        torch.set_num_threads(int(cfg.torch_threads))
        os.environ["OMP_NUM_THREADS"] = str(int(cfg.torch_threads))  # for spawned DDP ranks too
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # seed 0 is a seed
    datamodule, model = instantiate_checked(cfg)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = _callbacks(cfg, f"val/{model.metric}", has_logger=bool(loggers),
                           validates=has_validation(cfg))
    plugins = [SafeCheckpointIO()]  # every checkpoint read and written safely (see the class)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        # submitit owns requeueing (hydra.launcher.max_num_timeout); Lightning must not also
        # catch SLURM's signal and requeue the job a second time
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    return datamodule, model, trainer


def _resume_from(cfg: DictConfig, model, run_dir: Path) -> str | None:
    """ckpt_path, or (auto_resume) the run directory's own last.ckpt when its run.json records
    this config: a requeued cluster job starts again in the same directory and picks up where
    it was stopped. Either is checked to hold this model's weights before anything is written."""
    from mdnlab import checkpoint

    if cfg.get("ckpt_path") is not None:
        path = str(cfg.ckpt_path)
    else:
        last = run_dir / "checkpoints" / "last.ckpt"
        if not (cfg.get("auto_resume", True) and last.is_file()):
            return None
        if not rundir.holds_a_record(run_dir):
            raise ConfigError("hydra.run.dir", str(run_dir), f"a new directory, or one whose run.json records "
                              f"this config ({last} is there, with no record of the config that wrote it); "
                              f"continue that run with mdn-train resume={run_dir}")
        path = str(last)
    checkpoint.check_fits(path, model, int(cfg.trainer.max_epochs))
    return path


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
    if not has_logger or OmegaConf.select(cfg, "model.scheduler") is None:
        # nowhere to write (Lightning refuses it), or nothing to show but a constant learning rate
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


# ---- after the fit: the steps of finish ------------------------------------------------------

def finish(cfg: DictConfig, trainer, model, datamodule, fit_seconds: float) -> dict[str, float]:
    """Score the chosen checkpoint, record the results, log them, draw the figures."""
    run_dir = Path(cfg.paths.output_dir)
    tested_path = choose_checkpoint(cfg, trainer)
    tested_model = _load(tested_path) if tested_path else model.cpu()
    say(f"scoring the test split ({Path(tested_path).name if tested_path else 'final weights'})")
    metrics = score(tested_model, datamodule, trainer, model.metric)
    rundir.record(cfg, run_dir, metrics, tested_path, fit_seconds)
    log_results(trainer, cfg, metrics, model.metric)
    if cfg.get("figures", True):
        say("drawing figures")
        log_figures(trainer, draw_figures(tested_model, datamodule, run_dir, int(cfg.seed)))
    for logger in trainer.loggers:
        logger.save()
    rundir.write_hparams(run_dir, rundir.hparams_of(cfg))
    say(f"run dir: {run_dir}", summary_line(metrics))
    return metrics


def say(*lines: str) -> None:
    """Print ``lines`` as they are, and add them to the run's log file (train.log) too."""
    import logging

    for line in lines:
        print(line)
        record = logging.LogRecord("mdnlab", logging.INFO, __file__, 0, line, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def choose_checkpoint(cfg: DictConfig, trainer) -> str:
    """The checkpoint test_checkpoint asks for: best on val/<metric>, or last.ckpt (auto: best
    when the run has a validation split); "" when none was written (the model as it is)."""
    choice = cfg.get("test_checkpoint", "auto")
    if choice == "auto":
        choice = "best" if has_validation(cfg) else "last"
    if choice == "last":  # the weights as training left them
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else ""
    checkpoint = trainer.checkpoint_callback
    return getattr(checkpoint, "best_model_path", "") if checkpoint else ""


def _load(path: str):
    from mdnlab import checkpoint

    return checkpoint.load(path)[0]


def score(model, datamodule, trainer, metric: str) -> dict[str, float]:
    """Test metrics of ``model``, with the best validation score and the training length."""
    from mdnlab.eval.metrics import evaluate

    metrics = evaluate(model, datamodule, "test")
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_score", None) if checkpoint else None
    if best is None:
        best = trainer.callback_metrics.get(f"val/{metric}")
    metrics[f"val/best_{metric}"] = float(best) if best is not None else float("nan")
    metrics["train/epochs"] = float(trainer.current_epoch)
    metrics["train/steps"] = float(trainer.global_step)
    return metrics


def log_results(trainer, cfg: DictConfig, metrics: dict[str, float], metric: str) -> None:
    """Test scores at the last optimiser step; the run's knobs and scores for HPARAMS; the
    config and the final metrics as one text page (TensorBoard's TEXT tab)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    scores = {f"hp/best_val_{metric}": metrics[f"val/best_{metric}"], f"hp/test_{metric}": metrics[f"test/{metric}"]}
    # a NaN (no validation split) would hide the run from HPARAMS' parallel-coordinates view
    scores = {k: v for k, v in scores.items() if math.isfinite(v)}
    for logger in trainer.loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")}, step=trainer.global_step)
        if isinstance(logger, TensorBoardLogger):
            _hparams_session(logger.experiment, rundir.hparams_of(cfg), scores, trainer.global_step)
            logger.experiment.add_text("run", rundir.summary_markdown(cfg, metrics), trainer.global_step)
        else:  # CSV, MLflow, W&B: their own hyperparameter records
            logger.log_hyperparams(rundir.hparams_of(cfg))
            logger.log_metrics(scores, step=trainer.global_step)


def _hparams_session(writer, hparams: dict, scores: dict, step: int) -> None:
    """This run as one HPARAMS session, without the per-run experiment summary that Lightning's
    log_hyperparams adds: TensorBoard takes the first such summary it finds for the whole
    folder, which hides the columns other runs vary; without one it builds the table from all
    sessions and puts the hyperparameters that differ first. Written by hand for that reason."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    _, session_start, session_end = hparams_summary(hparams, scores)
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end)
    for name, value in scores.items():
        writer.add_scalar(name, value, step)


def draw_figures(model, datamodule, run_dir: Path, seed: int) -> dict:
    """The figures as PNG files in <run dir>/figures; their pixels for the loggers. The
    least-squares fits they show are the project's MSERegression, fitted here."""
    from mdnlab.eval import figures

    least_squares = fit_least_squares_views(datamodule, seed) if figures.shows_least_squares(datamodule) else []
    drawn = figures.draw_all(model, datamodule, least_squares, seed=seed)
    return figures.render_all(drawn, run_dir / "figures")


def fit_least_squares_views(datamodule, seed: int) -> list[tuple]:
    """[(problem, inputs, targets, MSERegression fitted to them)] for every direction in which
    the problem reads its training split (the sinusoid: forward and inverted)."""
    from mdnlab.models import fit_least_squares

    datamodule.prepare_splits()
    inputs, targets = datamodule.raw["train"]
    return [(problem, x, t, fit_least_squares(x, t, seed))
            for problem, x, t in datamodule.problem.directions(inputs, targets)]


def log_figures(trainer, figures: dict) -> None:
    for logger in trainer.loggers:
        if hasattr(logger.experiment, "add_image"):
            for name, rgb in figures.items():
                logger.experiment.add_image(f"figures/{name}", rgb, trainer.global_step, dataformats="HWC")


def summary_line(metrics: dict[str, float]) -> str:
    parts = [f"test/nll {metrics['test/nll']:.4f}"]
    if "test/oracle_nll" in metrics:
        parts.append(f"oracle {metrics['test/oracle_nll']:.4f} "
                     f"(excess {metrics['test/excess_nll']:.4f})")
    parts.append(f"test/mse {metrics['test/mse']:.4f}")
    return " | ".join(parts)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = run_entry_point(train, cfg) or {}
    # What a sweeper (e.g. Optuna) minimises: the validation score, never a test number.
    return metrics.get("val/best_nll", metrics.get("val/best_mse"))


def main() -> None:
    """mdn-train [overrides] | mdn-train resume=<run dir> | mdn-train -m <sweep overrides>"""
    usage.help_if_asked(usage.TRAIN)
    sys.argv = resume_arguments(sys.argv)
    check_log_folder(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
