"""What a researcher sees: the step progress bar, debug configs, tags, the config tree, other
loggers, mdn-sample's plot."""

import json
from pathlib import Path

import pytest
from conftest import FAST, compose_train, run_main, run_record

from mdnlab.config import validate
from mdnlab.training.single import build, train

QUIET = [a for a in FAST if "progress" not in a]  # FAST without switching the bar off


def test_the_progress_bar_counts_steps_inside_an_epoch(tmp_path, monkeypatch):
    from mdnlab.training.progress import StepProgressBar

    seen = []
    original = StepProgressBar.on_steps

    def record(self, trainer, module, step, loss):
        seen.append((trainer.current_epoch, step, float(loss.detach())))
        original(self, trainer, module, step, loss)

    monkeypatch.setattr(StepProgressBar, "on_steps", record)
    cfg = compose_train(tmp_path, [*QUIET, "figures=false", "callbacks.rich_progress_bar.refresh_seconds=0"])
    datamodule, model, trainer = build(cfg)
    assert isinstance(trainer.progress_bar_callback, StepProgressBar)
    trainer.fit(model, datamodule=datamodule)
    first_epoch = [step for epoch, step, _ in seen if epoch == 0]
    assert first_epoch == list(range(1, 21))  # every step of the epoch, not one jump at its end
    assert seen[-1][1] == 60 and all(v == v for _, _, v in seen)


@pytest.mark.parametrize("option", ["default", "fdr", "overfit", "profiler", "limit"])
def test_debug_configs_compose_and_validate(tmp_path, option):
    cfg = compose_train(tmp_path, [f"debug={option}"])
    validate(cfg)
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"


def test_fast_dev_run_runs_the_whole_path(tmp_path, monkeypatch, capsys):
    status, err = run_main(
        "mdn-train",
        ["debug=fdr", "callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 0, err
    record = run_record(tmp_path, "debug")
    assert record["metrics"]["train/steps"] == 1 and "test/nll" in record["metrics"]
    assert (Path(record["run_dir"]) / "config_tree.txt").read_text().count("n_gaussians: 5") == 1


def test_tags_are_recorded(tmp_path):
    train(compose_train(tmp_path, [*FAST, "figures=false", "tags=[baseline,ablation]"]))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["tags"] == ["baseline", "ablation"]
    assert "tags: baseline,ablation" in (tmp_path / "run" / "hparams.yaml").read_text()


def test_mlflow_logger_writes_to_a_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the config's hydra.job.env_set does
    train(compose_train(tmp_path, [*FAST, "figures=false", "logger=many_loggers"]))
    params = list((tmp_path / "mlflow").rglob("params/model.n_gaussians"))
    assert params and params[0].read_text().strip() == "5"
    assert list((tmp_path / "mlflow").rglob("metrics/test/nll"))


def test_mdn_sample_draws_the_predictive_at_the_inputs(tmp_path, monkeypatch, capsys):
    train(compose_train(tmp_path, [*FAST, "figures=false"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    status, err = run_main(
        "mdn-sample",
        [f"ckpt_path={ckpt}", "inputs=[-5,5]", "plot=true", "n_samples=200"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 0, err
    png = [f for f in run_record(tmp_path, "sample")["files"] if f.endswith("predictive.png")]
    assert png and Path(png[0]).read_bytes()[:4] == b"\x89PNG"
