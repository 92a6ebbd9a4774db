"""make bench-cluster: a sweep of the default recipe as SLURM jobs, one model a job
(``hydra/launcher=slurm``) against stacks (``hydra/launcher=stacked_slurm``), on a one-node SLURM
cluster this script starts (scripts/slurm_cluster.sh: root and Debian's SLURM packages) and
stops. Wall time is from the command's start (composition and submission included) to every
job finished; both sweeps run the same jobs with the same cluster resources, one after the
other, and the stacked jobs' test NLLs are compared with the one-job-a-model ones.

    .venv/bin/python scripts/bench_cluster.py --jobs 32 --steps 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # scripts/ is on the path when run as a script
from bench_stacked import nlls_by_seed

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = ("figures=false", "callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")


def sweep(env: dict, where: Path, launcher: str, jobs: int, steps: int, cpus: int) -> float:
    """Seconds from the command's start to its end (it waits for every job)."""
    command = [
        str(BIN / "mdn-train"),
        "-m",
        f"hydra/launcher={launcher}",
        f"seed=range({jobs})",
        f"trainer.max_epochs={steps // 1000}",
        *QUIET,
        f"hydra.launcher.cpus_per_task={cpus}",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=60",
        f"hydra.sweep.dir={where}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=where.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{launcher} sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000, help="steps a model (whole thousands: epochs of 1000)")
    parser.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of a stack's job; a one-model job gets one"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mdnlab-slurm-"))  # not a 0700 folder: munged must reach it
    started = subprocess.run(
        ["bash", str(REPO / "scripts/slurm_cluster.sh"), "start", str(folder)], capture_output=True, text=True
    )
    if started.returncode != 0:
        raise SystemExit(f"make bench-cluster: could not start a SLURM cluster: {started.stderr.strip()}")
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "PATH": os.environ["PATH"] + ":/usr/sbin"}
    try:
        walls = {}
        for launcher, cpus in (("slurm", 1), ("stacked_slurm", args.cpus)):
            walls[launcher] = sweep(env, folder / launcher, launcher, args.jobs, args.steps, cpus)
            print(f"{launcher}: {walls[launcher]:.1f} s", file=sys.stderr, flush=True)
        alone, stacked = (nlls_by_seed(folder / launcher, "*/run.json") for launcher in ("slurm", "stacked_slurm"))
    finally:
        subprocess.run(["bash", str(REPO / "scripts/slurm_cluster.sh"), "stop", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    gap = max(abs(alone[s] - stacked[s]) for s in alone)
    print(
        f"{args.jobs} default-recipe models of {args.steps} steps on a one-node SLURM cluster "
        f"({machine.cpu()}), command start to all finished:\n"
    )
    print("| launcher | SLURM jobs | CPUs a job | wall s | × stacked_slurm |")
    print("|---|---|---|---|---|")
    print(f"| slurm | {args.jobs} | 1 | {walls['slurm']:.1f} | {walls['slurm'] / walls['stacked_slurm']:.2f} |")
    print(f"| stacked_slurm | 1 | {args.cpus} | {walls['stacked_slurm']:.1f} | 1.00 |")
    print(f"\nlargest |test/nll stacked − alone| over the {len(alone)} models: {gap:.1e}")


if __name__ == "__main__":
    main()
