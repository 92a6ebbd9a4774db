"""The seed's baseline: an MLP fitted by mean squared error, as a one-component Gaussian."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdnlab.mixtures import Mixture
from mdnlab.models.base import Regressor, _fitting, plain
from mdnlab.models.layers import mlp_trunk


class MSERegression(Regressor):
    """ŷ = W₂ tanh(W₁ x + b₁) + b₂ (for the seed's settings), fitted by mean squared error.

    As a predictive distribution it is N(ŷ(x), diag(s²)) with s² the train-split mean squared
    residual per target (``residual_std``), for a fair NLL side by side with MDNs. With D > 1
    targets the loss is the MSE in original units, averaged over targets (each standardised
    target's squared error weighted by its variance share).
    """

    metric = "mse"

    def __init__(
        self,
        input_dim: int = 1,
        target_dim: int = 1,
        hidden_size: int = 20,
        n_hidden_layers: int = 1,
        activation: str = "tanh",
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(input_dim, target_dim, hidden_size, n_hidden_layers, activation, optimizer)
        optimizer, scheduler = plain(optimizer), plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation)
        self.head = nn.Linear(hidden_size, target_dim)
        self.register_buffer("residual_std", torch.ones(target_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        if self.target_dim == 1:
            return nn.functional.mse_loss(self(x), y)
        variance = self.target_std.square()
        return ((self(x) - y).square() * (variance / variance.mean())).mean()

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.loss(x, y)

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
            mse = self.trainer.strategy.reduce(self._residual_mse(x, y), reduce_op="mean")
        self.residual_std.copy_(mse.sqrt() * self.target_std)

    def _residual_mse(self, x: Tensor, y: Tensor) -> Tensor:
        """Per target, in standardised units."""
        return (self(x) - y).square().mean(0)

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> Mixture:
        """One component: (N, 1) each for one target; (N, 1), (N, 1, D), (N, 1, D) for D."""
        mu = self(self.standardize_inputs(inputs)) * self.target_std + self.target_mean
        mu = mu if self.target_dim == 1 else mu.unsqueeze(1)
        return Mixture(mu.new_zeros(mu.shape[:2]), mu, self.residual_std.expand_as(mu))


def fit_least_squares(
    inputs: Tensor, targets: Tensor, seed: int, hidden_size: int = 20, steps: int = 150
) -> MSERegression:
    """The seed's baseline (``MSERegression``, 20 tanh units) fitted to (inputs, targets) on
    standardised values by full-batch L-BFGS: for 61 parameters it gets as close as Adam in a
    fraction of the time. Used for the least-squares figure; initialised from ``seed`` alone."""
    inputs, targets = inputs.reshape(len(inputs), -1).float(), targets.reshape(len(targets), -1).float()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MSERegression(inputs.shape[1], targets.shape[1], hidden_size=hidden_size)
    stats = {
        "input_mean": inputs.mean(0),
        "input_std": inputs.std(0),
        "target_mean": targets.mean(0),
        "target_std": targets.std(0),
    }
    model.set_standardizer(stats)
    x = model.standardize_inputs(inputs)
    y = (targets - model.target_mean) / model.target_std
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        model.residual_std.copy_(model._residual_mse(x, y).sqrt() * model.target_std)
    return model.eval()
