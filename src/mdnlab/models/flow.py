"""A conditional normalizing flow: the MDN's peer that is not a mixture (``model=flow``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import AffineTransform, Distribution, TransformedDistribution

from mdnlab.errors import integer
from mdnlab.models.base import Regressor, plain
from mdnlab.models.layers import ACTIVATIONS


class ConditionalFlow(Regressor):
    """p(t|x) = N(z; 0, I) |det ∂z/∂t|, z = T_x(t), where T_x is ``transforms`` monotonic
    rational-quadratic splines of ``bins`` bins (a neural spline flow, Durkan et al., 2019),
    autoregressive over the targets, whose knots come from an MLP of the input (``hidden_size``
    × ``n_hidden_layers`` ``activation`` units). Trained by maximum likelihood, in the train
    split's standardised units like the MDN (the splines act on [−5, 5], which standardising
    keeps the targets in).

    The flow is ``zuko.flows.NSF``: a maintained library whose conditioned flows are
    ``torch.distributions.Distribution`` objects, so the predictive distribution in original
    units is that flow under t ↦ mean + std ⊙ t, and every metric comes from its ``log_prob``
    and its draws (``mdnlab.eval.sampled``).
    """

    metric = "nll"

    def __init__(
        self,
        input_dim: int = 1,
        target_dim: int = 1,
        hidden_size: int = 64,
        n_hidden_layers: int = 2,
        activation: str = "relu",
        transforms: int = 3,
        bins: int = 8,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(input_dim, target_dim, hidden_size, n_hidden_layers, activation, optimizer)
        integer("model.transforms", transforms, 1)
        integer("model.bins", bins, 2)
        import zuko  # only this model needs it

        optimizer, scheduler = plain(optimizer), plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.flow = zuko.flows.NSF(
            features=target_dim,
            context=input_dim,
            transforms=transforms,
            bins=bins,
            hidden_features=[hidden_size] * n_hidden_layers,
            activation=ACTIVATIONS[activation],
        )

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """−mean log p(y | x) in standardised units."""
        return -self.flow(x).log_prob(y.reshape(len(y), -1)).mean()

    training_loss = loss

    def to_original_units(self, value: Tensor) -> Tensor:
        # NLL in original units = standardised NLL + Σ_d log(target_std_d)
        return value + torch.log(self.target_std).sum()

    @torch.no_grad()
    def predictive_distribution(self, inputs: Tensor) -> Distribution:
        """p(target | input) per row of ``inputs`` (original units, (N, input_dim)), over
        targets (N, D) in original units (D = 1 included): ``log_prob`` and ``sample``."""
        inputs = inputs.to(self.device, self.dtype).reshape(len(inputs), -1)
        flow = self.flow(self.standardize_inputs(inputs))
        return TransformedDistribution(flow, [AffineTransform(self.target_mean, self.target_std, event_dim=1)])
