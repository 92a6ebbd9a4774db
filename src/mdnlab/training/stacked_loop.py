"""The training loop of a stack (see ``training.stacks``): epochs of optimiser steps for S models at
once, then per model what Lightning's loop and callbacks do for one run: log train/nll,
validate, stop early, keep the best weights, fail on a non-finite loss; at the end, each
model's last and best checkpoints.

Written by hand, not as a Lightning Trainer: a Trainer stops, checkpoints and logs one model;
here each of S models stops, checkpoints and logs on its own while their steps stay one. The
steps need no host synchronisation (the losses stay on the device); the one per epoch is the
finiteness check and the validation scores, as in the single-model loop (``models.fast_loop``).

The stack's whole state (``training.stack_state``) is saved after every epoch and, in a SLURM
job, after the step in flight when SLURM signals it; a stack built with that state resumes
there and ends with the same weights, bit for bit, as if it had not stopped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from mdnlab import checkpoint
from mdnlab.data import draws
from mdnlab.data.batches import StackedBatches
from mdnlab.errors import NonFiniteLossError
from mdnlab.models.mdn import MixtureDensityNetwork
from mdnlab.models.stacked import STACKABLE_OPTIMIZERS, StackedAdam, StackedMDN
from mdnlab.runs import search
from mdnlab.runs.finish import say
from mdnlab.training import stack_state
from mdnlab.training.progress import StackProgress
from mdnlab.training.stack_job import Job, announce, validates


class StackedFit:
    """S jobs trained as one stack. ``state_path``: where the stack's state is saved (None: not
    saved); ``resume``: (a saved state, each job's index in it) to continue from; ``watch``: a
    ``SignalWatch`` whose signals stop the stack after the step in flight."""

    def __init__(
        self,
        jobs: list[Job],
        device: torch.device,
        compile: bool = False,
        state_path: Path | None = None,
        resume: tuple[dict[str, Any], list[int]] | None = None,
        watch: Any = None,
    ) -> None:
        self.jobs, self.device = jobs, device
        self.state_path, self.watch = state_path, watch
        self.first_epoch, self.first_step, self.epoch_losses = 0, 0, None
        self.fingerprints = [stack_state.fingerprint(j.cfg) for j in jobs]
        self.stack = StackedMDN([job.model for job in jobs]).to(device)
        if self.stack.adversarial:  # ε × each model's own training range, per input
            ranges = torch.stack([j.datamodule.input_range() for j in jobs]).unsqueeze(-1)
            self.stack.input_steps.copy_(self.stack.adversarial * ranges)
        options = jobs[0].cfg.model.optimizer

        def per_model(key: str) -> Tensor:
            return torch.tensor([float(j.cfg.model.optimizer.get(key) or 0.0) for j in jobs], device=device)

        self.optimizer = StackedAdam(
            list(self.stack.parameters()),
            per_model("lr"),
            per_model("weight_decay"),
            self.stack.n_members,
            tuple(options.get("betas") or (0.9, 0.999)),
            float(options.get("eps") or 1e-8),
            STACKABLE_OPTIMIZERS[options._target_],
        )
        self.batches = StackedBatches(
            [j.datamodule.train_dataloader() for j in jobs], draws.compiled(device) if compile else None
        )
        self.losses = self._compiled() if compile else self.stack.training_losses
        # NLL in original units = standardised NLL + log target std (each model its own split's)
        self.offset = torch.stack([torch.log(j.datamodule.standardizer.target_std).sum() for j in jobs]).to(device)
        self.validating = all(validates(j) for j in jobs)
        self.every = int(jobs[0].cfg.trainer.check_val_every_n_epoch)
        self.best: list[Tensor] | None = None
        self.trials = [search.TrialLink.of(j.cfg) for j in jobs]  # None outside a search
        if resume is not None:
            self._load(*resume)

    def _compiled(self) -> Callable[..., Tensor]:
        """torch.compile'd training losses, compiled now on the first batch; eager, with one
        line saying why, where this machine cannot compile (no C++ compiler, say)."""
        compiled = self.stack.compiled_training_losses()
        served = [loader._epochs_served for loader in self.batches.loaders]
        inputs, targets = next(iter(self.batches))
        for loader, epochs in zip(self.batches.loaders, served):  # the probe drew a batch: draw it again
            loader._epochs_served = epochs
        try:
            compiled(inputs, targets).sum().backward()  # type: ignore[no-untyped-call]
        except Exception as error:  # noqa: BLE001 - any compiler failure: train eager instead
            say(f"stacked: torch.compile failed ({type(error).__name__}); training eager")
            return self.stack.training_losses
        finally:
            self.optimizer.zero_grad()
        return compiled

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> float:
        """Train every model to its end; returns the wall seconds. Each job's outcome is on it."""
        announce(self.jobs, self.device)
        start = time.perf_counter()
        progress = StackProgress(self.jobs, start)
        if self.watch is not None:
            self.watch.install()
        for epoch in range(self.first_epoch, max(j.max_epochs for j in self.jobs)):
            active = torch.tensor([self._trains(j, epoch) for j in self.jobs], device=self.device)
            if not bool(active.any()):
                break
            self.optimizer.set_active(active)
            losses = self._epoch(epoch, active)
            self._after_epoch(epoch, losses, active.tolist())
            self._save(epoch + 1, 0, None)
            progress.show(epoch)
        progress.close()
        self._write_checkpoints()
        return time.perf_counter() - start

    def _trains(self, job: Job, epoch: int) -> bool:
        return job.error is None and not job.stopped and epoch < job.max_epochs

    def _epoch(self, epoch: int, active: Tensor) -> Tensor:
        """One epoch's steps; (steps, S) losses in standardised units (0 for a stopped model).
        Once half the models or more have stopped, the steps compute only the others (eager:
        a compiled step would recompile for each new count), with every model's batches still
        drawn, so the draws stay those of each model alone. A resumed epoch skips the steps its
        saved state had taken (drawing their batches again: the draws are counter-based)."""
        training = active.nonzero().view(-1) if int(active.sum()) <= len(self.jobs) // 2 else None
        losses = list(self.epoch_losses.to(self.device).unbind()) if self.epoch_losses is not None else []
        skip, self.first_step, self.epoch_losses = self.first_step, 0, None
        for inputs, targets in self.batches:
            if skip:
                skip -= 1
                continue
            if training is None:
                loss = self.losses(inputs, targets)
            else:
                loss = torch.zeros(len(self.jobs), device=self.device, dtype=inputs.dtype).index_put(
                    (training,), self.stack.training_losses(inputs[training], targets[training], training)
                )
            self.optimizer.zero_grad()
            loss.sum().backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            losses.append(loss.detach())
            if self.watch is not None and self.watch.pending:
                self._save(epoch, len(losses), torch.stack(losses))
                self.watch.leave(f"epoch {epoch}, step {len(losses)} of the stack", f"{self.state_path}")
        return torch.stack(losses)

    def _after_epoch(self, epoch: int, losses: Tensor, active: list[bool]) -> None:
        finite = torch.isfinite(losses).all(0).tolist()  # the epoch's one host synchronisation
        train = (losses.mean(0) + self.offset).tolist()
        validate = self.validating and (epoch + 1) % self.every == 0
        val = (
            (
                self.stack.validation_losses(*_stack([j.datamodule.splits["val"] for j in self.jobs])) + self.offset
            ).tolist()
            if validate
            else None
        )
        improved = [False] * len(self.jobs)
        for s, job in enumerate(self.jobs):
            if not active[s]:
                continue
            if not finite[s]:
                first = int((~torch.isfinite(losses[:, s])).nonzero()[0, 0])
                job.error = NonFiniteLossError(
                    f"training loss became non-finite ({losses[first, s].item()}) in epoch {epoch} at global "
                    f"step {job.steps + first}; stopped before saving (the other models of its stack went on)"
                )
                continue
            job.steps += len(losses)
            job.epochs = epoch + 1
            metrics = {"train/nll" if job.model.n_members == 1 else "train/member_nll": train[s]}
            if val is not None:
                metrics["val/nll"] = val[s]
                improved[s] = self._stop_or_keep(job, epoch, val[s])
            for logger in job.loggers:
                logger.log_metrics(metrics, step=job.steps)
        if any(improved):
            self._keep_best(improved)
        if val is not None and any(self.trials):
            self._report(epoch + 1, val, active)

    def _report(self, check: int, val: list[float], active: list[bool]) -> None:
        """Each search trial's best validation score so far (for a trial of several jobs, their
        mean), every trial before any pruning decision, so that a rung's decision sees the whole
        stack; a pruned trial's jobs stop here. A trial reports while any of its jobs trains, and
        only where all of its jobs are in this stack."""
        trials: dict[int, list[int]] = {}
        for s, (job, link) in enumerate(zip(self.jobs, self.trials)):
            if link is not None:
                if active[s] and job.error is None and math.isfinite(val[s]):
                    job.search_best = min(job.search_best, val[s])
                trials.setdefault(link.number, []).append(s)
        reporting = {
            number: models
            for number, models in trials.items()
            if len(models) == self.trials[models[0]].jobs  # type: ignore[union-attr]
            and any(active[s] and not self.jobs[s].stopped for s in models)
            and all(self.jobs[s].error is None for s in models)
        }
        for models in reporting.values():
            score = sum(self.jobs[s].search_best for s in models) / len(models)
            self.trials[models[0]].report(score, check)  # type: ignore[union-attr]
        for models in reporting.values():
            if self.trials[models[0]].should_prune():  # type: ignore[union-attr]
                for s in models:
                    job = self.jobs[s]
                    job.stopped, job.pruned_step, job.pruned_epoch = True, job.steps, check

    def _stop_or_keep(self, job: Job, epoch: int, score: float) -> bool:
        """EarlyStopping's rule (mode min) and ModelCheckpoint's (strictly better): returns
        whether this is the best score so far."""
        if not math.isfinite(score):
            job.stopped = True
            return False
        if score < job.best_score - job.early_stopping("min_delta", 0.0):
            job.wait = 0
        else:
            job.wait += 1
            job.stopped = job.wait >= job.early_stopping("patience", math.inf)
        better = score < job.best_score and job.cfg.callbacks.get("model_checkpoint") is not None
        if better:
            job.best_score, job.best_epoch = score, epoch
        return better

    @torch.no_grad()
    def _keep_best(self, improved: list[bool]) -> None:
        mask = torch.tensor(improved, device=self.device).repeat_interleave(self.stack.n_members).view(-1, 1, 1)
        current = [p.detach() for p in self.stack.parameters()]
        if self.best is None:
            self.best = [p.clone() for p in current]
        for best, now in zip(self.best, current):
            best.copy_(torch.where(mask, now, best))

    # ---- the state a stack resumes from -------------------------------------------------

    def _save(self, epoch: int, step: int, epoch_losses: Tensor | None) -> None:
        """The stack's whole state at (epoch, step in it), when it has a place to go."""
        if self.state_path is not None:
            stack_state.write(self.state_path, stack_state.of(self, epoch, step, epoch_losses))

    def _load(self, state: dict[str, Any], indices: list[int]) -> None:
        stack_state.load(self, state, indices)
        say(
            f"stacked: {len(self.jobs)} models resume at epoch {self.first_epoch}, step {self.first_step} "
            f"of it ({self.state_path})"
        )

    def _write_checkpoints(self) -> None:
        """Each finished model's last.ckpt and, with validation, best-epoch<e>.ckpt."""
        for s, job in enumerate(self.jobs):
            if job.error is not None:
                continue
            folder = job.run_dir / "checkpoints"
            if job.best_epoch >= 0:
                best = self._export(s, self.best)
                checkpoint.write_weights(
                    folder / f"best-epoch{job.best_epoch:04d}.ckpt", best, job.datamodule, job.best_epoch, job.steps
                )
            last = self._export(s, None)
            checkpoint.write_weights(folder / "last.ckpt", last, job.datamodule, job.epochs - 1, job.steps)
            job.model = last

    def _export(self, index: int, weights: list[Tensor] | None) -> MixtureDensityNetwork:
        import copy

        model: MixtureDensityNetwork = copy.deepcopy(self.jobs[index].model).cpu()
        if weights is None:
            return self.stack.export(index, model)
        saved = [p.detach().clone() for p in self.stack.parameters()]
        with torch.no_grad():
            for p, w in zip(self.stack.parameters(), weights):
                p.copy_(w)
            self.stack.export(index, model)
            for p, w in zip(self.stack.parameters(), saved):
                p.copy_(w)
        return model


def _stack(pairs: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """[(inputs (N, D), targets (N, 1))] per model → inputs (S, D, N), targets (S, 1, N)."""
    inputs, targets = zip(*pairs)
    return torch.stack([x.T for x in inputs]), torch.stack([t.T for t in targets])
