"""What a run in a SLURM job does when SLURM signals it.

SLURM sends SIGTERM for different reasons, and only the job's record says which: ``scancel``
and a job's end end it for good, while ``scontrol requeue`` and a preemption that requeues
(``PreemptMode=REQUEUE``) end this attempt and start the job again. Lightning turns every
SIGTERM into an interrupt, so a requeued job would record a failure that the launcher collects
while SLURM is still going to run the job again. The job's own warning signal (submitit's USR2,
``signal_delay_s`` before the time limit, or at a preemption with a grace time) runs submitit's
checkpoint-and-requeue, whose ``scontrol requeue`` fails, and fails the job, when SLURM is
already requeueing it.

Here both signals are noted when they come and acted on at the next step boundary (so no file
is half written). A SIGTERM stops the run without a result (SystemExit passes through Hydra and
submitit, which record results of Exceptions only): when SLURM requeues the job, the next
attempt resumes from the run's last checkpoint (``auto_resume``); when it does not (``scancel``),
the launcher sees the job end without a result and says so in one line, and rerunning the
sweep continues it. A warning signal that comes with a requeue does the same; one without goes
to submitit's handler (requeue, counting ``max_num_timeout``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

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


class SlurmRequeue(Callback):
    """Installed in SLURM jobs (training.single.build): wraps Lightning's SIGTERM handler and
    submitit's warning-signal handler once training starts (Lightning installs its own just
    before)."""

    def __init__(self) -> None:
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_TASK_ID") and os.environ.get("SLURM_ARRAY_JOB_ID"):
            self.job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        self.restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self.leaving: str | None = None
        self.warned: tuple | None = None  # (submitit's handler, signal) to run at the next boundary

    def on_train_start(self, trainer, pl_module) -> None:
        lightning_handler = signal.getsignal(signal.SIGTERM)
        warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        submitit_handler = signal.getsignal(warning)

        def on_sigterm(signum, frame) -> None:
            if not self.job_id and callable(lightning_handler):
                lightning_handler(signum, frame)
            elif not self.leaving:  # the first SIGTERM says it; later ones find the job record gone
                self.leaving = requeue_reason(self.job_id, self.restarts) or "stopped by SIGTERM"

        def on_warning(signum, frame) -> None:
            self.warned = (submitit_handler, signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        if callable(submitit_handler):
            signal.signal(warning, on_warning)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._act(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._act(trainer)

    @staticmethod
    def _requeue_for_time(handler, signum) -> None:
        """submitit's handler: requeue and exit; or, timed out too often, one line."""
        from submitit.core.utils import UncompletedJobError

        try:
            handler(signum, None)
        except UncompletedJobError as error:
            raise Interrupted(f"the job reached its time limit too many times ({error}): raise "
                              "hydra.launcher.timeout_min or hydra.launcher.max_num_timeout, then rerun the sweep "
                              "to continue it from its last checkpoint") from None

    def _act(self, trainer) -> None:
        if self.warned and not self.leaving:
            self.leaving = requeue_reason(self.job_id, self.restarts) if self.job_id else None
            if not self.leaving:
                handler, signum = self.warned
                self._requeue_for_time(handler, signum)
        if self.leaving:
            log.warning(f"SLURM job {self.job_id} {self.leaving}: stopping at epoch {trainer.current_epoch} without "
                        f"a result; the next attempt resumes from the last checkpoint")
            raise SystemExit(0)
