"""scripts/bench.py at a tiny size: it runs, and both paths reach the same loss. No timings are
asserted: speed is what `make bench` reports."""

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_bench_runs_and_both_paths_agree(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench.py"),
            "--steps",
            "20",
            "--passes",
            "10",
            "--repeats",
            "1",
            "--skip-startup",
            "--out",
            str(out),
            "--stacked-sizes",
            "1",
            "3",
            "--recipe-sizes",
            "2",
            "--batch-sizes",
            "2",
            "--no-compile",
            "--stacked-threads",  # the other xdist worker has the other core: two threads a step
            "1",  # waited on each other (56 ms a step instead of 2 ms)
            "--sweep-seeds",
            "1",
            "--launchers",
            "stacked",
            "--sweep-overrides",
            "trainer.max_epochs=1",
            "data.passes_per_epoch=30",
            "data.n_test=200",
            "hydra.launcher.compile=false",
            "hydra.launcher.threads=1",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    for name in ("mdn", "mse"):
        w = results["workloads"][name]
        assert w["hand_us_per_step"] > 0 and w["project_us_per_step"] > 0
        assert abs(w["hand_final_loss"] - w["project_final_loss"]) <= 1e-5 * max(1, abs(w["hand_final_loss"]))
    assert [(r["models"], r["experiment"], bool(r["overrides"])) for r in results["stacked"]] == [
        (1, "seed_mdn_inverted", False),
        (3, "seed_mdn_inverted", False),
        (2, "mdn_inverted", True),
        (2, "mdn_inverted", False),
    ]
    assert all(r["us_per_model_step"] > 0 for r in results["stacked"])
    [batches] = results["batches"]
    assert batches["models"] == 2 and batches["compiled_us"] is None
    assert min(batches[k] for k in ("no_noise_us", "eager_us", "generators_us")) > 0
    sweeps = results["sweeps"]
    # (the stacked jobs scoring as the basic ones is tests/test_stacked.py's job; here the sweep only runs)
    assert sweeps["one_job_s"] > 0 and sweeps["stacked_s"] > 0 and "basic_s" not in sweeps
