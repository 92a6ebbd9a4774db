"""The metrics of any predictive distribution (log_prob and draws) against the mixture's closed
forms, given the same mixture as a plain torch Distribution."""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from mdnlab.eval.metrics import mixture_metrics
from mdnlab.eval.sampled import distribution_metrics
from mdnlab.mixtures import Mixture


def a_mixture(n=400, k=3, d=1, seed=0) -> Mixture:
    g = torch.Generator().manual_seed(seed)
    shape = (n, k) if d == 1 else (n, k, d)
    return Mixture(
        torch.randn(n, k, generator=g, dtype=torch.float64),
        3 * torch.randn(*shape, generator=g, dtype=torch.float64),
        0.3 + torch.rand(*shape, generator=g, dtype=torch.float64),
    )


class WithoutCdf(MixtureSameFamily):
    """The same mixture, its cdf and mean hidden: a family known only by log_prob and draws."""

    def cdf(self, value):
        raise NotImplementedError

    @property
    def mean(self):
        raise NotImplementedError


def plain(m: Mixture, hide=False):
    family = WithoutCdf if hide else MixtureSameFamily
    components = Normal(m.mu, m.scale) if m.univariate else Independent(Normal(m.mu, m.scale), 1)
    return family(Categorical(logits=m.logits), components)


def targets_of(m: Mixture, seed=1):
    return m.sample(1, generator=torch.Generator().manual_seed(seed)).squeeze(-2 if not m.univariate else -1)


@pytest.mark.parametrize("hide", [False, True], ids=["with_cdf", "from_draws"])
def test_one_target_metrics_agree_with_the_closed_forms_within_their_monte_carlo_error(hide):
    m = a_mixture()
    t = targets_of(m)
    exact = mixture_metrics(m, t)
    got, points = distribution_metrics(lambda rows: plain(m.rows(rows), hide), torch.arange(len(t)), t)
    assert got["nll"] == pytest.approx(exact["nll"], rel=1e-12)
    assert got["frac_nll_above_6"] == exact["frac_nll_above_6"]
    assert 0 < got["crps_mc_se"] < 0.02 * got["crps"]
    assert abs(got["crps"] - exact["crps"]) < 4 * got["crps_mc_se"]
    for name in ("coverage_50", "coverage_90", "pit_ks"):
        if hide:
            assert got[f"{name}_mc_se"] > 0
            # the draws' PIT moves each point by ~0.5/√S; a few points cross a band's edge
            assert abs(got[name] - exact[name]) < 4 * got[f"{name}_mc_se"] + 0.01, name
        else:
            assert got[f"{name}_mc_se"] == 0 and got[name] == pytest.approx(exact[name], abs=1e-12), name
    mean_error = 4 * m.std().max().item() / 1000**0.5 if hide else 1e-9
    assert (points["mean"] - m.mean()).abs().max() < mean_error
    assert got["mse"] == pytest.approx(exact["mse"], abs=mean_error * 10)
    # the densest of 100 draws sits near the density's highest mode: its density is close to it
    mode_density, draw_density = m.log_prob(m.highest_mode()), m.log_prob(points["mode"])
    assert (draw_density <= mode_density + 1e-9).all()
    assert (mode_density - draw_density).median() < 0.05
    assert "mae_top_component" not in got and "effective_components" not in got


def test_several_targets_give_the_energy_score_within_its_error():
    m = a_mixture(n=300, k=3, d=2)
    t = targets_of(m)
    exact = mixture_metrics(m, t)
    got, _ = distribution_metrics(lambda rows: plain(m.rows(rows)), torch.arange(len(t)), t)
    assert got["nll"] == pytest.approx(exact["nll"], rel=1e-12)
    # both are Monte Carlo: the closed-form path draws 200 a point, this one 1000
    assert abs(got["energy_score"] - exact["energy_score"]) < 4 * got["energy_score_mc_se"] * (1 + (1000 / 200) ** 0.5)


def test_chunks_and_the_seed_fix_the_draws():
    m = a_mixture(n=50)
    t = targets_of(m)
    predictive = lambda rows: plain(m.rows(rows), hide=True)  # noqa: E731
    first, _ = distribution_metrics(predictive, torch.arange(50), t, seed=3)
    again, _ = distribution_metrics(predictive, torch.arange(50), t, seed=3)
    other, _ = distribution_metrics(predictive, torch.arange(50), t, seed=4)
    assert first == again and first["crps"] != other["crps"]
