"""A run directory's own record, run.json (the config that made the run, what it left), and the
other files a finished run writes: metrics.json, hparams.yaml.

Rerunning a command into an existing directory (a killed multirun with the same
hydra.sweep.dir, a fixed hydra.run.dir, a requeued cluster job) then finishes what is missing:
a directory whose run finished (metrics.json) for the same config is skipped, one that was cut
off resumes from its last.ckpt, a failed one runs again; a directory that holds a run of
another config is refused with one line and left as it was. Hydra rewrites .hydra/ before any
of our code runs, so the record keeps a copy of Hydra's first files and puts them back.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mdnlab.errors import ConfigError
from mdnlab.io import remove_temporaries, write_json_atomic, write_text_atomic

RECORD = "run.json"
# where the run is written and how fast it runs, not what it computes
IGNORED = ("paths", "ckpt_path", "auto_resume", "torch_threads", "trainer.default_root_dir", "tags", "extras")
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The composed config, resolved and flattened to dotted keys, less ``IGNORED``; the run
    directory inside values (checkpoint and logger folders) reads ``<run dir>``, so a moved
    directory is still the same run."""
    tree = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items_ex(resolve=False)
        if key != "hydra"
    }  # Hydra's own node: not the run
    here = str(OmegaConf.select(cfg, "paths.output_dir", default="") or "\0")
    return {
        k: v.replace(here, "<run dir>") if isinstance(v, str) else v
        for k, v in flatten(tree).items()
        if not any(k == i or k.startswith(i + ".") for i in IGNORED)
    }


def read(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def check(cfg: DictConfig, run_dir: Path) -> dict[str, float] | None:
    """Before training in ``run_dir``: the recorded metrics if this config's run there already
    finished (then nothing is to be written), else None. Raises ConfigError, naming the first
    key that differs, if the directory holds another config's run."""
    run_dir = Path(run_dir)
    record = read(run_dir)
    if "config" not in record:
        return None
    _restore_hydra_files(run_dir, record)
    mine = identity(cfg)
    if record["config"] != mine:
        key, old, new = _first_difference(record["config"], mine)
        finished = (run_dir / "metrics.json").is_file()
        what = "a finished run" if finished else f"a run (continue it with mdn-train resume={run_dir})"
        raise ConfigError(
            key,
            new,
            f"{old!r}, as recorded in {run_dir / RECORD}: that directory holds {what} "
            "of another config; for this one, give a new hydra.run.dir / hydra.sweep.dir",
        )
    if (run_dir / "metrics.json").is_file():
        print(f"already finished, skipped: {run_dir}")
        recorded = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        return {k: math.nan if v is None else v for k, v in recorded.items()}  # null: a NaN in memory
    return None


def start(cfg: DictConfig, run_dir: Path) -> None:
    """Record this run as started (after ``check`` and every other check passed)."""
    if not _is_rank_zero():
        return
    run_dir = Path(run_dir)
    record = read(run_dir)
    (run_dir / "error.txt").unlink(missing_ok=True)  # a failed job runs again
    if (run_dir / "checkpoints").is_dir():
        remove_temporaries(run_dir / "checkpoints")  # what a kill during a save left
    hydra_files = record.get("hydra_files") or _hydra_files(run_dir)
    write_json_atomic(
        run_dir / RECORD,
        {
            "run_dir": str(run_dir),
            "status": "running",
            "starts": record.get("starts", 0) + 1,
            "config": identity(cfg),
            "hydra_files": hydra_files,
        },
    )


def holds_a_record(run_dir: Path) -> bool:
    return "config" in read(run_dir)


def finish(run_dir: Path, **fields: Any) -> None:
    """Add the final fields (metrics, tested checkpoint, fit time) to the record."""
    record = read(run_dir)
    record.update(fields, run_dir=str(run_dir), status="completed")
    write_json_atomic(Path(run_dir) / RECORD, record)


def _hydra_files(run_dir: Path) -> dict[str, str]:
    hydra = run_dir / ".hydra"
    return {name: (hydra / name).read_text() for name in HYDRA_FILES if (hydra / name).is_file()}


def _restore_hydra_files(run_dir: Path, record: dict[str, Any]) -> None:
    for name, text in (record.get("hydra_files") or {}).items():
        path = run_dir / ".hydra" / name
        if path.parent.is_dir() and (not path.is_file() or path.read_text() != text):
            write_text_atomic(path, text)


def _first_difference(old: dict, new: dict) -> tuple[str, Any, Any]:
    """The first key that differs, top-level keys first (seed before data.seed, which follows it)."""
    for key in sorted(set(old) | set(new), key=lambda k: (k.count("."), k)):
        if old.get(key) != new.get(key):
            return key, old.get(key), new.get(key)
    return "config", old, new


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": leaf}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _is_rank_zero() -> bool:
    """Ranks started by a launcher (torchrun, srun) share the directory: one of them writes."""
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


# ---- what a finished run writes ----------------------------------------------------------------


def record(cfg: DictConfig, run_dir: Path, metrics: dict[str, float], tested_path: str, fit_seconds: float) -> None:
    """metrics.json holds only what the seed determines (two runs of one seed match byte for
    byte); run.json adds where and how long: what scripts and tests read, never stdout."""
    write_json_atomic(
        run_dir / "metrics.json", {"metrics": metrics, "experiment": experiment_name(), "overrides": _task_overrides()}
    )
    finish(
        run_dir,
        tested_checkpoint=tested_path,
        fit_seconds=fit_seconds,
        metrics=metrics,
        tags=list(OmegaConf.select(cfg, "tags", default=[]) or []),
    )


def write_hparams(run_dir: Path, hparams: dict[str, Any]) -> None:
    """hparams.yaml with the run's knobs (Lightning writes it once, empty, at the start)."""
    write_text_atomic(run_dir / "hparams.yaml", OmegaConf.to_yaml(OmegaConf.create(hparams)))


# settings of how a run is shown or where it is written, not what it computes
NOT_KNOBS = (
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.deterministic",
    "data.seed",
)


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The knobs of a run, flat, for TensorBoard's HPARAMS tab and hparams.yaml: seed,
    experiment and the scalar settings of data, model and trainer, without class paths
    (``_target_``) and without what only says how the run is shown or where it is written."""
    flat: dict[str, Any] = {
        "seed": cfg.seed,
        "experiment": experiment_name(),
        "tags": ",".join(map(str, cfg.get("tags") or [])),
    }
    for group in ("data", "model", "trainer"):
        container = OmegaConf.to_container(cfg.get(group) or {}, resolve=True)
        for key, value in flatten(container, group).items():
            if (
                isinstance(value, (int, float, str, bool))
                and not key.rsplit(".", 1)[-1].startswith("_")
                and key not in NOT_KNOBS
            ):
                flat[key] = value
    return flat


def print_config_tree(cfg: DictConfig, run_dir: Path) -> None:
    """The composed config as a tree, one branch per group (extras.print_config), printed and
    saved as <run dir>/config_tree.txt."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config")
    for key in cfg:
        if key != "hydra":
            node = cfg[key]
            text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
            tree.add(str(key)).add(Syntax(text.rstrip(), "yaml"))
    Console().print(tree)
    with open(run_dir / "config_tree.txt", "w") as handle:
        Console(file=handle, width=120, color_system=None).print(tree)


def config_summary(cfg: DictConfig) -> str:
    """One line: what is trained on what, for how long, where."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    groups = " ".join(f"{g}={choices.get(g)}" for g in ("experiment", "data", "model", "trainer") if choices.get(g))
    model = cfg.model
    size = f"{model.get('n_gaussians', '')} Gaussians, " if model.get("n_gaussians") else ""
    size += f"{model.get('n_hidden_layers', 1)}×{model.get('hidden_size')} {model.get('activation')}"
    steps = f"{cfg.trainer.max_epochs} epochs × {cfg.data.get('passes_per_epoch', 1)} passes"
    return f"{groups} seed={cfg.seed} | {size} | {steps} on {cfg.trainer.accelerator}"


def summary_markdown(cfg: DictConfig, metrics: dict[str, float]) -> str:
    """The run on one page: its final metrics as a table and its composed config."""
    rows = "\n".join(f"| {name} | {value:.6g} |" for name, value in sorted(metrics.items()))
    config = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    indented = "\n".join("    " + line for line in config.splitlines())
    return f"| metric | value |\n|---|---|\n{rows}\n\nComposed config:\n\n{indented}\n"


def experiment_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.choices.get("experiment") or "")


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
