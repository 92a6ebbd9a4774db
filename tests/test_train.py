"""End to end: training through Hydra, the run directory, mdn-eval, and a multirun."""

import contextlib
import json
import math
import subprocess
from pathlib import Path

import pytest
from conftest import FAST, VALIDATED, compose_train, run_cli, run_main, run_record

from mdnlab.training.single import train


@pytest.mark.parametrize("experiment", ["mdn_inverted", "seed_mse_forward"])
def test_short_training_run_writes_the_run_directory(tmp_path, experiment):
    validated = VALIDATED if experiment == "mdn_inverted" else []
    # the MDN's figures at this very setting are tests/test_outputs.py's; the MSE model's drawn here
    figures = ["figures=false"] if experiment == "mdn_inverted" else []
    cfg = compose_train(tmp_path, [f"experiment={experiment}", *FAST, *validated, *figures])
    metrics = train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(metrics, nan_ok=True)
    assert saved["experiment"] == experiment
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert list(run.glob("events.out.tfevents.*"))
    assert metrics["train/steps"] == 60
    import torch

    # last.ckpt is the state training ended in, whether or not the last validation improved
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 60
    if experiment == "mdn_inverted":
        assert 1.3 < metrics["test/nll"] < 3.5  # learning, in original units
        assert metrics["test/oracle_nll"] == pytest.approx(1.33, abs=0.06)
        assert metrics["test/excess_nll"] == pytest.approx(metrics["test/nll"] - metrics["test/oracle_nll"])
        assert "val/best_nll" in metrics
    else:
        assert "val/best_mse" in metrics and metrics["test/mse"] < 40
        assert metrics["test/mse_floor"] == pytest.approx(1.0, abs=0.01)
        # scored as N(ŷ, s²) with s the train residual RMS stored in the checkpoint it tested
        import math

        import torch

        tested = json.loads((run / "run.json").read_text())["tested_checkpoint"]
        s = torch.load(tested, weights_only=True)["state_dict"]["residual_std"].item()
        assert s != 1.0 and s > 0
        gaussian_nll = 0.5 * math.log(2 * math.pi) + math.log(s) + metrics["test/mse"] / (2 * s * s)
        assert metrics["test/nll"] == pytest.approx(gaussian_nll, rel=1e-6)


def test_seed_zero_is_a_seed(tmp_path):
    a = train(compose_train(tmp_path / "a", ["seed=0", *FAST, "figures=false"]))
    b = train(compose_train(tmp_path / "b", ["seed=0", *FAST, "figures=false"]))
    c = train(compose_train(tmp_path / "c", ["seed=1", *FAST, "figures=false"]))
    assert a["test/nll"] == b["test/nll"]
    assert a["test/nll"] != c["test/nll"]


def test_mdn_train_then_mdn_eval_reproduces_the_test_metric(tmp_path, monkeypatch, capsys):
    # (this recipe's figures are test_default_recipe_trains_on_every_point_without_validation's)
    assert run_main("mdn-train", [*FAST, "figures=false"], tmp_path, monkeypatch, capsys)[0] == 0
    record = run_record(tmp_path)
    train_metrics = json.loads((Path(record["run_dir"]) / "metrics.json").read_text())
    assert record["metrics"] == train_metrics["metrics"]
    assert run_main("mdn-eval", [f"ckpt_path={record['tested_checkpoint']}"], tmp_path, monkeypatch, capsys)[0] == 0
    eval_dir = Path(run_record(tmp_path, "eval")["run_dir"])
    eval_metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    for name, value in eval_metrics.items():
        assert value == pytest.approx(train_metrics["metrics"][name], rel=1e-9, abs=1e-12), name


@pytest.mark.slow
def test_multirun_two_jobs(tmp_path, monkeypatch, capsys):
    args = ["-m", "model.n_gaussians=1,3", *FAST, "figures=false"]
    assert run_main("mdn-train", args, tmp_path, monkeypatch, capsys)[0] == 0
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    # each job's directory (and so its TensorBoard run) is named by its overrides, with no
    # '=' or ',' that a later override would have to quote
    assert [j.name.split("__")[0] for j in jobs] == [
        "0_callbacks.rich_progress_bar-null",
        "1_callbacks.rich_progress_bar-null",
    ]
    assert "model.n_gaussians-1" in jobs[0].name and "model.n_gaussians-3" in jobs[1].name
    assert not any(c in j.name for j in jobs for c in "=,")
    nlls = [json.loads((j / "metrics.json").read_text())["metrics"]["test/nll"] for j in jobs]
    assert all(1.0 < v < 10 for v in nlls) and nlls[0] != nlls[1]
    assert all((j / "run.json").is_file() for j in jobs)
    # TensorBoard's own HPARAMS data API: the swept key is a column, marked as the one that differs
    with tensorboard(sweeps[0]) as ask:
        experiment = ask("hparams/experiment", {"experimentName": ""})
        columns = {h["name"]: h for h in experiment["hparamInfos"]}
        assert columns["model.n_gaussians"].get("differs") is True
        assert not columns["model.hidden_size"].get("differs")
        assert "trainer.default_root_dir" not in columns and not any("_target_" in c for c in columns)
        assert next(iter(columns)) == "model.n_gaussians"  # differing columns first
        groups = ask(
            "hparams/session_groups",
            {
                "experimentName": "",
                "startIndex": 0,
                "sliceSize": 10,
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            },
        )
        values = sorted(g["hparams"]["model.n_gaussians"] for g in groups["sessionGroups"])
        assert values == [1, 3] and all(g["metricValues"] for g in groups["sessionGroups"])


@contextlib.contextmanager
def tensorboard(logdir):
    """A TensorBoard server on logdir; yields ask(route, request) for its plugin data API."""
    import time
    import urllib.request

    from conftest import BIN

    server = subprocess.Popen(
        [
            str(BIN / "tensorboard"),
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--load_fast",
            "false",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            assert line, "tensorboard did not start"
            url = next((w for w in line.split() if w.startswith("http://")), None)

        def ask(route, request):
            deadline = time.time() + 30
            while True:  # the first load of the event files happens in the background
                post = urllib.request.Request(
                    f"{url.rstrip('/')}/data/plugin/{route}",
                    json.dumps(request).encode(),
                    headers={"X-XSRF-Protected": "1", "Content-Type": "application/json"},
                )
                with urllib.request.urlopen(post, timeout=10) as r:
                    answer = json.loads(r.read())
                if answer.get("hparamInfos") or answer.get("sessionGroups") or time.time() > deadline:
                    return answer
                time.sleep(0.5)

        yield ask
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_fast_path_and_hooked_path_train_identically(tmp_path):
    """With no listener the step skips Lightning's per-step hooks; a listening callback gets
    every hook, and both paths take the same steps to the same weights."""
    import torch
    from lightning.pytorch import Callback

    from mdnlab.training.single import build

    class Listener(Callback):
        calls = 0

        def on_after_backward(self, trainer, pl_module):
            Listener.calls += 1

    weights = []
    for name, listen in (("fast", False), ("hooked", True)):
        cfg = compose_train(tmp_path / name, [*FAST, "logger=none", "figures=false"])
        datamodule, model, trainer = build(cfg)
        if listen:
            trainer.callbacks.append(Listener())
        trainer.fit(model, datamodule=datamodule)
        assert trainer.global_step == 60
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert Listener.calls == 60
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_max_steps_stops_inside_an_epoch(tmp_path):
    cfg = compose_train(tmp_path, [*FAST, "figures=false", "+trainer.max_steps=45"])
    assert train(cfg)["train/steps"] == 45


def test_default_recipe_trains_on_every_point_without_validation(tmp_path):
    cfg = compose_train(tmp_path, FAST)
    assert (cfg.data.train_fraction, cfg.data.val_fraction, cfg.test_checkpoint) == (1.0, 0.0, "auto")
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list((run / "checkpoints").glob("best-*.ckpt"))  # nothing to pick a best on
    assert metrics["train/steps"] == 60  # no early stopping either
    assert math.isnan(metrics["val/best_nll"])
    tested = json.loads((run / "run.json").read_text())["tested_checkpoint"]
    assert tested.endswith("last.ckpt")
    import torch

    train_points = torch.load(tested, weights_only=True)["datamodule_hyper_parameters"]
    assert train_points["train_fraction"] == 1.0


@pytest.mark.slow
def test_best_checkpoint_without_validation_is_refused(tmp_path):
    out = run_cli(["mdn-train", "test_checkpoint=best", *FAST], tmp_path, check=False)
    assert out.returncode == 2
    assert "test_checkpoint='best' is not allowed: last or auto when data.val_fraction=0" in out.stderr
