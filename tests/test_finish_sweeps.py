"""Finishing a killed sweep by running the same command again, and seeds reported as mean ± s.e."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, FAST, REPO, compose_train, run_cli, run_main

from mdnlab.errors import ConfigError
from mdnlab.training.single import train

QUICK = [*FAST, "figures=false"]


def test_a_finished_run_directory_is_skipped_and_another_config_refused(tmp_path):
    first = train(compose_train(tmp_path, QUICK))
    run = tmp_path / "run"
    before = {
        p.name: p.read_bytes() for p in [run / "metrics.json", run / "run.json", *(run / "checkpoints").iterdir()]
    }
    again = train(compose_train(tmp_path, QUICK))  # the same config: nothing runs, nothing is written
    assert again == pytest.approx(first, nan_ok=True)
    assert {
        name: (run / "checkpoints" / name if name.endswith(".ckpt") else run / name).read_bytes() for name in before
    } == before
    with pytest.raises(ConfigError) as refused:
        train(compose_train(tmp_path, [*QUICK, "model.n_gaussians=3"]))
    assert refused.value.key == "model.n_gaussians" and "run.json" in str(refused.value)
    assert (run / "metrics.json").read_bytes() == before["metrics.json"]
    assert json.loads((run / "run.json").read_text())["starts"] == 1


SWEEP = [
    "-m",
    "model.n_gaussians=2",
    "seed=0,1,2",
    "trainer.max_epochs=10",
    "data.passes_per_epoch=100",
    "data.n_test=500",
    "figures=false",
    "callbacks.rich_progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def jobs_of(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


def sweep_until_killed(sweep: Path, env: dict) -> None:
    """Start the sweep and SIGKILL it once one job has finished and another is part-way."""
    process = subprocess.Popen(
        [str(BIN / "mdn-train"), *SWEEP, f"hydra.sweep.dir={sweep}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        jobs = jobs_of(sweep).values() if sweep.is_dir() else []
        done = [j for j in jobs if (j / "metrics.json").is_file()]
        cut = [j for j in jobs if (j / "checkpoints" / "last.ckpt").is_file() and not (j / "metrics.json").is_file()]
        if done and cut:
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_killed_sweep_rerun_finishes_with_identical_results_and_no_job_twice(tmp_path, monkeypatch, capsys):
    env = {**os.environ, "MDNLAB_LOG_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    reference = tmp_path / "reference"  # uninterrupted, in this process (the same bits as the command's)
    assert run_main("mdn-train", [*SWEEP, f"hydra.sweep.dir={reference}"], tmp_path, monkeypatch, capsys)[0] == 0
    killed = tmp_path / "killed"
    sweep_until_killed(killed, env)
    finished_before = {
        name: (job / "metrics.json").stat().st_mtime_ns
        for name, job in jobs_of(killed).items()
        if (job / "metrics.json").is_file()
    }
    assert 0 < len(finished_before) < 3
    # the same command again, in this process: it has only what the killed process left on disk
    assert run_main("mdn-train", [*SWEEP, f"hydra.sweep.dir={killed}"], tmp_path, monkeypatch, capsys)[0] == 0
    jobs, expected = jobs_of(killed), jobs_of(reference)
    assert sorted(jobs) == sorted(expected)  # no job lost, no duplicate directory
    for name, job in jobs.items():
        assert (job / "metrics.json").read_bytes() == (expected[name] / "metrics.json").read_bytes(), name
    for name, mtime in finished_before.items():  # finished jobs were not run again
        assert (jobs[name] / "metrics.json").stat().st_mtime_ns == mtime
        assert json.loads((jobs[name] / "run.json").read_text())["starts"] == 1
    # once more with the joblib launcher: every job is already finished, nothing changes
    snapshot = {name: (job / "metrics.json").stat().st_mtime_ns for name, job in jobs.items()}
    run_cli(["mdn-train", *SWEEP, f"hydra.sweep.dir={killed}", "hydra/launcher=parallel"], tmp_path)
    assert {name: (job / "metrics.json").stat().st_mtime_ns for name, job in jobs.items()} == snapshot
    # and the report of the seeds is the uninterrupted sweep's
    from mdnlab.runs.sweep import collect, group, groups_csv

    reports = [groups_csv(group(collect(sweep))[0]) for sweep in (killed, reference)]
    assert reports[0] == reports[1]
    (row,) = csv.DictReader(reports[0].splitlines())
    assert "model.n_gaussians=2" in row["overrides"] and "seed" not in row["overrides"]
    assert (row["n"], row["not_completed"]) == ("3", "0")


def test_report_groups_seeds_with_mean_and_standard_error(tmp_path):
    """Four finished jobs written by hand: two settings × two seeds."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    values = {("2", "0"): (1.5, 1.6), ("2", "1"): (1.7, 1.8), ("3", "0"): (1.4, 1.45), ("3", "1"): (1.4, 1.55)}
    for number, ((k, seed), (val, test)) in enumerate(values.items()):
        job = sweep / f"{number}_model.n_gaussians-{k}__seed-{seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.n_gaussians={k}\n- seed={seed}\n")
        (job / "metrics.json").write_text(
            json.dumps({"metrics": {"val/best_nll": val, "test/nll": test, "train/epochs": 3.0}})
        )
    run_cli(["mdn-report", str(sweep)], tmp_path)
    with open(sweep / "groups.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["setting"] for r in rows] == ["model.n_gaussians=3", "model.n_gaussians=2"]  # ranked by val
    best = rows[0]
    assert int(best["n"]) == 2 and float(best["val/best_nll_mean"]) == pytest.approx(1.4)
    assert float(best["test/nll_mean"]) == pytest.approx(1.5)
    assert float(best["test/nll_se"]) == pytest.approx(0.05)  # stdev(1.45, 1.55) / sqrt(2)
    assert best["test/nll_values"] == "1.4500 1.5500"
    report = (sweep / "report.md").read_text()
    assert "ranked by val/best_nll" in report and "1.5000 ± 0.0500" in report
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG"
    with open(sweep / "report.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4  # the per-job rows stay
