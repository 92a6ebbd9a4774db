"""What every entry point shares: the run directory, and turning bad input into one line."""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from mdnlab.config import ConfigError


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry_point(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task``; a ConfigError becomes one line on stderr and exit status 2.

    In a single run the directory Hydra made for this job is removed again if the job wrote
    nothing but Hydra's own files into it. In a multirun the error is written to the job's
    ``error.txt`` and raised, so Hydra marks this job failed and the others go on.
    """
    try:
        return task(cfg)
    except ConfigError as error:
        line = f"error: {error}"
        if _is_multirun():
            (output_dir() / "error.txt").write_text(line + "\n")
            raise
        _remove_if_only_hydra_files(output_dir())
        print(line, file=sys.stderr)
        sys.exit(2)


def _remove_if_only_hydra_files(run_dir: Path) -> None:
    if not run_dir.is_dir():
        return
    ours = {".hydra"} | {p.name for p in run_dir.glob("*.log")}
    if {p.name for p in run_dir.iterdir()} <= ours:
        shutil.rmtree(run_dir)


def quiet_lightning() -> None:
    """One copy of each Lightning message (Hydra's handlers print it), without the ads."""
    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡"))
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # training_step(dataloader_iter) is deliberate (see models._Regressor.training_step)
    warnings.filterwarnings("ignore", message=r".*dataloader_iter.*")
