"""What every entry point shares: the run directory, and turning bad input into one line."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from mdnlab.errors import ConfigError, Interrupted, NonFiniteLossError, is_out_of_memory


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# OS errors that are the user's to fix (a full disk, a read-only folder): one line, not a traceback
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
EXIT_STATUS = {ConfigError: 2, Interrupted: 128 + 15, NonFiniteLossError: 1, OSError: 1, MemoryError: 1}


class JobFailed(CompactHydraException):
    """A multirun job's one-line failure: Hydra prints it without a traceback and exits 1."""


def run_entry_point(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task``; bad input, a diverged fit, a SIGTERM or a full disk becomes one line on
    stderr and a non-zero exit (``EXIT_STATUS``).

    After a ConfigError the directory Hydra made for this job is removed again (with the
    folders above it that it leaves empty) if the job wrote nothing but Hydra's own files into
    it. Every other failure leaves the run directory (its records, last good checkpoint and
    metrics) as it is. In a multirun the line is written to the job's ``error.txt`` and raised
    as JobFailed, so Hydra marks this job failed, the other jobs go on, and the sweep ends with
    that line and exit 1.
    """
    from omegaconf.errors import MissingMandatoryValue

    try:
        return task(cfg)
    except MissingMandatoryValue as raised:  # a `???` in the config that the command left out
        key = raised.full_key or "a required key"
        error: Exception = ConfigError(key, "???", f"a value: pass {key}=... on the command line")
    except OSError as raised:
        if raised.errno not in USER_OS_ERRORS:
            raise
        error = OSError(f"could not write {raised.filename or 'a file'}: {raised.strerror}")
    except Exception as raised:  # noqa: BLE001 - narrowed just below
        known = (
            raised
            if isinstance(raised, (ConfigError, NonFiniteLossError, Interrupted))
            else (_out_of_memory(raised, cfg) or _from_rank(raised))
        )
        if known is None:
            raise
        error = known
    line = f"error: {error}"
    if _is_multirun():
        (output_dir() / "error.txt").write_text(line + "\n")
        raise JobFailed(line) from None
    if isinstance(error, ConfigError):
        _remove_if_only_hydra_files(output_dir())
    print(line, file=sys.stderr)
    sys.exit(next(code for kind, code in EXIT_STATUS.items() if isinstance(error, kind)))


# the settings that decide how much memory a run takes
MEMORY_KEYS = (
    "model.hidden_size",
    "model.n_hidden_layers",
    "model.n_gaussians",
    "model.n_members",
    "data.n_samples",
    "data.batch_size",
    "hydra.launcher.max_models",
)


def _out_of_memory(error: Exception, cfg: DictConfig) -> MemoryError | None:
    """A failed allocation, on the CPU or a GPU, as one line naming the sizes that set the
    memory (a run's checkpoints stay as they were: nothing is written after it)."""
    from omegaconf import OmegaConf

    if not is_out_of_memory(error):
        return None
    on_gpu = type(error).__name__ == "OutOfMemoryError"
    sizes = [
        f"{key}={value}"
        for key in MEMORY_KEYS
        if (value := OmegaConf.select(cfg, key, default=None, throw_on_missing=False)) is not None
    ]
    device = "GPU" if on_gpu else "CPU"
    return MemoryError(
        f"out of {device} memory with {', '.join(sizes)}: lower one of them (data.batch_size "
        "for fewer points a step; hydra.launcher.max_models for smaller stacks) or run where "
        "there is more memory; the run directory keeps what it had written"
    )


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
    """Rewrite ``resume=<run dir>`` (and ``ckpt_path=<run dir>/checkpoints/<file>`` given with
    that run's own overrides) so the run continues in its own directory, where its checkpoint
    callback finds its full state. ``ckpt_path=`` with other settings starts a new run from
    those weights and leaves the other run's directory alone.

    ``resume=<run dir>`` stands for the run's original overrides (from .hydra/overrides.yaml)
    plus ``ckpt_path=<run dir>/checkpoints/last.ckpt``; overrides given after it still win. Only
    our own settings are replayed (see ``_replayable``): a crafted run directory cannot make
    the replay instantiate a class of its choosing. Hydra's record of the resumed invocation
    goes to .hydra/resume-<time>, beside the original.
    """
    args, extra = list(argv[1:]), []
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        if key == "resume":
            run_dir = Path(value).expanduser().resolve()
            recorded = run_dir / ".hydra" / "overrides.yaml"
            last = run_dir / "checkpoints" / "last.ckpt"
            if not recorded.is_file() or not last.is_file():
                _refuse(
                    f"resume={value!r} is not allowed: a run directory holding .hydra/overrides.yaml "
                    "and checkpoints/last.ckpt"
                )
            if (run_dir / "metrics.json").is_file() and len(args) == 1:
                print(f"already finished, skipped: {run_dir}")  # nothing to resume, nothing written
                sys.exit(0)
            original = _original_overrides(run_dir)
            unsafe = [o for o in original if not _replayable(o)]
            if unsafe:
                _refuse(
                    f"resume={value!r} is not allowed: a run directory whose .hydra/overrides.yaml holds "
                    f"only mdnlab settings (it holds {unsafe[0]!r}, which replaying could run as code)"
                )
            args[i : i + 1] = [*original, f"ckpt_path={_quoted(last)}"]
            extra = _continue_in(run_dir)
            break
        if key == "ckpt_path" and value:
            path = Path(value).expanduser().resolve()
            run_dir = path.parent.parent
            if path.parent.name == "checkpoints" and (run_dir / ".hydra" / "overrides.yaml").is_file():
                mine = sorted(
                    a for a in args if a.partition("=")[0] not in ("ckpt_path", "resume") and not a.startswith("hydra.")
                )
                if mine == sorted(_original_overrides(run_dir)):
                    extra = _continue_in(run_dir)
    return [argv[0], *args, *extra] if extra else list(argv)


OUR_ROOTS = (
    "seed",
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "paths",
    "test_checkpoint",
    "figures",
    "torch_threads",
    "auto_resume",
    "hparams_search",
    "task_name",
)


def _replayable(override: str) -> bool:
    """A recorded override that sets one of our keys: no added or removed groups, no special
    keys that name a class or its arguments."""
    key = override.partition("=")[0]
    bare = key.lstrip("+~")
    parts = bare.replace("/", ".").split(".")
    added_group = key.startswith(("+", "~")) and "." not in bare
    special = any(p.startswith("_") and p.endswith("_") for p in parts)
    return parts[0] in OUR_ROOTS and not added_group and not special and not key.startswith("~")


def _original_overrides(run_dir: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [
        str(o)
        for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        if str(o).partition("=")[0].lstrip("+~") not in ("ckpt_path", "resume")
    ]


def _refuse(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


def check_log_folder(argv: list[str]) -> None:
    """Before Hydra makes the run directory: the folder it goes in can be made and written,
    else one line (Hydra itself would end in chained tracebacks)."""
    import tempfile

    named = {a.partition("=")[0]: a.partition("=")[2] for a in argv[1:] if "=" in a}
    for key in ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir"):
        if named.get(key):
            where, source = Path(named[key].strip("'\"")), key
            folder = where.parent if key.startswith("hydra.") else where
            break
    else:
        where = folder = Path(os.environ.get("MDNLAB_LOG_DIR") or "logs")
        source = "paths.log_dir"
    if "$" in str(folder):  # an interpolation: Hydra resolves it
        return
    try:
        folder.expanduser().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder.expanduser()):
            pass
    except OSError as error:
        _refuse(
            f"{source}={str(where)!r} is not allowed: a folder this user can write in ({error.strerror}: "
            f"{error.filename or folder}); set MDNLAB_LOG_DIR or paths.log_dir=<folder>"
        )


def _continue_in(run_dir: Path) -> list[str]:
    from datetime import datetime

    return [
        f"hydra.run.dir={_quoted(run_dir)}",
        f"hydra.output_subdir=.hydra/resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}",
    ]


def _remove_if_only_hydra_files(run_dir: Path) -> None:
    """Remove a run directory holding only Hydra's files, and the folders above it (runs/,
    <task>/) that this leaves empty."""
    if not run_dir.is_dir():
        return
    ours = {".hydra"} | {p.name for p in run_dir.glob("*.log")}
    if {p.name for p in run_dir.iterdir()} <= ours:
        shutil.rmtree(run_dir)
        runs, task = run_dir.parent, run_dir.parent.parent  # <log dir>/<task>/runs/<run>
        for folder, names in ((runs, ("runs",)), (task, ("train", "eval", "sample"))):
            if folder.name in names and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
