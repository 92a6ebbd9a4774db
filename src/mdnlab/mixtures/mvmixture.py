"""Gaussian-mixture math for D-dimensional targets (Bishop, 1994, §4; PRML §5.6).

A mixture over t ∈ R^D is given by

    logits  (..., K)          π = softmax(logits)
    mu      (..., K, D)       component means μ_k
    scale   (..., K, D)       diagonal: per-dimension standard deviations σ_kd > 0, or
            (..., K, D, D)    full: lower-triangular Cholesky factors L_k (Σ_k = L_k L_kᵀ,
                              positive diagonal)

with density

    p(t) = Σ_k π_k N(t; μ_k, Σ_k),   Σ_k = diag(σ_k²)  or  L_k L_kᵀ.

The two covariance kinds are told apart by ``scale.dim()``. Everything is in log space, and
nothing here imports Lightning. ``torch.distributions.MixtureSameFamily`` over
``Independent(Normal)`` / ``MultivariateNormal(scale_tril=...)`` is the reference in the tests;
written by hand because it is faster per step and because modes, marginals and the energy score
are missing there. One-dimensional targets with closed-form CDF and CRPS live in
``mdnlab.mixtures.mixture``; ``marginal`` maps a multivariate mixture to one of those per dimension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, special

from mdnlab.mixtures.mixture import choose_components

LOG_2PI = math.log(2 * math.pi)


def is_full(mu: Tensor, scale: Tensor) -> bool:
    """True for Cholesky factors (..., K, D, D), False for diagonal σ (..., K, D)."""
    return scale.dim() == mu.dim() + 1


def log_prob(logits: Tensor, mu: Tensor, scale: Tensor, target: Tensor) -> Tensor:
    """log p(t) = logsumexp_k [log π_k − ½ D log 2π − log|L_k| − ½ ‖L_k⁻¹ (t − μ_k)‖²].

    ``target`` has shape (..., D); the result has the batch shape (...).
    """
    return torch.logsumexp(_log_components(logits, mu, scale, target.unsqueeze(-2)), -1).squeeze(-1)


def nll(logits: Tensor, mu: Tensor, scale: Tensor, target: Tensor) -> Tensor:
    """Mean negative log-likelihood −(1/N) Σ_n log p(t_n | x_n), in nats."""
    return -log_prob(logits, mu, scale, target).mean()


def log_interval_mass(mu: Tensor, sigma: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """log P(a ≤ t ≤ b) = log[Φ((b − μ)/σ) − Φ((a − μ)/σ)] elementwise, for finite bounds.

    Computed from the nearer tail (1 − Φ(z) = Φ(−z): both ends mirrored when the interval lies
    above the mean) as log Φ(β) + log(1 − exp(log Φ(α) − log Φ(β))) with α ≤ 0, so neither the
    difference nor its gradient cancels when the interval sits far out in a tail."""
    upper, lower = (high - mu) / sigma, (low - mu) / sigma
    mirrored = lower > 0
    alpha, beta = torch.where(mirrored, -upper, lower), torch.where(mirrored, -lower, upper)
    log_beta: Tensor = special.log_ndtr(beta)
    # clamped, not log(0): an interval narrower than float resolution would give an infinite gradient
    gap = (-torch.expm1(special.log_ndtr(alpha) - log_beta)).clamp_min(torch.finfo(mu.dtype).tiny)
    return log_beta + torch.log(gap)


def log_box_mass(logits: Tensor, mu: Tensor, sigma: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """log P(t ∈ box) = logsumexp_k [log π_k + Σ_d log(Φ((b_d − μ_kd)/σ_kd) − Φ((a_d − μ_kd)/σ_kd))]
    for a diagonal mixture (μ, σ (..., K, D)) and the box Π_d [a_d, b_d] (``low``, ``high``
    broadcasting against (..., K, D)); shape (...). No closed form with full covariance."""
    per_component = log_interval_mass(mu, sigma, low, high).sum(-1)
    log_mass: Tensor = torch.logsumexp(torch.log_softmax(logits, -1) + per_component, -1)
    return log_mass


def covariances(mu: Tensor, scale: Tensor) -> Tensor:
    """Σ_k as (..., K, D, D) for either covariance kind."""
    if is_full(mu, scale):
        return scale @ scale.transpose(-1, -2)
    return torch.diag_embed(scale * scale)


def mean(logits: Tensor, mu: Tensor) -> Tensor:
    """E[t] = Σ_k π_k μ_k, shape (..., D)."""
    return (torch.softmax(logits, -1).unsqueeze(-1) * mu).sum(-2)


def covariance(logits: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
    """Cov[t] = Σ_k π_k (Σ_k + (μ_k − m)(μ_k − m)ᵀ), m = E[t] (law of total covariance)."""
    pi = torch.softmax(logits, -1)[..., None, None]
    centred = mu - mean(logits, mu).unsqueeze(-2)
    outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)
    return (pi * (covariances(mu, scale) + outer)).sum(-3)


def marginal(mu: Tensor, scale: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(μ_kd, σ_kd) of the one-dimensional marginal in dimension ``dim``: a Gaussian mixture
    with the same π, σ_kd = sqrt(Σ_k[d, d]). Feed it to ``mdnlab.mixtures.mixture`` for CDF and CRPS."""
    if is_full(mu, scale):
        sd = scale[..., dim, :].norm(dim=-1)  # sqrt(Σ_j L_dj²) = sqrt(Σ_dd)
    else:
        sd = scale[..., dim]
    return mu[..., dim], sd


def sample(
    logits: Tensor,
    mu: Tensor,
    scale: Tensor,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Draw ``n_samples`` targets per mixture: shape ``(..., n_samples, D)``.

    Component by the Gumbel-max trick, k = argmax_k (log π_k / τ + g_k), g_k ~ Gumbel(0, 1);
    then t = μ_k + L_k ε (or μ_k + σ_k ⊙ ε), ε ~ N(0, I). τ = 1 samples the mixture exactly.
    """
    k = choose_components(logits, n_samples, generator, temperature)  # (S, ...)
    d = mu.shape[-1]
    index = k[..., None, None].expand(*k.shape, 1, d)
    chosen_mu = mu.expand(n_samples, *mu.shape).gather(-2, index).squeeze(-2)  # (S, ..., D)
    eps = torch.randn(chosen_mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    if is_full(mu, scale):
        index = k[..., None, None, None].expand(*k.shape, 1, d, d)
        chosen = scale.expand(n_samples, *scale.shape).gather(-3, index).squeeze(-3)
        draws = chosen_mu + (chosen @ eps.unsqueeze(-1)).squeeze(-1)
    else:
        chosen = scale.expand(n_samples, *scale.shape).gather(-2, index).squeeze(-2)
        draws = chosen_mu + chosen * eps
    return draws.movedim(0, -2)


def modes(logits: Tensor, mu: Tensor, scale: Tensor, n_iter: int = 50, tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Local maxima of the density by mean-shift from each μ_k (Carreira-Perpiñán, 2000):

        t ← (Σ_k r_k(t) Σ_k⁻¹)⁻¹ Σ_k r_k(t) Σ_k⁻¹ μ_k,   r_k(t) ∝ π_k N(t; μ_k, Σ_k).

    Returns ``(points (..., K, D), log_density (..., K))``, one climb per start.
    """
    precision = torch.cholesky_inverse(scale) if is_full(mu, scale) else None
    t = mu.clone()
    for _ in range(n_iter):
        # responsibilities of component j for start i: (..., i, j)
        log_r = _log_components(logits, mu, scale, t)
        r = torch.softmax(log_r, dim=-1)
        if precision is None:
            w = r.unsqueeze(-1) / (scale * scale).unsqueeze(-3)  # (..., i, j, D)
            t_next = (w * mu.unsqueeze(-3)).sum(-2) / w.sum(-2)
        else:
            weighted = r[..., None, None] * precision.unsqueeze(-4)  # (..., i, j, D, D)
            lhs = weighted.sum(-3)
            rhs = (weighted @ mu.unsqueeze(-3).unsqueeze(-1)).sum(-3)
            t_next = torch.linalg.solve(lhs, rhs).squeeze(-1)
        done = (t_next - t).abs().max() <= tol
        t = t_next
        if done:
            break
    return t, torch.logsumexp(_log_components(logits, mu, scale, t), -1)


def most_probable_mode(logits: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
    """The highest of the mean-shift modes, shape (..., D)."""
    return highest_mode(*modes(logits, mu, scale))


def highest_mode(points: Tensor, log_density: Tensor) -> Tensor:
    """Of the ``modes`` results, the point with the highest density, shape (..., D)."""
    index = log_density.argmax(-1)[..., None, None].expand(*log_density.shape[:-1], 1, points.shape[-1])
    return points.gather(-2, index).squeeze(-2)


def most_probable_component_mean(logits: Tensor, mu: Tensor) -> Tensor:
    """μ of the component with the largest π, shape (..., D)."""
    index = logits.argmax(-1)[..., None, None].expand(*logits.shape[:-1], 1, mu.shape[-1])
    return mu.gather(-2, index).squeeze(-2)


def energy_score(
    logits: Tensor,
    mu: Tensor,
    scale: Tensor,
    target: Tensor,
    n_samples: int = 200,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Energy score ES = E‖T − t‖ − ½ E‖T − T'‖ (Gneiting & Raftery, 2007), T, T' from the
    mixture: the multivariate CRPS (equal to it for D = 1). No closed form for mixtures, so a
    Monte-Carlo estimate from ``n_samples`` draws (the second term pairs draw i with i + 1).
    """
    draws = sample(logits, mu, scale, n_samples, generator=generator)  # (..., S, D)
    first: Tensor = (draws - target.unsqueeze(-2)).norm(dim=-1).mean(-1)
    second: Tensor = (draws - draws.roll(1, dims=-2)).norm(dim=-1).mean(-1)
    return first - 0.5 * second


def _log_components(logits: Tensor, mu: Tensor, scale: Tensor, points: Tensor) -> Tensor:
    """log π_j + log N(points_i; μ_j, Σ_j) for points (..., I, D): shape (..., I, K); the
    terms of log p(points_i) = logsumexp_j, and the log-responsibilities of mean-shift."""
    diff = points.unsqueeze(-2) - mu.unsqueeze(-3)  # (..., I, K, D)
    if is_full(mu, scale):
        tril = scale.unsqueeze(-4).expand(*diff.shape, diff.shape[-1])
        z = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    else:
        z = diff / scale.unsqueeze(-3)
        log_det = torch.log(scale).sum(-1)
    log_normal = -0.5 * (z * z).sum(-1) - log_det.unsqueeze(-2) - 0.5 * mu.shape[-1] * LOG_2PI
    log_pi: Tensor = torch.log_softmax(logits, -1)
    out: Tensor = log_pi.unsqueeze(-2) + log_normal
    return out
