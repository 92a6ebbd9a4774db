"""Kill a multirun with SIGKILL at random points, rerun the same command each time, and compare
with an uninterrupted sweep: lost jobs, jobs run twice, byte-identical metrics.json, the report.

    python scripts/kill_sweep.py                      # 4 settings × 5 seeds, 3 kills
    python scripts/kill_sweep.py --kills 2 --seeds 0 1 -- trainer.max_epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(sweep: Path, args) -> list[str]:
    return [
        str(BIN / "mdn-train"),
        "-m",
        f"model.n_gaussians={','.join(map(str, args.settings))}",
        f"seed={','.join(map(str, args.seeds))}",
        "figures=false",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        *args.overrides,
        f"hydra.sweep.dir={sweep}",
    ]


def run(sweep: Path, args, kill_after: float | None = None) -> float:
    """Run the sweep (SIGKILL after ``kill_after`` seconds if given); its wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command(sweep, args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return time.perf_counter() - start


def jobs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()} if sweep.is_dir() else {}


def finished(sweep: Path) -> dict[str, int]:
    return {
        n: (j / "metrics.json").stat().st_mtime_ns for n, j in jobs(sweep).items() if (j / "metrics.json").is_file()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", type=int, default=[2, 3, 5, 8], help="n_gaussians values")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--random-seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=["trainer.max_epochs=3"],
        help="for every job (default: 3000 steps of the default recipe)",
    )
    args = parser.parse_args()
    root = REPO / os.environ.get("MDNLAB_LOG_DIR", "logs") / "kill_sweep" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    reference, killed = root / "reference", root / "killed"
    uninterrupted = run(reference, args)
    rng = random.Random(args.random_seed)
    times, completed_at_kill, finished_at_kill = [], [], {}
    for _ in range(args.kills):  # each start, the first and every rerun, killed at a random point
        times.append(run(killed, args, kill_after=rng.uniform(0.1, 0.35) * uninterrupted + 3))
        finished_at_kill.update({n: t for n, t in finished(killed).items() if n not in finished_at_kill})
        completed_at_kill.append(len(finished(killed)))
    times.append(run(killed, args))  # the same command once more, to the end
    reran = sum(finished(killed).get(n) != t for n, t in finished_at_kill.items())
    expected, got = jobs(reference), jobs(killed)
    identical = sum(
        (got[n] / "metrics.json").read_bytes() == (expected[n] / "metrics.json").read_bytes()
        for n in expected
        if n in got and (got[n] / "metrics.json").is_file()
    )
    for sweep in (reference, killed):
        subprocess.run([str(BIN / "mdn-report"), str(sweep)], check=True, capture_output=True)
    same_report = (reference / "groups.csv").read_text() == (killed / "groups.csv").read_text()
    summary = {
        "jobs": len(expected),
        "lost": len(set(expected) - set(got)),
        "extra_directories": len(set(got) - set(expected)),
        "finished_jobs_run_again": reran,
        "identical_metrics_json": identical,
        "same_report": same_report,
        "completed_at_each_kill": completed_at_kill,
        "uninterrupted_s": round(uninterrupted, 1),
        "killed_and_rerun_s": [round(t, 1) for t in times],
        "sweep_dirs": [str(reference), str(killed)],
    }
    print(json.dumps(summary, indent=2))
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
