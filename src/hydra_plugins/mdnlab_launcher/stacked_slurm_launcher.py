"""``hydra/launcher=stacked_slurm``: the stacked launcher's plan, each stack one SLURM job.

The sweep's jobs are composed and grouped here as ``hydra/launcher=stacked`` groups them (at
most ``max_models`` a stack); each group is one task of a SLURM job array, submitted with the
SLURM launcher's executor (its partition, time limit, resources, requeueing), in which the
stacked launcher trains the group: one process, one device, every model with the run
directory ``stacked`` gives it. A job that cannot stack is a group, and a SLURM job, of its own.
A stack in a SLURM job saves its whole state at SLURM's signals (``training.stacked_loop``),
so a requeue, preemption or time limit resumes it where it stopped.
"""

# (no `from __future__ import annotations`: Hydra's plugin scan loads this module without
# registering it in sys.modules, where a dataclass with string annotations would look itself up)
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn

from hydra_plugins.mdnlab_launcher.slurm_launcher import MdnlabSlurmConf, MdnlabSlurmLauncher
from hydra_plugins.mdnlab_launcher.stacked_launcher import StackedLauncher

log = logging.getLogger(__name__)


@dataclass
class StackedSlurmConf(MdnlabSlurmConf):
    _target_: str = "hydra_plugins.mdnlab_launcher.stacked_slurm_launcher.StackedSlurmLauncher"
    threads: Optional[int] = None  # torch threads a stack uses; None: the job's CPUs (SLURM_CPUS_PER_TASK)
    max_models: int = 256  # models a stack, and a SLURM job, at most
    compile: bool = True  # torch.compile each stack's loss


ConfigStore.instance().store(
    group="hydra/launcher", name="mdnlab_stacked_slurm", node=StackedSlurmConf(), provider="mdnlab"
)


class StackedSlurmLauncher(MdnlabSlurmLauncher):
    def __init__(
        self, threads: Optional[int] = None, max_models: int = 256, compile: bool = True, **params: Any
    ) -> None:
        super().__init__(**params)
        self.stacked = StackedLauncher(threads, max_models, compile)

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.stacked.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.hydra_config import HydraConfig

        from mdnlab.cli.entry import JobFailed
        from mdnlab.errors import ConfigError

        numbered = list(enumerate(job_overrides, start=initial_job_idx))
        configs = self.stacked.compose(numbered)
        groups = self.stacked.plan(configs)
        HydraConfig.instance().set_config(self.config)  # planning set each job's; the jobs get the sweep's
        for config in configs:
            trainer = config.trainer
            devices, nodes = trainer.get("devices"), trainer.get("num_nodes")
            if int(devices or 1) > 1 or int(nodes or 1) > 1:  # one line (Hydra prints no traceback for JobFailed)
                raise JobFailed(
                    "error: "
                    + str(
                        ConfigError(
                            "hydra/launcher",
                            "stacked_slurm",
                            f"jobs on one device each (a job here has trainer.devices="
                            f"{devices}, trainer.num_nodes={nodes}); run multi-device jobs with hydra/launcher=slurm",
                        )
                    )
                )
        log.info(
            f"{len(job_overrides)} jobs as {len(groups)} SLURM jobs: "
            f"{sum(len(g) > 1 for g in groups)} stacks (at most {self.stacked.max_models} models), "
            f"{sum(len(g) == 1 for g in groups)} alone"
        )
        task = StackTask(self.stacked)

        def submit(map_array, params: list) -> list:
            state = Singleton.get_state()
            return map_array(task, [[numbered[i] for i in group] for group in groups], [state] * len(groups))

        jobs = self._submit(job_overrides, initial_job_idx, submit)
        return self._results(jobs, groups, job_overrides, initial_job_idx)


class StackTask:
    """What one SLURM job runs: its group of sweep jobs, through the stacked launcher."""

    def __init__(self, stacked: StackedLauncher) -> None:
        self.stacked = stacked

    def __call__(self, numbered: list, singleton_state: dict) -> Any:
        from mdnlab.runs.slurm_jobs import StackReturns

        Singleton.set_state(singleton_state)
        return StackReturns(self.stacked.launch_numbered(numbered))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue at the time limit: the same group again; its stack resumes from
        the state it saved at the signal."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
