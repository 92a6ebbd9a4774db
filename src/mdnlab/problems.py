"""Problems: draw (input, target) pairs from an explicit generator and, where it is known, give
the true conditional density (the oracle) so a model can be scored against the best possible.

No Lightning here. A problem is any object with

    sample(n, generator) -> (inputs, targets)          float32, (n, input_dim), (n, target_dim)
    log_density(inputs, targets) -> (n,)               true log p(target | input), or absent
    moments(inputs) -> (mean, variance)                true E and Var of target | input, or absent
    endpoint_errors(inputs, predictions) -> (n,)       a task error of point predictions, or absent
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DIRECTIONS = ("forward", "inverted")


@dataclass(frozen=True)
class Sinusoid:
    """The seed's toy inverse problem (Bishop, PRML §5.6):

        x ~ U(x_low, x_high),   y = 7 sin(0.75 x) + 0.5 x + ε,   ε ~ N(0, noise_std²).

    ``forward`` serves (input x, target y): unimodal, p(y|x) = N(y; f(x), noise_std²).
    ``inverted`` serves (input y, target x): multimodal,

        p(x|y) = N(y; f(x), noise_std²) 1[x_low ≤ x ≤ x_high] / Z(y),
        Z(y)   = ∫ N(y; f(x'), noise_std²) dx'  over [x_low, x_high]  (the uniform prior cancels),

    with Z(y) computed by composite Simpson quadrature in log space.
    """

    direction: str = "inverted"
    noise_std: float = 1.0
    x_low: float = -10.0
    x_high: float = 10.0
    amplitude: float = 7.0
    frequency: float = 0.75
    slope: float = 0.5
    quadrature_points: int = 2001  # odd, for Simpson; step 0.01 (error ~1e-8 nats, tested)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")

    def f(self, x: Tensor) -> Tensor:
        return self.amplitude * torch.sin(self.frequency * x) + self.slope * x

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = self.x_low + (self.x_high - self.x_low) * torch.rand(n, 1, generator=generator)
        y = self.f(x) + self.noise_std * torch.randn(n, 1, generator=generator)
        return (x, y) if self.direction == "forward" else (y, x)

    # ---- the oracle -------------------------------------------------------------------------

    def log_density(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """True log p(target | input) for each row, in float64 for accuracy."""
        return self.oracle(inputs, targets)[0]

    def oracle(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log p(target | input), E[target | input], Var[target | input]) per row, float64,
        from one quadrature pass (the evaluation of 10 000 test points needs all three)."""
        inputs, targets = _column64(inputs), _column64(targets)
        if self.direction == "forward":
            mean = self.f(inputs)
            log_p = _normal_log_pdf(targets, mean, self.noise_std)
            return log_p.squeeze(-1), mean.squeeze(-1), torch.full_like(log_p, self.noise_std**2).squeeze(-1)
        log_z, mean, variance = self._posterior(inputs)
        inside = (targets >= self.x_low) & (targets <= self.x_high)
        log_p = _normal_log_pdf(inputs, self.f(targets), self.noise_std) - log_z
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf)).squeeze(-1), mean, variance

    def log_density_grid(self, inputs: Tensor, target_grid: Tensor) -> Tensor:
        """True log p(t | input) on a grid of targets: shape (len(inputs), len(target_grid))."""
        inputs = _column64(inputs)
        grid = target_grid.to(torch.float64).reshape(1, -1)
        if self.direction == "forward":
            return _normal_log_pdf(grid, self.f(inputs), self.noise_std)
        log_p = _normal_log_pdf(inputs, self.f(grid), self.noise_std) - self._log_normaliser(inputs)
        inside = (grid >= self.x_low) & (grid <= self.x_high)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def moments(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """True E[target | input] and Var[target | input], float64, shape (n,)."""
        if self.direction == "forward":
            return self.oracle(inputs, torch.zeros_like(inputs))[1:]
        return self._posterior(_column64(inputs))[1:]

    def _quadrature(self) -> tuple[Tensor, Tensor]:
        """Nodes (1, G) and log Simpson weights (1, G) on [x_low, x_high]."""
        n = self.quadrature_points | 1
        x = torch.linspace(self.x_low, self.x_high, n, dtype=torch.float64)
        h = (self.x_high - self.x_low) / (n - 1)
        w = torch.full((n,), 2.0, dtype=torch.float64)
        w[1::2] = 4.0
        w[0] = w[-1] = 1.0
        return x.unsqueeze(0), torch.log(w * h / 3).unsqueeze(0)

    def _log_normaliser(self, y: Tensor) -> Tensor:
        """log Z(y), shape (n, 1)."""
        return self._posterior(y)[0]

    def _posterior(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log Z(y) (n, 1), E[x | y] (n,), Var[x | y] (n,)) by Simpson quadrature over x,
        chunked so memory stays at 1024 × G doubles."""
        x, log_w = self._quadrature()
        log_z, means, variances = [], [], []
        for chunk in y.split(1024):
            log_post = _normal_log_pdf(chunk, self.f(x), self.noise_std) + log_w
            z = torch.logsumexp(log_post, -1, keepdim=True)
            post = torch.exp(log_post - z)
            m = (post * x).sum(-1)
            log_z.append(z)
            means.append(m)
            variances.append((post * (x - m.unsqueeze(-1)) ** 2).sum(-1))
        if not log_z:
            return y.new_zeros(0, 1), y.new_zeros(0), y.new_zeros(0)
        return torch.cat(log_z), torch.cat(means), torch.cat(variances)


@dataclass(frozen=True)
class RobotArm:
    """Bishop's (1994, §5) two-link robot arm, as an inverse problem:

        θ1 ~ U(theta1_low, theta1_high),   θ2 ~ U(theta2_low, theta2_high),
        x1 = L1 cos θ1 + L2 cos(θ1 + θ2),   x2 = L1 sin θ1 + L2 sin(θ1 + θ2)  (+ N(0, noise_std²)),

    served as (input (x1, x2), target (θ1, θ2)). Most positions are reached by two joint
    configurations, elbow up and elbow down (``inverse_kinematics``); a model that averages
    them (least squares) puts the end effector somewhere else. Predictions are scored by the
    end-effector error after the forward kinematics (``endpoint_errors``). Without noise the
    true conditional density is a set of point masses, so there is no density oracle.
    """

    link1: float = 0.8
    link2: float = 0.2
    theta1_low: float = 0.3
    theta1_high: float = 1.2
    theta2_low: float = math.pi / 2
    theta2_high: float = 3 * math.pi / 2
    noise_std: float = 0.0

    def forward_kinematics(self, theta: Tensor) -> Tensor:
        """End-effector position (..., 2) of joint angles (..., 2)."""
        t1, t2 = theta[..., 0], theta[..., 1]
        x1 = self.link1 * torch.cos(t1) + self.link2 * torch.cos(t1 + t2)
        x2 = self.link1 * torch.sin(t1) + self.link2 * torch.sin(t1 + t2)
        return torch.stack([x1, x2], -1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        u = torch.rand(n, 2, generator=generator)
        low = torch.tensor([self.theta1_low, self.theta2_low])
        high = torch.tensor([self.theta1_high, self.theta2_high])
        theta = low + (high - low) * u
        position = self.forward_kinematics(theta)
        if self.noise_std:
            position = position + self.noise_std * torch.randn(n, 2, generator=generator)
        return position, theta

    def inverse_kinematics(self, position: Tensor) -> tuple[Tensor, Tensor]:
        """Both joint configurations reaching ``position`` (..., 2): angles (..., 2, 2) (elbow
        with θ2 ≤ π first, θ2 ≥ π second) and whether each lies inside the sampled ranges
        (..., 2). Positions out of reach give NaN angles and False."""
        p = position.to(torch.float64)
        r2 = (p * p).sum(-1)
        cos2 = (r2 - self.link1**2 - self.link2**2) / (2 * self.link1 * self.link2)
        base = torch.acos(cos2)  # in [0, π]; NaN out of reach
        theta2 = torch.stack([base, 2 * math.pi - base], -1)
        theta1 = torch.atan2(p[..., 1], p[..., 0]).unsqueeze(-1) - torch.atan2(
            self.link2 * torch.sin(theta2), self.link1 + self.link2 * torch.cos(theta2))
        theta = torch.stack([theta1, theta2], -1)
        inside = ((theta1 >= self.theta1_low) & (theta1 <= self.theta1_high)
                  & (theta2 >= self.theta2_low) & (theta2 <= self.theta2_high))
        return theta, inside

    def endpoint_errors(self, positions: Tensor, theta: Tensor) -> Tensor:
        """‖forward_kinematics(θ) − position‖ per row: how far predicted angles put the hand."""
        return (self.forward_kinematics(theta.to(torch.float64)) - positions.to(torch.float64)).norm(dim=-1)


def _normal_log_pdf(value: Tensor, loc: Tensor, scale: float) -> Tensor:
    z = (value - loc) / scale
    return -0.5 * z * z - math.log(scale) - 0.5 * math.log(2 * math.pi)


def _column64(t: Tensor) -> Tensor:
    return t.to(torch.float64).reshape(-1, 1)
