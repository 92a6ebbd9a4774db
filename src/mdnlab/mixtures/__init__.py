"""Gaussian-mixture math (no Lightning: this package imports alone).

``mixture`` holds the one-target math (closed-form CDF and CRPS, fast NLL layout), ``mvmixture``
the D-target math (diagonal or Cholesky covariance). ``Mixture`` is the one place that tells the
two shapes apart, so the code that scores, draws and samples a model's predictive distribution
has one path for one target and for D targets.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, MixtureSameFamily

from mdnlab.mixtures import mixture, mvmixture

__all__ = ["Mixture", "map_rows", "mixture", "mvmixture"]

# Elements per chunk of rows for the O(K²) work arrays (CRPS pairs, mean-shift starts × components):
# 2**24 float64s, 128 MiB, whatever K is; at the project's sizes every batch is one chunk.
CHUNK_ELEMENTS = 2**24


def map_rows(function: Callable[..., Any], m: "Mixture", *tensors: Tensor, per_row: int) -> Any:
    """``function(m, *tensors)`` on chunks of leading rows, concatenated: memory stays bounded
    when each row needs ``per_row`` work elements. One chunk (the same call) when they fit."""
    n = m.logits.shape[0] if m.logits.dim() > 1 else 1
    rows = max(1, CHUNK_ELEMENTS // max(1, per_row))
    if m.logits.dim() < 2 or n <= rows:
        return function(m, *tensors)
    outs = [function(m.rows(slice(i, i + rows)), *(t[i : i + rows] for t in tensors)) for i in range(0, n, rows)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


class Mixture(NamedTuple):
    """p(t) = Σ_k π_k N(t; μ_k, Σ_k), π = softmax(logits), for a batch of inputs (...):

        one target    logits (..., K), mu (..., K),    scale σ (..., K)
        D targets     logits (..., K), mu (..., K, D), scale σ (..., K, D) (diagonal)
                                                       or L (..., K, D, D) (Cholesky, full)

    A tuple, so ``logits, mu, scale = mixture`` still works.
    """

    logits: Tensor
    mu: Tensor
    scale: Tensor

    @property
    def univariate(self) -> bool:
        return self.mu.dim() == self.logits.dim()

    @property
    def n_targets(self) -> int:
        return 1 if self.univariate else self.mu.shape[-1]

    @property
    def full_covariance(self) -> bool:
        return not self.univariate and mvmixture.is_full(self.mu, self.scale)

    def rows(self, index: Any) -> "Mixture":
        """The mixtures of the inputs picked by ``index`` (an int slice, mask or index tensor)."""
        return Mixture(*(p[index] for p in self))

    def map(self, function: Callable[[Tensor], Tensor]) -> "Mixture":
        return Mixture(*(function(p) for p in self))

    def in_units(self, mean: Tensor, std: Tensor) -> "Mixture":
        """The same distribution after t ↦ mean + std ⊙ t (std, mean: one value per target)."""
        if self.full_covariance:  # the Cholesky factor of diag(s) Σ diag(s): rows scaled
            return Mixture(self.logits, self.mu * std + mean, self.scale * std.unsqueeze(-1))
        return Mixture(self.logits, self.mu * std + mean, self.scale * std)

    def log_prob(self, target: Tensor) -> Tensor:
        """log p(t) per input: target (...) or (..., 1) for one target, (..., D) for D."""
        if self.univariate:
            return mixture.log_prob(*self, target)
        return mvmixture.log_prob(*self, target)

    def log_box_mass(self, low: Tensor, high: Tensor) -> Tensor:
        """log P(t ∈ Π_d [low_d, high_d]) per input (``mvmixture.log_box_mass``), one value per
        target in each bound; diagonal covariance (or one target) only: a box's mass under a
        correlated Gaussian has no closed form."""
        if self.full_covariance:
            raise ValueError("a box's mass needs diagonal covariance")
        return mvmixture.log_box_mass(*self.columns(), low, high)

    def cdf(self, target: Tensor) -> Tensor:
        """F(t) = Σ_k π_k Φ((t − μ_k)/σ_k) of a one-target mixture (a marginal, for D targets)."""
        if not self.univariate:
            raise ValueError("cdf is defined for one target: take .marginal(d) first")
        return mixture.cdf(*self, target)

    def mean(self) -> Tensor:
        if self.univariate:
            return mixture.mean(self.logits, self.mu)
        return mvmixture.mean(self.logits, self.mu)

    def std(self) -> Tensor:
        """The standard deviation of each target, (...) or (..., D)."""
        if self.univariate:
            return mixture.variance(*self).sqrt()
        return torch.diagonal(mvmixture.covariance(*self), dim1=-2, dim2=-1).sqrt()

    def modes(self) -> tuple[Tensor, Tensor]:
        """Mean-shift from each μ_k: (points (..., K[, D]), log density (..., K)), in chunks of rows."""
        find = mixture.modes if self.univariate else mvmixture.modes
        k, d = self.logits.shape[-1], self.n_targets
        found: tuple[Tensor, Tensor] = map_rows(lambda c: find(*c), self, per_row=k * k * d * d)
        return found

    def highest_mode(self, modes: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The most probable mode, (...) or (..., D); ``modes`` when already computed."""
        highest = mixture.highest_mode if self.univariate else mvmixture.highest_mode
        return highest(*(modes or self.modes()))

    def top_component_mean(self) -> Tensor:
        if self.univariate:
            return mixture.most_probable_component_mean(self.logits, self.mu)
        return mvmixture.most_probable_component_mean(self.logits, self.mu)

    def point_predictions(self) -> dict[str, Tensor]:
        """The point predictions by name: mean, most probable mode, top component's μ."""
        return {"mean": self.mean(), "mode": self.highest_mode(), "top_component": self.top_component_mean()}

    def marginal(self, d: int) -> "Mixture":
        """The one-target mixture of target ``d`` (the same π; for one target, itself)."""
        if self.univariate:
            if d != 0:
                raise IndexError(f"target {d} of a one-target mixture")
            return self
        return Mixture(self.logits, *mvmixture.marginal(self.mu, self.scale, d))

    def first_two(self) -> "Mixture":
        """The marginal over the first two targets (Cholesky factor of Σ[:2, :2] when full)."""
        if self.full_covariance:
            covariance = self.scale @ self.scale.transpose(-1, -2)
            return Mixture(self.logits, self.mu[..., :2], torch.linalg.cholesky(covariance[..., :2, :2]))
        return Mixture(self.logits, self.mu[..., :2], self.scale[..., :2])

    def columns(self) -> "Mixture":
        """The D-target form, (..., K, 1) for one target, so D-target code serves D = 1 too."""
        if self.univariate:
            return Mixture(self.logits, self.mu.unsqueeze(-1), self.scale.unsqueeze(-1))
        return self

    def distribution(self) -> "MixtureSameFamily":
        """The same mixture as a ``torch.distributions.MixtureSameFamily`` (over ``Normal``,
        ``Independent(Normal)`` or ``MultivariateNormal``), for ``log_prob``, ``sample``,
        ``mean``, ``variance`` and, with one target, ``cdf`` in your own code."""
        from torch.distributions import Categorical, Independent, MultivariateNormal, Normal

        components: Distribution
        if self.univariate:
            components = Normal(self.mu, self.scale)
        elif self.full_covariance:
            components = MultivariateNormal(self.mu, scale_tril=self.scale)
        else:
            components = Independent(Normal(self.mu, self.scale), 1)
        return MixtureSameFamily(Categorical(logits=self.logits), components)

    def sample(self, n_samples: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """Gumbel-max draws: (..., n_samples) for one target, (..., n_samples, D) for D."""
        draw = mixture.sample if self.univariate else mvmixture.sample
        return draw(*self, n_samples, generator=generator, temperature=temperature)
