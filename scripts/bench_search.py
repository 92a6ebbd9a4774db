"""What pruning saves a search, measured side by side in one command (make bench-search).

    python scripts/bench_search.py prune                        # 64 trials: successive halving vs to the end
    python scripts/bench_search.py uci --root /path/to/UCI_Datasets --sets yacht concrete

``prune``: the same 64 random trials (hparams_search=mdn_training: one network shape, the
learning rate, weight decay and noise searched) as one stack, once with successive halving
(reduction factor 3, a rung at 5, 15 and 45 checks) and once trained to the end; a validation
check every 100 steps, at most 120. ``uci``: on each set, scripts/uci_search.py's staged grid
against the pruned Optuna search over the same values (hparams_search=uci_mdn: every candidate
scored as the mean over the same 5 training splits), each one's chosen recipe scored on both
measures: the validation rows' NLL (what the Optuna search minimises) and the stand-in rows'
(what the staged grid minimises). The wall times are of whole commands, one after the other.
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
    """The staged grid's chosen recipe, scored from its last stage's runs of that recipe."""
    stages = sorted((out / "staged" / name).glob("[0-9]_*"), key=lambda p: p.name)
    last = stages[-1]
    best, score = None, math.inf
    per_candidate: dict[str, list[Path]] = {}
    for record in last.glob("*/run.json"):
        data = json.loads(record.read_text())
        key = json.dumps({k: v for k, v in data["config"].items() if k != "data.split"}, sort_keys=True, default=str)
        per_candidate.setdefault(key, []).append(record.parent)
    for key, runs in per_candidate.items():
        nll = statistics.mean(json.loads((r / "metrics.json").read_text())["metrics"]["test/nll"] for r in runs)
        if nll < score:
            best, score = runs, nll
    assert best is not None
    val = [json.loads((r / "metrics.json").read_text())["metrics"]["val/best_nll"] for r in best]
    return {"val_nll": statistics.mean(val), "stand_in_nll": score, "runs": len(best)}


def uci(out: Path, root: Path, sets: list[str], trials: int, batch: int, extra: list[str]) -> dict:
    import subprocess

    rows = {}
    for name in sets:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "uci_search.py"),
                "--root",
                str(root),
                "--sets",
                name,
                "--out",
                str(out / "staged"),
                "--recipes",
                str(out / "recipes"),
                *extra,
            ],
            check=True,
            cwd=REPO,
        )
        staged_seconds = time.perf_counter() - start
        sweep = out / "optuna" / name
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
        rows[name] = {
            "staged": {"seconds": staged_seconds, **staged_choice(out, name)},
            "optuna": {
                "seconds": seconds,
                "states": record["states"],
                "params": best["params"],
                **_recipe_scores(sweep, jobs),
            },
        }
        rows[name]["ratio"] = seconds / staged_seconds
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
            "| set | search | wall s | val NLL of its recipe | stand-in NLL of its recipe |",
            "|---|---|---|---|---|",
        ]
        for name, r in results["uci"].items():
            for which in ("staged", "optuna"):
                s = r[which]
                lines.append(
                    f"| {name} | {which} | {s['seconds']:.0f} | {s['val_nll']:.4f} | {s['stand_in_nll']:.4f} |"
                )
            lines.append(f"| {name} | ratio optuna / staged | {r['ratio']:.2f} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("prune", "uci"))
    parser.add_argument("--trials", type=int, default=None, help="trials (prune: 64; uci: 32)")
    parser.add_argument("--batch", type=int, default=16, help="uci: trials asked at once")
    parser.add_argument("--root", type=Path, default=None, help="uci: your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=["yacht", "concrete"])
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
        results["uci"] = uci(args.out, args.root, args.sets, args.trials or 32, args.batch, args.overrides)
    text = report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(text + "\n")
    print(text, f"\nwritten to {args.out}", sep="\n")


if __name__ == "__main__":
    main()
