"""The stacked C2ST (mdnlab.eval.c2st) against sbibm's own (sbibm.metrics.c2st, scikit-learn's
MLPClassifier one fold at a time) on the same samples: agreement and time, side by side in one
run. Needs the sbi extra.

    python scripts/bench_c2st.py speed --dim 10 --pairs 10 --sbibm-pairs 1      # 10-D, 10,000 each
    python scripts/bench_c2st.py agree --runs logs/sbi/latest --out docs/tables/c2st_agreement.md

speed: P pairs of Gaussians (reference N(0, I), samples shifted by 0.1·k/√D); ours scores all P
in one stack, sbibm's the first --sbibm-pairs of them one by one; the ratio is sbibm's seconds a
pair × P over ours.
seeds: one pair of those, scored with several seeds by each test (the spread a seed alone
gives, and whether the two tests' means agree).
agree: pairs of (reference samples, a method's posterior draws) from make sbi's runs under
--runs (posterior_samples.pt; <task>/<budget>/<method>/...), taking the tasks in turn until --max
pairs; both tests on each, the differences, and each one's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import machine  # scripts/ is on the path when run as a script
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def sbibm_c2st(x: torch.Tensor, y: torch.Tensor, seed: int = 1) -> float:
    from sbibm.metrics.c2st import c2st

    return float(c2st(x, y, seed=seed))


def speed(args: argparse.Namespace) -> None:
    from mdnlab.eval.c2st import c2st

    generator = torch.Generator().manual_seed(0)
    shifts = 0.1 * torch.arange(args.pairs).view(-1, 1, 1) / args.dim**0.5
    x = torch.randn(args.pairs, args.samples, args.dim, generator=generator)
    y = torch.randn(args.pairs, args.samples, args.dim, generator=generator) + shifts
    start = time.perf_counter()
    ours = c2st(x, y).tolist()
    stacked = time.perf_counter() - start
    theirs, start = [], time.perf_counter()
    for k in range(args.sbibm_pairs):
        theirs.append(sbibm_c2st(x[k], y[k]))
    one_by_one = (time.perf_counter() - start) / max(1, args.sbibm_pairs)
    report = {
        "machine": machine.cpu(),
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "samples": args.samples,
        "pairs": args.pairs,
        "stacked_seconds": round(stacked, 1),
        "sbibm_seconds_per_pair": round(one_by_one, 1),
        "speed_up": round(one_by_one * args.pairs / stacked, 1) if args.sbibm_pairs else None,
        "ours": [round(v, 4) for v in ours],
        "sbibm": [round(v, 4) for v in theirs],
    }
    print(json.dumps(report, indent=1))


def run_pairs(runs: Path, limit: int, tasks: list[str] | None = None) -> list[tuple[str, int, int, str, torch.Tensor]]:
    """(task, budget, observation, method, draws) from make sbi's runs, spread over the tasks."""
    found: dict[str, list] = {}
    for path in sorted(runs.glob("*/*/*/**/posterior_samples.pt")):
        task, budget, method = path.relative_to(runs).parts[:3]
        if tasks and task not in tasks:
            continue
        for k, draws in torch.load(path).items():
            found.setdefault(task, []).append((task, int(budget), int(k), method, draws))
    pairs: list = []
    while len(pairs) < limit and any(found.values()):
        for task in sorted(found):
            if found[task] and len(pairs) < limit:
                pairs.append(found[task].pop(0))
    return pairs


def agree(args: argparse.Namespace) -> None:
    from mdnlab.eval.c2st import c2st
    from mdnlab.problems import SBIBMTask

    rows = []
    pairs = run_pairs(args.runs, args.max, args.tasks)
    for task, budget, k, method, draws in pairs:
        reference = SBIBMTask(task).reference_samples(k)[: len(draws)]
        start = time.perf_counter()
        theirs = sbibm_c2st(reference, draws[: len(reference)])
        sbibm_seconds = time.perf_counter() - start
        rows.append(
            {
                "task": task,
                "budget": budget,
                "observation": k,
                "method": method,
                "n": len(reference),
                "sbibm": theirs,
                "sbibm_seconds": sbibm_seconds,
                "reference": reference,
                "draws": draws[: len(reference)],
            }
        )
        print(f"{task} {budget} obs {k} {method}: sbibm {theirs:.4f} ({sbibm_seconds:.0f} s)", flush=True)
    start = time.perf_counter()
    for task in sorted({r["task"] for r in rows}):  # ours: every pair of a task in one stack
        mine = [r for r in rows if r["task"] == task]
        scores = c2st(torch.stack([r["reference"] for r in mine]), torch.stack([r["draws"] for r in mine]))
        for row, value in zip(mine, scores.tolist()):
            row["ours"] = value
    stacked_seconds = time.perf_counter() - start
    lines = [
        f"<!-- written by scripts/bench_c2st.py {' '.join(sys.argv[1:])} ({machine.cpu()}) -->",
        "",
        "| task | budget | observation | samples from | samples | sbibm's c2st | stacked c2st | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = f"{r['budget']:,}" if r["budget"] else "-"
        lines.append(
            f"| {r['task']} | {budget} | {r['observation']} | {r['method']} | {r['n']:,} | {r['sbibm']:.4f} | "
            f"{r['ours']:.4f} | {r['ours'] - r['sbibm']:+.4f} |"
        )
    differences = [abs(r["ours"] - r["sbibm"]) for r in rows]
    lines += [
        "",
        f"{sum(d <= 0.01 for d in differences)} of {len(rows)} pairs within 0.01 (largest difference "
        f"{max(differences):.4f}, mean {sum(differences) / len(differences):.4f}); sbibm's c2st took "
        f"{sum(r['sbibm_seconds'] for r in rows):.0f} s one pair at a time, the stacked one {stacked_seconds:.0f} s "
        f"for all of them, {torch.get_num_threads()} torch threads.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


def seeds(args: argparse.Namespace) -> None:
    """One pair scored with --seeds seeds by each test: sbibm's one seed at a time, ours as one
    stack of --seeds copies of the pair (each its own folds, initial weights and shuffles)."""
    from mdnlab.eval.c2st import c2st
    from mdnlab.problems import SBIBMTask

    (draws,) = [
        d
        for task, budget, k, method, d in run_pairs(args.runs, 10**6, [args.task])
        if (budget, k, method) == (args.budget, args.observation, args.method)
    ]
    reference = SBIBMTask(args.task).reference_samples(args.observation)[: len(draws)]
    draws = draws[: len(reference)]
    start = time.perf_counter()
    theirs = [sbibm_c2st(reference, draws, seed) for seed in range(1, args.seeds + 1)]
    sbibm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    copies = (args.seeds, -1, -1)
    ours = c2st(reference.expand(*copies), draws.expand(*copies), seed=1).tolist()
    stacked_seconds = time.perf_counter() - start

    def summary(values: list[float]) -> dict:
        sd = statistics.stdev(values)
        return {"mean": round(statistics.mean(values), 4), "sd": round(sd, 4), "se": round(sd / len(values) ** 0.5, 4)}

    report = {
        "machine": machine.cpu(),
        "pair": [args.task, args.budget, args.observation, args.method, len(reference)],
        "sbibm": {**summary(theirs), "values": [round(v, 4) for v in theirs], "seconds": round(sbibm_seconds)},
        "stacked": {**summary(ours), "values": [round(v, 4) for v in ours], "seconds": round(stacked_seconds)},
    }
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    fast = modes.add_parser("speed")
    fast.add_argument("--dim", type=int, default=10)
    fast.add_argument("--samples", type=int, default=10_000)
    fast.add_argument("--pairs", type=int, default=10)
    fast.add_argument("--sbibm-pairs", type=int, default=1)
    same = modes.add_parser("agree")
    same.add_argument("--runs", type=Path, required=True, help="make sbi's --out")
    same.add_argument("--max", type=int, default=32, help="pairs from the runs")
    same.add_argument("--out", type=Path, default=None, help="the table, for the docs")
    same.add_argument("--tasks", nargs="*", default=None, help="only these tasks' runs")
    spread = modes.add_parser("seeds")
    spread.add_argument("--runs", type=Path, required=True, help="make sbi's --out")
    spread.add_argument("--task", required=True)
    spread.add_argument("--budget", type=int, required=True)
    spread.add_argument("--observation", type=int, required=True)
    spread.add_argument("--method", default="mdn")
    spread.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    {"speed": speed, "agree": agree, "seeds": seeds}[args.mode](args)


if __name__ == "__main__":
    main()
