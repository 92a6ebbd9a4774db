"""Sweeps: launchers (basic, joblib, submitit local), a cpu/gpu axis on a machine without a GPU,
DDP on two CPU processes, and mdn-report."""

import csv
import json
import os

import pytest
import torch
from conftest import FAST, VALIDATED, run_cli, run_main

QUICK = [*FAST, "figures=false"]


def sweep_dir(tmp_path):
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    return sweeps[0]


def job_dirs(sweep):
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cpu_gpu_axis_finishes_cpu_jobs_and_reports_gpu_jobs_failed(tmp_path, monkeypatch, capsys):
    from mdnlab.cli import report

    status, _ = run_main("mdn-train", ["-m", "trainer=cpu,gpu", *QUICK], tmp_path, monkeypatch, capsys)
    assert status != 0  # the sweep says it had a failure
    sweep = sweep_dir(tmp_path)
    cpu, gpu = job_dirs(sweep)
    assert (cpu / "metrics.json").is_file()
    assert "trainer.accelerator='gpu'" in (gpu / "error.txt").read_text()
    report.main([str(sweep)])  # mdn-report, in this process (its command is tests/test_finish_sweeps.py's)
    with open(sweep / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "no CUDA GPU" in rows[1]["error"] and float(rows[0]["test/nll"]) > 1
    assert "| failed |" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_report_plots_nll_against_n_gaussians_per_hidden_size(tmp_path):
    from mdnlab.cli import report

    run_cli(
        ["mdn-train", "-m", "hydra/launcher=parallel", "model.n_gaussians=1,3", "model.hidden_size=5,10", *QUICK],
        tmp_path,
    )
    sweep = sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 4 and all((j / "metrics.json").is_file() for j in jobs)
    report.main([str(sweep)])  # mdn-report, in this process (its command is tests/test_finish_sweeps.py's)
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep / "report.md").read_text().count("| completed |") == 4


@pytest.mark.slow
def test_submitit_local_runs_the_cluster_path(tmp_path):
    run_cli(["mdn-train", "-m", "hydra/launcher=slurm_local", "model.n_gaussians=2,3", *QUICK], tmp_path)
    sweep = sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all((j / "metrics.json").is_file() for j in jobs)
    assert (sweep / ".submitit").is_dir()  # submitit ran them


@pytest.mark.slow
def test_ddp_cpu_matches_one_process_and_runs_inside_a_multirun(tmp_path):
    # one multirun: a DDP job (two CPU ranks), then the same job in one process after it
    run_cli(["mdn-train", "-m", "trainer=ddp_cpu,cpu", *QUICK, *VALIDATED], tmp_path, timeout=400)
    jobs = job_dirs(sweep_dir(tmp_path))
    assert len(jobs) == 2
    assert ["trainer=ddp_cpu" in (j / ".hydra" / "overrides.yaml").read_text() for j in jobs] == [True, False]
    ddp, one = (json.loads((j / "metrics.json").read_text())["metrics"] for j in jobs)
    # two equal shards, gradients averaged: the same full-batch step up to float rounding
    assert ddp["test/nll"] == pytest.approx(one["test/nll"], abs=1e-3)
    assert ddp["val/best_nll"] == pytest.approx(one["val/best_nll"], abs=1e-3)
    assert ddp["train/steps"] == one["train/steps"] > 0  # counted, though the spawned ranks did the steps
    assert not (tmp_path / "train" / "runs").exists()  # ranks made no directories of their own


def test_run_ids_are_unique_within_one_second():
    from mdnlab.config import _run_id

    ids = {_run_id() for _ in range(200)}
    assert len(ids) == 200


def test_long_override_lists_still_make_valid_job_directories():
    from mdnlab.config import _job_dir

    overrides = "__".join(f"data.input_noise-0.0{i}91720759412888" for i in range(30))
    name = _job_dir(7, overrides)
    assert len(name) <= 160 and name.startswith("7_data.input_noise")
    assert name != _job_dir(7, overrides + "x")  # cut names stay distinct
    assert _job_dir(3, "model.n_gaussians-5") == "3_model.n_gaussians-5"
    assert _job_dir(2, "experiment-uci/concrete__seed-1") == "2_experiment-uci.concrete__seed-1"  # one level


def test_mdn_report_says_what_squeue_says_of_a_submit_and_go_sweep(tmp_path, monkeypatch, capsys):
    """Jobs recorded by hydra.launcher.wait=false and not started yet: queued, running, or failed
    when squeue no longer knows them (tests/test_cluster.py runs this against real SLURM; here a
    stand-in squeue prints two states)."""
    from mdnlab.cli import report

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nprintf '11_0 PENDING\\n11_1 RUNNING\\n'\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "slurm_jobs.json").write_text(
        json.dumps([{"num": i, "job_id": f"11_{i}", "overrides": [f"seed={i}"]} for i in range(3)])
    )
    report.main([str(sweep)])
    out = capsys.readouterr().out
    assert "jobs: 1 queued, 1 running, 1 failed" in out
    assert "SLURM job 11_2 ended (gone from squeue) without a result" in out
