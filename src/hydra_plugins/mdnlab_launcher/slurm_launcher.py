"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, submitting the same way,
with its own wait for the results, or none (``hydra.launcher.wait=false``: the command returns
once the jobs are queued, recording them in ``<sweep>/slurm_jobs.json`` for ``mdn-report``).

submitit's wait asks ``sacct`` for each job's state and backs off to minutes between polls; a
cluster without accounting storage has no ``sacct``, and a job that died before writing its
result (killed by a signal that came before submitit's handler was installed, say) is then
waited on forever. Here one ``squeue`` call per poll covers every job: a job that has a result
is collected, one that SLURM still holds (pending, running, requeued) is waited on, and one that
SLURM has ended or forgotten without a result becomes a failed job with one line naming its
state and log, so the sweep ends.
"""

# (no `from __future__ import annotations`: Hydra's plugin scan loads this module without
# registering it in sys.modules, where a dataclass with string annotations would look itself up)
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from mdnlab.runs.slurm_jobs import WAITING, squeue_states

log = logging.getLogger(__name__)

GRACE_S = 10.0  # a result file may land after squeue reports the end (shared file systems)


@dataclass
class MdnlabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.mdnlab_launcher.slurm_launcher.MdnlabSlurmLauncher"
    wait: bool = True  # false: return once the jobs are queued; mdn-report <sweep dir> follows them


ConfigStore.instance().store(group="hydra/launcher", name="mdnlab_slurm", node=MdnlabSlurmConf(), provider="mdnlab")


class MdnlabSlurmLauncher(SlurmLauncher):
    def __init__(self, wait: bool = True, **params) -> None:
        super().__init__(**params)
        self.wait = bool(wait)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        # The base class builds the executor and submits the jobs, then waits with
        # job.results(); map_array is where the jobs come back, so it is intercepted there.
        submitted: list = []
        real_map_array = submitit.AutoExecutor.map_array

        def keep(executor, *args, **kwargs):  # the base class submits, then would wait its own way
            submitted.extend(real_map_array(executor, *args, **kwargs))
            return []

        submitit.AutoExecutor.map_array = keep
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = real_map_array
        log.info("submitted SLURM jobs " + " ".join(job.job_id for job in submitted))
        if self.wait:
            return wait_for(submitted, job_overrides)
        return self._record(submitted, job_overrides, initial_job_idx)

    def _record(self, jobs: list, job_overrides: Sequence[Sequence[str]], first: int) -> list[JobReturn]:
        """Queued, not waited on: the job ids go to <sweep>/slurm_jobs.json, and each job counts
        as launched."""
        from mdnlab.runs import slurm_jobs

        sweep = Path(str(self.config.hydra.sweep.dir))
        slurm_jobs.record(sweep, [{"num": num, "job_id": job.job_id, "overrides": list(overrides)}
                                  for num, (job, overrides) in enumerate(zip(jobs, job_overrides), start=first)])
        print(f"submitted {len(jobs)} SLURM jobs ({', '.join(job.job_id for job in jobs)}); sweep: {sweep}\n"
              f"follow them: mdn-report {sweep}")
        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=None,
                          working_dir=str(Path.cwd())) for o in job_overrides]


def wait_for(jobs: list, job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
    """Each job's JobReturn once it has a result or SLURM has let it go without one. Polls
    every second at first, then every 5% of the time waited so far (at most every 30 s), so a
    long sweep does not keep the controller busy."""
    returns: dict[int, JobReturn] = {}
    ended_at: dict[int, float] = {}
    start = time.monotonic()
    while len(returns) < len(jobs):
        states = squeue_states([job.job_id for i, job in enumerate(jobs) if i not in returns])
        for i, job in enumerate(jobs):
            if i in returns:
                continue
            if job.paths.result_pickle.exists():
                returns[i] = _collected(job, job_overrides[i])
                continue
            state = states.get(job.job_id)
            if state in WAITING:
                ended_at.pop(i, None)
                continue
            since = ended_at.setdefault(i, time.monotonic())
            if time.monotonic() - since > GRACE_S:
                ended = "was cancelled" if state == "CANCELLED" else f"ended ({state or 'gone from squeue'})"
                returns[i] = _failed(job_overrides[i], f"SLURM job {job.job_id} {ended} without a result (its log: "
                                     f"{job.paths.stderr}); rerun the sweep to continue it from its last checkpoint")
        if len(returns) < len(jobs):
            time.sleep(min(30.0, max(1.0, 0.05 * (time.monotonic() - start))))
    return [returns[i] for i in range(len(jobs))]


def _collected(job, overrides: Sequence[str]) -> JobReturn:
    """The job's own JobReturn, or its crash (submitit's error result) as one line."""
    from submitit.core.utils import pickle_load

    outcome, value = pickle_load(job.paths.result_pickle)
    if outcome == "success":
        return value[0] if isinstance(value, list) else value
    last = [line for line in str(value).strip().splitlines() if line.strip()][-1:] or ["(no message)"]
    return _failed(overrides, f"SLURM job {job.job_id} failed: {last[0].strip()}; its log: {job.paths.stderr}")


def _failed(overrides: Sequence[str], line: str) -> JobReturn:
    from mdnlab.cli.entry import JobFailed

    log.error(line)
    result = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, working_dir=str(Path.cwd()))
    result.return_value = JobFailed(f"error: {line}")
    return result
