"""Bad input, crash and resume, divergence, reproducibility, nothing lost."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, FAST, REPO, compose_train, run_cli, run_main, run_record

from mdnlab.config import validate
from mdnlab.errors import ConfigError
from mdnlab.training.single import train

BAD_INPUTS = [
    ("model.n_gaussians=0", "model.n_gaussians"),
    ("model.hidden_size=0", "model.hidden_size"),
    ("data.noise_std=-1", "data.noise_std"),
    ("data.noise_std=nan", "data.noise_std"),
    ("data.noise_std=inf", "data.noise_std"),
    ("data.x_high=-10", "data.x_high"),  # empty range
    ("data.x_high=-20", "data.x_high"),  # reversed range
    ("data.n_samples=1", "data.n_samples"),  # too small for any split
    ("data.train_fraction=0", "data.train_fraction"),
    ("data.train_fraction=1.5", "data.train_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
    ("data.val_fraction=0.5", "data.val_fraction"),  # 0.9 + 0.5 > 1
    ("data.direction=sideways", "data.direction"),
    ("model.activation=swishy", "model.activation"),
    ("model.sigma_transform=square", "model.sigma_transform"),
    ("model.optimizer.lr=0", "model.optimizer.lr"),
    ("model.optimizer.lr=-1e-3", "model.optimizer.lr"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("trainer=gpu", "trainer.accelerator"),
    ("trainer.devices=64", "trainer.devices"),
    ("model.n_gaussians=abc", "model.n_gaussians"),
    ("data.noise_std=loud", "data.noise_std"),
    ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
    ("seed=-1", "seed"),
]


@pytest.mark.parametrize("override,key", BAD_INPUTS)
def test_every_bad_value_names_its_key(tmp_path, override, key):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert error.value.key == key
    assert str(error.value).startswith(f"{key}=") and "\n" not in str(error.value)


def test_unreadable_and_foreign_checkpoints_are_refused(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    import torch

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path, words in ((garbage, "readable"), (foreign, "written by mdnlab")):
        cfg = compose_train(tmp_path, [f"ckpt_path={path}"])
        with pytest.raises(ConfigError, match=words):
            validate(cfg)


def test_bad_input_on_the_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "keep.txt").write_text("already here")
    for override, key in [
        ("model.n_gaussians=0", "model.n_gaussians"),
        ("trainer=gpu", "trainer.accelerator"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path"),
    ]:
        status, err = run_main("mdn-train", [override], tmp_path, monkeypatch, capsys)
        assert status == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no run dir, no empty folders
    assert (tmp_path / "keep.txt").read_text() == "already here"
    status, err = run_main("mdn-eval", [], tmp_path, monkeypatch, capsys)  # a required key left out
    assert status == 2 and err.strip().startswith("error: ckpt_path=")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_unknown_config_option_gets_hydras_clear_message(tmp_path):
    out = run_cli(["mdn-train", "model=transformer"], tmp_path, check=False)
    assert out.returncode != 0
    assert "model" in out.stderr and "transformer" in out.stderr and "Available options" in out.stderr


SLOW_RUN = [
    "trainer.max_epochs=20",
    "data.passes_per_epoch=100",
    "data.n_test=500",
    "callbacks.early_stopping=null",
    "callbacks.rich_progress_bar=null",
    "trainer.enable_progress_bar=false",
    "figures=false",
]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def _run_dir(log_dir: Path) -> Path:
    return Path(run_record(log_dir)["run_dir"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The metrics of SLOW_RUN trained without a kill (shared by both resume forms), in this
    process: the same metrics, bit for bit, as mdn-train's, without another start-up."""
    log_dir = tmp_path_factory.mktemp("ref")
    train(compose_train(log_dir, SLOW_RUN))
    return _metrics(log_dir / "run")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["resume", "ckpt_path"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, form, uninterrupted, monkeypatch, capsys):
    env = {**os.environ, "MDNLAB_LOG_DIR": str(tmp_path / "crash"), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [str(BIN / "mdn-train"), *SLOW_RUN], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    runs = tmp_path / "crash" / "train" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few epochs are checkpointed
        lasts = list(runs.glob("*/checkpoints/last.ckpt")) if runs.exists() else []
        if (
            lasts
            and len(list(lasts[0].parent.parent.glob("events.out.*")))
            and lasts[0].stat().st_size
            and time.time() - lasts[0].stat().st_mtime < 5
        ):
            import torch

            if torch.load(lasts[0], weights_only=True)["epoch"] >= 3:
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    crashed = next(runs.iterdir())
    assert not (crashed / "metrics.json").exists()  # it really died mid-training
    target = f"resume={crashed}" if form == "resume" else f"ckpt_path={crashed}/checkpoints/last.ckpt"
    args = [target] if form == "resume" else [*SLOW_RUN, target]
    # the rerun in this process: it has only what the killed process left on disk
    status, err = run_main("mdn-train", args, tmp_path / "crash", monkeypatch, capsys)
    assert status == 0, err
    resumed = _run_dir(tmp_path / "crash")
    assert resumed == crashed  # continued in its own directory
    assert _metrics(resumed) == uninterrupted


@pytest.mark.slow
def test_divergence_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    scheduler = "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:2,gamma:1000000.0}"
    status, err = run_main(
        "mdn-train",
        [
            scheduler,
            "trainer.max_epochs=20",
            "data.passes_per_epoch=20",
            "callbacks.early_stopping=null",
            "callbacks.rich_progress_bar=null",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 1
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line and "non-finite" in line[0] and "epoch" in line[0] and "global step" in line[0]
    assert "Traceback" not in err
    import torch

    run = next((tmp_path / "train" / "runs").iterdir())
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_same_seed_identical_metrics_json_different_seed_differs(tmp_path):
    files = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = compose_train(tmp_path / name, [f"seed={seed}", *FAST, "figures=false"])
        train(cfg)
        files.append((tmp_path / name / "run" / "metrics.json").read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


@pytest.mark.slow
def test_a_failing_sweep_job_leaves_the_others_intact(tmp_path, monkeypatch, capsys):
    status, _ = run_main(
        "mdn-train", ["-m", "model.n_gaussians=2,0,3", *FAST, "figures=false"], tmp_path, monkeypatch, capsys
    )
    sweep = next((tmp_path / "train" / "multiruns").iterdir())
    jobs = {p.name.split("_")[0]: p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()}
    assert (jobs["0"] / "metrics.json").is_file()
    assert "model.n_gaussians=0" in (jobs["1"] / "error.txt").read_text()
    assert (jobs["2"] / "metrics.json").is_file()
    assert (sweep / "multirun.yaml").is_file()
    assert status != 0


def test_an_allocation_that_fails_is_one_line_naming_the_sizes(tmp_path, capsys):
    from mdnlab.cli.entry import run_entry_point

    cfg = compose_train(tmp_path, ["model.hidden_size=100000000"])
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"kept")

    def task(cfg):
        return torch.empty(10**13)  # 40 TB: the allocator refuses, as for a far too wide network

    with pytest.raises(SystemExit) as exit:
        run_entry_point(task, cfg)
    assert exit.value.code == 1
    line = capsys.readouterr().err
    assert line.startswith("error: out of CPU memory with model.hidden_size=100000000") and line.count("\n") == 1
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == b"kept"
