"""Nothing lost, nothing run: reruns, resumes, atomic checkpoints, unsafe files, one-line errors."""

import errno
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, FAST, REPO, compose_train, run_cli, run_main, run_record

from mdnlab.config import validate
from mdnlab.errors import ConfigError

QUICK = [*FAST, "figures=false"]


def hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "[INFO]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---- results silently overwritten or wrong ------------------------------------------------------


def test_rerun_with_other_settings_into_a_run_dir_is_refused(tmp_path, monkeypatch, capsys):
    run = tmp_path / "fixed"
    assert run_main("mdn-train", [*QUICK, f"hydra.run.dir={run}"], tmp_path, monkeypatch, capsys)[0] == 0
    before = hashes(run)
    status, err = run_main(
        "mdn-train",
        [*QUICK, f"hydra.run.dir={run}", "model.optimizer.lr=0.05", "seed=9"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    line = one_error_line(err)
    assert status == 2 and line.startswith("error: seed=9 is not allowed: 0") and "another config" in line
    after = hashes(run)
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == {
        k: v for k, v in before.items() if not k.endswith(".log")
    }


def test_training_from_another_runs_weights_makes_a_new_run_and_leaves_the_other(tmp_path, monkeypatch, capsys):
    assert run_main("mdn-train", QUICK, tmp_path, monkeypatch, capsys)[0] == 0
    first = Path(run_record(tmp_path)["run_dir"])
    before = hashes(first)
    last = first / "checkpoints" / "last.ckpt"
    status, err = run_main(
        "mdn-train",
        [*QUICK, "trainer.max_epochs=5", "data.target_noise=0.02", f"ckpt_path={last}"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 0, err
    second = Path(run_record(tmp_path)["run_dir"])
    assert second != first and (second / "metrics.json").is_file()
    assert hashes(first) == before
    assert json.loads((second / "metrics.json").read_text())["metrics"]["train/steps"] == 100


def test_a_table_checkpoint_knows_its_file(tmp_path, monkeypatch, capsys):
    data = tmp_path / "work"
    data.mkdir()
    rows = [f"{i / 50:.4f},{(i % 7) / 3:.4f}" for i in range(120)]
    (data / "rel.csv").write_text("a,b\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(data)
    args = [
        "data=table",
        "data.path=rel.csv",
        "data.inputs=[a]",
        "data.targets=[b]",
        *(a for a in QUICK if not a.startswith("data.n_test")),
    ]
    assert run_main("mdn-train", args, tmp_path, monkeypatch, capsys)[0] == 0
    ckpt = run_record(tmp_path)["tested_checkpoint"]
    saved = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]
    assert saved["path"] == str(data / "rel.csv") and len(saved["sha256"]) == 64
    (data / "rel.csv").write_text("a,b\n" + "\n".join(reversed(rows)) + "\n")  # same rows, reordered
    status, err = run_main("mdn-eval", [f"ckpt_path={ckpt}"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "changed" in one_error_line(err)
    (data / "rel.csv").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "rel.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    monkeypatch.chdir(other)
    status, err = run_main("mdn-eval", [f"ckpt_path={ckpt}"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "data.path" in one_error_line(err)
    moved = tmp_path / "moved.csv"
    moved.write_text("a,b\n" + "\n".join(rows) + "\n")  # the very file, elsewhere
    status, err = run_main("mdn-eval", [f"ckpt_path={ckpt}", f"data.path={moved}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err


@pytest.mark.slow
def test_sigterm_finishes_the_epoch_and_exits_non_zero_with_a_valid_last_checkpoint(tmp_path):
    env = {**os.environ, "MDNLAB_LOG_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [str(BIN / "mdn-train"), "trainer.max_epochs=200", "data.passes_per_epoch=100", *QUICK[2:]],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode not in (0, None)
    assert "SIGTERM" in one_error_line(err) and "resume=" in err
    (run,) = tmp_path.glob("train/runs/*")
    assert not (run / "metrics.json").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] % 100 == 0


def test_a_finished_run_moved_elsewhere_is_not_rescored(tmp_path, monkeypatch, capsys):
    import shutil

    assert run_main("mdn-train", QUICK, tmp_path, monkeypatch, capsys)[0] == 0
    moved = tmp_path / "moved_run"
    shutil.copytree(run_record(tmp_path)["run_dir"], moved)
    before = hashes(moved)
    status, err = run_main("mdn-train", [f"resume={moved}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    after = {k: v for k, v in hashes(moved).items() if not k.startswith(".hydra/resume-")}  # Hydra's record
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == {
        k: v for k, v in before.items() if not k.endswith(".log")
    }


# ---- data loss ------------------------------------------------------------------------------------

# One interpreter pays the imports; each round forks a child that saves the checkpoint once,
# says so with its pid, and saves it again and again until it is killed.
SAVE_LOOP = """
import os, sys, torch
from mdnlab.checkpoint import SafeCheckpointIO
torch.set_num_threads(1)  # no thread pool for the children to inherit
io = SafeCheckpointIO()
state = {"mdnlab": {"model_class": "mdnlab.models.MixtureDensityNetwork"},
         "state_dict": {"w": torch.randn(2_000_000)}, "hyper_parameters": {}}
while sys.stdin.readline():
    child = os.fork()
    if child == 0:
        io.save_checkpoint(state, sys.argv[1])
        print(os.getpid(), "ready", flush=True)
        while True:
            io.save_checkpoint(state, sys.argv[1])
    os.waitpid(child, 0)
    print("gone", flush=True)
"""


def test_a_kill_while_saving_leaves_a_loadable_checkpoint_and_nothing_in_tmp(tmp_path):
    from mdnlab.checkpoint import read
    from mdnlab.io import remove_temporaries

    target, staging = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "tmpdir"
    staging.mkdir()
    env = {**os.environ, "TMPDIR": str(staging)}
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVE_LOOP, str(target)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for delay in (0.05, 0.13, 0.31):
            saver.stdin.write("save\n")
            saver.stdin.flush()
            pid, ready = saver.stdout.readline().split()
            assert ready == "ready"
            time.sleep(delay)
            os.kill(int(pid), signal.SIGKILL)  # a process killed while it saves
            assert saver.stdout.readline().strip() == "gone"
            assert read(target)["state_dict"]["w"].numel() == 2_000_000
            assert not list(staging.iterdir())
            remove_temporaries(target.parent)
            assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    finally:
        saver.stdin.close()
        saver.wait(timeout=60)


def test_a_full_disk_while_drawing_keeps_the_metrics_and_says_so(tmp_path, monkeypatch, capsys):
    from mdnlab.cli.entry import run_entry_point
    from mdnlab.eval import figures
    from mdnlab.training.single import train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "figures" / "data.png"))

    monkeypatch.setattr(figures, "render_all", full)
    with pytest.raises(SystemExit) as stop:
        run_entry_point(train, compose_train(tmp_path, FAST))
    assert stop.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "data.png" in line
    assert "test/nll" in json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]


# ---- security -----------------------------------------------------------------------------------


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_last_checkpoint_runs_no_code_whatever_the_environment(tmp_path, monkeypatch, capsys):
    run, marker = tmp_path / "crafted", tmp_path / "pwned"
    (run / "checkpoints").mkdir(parents=True)
    with open(run / "checkpoints" / "last.ckpt", "wb") as handle:
        pickle.dump({"mdnlab": Payload(str(marker))}, handle)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    status, err = run_main("mdn-train", [*QUICK, f"hydra.run.dir={run}"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "last.ckpt" in one_error_line(err)
    assert not marker.exists()
    status, err = run_main(
        "mdn-train", [*QUICK, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path, monkeypatch, capsys
    )
    assert status == 2 and "readable checkpoint" in one_error_line(err)
    assert not marker.exists()


def test_resume_replays_only_our_own_keys(tmp_path, monkeypatch, capsys):
    run, marker = tmp_path / "crafted", tmp_path / "created_by_replay"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- +callbacks.evil._target_=builtins.open\n- +callbacks.evil.file={marker}\n- +callbacks.evil.mode=w\n"
    )
    status, err = run_main("mdn-train", [f"resume={run}"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "resume=" in one_error_line(err)
    assert not marker.exists()


# ---- one line, exit 2, nothing written ------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("model=mse", "model.n_gaussians"),
        ("+model.foo=1", "model.foo"),
        ("torch_threads=0", "torch_threads"),
        ("torch_threads=-2", "torch_threads"),
        ("torch_threads=abc", "torch_threads"),
        ("seed=4294967296", "seed"),
        ("model.n_gaussians=100000", "model.n_gaussians"),
        ("data.n_samples=1000000000", "data.n_samples"),
    ],
)
def test_more_bad_values_name_their_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(tmp_path, [override]))
    assert error.value.key == key


@pytest.mark.parametrize(
    "override, key", [("seed=abc", "seed"), ("seed=-1", "seed"), ("n_samples=1000000000", "n_samples")]
)
def test_bad_sampling_values_name_their_key(tmp_path, override, key, monkeypatch, capsys):
    assert run_main("mdn-train", QUICK, tmp_path, monkeypatch, capsys)[0] == 0
    last = Path(run_record(tmp_path)["run_dir"]) / "checkpoints" / "last.ckpt"
    status, err = run_main("mdn-sample", [f"ckpt_path={last}", "inputs=[0]", override], tmp_path, monkeypatch, capsys)
    assert status == 2 and one_error_line(err).startswith(f"error: {key}=")
    assert not list((tmp_path / "sample").rglob("*.npz"))


def test_checkpoints_that_do_not_fit_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    assert run_main("mdn-train", QUICK, tmp_path, monkeypatch, capsys)[0] == 0
    first = Path(run_record(tmp_path)["run_dir"])
    before = hashes(first)
    last = first / "checkpoints" / "last.ckpt"
    for args, key in ((["model.n_gaussians=3"], "ckpt_path"), (["trainer.max_epochs=2"], "trainer.max_epochs")):
        status, err = run_main("mdn-train", [*QUICK, *args, f"ckpt_path={last}"], tmp_path, monkeypatch, capsys)
        assert status == 2 and one_error_line(err).startswith(f"error: {key}=")
    assert hashes(first) == before
    assert len(list((tmp_path / "train" / "runs").iterdir())) == 1
    for change in ({"hyper_parameters": {"activation": "nope"}}, {"state_dict": {}}):
        crafted = torch.load(last, weights_only=True)
        for part, value in change.items():
            crafted[part] = {**crafted[part], **value} if value else {}
        torch.save(crafted, tmp_path / "crafted.ckpt")
        status, err = run_main("mdn-eval", [f"ckpt_path={tmp_path / 'crafted.ckpt'}"], tmp_path, monkeypatch, capsys)
        assert status == 2 and one_error_line(err).startswith("error: ckpt_path=")
    assert not (tmp_path / "eval").exists()  # a failed mdn-eval leaves no empty folders
    status, err = run_main("mdn-eval", [f"ckpt_path={last}", "split=val"], tmp_path, monkeypatch, capsys)
    assert status == 2 and one_error_line(err).startswith("error: split='val' is not allowed: one of train, test")


@pytest.mark.slow
def test_a_read_only_log_folder_and_a_failed_sweep_job_are_one_line(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        blocked = tmp_path / "not_a_folder"
        blocked.write_text("a file where the log folder should be")
    else:
        blocked = tmp_path / "read_only"
        blocked.mkdir(mode=0o500)
    out = run_cli(["mdn-train", *QUICK], blocked, check=False)
    assert out.returncode == 2 and "MDNLAB_LOG_DIR" in one_error_line(out.stderr)
    out = run_cli(["mdn-train", *QUICK, "paths.log_dir=/proc/no_such_folder"], tmp_path, check=False)
    assert out.returncode == 2 and "paths.log_dir" in one_error_line(out.stderr)
    status, err = run_main("mdn-train", ["-m", "model.n_gaussians=0,2", *QUICK], tmp_path, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status != 0 and "Traceback" not in err  # Hydra frames the line, no more
    assert len(errors) == 1 and "model.n_gaussians=0" in errors[0]


# ---- messages that mislead ----------------------------------------------------------------------


def test_messages_say_what_is_there(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="that is a directory"):
        validate(compose_train(tmp_path, [f"ckpt_path={tmp_path}"]))
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="a regular file"):
        validate(compose_train(tmp_path, ["data=table", f"data.path={fifo}", "data.inputs=[a]", "data.targets=[b]"]))
    foreign = torch.load(_any_checkpoint(tmp_path, monkeypatch, capsys), weights_only=True)
    foreign["mdnlab"]["model_class"] = "os.system"
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(ConfigError) as error:
        validate(compose_train(tmp_path / "v", [f"ckpt_path={tmp_path / 'foreign.ckpt'}"]))
    assert "foreign.ckpt" in str(error.value).split(" is not allowed")[0] and "os.system" in str(error.value)
    from mdnlab.cli import report

    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path / "train" / "runs")])
    assert stop.value.code == 2 and "multirun" in capsys.readouterr().err


def _any_checkpoint(tmp_path, monkeypatch, capsys) -> Path:
    assert run_main("mdn-train", QUICK, tmp_path, monkeypatch, capsys)[0] == 0
    return Path(run_record(tmp_path)["run_dir"]) / "checkpoints" / "last.ckpt"


def test_a_divergence_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch, capsys):
    scheduler = "model.optimizer.lr=1e30"
    status, err = run_main("mdn-train", [*QUICK, scheduler], tmp_path, monkeypatch, capsys)
    line = one_error_line(err)
    assert status == 1 and "non-finite" in line and "no checkpoint" in line
