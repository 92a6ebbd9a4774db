"""sbibm's tasks as data, the posterior's support, its scores, the stacked C2ST."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import run_cli

from mdnlab.errors import ConfigError
from mdnlab.eval.c2st import c2st


def bayes_accuracy(shift: float) -> float:
    """The best classifier's accuracy between N(0, 1) and N(shift, 1): Φ(shift / 2)."""
    return 0.5 * (1 + math.erf(shift / 2 / math.sqrt(2)))


def test_stacked_c2st_finds_the_bayes_accuracy_of_shifted_gaussians():
    generator = torch.Generator().manual_seed(0)
    shifts = torch.tensor([0.0, 1.0, 3.0])
    x = torch.randn(3, 1500, 1, generator=generator)
    y = torch.randn(3, 1500, 1, generator=generator) + shifts.view(-1, 1, 1)
    scores = c2st(x, y, seed=1)
    assert scores.shape == (3,)
    for score, shift in zip(scores.tolist(), shifts.tolist()):
        assert abs(score - bayes_accuracy(shift)) < 0.03, (score, shift)
    assert torch.equal(c2st(x, y, seed=1), scores)  # seeded: the same numbers again
    one = c2st(x[2], y[2], seed=1)  # one pair as (N, D): a 0-d tensor
    assert one.dim() == 0 and abs(float(one) - bayes_accuracy(3.0)) < 0.03


def test_the_written_out_backpropagation_is_autograds():
    from mdnlab.eval.c2st import _init, _losses_and_gradients

    generator = torch.Generator().manual_seed(0)
    params = _init(3, [4, 40, 40, 1], generator)
    x = torch.randn(3, 50, 4, generator=generator)
    labels = (torch.rand(3, 50, generator=generator) > 0.5).float()
    losses, gradients = _losses_and_gradients(params, x, labels, alpha=1e-4)
    leaves = [p.clone().requires_grad_(True) for p in params]
    h = x
    for layer in range(0, 4, 2):
        h = torch.relu(torch.baddbmm(leaves[layer + 1], h, leaves[layer]))
    logits = torch.baddbmm(leaves[-1], h, leaves[-2]).squeeze(-1)
    penalty = 0.5e-4 * sum(w.pow(2).sum((1, 2)) for w in leaves[::2]) / 50
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1) + penalty
    assert torch.allclose(losses, expected)
    for ours, autograd in zip(gradients, torch.autograd.grad(expected.sum(), leaves)):
        assert torch.allclose(ours, autograd, atol=1e-6)


def test_stacked_c2st_agrees_with_sbibms_own_on_the_same_samples():
    pytest.importorskip("sbibm")
    pytest.importorskip("sklearn")
    from sbibm.metrics.c2st import c2st as sbibm_c2st

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1000, 2, generator=generator)
    y = torch.randn(2, 1000, 2, generator=generator) * torch.tensor([1.0, 1.6]).view(-1, 1, 1)
    ours = c2st(x, y).tolist()
    theirs = [float(sbibm_c2st(x[i], y[i])) for i in range(2)]
    assert theirs[1] > 0.6  # one pair far from 0.5, one near it
    for a, b in zip(ours, theirs):
        assert abs(a - b) < 0.03, (ours, theirs)  # 2,000 held-out rows: ± ~0.011 each


@pytest.fixture(scope="module")
def two_moons():
    pytest.importorskip("sbibm")
    from mdnlab.problems import SBIBMTask

    return SBIBMTask("two_moons")


def test_simulations_are_seeded_and_leave_the_global_generator_alone(two_moons):
    from mdnlab.data import SBIBMDataModule

    state = torch.random.get_rng_state()
    first = two_moons.simulate(200, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    again, other = two_moons.simulate(200, seed=0), two_moons.simulate(200, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    data = SBIBMDataModule("two_moons", num_simulations=200, seed=0, n_test=50)
    data.prepare_splits()
    sizes = {name: len(x) for name, (x, _) in data.raw.items()}
    assert sizes == {"train": 180, "val": 20, "test": 50}  # 10% of the budget validates
    x_train, theta_train = data.raw["train"]
    assert torch.equal(x_train, first[0][:180])  # the budget's first draws, test rows outside it
    # the box prior's parameters, fitted in the unbounded coordinates θ' = T⁻¹(θ)
    assert torch.allclose(two_moons.transform()(theta_train), first[1][:180], atol=1e-5)
    assert torch.allclose(data.standardizer.target_mean, theta_train.mean(0))


def test_the_transformed_posterior_stays_in_the_box_with_the_change_of_variables_density(two_moons):
    from torch.distributions import TransformedDistribution

    from mdnlab.eval.posterior import MixturePosterior
    from mdnlab.mixtures import Mixture

    generator = torch.Generator().manual_seed(0)
    mixture = Mixture(
        torch.tensor([[0.3, -0.2]], dtype=torch.float64),
        torch.tensor([[[0.5, -1.0], [2.0, 0.1]]], dtype=torch.float64),
        torch.tensor([[[0.7, 1.3], [0.4, 0.9]]], dtype=torch.float64),
    )
    posterior = MixturePosterior(mixture, two_moons.transform())
    draws, acceptance = posterior.sample(4000, generator)
    assert acceptance == 1.0 and bool(((draws > -1) & (draws < 1)).all())
    reference = TransformedDistribution(mixture.distribution(), [two_moons.transform()])
    theta = draws[:50]
    assert torch.allclose(posterior.log_prob(theta), reference.log_prob(theta), atol=1e-9)
    # rejection: θ fitted directly, the draws outside the box thrown away and the density renormalised
    rejecting = MixturePosterior(mixture, torch.distributions.transforms.identity_transform, two_moons.prior().support)
    kept, rate = rejecting.sample(2000, generator)
    inside = mixture.distribution().sample((200_000,))[:, 0]
    expected = float(((inside > -1) & (inside < 1)).all(-1).double().mean())
    assert abs(rate - expected) < 0.02 and bool(((kept > -1) & (kept < 1)).all())
    outside = torch.tensor([[1.5, 0.0]], dtype=torch.float64)
    assert rejecting.log_prob(outside, rate).item() == -math.inf
    # the corner figure's exact marginals: each a density on the box, matching the draws
    grid = torch.linspace(-1 + 1e-7, 1 - 1e-7, 20001, dtype=torch.float64)
    for d in (0, 1):
        density = posterior.marginal_log_prob([d], grid[:, None]).exp()
        assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-4)
        below_zero = torch.trapezoid(density[: len(grid) // 2 + 1], grid[: len(grid) // 2 + 1]).item()
        assert below_zero == pytest.approx(float((draws[:, d] < 0).double().mean()), abs=0.03)
    pair = torch.tensor([[0.1, -0.4], [0.7, 0.2]], dtype=torch.float64)
    assert torch.allclose(posterior.marginal_log_prob([0, 1], pair), posterior.log_prob(pair))


class FixedMixture:
    """A model whose predictive mixture is given: one row per input."""

    device, dtype = torch.device("cpu"), torch.float64

    def __init__(self, mixture) -> None:
        self.mixture = mixture

    def eval(self) -> "FixedMixture":
        return self

    def predictive_mixture(self, inputs):
        return self.mixture


def three_mixtures(full: bool):
    """Three inputs' 2-component mixtures over 2-D θ, near and across two_moons' box [-1, 1]²
    (a component centred left of it, one right of it)."""
    from mdnlab.mixtures import Mixture

    logits = torch.tensor([[0.3, -0.2], [0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    mu = torch.tensor([[[0.5, -1.0], [2.0, 0.1]], [[0.0, 0.0], [-1.6, 0.8]], [[1.5, 1.5], [0.2, -0.3]]]).double()
    sigma = torch.tensor([[[0.7, 1.3], [0.4, 0.9]], [[0.3, 0.2], [1.0, 2.0]], [[0.5, 0.5], [0.3, 0.6]]]).double()
    if not full:
        return Mixture(logits, mu, sigma)
    cholesky = torch.diag_embed(sigma)
    cholesky[..., 1, 0] = 0.6 * sigma[..., 0]  # correlated components
    return Mixture(logits, mu, cholesky)


@pytest.mark.parametrize("full", [False, True])
def test_the_mass_in_the_box_is_that_of_the_mixtures_own_draws(two_moons, full):
    from mdnlab.eval.posterior import support_mass

    mixture = three_mixtures(full)
    support = two_moons.prior().support
    draws = mixture.distribution().sample((200_000,))  # torch.distributions as the reference
    expected = support.check(draws).double().mean(0)
    mass = support_mass(mixture, support, torch.Generator().manual_seed(0))
    assert mass.shape == (3,)
    tolerance = 0.035 if full else 0.004  # 2,000 draws an input (sd ≤ 0.011) against the closed form
    assert torch.allclose(mass, expected, atol=tolerance), (mass, expected)
    assert torch.equal(support_mass(mixture, support, torch.Generator().manual_seed(0)), mass)


@pytest.mark.parametrize("support", ["transform", "reject", "truncate"])
def test_the_nll_of_theta_is_in_thetas_own_units_for_every_support(support):
    pytest.importorskip("sbibm")
    from torch.distributions import TransformedDistribution

    from mdnlab.eval.posterior import theta_nll
    from mdnlab.problems import SBIBMTask

    task = SBIBMTask("two_moons", support)
    mixture = three_mixtures(full=False)
    theta = torch.tensor([[0.2, -0.5], [-0.9, 0.7], [0.6, 0.6]], dtype=torch.float64)
    targets = task.transform().inv(theta)  # what the data module hands over: the fitted coordinates
    nll = theta_nll(FixedMixture(mixture), task, torch.zeros(3, 2), targets)
    if support == "transform":  # a density over θ through the change of variables
        log_q = TransformedDistribution(mixture.distribution(), [task.transform()]).log_prob(theta)
        assert nll == pytest.approx(-float(log_q.mean()), rel=1e-9)
    else:  # reject, truncate: the mixture over θ itself, renormalised by its mass in the box (200,000 draws)
        draws = mixture.distribution().sample((200_000,))
        log_q = mixture.distribution().log_prob(theta) - task.prior().support.check(draws).double().mean(0).log()
        assert nll == pytest.approx(-float(log_q.mean()), abs=0.01)


def test_trained_truncated_the_validation_loss_is_the_nll_of_theta_that_scores_it():
    """data.support=truncate: the loss the network trains and validates on, in θ's units, is the
    NLL of θ of the posterior that is scored (the mixture restricted to the box), and the box is
    the prior's in the standardised coordinates; full covariance is refused, naming the key."""
    pytest.importorskip("sbibm")
    from mdnlab.data import SBIBMDataModule
    from mdnlab.eval.posterior import theta_nll
    from mdnlab.models import MixtureDensityNetwork

    data = SBIBMDataModule("two_moons", num_simulations=300, n_test=50, support="truncate")
    data.setup("fit")
    box = data.target_box()
    s = data.standardizer
    assert torch.allclose(box * s.target_std + s.target_mean, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert SBIBMDataModule("two_moons", num_simulations=300, support="reject").target_box() is None
    torch.manual_seed(0)
    model = MixtureDensityNetwork(input_dim=2, target_dim=2, n_gaussians=3, n_members=2)
    model.set_standardizer(s.as_dict())
    model.set_truncation(box)
    x, t = data.splits["val"]
    with torch.no_grad():
        loss = float(model.to_original_units(model.loss(x, t)))
    assert loss == pytest.approx(theta_nll(model, data.task, *data.raw["val"]), abs=1e-4)
    model.set_truncation(None)
    with torch.no_grad():  # untruncated, the same network's NLL is higher: the box binds
        assert float(model.to_original_units(model.loss(x, t))) > loss + 0.1
    full = MixtureDensityNetwork(input_dim=2, target_dim=2, covariance="full")
    with pytest.raises(ConfigError) as raised:
        full.set_truncation(box)
    assert raised.value.key == "model.covariance" and "truncate" in str(raised.value)


@pytest.mark.parametrize(
    "model, key",
    [
        ({"_target_": "mdnlab.models.MixtureDensityNetwork", "covariance": "full"}, "model.covariance"),
        ({"_target_": "mdnlab.models.ConditionalFlow"}, "data.support"),
    ],
)
def test_a_model_that_cannot_train_truncated_is_refused_before_anything_is_drawn(model, key):
    """data.support=truncate with full covariance, or with a model that has no truncated loss:
    refused when the config is built (before a run directory starts), naming the key."""
    pytest.importorskip("sbibm")
    from omegaconf import OmegaConf

    from mdnlab.config import instantiate_checked

    data = {
        "_target_": "mdnlab.data.SBIBMDataModule",
        "task": "two_moons",
        "num_simulations": 200,
        "support": "truncate",
    }
    with pytest.raises(ConfigError) as raised:
        instantiate_checked(OmegaConf.create({"data": data, "model": model}))
    assert raised.value.key == key


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"task": "nope"}, "data.task"),
        ({"task": "sir"}, "data.task"),
        ({"num_simulations": 99}, "data.num_simulations"),
        ({"observations": [0, 3]}, "data.observations"),
        ({"observations": [11]}, "data.observations"),
        ({"support": "clip"}, "data.support"),
    ],
)
def test_bad_sbibm_settings_name_their_key(overrides, key):
    from mdnlab.data import SBIBMDataModule

    with pytest.raises(ConfigError) as raised:
        SBIBMDataModule(**{"task": "two_moons", **overrides})
    assert raised.value.key == key
    if overrides.get("task") == "sir":
        assert "Julia" in str(raised.value)


@pytest.mark.slow
def test_a_tiny_budget_trains_and_scores_every_observation(tmp_path):
    pytest.importorskip("sbibm")
    run = tmp_path / "run"
    command = [
        "mdn-train",
        "experiment=sbi",
        "data.task=two_moons",
        "data.num_simulations=1000",
        "data.posterior_samples=1000",
        "data.observations=[1,4,7]",
        "model.hidden_size=50",
        "trainer.max_epochs=40",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={run}",
    ]
    run_cli(command, tmp_path)
    rows = list(csv.DictReader((run / "posterior.csv").open()))
    assert [int(r["observation"]) for r in rows] == [1, 4, 7]
    c2sts = [float(r["c2st"]) for r in rows]
    assert all(0.45 < c < 1.0 for c in c2sts) and sum(c2sts) / 3 < 0.95  # a posterior, not noise
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["test/c2st"] == pytest.approx(sum(c2sts) / 3)
    assert metrics["test/c2st_4"] == pytest.approx(c2sts[1])
    assert math.isfinite(metrics["test/nltp"]) and math.isfinite(metrics["test/mmd"])
    draws = torch.load(run / "posterior_samples.pt")
    assert sorted(draws) == [1, 4, 7] and draws[1].shape == (1000, 2)
    assert all(bool(((d > -1) & (d < 1)).all()) for d in draws.values())  # inside the prior's box
    # the NLL of θ in its own units: the fitted coordinates' NLL with the change of variables
    from mdnlab.data import SBIBMDataModule

    data = SBIBMDataModule("two_moons", num_simulations=1000, seed=0)
    data.prepare_splits()
    inner = data.raw["test"][1].double()
    log_det = data.task.transform().log_abs_det_jacobian(inner, data.task.transform()(inner)).mean()
    assert metrics["test/nll_theta"] == pytest.approx(metrics["test/nll"] + float(log_det), abs=1e-4)
    assert math.isfinite(metrics["val/nll_theta"])


def test_sbis_calibration_checks_accept_the_mdn_as_a_posterior(two_moons):
    pytest.importorskip("sbi")
    from sbi.diagnostics import check_tarp, run_sbc, run_tarp

    from mdnlab.data import SBIBMDataModule
    from mdnlab.eval.posterior import AmortizedPosterior
    from mdnlab.models import MixtureDensityNetwork

    data = SBIBMDataModule("two_moons", num_simulations=200, n_test=40)
    data.setup("fit")
    model = MixtureDensityNetwork(input_dim=2, target_dim=2, n_gaussians=3, covariance="full")
    model.set_standardizer(data.standardizer.as_dict())
    x, inner = data.raw["test"]
    theta = two_moons.transform()(inner)
    posterior = AmortizedPosterior(model, two_moons, seed=0)
    draws = posterior.sample_batched((30,), x=x[:5])
    assert draws.shape == (30, 5, 2) and bool((draws.abs() < 1).all())
    assert posterior.log_prob(theta[:4], x[0]).shape == (4,)
    with torch.random.fork_rng():
        ranks, _ = run_sbc(theta, x, posterior, num_posterior_samples=50, show_progress_bar=False)
        ecp, alpha = run_tarp(theta, x, posterior, num_posterior_samples=50, show_progress_bar=False)
    assert ranks.shape == (40, 2) and bool(((ranks >= 0) & (ranks <= 50)).all())
    atc, _ = check_tarp(ecp, alpha)
    assert math.isfinite(float(atc))


def test_without_the_extra_a_run_says_how_to_install_it(monkeypatch):
    import sys

    from mdnlab.data import SBIBMDataModule
    from mdnlab.problems import sbibm_task

    monkeypatch.setitem(sys.modules, "sbibm", None)  # import sbibm fails, as without the sbi extra
    sbibm_task._task.cache_clear()
    data = SBIBMDataModule("slcp")
    with pytest.raises(ConfigError) as raised:
        data.check()
    assert raised.value.key == "data" and "EXTRAS=dev,sbi" in str(raised.value)
    sbibm_task._task.cache_clear()


@pytest.mark.parametrize(
    "arguments, line",
    [
        (["--tasks", "lotka_volterra"], "--tasks='lotka_volterra' is not allowed: one of two_moons"),
        (["--budgets", "99"], "--budgets=99 is not allowed"),
    ],
)
def test_make_sbi_refuses_bad_options_in_one_line_and_writes_nothing(tmp_path, monkeypatch, arguments, line):
    import sys

    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import sbi_benchmark

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["sbi_benchmark.py", *arguments, "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        sbi_benchmark.main()
    message = str(exited.value.code)
    assert message.startswith("error: ") and line in message and "\n" not in message  # exits 1 with this line
    assert not out.exists()


def test_the_recipe_search_chooses_the_support_by_the_nll_of_theta(tmp_path, monkeypatch):
    from conftest import REPO
    from omegaconf import OmegaConf

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import sbi_search

    def row(number, state, value, theta, components):
        return {
            "number": number,
            "state": state,
            "value": value,
            "theta": theta,
            "params": {"model.n_gaussians": components},
        }

    # the fitted coordinates' NLLs differ in scale between supports: only val NLL θ is compared
    searches = {
        "transform": [row(0, "complete", 0.59, -2.01, 20), row(1, "pruned", 0.78, None, 10) | {"step": 15}],
        "reject": [row(0, "complete", -2.42, -1.95, 3), row(1, "complete", -2.20, -2.27, 10)],
    }
    recipe = tmp_path / "two_moons_1000.yaml"
    chosen = sbi_search.write_recipe("two_moons", 1000, searches, 60.0, recipe, [])
    assert (chosen["support"], chosen["theta"], chosen["params"]) == ("reject", -2.27, {"model.n_gaussians": 10})
    written = OmegaConf.load(recipe)
    assert written.data.support == "reject" and written.model.n_gaussians == 10
    header = [line for line in recipe.read_text().splitlines() if line.startswith("#")]
    assert "# data.support=transform: best val NLL θ -2.0100; every trial, best first:" in header
    assert any(line.split()[1:5] == ["1", "pruned", "0.7800", "@15"] for line in header)
    # truncate's recipe carries the diagonal covariance its search ran with
    searches["truncate"] = [row(0, "complete", -2.31, -2.35, 3)]
    chosen = sbi_search.write_recipe("two_moons", 1000, searches, 60.0, recipe, [])
    written = OmegaConf.load(recipe)
    assert chosen["support"] == "truncate" and written.data.support == "truncate"
    assert written.model.covariance == "diag" and written.model.n_gaussians == 3
