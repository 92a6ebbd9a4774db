"""LightningModules: the MSE baseline and the Mixture Density Network on a shared MLP trunk.

Both train in the train split's standardised coordinates and report in original units. Both
also expose ``predictive_mixture(inputs)``, the predictive distribution in original units as
mixture parameters, so every metric and figure treats them alike (the MSE model is a
one-component Gaussian whose σ is its train-split residual RMS).
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mdnlab import mixture

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
}
SIGMA_TRANSFORMS = ("exp", "softplus")


# Optimiser and scheduler arrive as Hydra configs ({_target_, _partial_: true, ...}) and are
# kept as plain dicts, so a checkpoint holds no pickled callables and loads with weights_only.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def _plain(config: Mapping | None) -> dict[str, Any] | None:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def mlp_trunk(input_dim: int, hidden_size: int, n_hidden_layers: int, activation: str) -> nn.Sequential:
    """input_dim → [Linear(hidden_size) → activation] × n_hidden_layers."""
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden_size), ACTIVATIONS[activation]()]
        width = hidden_size
    return nn.Sequential(*layers)


class _Regressor(L.LightningModule):
    """What both models share: standardisation buffers, optimisers, epoch-level metrics.

    The training metric is summed on the device and logged once per epoch: a per-step
    ``self.log`` or ``.item()`` would cost more than the step itself for models this small.
    """

    metric: str  # "nll" or "mse": names val/<metric>, the checkpoint monitor

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            self.register_buffer(name, torch.zeros(input_dim if "input" in name else 1))
        self.input_std.fill_(1.0)
        self.target_std.fill_(1.0)
        self._train_sum: Tensor | None = None
        self._train_steps = 0

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

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        from hydra.utils import instantiate

        optimizer = instantiate(self.hparams.optimizer or DEFAULT_OPTIMIZER, params=self.parameters(),
                                _partial_=False)
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer, _partial_=False)
        monitor = f"val/{self.metric}"
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch"}}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(*batch)
        detached = loss.detach()
        self._train_sum = detached if self._train_sum is None else self._train_sum + detached
        self._train_steps += 1
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_steps:
            mean_loss = self.to_original_units(self._train_sum / self._train_steps)
            self.log(f"train/{self.metric}", mean_loss, on_epoch=True, sync_dist=True)
        self._train_sum, self._train_steps = None, 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        value = self.to_original_units(self.loss(*batch))
        self.log(f"val/{self.metric}", value, on_epoch=True, sync_dist=True, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mdnlab"] = {"model_class": f"{type(self).__module__}.{type(self).__qualname__}"}


class MSERegression(_Regressor):
    """The seed's baseline: an MLP fitted by mean squared error, ŷ = W₂ tanh(W₁ x + b₁) + b₂.

    As a predictive distribution it is N(ŷ(x), s²) with s² the train-split mean squared
    residual (``residual_std``, set when fitting ends), for a fair NLL side by side with MDNs.
    """

    metric = "mse"

    def __init__(self, input_dim: int = 1, hidden_size: int = 20, n_hidden_layers: int = 1,
                 activation: str = "tanh", optimizer=None, scheduler=None) -> None:
        super().__init__(input_dim)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation)
        self.head = nn.Linear(hidden_size if n_hidden_layers else input_dim, 1)
        self.register_buffer("residual_std", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.mse_loss(self(x), y)

    def to_original_units(self, value: Tensor) -> Tensor:
        return value * self.target_std.square().squeeze()

    def on_fit_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and "train" in datamodule.splits:
            with torch.no_grad():
                x, y = datamodule.splits["train"]
                mse = self.loss(x.to(self.device), y.to(self.device))
            self.residual_std.copy_(mse.sqrt() * self.target_std)

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu = self(self.standardize_inputs(inputs)) * self.target_std + self.target_mean
        return torch.zeros_like(mu), mu, self.residual_std.expand_as(mu)


class MixtureDensityNetwork(_Regressor):
    """p(t|x) = Σ_k π_k(x) N(t; μ_k(x), σ_k(x)²) with π = softmax(z_π), μ = z_μ and
    σ = exp(z_σ) (the seed's) or softplus(z_σ), plus ``min_sigma`` (standardised units),
    where (z_π, z_σ, z_μ) come from one linear head on a shared MLP trunk. Trained by the
    mixture NLL of ``mdnlab.mixture``.
    """

    metric = "nll"

    def __init__(self, input_dim: int = 1, n_gaussians: int = 5, hidden_size: int = 20,
                 n_hidden_layers: int = 1, activation: str = "tanh", sigma_transform: str = "exp",
                 min_sigma: float = 0.0, optimizer=None, scheduler=None) -> None:
        super().__init__(input_dim)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation)
        # One matmul for the three heads: same parameters as three Linear layers, one kernel.
        self.head = nn.Linear(hidden_size if n_hidden_layers else input_dim, 3 * n_gaussians)
        self.n_gaussians, self.min_sigma = n_gaussians, min_sigma
        self._sigma = torch.exp if sigma_transform == "exp" else nn.functional.softplus

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture parameters (logits, μ, σ), each (N, K), in standardised units."""
        logits, mu, sigma_raw = self.head(self.trunk(x)).chunk(3, dim=-1)
        return logits, mu, self._sigma(sigma_raw) + self.min_sigma

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return mixture.nll(*self(x), y)

    def to_original_units(self, value: Tensor) -> Tensor:
        # NLL in original units = standardised NLL + log|dt_std/dt| = + log(target_std).
        return value + torch.log(self.target_std).sum()

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, mu, sigma = self(self.standardize_inputs(inputs))
        return logits, mu * self.target_std + self.target_mean, sigma * self.target_std


def load_checkpoint(path: str, map_location: str = "cpu") -> _Regressor:
    """Load a model of this project from a checkpoint, whichever class wrote it."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    class_path = checkpoint.get("mdnlab", {}).get("model_class") if isinstance(checkpoint, dict) else None
    classes = {f"{c.__module__}.{c.__qualname__}": c for c in (MSERegression, MixtureDensityNetwork)}
    if class_path not in classes:
        raise ValueError(f"{path} is not a checkpoint of an mdnlab model")
    return classes[class_path].load_from_checkpoint(path, map_location=map_location)

