"""What every entry point shares: the run directory, and turning bad input into one line."""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from mdnlab.errors import ConfigError, NonFiniteLossError


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry_point(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task``; bad input or a diverged fit becomes one line on stderr and a non-zero exit.

    A ConfigError exits with 2, and the directory Hydra made for this job is removed again if
    the job wrote nothing but Hydra's own files into it. A non-finite training loss exits with
    1 and leaves the run directory (and its last good checkpoints) as they are. In a multirun
    the line is written to the job's ``error.txt`` and the error raised, so Hydra marks this
    job failed and the other jobs go on.
    """
    from omegaconf.errors import MissingMandatoryValue

    try:
        return task(cfg)
    except MissingMandatoryValue as raised:  # a `???` in the config that the command left out
        key = raised.full_key or "a required key"
        error: Exception = ConfigError(key, "???", f"a value: pass {key}=... on the command line")
    except Exception as raised:  # noqa: BLE001 - narrowed just below
        known = raised if isinstance(raised, (ConfigError, NonFiniteLossError)) else _from_rank(raised)
        if known is None:
            raise
        error = known
    line = f"error: {error}"
    if _is_multirun():
        (output_dir() / "error.txt").write_text(line + "\n")
        raise error
    if isinstance(error, ConfigError):
        _remove_if_only_hydra_files(output_dir())
    print(line, file=sys.stderr)
    sys.exit(2 if isinstance(error, ConfigError) else 1)


def _from_rank(error: Exception) -> Exception | None:
    """A NonFiniteLossError raised in a spawned DDP rank reaches us as the rank's traceback text
    inside another exception; recover its one line."""

    marker = "NonFiniteLossError: "
    lines = [ln for ln in str(error).splitlines() if marker in ln]
    return NonFiniteLossError(lines[-1].split(marker, 1)[1]) if lines else None


def _quoted(value: Path) -> str:
    """A path as a quoted Hydra override value, whatever characters it holds."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_arguments(argv: list[str]) -> list[str]:
    """Rewrite ``resume=<run dir>`` (and ``ckpt_path=<run dir>/checkpoints/<file>``) so the run
    continues in its own directory, where its checkpoint callback finds its full state.

    ``resume=<run dir>`` stands for the run's original overrides (from .hydra/overrides.yaml)
    plus ``ckpt_path=<run dir>/checkpoints/last.ckpt``; overrides given after it still win.
    Hydra's record of the resumed invocation goes to .hydra/resume-<time>, beside the original.
    """
    from omegaconf import OmegaConf

    args, extra = list(argv[1:]), []
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        if key == "resume":
            run_dir = Path(value).expanduser().resolve()
            recorded = run_dir / ".hydra" / "overrides.yaml"
            last = run_dir / "checkpoints" / "last.ckpt"
            if not recorded.is_file() or not last.is_file():
                print(f"error: resume={value!r} is not allowed: a run directory holding "
                      ".hydra/overrides.yaml and checkpoints/last.ckpt", file=sys.stderr)
                sys.exit(2)
            original = [o for o in OmegaConf.load(recorded)
                        if o.partition("=")[0].lstrip("+~") not in ("ckpt_path", "resume")]
            args[i:i + 1] = [*original, f"ckpt_path={_quoted(last)}"]
            extra = _continue_in(run_dir)
            break
        if key == "ckpt_path" and value:
            path = Path(value).expanduser().resolve()
            if path.parent.name == "checkpoints" and (path.parent.parent / ".hydra").is_dir():
                extra = _continue_in(path.parent.parent)
    return [argv[0], *args, *extra] if extra else list(argv)


def _continue_in(run_dir: Path) -> list[str]:
    from datetime import datetime

    return [f"hydra.run.dir={_quoted(run_dir)}",
            f"hydra.output_subdir=.hydra/resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"]


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
    # training_step(dataloader_iter) is deliberate (see models.fast_loop)
    warnings.filterwarnings("ignore", message=r".*dataloader_iter.*")
