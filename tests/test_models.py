"""The LightningModules' math: units, ensembles, the MSE baseline as a Gaussian."""

import math

import pytest
import torch

from mdnlab.mixtures import mixture
from mdnlab.models import MixtureDensityNetwork, MSERegression


def test_ensemble_predicts_the_mean_of_its_members_densities():
    torch.manual_seed(0)
    model = MixtureDensityNetwork(n_members=3, n_gaussians=2)
    x, y = torch.randn(7, 1), torch.randn(7, 1)
    logits, mu, sigma = model(x)
    assert logits.shape == (7, 6)
    member = model.member_parameters(x)
    per_member = torch.stack([mixture.log_prob(*(p[m] for p in member), y) for m in range(3)])
    torch.testing.assert_close(mixture.log_prob(logits, mu, sigma, y), torch.logsumexp(per_member, 0) - math.log(3))
    torch.testing.assert_close(model.training_loss(x, y), -per_member.mean())


def test_predictive_mixture_is_in_original_units():
    torch.manual_seed(0)
    model = MixtureDensityNetwork()
    model.set_standardizer(
        {
            "input_mean": torch.tensor([2.0]),
            "input_std": torch.tensor([3.0]),
            "target_mean": torch.tensor([-1.0]),
            "target_std": torch.tensor([4.0]),
        }
    )
    raw = torch.tensor([[5.0]])
    logits, mu, sigma = model.predictive_mixture(raw)
    s_logits, s_mu, s_sigma = model(torch.tensor([[1.0]]))
    torch.testing.assert_close(mu, s_mu * 4 - 1)
    torch.testing.assert_close(sigma, s_sigma * 4)
    # the NLL shifts by log(target_std) between the two coordinate systems
    t = torch.tensor([3.0])
    standardised_nll = mixture.nll(s_logits, s_mu, s_sigma, (t + 1) / 4)
    torch.testing.assert_close(model.to_original_units(standardised_nll), mixture.nll(logits, mu, sigma, t))


def test_mse_model_is_a_one_component_gaussian():
    model = MSERegression()
    model.residual_std.fill_(2.0)
    logits, mu, sigma = model.predictive_mixture(torch.zeros(4, 1))
    assert logits.shape == mu.shape == sigma.shape == (4, 1)
    assert torch.all(sigma == 2.0)


@pytest.mark.parametrize("transform", ["exp", "softplus"])
def test_sigma_transforms_and_floor(transform):
    model = MixtureDensityNetwork(sigma_transform=transform, min_sigma=0.1)
    _, _, sigma = model(torch.linspace(-50, 50, 101).reshape(-1, 1))
    assert torch.all(sigma > 0.1)


@pytest.mark.parametrize("sigma_transform, min_sigma", [("exp", 0.0), ("exp", 0.05), ("softplus", 0.0)])
def test_mdn_loss_fast_path_equals_the_mixture_nll(sigma_transform, min_sigma):
    from mdnlab.mixtures import mixture

    torch.manual_seed(0)
    model = MixtureDensityNetwork(sigma_transform=sigma_transform, min_sigma=min_sigma).double()
    x, y = torch.randn(64, 1, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    fast = model.loss(x, y)
    fast.backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference = mixture.nll(*model(x), y)
    reference.backward()
    torch.testing.assert_close(fast, reference)
    for got, want in zip(fast_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


def test_ensemble_training_loss_fast_path_is_the_mean_of_member_nlls():
    from mdnlab.mixtures import mixture

    torch.manual_seed(0)
    model = MixtureDensityNetwork(n_members=3).double()
    x, y = torch.randn(64, 1, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    logits, mu, sigma = model.member_parameters(x)
    members = torch.stack([mixture.nll(logits[m], mu[m], sigma[m], y) for m in range(3)])
    torch.testing.assert_close(model.training_loss(x, y), members.mean())


def test_an_ensemble_logs_its_training_loss_as_member_nll():
    """train/nll is a mixture's NLL everywhere; an ensemble optimises its members' mean NLL."""
    assert MixtureDensityNetwork().training_metric == "nll"
    assert MixtureDensityNetwork(n_members=3).training_metric == "member_nll"
    assert MSERegression().training_metric == "mse"


@pytest.mark.parametrize("target_dim", [1, 2])
def test_one_target_and_d_targets_share_one_metrics_path(target_dim):
    """The one-target mixture scored as itself and as its D = 1 form gives the same shared scores."""
    from mdnlab.eval.metrics import mixture_metrics
    from mdnlab.mixtures import Mixture

    g = torch.Generator().manual_seed(0)
    n, k = 200, 3
    m = Mixture(
        torch.randn(n, k, generator=g, dtype=torch.float64),
        3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        torch.rand(n, k, generator=g, dtype=torch.float64) + 0.3,
    )
    t = 3 * torch.randn(n, generator=g, dtype=torch.float64)
    one = mixture_metrics(m, t)
    if target_dim == 1:
        as_columns = mixture_metrics(m.columns(), t.reshape(-1, 1))
        for name in ("nll", "crps", "pit_ks", "coverage_50", "coverage_90", "min_sigma", "mse", "mae"):
            assert as_columns[name] == pytest.approx(one[name], rel=1e-9, abs=1e-12), name
        assert as_columns["crps_0"] == pytest.approx(one["crps"], rel=1e-12)
    else:  # the target twice: each marginal is the one-target mixture, so its scores repeat
        both = Mixture(m.logits, torch.stack([m.mu, m.mu], -1), torch.stack([m.scale, m.scale], -1))
        scores = mixture_metrics(both, torch.stack([t, t], -1))
        for name in ("crps", "pit_ks", "coverage_90"):
            assert scores[f"{name}_0"] == scores[f"{name}_1"] == pytest.approx(one[name], rel=1e-12)
