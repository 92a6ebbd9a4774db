"""What both models share: standardisation buffers, the trunk's constraints, optimisers and
schedulers from config, per-epoch metrics, and the class names a checkpoint records.

Both models train in the train split's standardised coordinates and report in original units;
both expose ``predictive_mixture(inputs)``, the predictive distribution in original units as a
``mdnlab.mixtures.Mixture``, so every metric and figure treats them alike.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mdnlab.errors import choice, integer, number
from mdnlab.models.fast_loop import EpochTraining
from mdnlab.models.layers import ACTIVATIONS

# Optimiser and scheduler arrive as Hydra configs ({_target_, _partial_: true, ...}) and are
# kept as plain dicts, so a checkpoint holds no pickled callables and loads with weights_only.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def plain(config: Mapping | None) -> dict[str, Any] | None:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def _fitting(trainer) -> bool:
    """Validation inside Trainer.fit (not the sanity check, not trainer.validate)."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class Regressor(EpochTraining, L.LightningModule):
    """A network from ``input_dim`` inputs to a predictive distribution over ``target_dim``
    targets, with ``hidden_size`` × ``n_hidden_layers`` ``activation`` units. A subclass
    defines ``loss`` (what validation reports), ``training_loss`` (what the optimiser
    minimises), ``to_original_units`` and ``predictive_mixture``; ``metric`` names val/<metric>.
    """

    metric: str  # "nll" or "mse": names val/<metric>, the checkpoint monitor

    def __init__(
        self,
        input_dim: int,
        target_dim: int,
        hidden_size: int,
        n_hidden_layers: int,
        activation: str,
        optimizer: Mapping | None,
    ) -> None:
        super().__init__()
        integer("model.input_dim", input_dim, 1)
        integer("model.target_dim", target_dim, 1)
        integer("model.hidden_size", hidden_size, 1)
        integer("model.n_hidden_layers", n_hidden_layers, 1)
        choice("model.activation", activation, ACTIVATIONS)
        if optimizer is not None:
            number("model.optimizer.lr", optimizer.get("lr"), "a finite number > 0", lambda v: v > 0)
        for name, size in (("input", input_dim), ("target", target_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self.target_dim = target_dim
        self.automatic_optimization = False  # the epoch loop steps the optimiser (fast_loop)
        self._validated_epoch = -1

    # ---- units --------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None:
            self.set_standardizer(datamodule.standardizer.as_dict())

    def set_standardizer(self, stats: dict[str, Tensor]) -> None:
        for name, value in stats.items():
            getattr(self, name).copy_(value.reshape(getattr(self, name).shape))

    def standardize_inputs(self, inputs: Tensor) -> Tensor:
        return (inputs - self.input_mean) / self.input_std

    def to_original_units(self, value: Tensor) -> Tensor:
        """Map a standardised-space metric (mean over points) to original units."""
        raise NotImplementedError

    def predictive_distribution(self, inputs: Tensor):
        """p(target | input) at each row of ``inputs`` (original units, shape (N, input_dim)) as
        a ``torch.distributions.MixtureSameFamily`` in original units: ``log_prob(targets)``
        with targets (N,) for one target or (N, D), ``sample``, ``mean``, ``variance``, ``cdf``."""
        inputs = inputs.to(self.device, self.dtype)
        return self.predictive_mixture(inputs.reshape(len(inputs), -1)).distribution()

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        from hydra.utils import instantiate

        optimizer = instantiate(self.hparams.optimizer or DEFAULT_OPTIMIZER, params=self.parameters(), _partial_=False)
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer, _partial_=False)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}  # stepped in on_train_epoch_end

    @property
    def training_metric(self) -> str:
        """The name of what ``training_loss`` measures, logged as train/<name>."""
        return self.metric

    def on_train_epoch_end(self) -> None:
        mean_loss = self.epoch_training_loss()
        if mean_loss is not None:
            self.log(
                f"train/{self.training_metric}",
                self.to_original_units(mean_loss),
                on_epoch=True,
                sync_dist=True,
                batch_size=1,
            )
        # Schedulers step once per epoch; a plateau scheduler only after a validation, with the
        # value that validation produced (never a stale one from an earlier epoch).
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitored = self.trainer.callback_metrics.get(f"val/{self.metric}")
            if self._validated_epoch == self.current_epoch and monitored is not None:
                scheduler.step(monitored)
        else:
            scheduler.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        value = self.to_original_units(self.loss(*batch))
        self.log(f"val/{self.metric}", value, on_epoch=True, sync_dist=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if _fitting(self.trainer):
            self._validated_epoch = self.current_epoch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        checkpoint["mdnlab"] = {
            "model_class": class_path(self),
            "datamodule_class": class_path(datamodule) if datamodule is not None else None,
            **self.mid_epoch_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resume_mid_epoch(checkpoint.get("mdnlab") or {})
