"""Multivariate mixture math against torch.distributions and closed forms."""

import math

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from mdnlab.mixtures import mixture, mvmixture


def random_mixture(kind, n=32, k=3, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    mu = 2 * torch.randn(n, k, d, generator=g, dtype=torch.float64)
    if kind == "diag":
        return logits, mu, torch.rand(n, k, d, generator=g, dtype=torch.float64) + 0.3
    tril = torch.randn(n, k, d, d, generator=g, dtype=torch.float64).tril(-1) * 0.5
    diag = torch.rand(n, k, d, generator=g, dtype=torch.float64) + 0.3
    return logits, mu, tril + torch.diag_embed(diag)


def reference(logits, mu, scale):
    if mvmixture.is_full(mu, scale):
        components = MultivariateNormal(mu, scale_tril=scale)
    else:
        components = Independent(Normal(mu, scale), 1)
    return MixtureSameFamily(Categorical(logits=logits), components)


@pytest.mark.parametrize("kind", ["diag", "full"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_log_prob_mean_covariance_match_mixture_same_family(kind, d):
    logits, mu, scale = random_mixture(kind, d=d)
    ref = reference(logits, mu, scale)
    t = 2 * torch.randn(32, d, dtype=torch.float64)
    torch.testing.assert_close(mvmixture.log_prob(logits, mu, scale, t), ref.log_prob(t))
    torch.testing.assert_close(mvmixture.nll(logits, mu, scale, t), -ref.log_prob(t).mean())
    torch.testing.assert_close(mvmixture.mean(logits, mu), ref.mean)
    torch.testing.assert_close(torch.diagonal(mvmixture.covariance(logits, mu, scale), dim1=-2, dim2=-1), ref.variance)


def test_diagonal_with_one_dimension_is_the_univariate_mixture():
    logits, mu, scale = random_mixture("diag", d=1)
    t = torch.randn(32, 1, dtype=torch.float64)
    torch.testing.assert_close(
        mvmixture.log_prob(logits, mu, scale, t), mixture.log_prob(logits, mu[..., 0], scale[..., 0], t[:, 0])
    )


def test_full_with_diagonal_factor_equals_diagonal():
    logits, mu, sigma = random_mixture("diag")
    t = torch.randn(32, 2, dtype=torch.float64)
    torch.testing.assert_close(
        mvmixture.log_prob(logits, mu, torch.diag_embed(sigma), t), mvmixture.log_prob(logits, mu, sigma, t)
    )


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_sample_moments_and_seed(kind):
    logits, mu, scale = random_mixture(kind, n=2)
    draws = mvmixture.sample(logits, mu, scale, 200_000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (2, 200_000, 2)
    ref = reference(logits, mu, scale)
    torch.testing.assert_close(draws.mean(-2), ref.mean, atol=0.03, rtol=0)
    cov = mvmixture.covariance(logits, mu, scale)
    centred = draws - draws.mean(-2, keepdim=True)
    empirical = centred.transpose(-1, -2) @ centred / draws.shape[-2]
    torch.testing.assert_close(empirical, cov, atol=0.05, rtol=0.02)
    first, again = (
        mvmixture.sample(logits, mu, scale, 5, generator=torch.Generator().manual_seed(0)) for _ in range(2)
    )
    torch.testing.assert_close(first, again)


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_marginal_matches_reference_marginal_variance(kind):
    logits, mu, scale = random_mixture(kind)
    cov = mvmixture.covariances(mu, scale)
    for dim in range(2):
        m, sd = mvmixture.marginal(mu, scale, dim)
        torch.testing.assert_close(sd * sd, cov[..., dim, dim])
        torch.testing.assert_close(m, mu[..., dim])


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_modes_find_two_separated_peaks(kind):
    logits = torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64))
    mu = torch.tensor([[[-3.0, 1.0], [4.0, -2.0]]], dtype=torch.float64)
    scale = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    if kind == "full":
        scale = torch.diag_embed(scale)
        scale[..., 1, 0] = 0.2
    points, _ = mvmixture.modes(logits, mu, scale)
    # peaks this far apart sit (to 1e-6) on the component means
    torch.testing.assert_close(points, mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(mvmixture.most_probable_mode(logits, mu, scale), mu[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(mvmixture.most_probable_component_mean(logits, mu), mu[:, 1])


def test_modes_merge_overlapping_components_to_the_density_peak():
    logits = torch.zeros(1, 2, dtype=torch.float64)
    mu = torch.tensor([[[-0.3, 0.0], [0.3, 0.0]]], dtype=torch.float64)
    scale = torch.ones(1, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(
        mvmixture.most_probable_mode(logits, mu, scale), torch.zeros(1, 2, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_energy_score_equals_crps_in_one_dimension_and_gaussian_closed_form():
    logits, mu, sigma = random_mixture("diag", n=8, d=1)
    t = torch.randn(8, 1, dtype=torch.float64)
    es = mvmixture.energy_score(logits, mu, sigma, t, 100_000, generator=torch.Generator().manual_seed(0))
    crps = mixture.crps(logits, mu[..., 0], sigma[..., 0], t[:, 0])
    torch.testing.assert_close(es, crps, atol=0.03, rtol=0)
    # a standard bivariate normal scored at its mean: E‖Z‖ − ½ E‖Z − Z'‖ = √(π/2) (1 − 1/√2)
    zero = torch.zeros(1, 1, 2, dtype=torch.float64)
    es = mvmixture.energy_score(
        torch.zeros(1, 1, dtype=torch.float64),
        zero,
        torch.ones_like(zero),
        torch.zeros(1, 2, dtype=torch.float64),
        400_000,
        generator=torch.Generator().manual_seed(1),
    )
    expected = math.sqrt(math.pi / 2) * (1 - 1 / math.sqrt(2))
    assert abs(es.item() - expected) < 0.01


def test_gradients_finite_for_full_covariance():
    logits, mu, scale = random_mixture("full")
    for p in (logits, mu, scale):
        p.requires_grad_(True)
    mvmixture.nll(logits, mu, scale, 100 * torch.randn(32, 2, dtype=torch.float64)).backward()
    assert all(torch.isfinite(p.grad).all() for p in (logits, mu, scale))


@pytest.mark.parametrize("d", [1, 3])
def test_box_mass_is_the_components_cdf_differences(d):
    """P(box) = Σ_k π_k Π_d [Φ_kd(b_d) − Φ_kd(a_d)], against torch's Normal.cdf (float64)."""
    logits, mu, sigma = random_mixture("diag", d=d)
    low, high = torch.full((d,), -1.0, dtype=torch.float64), torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    normal = Normal(mu, sigma)
    expected = (torch.softmax(logits, -1) * (normal.cdf(high) - normal.cdf(low)).prod(-1)).sum(-1)
    got = mvmixture.log_box_mass(logits, mu, sigma, low, high).exp()
    assert torch.allclose(got, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("interval", [(8.0, 9.0), (-9.0, -8.0), (-30.0, -29.5), (0.3, 0.3 + 1e-3)])
def test_an_interval_far_in_a_tail_or_narrow_keeps_its_mass_and_gradient_in_float32(interval):
    """log[Φ(b) − Φ(a)] for N(0, 1) in float32 where the plain difference cancels (it is 0 at
    [8, 9]), against the standard library's erfc in float64 (accurate in the lower tail, where
    torch's own ndtr is not), and its gradient in μ, −(φ(b) − φ(a)) / (Φ(b) − Φ(a)), as training needs."""
    a, b = (-interval[1], -interval[0]) if interval[0] > 0 else interval  # Φ(b) − Φ(a) = Φ(−a) − Φ(−b)
    lower_tail = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    mass = lower_tail(b) - lower_tail(a)
    density = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    slope = (density(b) - density(a)) / mass * (1 if interval[0] > 0 else -1)
    mu, sigma = torch.tensor(0.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    got = mvmixture.log_interval_mass(mu, sigma, torch.tensor(interval[0]), torch.tensor(interval[1]))
    got.backward()
    assert float(got.detach()) == pytest.approx(math.log(mass), rel=1e-5, abs=1e-4)
    assert float(mu.grad) == pytest.approx(slope, rel=1e-3) and math.isfinite(float(sigma.grad))


def test_the_truncated_density_integrates_to_one_over_the_box():
    """∫_box q(t | box) dt = 1: the mean of q over uniform draws in the box times its volume."""
    logits, mu, sigma = (p[:1] for p in random_mixture("diag", d=2))
    low, high = torch.tensor([-1.0, -0.5], dtype=torch.float64), torch.tensor([1.5, 2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    points = low + (high - low) * torch.rand(400_000, 2, generator=g, dtype=torch.float64)
    log_q = mvmixture.log_prob(logits, mu, sigma, points.unsqueeze(1)) - mvmixture.log_box_mass(
        logits, mu, sigma, low, high
    )
    assert float(log_q.exp().mean() * (high - low).prod()) == pytest.approx(1.0, abs=0.01)
