"""The mixture math against torch.distributions and closed forms."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

from mdnlab.mixtures import mixture


def random_mixture(n=64, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=dtype)
    mu = 3 * torch.randn(n, k, generator=g, dtype=dtype)
    sigma = torch.rand(n, k, generator=g, dtype=dtype) + 0.2
    return logits, mu, sigma


def reference(logits, mu, sigma):
    return MixtureSameFamily(Categorical(logits=logits), Normal(mu, sigma))


@pytest.mark.parametrize("target_shape", ["flat", "column"])
def test_log_prob_matches_mixture_same_family(target_shape):
    logits, mu, sigma = random_mixture()
    t = torch.randn(64, dtype=torch.float64) * 4
    expected = reference(logits, mu, sigma).log_prob(t)
    got = mixture.log_prob(logits, mu, sigma, t if target_shape == "flat" else t[:, None])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(mixture.nll(logits, mu, sigma, t), -expected.mean())


def test_mean_variance_and_cdf_match_reference():
    logits, mu, sigma = random_mixture()
    ref = reference(logits, mu, sigma)
    torch.testing.assert_close(mixture.mean(logits, mu), ref.mean)
    torch.testing.assert_close(mixture.variance(logits, mu, sigma), ref.variance)
    t = torch.randn(64, dtype=torch.float64) * 4
    torch.testing.assert_close(mixture.cdf(logits, mu, sigma, t), ref.cdf(t))


def test_single_gaussian_closed_form():
    mu, sigma = torch.tensor([[1.5]]), torch.tensor([[0.5]])
    t = torch.tensor([2.0])
    expected = -0.5 * math.log(2 * math.pi) - math.log(0.5) - 0.5 * 1.0
    assert mixture.log_prob(torch.zeros(1, 1), mu, sigma, t).item() == pytest.approx(expected, abs=1e-6)


def test_nll_stays_finite_where_the_direct_formula_underflows():
    logits = torch.zeros(1, 3)
    mu = torch.tensor([[0.0, 1.0, 2.0]])
    sigma = torch.full((1, 3), 0.1)
    t = torch.tensor([50.0])  # ~480 sigma from every component
    pi = torch.softmax(logits, -1)
    direct = -torch.log((pi * torch.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))).sum())
    assert torch.isinf(direct)  # the seed's formula
    value = mixture.nll(logits, mu, sigma, t)
    assert torch.isfinite(value)
    expected = 0.5 * ((50 - 2) / 0.1) ** 2 + math.log(0.1) + 0.5 * math.log(2 * math.pi) + math.log(3)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_nll_gradients_finite_at_extremes():
    logits = torch.tensor([[30.0, -30.0]], requires_grad=True)
    mu = torch.tensor([[0.0, 5.0]], requires_grad=True)
    sigma = torch.tensor([[1e-3, 1e3]], requires_grad=True)
    mixture.nll(logits, mu, sigma, torch.tensor([100.0])).backward()
    for p in (logits, mu, sigma):
        assert torch.isfinite(p.grad).all()


def test_sample_moments_match_reference():
    logits, mu, sigma = random_mixture(n=3, k=3, seed=1)
    g = torch.Generator().manual_seed(0)
    draws = mixture.sample(logits, mu, sigma, 200_000, generator=g)
    assert draws.shape == (3, 200_000)
    ref = reference(logits, mu, sigma)
    torch.testing.assert_close(draws.mean(-1), ref.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.var(-1), ref.variance, rtol=0.03, atol=0)


def test_sample_is_seeded_and_temperature_sharpens():
    logits = torch.log(torch.tensor([[0.7, 0.3]]))
    mu, sigma = torch.tensor([[-10.0, 10.0]]), torch.full((1, 2), 1e-3)
    a = mixture.sample(logits, mu, sigma, 1000, generator=torch.Generator().manual_seed(3))
    b = mixture.sample(logits, mu, sigma, 1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a < 0).double().mean().item() == pytest.approx(0.7, abs=0.05)
    cold = mixture.sample(logits, mu, sigma, 1000, generator=torch.Generator().manual_seed(3), temperature=0.05)
    assert (cold < 0).all()
    with pytest.raises(ValueError):
        mixture.sample(logits, mu, sigma, 1, temperature=0.0)


def test_crps_matches_monte_carlo_and_gaussian_closed_form():
    logits, mu, sigma = random_mixture(n=4, k=3, seed=2)
    t = torch.tensor([0.0, 1.0, -2.0, 5.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = mixture.sample(logits, mu, sigma, 100_000, generator=g)
    x2 = mixture.sample(logits, mu, sigma, 100_000, generator=g)
    monte_carlo = (x - t[:, None]).abs().mean(-1) - 0.5 * (x - x2).abs().mean(-1)
    torch.testing.assert_close(mixture.crps(logits, mu, sigma, t), monte_carlo, rtol=0.02, atol=0.01)
    # one Gaussian: CRPS = σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π]
    z = torch.tensor([0.7], dtype=torch.float64)
    normal = Normal(0.0, 1.0)
    closed = 2.0 * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))
    got = mixture.crps(
        torch.zeros(1, 1, dtype=torch.float64),
        torch.zeros(1, 1, dtype=torch.float64),
        torch.full((1, 1), 2.0, dtype=torch.float64),
        1.4 * torch.ones(1, dtype=torch.float64),
    )
    torch.testing.assert_close(got, closed)


def test_modes_find_both_peaks_of_a_bimodal_mixture():
    logits = torch.log(torch.tensor([[0.6, 0.4]], dtype=torch.float64))
    mu = torch.tensor([[-3.0, 3.0]], dtype=torch.float64)
    sigma = torch.ones(1, 2, dtype=torch.float64)
    points, density = mixture.modes(logits, mu, sigma)
    # each peak sits slightly pulled toward the other component; the gradient vanishes there
    for p in points[0]:
        x = p.clone().requires_grad_(True)
        mixture.log_prob(logits[0], mu[0], sigma[0], x.reshape(1)).sum().backward()
        assert abs(x.grad.item()) < 1e-6
    assert points[0, 0] < 0 < points[0, 1]
    assert mixture.most_probable_mode(logits, mu, sigma).item() == pytest.approx(points[0, 0].item())
    assert mixture.most_probable_component_mean(logits, mu).item() == -3.0
    # overlapping components merge into one mode
    merged, _ = mixture.modes(logits, torch.tensor([[-0.3, 0.3]], dtype=torch.float64), sigma)
    assert (merged[0, 0] - merged[0, 1]).abs() < 1e-5


def test_effective_components():
    assert mixture.effective_components(torch.zeros(10, 4)).item() == pytest.approx(4.0)
    one_hot = torch.tensor([[50.0, 0.0, 0.0]]).expand(10, 3)
    assert mixture.effective_components(one_hot).item() == pytest.approx(1.0, abs=1e-6)


def test_component_major_nll_equals_nll():
    logits, mu, sigma = random_mixture(n=300, k=5)
    t = torch.randn(300, dtype=torch.float64) * 4
    expected = mixture.nll(logits, mu, sigma, t)
    got = mixture.nll_component_major(logits.t(), mu.t(), torch.log(sigma).t(), t.reshape(1, -1))
    torch.testing.assert_close(got, expected)
