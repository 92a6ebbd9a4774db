"""Checkpoints, read and written safely: the one reader every load goes through (ours and
Lightning's), the writer Lightning uses, and rebuilding the model and data module a checkpoint
was trained on (both saved their constructor arguments in it)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mdnlab.errors import ConfigError
from mdnlab.io import atomic_file

REQUIRED = ("mdnlab", "state_dict", "hyper_parameters")


def read(path: Any, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, or ConfigError naming ``key`` if it is missing, unreadable
    or not written by mdnlab. ``weights_only=True`` is passed explicitly, so no environment
    setting (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) lets a crafted file run code."""
    checkpoint = _load_weights_only(path, key)
    missing = [k for k in REQUIRED if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ConfigError(key, str(path), f"a checkpoint written by mdnlab (this file has no '{missing[0]}')")
    named = checkpoint["mdnlab"].get("model_class") if isinstance(checkpoint["mdnlab"], dict) else None
    if not str(named).startswith("mdnlab."):
        raise ConfigError(key, str(path), f"a checkpoint naming an mdnlab model class (it names {named!r})")
    return checkpoint


def _load_weights_only(path: Any, key: str) -> Any:
    p = Path(str(path))
    if p.is_dir():
        raise ConfigError(key, str(path), "a checkpoint file (that is a directory)")
    if not p.is_file():
        raise ConfigError(key, str(path), "an existing checkpoint file (no such file)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every unreadable file gets the same one line
        raise ConfigError(
            key,
            str(path),
            f"a readable checkpoint (a file torch.save wrote; torch.load "
            f"fails on this one with {type(error).__name__})",
        ) from None


def restore(checkpoint: dict[str, Any], path: Any = "", key: str = "ckpt_path", data: dict[str, Any] | None = None):
    """(model, datamodule) rebuilt from a checkpoint; the model in eval mode on the CPU. Settings
    that cannot work or weights that do not fit the model are one ConfigError naming ``key``.
    ``data`` replaces data-module arguments (a table's ``path`` after the file moved)."""
    import lightning as L

    from mdnlab.models.base import Regressor

    info = checkpoint["mdnlab"]
    try:
        model = _class(info.get("model_class"), Regressor, path, key)(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
        datamodule = None
        if info.get("datamodule_class"):
            datamodule_class = _class(info["datamodule_class"], L.LightningDataModule, path, key)
            arguments = {**checkpoint.get("datamodule_hyper_parameters", {}), **(data or {})}
            datamodule = datamodule_class(**arguments)
    except (ConfigError, TypeError, RuntimeError, AttributeError) as error:
        if isinstance(error, ConfigError) and error.key == key:
            raise
        raise ConfigError(
            key,
            str(path),
            f"a checkpoint whose settings and weights fit an mdnlab model ({str(error).splitlines()[0]})",
        ) from None
    return model.eval(), datamodule


def load(path: Any, key: str = "ckpt_path", data: dict[str, Any] | None = None):
    return restore(read(path, key), path, key, data)


def check_fits(path: Any, model, max_epochs: int, key: str = "ckpt_path") -> None:
    """Before training from a checkpoint: it holds weights of this very model (class, shapes)
    and fewer epochs than ``max_epochs``, so Lightning's restore cannot fail half-way."""
    checkpoint = read(path, key)
    state = checkpoint["state_dict"]
    wanted = model.state_dict()
    if checkpoint["mdnlab"].get("model_class", "").rsplit(".", 1)[-1] != type(model).__name__ or {
        k: tuple(v.shape) for k, v in state.items()
    } != {k: tuple(v.shape) for k, v in wanted.items()}:
        settings = ", ".join(f"{k}={v}" for k, v in checkpoint["hyper_parameters"].items() if not isinstance(v, dict))
        raise ConfigError(
            key,
            str(path),
            f"a checkpoint of this run's model, {type(model).__name__} with the "
            f"same sizes (it holds {checkpoint['mdnlab'].get('model_class')}: {settings})",
        )
    if checkpoint["mdnlab"].get("stacked"):
        raise ConfigError(
            key,
            str(path),
            "a checkpoint Lightning wrote for a run trained alone (this one is a "
            "stacked job's weights, with no optimiser or loop state to continue from; "
            "score it with mdn-eval, or rerun the job)",
        )
    epoch = int(checkpoint.get("epoch", 0))
    if epoch + 1 > max_epochs:
        raise ConfigError(
            "trainer.max_epochs", max_epochs, f"more than the {epoch + 1} epochs {path} has already trained"
        )


def write_weights(path: Path, model, datamodule, epoch: int, global_step: int) -> None:
    """A checkpoint of a model trained outside a Lightning Trainer (a stacked job): the keys
    ``restore`` reads, as Lightning names them (so mdn-eval and mdn-sample load it), written
    like ``SafeCheckpointIO`` writes. Marked ``stacked``: it holds no optimiser or loop state."""
    import lightning

    from mdnlab.models.base import class_path

    contents = {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": dict(datamodule.hparams),
        "mdnlab": {"model_class": class_path(model), "datamodule_class": class_path(datamodule), "stacked": True},
    }
    SafeCheckpointIO().save_checkpoint(contents, path)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with both ends made safe. Loads pass ``weights_only=True``
    explicitly (a user's ``ckpt_path`` has been through ``read`` already; Lightning also loads
    files of its own, such as the weights a DDP-spawn rank hands back). Saves
    write a temporary file beside the target, fsync it and rename it over the target, so a kill
    at any moment leaves the old or the new checkpoint: Lightning's own atomic save stages the
    file in $TMPDIR, a copy rather than a rename when the logs are on another file system."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return _load_weights_only(path, "ckpt_path")


def _class(name: Any, base: type, path: Any, key: str) -> type:
    """The class a checkpoint names, only if it is an mdnlab subclass of ``base``: a checkpoint
    must not be able to make us call an arbitrary function with its contents."""
    module, _, attribute = str(name).rpartition(".")
    cls = None
    if module.startswith("mdnlab."):
        try:
            cls = getattr(importlib.import_module(module), attribute, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(key, str(path), f"a checkpoint naming an mdnlab {base.__name__} class (it names {name!r})")
    return cls
