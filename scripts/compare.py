"""Compare training recipes on held-out data: `make compare` (or python scripts/compare.py).

Runs `mdn-train experiment=<recipe> seed=<s>` for each recipe and seed in its own process (so
the wall time is what a user waits), reads each run's metrics.json, prints one row per run and
a mean row per recipe, and writes the table as Markdown and JSON under logs/compare/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLES = {
    "sinusoid": [
        ("test/nll", "NLL", 4),
        ("test/excess_nll", "excess", 4),
        ("test/crps", "CRPS", 3),
        ("test/coverage_50", "cov50", 3),
        ("test/coverage_90", "cov90", 3),
        ("test/frac_nll_above_6", ">6 nats", 4),
        ("wall_s", "wall s", 1),
    ],
    # Bishop's robot arm: end-effector RMS error of the point predictions after the forward
    # kinematics (the MSE model's mode is its mean), with the held-out NLL
    "robot_arm": [
        ("test/nll", "NLL", 3),
        ("test/endpoint_rmse_mode", "RMS error, mode", 4),
        ("test/endpoint_rmse_mean", "RMS error, mean", 4),
        ("test/energy_score", "energy score", 4),
        ("train/steps", "steps", 0),
        ("wall_s", "wall s", 1),
    ],
}
COLUMNS = TABLES["sinusoid"]


def run(recipe: str, seed: int, extra: list[str], run_dir: Path) -> dict[str, float]:
    """Train in a process of its own, in ``run_dir``; the metrics from the run's run.json."""
    command = [
        str(Path(sys.executable).parent / "mdn-train"),
        f"experiment={recipe}",
        f"seed={seed}",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    metrics = json.loads((run_dir / "run.json").read_text())["metrics"]
    return {**metrics, "wall_s": wall, "run_dir": str(run_dir)}


def table(rows: list[tuple[str, str, dict]], columns=COLUMNS) -> str:
    head = "| recipe | seed | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for recipe, seed, m in rows:
        cells = [f"{m[key]:.{digits}f}" for key, _, digits in columns]
        lines.append(f"| {recipe} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["seed_mdn_inverted", "mdn_inverted"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--table",
        choices=sorted(TABLES),
        default=None,
        help="columns to print (default: robot_arm for robot_arm_* recipes)",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    preset = args.table or ("robot_arm" if all(r.startswith("robot_arm") for r in args.recipes) else "sinusoid")
    columns = TABLES[preset]
    out = REPO / os.environ.get("MDNLAB_LOG_DIR", "logs") / "compare"
    stamp = f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    rows = []
    for recipe in args.recipes:
        runs = []
        for seed in args.seeds:
            metrics = run(recipe, seed, args.overrides, out / stamp / f"{recipe}_seed{seed}")
            runs.append(metrics)
            rows.append((recipe, str(seed), metrics))
            print(f"{recipe} seed={seed}: test/nll {metrics['test/nll']:.4f} ({metrics['wall_s']:.1f} s)", flush=True)
        mean = {key: statistics.mean(r[key] for r in runs) for key, _, _ in columns}
        rows.append((f"**{recipe}**", "mean", mean))
    text = table(rows, columns)
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.md").write_text(text + "\n")
    (out / f"{stamp}.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"\nwritten to {out / stamp}.md")


if __name__ == "__main__":
    main()
