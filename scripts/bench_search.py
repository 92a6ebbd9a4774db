"""What pruning saves a search, measured side by side in one command (make bench-search).

    python scripts/bench_search.py prune                        # 64 trials: successive halving vs to the end
    python scripts/bench_search.py uci --root /path/to/UCI_Datasets --sets yacht concrete

``prune``: the same 64 random trials (hparams_search=mdn_training: one network shape, the
learning rate, weight decay and noise searched) as one stack, once with successive halving
(reduction factor 3, a rung at 5, 15 and 45 checks) and once trained to the end; a validation
check every 100 steps, at most 120. ``uci``: on each set, scripts/uci_search.py's staged grid
(``staged``, its --exhaustive) against two pruned Optuna searches over the same values, every
candidate scored as the mean over the same training splits: the same stages, each an Optuna grid
with successive halving (``staged_pruned``, uci_search.py's default), and TPE over every stage's
keys at once (``joint``, hparams_search=uci_mdn). Each one's chosen recipe is scored on both measures: the
validation rows' NLL (what the Optuna pruner compares) and the stand-in rows' (what the staged
searches choose by). The wall times are of whole commands, one after the other.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from benchmark import REPO, run_multirun

QUIET = ("callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")


def search_record(sweep: Path) -> dict:
    return json.loads((sweep / "search.json").read_text())


def prune(out: Path, trials: int, extra: list[str]) -> dict:
    rows = {}
    for name, pruner in (("successive_halving", "successive_halving"), ("to_the_end", "null")):
        sweep = out / name
        seconds = run_multirun(
            sweep,
            [
                "hparams_search=mdn_training",
                "hydra.sweeper.sampler=random",
                f"hydra.sweeper.n_trials={trials}",
                f"hydra.sweeper.n_jobs={trials}",
                f"hydra.sweeper.pruner={pruner}",
                "data.passes_per_epoch=100",
                "trainer.max_epochs=120",
                *QUIET,
                *extra,
            ],
            f"{trials} trials, pruner {pruner}",
        )
        record = search_record(sweep)
        rows[name] = {"seconds": seconds, **{k: record[k] for k in ("states", "checks_trained")}}
        rows[name]["best"] = record["best"][0]["value"] if record["best"] else math.nan
    rows["ratio"] = rows["successive_halving"]["seconds"] / rows["to_the_end"]["seconds"]
    return rows


def _recipe_scores(sweep: Path, trial_jobs: list[int] | None = None) -> dict[str, float]:
    """Mean val/best_nll and stand-in test/nll of the runs (all, or those of ``trial_jobs``)."""
    val, stand_in = [], []
    for record in sweep.glob("*/metrics.json"):
        if trial_jobs is not None and int(record.parent.name.split("_")[0]) not in trial_jobs:
            continue
        metrics = json.loads(record.read_text())["metrics"]
        val.append(metrics.get("val/best_nll", math.inf))
        stand_in.append(metrics.get("test/nll", math.inf))
    return {"val_nll": statistics.mean(val), "stand_in_nll": statistics.mean(stand_in), "runs": len(val)}


def staged_choice(out: Path, name: str) -> dict[str, float]:
    """A staged search's chosen recipe (under ``out``), scored from its last stage's runs of that
    recipe: the completed candidate with the lowest mean stand-in NLL (a pruned one has none)."""
    stages = sorted((out / name).glob("[0-9]_*"), key=lambda p: p.name)
    per_candidate: dict[str, list[dict]] = {}
    for record in stages[-1].glob("*/run.json"):
        data = json.loads(record.read_text())
        key = json.dumps({k: v for k, v in data["config"].items() if k != "data.split"}, sort_keys=True, default=str)
        per_candidate.setdefault(key, []).append(json.loads((record.parent / "metrics.json").read_text())["metrics"])
    complete = [runs for runs in per_candidate.values() if all("test/nll" in m for m in runs)]
    best = min(complete, key=lambda runs: statistics.mean(m["test/nll"] for m in runs))
    return {
        "val_nll": statistics.mean(m["val/best_nll"] for m in best),
        "stand_in_nll": statistics.mean(m["test/nll"] for m in best),
        "runs": len(best),
    }


def staged(out: Path, root: Path, name: str, pruned: bool, extra: list[str]) -> dict:
    """scripts/uci_search.py on one set (its stages pruned or not), as one command."""
    import subprocess

    start = time.perf_counter()
    command = [sys.executable, str(REPO / "scripts" / "uci_search.py"), "--root", str(root), "--sets", name]
    command += ["--out", str(out), "--recipes", str(out / "recipes"), *([] if pruned else ["--exhaustive"]), *extra]
    subprocess.run(command, check=True, cwd=REPO)
    return {"seconds": time.perf_counter() - start, **staged_choice(out, name)}


def joint(out: Path, root: Path, name: str, trials: int, batch: int, extra: list[str]) -> dict:
    """hparams_search=uci_mdn: TPE over every stage's keys at once, pruned."""
    sweep = out / name
    seconds = run_multirun(
        sweep,
        [
            "experiment=uci",
            "hparams_search=uci_mdn",
            f"data.root={root}",
            f"data.name={name}",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={batch}",
            *QUIET,
            *extra,
        ],
        f"{name}: {trials} Optuna trials × 5 splits, pruned",
    )
    record = search_record(sweep)
    best = record["best"][0]
    jobs = list(range(best["job"], best["job"] + 5))
    return {"seconds": seconds, "states": record["states"], "params": best["params"], **_recipe_scores(sweep, jobs)}


SEARCHES = ("staged", "staged_pruned", "joint")


def uci(out: Path, root: Path, sets: list[str], searches: list[str], trials: int, batch: int, extra: list[str]) -> dict:
    """Each search of ``searches`` on each set, one after another; ratios against the staged grid."""
    rows: dict = {}
    for name in sets:
        row = rows[name] = {}
        for which in searches:
            if which == "joint":
                row[which] = joint(out / which, root, name, trials, batch, extra)
            else:
                row[which] = staged(out / which, root, name, which == "staged_pruned", extra)
        if "staged" in row:
            for which in row:
                row[which]["ratio"] = row[which]["seconds"] / row["staged"]["seconds"]
    return rows


def report(results: dict) -> str:
    lines = [f"machine: {results['machine']}", ""]
    if "prune" in results:
        p = results["prune"]
        lines += [
            "| 64 trials, one stack | wall s | trials complete / pruned | validation checks trained | best val NLL |",
            "|---|---|---|---|---|",
        ]
        for name in ("successive_halving", "to_the_end"):
            r = p[name]
            lines.append(
                f"| {name.replace('_', ' ')} | {r['seconds']:.0f} | {r['states'].get('complete', 0)} / "
                f"{r['states'].get('pruned', 0)} | {r['checks_trained']} | {r['best']:.4f} |"
            )
        lines += ["", f"wall-time ratio, pruned / to the end: {p['ratio']:.2f}", ""]
    if "uci" in results:
        lines += [
            "| set | search | wall s | / staged | val NLL of its recipe | stand-in NLL of its recipe |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in results["uci"].items():
            for which, r in row.items():
                ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
                scores = f"{r['val_nll']:.4f} | {r['stand_in_nll']:.4f}"
                lines.append(f"| {name} | {which} | {r['seconds']:.0f} | {ratio} | {scores} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("prune", "uci"))
    parser.add_argument("--trials", type=int, default=None, help="trials (prune: 64; uci: 32)")
    parser.add_argument("--batch", type=int, default=16, help="uci: trials asked at once")
    parser.add_argument("--root", type=Path, default=None, help="uci: your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=["yacht", "concrete"])
    parser.add_argument("--searches", nargs="*", default=list(SEARCHES), choices=SEARCHES, help="uci: which searches")
    parser.add_argument(
        "--out", type=Path, default=REPO / "logs" / "bench" / f"search-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    )
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for every run")
    args = parser.parse_args()
    from machine import cpu

    results: dict = {"machine": cpu(), "command": " ".join(sys.argv)}
    if args.mode == "prune":
        results["prune"] = prune(args.out, args.trials or 64, args.overrides)
    else:
        if args.root is None or not args.root.is_dir():
            sys.exit(f"error: --root={args.root} is not allowed: your folder of UCI sets")
        results["uci"] = uci(
            args.out, args.root, args.sets, args.searches, args.trials or 32, args.batch, args.overrides
        )
    text = report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(text + "\n")
    print(text, f"\nwritten to {args.out}", sep="\n")


if __name__ == "__main__":
    main()
