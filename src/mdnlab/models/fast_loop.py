"""The fast training loop: every optimiser step of an epoch in one ``training_step``.

Kept apart from the models so that they read like standard LightningModules and a Lightning
upgrade that changes the internals used here breaks this one file. What it relies on, all
measured on the seed's model (~100 kFLOP a step, where per-step overhead is most of the time):

- manual optimisation, draining the epoch's batch iterator (``training_step(dataloader_iter)``):
  Lightning's per-batch machinery (hooks, closures, callbacks) runs once per epoch, not per step;
- ``LightningOptimizer._on_before_step`` / ``_on_after_step`` (private): with no listener to the
  per-step hooks, the step calls the torch optimiser directly and still counts in Lightning's
  progress, so global_step, checkpoints and logging are unchanged (tested: identical weights);
- a ``__setattr__`` that skips nn.Module's registration checks for plain bookkeeping values;
- ``fit_loop.epoch_loop._batches_that_stepped`` (private), the step loggers use, set to the
  optimiser step so every metric shares one axis.

An epoch can also stop between two steps: a callback with ``on_step_boundary(trainer, module)``
is called after every step (``training.scheduler_signals`` saves the run there when SLURM
signals it). A checkpoint saved mid-epoch holds the epoch's losses so far; resumed from it,
the epoch skips the steps it holds (the draws are counter-based, so the batches that follow are
those the uninterrupted run drew) and logs the same epoch loss.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import lightning as L
import torch
from torch import Tensor

from mdnlab.errors import NonFiniteLossError

# training_step(dataloader_iter) is deliberate; set here, not only in the entry points, so that
# spawned DDP ranks, which import this module afresh, stay quiet too
warnings.filterwarnings("ignore", message=r".*dataloader_iter.*")

_PLAIN_TYPES = (str, int, float, bool, type(None))


def _is_registered(state: dict[str, Any], name: str) -> bool:
    return (
        name in state.get("_parameters", ()) or name in state.get("_buffers", ()) or name in state.get("_modules", ())
    )


class EpochTraining:
    """Mixin for a LightningModule with ``training_loss(x, y)``: set ``automatic_optimization``
    to False and it trains an epoch per ``training_step``. ``epoch_training_loss()`` gives the
    mean training loss of the epoch's steps (on the device) for the module to log."""

    _train_sum: Tensor | None = None
    _train_steps: int = 0
    _epoch_losses: list[Tensor] | None = None  # this epoch's losses while its steps run
    _resumed_losses: Tensor | None = None  # those a mid-epoch checkpoint held, until the epoch resumes

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets bookkeeping attributes (``_current_fx_name`` and others) on the module
        # around every hook, ~20 times a step, and nn.Module.__setattr__ spends microseconds on
        # each in Parameter/Module/buffer checks. A plain value that shadows no parameter, buffer
        # or submodule needs none of them: measured, this alone cuts the step time by ~10%.
        if type(value) in _PLAIN_TYPES and not _is_registered(self.__dict__, name):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def training_step(self, dataloader_iter: Iterator) -> None:
        """All of the epoch's optimiser steps in one call, each through the LightningOptimizer
        (or, when nothing listens, straight to torch: see ``_step_functions``), so DDP gradient
        sync and the precision plugin behave as usual. Losses stay on the device; the one host
        sync per epoch is the finiteness check, made before validation and checkpointing."""
        optimizer = self.optimizers()
        backward, step = self._step_functions(optimizer)
        max_steps = self.trainer.max_steps
        bar = self.trainer.progress_bar_callback
        bar = bar if hasattr(bar, "on_steps") else None  # a step-counting bar (training.progress)
        watchers = [c for c in self.trainer.callbacks if hasattr(c, "on_step_boundary")]
        losses = self._steps_already_taken(dataloader_iter)
        self._epoch_losses = losses
        for batch, _, _ in dataloader_iter:
            if 0 <= max_steps <= self.global_step:  # trainer.max_steps may end an epoch early
                break
            loss = self.training_loss(*batch)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            step()
            losses.append(loss.detach())
            if bar is not None and bar.due():  # a clock read per step; a device read when shown
                bar.on_steps(self.trainer, self, self.global_step, loss)
            for watcher in watchers:
                watcher.on_step_boundary(self.trainer, self)
        self._epoch_losses = None
        if not losses:
            return
        losses = torch.stack(losses)
        if not bool(torch.isfinite(losses).all()):
            first = int((~torch.isfinite(losses)).nonzero()[0, 0])
            raise NonFiniteLossError(
                f"training loss became non-finite ({losses[first].item()}) in epoch "
                f"{self.current_epoch} at global step {self.global_step - len(losses) + first}; "
                "stopped before saving"
            )
        self._train_sum, self._train_steps = losses.sum(), len(losses)
        # Loggers put epoch-level metrics at this counter of batches (one Lightning batch here
        # per epoch); set it to the optimiser step, so train/val/test share one axis (private)
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.global_step

    def _steps_already_taken(self, dataloader_iter: Iterator) -> list[Tensor]:
        """The losses of the steps a mid-epoch checkpoint had taken in this epoch (their batches
        drawn again and skipped), or [] when the epoch starts afresh."""
        if self._resumed_losses is None:
            return []
        done, self._resumed_losses = self._resumed_losses.to(self.device), None
        for _ in range(len(done)):
            next(dataloader_iter)
        return list(done.unbind())

    def mid_epoch_state(self) -> dict[str, Tensor]:
        """What a checkpoint saved between two steps of an epoch must hold: the epoch's losses so
        far ({} between epochs)."""
        if not self._epoch_losses:
            return {}
        return {"epoch_losses": torch.stack(self._epoch_losses).cpu()}

    def resume_mid_epoch(self, state: dict[str, Any]) -> None:
        losses = state.get("epoch_losses")
        self._resumed_losses = losses if isinstance(losses, Tensor) and len(losses) else None

    def epoch_training_loss(self) -> Tensor | None:
        """The mean training loss of this epoch's steps, once; None if none were taken."""
        mean = self._train_sum / self._train_steps if self._train_steps else None
        self._train_sum, self._train_steps = None, 0
        return mean

    def _step_functions(self, optimizer) -> tuple[Callable, Callable]:
        """(backward, step) for one optimiser step.

        Normally ``manual_backward`` and ``LightningOptimizer.step``. Each dispatches hooks
        (on_before_backward, on_after_backward, on_before_optimizer_step) to every callback,
        ~40 µs a step here, which is ~5% of a step of the seed's model. When nothing listens to
        those hooks and a plain float32, single-device strategy runs them (nothing to scale,
        sync or clip), the step calls the tensor and optimiser directly.
        """
        if not self._hooks_are_silent():
            return self.manual_backward, optimizer.step

        def step() -> None:
            optimizer._on_before_step()  # Lightning's step accounting (progress, profiler)
            optimizer.optimizer.step()
            optimizer._on_after_step()

        return Tensor.backward, step

    def _hooks_are_silent(self) -> bool:
        from lightning.pytorch import Callback
        from lightning.pytorch.plugins.precision import Precision
        from lightning.pytorch.strategies import SingleDeviceStrategy
        from lightning.pytorch.utilities.model_helpers import is_overridden

        trainer = self.trainer
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        listening = any(is_overridden(h, self, L.LightningModule) for h in hooks) or any(
            is_overridden(h, cb, Callback) for h in hooks for cb in trainer.callbacks
        )
        plain = type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision
        return plain and not listening and trainer.gradient_clip_val is None
