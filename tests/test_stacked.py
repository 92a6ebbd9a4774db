"""Many models in one process: the stacked network, its optimiser and batches against models
trained alone, and hydra/launcher=stacked end to end."""

import json
import math

import pytest
import torch
from conftest import FAST, run_main

from mdnlab import checkpoint
from mdnlab.models import MixtureDensityNetwork
from mdnlab.models.stacked import StackedAdam, StackedMDN


def _models(seeds, **settings):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(MixtureDensityNetwork(**settings))
    return models


def _data(seeds, n=300, inputs=1, targets=1):
    """Per seed, x ~ N(0, I) and t_d = sin((3 + d) x_1) + 0.3 ε_d, correlated across d."""
    out = []
    for seed in seeds:
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(n, inputs, generator=g)
        waves = torch.sin(x[:, :1] * torch.arange(3.0, 3 + targets))
        out.append((x, waves + 0.3 * torch.randn(n, targets, generator=g)))
    return out


@pytest.mark.parametrize("targets", [{}, {"target_dim": 3, "covariance": "full"}, {"target_dim": 2, "truncate": True}])
def test_the_losses_of_some_models_are_theirs_in_the_whole_stack_with_the_same_gradients(targets):
    """Once most models have stopped the loop computes only the rest: the same losses, and the
    same gradients for them (none for the stopped), as the whole stack's (truncated too: each
    model its own box)."""
    from mdnlab.training.stacked_loop import _stack

    targets = dict(targets)
    truncate = targets.pop("truncate", False)
    models = _models(range(5), n_members=2, hidden_size=6, n_hidden_layers=2, **targets)
    if truncate:
        for i, model in enumerate(models):
            model.set_truncation(torch.tensor([[-1.5 - 0.1 * i], [1.4 + 0.1 * i]]).expand(2, 2))
    stack = StackedMDN(models)
    x, t = _stack(_data(range(5), n=40, targets=targets.get("target_dim", 1)))
    some = torch.tensor([1, 4])
    whole = stack.training_losses(x, t)
    whole[some].sum().backward()
    expected = [p.grad.clone() for p in stack.parameters()]
    stack.zero_grad()
    part = stack.training_losses(x[some], t[some], some)
    part.sum().backward()
    assert torch.allclose(part, whole[some].detach(), atol=1e-6)
    rows = torch.tensor([2, 3, 8, 9])  # models 1 and 4, two members each
    for got, want in zip((p.grad for p in stack.parameters()), expected):
        assert torch.allclose(got, want, atol=1e-6) and bool((got[rows] != 0).any())
        assert torch.count_nonzero(got[[0, 1, 4, 5, 6, 7]]) == 0


@pytest.mark.parametrize(
    "settings, optimizer",
    [
        ({}, torch.optim.Adam),
        ({"n_members": 3, "hidden_size": 8, "n_hidden_layers": 2, "activation": "relu"}, torch.optim.Adam),
        ({"sigma_transform": "softplus", "min_sigma": 0.01, "input_dim": 2}, torch.optim.AdamW),
        ({"target_dim": 2, "n_members": 2, "input_dim": 3}, torch.optim.Adam),
        ({"target_dim": 4, "covariance": "full", "sigma_transform": "softplus", "min_sigma": 0.01}, torch.optim.Adam),
        ({"target_dim": 3, "covariance": "full", "n_members": 2, "adversarial": 0.01}, torch.optim.AdamW),
        ({"target_dim": 3, "n_members": 2, "truncate": True}, torch.optim.Adam),
        ({"truncate": True, "sigma_transform": "softplus", "min_sigma": 0.01}, torch.optim.AdamW),
    ],
)
def test_stacked_models_train_as_each_would_alone(settings, optimizer):
    """100 steps, each model its own data, learning rate and weight decay: every loss within
    1e-5 of the same model trained alone by torch's own optimiser; for D targets, with
    diagonal and full covariance, adversarial training (each model its own input range), and
    the density truncated to a box (each model its own, tight around its targets)."""
    # learning rates where 100 steps stay stable: past one, float rounding grows chaotically
    seeds, lrs, decays = [0, 1, 2], [1e-3, 2e-3, 3e-3], [0.0, 1e-3, 1e-2]
    settings = dict(settings)
    truncate = settings.pop("truncate", False)
    data = _data(seeds, inputs=settings.get("input_dim", 1), targets=settings.get("target_dim", 1))
    boxes = [torch.stack([y.min(0).values - 0.05, y.max(0).values + 0.05]) if truncate else None for _, y in data]
    alone = _models(seeds, **settings)
    for model, (x, _), box in zip(alone, data, boxes):
        model.input_range.copy_(x.max(0).values - x.min(0).values)
        model.set_truncation(box)
    stacked = _models(seeds, **settings)
    for model, box in zip(stacked, boxes):
        model.set_truncation(box)
    stack = StackedMDN(stacked)
    stack.input_steps.copy_(
        settings.get("adversarial", 0.0) * torch.stack([m.input_range for m in alone]).unsqueeze(-1)
    )
    adam = StackedAdam(
        stack.parameters(),
        torch.tensor(lrs),
        torch.tensor(decays),
        stack.n_members,
        decoupled=optimizer is torch.optim.AdamW,
    )
    inputs = torch.stack([x.T for x, _ in data])
    targets = torch.stack([y.T for _, y in data])
    expected = []
    for model, (x, y), lr, decay in zip(alone, data, lrs, decays):
        opt = optimizer(model.parameters(), lr=lr, weight_decay=decay)
        for _ in range(100):
            loss = model.training_loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        expected.append(float(model.training_loss(x, y)))
    for _ in range(100):
        adam.zero_grad()
        stack.training_losses(inputs, targets).sum().backward()
        adam.step()
    got = stack.training_losses(inputs, targets).tolist()
    assert got == pytest.approx(expected, abs=1e-5)
    for index, (model, (x, y)) in enumerate(zip(alone, data)):
        exported = stack.export(index, _models([99], **settings)[0])
        exported.input_range.copy_(model.input_range)  # not weights: what training's setup sets
        exported.set_truncation(boxes[index])
        assert float(exported.training_loss(x, y)) == pytest.approx(expected[index], abs=1e-5)
        log_p = model(x).log_prob(y)
        if truncate:  # the prediction (an ensemble's mixture of its members) truncated as a whole
            log_p = log_p - model(x).log_box_mass(*boxes[index])
            assert float(-log_p.mean()) < float(-model(x).log_prob(y).mean()) - 0.01  # the box binds
        predictive = float(-log_p.mean())
        assert float(model.loss(x, y)) == pytest.approx(predictive, abs=1e-5)
        assert float(stack.validation_losses(inputs, targets)[index]) == pytest.approx(predictive, abs=1e-5)


def test_a_stopped_or_diverged_model_keeps_its_weights_and_the_others_train():
    seeds = [0, 1]
    stack = StackedMDN(_models(seeds))
    adam = StackedAdam(stack.parameters(), torch.tensor([1e-3, 1e-3]), torch.zeros(2), 1)
    inputs = torch.stack([x.T for x, _ in _data(seeds)])
    targets = torch.stack([y.T for _, y in _data(seeds)])
    targets[1, 0, 0] = math.nan  # model 1's loss is NaN from the first step on
    adam.set_active(torch.tensor([True, False]))
    before = [p.detach().clone() for p in stack.parameters()]
    for _ in range(5):
        adam.zero_grad()
        stack.training_losses(inputs, targets).sum().backward()
        adam.step()
    for now, then in zip(stack.parameters(), before):
        assert torch.equal(now[1], then[1]) and not torch.equal(now[0], then[0])
        assert torch.isfinite(now).all()


STACK = [
    *FAST,
    "data.n_test=300",
    "figures=false",
    "hydra/launcher=stacked",
    "hydra.launcher.threads=1",  # the other xdist worker has the other core
    "data.train_fraction=0.8",
    "data.val_fraction=0.1",
    "test_checkpoint=best",
]


@pytest.mark.slow
def test_the_stacked_launcher_leaves_what_the_basic_one_does(tmp_path, monkeypatch, capsys):
    """Two seeds and a diverging learning rate in one stack: each job its own directory with
    metrics equal to the same job run alone, checkpoints mdn-eval loads, TensorBoard events
    and hparams; the diverged job fails alone, with error.txt; a rerun skips the finished."""
    sweep = tmp_path / "sweep"
    args = ["-m", *STACK, "seed=0,1", "model.optimizer.lr=1e-3,300", f"hydra.sweep.dir={sweep}"]
    status, err = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 1 and "non-finite" in err
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    failed = [j for j in jobs if (j / "error.txt").is_file()]
    done = [j for j in jobs if (j / "metrics.json").is_file()]
    assert len(failed) == 2 and len(done) == 2
    assert all("model.optimizer.lr=300" in (j / ".hydra" / "overrides.yaml").read_text() for j in failed)
    for job in done:
        assert (job / ".hydra" / "overrides.yaml").is_file() and list(job.glob("events.out.tfevents.*"))
        assert "model.hidden_size" in (job / "hparams.yaml").read_text()
        record = json.loads((job / "run.json").read_text())
        model, datamodule = checkpoint.load(record["tested_checkpoint"])
        assert isinstance(model, MixtureDensityNetwork) and datamodule.hparams.seed == record["config"]["seed"]
        seed = record["config"]["seed"]
        alone = tmp_path / f"alone{seed}"
        status, _ = run_main(
            "mdn-train",
            [
                *STACK[:-5],
                "data.train_fraction=0.8",
                "data.val_fraction=0.1",
                "test_checkpoint=best",
                f"seed={seed}",
                f"hydra.run.dir={alone}",
            ],
            tmp_path,
            monkeypatch,
            capsys,
        )
        assert status == 0
        single = json.loads((alone / "metrics.json").read_text())["metrics"]
        assert record["metrics"]["test/nll"] == pytest.approx(single["test/nll"], abs=1e-3)
        assert record["metrics"]["train/steps"] == single["train/steps"]
    status, _ = run_main(
        "mdn-eval", [f"ckpt_path='{done[0] / 'checkpoints' / 'last.ckpt'}'"], tmp_path, monkeypatch, capsys
    )
    assert status == 0
    before = {j: (j / "metrics.json").stat().st_mtime_ns for j in done}
    status, err = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 1 and "non-finite" in err  # the failed jobs ran again (and failed again)
    assert sorted(p for p in sweep.iterdir() if p.is_dir()) == jobs
    assert all((j / "metrics.json").stat().st_mtime_ns == t for j, t in before.items())  # skipped


@pytest.mark.slow
def test_a_stack_of_jobs_with_two_targets_and_full_covariance_equals_each_job_alone(tmp_path, monkeypatch, capsys):
    """The robot arm's inverse (two joint angles) with full covariance: two seeds in one stack
    give each the test NLL and steps of the same job trained alone by Lightning."""
    robot = ["experiment=robot_arm_mdn", "model.covariance=full", "model.n_gaussians=3", *STACK[1:]]
    robot = [*FAST, *(a for a in robot if a not in FAST)]
    sweep = tmp_path / "sweep"
    status, _ = run_main(
        "mdn-train", ["-m", *robot, "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch, capsys
    )
    assert status == 0
    stacked = {
        json.loads((j / "run.json").read_text())["config"]["seed"]: json.loads((j / "metrics.json").read_text())
        for j in sweep.iterdir()
        if (j / "metrics.json").is_file()
    }
    assert sorted(stacked) == [0, 1]
    alone = tmp_path / "alone"
    basic = [a for a in robot if not a.startswith("hydra")]
    status, _ = run_main("mdn-train", [*basic, "seed=1", f"hydra.run.dir={alone}"], tmp_path, monkeypatch, capsys)
    assert status == 0
    single = json.loads((alone / "metrics.json").read_text())["metrics"]
    assert stacked[1]["metrics"]["test/nll"] == pytest.approx(single["test/nll"], abs=1e-3)
    assert stacked[1]["metrics"]["train/steps"] == single["train/steps"]
    assert stacked[0]["metrics"]["test/nll"] != pytest.approx(single["test/nll"], abs=1e-3)  # seeds differ


def test_reused_sweep_configs_equal_hydras_own_composition(tmp_path, monkeypatch, capsys):
    """The launcher composes a job in full only where its overrides change more than plain values;
    every config it builds from an earlier one equals Hydra's own composition of that job."""
    import sys

    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    Plugins.instance()  # Hydra's plugin scan executes the launcher's module anew: patch that one
    stacked_launcher = sys.modules["hydra_plugins.mdnlab_launcher.stacked_launcher"]
    built, reuse = [], stacked_launcher._SweepConfigs._reuse

    def checked(self, composed, parsed):
        config = reuse(self, composed, parsed)
        overrides = [o.input_line for o in parsed]
        expected = self.loader.load_sweep_config(self.master, overrides)
        assert OmegaConf.to_container(config) == OmegaConf.to_container(expected)
        built.append(overrides)
        return config

    monkeypatch.setattr(stacked_launcher._SweepConfigs, "_reuse", checked)
    args = [
        "-m",
        *STACK,
        "hydra.launcher.compile=false",  # configs, not steps, are checked here: compiled stacks are the test above's
        "trainer.max_epochs=1",
        "seed=0,1",
        "model.optimizer.lr=1e-3,3e-3",
        "logger=tensorboard,csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    status, err = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert len(built) == 6  # of 8 jobs: the first of each logger composed in full
