"""``hydra/launcher=stacked``: a multirun's mdn-train jobs that can share one network shape train
as one stack in this process (``mdnlab.training.stacks``); the rest run one after another, as the
basic launcher runs them. Every job gets its own directory, .hydra/ files and JobReturn, so
sweepers, ``mdn-report`` and reruns of a killed sweep see what the basic launcher leaves.

The basic launcher's ``run_job`` sets up one job and calls the task function; a stack needs
all of its jobs' directories and configs before any of them trains, so this launcher sets
them up itself, as ``run_job`` does (output dir, .hydra files, JobReturn).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


class StackedLauncher(Launcher):
    def __init__(self, threads: int | None = None, max_models: int = 256, compile: bool = False) -> None:
        self.threads, self.max_models, self.compile = threads, int(max_models), bool(compile)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.launch_numbered(list(enumerate(job_overrides, start=initial_job_idx)))

    def launch_numbered(self, numbered: Sequence[tuple[int, Sequence[str]]]) -> list[JobReturn]:
        """Jobs given as (job number, overrides): the stacks of ``plan``, then the jobs alone."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = self.compose(numbered)
        groups = self.plan(configs)
        log.info(
            f"Launching {len(configs)} jobs: {sum(len(g) > 1 for g in groups)} stacks, "
            f"{sum(len(g) == 1 for g in groups)} alone"
        )
        results: list[JobReturn | None] = [None] * len(configs)
        for group in groups:
            if len(group) == 1 and not self.stackable(configs[group[0]]):
                config = configs[group[0]]
                log.info(f"\t#{config.hydra.job.num} : {' '.join(filter_overrides(config.hydra.overrides.task))}")
                results[group[0]] = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            else:
                for index, ret in zip(group, self._launch_stack([configs[i] for i in group])):
                    results[index] = ret
        HydraConfig.instance().set_config(self.config)
        return results

    def compose(self, numbered: Sequence[tuple[int, Sequence[str]]]) -> list[DictConfig]:
        """Each job's config, with its number, id and output directory set as run_job sets them."""
        configs = []
        composed = _SweepConfigs(self.hydra_context.config_loader, self.config)
        for index, overrides in numbered:
            config = composed.load(list(overrides))
            with open_dict(config):
                config.hydra.job.id = f"{config.hydra.job.name}_{index}"
                config.hydra.job.num = index
            _set_output_dir(config)
            configs.append(config)
        return configs

    def plan(self, configs: list[DictConfig]) -> list[list[int]]:
        """Job positions grouped into stacks (``training.stack_plan.plan``) of at most
        ``max_models``; a job that cannot stack is a group of its own."""
        from mdnlab.training import stack_plan

        if not getattr(self.task_function, "mdnlab_stackable", False):  # not mdn-train's task
            return [[i] for i in range(len(configs))]
        return [
            group[start : start + self.max_models]
            for group in stack_plan.plan(configs)
            for start in range(0, len(group), self.max_models)
        ]

    def stackable(self, config: DictConfig) -> bool:
        from mdnlab.training import stack_plan

        trains = getattr(self.task_function, "mdnlab_stackable", False)
        return trains and stack_plan.why_not_stackable(config) is None

    def _launch_stack(self, configs: list[DictConfig]) -> list[JobReturn]:
        from mdnlab.training import stacks

        returns, task_configs = [], []
        for config in configs:
            ret, task_config = _set_up_job(config)
            log.info(f"\t#{config.hydra.job.num} (stacked) : {' '.join(filter_overrides(ret.overrides))}")
            returns.append(ret)
            task_configs.append(task_config)
        outcomes = stacks.run(task_configs, configs, self.threads, self.max_models, self.compile)
        for ret, config, outcome in zip(returns, configs, outcomes):
            _record(ret, config, outcome)
        return returns


class _SweepConfigs:
    """Each job's config, as Hydra's ``load_sweep_config`` composes it. Composing takes Hydra
    about 0.4 s a job (the defaults list, every file): minutes for a search of a few hundred
    jobs. Jobs whose overrides differ only in the values of plain config keys (not a config
    group, not ``+``/``~``, not a hydra key) share one composition, each with its own values
    applied as Hydra applies them. Hand-written because Hydra has no such cache;
    tests/test_stacked.py checks the configs equal Hydra's own."""

    def __init__(self, loader, master: DictConfig) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.master, self.parser = loader, master, OverridesParser.create()
        self.composed: dict[tuple, DictConfig] = {}

    def load(self, overrides: list[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(overrides)
        shape = tuple(o.key_or_group if self._plain(o) else o.input_line for o in parsed)
        if shape in self.composed:
            return self._reuse(self.composed[shape], parsed)
        self.composed[shape] = self.loader.load_sweep_config(self.master, overrides)
        return copy.deepcopy(self.composed[shape])  # the launcher sets the job's id and directory on it

    def _plain(self, o) -> bool:
        from hydra.core.override_parser.types import OverrideType

        return (
            o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_hydra_override()
            and not o.is_sweep_override()
            and o.key_or_group not in self.master.hydra.runtime.choices
        )

    def _reuse(self, composed: DictConfig, parsed: list) -> DictConfig:
        from hydra._internal.config_loader_impl import (
            ConfigLoaderImpl,
            get_overrides_dirname,
        )

        config = copy.deepcopy(composed)
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if self._plain(o)], config)
        task = [o for o in parsed if not o.is_hydra_override()]
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in task]
            dirname = config.hydra.job.config.override_dirname
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
            )
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config


def _set_up_job(config: DictConfig) -> tuple[JobReturn, DictConfig]:
    """What ``run_job`` does before calling the task: the job's output directory, its .hydra
    files, and its task config (without the hydra node)."""
    output_dir = _set_output_dir(config)
    HydraConfig.instance().set_config(config)
    task_config = copy.deepcopy(config)
    with read_write(task_config), open_dict(task_config):
        del task_config["hydra"]
    OmegaConf.resolve(task_config)  # its paths name this job's directory, whichever job is current later
    ret = JobReturn(
        cfg=task_config,
        hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
        overrides=list(config.hydra.overrides.task),
        working_dir=str(Path.cwd()),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.hydra.output_subdir is not None:
        hydra_output = output_dir / str(config.hydra.output_subdir)
        _save_config(task_config, "config.yaml", hydra_output)
        _save_config(ret.hydra_cfg, "hydra.yaml", hydra_output)
        _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
    return ret, task_config


def _set_output_dir(config: DictConfig) -> Path:
    """hydra.runtime.output_dir for a job (as run_job sets it): <sweep dir>/<sweep subdir>."""
    output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(output_dir.resolve())
    return output_dir


def _record(ret: JobReturn, config: DictConfig, outcome: Any) -> None:
    """The job's JobReturn; a failure also as one line in its error.txt (as mdn-train writes it)."""
    from mdnlab.cli.entry import JobFailed

    ret.task_name = str(config.hydra.job.name)
    if isinstance(outcome, BaseException):
        line = f"error: {outcome}"
        (Path(config.hydra.runtime.output_dir) / "error.txt").write_text(line + "\n")
        log.error(f"#{config.hydra.job.num}: {line}")
        ret.status, ret.return_value = JobStatus.FAILED, JobFailed(line)
    else:
        from mdnlab.runs.search import objective

        ret.status = JobStatus.COMPLETED
        ret.return_value = objective(outcome)
