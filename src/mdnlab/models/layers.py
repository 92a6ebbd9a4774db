"""The networks' building blocks: an MLP trunk, and M independent linear layers in one matmul."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def mlp_trunk(
    input_dim: int, hidden_size: int, n_hidden_layers: int, activation: str, members: int = 1
) -> nn.Sequential:
    """input_dim → [Linear(hidden_size) → activation] × n_hidden_layers; with ``members`` > 1,
    M independent trunks as ``MemberLinear`` layers, (M, N, input_dim) → (M, N, hidden_size)."""
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(n_hidden_layers):
        linear = nn.Linear(width, hidden_size) if members == 1 else MemberLinear(members, width, hidden_size)
        layers += [linear, ACTIVATIONS[activation]()]
        width = hidden_size
    return nn.Sequential(*layers)


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
