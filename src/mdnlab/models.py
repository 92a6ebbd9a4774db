"""LightningModules: the MSE baseline and the Mixture Density Network on a shared MLP trunk.

Both train in the train split's standardised coordinates and report in original units. Both
also expose ``predictive_mixture(inputs)``, the predictive distribution in original units as
mixture parameters, so every metric and figure treats them alike (the MSE model is a
one-component Gaussian whose σ is its train-split residual RMS).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator, Mapping

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mdnlab import mixture, mvmixture

# training_step(dataloader_iter) is deliberate (see _Regressor.training_step); set here, not only
# in the entry points, so that spawned DDP ranks, which import this module afresh, stay quiet too
warnings.filterwarnings("ignore", message=r".*dataloader_iter.*")

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
}
SIGMA_TRANSFORMS = ("exp", "softplus")
COVARIANCES = ("diag", "full")


# Optimiser and scheduler arrive as Hydra configs ({_target_, _partial_: true, ...}) and are
# kept as plain dicts, so a checkpoint holds no pickled callables and loads with weights_only.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def _plain(config: Mapping | None) -> dict[str, Any] | None:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def _fitting(trainer) -> bool:
    """Validation inside Trainer.fit (not the sanity check, not trainer.validate)."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


def _class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _is_registered(state: dict[str, Any], name: str) -> bool:
    return (name in state.get("_parameters", ()) or name in state.get("_buffers", ())
            or name in state.get("_modules", ()))


def mlp_trunk(input_dim: int, hidden_size: int, n_hidden_layers: int, activation: str) -> nn.Sequential:
    """input_dim → [Linear(hidden_size) → activation] × n_hidden_layers."""
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden_size), ACTIVATIONS[activation]()]
        width = hidden_size
    return nn.Sequential(*layers)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class _Regressor(L.LightningModule):
    """What both models share: standardisation buffers, optimisers, epoch-level metrics.

    The training metric is summed on the device and logged once per epoch: a per-step
    ``self.log`` or ``.item()`` would cost more than the step itself for models this small.
    """

    metric: str  # "nll" or "mse": names val/<metric>, the checkpoint monitor

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets bookkeeping attributes (``_current_fx_name`` and others) on the module
        # around every hook, ~20 times a step, and nn.Module.__setattr__ spends microseconds on
        # each in Parameter/Module/buffer checks. A plain value that shadows no parameter, buffer
        # or submodule needs none of them: measured, this alone cuts the step time by ~10%.
        if type(value) in _PLAIN_TYPES and not _is_registered(self.__dict__, name):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, input_dim: int, target_dim: int = 1) -> None:
        super().__init__()
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            self.register_buffer(name, torch.zeros(input_dim if "input" in name else target_dim))
        self.input_std.fill_(1.0)
        self.target_std.fill_(1.0)
        self.automatic_optimization = False  # see training_step
        self._train_sum: Tensor | None = None
        self._train_steps = 0
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

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """What the optimiser minimises; ``loss`` is what validation and tests report."""
        return self.loss(x, y)

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        from hydra.utils import instantiate

        optimizer = instantiate(self.hparams.optimizer or DEFAULT_OPTIMIZER, params=self.parameters(),
                                _partial_=False)
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer, _partial_=False)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}  # stepped in on_train_epoch_end

    def training_step(self, dataloader_iter: Iterator) -> None:
        """All of the epoch's optimiser steps in one call (manual optimisation).

        Lightning's per-batch machinery (hooks, closures, callbacks) costs about as much as a
        step of a model this small, so the module drains the epoch's batch iterator itself:
        one Lightning batch, ``data.passes_per_epoch`` optimiser steps, each through
        ``manual_backward`` and the LightningOptimizer, so global_step, DDP gradient sync and
        the precision plugin all behave as usual. Losses stay on the device; the one host sync
        per epoch is the finiteness check, made before validation and checkpointing can run.
        """
        optimizer = self.optimizers()
        backward, step = self._step_functions(optimizer)
        max_steps = self.trainer.max_steps
        losses = []
        for batch, _, _ in dataloader_iter:
            if 0 <= max_steps <= self.global_step:  # trainer.max_steps may end an epoch early
                break
            loss = self.training_loss(*batch)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            step()
            losses.append(loss.detach())
        if not losses:
            return
        losses = torch.stack(losses)
        if not bool(torch.isfinite(losses).all()):
            first = int((~torch.isfinite(losses)).nonzero()[0, 0])
            step = self.global_step - len(losses) + first
            raise NonFiniteLossError(
                f"training loss became non-finite ({losses[first].item()}) in epoch "
                f"{self.current_epoch} at global step {step}; stopped before saving, so the "
                "checkpoints in the run directory hold the last finite state")
        self._train_sum, self._train_steps = losses.sum(), len(losses)

    def _step_functions(self, optimizer) -> tuple[Callable, Callable]:
        """(backward, step) for one optimiser step.

        Normally ``manual_backward`` and ``LightningOptimizer.step``. Each dispatches hooks
        (on_before_backward, on_after_backward, on_before_optimizer_step) to every callback,
        ~40 µs a step here, which is ~5% of a step of the seed's model. When nothing listens to
        those hooks and a plain float32, single-device strategy runs them (nothing to scale,
        sync or clip), the fast path calls the tensor and optimiser directly and still counts
        the step in Lightning's progress (so global_step, checkpoints and logging are unchanged).
        """
        if not self._hooks_are_silent():
            return self.manual_backward, optimizer.step

        def step() -> None:
            optimizer._on_before_step()  # Lightning's step accounting (progress, profiler)
            optimizer.optimizer.step()
            optimizer._on_after_step()

        return Tensor.backward, step

    def _hooks_are_silent(self) -> bool:
        from lightning.pytorch import Callback
        from lightning.pytorch.plugins.precision import Precision
        from lightning.pytorch.strategies import SingleDeviceStrategy
        from lightning.pytorch.utilities.model_helpers import is_overridden

        trainer = self.trainer
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        listening = any(is_overridden(h, self, L.LightningModule) for h in hooks) or any(
            is_overridden(h, cb, Callback) for h in hooks for cb in trainer.callbacks)
        plain = (type(trainer.strategy) is SingleDeviceStrategy
                 and type(trainer.precision_plugin) is Precision)
        return plain and not listening and trainer.gradient_clip_val is None

    def on_train_epoch_end(self) -> None:
        if self._train_steps:
            mean_loss = self.to_original_units(self._train_sum / self._train_steps)
            self.log(f"train/{self.metric}", mean_loss, on_epoch=True, sync_dist=True, batch_size=1)
        self._train_sum, self._train_steps = None, 0
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

    def on_validation_epoch_end(self) -> None:
        if _fitting(self.trainer):
            self._validated_epoch = self.current_epoch

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        value = self.to_original_units(self.loss(*batch))
        self.log(f"val/{self.metric}", value, on_epoch=True, sync_dist=True, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        checkpoint["mdnlab"] = {
            "model_class": _class_path(self),
            "datamodule_class": _class_path(datamodule) if datamodule is not None else None,
        }


class MSERegression(_Regressor):
    """The seed's baseline: an MLP fitted by mean squared error, ŷ = W₂ tanh(W₁ x + b₁) + b₂.

    As a predictive distribution it is N(ŷ(x), diag(s²)) with s² the train-split mean squared
    residual per target (``residual_std``), for a fair NLL side by side with MDNs. With D > 1
    targets the loss is the MSE in original units, averaged over targets (each standardised
    target's squared error weighted by its variance share).
    """

    metric = "mse"

    def __init__(self, input_dim: int = 1, target_dim: int = 1, hidden_size: int = 20,
                 n_hidden_layers: int = 1, activation: str = "tanh", optimizer=None,
                 scheduler=None) -> None:
        super().__init__(input_dim, target_dim)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.target_dim = target_dim
        self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation)
        self.head = nn.Linear(hidden_size if n_hidden_layers else input_dim, target_dim)
        self.register_buffer("residual_std", torch.ones(target_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        if self.target_dim == 1:
            return nn.functional.mse_loss(self(x), y)
        variance = self.target_std.square()
        return ((self(x) - y).square() * (variance / variance.mean())).mean()

    def to_original_units(self, value: Tensor) -> Tensor:
        return value * self.target_std.square().mean()

    def on_validation_epoch_start(self) -> None:
        # Refreshed before every validation, so each checkpoint (saved at validation end)
        # carries the σ that goes with its weights. Averaged over DDP ranks' shards.
        datamodule = getattr(self.trainer, "datamodule", None)
        if not _fitting(self.trainer) or datamodule is None or "train" not in datamodule.splits:
            return
        with torch.no_grad():
            x, y = datamodule.splits["train"]
            mse = (self(x) - y).square().mean(0)  # per target, standardised
            mse = self.trainer.strategy.reduce(mse, reduce_op="mean")
        self.residual_std.copy_(mse.sqrt() * self.target_std)

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One component: (N, 1) each for one target, (N, 1), (N, 1, D), (N, 1, D) for D."""
        mu = self(self.standardize_inputs(inputs)) * self.target_std + self.target_mean
        if self.target_dim == 1:
            return torch.zeros_like(mu), mu, self.residual_std.expand_as(mu)
        mu = mu.unsqueeze(1)
        return mu.new_zeros(mu.shape[:2]), mu, self.residual_std.expand_as(mu)


class MemberLinear(nn.Module):
    """M independent linear layers in one batched matmul: (M, N, in) → (M, N, out).

    Written by hand because torch has no batched Linear; initialised like nn.Linear
    (U(±1/√in) for weights and biases), each member from its own draws.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class MixtureDensityNetwork(_Regressor):
    """p(t|x) = Σ_k π_k(x) N(t; μ_k(x), Σ_k(x)) with π = softmax(z_π), μ = z_μ and, for one
    target, σ = exp(z_σ) (the seed's) or softplus(z_σ), plus ``min_sigma`` (standardised units),
    where (z_π, z_σ, z_μ) come from one linear head on a shared MLP trunk. Trained by the
    mixture NLL of ``mdnlab.mixture`` (one target) or ``mdnlab.mvmixture`` (``target_dim`` D > 1).

    With D > 1 targets, ``covariance`` picks the components' shape: ``diag`` (Σ_k = diag(σ_k²),
    D σ outputs per component, Bishop 1994) or ``full`` (Σ_k = L_k L_kᵀ with a Cholesky factor
    whose diagonal goes through the σ transform and whose D(D−1)/2 entries below it are free).
    Parameters come out as (logits (N, K), μ (N, K), σ (N, K)) for one target and
    (logits (N, K), μ (N, K, D), scale (N, K, D) or (N, K, D, D)) for D targets.

    ``n_members > 1`` makes it a deep ensemble (Lakshminarayanan et al., 2017): M such networks
    from independent initialisations, each trained on its own NLL (the training loss is their
    mean), predicting together as the equal-weight mixture of their mixtures,

        p(t|x) = (1/M) Σ_m Σ_k π_mk(x) N(t; μ_mk(x), Σ_mk(x)),

    itself a Gaussian mixture of M·K components, so every metric and figure applies unchanged.
    The members run as one batched matmul per layer.
    """

    metric = "nll"

    def __init__(self, input_dim: int = 1, target_dim: int = 1, n_gaussians: int = 5,
                 hidden_size: int = 20, n_hidden_layers: int = 1, activation: str = "tanh",
                 sigma_transform: str = "exp", min_sigma: float = 0.0, covariance: str = "diag",
                 n_members: int = 1, optimizer=None, scheduler=None) -> None:
        super().__init__(input_dim, target_dim)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.n_gaussians, self.min_sigma, self.n_members = n_gaussians, min_sigma, n_members
        self.target_dim = target_dim
        self.full_covariance = covariance == "full" and target_dim > 1
        self._sigma = torch.exp if sigma_transform == "exp" else nn.functional.softplus
        k, d = n_gaussians, target_dim
        # one matmul for all heads: logits K, μ K·D, σ K·D, then K·D(D−1)/2 Cholesky entries
        self._sizes = [k, k * d, k * d] + ([k * d * (d - 1) // 2] if self.full_covariance else [])
        if n_members == 1:
            self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation)
            self.head = nn.Linear(hidden_size, sum(self._sizes))
        else:
            layers: list[nn.Module] = []
            width = input_dim
            for _ in range(n_hidden_layers):
                layers += [MemberLinear(n_members, width, hidden_size), ACTIVATIONS[activation]()]
                width = hidden_size
            self.trunk = nn.Sequential(*layers)
            self.head = MemberLinear(n_members, hidden_size, sum(self._sizes))

    def member_parameters(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each member's (logits, μ, scale), with a leading member axis M for an ensemble."""
        if self.n_members > 1:
            x = x.unsqueeze(0).expand(self.n_members, *x.shape)
        logits, mu, sigma_raw, *lower = self.head(self.trunk(x)).split(self._sizes, dim=-1)
        sigma = self._sigma(sigma_raw) + self.min_sigma
        if self.target_dim == 1:
            return logits, mu, sigma
        batch, k, d = logits.shape[:-1], self.n_gaussians, self.target_dim
        mu, sigma = mu.reshape(*batch, k, d), sigma.reshape(*batch, k, d)
        if not self.full_covariance:
            return logits, mu, sigma
        rows, cols = torch.tril_indices(d, d, -1, device=x.device)
        below = sigma.new_zeros(*batch, k, d, d)
        below[..., rows, cols] = lower[0].reshape(*batch, k, -1)
        return logits, mu, below + torch.diag_embed(sigma)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The predictive mixture (logits, μ, scale) in standardised units, M·K components."""
        logits, mu, scale = self.member_parameters(x)
        if self.n_members == 1:
            return logits, mu, scale
        # equal member weights: log π_mk = log_softmax_k(z_m)_k − log M
        logits = torch.log_softmax(logits, -1) - math.log(self.n_members)
        n = x.shape[0]
        return tuple(p.transpose(0, 1).reshape(n, -1, *p.shape[3:]) for p in (logits, mu, scale))

    def _nll(self, logits: Tensor, mu: Tensor, scale: Tensor, y: Tensor) -> Tensor:
        if self.target_dim == 1:
            return mixture.nll(logits, mu, scale, y)
        return mvmixture.nll(logits, mu, scale, y)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        if self.n_members == 1 and self.target_dim == 1:
            return self._component_major_nll(x, y)
        return self._nll(*self(x), y)

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        if self.target_dim == 1:
            return self._component_major_nll(x, y)  # an ensemble: the mean of its members' NLLs
        if self.n_members == 1:
            return self.loss(x, y)
        # the mean of the members' NLLs: each member's gradient is its own, as in an ensemble
        return self._nll(*self.member_parameters(x), y.unsqueeze(0).expand(self.n_members, *y.shape))

    def _component_major_nll(self, x: Tensor, y: Tensor) -> Tensor:
        """One target: the NLL of ``mixture.nll(*self.member_parameters(x), y)`` (for an ensemble,
        the mean of its members' NLLs), with the head computed straight into a (M, 3K, N) layout:
        see ``mixture.nll_component_major`` for why (the per-step cost)."""
        if self.n_members == 1:
            out = torch.addmm(self.head.bias.unsqueeze(1), self.head.weight, self.trunk(x).t())
        else:
            features = self.trunk(x.unsqueeze(0).expand(self.n_members, *x.shape))  # (M, N, H)
            out = torch.baddbmm(self.head.bias.transpose(1, 2), self.head.weight.transpose(1, 2),
                                features.transpose(1, 2))
        logits, mu, sigma_raw = out.split(self._sizes, dim=-2)
        if self._sigma is torch.exp and not self.min_sigma:
            log_sigma = sigma_raw
        else:
            log_sigma = torch.log(self._sigma(sigma_raw) + self.min_sigma)
        return mixture.nll_component_major(logits, mu, log_sigma, y.reshape(1, -1))

    def to_original_units(self, value: Tensor) -> Tensor:
        # NLL in original units = standardised NLL + log|dt_std/dt| = + Σ_d log(target_std_d).
        return value + torch.log(self.target_std).sum()

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, mu, scale = self(self.standardize_inputs(inputs))
        std = self.target_std
        if scale.dim() == mu.dim() + 1:  # Cholesky factor of diag(s) Σ diag(s): rows scaled
            scale = scale * std.unsqueeze(-1)
        else:
            scale = scale * std
        return logits, mu * std + self.target_mean, scale
