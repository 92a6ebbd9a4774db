"""The composed config: where the configs live, the resolvers they use, ``compose`` for Python
use (a notebook, a benchmark) and the checks of a composed config that belong to the run rather
than to one class (each data and model class checks its own arguments in its constructor). Bad
input gets one line naming the key, the value and what is allowed."""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from mdnlab.errors import ConfigError, choice, integer


def _config_dir() -> Path:
    """configs/ inside an installed wheel (mdnlab/configs), else the source checkout's top-level
    configs/ (an editable install): the same files either way, see pyproject.toml."""
    package = Path(__file__).resolve().parent
    packaged = package / "configs"
    return packaged if packaged.is_dir() else package.parents[1] / "configs"


CONFIG_DIR = _config_dir()


def _run_id() -> str:
    # A timestamp alone collides when two runs start in the same second; the random suffix does not.
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def _parallel_jobs(threads: int | None) -> int:
    """Sweep jobs that fit the cores without oversubscribing: cores // torch threads."""
    return max(1, (os.cpu_count() or 1) // max(1, int(threads or 1)))


def _job_dir(number: Any, overrides: Any, limit: int = 160) -> str:
    """A sweep job's directory name: its number and overrides, cut to ``limit`` characters
    (file systems refuse names over 255) with a hash of the full overrides when cut, one level
    deep: a '/' of a nested group choice (experiment=uci/concrete) becomes '.'."""
    overrides = str(overrides).replace("/", ".") if overrides else overrides
    name = f"{number}_{overrides}" if overrides else str(number)
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(str(overrides).encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}~{digest}"


def _gpus_per_node(accelerator: str, devices: Any) -> int:
    return int(devices) if accelerator in ("gpu", "cuda") and isinstance(devices, int) else 0


def register_resolvers() -> None:
    for name, function, cache in (
        ("run_id", _run_id, True),
        ("mdn_parallel_jobs", _parallel_jobs, False),
        ("mdn_job_dir", _job_dir, False),
        ("mdn_gpus_per_node", _gpus_per_node, False),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cache)


register_resolvers()


def compose(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """The config mdn-train composes from ``overrides``, for use from Python (a notebook, a
    benchmark, a test): Hydra's compose API on the same config tree, made the current Hydra
    config so that the run's paths and records resolve as in a run. With ``output_dir`` (made
    if missing), the run writes there and its log folder is the one above it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with open_dict(cfg):
            cfg.paths.log_dir = str(Path(output_dir).parent)
            cfg.paths.output_dir = str(output_dir)
    return cfg


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def has_validation(cfg: DictConfig) -> bool:
    """Whether the run's data keep a validation split (data.val_fraction > 0)."""
    value = _get(cfg, "data.val_fraction")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_run(cfg: DictConfig) -> None:
    """The run-level keys: seed, test_checkpoint, the trainer, ckpt_path."""
    check_seed("seed", _get(cfg, "seed"))
    threads = integer("torch_threads", _get(cfg, "torch_threads"), 1, optional=True)
    if threads is not None and threads > 4 * (os.cpu_count() or 1):
        raise ConfigError("torch_threads", threads, f"at most {4 * (os.cpu_count() or 1)} here, or null")
    choice("test_checkpoint", _get(cfg, "test_checkpoint", "auto"), ("auto", "best", "last"))
    if not has_validation(cfg) and _get(cfg, "test_checkpoint", "auto") == "best":
        raise ConfigError(
            "test_checkpoint",
            "best",
            "last or auto when data.val_fraction=0 (without a validation split there is no best checkpoint)",
        )
    integer("trainer.max_epochs", _get(cfg, "trainer.max_epochs"), 1)
    integer("trainer.check_val_every_n_epoch", _get(cfg, "trainer.check_val_every_n_epoch"), 1)
    _check_accelerator(cfg)
    if _get(cfg, "ckpt_path") is not None:
        from mdnlab.checkpoint import read

        read(_get(cfg, "ckpt_path"))


SEED_MAX = 2**32 - 1  # what seed_everything (numpy's generator) accepts


def check_seed(key: str, value: Any) -> int:
    seed = integer(key, value, 0)
    if seed > SEED_MAX:
        raise ConfigError(key, value, f"an integer from 0 to {SEED_MAX}")
    return seed


def instantiate_checked(cfg: DictConfig):
    """(datamodule, model) from ``cfg.data`` and ``cfg.model``, each checked by its own class
    (the data decide the model's input and target sizes; optimizer/scheduler stay configs)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        datamodule = instantiate(cfg.data)
        datamodule.check()
        model = instantiate(
            cfg.model, input_dim=datamodule.input_dim, target_dim=datamodule.target_dim, _recursive_=False
        )
        if getattr(datamodule, "truncates", False):  # here, before a run directory is started
            check = getattr(model, "check_truncation", None)
            if check is None:
                raise ConfigError(
                    "data.support", "truncate", "transform or reject with this model (model=mdn alone trains truncated)"
                )
            check()
    except InstantiationException as error:  # Hydra wraps what a constructor raises
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            raise _unknown_setting(cfg, cause) from None
        raise
    return datamodule, model


def _unknown_setting(cfg: DictConfig, error: TypeError) -> ConfigError:
    """A key the class does not take, e.g. model.n_gaussians (set by an experiment) under
    model=mse, or a typo added with +model.foo=1."""
    import inspect

    from hydra.utils import get_class

    name = str(error).split("'")[1]
    group = "data" if name in (cfg.get("data") or {}) and name not in (cfg.get("model") or {}) else "model"
    target = get_class(cfg[group]._target_)
    known = [p for p in inspect.signature(target).parameters if p not in ("input_dim", "target_dim")]
    hint = (
        " (the experiment sets it for another model: with model=mse, e.g. experiment=seed_mse_forward)"
        if group == "model" and target.__name__ == "MSERegression"
        else ""
    )
    return ConfigError(
        f"{group}.{name}",
        OmegaConf.select(cfg, f"{group}.{name}"),
        f"a setting of {target.__name__}: {', '.join(known)}{hint}",
    )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot work. Builds the data and model objects
    to let them check their arguments (drawing nothing, leaving the global RNG as it was)."""
    import torch

    check_run(cfg)
    with torch.random.fork_rng():
        instantiate_checked(cfg)


def _check_accelerator(cfg: DictConfig) -> None:
    import torch

    accelerator = choice("trainer.accelerator", _get(cfg, "trainer.accelerator"), ("cpu", "gpu", "cuda", "auto"))
    devices = _get(cfg, "trainer.devices", 1)
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(
                "trainer.accelerator", accelerator, "cpu here: no CUDA GPU is visible (torch.cuda.device_count() == 0)"
            )
        if isinstance(devices, int) and devices > available:
            raise ConfigError("trainer.devices", devices, f"at most {available} GPUs here")
    elif accelerator == "cpu" and isinstance(devices, int) and devices > (os.cpu_count() or 1):
        raise ConfigError("trainer.devices", devices, f"at most {os.cpu_count()} CPU processes here")
