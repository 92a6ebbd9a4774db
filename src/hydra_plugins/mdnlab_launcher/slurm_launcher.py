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
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from mdnlab.runs.slurm_jobs import WAITING, StackReturns, squeue_states

log = logging.getLogger(__name__)

GRACE_S = 10.0  # a result file may land after squeue reports the end (shared file systems)


@dataclass
class MdnlabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.mdnlab_launcher.slurm_launcher.MdnlabSlurmLauncher"
    wait: bool = True  # false: return once the jobs are queued; mdn-report <sweep dir> follows them
    srun_args: Optional[List[str]] = None  # extra srun arguments (submitit's slurm_srun_args)


ConfigStore.instance().store(group="hydra/launcher", name="mdnlab_slurm", node=MdnlabSlurmConf(), provider="mdnlab")


class MdnlabSlurmLauncher(SlurmLauncher):
    def __init__(self, wait: bool = True, **params) -> None:
        super().__init__(**params)
        self.wait = bool(wait)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = self._submit(job_overrides, initial_job_idx, lambda map_array, params: map_array(self, *zip(*params)))
        return self._results(jobs, [[i] for i in range(len(jobs))], job_overrides, initial_job_idx)

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, submit) -> list:
        """The SLURM jobs, submitted by ``submit(map_array, job_params)`` with the executor the base
        class builds (its resources, folders, max_num_timeout). The base class submits with
        map_array and then waits with job.results(); map_array is intercepted, so the waiting
        (or not) is done here."""
        import submitit

        submitted: list = []
        real_map_array = submitit.AutoExecutor.map_array

        def keep(executor, function, *args):
            submitted.extend(submit(lambda *a: real_map_array(executor, *a), list(zip(*args))))
            return []

        submitit.AutoExecutor.map_array = keep
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = real_map_array
        log.info("submitted SLURM jobs " + " ".join(job.job_id for job in submitted))
        return submitted

    def _results(
        self, jobs: list, groups: list[list[int]], job_overrides: Sequence[Sequence[str]], first: int
    ) -> list[JobReturn]:
        """Every sweep job's JobReturn, in order; SLURM job i ran the sweep jobs ``groups[i]``."""
        if not self.wait:
            return self._record(jobs, groups, job_overrides, first)
        returns: list = [None] * len(job_overrides)
        for group, results in zip(groups, wait_for(jobs, [[job_overrides[i] for i in g] for g in groups])):
            for i, result in zip(group, results):
                returns[i] = result
        return returns

    def _record(
        self, jobs: list, groups: list[list[int]], job_overrides: Sequence[Sequence[str]], first: int
    ) -> list[JobReturn]:
        """Queued, not waited on: the job ids go to <sweep>/slurm_jobs.json, and each job counts
        as launched."""
        from mdnlab.runs import slurm_jobs

        sweep = Path(str(self.config.hydra.sweep.dir))
        slurm_jobs.record(
            sweep,
            [
                {"num": first + i, "job_id": job.job_id, "overrides": list(job_overrides[i])}
                for job, group in zip(jobs, groups)
                for i in group
            ],
        )
        print(
            f"submitted {len(jobs)} SLURM jobs ({', '.join(job.job_id for job in jobs)}) for "
            f"{len(job_overrides)} runs; sweep: {sweep}\nfollow them: mdn-report {sweep}"
        )
        return [
            JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=None, working_dir=str(Path.cwd()))
            for o in job_overrides
        ]


def wait_for(jobs: list, groups: list[list[Sequence[str]]]) -> list[list[JobReturn]]:
    """Per SLURM job, the JobReturns of the sweep jobs it ran (their overrides in ``groups``),
    once it has a result or SLURM has let it go without one. Polls every second at first, then
    every 5% of the time waited so far (at most every 30 s), so a long sweep does not keep the
    controller busy."""
    returns: dict[int, list[JobReturn]] = {}
    ended_at: dict[int, float] = {}
    start = time.monotonic()
    while len(returns) < len(jobs):
        states = squeue_states([job.job_id for i, job in enumerate(jobs) if i not in returns])
        for i, job in enumerate(jobs):
            if i in returns:
                continue
            if job.paths.result_pickle.exists():
                returns[i] = _collected(job, groups[i])
                continue
            state = states.get(job.job_id)
            if state in WAITING:
                ended_at.pop(i, None)
                continue
            since = ended_at.setdefault(i, time.monotonic())
            if time.monotonic() - since > GRACE_S:
                ended = "was cancelled" if state == "CANCELLED" else f"ended ({state or 'gone from squeue'})"
                returns[i] = _failed(
                    groups[i],
                    f"SLURM job {job.job_id} {ended} without a result (its log: "
                    f"{job.paths.stderr}); rerun the sweep to continue it from its last checkpoint",
                )
        if len(returns) < len(jobs):
            time.sleep(min(30.0, max(1.0, 0.05 * (time.monotonic() - start))))
    return [returns[i] for i in range(len(jobs))]


def _collected(job, group: list[Sequence[str]]) -> list[JobReturn]:
    """The job's own JobReturns (one; a stack's, one per model), or its crash (submitit's error
    result) as one line for each."""
    from submitit.core.utils import pickle_load

    outcome, value = pickle_load(job.paths.result_pickle)
    if outcome == "success":
        value = value[0] if isinstance(value, list) else value  # submitit's: one result per task
        return list(value.returns) if isinstance(value, StackReturns) else [value]
    last = [line for line in str(value).strip().splitlines() if line.strip()][-1:] or ["(no message)"]
    return _failed(group, f"SLURM job {job.job_id} failed: {last[0].strip()}; its log: {job.paths.stderr}")


def _failed(group: list[Sequence[str]], line: str) -> list[JobReturn]:
    from mdnlab.cli.entry import JobFailed

    log.error(line)
    results = []
    for overrides in group:
        result = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, working_dir=str(Path.cwd()))
        result.return_value = JobFailed(f"error: {line}")
        results.append(result)
    return results
