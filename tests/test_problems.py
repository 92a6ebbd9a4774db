"""The sinusoid and its oracle."""

import math

import pytest
import torch

from mdnlab.problems import Sinusoid


def test_sample_is_deterministic_and_inverted_swaps_roles():
    fwd = Sinusoid(direction="forward").sample(100, torch.Generator().manual_seed(0))
    inv = Sinusoid(direction="inverted").sample(100, torch.Generator().manual_seed(0))
    assert torch.equal(fwd[0], inv[1]) and torch.equal(fwd[1], inv[0])
    x, y = fwd
    assert x.min() >= -10 and x.max() <= 10
    residual = y - (7 * torch.sin(0.75 * x) + 0.5 * x)
    assert residual.std().item() == pytest.approx(1.0, abs=0.2)


def test_forward_oracle_is_the_noise_gaussian():
    p = Sinusoid(direction="forward", noise_std=0.5)
    x = torch.tensor([[0.3], [2.0]])
    y = torch.tensor([[1.0], [-1.0]])
    expected = torch.distributions.Normal(p.f(x.double()), 0.5).log_prob(y.double()).squeeze(-1)
    torch.testing.assert_close(p.log_density(x, y), expected)


def test_inverted_oracle_normalises_and_is_accurate():
    p = Sinusoid(direction="inverted")
    ys = torch.tensor([-9.0, -2.0, 0.0, 4.5, 11.0])
    grid = torch.linspace(-10, 10, 40001, dtype=torch.float64)
    density = p.log_density_grid(ys, grid).exp()
    mass = torch.trapezoid(density, grid, dim=-1)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-6, rtol=0)
    # quadrature converged: 4x the nodes moves log p (and Var) by less than 1e-6
    fine = Sinusoid(direction="inverted", quadrature_points=4 * 2000 + 1)
    targets = torch.linspace(-9.9, 9.9, 25)
    inputs = ys.repeat_interleave(5)
    diff = p.log_density(inputs, targets) - fine.log_density(inputs, targets)
    _, var = p.moments(inputs)
    torch.testing.assert_close(var, fine.moments(inputs)[1], rtol=1e-6, atol=0)
    assert diff.abs().max().item() < 1e-6
    assert torch.isinf(p.log_density(torch.tensor([0.0]), torch.tensor([10.5]))).all()


def test_seed_setting_bayes_nll_and_mse_floor():
    p = Sinusoid(direction="inverted")
    inputs, targets = p.sample(20000, torch.Generator().manual_seed(123))
    bayes_nll = -p.log_density(inputs, targets).mean().item()
    mean, var = p.moments(inputs)
    assert bayes_nll == pytest.approx(1.33, abs=0.02)
    assert var.mean().item() == pytest.approx(22.3, abs=0.3)
    # the posterior mean is the best point predictor: its MSE is the floor
    mse = (mean - targets.squeeze(-1).double()).square().mean().item()
    assert mse == pytest.approx(var.mean().item(), rel=0.03)
    # forward: the Bayes NLL is the Gaussian entropy
    f = Sinusoid(direction="forward")
    fi, ft = f.sample(20000, torch.Generator().manual_seed(1))
    assert -f.log_density(fi, ft).mean().item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e), abs=0.02)


def test_unknown_direction_rejected():
    with pytest.raises(ValueError, match="direction"):
        Sinusoid(direction="sideways")
