"""After a fit: score the chosen weights on the test split, record the results, log them, draw
the figures. Shared by a run trained alone (``training.single``, from its Lightning Trainer)
and a job trained in a stack (``training.stacks``), which leave the same files behind."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mdnlab.config import has_validation
from mdnlab.runs import rundir


@dataclass
class Fit:
    """What a finished fit hands on: its loggers, how far it went, its best checkpoint."""

    loggers: list[Any]
    global_step: int
    epochs: int
    seconds: float
    best_path: str = ""  # the best checkpoint on val/<metric>, if one was written
    best_score: float | None = None  # its val/<metric>, else the last one measured, if any
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_trainer(cls, trainer: Any, metric: str, seconds: float) -> "Fit":
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None) if checkpoint else None
        if best is None:
            best = trainer.callback_metrics.get(f"val/{metric}")
        steps, epochs = trainer.global_step, trainer.current_epoch
        last = Path(str(trainer.default_root_dir)) / "checkpoints" / "last.ckpt"
        if steps == 0 and trainer.world_size > 1 and last.is_file():
            # spawned ranks (trainer=ddp_cpu) hand back weights and metrics, not the loop's counters
            from mdnlab import checkpoint as checkpoints

            saved = checkpoints.read(last)
            steps, epochs = int(saved["global_step"]), int(saved["epoch"]) + 1
        return cls(
            list(trainer.loggers),
            steps,
            epochs,
            seconds,
            getattr(checkpoint, "best_model_path", "") if checkpoint else "",
            float(best) if best is not None else None,
        )


def finish(cfg: DictConfig, fit: Fit, model: Any, datamodule: Any) -> dict[str, float]:
    """Score the chosen checkpoint, record the results, log them, draw the figures."""
    run_dir = Path(cfg.paths.output_dir)
    tested_path = choose_checkpoint(cfg, fit)
    tested_model = _load(tested_path) if tested_path else model.cpu()
    say(f"scoring the test split ({Path(tested_path).name if tested_path else 'final weights'})")
    metrics = score(tested_model, datamodule, fit, model.metric)
    draws = None
    if hasattr(datamodule, "posterior_settings"):  # an inverse problem with reference posteriors (sbibm)
        say("scoring the posterior at the task's observations")
        posterior_metrics, draws = score_posterior(tested_model, datamodule, run_dir, int(cfg.seed))
        metrics.update(posterior_metrics)
    rundir.record(cfg, run_dir, metrics, tested_path, fit.seconds)
    log_results(fit, cfg, metrics, model.metric)
    if cfg.get("figures", True):
        say("drawing figures")
        if draws is not None:  # the posterior's corner figure at each observation
            figures = draw_corners(tested_model, datamodule, draws, run_dir)
        else:
            figures = draw_figures(tested_model, datamodule, run_dir, int(cfg.seed))
        log_figures(fit, figures)
    for logger in fit.loggers:
        logger.save()
    rundir.write_hparams(run_dir, rundir.hparams_of(cfg))
    say(f"run dir: {run_dir}", summary_line(metrics))
    return metrics


def finish_pruned(cfg: DictConfig, fit: Fit, metric: str, step: int, epoch: int) -> dict[str, float]:
    """A run the search's pruner stopped: its best validation score and where it stopped, in
    metrics.json and run.json; no test split scored (the search is done with it)."""
    from mdnlab.runs.search import pruned_metrics

    run_dir = Path(cfg.paths.output_dir)
    metrics = pruned_metrics(fit.best_score, metric, step, epoch, fit.epochs)
    rundir.record(cfg, run_dir, metrics, fit.best_path, fit.seconds)
    for logger in fit.loggers:
        logger.log_metrics({"search/pruned_epoch": float(epoch)}, step=step)
        logger.save()
    say(f"pruned by the search at validation check {epoch} (global step {step}): {run_dir}")
    return metrics


def say(*lines: str) -> None:
    """Print ``lines`` as they are, and add them to the run's log file (train.log) too."""
    for line in lines:
        print(line)
        record = logging.LogRecord("mdnlab", logging.INFO, __file__, 0, line, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def choose_checkpoint(cfg: DictConfig, fit: Fit) -> str:
    """The checkpoint test_checkpoint asks for: best on val/<metric>, or last.ckpt (auto: best
    when the run has a validation split); "" when none was written (the model as it is)."""
    choice = cfg.get("test_checkpoint", "auto")
    if choice == "auto":
        choice = "best" if has_validation(cfg) else "last"
    if choice == "last":  # the weights as training left them
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else ""
    return fit.best_path or ""


def _load(path: str) -> Any:
    from mdnlab import checkpoint

    return checkpoint.load(path)[0]


def score(model: Any, datamodule: Any, fit: Fit, metric: str) -> dict[str, float]:
    """Test metrics of ``model``, with the best validation score and the training length."""
    from mdnlab.eval.metrics import evaluate

    metrics = evaluate(model, datamodule, "test")
    metrics[f"val/best_{metric}"] = fit.best_score if fit.best_score is not None else float("nan")
    metrics["train/epochs"] = float(fit.epochs)
    metrics["train/steps"] = float(fit.global_step)
    return metrics


def score_posterior(model: Any, datamodule: Any, run_dir: Path, seed: int) -> tuple[dict[str, float], dict[int, Any]]:
    """The posterior's scores at each observation (``eval.posterior``), written before the
    run's record: posterior.csv (one row per observation) and posterior_samples.pt (the draws,
    {observation: (n, D) tensor}, so that tables rebuild without retraining). With them,
    val/nll_theta and test/nll_theta: the NLL of θ in its own units (``posterior.theta_nll``)."""
    import csv
    import io

    import torch

    from mdnlab.eval import posterior
    from mdnlab.io import atomic_file, write_text_atomic

    rows, draws = posterior.score(model, seed=seed, **datamodule.posterior_settings())
    with atomic_file(run_dir / "posterior_samples.pt", "wb") as handle:
        torch.save(draws, handle)
    table = io.StringIO()
    writer = csv.DictWriter(table, ["observation", "c2st", "nltp", "mmd", "acceptance"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "posterior.csv", table.getvalue())
    metrics = posterior.summary(rows)
    for split in ("val", "test"):  # the NLL in θ's own units, the same for every support
        inputs, targets = datamodule.raw[split]
        if len(inputs):
            metrics[f"{split}/nll_theta"] = posterior.theta_nll(model, datamodule.task, inputs, targets, seed)
    if datamodule.target_box() is not None and "test/nll_theta" in metrics:
        # trained truncated (data.support=truncate): its density is the truncated one, and θ is
        # what it fits, so test/nll is that density's NLL, as val/nll was during training
        metrics["test/nll"] = metrics["test/nll_theta"]
    return metrics, draws


def draw_corners(model: Any, datamodule: Any, draws: dict[int, Any], run_dir: Path) -> dict[str, Any]:
    """corner_<k>.png for each observation k: the reference against the model's draws."""
    from mdnlab.eval import figures
    from mdnlab.eval.figures.corner import corner_figure
    from mdnlab.eval.posterior import posterior_at

    task = datamodule.task
    drawn = {
        f"corner_{k}": corner_figure(
            posterior_at(model, task, task.observation(k)),
            task.reference_samples(k),
            samples,
            datamodule.target_names,
            task.true_parameters(k)[0],
            f"{task.task}, observation {k}\nreference (grey), MDN (orange)",
        )
        for k, samples in draws.items()
    }
    return figures.render_all(drawn, run_dir / "figures")


def log_results(fit: Fit, cfg: DictConfig, metrics: dict[str, float], metric: str) -> None:
    """Test scores at the last optimiser step; the run's knobs and scores for HPARAMS; the
    config and the final metrics as one text page (TensorBoard's TEXT tab)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    scores = {f"hp/best_val_{metric}": metrics[f"val/best_{metric}"], f"hp/test_{metric}": metrics[f"test/{metric}"]}
    # a NaN (no validation split) would hide the run from HPARAMS' parallel-coordinates view
    scores = {k: v for k, v in scores.items() if math.isfinite(v)}
    for logger in fit.loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")}, step=fit.global_step)
        if isinstance(logger, TensorBoardLogger):
            _hparams_session(logger.experiment, rundir.hparams_of(cfg), scores, fit.global_step)
            logger.experiment.add_text("run", rundir.summary_markdown(cfg, metrics), fit.global_step)
        else:  # CSV, MLflow, W&B: their own hyperparameter records
            logger.log_hyperparams(rundir.hparams_of(cfg))
            logger.log_metrics(scores, step=fit.global_step)


def _hparams_session(writer: Any, hparams: dict[str, Any], scores: dict[str, float], step: int) -> None:
    """This run as one HPARAMS session, without the per-run experiment summary that Lightning's
    log_hyperparams adds: TensorBoard takes the first such summary it finds for the whole
    folder, which hides the columns other runs vary; without one it builds the table from all
    sessions and puts the hyperparameters that differ first. Written by hand for that reason."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    _, session_start, session_end = hparams_summary(hparams, scores)  # type: ignore[no-untyped-call]
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end)
    for name, value in scores.items():
        writer.add_scalar(name, value, step)


def draw_figures(model: Any, datamodule: Any, run_dir: Path, seed: int) -> dict[str, Any]:
    """The figures as PNG files in <run dir>/figures; their pixels for the loggers. The
    least-squares fits they show are the project's MSERegression, fitted here."""
    from mdnlab.eval import figures

    least_squares = fit_least_squares_views(datamodule, seed) if figures.shows_least_squares(datamodule) else []
    drawn = figures.draw_all(model, datamodule, least_squares, seed=seed)
    return figures.render_all(drawn, run_dir / "figures")


def fit_least_squares_views(datamodule: Any, seed: int) -> list[tuple[Any, ...]]:
    """[(problem, inputs, targets, MSERegression fitted to them)] for every direction in which
    the problem reads its training split (the sinusoid: forward and inverted)."""
    from mdnlab.models import fit_least_squares

    datamodule.prepare_splits()
    inputs, targets = datamodule.raw["train"]
    return [
        (problem, x, t, fit_least_squares(x, t, seed))
        for problem, x, t in datamodule.problem.directions(inputs, targets)
    ]


def log_figures(fit: Fit, figures: dict[str, Any]) -> None:
    for logger in fit.loggers:
        if hasattr(logger.experiment, "add_image"):
            for name, rgb in figures.items():
                logger.experiment.add_image(f"figures/{name}", rgb, fit.global_step, dataformats="HWC")


def summary_line(metrics: dict[str, float]) -> str:
    parts = [f"test/nll {metrics['test/nll']:.4f}"]
    if "test/oracle_nll" in metrics:
        parts.append(f"oracle {metrics['test/oracle_nll']:.4f} (excess {metrics['test/excess_nll']:.4f})")
    parts.append(f"test/mse {metrics['test/mse']:.4f}")
    if "test/c2st" in metrics:
        parts.append(f"test/c2st {metrics['test/c2st']:.4f} (mean over the observations)")
    return " | ".join(parts)
