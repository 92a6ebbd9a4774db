"""make sbi: the MDN as an amortized posterior on sbibm's tasks (Lueckmann et al., AISTATS 2021),
every task × budget, scored at the task's 10 observations against the reference posteriors,
beside sbi's NPE run here on the same simulations (--peers) and the published results.

    make sbi EXTRAS=dev,sbi                                              # MDN, 8 tasks × 3 budgets
    python scripts/sbi_benchmark.py --tasks two_moons slcp --budgets 1000 10000 --peers sbi_mdn --out logs/sbi/a

Writes <out>/observations.csv (task, budget, observation, method, seed, c2st, nltp, mmd, one
row per observation and run) and <out>/results.md: C2ST and NLTP mean ± s.e. over observations
and seeds per method, the paired difference MDN − peer per observation against every peer run
here and against the published NPE-NSF, SNPE-NSF, NLE and NRE, and each method's seconds. The
MDN trains with its recipe for the task and budget (configs/experiment/sbi/<task>_<budget>.yaml,
chosen on validation simulations; experiment=sbi where there is none) as an mdn-train multirun in
<out>/<task>/<budget>/mdn; a peer in <out>/<task>/<budget>/<peer>/seed<k>. Rerunning the same
command trains only what is missing. The published results (scripts/sbibm_published_c2st.csv)
are sbi-benchmark/results' benchmarking_sbi/results/main_paper.csv (NPE-NSF, SNPE-NSF, NLE,
NRE, SMC-ABC, REJ-ABC) and supplement_hyperparameters_snpe.csv (NPE-MAF), one row per task,
budget, observation and algorithm.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import benchmark  # scripts/ is on the path when run as a script
from benchmark import mean_se

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "experiment" / "sbi"
PUBLISHED_CSV = REPO / "scripts" / "sbibm_published_c2st.csv"
sys.path.insert(0, str(REPO / "src"))

BUDGETS = (1000, 10_000, 100_000)
PEERS = ("sbi_mdn", "sbi_nsf")
PUBLISHED = ("NPE-NSF", "SNPE-NSF", "NLE", "NRE")
NAMES = {"MDN": "MDN (mdnlab)", "sbi_mdn": "sbi NPE-MDN (here)", "sbi_nsf": "sbi NPE-NSF (here)"}
FIELDS = ("task", "budget", "observation", "method", "seed", "c2st", "nltp", "mmd", "seconds")


def recipe(task: str, budget: int) -> str:
    name = f"{task}_{budget}"
    return f"sbi/{name}" if (RECIPES / f"{name}.yaml").is_file() else "sbi"


def run_mdn(task: str, budget: int, seeds: int, out: Path, extra: list[str], launcher: str = "stacked") -> float:
    """The MDN's seeds on one task and budget: one multirun (each seed its own run directory),
    its seeds trained as one stack by default (``launcher``: stacked or basic, Lightning's loop)."""
    experiment = recipe(task, budget)
    overrides = [
        f"experiment={experiment}",
        f"data.task={task}",
        f"data.num_simulations={budget}",
        f"seed=range({seeds})",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        *extra,
    ]
    sweep = out / task / str(budget) / "mdn"
    return benchmark.run_multirun(sweep, overrides, f"{task} × {budget} ({experiment}), MDN", launcher=launcher)


def posterior_rows(folder: Path) -> list[dict]:
    return [
        {k: float(v) if v not in ("", None) else None for k, v in row.items()}
        for row in csv.DictReader((folder / "posterior.csv").open())
    ]


def rows_of(out: Path, task: str, budget: int) -> list[dict]:
    """Every finished run's rows for one task and budget: the MDN's run directories (run.json,
    posterior.csv) and the peers' (record.json, posterior.csv)."""
    rows = []
    for record in sorted((out / task / str(budget) / "mdn").glob("*/run.json")):
        data = json.loads(record.read_text())
        if not data.get("metrics") or not (record.parent / "posterior.csv").is_file():
            continue
        for row in posterior_rows(record.parent):
            rows.append(
                {
                    "task": task,
                    "budget": budget,
                    "observation": int(row["observation"]),
                    "method": "MDN",
                    "seed": int(data["config"]["seed"]),
                    "c2st": row["c2st"],
                    "nltp": row["nltp"],
                    "mmd": row.get("mmd"),
                    "seconds": data.get("fit_seconds") or 0.0,
                    "recipe": (data.get("hydra_files") or {}).get("overrides.yaml", ""),
                }
            )
    for record in sorted((out / task / str(budget)).glob("*/seed*/record.json")):
        data = json.loads(record.read_text())
        for row in posterior_rows(record.parent):
            rows.append(
                {
                    "task": task,
                    "budget": budget,
                    "observation": int(row["observation"]),
                    "method": data["peer"],
                    "seed": int(data["seed"]),
                    "c2st": row["c2st"],
                    "nltp": row["nltp"],
                    "mmd": row.get("mmd"),
                    "seconds": data["fit_seconds"],
                }
            )
    return rows


def published_rows() -> list[dict]:
    rows = []
    for row in csv.DictReader(PUBLISHED_CSV.open()):
        rows.append(
            {
                "task": row["task"],
                "budget": int(row["num_simulations"]),
                "observation": int(row["num_observation"]),
                "method": row["algorithm"],
                "seed": 0,
                "c2st": float(row["c2st"]),
                "nltp": float(row["nltp"]) if row["nltp"] else None,
                "mmd": float(row["mmd"]) if row["mmd"] else None,
            }
        )
    return rows


def by_observation(row: dict) -> int:
    return int(row["observation"])


def mean_over_seeds(rows: list[dict], metric: str) -> list[dict]:
    """One row per observation: the metric's mean over the method's seeds (the paired unit)."""
    values: dict[int, list[float]] = {}
    for row in rows:
        if row.get(metric) is not None and math.isfinite(row[metric]):
            values.setdefault(by_observation(row), []).append(row[metric])
    return [{"observation": k, metric: sum(v) / len(v)} for k, v in sorted(values.items())]


def cells(rows: list[dict], published: list[dict], metric: str, methods: list[str]) -> list[list[str]]:
    """Per task and budget: each method's mean ± s.e., the published ones', the paired columns."""
    table = []
    for task, budget in sorted({(r["task"], r["budget"]) for r in rows}, key=lambda k: (k[0], k[1])):
        mine = [r for r in rows if (r["task"], r["budget"]) == (task, budget)]
        theirs = [r for r in published if (r["task"], r["budget"]) == (task, budget)]
        per = {m: [r for r in mine if r["method"] == m] for m in methods}
        per.update({m: [r for r in theirs if r["method"] == m] for m in PUBLISHED})
        mdn = mean_over_seeds(per["MDN"], metric)
        line = [task, f"{budget:,}"]
        line += [mean_se([r[metric] for r in per[m] if r.get(metric) is not None], 3) for m in [*methods, *PUBLISHED]]
        others = [*methods[1:], *PUBLISHED]
        line += [benchmark.paired(mdn, mean_over_seeds(per[m], metric), metric, by_observation, 3) for m in others]
        table.append(line)
    return table


def seconds_table(rows: list[dict], methods: list[str]) -> str:
    """Seconds of training per run (mean over seeds), the MDN's beside the peers'."""
    lines = []
    for task, budget in sorted({(r["task"], r["budget"]) for r in rows}):
        found = [r for r in rows if (r["task"], r["budget"]) == (task, budget)]
        per_run = []
        for m in methods:
            runs = {r["seed"]: r["seconds"] for r in found if r["method"] == m}
            per_run.append(f"{sum(runs.values()) / len(runs):.0f}" if runs else "-")
        lines.append([task, f"{budget:,}", *per_run])
    return benchmark.markdown(["task", "budget", *(NAMES[m] for m in methods)], lines)


def report(rows: list[dict]) -> str:
    methods = ["MDN", *[p for p in PEERS if any(r["method"] == p for r in rows)]]
    published = published_rows()
    names = [NAMES[m] for m in methods] + [f"{p} (published)" for p in PUBLISHED]
    paired_names = [f"MDN − {NAMES.get(m, m + ' (published)')}, paired (MDN lower)" for m in [*methods[1:], *PUBLISHED]]
    head = ["task", "budget", *names, *paired_names]
    seeds = sorted({r["seed"] for r in rows if r["method"] == "MDN"})
    parts = [
        (
            f"C2ST (0.5: indistinguishable from the reference; lower is better), mean ± s.e. over the 10 "
            f"observations{' and ' + str(len(seeds)) + ' seeds' if len(seeds) > 1 else ''}; paired: MDN − method "
            "per observation (seeds averaged first), with the observations where the MDN is lower",
            benchmark.markdown(head, cells(rows, published, "c2st", methods)),
        ),
        (
            "NLTP, −log q(θ_true | x_o) (nats; lower is better), the same layout",
            benchmark.markdown(head, cells(rows, published, "nltp", methods)),
        ),
        ("Seconds of training per run (mean over seeds)", seconds_table(rows, methods)),
    ]
    return benchmark.sections(parts)


def main() -> None:
    import sbi_peers

    from mdnlab.errors import ConfigError
    from mdnlab.problems.sbibm_task import MIN_SIMULATIONS, TASKS, check_task, sbibm_module

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), help="sbibm tasks (default: the 8 without Julia)")
    parser.add_argument("--budgets", nargs="*", type=int, default=list(BUDGETS), help="numbers of simulations")
    parser.add_argument("--peers", nargs="*", default=[], choices=PEERS, help="sbi's NPE run here: sbi_mdn sbi_nsf")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method (each its own simulations)")
    parser.add_argument(
        "--launcher",
        default="stacked",
        choices=("stacked", "basic"),
        help="the MDN's seeds as one stack, or Lightning's loop",
    )
    parser.add_argument("--mmd", action="store_true", help="also sbibm's MMD (O(n²): ~7 s an observation)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "sbi" / "latest")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the tables from what --out holds")
    parser.add_argument("--docs-table", type=Path, default=None, help="also write the tables here (docs/tables/)")
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for the MDN's runs")
    args = parser.parse_args()
    try:
        for task in args.tasks:
            try:
                check_task(task)
            except ConfigError as error:  # the same allowed values, named by this script's option
                raise ConfigError("--tasks", task, str(error).split(" is not allowed: ", 1)[1]) from None
        tasks = list(args.tasks)
        for budget in args.budgets:
            if budget < MIN_SIMULATIONS:
                raise ConfigError("--budgets", budget, f"numbers of simulations ≥ {MIN_SIMULATIONS}")
        if args.seeds < 1:
            raise ConfigError("--seeds", args.seeds, "an integer ≥ 1")
        if not args.report_only:
            sbibm_module()
            if args.peers and not sbi_peers.available():
                raise ConfigError(
                    "--peers", " ".join(args.peers), "peers with sbi installed (make install EXTRAS=dev,sbi)"
                )
    except ConfigError as error:
        sys.exit(f"error: {error}")
    start, mmd = time.perf_counter(), [] if args.mmd else ["data.mmd=false"]
    for task in [] if args.report_only else tasks:
        for budget in args.budgets:
            run_mdn(task, budget, args.seeds, args.out, [*mmd, *args.overrides], args.launcher)
            for peer in args.peers:
                for seed in range(args.seeds):
                    print(f"== {task} × {budget}, {peer} seed {seed}", flush=True)
                    sbi_peers.run(task, budget, peer, seed, args.out, 10_000, args.mmd)
    rows = [row for task in tasks for budget in args.budgets for row in rows_of(args.out, task, budget)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "observations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if not rows:
        sys.exit(f"error: --out={args.out} holds no finished runs of these tasks and budgets")
    footer = (
        f"wall time {time.perf_counter() - start:.0f} s on {os.cpu_count()} cores"
        if not args.report_only
        else "(--report-only: rebuilt from the runs already there; their time is in the seconds table)"
    )
    benchmark.write_results(args.out, report(rows), footer, args.docs_table, "sbi_benchmark.py")


if __name__ == "__main__":
    main()
