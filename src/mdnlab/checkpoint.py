"""Reading checkpoints back: check that a file is one of ours, then rebuild the model and the
datamodule it was trained on (both saved their constructor arguments in it)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from mdnlab.errors import ConfigError


def read(path: Any, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, or ConfigError naming ``key`` if it is missing, unreadable
    or not written by mdnlab."""
    p = Path(str(path))
    if not p.is_file():
        raise ConfigError(key, str(path), "an existing checkpoint file (no such file)")
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every unreadable file gets the same one line
        raise ConfigError(key, str(path), f"a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "mdnlab" not in checkpoint:
        raise ConfigError(key, str(path), "a checkpoint written by mdnlab (this file is not)")
    return checkpoint


def restore(checkpoint: dict[str, Any]):
    """(model, datamodule) rebuilt from a checkpoint; the model in eval mode on the CPU."""
    import lightning as L

    from mdnlab.models.base import Regressor

    info = checkpoint["mdnlab"]
    model = _class(info["model_class"], Regressor)(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = None
    if info.get("datamodule_class"):
        datamodule_class = _class(info["datamodule_class"], L.LightningDataModule)
        datamodule = datamodule_class(**checkpoint["datamodule_hyper_parameters"])
    return model.eval(), datamodule


def load(path: Any, key: str = "ckpt_path"):
    return restore(read(path, key))


def _class(path: str, base: type) -> type:
    """The class a checkpoint names, only if it is an mdnlab subclass of ``base``: a checkpoint
    must not be able to make us call an arbitrary function with its contents."""
    module, _, name = str(path).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module.startswith("mdnlab.") else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError("ckpt_path", path, f"a checkpoint naming an mdnlab {base.__name__} class")
    return cls
