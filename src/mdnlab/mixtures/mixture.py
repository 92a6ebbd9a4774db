"""Gaussian-mixture math for one-dimensional targets (Bishop, PRML §5.6).

A mixture is given by tensors of the same shape ``(..., K)``:

    logits  unnormalised mixing weights, π = softmax(logits)
    mu      component means μ_k
    sigma   component standard deviations σ_k > 0

and its density is

    p(t) = Σ_k π_k N(t; μ_k, σ_k²).

Everything is computed in log space (log_softmax + logsumexp), so the NLL stays finite where
the direct formula underflows to log(0) = -inf. No Lightning here: this module imports alone.
``torch.distributions.MixtureSameFamily`` is the reference the tests hold these functions to;
they are written by hand because they are faster (no distribution objects or validation per
step) and because the CDF, CRPS and modes are missing there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_prob(logits: Tensor, mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """log p(t) = logsumexp_k [log π_k − log σ_k − ½ log 2π − ½ ((t − μ_k)/σ_k)²].

    ``target`` has the mixture's batch shape, or that shape with a trailing 1.
    """
    target = _as_column(target, mu)
    z = (target - mu) / sigma
    log_component = -0.5 * z * z - torch.log(sigma) - LOG_SQRT_2PI
    return torch.logsumexp(torch.log_softmax(logits, dim=-1) + log_component, dim=-1)


def nll(logits: Tensor, mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """Mean negative log-likelihood, E = −(1/N) Σ_n log p(t_n | x_n), in nats."""
    return -log_prob(logits, mu, sigma, target).mean()


def nll_component_major(logits: Tensor, mu: Tensor, log_sigma: Tensor, target: Tensor) -> Tensor:
    """``nll`` for parameters laid out component-first, (..., K, N), with log σ instead of σ and
    a target of shape (..., 1, N) or (N,); the mean runs over every leading axis too:

        E = −(1/N) Σ_n [logsumexp_k (z_kn − ½ ((t_n − μ_kn)/σ_kn)² − log σ_kn) − logsumexp_k z_kn] + ½ log 2π.

    The same number as ``nll`` (tested); written by hand because the reductions over K then run
    along contiguous rows of N, which on a CPU makes forward + backward ~1.5× faster than
    log_softmax/logsumexp over a last axis of size K (measured at K=5, N=900), and taking log σ
    skips an exp/log round trip. The training loss of a one-target MDN goes through here.
    """
    if target.dim() == 1:
        target = target.unsqueeze(0)
    z = (target - mu) * torch.exp(-log_sigma)
    log_joint = logits - 0.5 * z * z - log_sigma
    return (torch.logsumexp(logits, -2) - torch.logsumexp(log_joint, -2)).mean() + LOG_SQRT_2PI


def weights(logits: Tensor) -> Tensor:
    """π_k = softmax(logits)_k."""
    return torch.softmax(logits, dim=-1)


def mean(logits: Tensor, mu: Tensor) -> Tensor:
    """E[t] = Σ_k π_k μ_k."""
    return (weights(logits) * mu).sum(-1)


def variance(logits: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Var[t] = Σ_k π_k (σ_k² + μ_k²) − E[t]²  (law of total variance, written stably)."""
    pi = weights(logits)
    m = (pi * mu).sum(-1, keepdim=True)
    return (pi * (sigma * sigma + (mu - m) ** 2)).sum(-1)


def cdf(logits: Tensor, mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """F(t) = Σ_k π_k Φ((t − μ_k)/σ_k)."""
    target = _as_column(target, mu)
    return (weights(logits) * _std_normal_cdf((target - mu) / sigma)).sum(-1)


def crps(logits: Tensor, mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """Continuous ranked probability score of the mixture, closed form (Grimit et al., 2006):

        CRPS = Σ_k π_k A(t − μ_k, σ_k²) − ½ Σ_jk π_j π_k A(μ_j − μ_k, σ_j² + σ_k²),
        A(m, s²) = 2 s φ(m/s) + m (2 Φ(m/s) − 1)

    which is E|T − t| − ½ E|T − T'| for T, T' drawn from the mixture. Lower is better; same
    units as the target. Cost is O(K²) per point.
    """
    target = _as_column(target, mu)
    pi = weights(logits)
    var = sigma * sigma
    first = (pi * _abs_normal_mean(target - mu, var)).sum(-1)
    pair_m = mu.unsqueeze(-1) - mu.unsqueeze(-2)
    pair_v = var.unsqueeze(-1) + var.unsqueeze(-2)
    pair_w = pi.unsqueeze(-1) * pi.unsqueeze(-2)
    second = (pair_w * _abs_normal_mean(pair_m, pair_v)).sum((-1, -2))
    return first - 0.5 * second


def sample(
    logits: Tensor,
    mu: Tensor,
    sigma: Tensor,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Draw ``n_samples`` targets per mixture; returns shape ``(..., n_samples)``.

    The component is chosen with the Gumbel-max trick, k = argmax_k (log π_k / τ + g_k) with
    g_k ~ Gumbel(0, 1), then t = μ_k + σ_k ε with ε ~ N(0, 1). τ = 1 samples the mixture
    exactly; τ → 0 always picks the most probable component; τ > 1 flattens π.
    """
    shape = (n_samples, *logits.shape)
    k = choose_components(logits, n_samples, generator, temperature).unsqueeze(-1)
    chosen_mu = mu.expand(shape).gather(-1, k).squeeze(-1)
    chosen_sigma = sigma.expand(shape).gather(-1, k).squeeze(-1)
    eps = torch.randn(chosen_mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return (chosen_mu + chosen_sigma * eps).movedim(0, -1)


def choose_components(
    logits: Tensor, n_samples: int, generator: torch.Generator | None, temperature: float = 1.0
) -> Tensor:
    """Component indices (n_samples, ...) by the Gumbel-max trick: argmax_k (log π_k / τ + g_k)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    shape = (n_samples, *logits.shape)
    uniform = torch.rand(shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(logits.dtype).tiny)))
    return (torch.log_softmax(logits, -1) / temperature + gumbel).argmax(-1)


def modes(logits: Tensor, mu: Tensor, sigma: Tensor, n_iter: int = 50, tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Local maxima of the density, found by mean-shift from each μ_k (Carreira-Perpiñán, 2000):

        t ← Σ_k r_k(t) μ_k / σ_k²  /  Σ_k r_k(t) / σ_k²,   r_k(t) ∝ π_k N(t; μ_k, σ_k²).

    Every start climbs toward a mode, so the K results hold every mode reachable from a
    component mean (duplicates included). Mean-shift converges linearly: ``n_iter`` caps the
    steps, since a start near a saddle can crawl for hundreds of them while the peaks that
    matter (the most probable mode in particular) settle in a few tens. Returns
    ``(points, log_density)``, both of shape ``(..., K)``;
    the most probable mode is ``points.gather(-1, log_density.argmax(-1, keepdim=True))``.
    """
    # rows that have converged drop out of the loop: most settle in a few steps, a few crawl
    k = mu.shape[-1]
    flat_pi = torch.log_softmax(logits, -1).reshape(-1, k)
    flat_mu, flat_sigma = mu.reshape(-1, k), sigma.reshape(-1, k)
    flat_t = flat_mu.clone()
    active = torch.arange(flat_t.shape[0], device=mu.device)
    for _ in range(n_iter):
        if active.numel() == 0:
            break
        t, m, s, lp = flat_t[active], flat_mu[active], flat_sigma[active], flat_pi[active]
        z = (t.unsqueeze(-1) - m.unsqueeze(-2)) / s.unsqueeze(-2)  # (rows, start, k)
        log_r = lp.unsqueeze(-2) - torch.log(s).unsqueeze(-2) - 0.5 * z * z
        r = torch.softmax(log_r, dim=-1) * s.pow(-2).unsqueeze(-2)
        t_next = (r * m.unsqueeze(-2)).sum(-1) / r.sum(-1)
        flat_t[active] = t_next
        active = active[(t_next - t).abs().amax(-1) > tol]
    t = flat_t.reshape(mu.shape)
    density = log_prob(logits.unsqueeze(-2), mu.unsqueeze(-2), sigma.unsqueeze(-2), t.unsqueeze(-1))
    return t, density


def most_probable_mode(logits: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """The global maximum of the density among the mean-shift modes, shape ``(...)``."""
    return highest_mode(*modes(logits, mu, sigma))


def highest_mode(points: Tensor, log_density: Tensor) -> Tensor:
    """Of the ``modes`` results, the point with the highest density, shape ``(...)``."""
    return points.gather(-1, log_density.argmax(-1, keepdim=True)).squeeze(-1)


def most_probable_component_mean(logits: Tensor, mu: Tensor) -> Tensor:
    """μ of the component with the largest π (not a mode of the density in general)."""
    return mu.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)


def effective_components(logits: Tensor) -> Tensor:
    """exp(H(π̄)) where π̄ is π averaged over the batch: 1 when one component does all the work."""
    pi_bar = weights(logits).reshape(-1, logits.shape[-1]).mean(0)
    entropy = -(pi_bar * torch.log(pi_bar.clamp_min(1e-30))).sum()
    return entropy.exp()


def _as_column(target: Tensor, like: Tensor) -> Tensor:
    if target.dim() == like.dim() and target.shape[-1] == 1:
        return target
    return target.unsqueeze(-1)


def _std_normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2))


def _abs_normal_mean(m: Tensor, var: Tensor) -> Tensor:
    """E|X| for X ~ N(m, var): A(m, var) = 2 s φ(m/s) + m (2 Φ(m/s) − 1)."""
    s = var.sqrt()
    z = m / s
    pdf = torch.exp(-0.5 * z * z - LOG_SQRT_2PI)
    return 2 * s * pdf + m * torch.erf(z / math.sqrt(2))
