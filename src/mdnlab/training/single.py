"""One model trained by a Lightning Trainer, from a composed config to its run directory: check
the directory, build (data, model, trainer), resume where a checkpoint says, fit, then hand the
fit to ``runs.finish`` (test scores, records, figures)."""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mdnlab.config import check_run, has_validation, instantiate_checked
from mdnlab.errors import ConfigError, Interrupted, NonFiniteLossError
from mdnlab.runs import rundir
from mdnlab.runs.finish import Fit, finish, finish_pruned, say


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
        say(
            f"run dir: {run_dir}",
            rundir.config_summary(cfg) + tags,
            f"watch it: tensorboard --logdir {run_dir}",
            *([_resumes(resume_from)] if resume_from else []),
        )
    start = time.perf_counter()
    _fit(trainer, model, datamodule, resume_from, run_dir)
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    fit = Fit.of_trainer(trainer, model.metric, fit_seconds)
    pruning = next((c for c in trainer.callbacks if isinstance(c, prune_trial_class())), None)
    if pruning is not None and pruning.pruned_at is not None:
        return finish_pruned(cfg, fit, model.metric, *pruning.pruned_at)
    return finish(cfg, fit, model, datamodule)


def _pruning_callback(cfg: DictConfig, monitor: str) -> list[Any]:
    """In a search (``cfg.search``), the callback that reports to the trial and prunes it."""
    from mdnlab.runs.search import TrialLink

    link = TrialLink.of(cfg)
    # a trial of several jobs (repeats) is scored as their mean: only a stack holds them together
    return [] if link is None or link.jobs > 1 else [prune_trial_class()(link, monitor)]


@functools.cache
def prune_trial_class() -> type:
    """The pruning callback's class, made on first use: Lightning is imported only to train."""
    import lightning as L

    class _PruneTrial(L.Callback):
        """Reports ``monitor`` to the search's trial after each validation and stops the fit
        where the study's pruner says (``pruned_at``: global step, validation check). Hand-written
        rather than optuna-integration's callback: the same ``TrialLink`` serves the stacked loop,
        which has no callbacks, so both loops report and prune the same way."""

        def __init__(self, link: Any, monitor: str) -> None:
            self.link, self.monitor = link, monitor
            self.pruned_at: tuple[int, int] | None = None
            self.best = math.inf

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            value = trainer.callback_metrics.get(self.monitor)
            if trainer.sanity_checking or value is None or self.pruned_at is not None:
                return
            check = trainer.current_epoch + 1
            self.best = min(self.best, float(value)) if math.isfinite(float(value)) else self.best
            self.link.report(self.best, check)  # the best so far, as the stacked loop reports it
            if self.link.should_prune():
                self.pruned_at = (trainer.global_step, check)
                trainer.should_stop = True

    return _PruneTrial


def _fit(trainer, model, datamodule, resume_from: str | None, run_dir: Path) -> None:
    """Trainer.fit, with a SIGTERM (Lightning stops after the epoch, having checkpointed it) or
    a diverged loss as one line that says what the run directory holds."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:
        raise Interrupted(
            f"stopped by SIGTERM after {trainer.current_epoch} epochs (global step "
            f"{trainer.global_step}); {_last_state(run_dir)}: continue with mdn-train "
            f"resume={run_dir}"
        ) from None
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error}; {_last_state(run_dir)}") from None


def _last_state(run_dir: Path) -> str:
    from mdnlab import checkpoint

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written before it"
    return f"{last} holds the state of global step {checkpoint.read(last)['global_step']}"


def _resumes(path: str) -> str:
    from mdnlab import checkpoint

    return f"resumes at global step {checkpoint.read(path)['global_step']} from {path}"


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
    callbacks = _callbacks(cfg, f"val/{model.metric}", has_logger=bool(loggers), validates=has_validation(cfg))
    callbacks += _pruning_callback(cfg, f"val/{model.metric}")
    plugins = [SafeCheckpointIO()]  # every checkpoint read and written safely (see the class)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        from mdnlab.training.scheduler_signals import SlurmRequeue

        # submitit owns requeueing (hydra.launcher.max_num_timeout); Lightning must not also
        # catch SLURM's signal and requeue the job a second time
        plugins.append(SLURMEnvironment(auto_requeue=False))
        # a requeue's SIGTERM is not a failure; the state at the signal is saved where auto_resume looks
        callbacks.append(SlurmRequeue(Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"))
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
            raise ConfigError(
                "hydra.run.dir",
                str(run_dir),
                f"a new directory, or one whose run.json records "
                f"this config ({last} is there, with no record of the config that wrote it); "
                f"continue that run with mdn-train resume={run_dir}",
            )
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


def quiet_lightning() -> None:
    """One copy of each Lightning message (Hydra's handlers print it), without the ads."""
    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡")
    )
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # a machine with SLURM's client (a login node, the test cluster) is not a SLURM job
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system.*")
    # a checkpoint saved between two steps resumes exactly: the epoch skips the steps it holds
    # and the draws are counter-based (models.fast_loop), so no loader state is needed
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # training_step(dataloader_iter) is deliberate (see models.fast_loop)
    warnings.filterwarnings("ignore", message=r".*dataloader_iter.*")
