"""model.adversarial: the deep-ensemble paper's adversarial training (fast gradient sign), for a
single MDN, an ensemble and a stack, against a reference built from torch.distributions."""

import json

import pytest
import torch
from conftest import FAST, run_main
from torch.distributions import Categorical, MixtureSameFamily, Normal

from mdnlab.data import SinusoidDataModule
from mdnlab.errors import ConfigError
from mdnlab.models import MixtureDensityNetwork
from mdnlab.models.stacked import StackedMDN
from mdnlab.training.stacked_loop import _stack


def _reference_loss(model: MixtureDensityNetwork, x, t, step):
    """(NLL(x) + NLL(x'))/2 averaged over members, each member's x' from its own gradient, with
    the densities from torch.distributions."""

    def member_nlls(inputs):  # inputs (M, N, D)
        logits, mu, sigma = model.member_parameters(inputs)
        mixture = MixtureSameFamily(Categorical(logits=logits), Normal(mu, sigma))
        return -mixture.log_prob(t.view(1, -1)).mean(-1)  # (M,)

    copies = x.unsqueeze(0).expand(model.n_members, *x.shape).clone().requires_grad_(True)
    clean = member_nlls(copies)
    (gradient,) = torch.autograd.grad(clean.sum(), copies)
    moved = copies.detach() + step * gradient.sign()
    return ((clean + member_nlls(moved)) / 2).mean(), gradient


def test_each_member_steps_along_its_own_gradient_sign_as_the_reference_does():
    torch.manual_seed(0)
    model = MixtureDensityNetwork(input_dim=2, n_gaussians=3, hidden_size=8, n_members=3, adversarial=0.05)
    model.input_range.copy_(torch.tensor([2.0, 4.0]))
    x, t = torch.randn(64, 2), torch.randn(64, 1)
    expected, gradient = _reference_loss(model, x, t, 0.05 * torch.tensor([2.0, 4.0]))
    assert torch.allclose(model.training_loss(x, t), expected, atol=1e-5)
    assert bool((gradient[0].sign() != gradient[1].sign()).any())  # the members' steps differ
    # to first order the adversarial inputs score worse: the loss is above the clean NLL
    assert float(model.training_loss(x, t).detach()) > float(model._members_nll(x, t).detach())


def test_a_stack_trains_on_what_each_model_alone_would():
    """The stacked losses and gradients equal each single model's, each with its own split's
    range, for the whole stack and for some of its models."""
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(MixtureDensityNetwork(n_gaussians=2, hidden_size=6, n_members=2, adversarial=0.02))
    data = [(torch.randn(40, 1) * (1 + s), torch.randn(40, 1)) for s in range(3)]
    ranges = [x.amax(0) - x.amin(0) for x, _ in data]
    for model, r in zip(models, ranges):
        model.input_range.copy_(r)
    stack = StackedMDN(models)
    stack.input_steps.copy_(0.02 * torch.stack(ranges).unsqueeze(-1))
    inputs, targets = _stack(data)
    alone = torch.stack([m.training_loss(x, t) for m, (x, t) in zip(models, data)])
    assert torch.allclose(stack.training_losses(inputs, targets), alone.detach(), atol=1e-5)
    some = torch.tensor([0, 2])
    part = stack.training_losses(inputs[some], targets[some], some)
    assert torch.allclose(part, alone[some].detach(), atol=1e-5)
    part.sum().backward()
    models[2].training_loss(*data[2]).backward()
    assert torch.allclose(stack.weights[0].grad[4:6], models[2].trunk[0].weight.grad.transpose(1, 2), atol=1e-5)


def test_the_range_is_the_training_splits_in_standardised_units():
    datamodule = SinusoidDataModule(n_samples=200, seed=3)
    datamodule.prepare_splits()
    x = (datamodule.raw["train"][0] - datamodule.standardizer.input_mean) / datamodule.standardizer.input_std
    assert torch.allclose(datamodule.input_range(), x.amax(0) - x.amin(0))


@pytest.mark.parametrize("value", [-0.01, 1.0, float("nan")])
def test_a_bad_step_is_one_error_naming_the_key(value):
    with pytest.raises(ConfigError, match="model.adversarial"):
        MixtureDensityNetwork(adversarial=value)


@pytest.mark.slow
def test_a_stacked_run_matches_the_same_run_alone(tmp_path, monkeypatch, capsys):
    """End to end through mdn-train: the stack sets each model's range from its data, as the
    Lightning run's setup does (with a range of 1 instead, the two would differ)."""
    common = [*FAST, "figures=false", "model.adversarial=0.2", "model.n_members=2"]
    sweep = tmp_path / "sweep"
    args = ["-m", *common, "hydra/launcher=stacked", "hydra.launcher.threads=1", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert run_main("mdn-train", args, tmp_path, monkeypatch, capsys)[0] == 0
    stacked = json.loads(next(sweep.glob("0_*/metrics.json")).read_text())["metrics"]
    alone = tmp_path / "alone"
    assert run_main("mdn-train", [*common, "seed=0", f"hydra.run.dir={alone}"], tmp_path, monkeypatch, capsys)[0] == 0
    single = json.loads((alone / "metrics.json").read_text())["metrics"]
    assert stacked["test/nll"] == pytest.approx(single["test/nll"], abs=1e-3)
