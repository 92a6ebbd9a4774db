"""One model of a stack (``Job``): its config, run directory, data, single-model twin, loggers
and how its training went, shared by the stack's planner (``training.stacks``) and its loop
(``training.stacked_loop``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mdnlab.config import has_validation
from mdnlab.runs import rundir
from mdnlab.runs.finish import say


@dataclass
class Job:
    """One model of a stack: its config, run directory, data, single-model twin, loggers and
    how its training went."""

    cfg: DictConfig
    hydra_config: DictConfig
    run_dir: Path
    datamodule: Any = None
    model: Any = None
    loggers: list = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    stopped: bool = False
    error: Exception | None = None
    best_score: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    pruned_step: int | None = None  # where the search's pruner stopped it (global step, check)
    pruned_epoch: int | None = None
    search_best: float = math.inf  # its best validation score so far, as its search trial sees it

    def enter(self) -> None:
        """Make this job's config the current Hydra config (what its paths and records read)."""
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(self.hydra_config)

    @property
    def max_epochs(self) -> int:
        return int(self.cfg.trainer.max_epochs)

    def early_stopping(self, key: str, default: float) -> float:
        stopping = (self.cfg.get("callbacks") or {}).get("early_stopping")
        return float(stopping.get(key, default)) if stopping else math.inf if key == "patience" else default


def validates(job: Job) -> bool:
    return has_validation(job.cfg) and len(job.datamodule.splits["val"][0]) > 0


def announce(jobs: list[Job], device: torch.device) -> None:
    first = jobs[0].cfg
    say(
        f"stacked: {len(jobs)} models ({rundir.config_summary(first).split(' | ', 1)[1]}) on {device}",
        *(f"  {job.run_dir}" for job in jobs[:3]),
        *([f"  … and {len(jobs) - 3} more"] if len(jobs) > 3 else []),
    )
