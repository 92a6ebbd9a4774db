"""Config plumbing: where the configs live, the resolvers they use, and validation of a
composed config before anything is drawn or written. Bad input gets one line naming the key,
the value and what is allowed."""

from __future__ import annotations

import math
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mdnlab.problems import DIRECTIONS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _run_id() -> str:
    # A timestamp alone collides when two runs start in the same second; the random suffix does not.
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def _parallel_jobs(threads: int | None) -> int:
    """Sweep jobs that fit the cores without oversubscribing: cores // torch threads."""
    return max(1, (os.cpu_count() or 1) // max(1, int(threads or 1)))


def _job_dir(number: Any, overrides: Any, limit: int = 160) -> str:
    """A sweep job's directory name: its number and overrides, cut to ``limit`` characters
    (file systems refuse names over 255) with a hash of the full overrides when cut."""
    import hashlib

    name = f"{number}_{overrides}" if overrides else str(number)
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(str(overrides).encode()).hexdigest()[:8]
    return f"{name[:limit - 9]}~{digest}"


def _gpus_per_node(accelerator: str, devices: Any) -> int:
    return int(devices) if accelerator in ("gpu", "cuda") and isinstance(devices, int) else 0


def register_resolvers() -> None:
    for name, function, cache in (("run_id", _run_id, True),
                                  ("mdn_parallel_jobs", _parallel_jobs, False),
                                  ("mdn_job_dir", _job_dir, False),
                                  ("mdn_gpus_per_node", _gpus_per_node, False)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cache)


register_resolvers()


class ConfigError(ValueError):
    """A config value that cannot work. ``str(error)`` is the one line to show the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
        self.key = key


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def _integer(cfg: DictConfig, key: str, minimum: int, optional: bool = False) -> int | None:
    value = _get(cfg, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer ≥ {minimum}" + (" or null" if optional else ""))
    return value


def _number(cfg: DictConfig, key: str, allowed: str, ok) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not ok(value):
        raise ConfigError(key, value, allowed)
    return float(value)


def _choice(cfg: DictConfig, key: str, choices) -> str:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(map(str, choices)))
    return value


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot work; touches no files but ckpt_path."""
    from mdnlab.models import ACTIVATIONS, COVARIANCES, SIGMA_TRANSFORMS

    _integer(cfg, "seed", 0)
    if _get(cfg, "test_checkpoint") is not None:
        _choice(cfg, "test_checkpoint", ("auto", "best", "last"))
    if _get(cfg, "data") is not None:
        _validate_data(cfg)
    model_target = _get(cfg, "model._target_", "")
    if model_target.endswith("MixtureDensityNetwork"):
        _integer(cfg, "model.n_gaussians", 1)
        _integer(cfg, "model.n_members", 1)
        _choice(cfg, "model.sigma_transform", SIGMA_TRANSFORMS)
        if _get(cfg, "model.covariance") is not None:
            _choice(cfg, "model.covariance", COVARIANCES)
        _number(cfg, "model.min_sigma", "a finite number ≥ 0", lambda v: v >= 0)
    _integer(cfg, "model.hidden_size", 1)
    _integer(cfg, "model.n_hidden_layers", 1)
    _choice(cfg, "model.activation", ACTIVATIONS)
    _number(cfg, "model.optimizer.lr", "a finite number > 0", lambda v: v > 0)
    _integer(cfg, "trainer.max_epochs", 1)
    _integer(cfg, "trainer.check_val_every_n_epoch", 1)
    _validate_accelerator(cfg)
    if _get(cfg, "ckpt_path") is not None:
        validate_checkpoint(_get(cfg, "ckpt_path"))


def _validate_data(cfg: DictConfig) -> None:
    target = str(_get(cfg, "data._target_", ""))
    train = _number(cfg, "data.train_fraction", "a number in (0, 1]", lambda v: 0 < v <= 1)
    val = _number(cfg, "data.val_fraction", "a number in [0, 1)", lambda v: 0 <= v < 1)
    if train + val > 1 + 1e-9:
        raise ConfigError("data.val_fraction", val,
                          f"data.train_fraction + data.val_fraction ≤ 1 (train_fraction={train})")
    if val == 0 and _get(cfg, "test_checkpoint", "auto") == "best":
        raise ConfigError("test_checkpoint", "best", "last or auto when data.val_fraction=0 (without a "
                          "validation split there is no best checkpoint)")
    for key in ("data.input_noise", "data.target_noise"):
        if _get(cfg, key) is not None:
            _number(cfg, key, "a finite number ≥ 0", lambda v: v >= 0)
    _integer(cfg, "data.batch_size", 1, optional=True)
    _integer(cfg, "data.passes_per_epoch", 1)
    if target.endswith("TableDataModule"):
        from mdnlab.table import load

        load(_get(cfg, "data.path"), _get(cfg, "data.inputs"), _get(cfg, "data.targets"), train, val)
        return
    if target.endswith("RobotArmDataModule"):
        for key in ("data.link1", "data.link2"):
            _number(cfg, key, "a finite number > 0", lambda v: v > 0)
        for joint in ("theta1", "theta2"):
            low = _number(cfg, f"data.{joint}_low", "a finite number (radians)", lambda v: True)
            _number(cfg, f"data.{joint}_high", f"a finite number > data.{joint}_low={low}",
                    lambda v: v > low)
    else:
        _choice(cfg, "data.direction", DIRECTIONS)
        low = _number(cfg, "data.x_low", "a finite number", lambda v: True)
        _number(cfg, "data.x_high", f"a finite number > data.x_low={low}", lambda v: v > low)
    _number(cfg, "data.noise_std", "a finite number ≥ 0", lambda v: v >= 0)
    n = _integer(cfg, "data.n_samples", 2)
    n_test = _integer(cfg, "data.n_test", 1, optional=True)
    n_train, n_val = round(train * n), round(val * n)
    if n_train < 2 or (val > 0 and n_val < 1) or (n_test is None and n - n_train - n_val < 1):
        raise ConfigError("data.n_samples", n, "enough points for ≥ 2 train, ≥ 1 val and ≥ 1 test "
                          f"(got {n_train}/{n_val}/{n - n_train - n_val}); raise it or set data.n_test")


def _validate_accelerator(cfg: DictConfig) -> None:
    import torch

    accelerator = _choice(cfg, "trainer.accelerator", ("cpu", "gpu", "cuda", "auto"))
    devices = _get(cfg, "trainer.devices", 1)
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError("trainer.accelerator", accelerator,
                              "cpu here: no CUDA GPU is visible (torch.cuda.device_count() == 0)")
        if isinstance(devices, int) and devices > available:
            raise ConfigError("trainer.devices", devices, f"at most {available} GPUs here")
    elif accelerator == "cpu" and isinstance(devices, int) and devices > (os.cpu_count() or 1):
        raise ConfigError("trainer.devices", devices, f"at most {os.cpu_count()} CPU processes here")


def validate_checkpoint(path: Any, key: str = "ckpt_path") -> None:
    from mdnlab.checkpoint import read

    read(path, key)
