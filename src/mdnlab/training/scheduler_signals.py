"""What a run in a SLURM job does when SLURM signals it.

SLURM sends SIGTERM for different reasons, and only the job's record says which: ``scancel``
and a job's end end it for good, while ``scontrol requeue`` and a preemption that requeues
(``PreemptMode=REQUEUE``) end this attempt and start the job again. Lightning turns every
SIGTERM into an interrupt, so a requeued job would record a failure that the launcher collects
while SLURM is still going to run the job again. The job's own warning signal (submitit's USR2,
``signal_delay_s`` before the time limit, or at a preemption with a grace time) runs submitit's
checkpoint-and-requeue, whose ``scontrol requeue`` fails, and fails the job, when SLURM is
already requeueing it.

Here both signals are noted when they come and acted on after the optimiser step in flight
(``on_step_boundary``, which the fast loop calls after every step). A SIGTERM saves the run's
whole state there into its last.ckpt (weights, optimiser, loop counters and the epoch's losses
so far: a requeue loses no step) and stops the run without a result (SystemExit passes
through Hydra and submitit, which record results of Exceptions only): when SLURM requeues the
job, the next attempt resumes from that checkpoint (``auto_resume``); when it does not
(``scancel``), the launcher sees the job end without a result and says so in one line, and
rerunning the sweep continues it. A warning signal that comes with a requeue does the same; one
without saves the state too, then goes to submitit's handler (requeue, counting
``max_num_timeout``). A run on several ranks (DDP) leaves at the next epoch instead, from the
checkpoint of the epoch before: its ranks would have to agree on the step first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from mdnlab.errors import Interrupted

log = logging.getLogger(__name__)


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s KEY=VALUE fields ({} when scontrol cannot say)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def requeue_reason(job_id: str, restarts_at_start: int) -> str | None:
    """Why a signal ends only this attempt: 'requeued' (SLURM counted a restart: scontrol
    requeue, a preemption), 'preempted' (preemption with a grace time, before SLURM requeues:
    exiting now would end the job as COMPLETED, so the job requeues itself), or None."""
    fields = job_fields(job_id)
    if int(fields.get("Restarts", restarts_at_start) or 0) > restarts_at_start:
        return "requeued"
    if fields.get("PreemptTime", "None") not in ("None", "Unknown", ""):
        subprocess.run(["scontrol", "requeue", job_id], capture_output=True, timeout=20)
        return "preempted"
    return None


class SignalWatch:
    """SLURM's SIGTERM and the job's warning signal, noted when they come (``install``), acted on
    by the training loop at its next step boundary: ``pending`` says one came, ``leave`` ends the
    attempt (after the loop has saved its state there)."""

    def __init__(self) -> None:
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_TASK_ID") and os.environ.get("SLURM_ARRAY_JOB_ID"):
            self.job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        self.restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self.leaving: str | None = None
        self.warned: tuple | None = None  # (submitit's handler, signal) to run at the next boundary
        self.installed = False

    def install(self) -> None:
        """Wrap the SIGTERM handler (Lightning's, in a Trainer) and submitit's warning-signal
        handler, once (later stacks of the same job keep the first wrapping); outside a SLURM
        job a SIGTERM still goes to the handler there was."""
        if self.installed:
            return
        self.installed = True
        previous = signal.getsignal(signal.SIGTERM)
        warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        submitit_handler = signal.getsignal(warning)

        def on_sigterm(signum, frame) -> None:
            if not self.job_id and callable(previous):
                previous(signum, frame)
            elif not self.leaving:  # the first SIGTERM says it; later ones find the job record gone
                self.leaving = requeue_reason(self.job_id, self.restarts) or "stopped by SIGTERM"

        def on_warning(signum, frame) -> None:
            self.warned = (submitit_handler, signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        if callable(submitit_handler):
            signal.signal(warning, on_warning)

    @property
    def pending(self) -> bool:
        return bool(self.warned or self.leaving)

    def leave(self, where: str, saved: str) -> None:
        """End this attempt: without a result when SLURM requeues the job (or it was stopped, or
        another DDP rank was signalled), else through submitit's handler, which requeues it for
        its time limit."""
        if self.warned and not self.leaving:
            self.leaving = requeue_reason(self.job_id, self.restarts) if self.job_id else None
        if self.leaving or not self.warned:
            log.warning(
                f"SLURM job {self.job_id} {self.leaving or 'signalled'}: stopping at {where} without a "
                f"result; the next attempt resumes from {saved}"
            )
            raise SystemExit(0)
        from submitit.core.utils import UncompletedJobError

        log.warning(
            f"SLURM job {self.job_id} is near its time limit: stopping at {where}; submitit requeues it "
            f"and the next attempt resumes from {saved}"
        )
        handler, signum = self.warned
        try:
            handler(signum, None)
        except UncompletedJobError as error:
            raise Interrupted(
                f"the job reached its time limit too many times ({error}): raise "
                "hydra.launcher.timeout_min or hydra.launcher.max_num_timeout, then rerun the sweep "
                "to continue it from its last checkpoint"
            ) from None


class SlurmRequeue(Callback):
    """Installed in SLURM jobs (training.single.build): a ``SignalWatch`` installed once training
    starts (Lightning installs its SIGTERM handler just before), acted on after a step."""

    def __init__(self, last_checkpoint: Path | None = None) -> None:
        self.last_checkpoint = last_checkpoint  # where auto_resume looks: the state is saved there
        self.watch = SignalWatch()

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.install()

    def on_step_boundary(self, trainer, pl_module) -> None:
        if trainer.world_size == 1 and self.watch.pending:
            saved = "the last epoch's checkpoint"
            if self.last_checkpoint is not None:
                trainer.save_checkpoint(self.last_checkpoint)  # the whole state, atomically
                saved = f"the state saved at that step ({self.last_checkpoint})"
            self.watch.leave(f"global step {trainer.global_step}", saved)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        """Ranks of one DDP run see a signal at different steps: they agree at each epoch's
        start (one collective an epoch) and all leave there, from the last epoch's checkpoint."""
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self.watch.pending, all=False):
            self.watch.leave(f"epoch {trainer.current_epoch}", "the last epoch's checkpoint")
