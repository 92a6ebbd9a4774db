"""make uci: the UCI regression benchmark, every split of every set under the root (or those
named), for a single MDN and a deep ensemble of MDNs, each set's splits trained as one stack
(hydra/launcher=stacked), against the published numbers.

    make uci ARGS="--root /path/to/UCI_Datasets"            # or MDNLAB_UCI_ROOT=...
    python scripts/uci.py --root R --sets yacht concrete --members 5 --out logs/uci/run1

Writes <out>/splits.csv (one row per set, model and split) and <out>/results.md (mean ± standard
error over splits of NLL and RMSE, beside the published numbers, and a paired comparison with MC
dropout's per-split test log-likelihoods where results/test_ll_*.txt is there). Each set and
model is one multirun in <out>/<set>/<model>: an interrupted run keeps its finished jobs, and
running the same command again trains only what is missing. Choices come from validation rows
inside each training split (experiment=uci); the test rows are only scored.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Published held-out NLL, mean ± error as printed: Lakshminarayanan et al. 2017 (PBP, MC dropout
# 2016, deep ensembles), the DropoutUncertaintyExps readme (2018 rerun), Duan et al. 2020 (NGBoost).
PUBLISHED = {  # set: (PBP, MC dropout 2016, MC dropout 2018, deep ensembles, NGBoost)
    "bostonHousing": ("2.57 ± .09", "2.46 ± .25", "2.40 ± .04", "2.41 ± .25", "2.43 ± .15"),
    "concrete": ("3.16 ± .02", "3.04 ± .09", "2.93 ± .02", "3.06 ± .18", "3.04 ± .17"),
    "energy": ("2.04 ± .02", "1.99 ± .09", "1.21 ± .01", "1.38 ± .22", "0.60 ± .45"),
    "kin8nm": ("−0.90 ± .01", "−0.95 ± .03", "−1.14 ± .01", "−1.20 ± .02", "−0.49 ± .02"),
    "naval-propulsion-plant": ("−3.73 ± .01", "−3.80 ± .05", "−4.45 ± .00", "−5.63 ± .05", "−5.34 ± .04"),
    "power-plant": ("2.84 ± .01", "2.80 ± .05", "2.80 ± .01", "2.79 ± .04", "2.79 ± .11"),
    "protein-tertiary-structure": ("2.97 ± .00", "2.89 ± .01", "2.87 ± .00", "2.83 ± .02", "2.81 ± .03"),
    "wine-quality-red": ("0.97 ± .01", "0.93 ± .06", "0.93 ± .01", "0.94 ± .12", "0.91 ± .06"),
    "yacht": ("1.63 ± .02", "1.55 ± .12", "1.25 ± .01", "1.18 ± .21", "0.20 ± .26"),
}
DISCRETE = {"wine-quality-red": "integer scores", "bostonHousing": "capped at 50.0"}
FIELDS = ("set", "model", "split", "nll", "rmse", "crps", "coverage_90", "pit_ks", "min_sigma", "steps")


def run_set(root: Path, name: str, model: str, members: int, out: Path, splits: int | None, extra: list[str]) -> float:
    from mdnlab.problems import UCISet

    n = UCISet(str(root), name).n_splits() if splits is None else splits
    sweep = out / name / model
    command = [str(Path(sys.executable).parent / "mdn-train"), "-m", "hydra/launcher=stacked", "experiment=uci",
               f"data.root={root}", f"data.name={name}", f"data.split=range({n})",
               f"model.n_members={members}", "figures=false", f"hydra.sweep.dir={sweep}", *extra]
    print(f"== {name}, {model}: {n} splits as one stack -> {sweep}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines():  # the stack's progress lines and failures
        if line.startswith(("epoch ", "error", "stacked:", "already finished")) or "Error" in line:
            print("   " + line, flush=True)
    return time.perf_counter() - start


def rows_of(out: Path, name: str, model: str) -> list[dict]:
    rows = []
    for record in sorted((out / name / model).glob("*/run.json")):
        data = json.loads(record.read_text())
        m = data.get("metrics")
        if not m:
            continue
        rows.append({"set": name, "model": model, "split": data["config"]["data.split"], "nll": m["test/nll"],
                     "rmse": math.sqrt(m["test/mse"]), "crps": m["test/crps"], "coverage_90": m["test/coverage_90"],
                     "pit_ks": m["test/pit_ks"], "min_sigma": m["test/min_sigma"], "steps": m["train/steps"]})
    return sorted(rows, key=lambda r: r["split"])


def mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {se:.2f}"


def paired_with_dropout(root: Path, name: str, rows: list[dict]) -> str:
    files = sorted((root / name / "results").glob("test_ll_*.txt"))
    if not files or not rows:
        return "-"
    dropout_nll = [-float(v) for v in files[0].read_text().split()]
    pairs = [(r["nll"], dropout_nll[r["split"]]) for r in rows if r["split"] < len(dropout_nll)]
    differences = [ours - theirs for ours, theirs in pairs]
    wins = sum(d < 0 for d in differences)
    return f"{mean_se(differences)} ({wins}/{len(pairs)} splits better)"


def table(root: Path, rows: list[dict], models: list[str]) -> str:
    lines = ["| data set | " + " | ".join(f"NLL {m}" for m in models) + " | PBP | MC dropout | MC dropout 2018 | "
             "deep ensembles | NGBoost | " + " | ".join(f"RMSE {m}" for m in models) +
             f" | {models[-1]} − MC dropout 2018, paired |", "|---" * (2 * len(models) + 7) + "|"]
    for name in sorted({r["set"] for r in rows}):
        mine = {m: [r for r in rows if r["set"] == name and r["model"] == m] for m in models}
        published = PUBLISHED.get(name, ("-",) * 5)
        note = f" ({DISCRETE[name]}: see README)" if name in DISCRETE else ""
        lines.append(f"| {name}{note} | " + " | ".join(mean_se([r["nll"] for r in mine[m]]) for m in models) + " | "
                     + " | ".join(published) + " | " + " | ".join(mean_se([r["rmse"] for r in mine[m]]) for m in models)
                     + f" | {paired_with_dropout(root, name, mine[models[-1]])} |")
    return "\n".join(lines)


def main() -> None:
    from mdnlab.problems import available_sets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("MDNLAB_UCI_ROOT"), help="your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=None, help="set names (default: all under the root)")
    parser.add_argument("--members", type=int, default=5, help="deep ensemble size (0: single MDN only)")
    parser.add_argument("--splits", type=int, default=None, help="only the first N splits (a quick look)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "uci" / "latest")
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for every run")
    args = parser.parse_args()
    if not args.root or not Path(args.root).is_dir():
        sys.exit(f"error: --root={args.root!r} is not allowed: your folder of UCI sets (or set MDNLAB_UCI_ROOT)")
    root = Path(args.root).resolve()
    found = available_sets(root)
    sets = args.sets or found
    unknown = [s for s in sets if s not in found]
    if unknown:
        sys.exit(f"error: --sets {unknown[0]} is not allowed: one of {', '.join(found)}")
    models = [("single", 1)] + ([("ensemble", args.members)] if args.members > 1 else [])
    start, seconds = time.perf_counter(), {}
    for name in sets:
        for model, members in models:
            seconds[(name, model)] = run_set(root, name, model, members, args.out, args.splits, args.overrides)
    rows = [row for name in sets for model, _ in models for row in rows_of(args.out, name, model)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "splits.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    report = table(root, rows, [m for m, _ in models])
    timing = ", ".join(f"{n}/{m} {s:.0f} s" for (n, m), s in seconds.items())
    total = time.perf_counter() - start
    (args.out / "results.md").write_text(f"{report}\n\nwall time {total:.0f} s ({timing})\n")
    print(report, f"\nwall time {total:.0f} s ({timing})", f"\nwritten to {args.out}", sep="\n")


if __name__ == "__main__":
    main()
