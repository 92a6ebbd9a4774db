"""The seed's sinusoid, forward or inverted, with its true conditional density (the oracle)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mdnlab.errors import choice, number

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
        choice("data.direction", self.direction, DIRECTIONS)
        number("data.noise_std", self.noise_std, "a finite number ≥ 0", lambda v: v >= 0)
        low = number("data.x_low", self.x_low, "a finite number")
        number("data.x_high", self.x_high, f"a finite number > data.x_low={low}", lambda v: v > low)

    # ---- names and directions: only the problem knows which variable is which ------------------

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("x",) if self.direction == "forward" else ("y",)

    @property
    def target_names(self) -> tuple[str, ...]:
        return ("y",) if self.direction == "forward" else ("x",)

    @property
    def has_oracle(self) -> bool:
        """Whether ``oracle`` is a density (without noise the relation is deterministic)."""
        return self.noise_std > 0

    def directions(self, inputs: Tensor, targets: Tensor) -> list[tuple["Sinusoid", Tensor, Tensor]]:
        """This draw read both ways, forward first: [(problem, inputs, targets), ...]."""
        other = dataclasses.replace(self, direction="inverted" if self.direction == "forward" else "forward")
        views = [(self, inputs, targets), (other, targets, inputs)]
        return views if self.direction == "forward" else views[::-1]

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
        chunked so memory stays at 1024 × G doubles.

        log N(y; f(x_g), s²) + log w_g = y·f_g/s² + (log w_g − f_g²/2s²) − y²/2s² − log(s√2π):
        the first two terms are one rank-1 product plus a row for all (y, x_g), and the rest is
        constant along x, so it joins log Z only. Written this way (one ``addmm``, one ``exp``,
        the three moments as one product) it is ~4× faster than evaluating the normal density
        on the grid, and the oracle is otherwise most of a run's test scoring.
        """
        x, log_w = self._quadrature()
        f, variance = self.f(x), self.noise_std**2
        slope, offset = f / variance, log_w - 0.5 * f * f / variance
        powers = torch.cat([torch.ones_like(x), x, x * x]).T  # (G, 3): Σ w p, Σ w p x, Σ w p x²
        log_z, means, variances = [], [], []
        for chunk in torch.split(y, 1024):
            weights = torch.addmm(offset, chunk, slope)
            top = weights.amax(-1, keepdim=True)
            s0, s1, s2 = (weights.sub_(top).exp_() @ powers).unbind(-1)
            mean = s1 / s0
            constant = -0.5 * chunk * chunk / variance - math.log(self.noise_std * math.sqrt(2 * math.pi))
            log_z.append(top + torch.log(s0).unsqueeze(-1) + constant)
            means.append(mean)
            variances.append(s2 / s0 - mean * mean)
        if not log_z:
            return y.new_zeros(0, 1), y.new_zeros(0), y.new_zeros(0)
        return torch.cat(log_z), torch.cat(means), torch.cat(variances)


def _normal_log_pdf(value: Tensor, loc: Tensor, scale: float) -> Tensor:
    z = (value - loc) / scale
    return -0.5 * z * z - math.log(scale) - 0.5 * math.log(2 * math.pi)


def _column64(t: Tensor) -> Tensor:
    return t.to(torch.float64).reshape(-1, 1)
