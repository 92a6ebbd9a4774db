"""Progress that counts optimiser steps. ``StepProgressBar``: the fast loop takes a whole epoch
in one Lightning batch, so Lightning's own bars stand still inside it; the loop calls
``on_steps`` (duck-typed, so the models import nothing from here) at most every
``refresh_seconds``, and only then reads the loss from the device. ``StackProgress``: one line
for a stack of models (``training.stacked_loop``)."""

from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


class StepProgressBar(ProgressBar):
    """step S/N, a bar, train/nll (or mse) of the latest step, the last val score, steps per
    second and the time left, drawn with rich on stderr."""

    def __init__(self, refresh_seconds: float = 0.2) -> None:
        super().__init__()
        self.refresh_seconds = refresh_seconds
        self._enabled = True
        self._progress = None
        self._task = None
        self._next_refresh = 0.0
        self._shown = {}

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def due(self) -> bool:
        """Whether the loop should report now: a clock read per step, nothing else (no device
        sync, no property chain through the trainer)."""
        return self._progress is not None and time.monotonic() >= self._next_refresh

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.is_enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        total = (
            trainer.max_steps
            if trainer.max_steps and trainer.max_steps > 0
            else trainer.max_epochs * trainer.num_training_batches
        )
        self._progress = Progress(
            TextColumn("step {task.completed:,.0f}/{task.total:,.0f}"),
            BarColumn(),
            TextColumn("{task.fields[shown]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
            auto_refresh=False,  # no drawing thread beside the loop
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=trainer.global_step, shown="", rate="")
        self._started = (time.monotonic(), trainer.global_step)

    def on_steps(self, trainer, pl_module, step: int, loss) -> None:
        """Called by the fast loop with the step just taken and its (standardised) loss."""
        if self._progress is None:
            return
        self._next_refresh = time.monotonic() + self.refresh_seconds
        metric = getattr(pl_module, "training_metric", "loss")
        value = float(pl_module.to_original_units(loss.detach()))
        self._shown[f"train/{metric}"] = value
        self._update(step)

    def _update(self, step: int) -> None:
        seconds, first = time.monotonic() - self._started[0], self._started[1]
        rate = f"{(step - first) / seconds:,.0f} steps/s" if seconds > 0 and step > first else ""
        shown = " • ".join(f"{k} {v:.4f}" for k, v in self._shown.items())
        self._progress.update(self._task, completed=step, shown=shown, rate=rate, refresh=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._progress is None or trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/"):
                self._shown[name] = float(value)
        self._update(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._progress is not None:
            self._update(trainer.global_step)
            self._progress.stop()
            self._progress = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)


class StackProgress:
    """One line for the whole stack: epoch, steps, models still training, steps/s, ETA;
    rewritten in place on a terminal, else a line at most every 10 s."""

    def __init__(self, jobs: list, start: float) -> None:  # of stack_job.Job
        self.jobs, self.start, self.shown = jobs, start, 0.0
        self.tty = sys.stdout.isatty()
        self.total_epochs = max(j.max_epochs for j in jobs)

    def show(self, epoch: int) -> None:
        now = time.perf_counter()
        if now - self.shown < (0.5 if self.tty else 10.0) and epoch + 1 < self.total_epochs:
            return
        self.shown = now
        steps = max(j.steps for j in self.jobs)
        training = sum(j.error is None and not j.stopped and j.epochs < j.max_epochs for j in self.jobs)
        failed = sum(j.error is not None for j in self.jobs)
        rate = steps / max(now - self.start, 1e-9)
        left = (self.total_epochs - epoch - 1) * (steps / max(epoch + 1, 1)) / max(rate, 1e-9)
        line = (
            f"epoch {epoch + 1}/{self.total_epochs} | step {steps:,} | {training} training, "
            f"{len(self.jobs) - training - failed} done, {failed} failed | {rate:,.0f} steps/s "
            f"({rate * len(self.jobs):,.0f} model-steps/s) | ETA {time.strftime('%H:%M:%S', time.gmtime(left))}"
        )
        if self.tty:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.tty:
            print()
