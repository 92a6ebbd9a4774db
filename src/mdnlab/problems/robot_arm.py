"""Bishop's (1994) two-link robot arm, as an inverse problem with a task error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mdnlab.errors import number


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
    input_names = ("x1", "x2")
    target_names = ("theta1", "theta2")
    has_oracle = False  # noiseless: the true conditional density is point masses

    def __post_init__(self) -> None:
        for key in ("link1", "link2"):
            number(f"data.{key}", getattr(self, key), "a finite number > 0", lambda v: v > 0)
        for joint in ("theta1", "theta2"):
            low = number(f"data.{joint}_low", getattr(self, f"{joint}_low"), "a finite number (radians)")
            number(
                f"data.{joint}_high",
                getattr(self, f"{joint}_high"),
                f"a finite number > data.{joint}_low={low}",
                lambda v: v > low,
            )
        number("data.noise_std", self.noise_std, "a finite number ≥ 0", lambda v: v >= 0)

    def directions(self, inputs: Tensor, targets: Tensor) -> list[tuple["RobotArm", Tensor, Tensor]]:
        return [(self, inputs, targets)]

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
            self.link2 * torch.sin(theta2), self.link1 + self.link2 * torch.cos(theta2)
        )
        theta = torch.stack([theta1, theta2], -1)
        inside = (
            (theta1 >= self.theta1_low)
            & (theta1 <= self.theta1_high)
            & (theta2 >= self.theta2_low)
            & (theta2 <= self.theta2_high)
        )
        return theta, inside

    def endpoint_errors(self, positions: Tensor, theta: Tensor) -> Tensor:
        """‖forward_kinematics(θ) − position‖ per row: how far predicted angles put the hand."""
        errors: Tensor = (self.forward_kinematics(theta.to(torch.float64)) - positions.to(torch.float64)).norm(dim=-1)
        return errors
