"""make uci: the UCI regression benchmark, every split of every set under the root (or those
named), for a single MDN and a deep ensemble of MDNs, each set's splits trained as one stack
(hydra/launcher=stacked), against the published numbers.

    make uci ARGS="--root /path/to/UCI_Datasets"            # or MDNLAB_UCI_ROOT=...
    python scripts/uci.py --root R --sets yacht concrete --members 5 --out logs/uci/run1

Writes <out>/splits.csv (one row per set, model and split) and <out>/results.md (mean ± standard
error over splits of NLL and RMSE, beside the published numbers, and a paired comparison with MC
dropout's per-split test log-likelihoods where results/test_ll_*.txt is there). Each set is one
multirun in <out>/<set> (the single MDNs one stack, the ensembles another): an interrupted run
keeps its finished jobs, and running the same command again trains only what is missing. Each
set trains with its recipe, experiment=uci/<set>, chosen on validation rows inside the training
splits by scripts/uci_search.py (experiment=uci where there is none); test rows are only scored.
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
RECIPES = REPO / "configs" / "experiment" / "uci"
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
FIELDS = ("set", "model", "split", "nll", "rmse", "crps", "coverage_90", "pit_ks", "min_sigma", "steps", "val_nll",
          "checkpoint")
REPEATED_SHARE = 0.02  # a target value is "repeated" when at least 2% of a split's training rows share it


def recipe(name: str) -> str:
    """The set's chosen recipe (configs/experiment/uci/<set>.yaml, written by scripts/uci_search.py),
    else the base recipe."""
    return f"uci/{name}" if (RECIPES / f"{name}.yaml").is_file() else "uci"


def run_multirun(root: Path, name: str, sweep: Path, overrides: list[str], what: str,
                 experiment: str | None = None) -> float:
    """One mdn-train multirun (hydra/launcher=stacked) on set ``name`` with its recipe (or
    ``experiment``); its progress lines shown."""
    experiment = experiment or recipe(name)
    command = [str(Path(sys.executable).parent / "mdn-train"), "-m", "hydra/launcher=stacked",
               f"experiment={experiment}", f"data.root={root}", f"data.name={name}", "figures=false",
               f"hydra.sweep.dir={sweep}", *overrides]
    print(f"== {name} ({experiment}), {what} -> {sweep}", flush=True)
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        for line in job.stdout:  # the stacks' progress lines and failures, as they come
            if line.startswith(("epoch ", "error", "stacked:", "already finished")) or "Error" in line:
                print("   " + line.rstrip(), flush=True)
    return time.perf_counter() - start


def run_set(root: Path, name: str, members: int, out: Path, splits: int | None, extra: list[str]) -> float:
    """Every split of the set, single MDN and ``members``-member ensemble: one process, two stacks."""
    from mdnlab.problems import UCISet

    n = UCISet(str(root), name).n_splits() if splits is None else splits
    sizes = f"1,{members}" if members > 1 else "1"
    return run_multirun(root, name, out / name, [f"data.split=range({n})", f"model.n_members={sizes}", *extra],
                        f"{n} splits, {'single and ' + str(members) + '-member ensemble' if members > 1 else 'single'}")


def model_of(members: int) -> str:
    return "single" if members == 1 else "ensemble"


def rows_of(out: Path, name: str) -> list[dict]:
    rows = []
    for record in sorted((out / name).rglob("run.json")):
        data = json.loads(record.read_text())
        m = data.get("metrics")
        if not m:
            continue
        rows.append({"set": name, "model": model_of(int(data["config"]["model.n_members"])),
                     "split": data["config"]["data.split"], "nll": m["test/nll"],
                     "rmse": math.sqrt(m["test/mse"]), "crps": m["test/crps"], "coverage_90": m["test/coverage_90"],
                     "pit_ks": m["test/pit_ks"], "min_sigma": m["test/min_sigma"], "steps": m["train/steps"],
                     "val_nll": m["val/best_nll"], "checkpoint": data["tested_checkpoint"]})
    return sorted(rows, key=lambda r: (r["model"], r["split"]))


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


def picked(rows: list[dict], models: list[str]) -> str:
    """The model the protocol counts: the lower mean validation NLL over the splits (never test)."""
    return min(models, key=lambda m: statistics.mean([r["val_nll"] for r in rows if r["model"] == m] or [math.inf]))


def published_mean(text: str) -> float:
    return float(text.split("±")[0].replace("−", "-"))


def table(root: Path, rows: list[dict], models: list[str]) -> str:
    lines = ["| data set | " + " | ".join(f"NLL {m}" for m in models) + " | picked on val | vs deep ensembles | PBP | "
             "MC dropout | MC dropout 2018 | deep ensembles | NGBoost | " + " | ".join(f"RMSE {m}" for m in models) +
             " | picked − MC dropout 2018, paired |", "|---" * (2 * len(models) + 9) + "|"]
    for name in sorted({r["set"] for r in rows}):
        mine = {m: [r for r in rows if r["set"] == name and r["model"] == m] for m in models}
        choice = picked([r for r in rows if r["set"] == name], models)
        published = PUBLISHED.get(name, ("-",) * 5)
        ours = statistics.mean(r["nll"] for r in mine[choice])
        versus = "-" if published[3] == "-" else ("better" if ours < published_mean(published[3]) else "worse")
        note = f" ({DISCRETE[name]}: see README)" if name in DISCRETE else ""
        lines.append(f"| {name}{note} | " + " | ".join(mean_se([r["nll"] for r in mine[m]]) for m in models)
                     + f" | {choice} | {versus} | " + " | ".join(published) + " | "
                     + " | ".join(mean_se([r["rmse"] for r in mine[m]]) for m in models)
                     + f" | {paired_with_dropout(root, name, mine[choice])} |")
    return "\n".join(lines)


def repeated_values(split_rows: list[dict]) -> dict:
    """What part of the picked model's test NLL comes from repeated target values (those at least
    REPEATED_SHARE of the split's training rows share: boston's cap at 50.0, wine's integer
    scores), per split: the NLL on test rows with such a value and on the others, and the
    smallest σ of a component that carries weight (π ≥ 0.05) at a test input, in target units."""
    import torch

    from mdnlab import checkpoint
    from mdnlab.eval.metrics import predict

    out = {"share": [], "nll_repeated": [], "nll_other": [], "sigma": [], "step": []}
    for row in split_rows:
        model, datamodule = checkpoint.load(row["checkpoint"])
        _, y_train, x_test, y_test = datamodule.uci.split(int(row["split"]))
        values, counts = torch.unique(y_train.reshape(-1), return_counts=True)
        repeated = values[counts >= max(2, REPEATED_SHARE * len(y_train))]
        m = predict(model, x_test)
        nll = -m.log_prob(y_test.reshape(-1).double())
        is_repeated = torch.isin(y_test.reshape(-1), repeated)
        out["share"].append(is_repeated.double().mean().item())
        if is_repeated.any():
            out["nll_repeated"].append(nll[is_repeated].mean().item())
        if (~is_repeated).any():
            out["nll_other"].append(nll[~is_repeated].mean().item())
        out["sigma"].append(m.scale[torch.softmax(m.logits, -1) >= 0.05].min().item())
        out["step"].append(values.diff().min().item())  # the target's resolution, for comparison
    return out


def repeated_table(rows: list[dict], models: list[str]) -> str:
    lines = ["| data set (picked model) | test rows with a repeated value | NLL on them | NLL on the others | "
             "all rows | smallest weighted σ (median over splits) | smallest gap between target values |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted({r["set"] for r in rows}):
        choice = picked([r for r in rows if r["set"] == name], models)
        mine = [r for r in rows if r["set"] == name and r["model"] == choice]
        found = repeated_values(mine)
        lines.append(f"| {name} ({choice}) | {100 * statistics.mean(found['share']):.1f}% | "
                     f"{mean_se(found['nll_repeated'])} | {mean_se(found['nll_other'])} | "
                     f"{mean_se([r['nll'] for r in mine])} | {statistics.median(found['sigma']):.3g} | "
                     f"{min(found['step']):.3g} |")
    return "\n".join(lines)


def root_and_sets(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """--root and --sets checked: one line naming the option and what it allows, else exit 1."""
    from mdnlab.problems import available_sets

    if not args.root or not Path(args.root).is_dir():
        sys.exit(f"error: --root={args.root!r} is not allowed: your folder of UCI sets (or set MDNLAB_UCI_ROOT)")
    root = Path(args.root).resolve()
    found = available_sets(root)
    unknown = [s for s in args.sets or [] if s not in found]
    if unknown:
        sys.exit(f"error: --sets {unknown[0]} is not allowed: one of {', '.join(found)}")
    return root, args.sets or found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("MDNLAB_UCI_ROOT"), help="your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=None, help="set names (default: all under the root)")
    parser.add_argument("--members", type=int, default=5, help="deep ensemble size (0: single MDN only)")
    parser.add_argument("--splits", type=int, default=None, help="only the first N splits (a quick look)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "uci" / "latest")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the table from what --out holds")
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for every run")
    args = parser.parse_args()
    root, sets = root_and_sets(args)
    models = ["single"] + (["ensemble"] if args.members > 1 else [])
    start, seconds = time.perf_counter(), {}
    for name in [] if args.report_only else sets:
        seconds[name] = run_set(root, name, args.members, args.out, args.splits, args.overrides)
    rows = [row for name in sets for row in rows_of(args.out, name)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "splits.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    report = table(root, rows, models) + "\n\nRepeated target values (" + \
        f"shared by ≥ {100 * REPEATED_SHARE:.0f}% of a split's training rows):\n\n" + repeated_table(rows, models)
    timing = ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items())
    footer = (f"wall time {time.perf_counter() - start:.0f} s ({timing}) on {os.cpu_count()} cores" if seconds
              else "(--report-only: rebuilt from the runs already there; their time is in that run's output)")
    (args.out / "results.md").write_text(f"{report}\n\n{footer}\n")
    print(report, f"\n{footer}", f"\nwritten to {args.out}", sep="\n")


if __name__ == "__main__":
    main()
