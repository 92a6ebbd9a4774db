"""mdn-train's multirun jobs trained as one stack (``hydra/launcher=stacked``).

Jobs whose configs differ only in ``stack_plan.STACKABLE`` keys (seeds, data draw or split, noise levels,
learning rate, weight decay, training length, early-stopping settings) train as one
``StackedMDN`` in one process; each still leaves its own run directory as if it had run
alone: run.json, metrics.json, best and last checkpoints that mdn-eval and mdn-sample load,
TensorBoard events and HPARAMS, error.txt when it failed. Per model, as a Lightning run does:
validation every ``check_val_every_n_epoch`` epochs, early stopping (``EarlyStopping``'s rule:
better than the best by more than min_delta, else ``patience`` checks), the best weights on
val/nll, a non-finite training loss failing that model alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from mdnlab.config import check_run, instantiate_checked
from mdnlab.errors import ConfigError, NonFiniteLossError, is_out_of_memory
from mdnlab.runs import rundir
from mdnlab.runs.finish import Fit, finish, finish_pruned, say
from mdnlab.training import stack_state
from mdnlab.training.scheduler_signals import SignalWatch
from mdnlab.training.stack_job import Job
from mdnlab.training.stacked_loop import StackedFit


def prepare(job: Job, device: torch.device) -> dict[str, float] | None:
    """What mdn-train does before its fit, for one job of a stack: its finished metrics if the
    directory holds this config's finished run, else None with the job ready to train."""
    import lightning as L
    from hydra.utils import instantiate

    job.enter()
    finished = rundir.check(job.cfg, job.run_dir)
    if finished is not None:
        return finished
    check_run(job.cfg)
    L.seed_everything(int(job.cfg.seed), workers=True, verbose=False)  # as build() seeds it: same init
    job.datamodule, job.model = instantiate_checked(job.cfg)
    job.datamodule.setup("fit")
    job.datamodule.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in job.datamodule.splits.items()}
    job.model.set_standardizer(job.datamodule.standardizer.as_dict())
    job.model.set_truncation(job.datamodule.target_box())
    rundir.start(job.cfg, job.run_dir)
    job.loggers = [instantiate(c) for c in (job.cfg.get("logger") or {}).values() if c]
    return None


def shape_of(job: Job) -> tuple[Any, ...]:
    """What must be equal for jobs to share one stack (beyond their configs)."""
    dm = job.datamodule
    return (
        tuple(dm.splits["train"][0].shape),
        tuple(dm.splits["val"][0].shape),
        dm.hparams.batch_size,
        dm.hparams.passes_per_epoch,
    )


def use_threads(threads: int | None) -> None:
    """Torch threads for a stack: every core by default (one process does all the work), in
    a SLURM job the CPUs it was given (its node's other cores are other jobs')."""
    torch.set_num_threads(int(threads or os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1))
    # Far-off components give subnormal floats (π_k, γ_k ~ 1e-40) whose arithmetic is many times
    # slower on x86: flushing them to zero made the stacked CPU step 1.6-1.8× faster (20 models,
    # measured) and moves an NLL by less than 1e-30 nats.
    torch.set_flush_denormal(True)


def run(
    cfgs: list[DictConfig],
    hydra_configs: list[DictConfig],
    threads: int | None = None,
    max_models: int = 256,
    compile: bool = False,
) -> list[Any]:
    """Train the jobs of one plan group; per job, its metrics or the exception it failed with."""
    from mdnlab.training.single import quiet_lightning

    quiet_lightning()
    use_threads(threads)
    device = _device(cfgs[0])
    jobs = [Job(cfg, h, Path(str(OmegaConf.select(cfg, "paths.output_dir")))) for cfg, h in zip(cfgs, hydra_configs)]
    results: list[Any] = [None] * len(jobs)
    ready: dict[tuple[Any, ...], list[int]] = {}
    for index, job in enumerate(jobs):
        try:
            results[index] = prepare(job, device)
        except (ConfigError, NonFiniteLossError, OSError) as error:
            results[index] = error
            continue
        if results[index] is None:
            ready.setdefault(shape_of(job), []).append(index)
    watch = SignalWatch() if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
    for indices in ready.values():
        for chunk, saved, state in _resumable_chunks([jobs[i] for i in indices], max_models):
            _train(
                [jobs[indices[i]] for i in chunk],
                [indices[i] for i in chunk],
                results,
                device,
                compile,
                watch,
                saved,
                state,
            )
    return results


def _train(
    stack: list[Job],
    places: list[int],
    results: list[Any],
    device: torch.device,
    compile: bool,
    watch: SignalWatch | None,
    saved: Path | None,
    state: dict[str, Any] | None,
) -> None:
    """Train one stack and put each job's outcome in ``results[places[i]]``. A stack that does not
    fit in its device's memory trains as two stacks of half the models (each resuming from what
    the whole stack saved), down to one model, which then fails alone in one line."""
    path = stack_state.path_for([job.run_dir for job in stack])
    resume = (state, stack_state.positions(state, [job.run_dir for job in stack])) if state else None
    seconds, short_of_memory = 0.0, None
    try:
        seconds = StackedFit(stack, device, compile, path, resume, watch).run()
    except OSError as error:  # the state or checkpoints could not be written: one line for each model
        for place in places:
            results[place] = OSError(f"could not write {error.filename or 'a file'}: {error.strerror or error}")
        return
    except Exception as error:  # noqa: BLE001 - narrowed just below
        if not is_out_of_memory(error):
            raise
        short_of_memory = str(error).splitlines()[0][:120]
    if short_of_memory is not None:
        _split(stack, places, results, device, compile, watch, short_of_memory)  # the failed stack freed first
    else:
        for job, place in zip(stack, places):
            results[place] = _finish(job, seconds)
            if watch is not None and watch.pending:  # a signal while finishing: the rest resume finished
                watch.leave(f"finishing {job.run_dir.name}", str(path))
    done = [job.run_dir for job in stack]  # each with its outcome now, failures included
    stack_state.forget(path, done)
    stack_state.forget(saved, done)


def _split(
    stack: list[Job],
    places: list[int],
    results: list[Any],
    device: torch.device,
    compile: bool,
    watch: SignalWatch | None,
    why: str,
) -> None:
    """A stack that ran out of memory, as two stacks of half its models, each from the newest
    state of its models (what the whole stack saved, else what it resumed from)."""
    import gc

    gc.collect()  # the failed stack's tensors, before its halves allocate theirs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if len(stack) == 1:
        results[places[0]] = MemoryError(
            f"out of {device.type.upper()} memory training this model alone ({why}): {_sizes(stack[0])}"
        )
        return
    half = len(stack) // 2
    say(
        f"stacked: {len(stack)} models do not fit in {device.type.upper()} memory; training them as two "
        f"stacks of {half} and {len(stack) - half}"
    )
    for part in (slice(0, half), slice(half, None)):
        jobs, where = stack[part], places[part]
        groups = stack_state.partition([j.run_dir for j in jobs], [stack_state.fingerprint(j.cfg) for j in jobs])
        for members, saved, state in groups:
            _train(
                [jobs[i] for i in members], [where[i] for i in members], results, device, compile, watch, saved, state
            )


def _sizes(job: Job) -> str:
    """The settings that set a model's memory, as the one line after an allocation failed."""
    model, data = job.cfg.model, job.cfg.data
    points = data.get("batch_size") or len(job.datamodule.splits["train"][0])
    return (
        f"model.hidden_size={model.hidden_size} × {model.get('n_hidden_layers', 1)} layers, "
        f"{points} points a step (data.batch_size={data.get('batch_size')}), "
        f"model.n_members={model.get('n_members', 1)}; lower one of them or run where there is more memory"
    )


def _resumable_chunks(
    jobs: list[Job], max_models: int
) -> Iterator[tuple[list[int], Path | None, dict[str, Any] | None]]:
    """Positions of ``jobs`` in stacks of at most ``max_models``, each stack's models saved
    together or not at all (so each resumes from one saved stack)."""
    fingerprints = [stack_state.fingerprint(job.cfg) for job in jobs]
    for members, saved, state in stack_state.partition([job.run_dir for job in jobs], fingerprints):
        for start in range(0, len(members), max_models):
            yield members[start : start + max_models], saved, state


def _finish(job: Job, seconds: float) -> Any:
    """The job's results as mdn-train leaves them, or its error."""
    if job.error is not None:
        for logger in job.loggers:
            logger.finalize("failed")
        return job.error
    job.enter()
    fit = Fit(job.loggers, job.steps, job.epochs, seconds, best_score=None)
    checkpoints = job.run_dir / "checkpoints"
    if job.best_epoch >= 0:
        fit.best_path = str(checkpoints / f"best-epoch{job.best_epoch:04d}.ckpt")
        fit.best_score = job.best_score
    try:
        if job.pruned_step is not None:
            metrics = finish_pruned(job.cfg, fit, job.model.metric, job.pruned_step, job.pruned_epoch or 0)
        else:
            metrics = finish(job.cfg, fit, job.model, job.datamodule)
    except (ConfigError, OSError) as error:
        return error
    for logger in job.loggers:
        logger.finalize("success")
    return metrics


def _device(cfg: DictConfig) -> torch.device:
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")
