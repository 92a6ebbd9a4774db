"""make uci: the UCI regression benchmark, every split of every set under the root (or those
named): the MDN (single and deep ensemble, each set's splits trained as one stack with
hydra/launcher=stacked) beside its peers run here under the same protocol (a conditional spline
flow, a Gaussian deep ensemble and NGBoost), and the published numbers.

    make uci ARGS="--root /path/to/UCI_Datasets"            # or MDNLAB_UCI_ROOT=...
    python scripts/uci.py --root R --sets yacht concrete --peers flow gaussian --out logs/uci/run1

Writes <out>/splits.csv (one row per set, method and split) and <out>/results.md (scripts/
uci_report.py: NLL, RMSE and CRPS per method, paired differences MDN − peer, time, spikes).
Each set is one multirun in <out>/<set> (the single MDNs one stack, the ensembles another), each
peer one under <out>/<set>/<peer>: an interrupted run keeps its finished jobs, and running the
same command again trains only what is missing. Every method trains with its recipe chosen on
validation rows inside the training splits by scripts/uci_search.py (experiment=uci/<set>,
uci/gaussian/<set>, uci/flow/<set>; the base recipe where there is none); test rows are only
scored. NGBoost needs the peers extra (pip install -e '.[peers]'); without it its columns stay
empty and make uci says so.
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

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "experiment" / "uci"
sys.path.insert(0, str(REPO / "src"))

FIELDS = (
    "set",
    "model",
    "split",
    "nll",
    "rmse",
    "crps",
    "coverage_90",
    "pit_ks",
    "steps",
    "val_nll",
    "seconds",
    "checkpoint",
)
PEER_MODELS = ("flow", "gaussian", "ngboost")


# zuko's flows are not batched across models, so their jobs run side by side, one per core
FLOW_LAUNCHER = "parallel"
STACKED_LAUNCHER_KEYS = ("hydra.launcher.compile=", "hydra.launcher.threads=", "hydra.launcher.max_models=")
MINIBATCH, LARGE = 256, 2000  # rows a step, and the training-split size above which steps use minibatches


def minibatches(fit_rows: int) -> dict:
    """A large set's steps: minibatches of 256, with an epoch (a validation check) about every
    100 steps, as full batches give on the small sets (a full-batch step of 7000 rows costs
    about what 27 minibatch steps do)."""
    return {"data.batch_size": MINIBATCH, "data.passes_per_epoch": max(1, round(100 * MINIBATCH / fit_rows))}


def recipe(name: str, folder: str = "", base: str = "uci") -> str:
    """The set's chosen recipe (configs/experiment/uci/<folder><set>.yaml, written by
    scripts/uci_search.py), else the base recipe."""
    return f"uci/{folder}{name}" if (RECIPES / f"{folder}{name}.yaml").is_file() else base


def run_multirun(
    root: Path,
    name: str,
    sweep: Path,
    overrides: list[str],
    what: str,
    experiment: str | None = None,
    launcher: str = "stacked",
) -> float:
    """One mdn-train multirun (hydra/launcher=``launcher``) on set ``name`` with its recipe (or
    ``experiment``); its progress lines shown."""
    experiment = experiment or recipe(name)
    if launcher != "stacked":  # the stacked launcher's own keys (a test's threads=1) mean nothing to another
        overrides = [o for o in overrides if not o.startswith(STACKED_LAUNCHER_KEYS)]
    return benchmark.run_multirun(
        sweep,
        [f"experiment={experiment}", f"data.root={root}", f"data.name={name}", *overrides],
        f"{name} ({experiment}), {what}",
        launcher,
    )


def run_set(root: Path, name: str, members: int, out: Path, splits: int | None, extra: list[str]) -> float:
    """Every split of the set, single MDN and ``members``-member ensemble: one process, two stacks."""
    from mdnlab.problems import UCISet

    n = UCISet(str(root), name).n_splits() if splits is None else splits
    sizes = f"1,{members}" if members > 1 else "1"
    return run_multirun(
        root,
        name,
        out / name,
        [f"data.split=range({n})", f"model.n_members={sizes}", *extra],
        f"{n} splits, {'single and ' + str(members) + '-member ensemble' if members > 1 else 'single'}",
    )


def run_peer(root: Path, name: str, peer: str, out: Path, splits: int | None, extra: list[str]) -> float:
    """Every split of the set for one peer, in <out>/<set>/<peer>."""
    import uci_ngboost

    from mdnlab.problems import UCISet

    if peer == "ngboost":
        return uci_ngboost.run_set(root, name, out, splits)
    uci = UCISet(str(root), name)
    n = uci.n_splits() if splits is None else splits
    base = "uci_flow" if peer == "flow" else "uci"
    experiment = recipe(name, f"{peer}/", base)
    # a peer with no recipe of its own starts where its search would: minibatches on a large set
    n_train = len(uci.split(0)[0])
    batches = minibatches(int(0.9 * n_train)) if experiment == base and n_train > LARGE else {}
    steps = [f"{k}={v}" for k, v in batches.items()]
    if peer == "flow":  # a flow does not stack: one job per core (each on one torch thread)
        return run_multirun(
            root,
            name,
            out / name / peer,
            [f"data.split=range({n})", *steps, *extra],
            f"{n} splits, flow",
            experiment,
            FLOW_LAUNCHER,
        )
    # the Gaussian deep ensemble: 5 one-component networks (Lakshminarayanan et al., 2017)
    return run_multirun(
        root,
        name,
        out / name / peer,
        [f"data.split=range({n})", "model.n_gaussians=1", "model.n_members=5", *steps, *extra],
        f"{n} splits, Gaussian deep ensemble",
        experiment=experiment,
    )


def model_of(config: dict) -> str:
    if config["model._target_"].endswith("ConditionalFlow"):
        return "flow"
    if config["model.n_gaussians"] == 1 and config["model.n_members"] > 1:
        return "gaussian"
    return "single" if config["model.n_members"] == 1 else "ensemble"


def experiment_of(record: dict) -> str:
    """The experiment a run's command line named (its recipe), from the overrides it saved."""
    overrides = (record.get("hydra_files") or {}).get("overrides.yaml", "")
    return next((line.split("=", 1)[1] for line in overrides.splitlines() if line.startswith("- experiment=")), "")


def rows_of(out: Path, name: str) -> list[dict]:
    """The set's finished runs, every method: the MDNs' and the mdn-train peers' run.json files
    and NGBoost's records."""
    from uci_report import ngboost_rows

    rows = []
    for record in sorted([*(out / name).glob("*/run.json"), *(out / name).glob("*/*/run.json")]):
        data = json.loads(record.read_text())
        m = data.get("metrics")
        if not m:
            continue
        rows.append(
            {
                "set": name,
                "model": model_of(data["config"]),
                "split": data["config"]["data.split"],
                "nll": m["test/nll"],
                "rmse": math.sqrt(m["test/mse"]),
                "crps": m["test/crps"],
                "coverage_90": m["test/coverage_90"],
                "pit_ks": m["test/pit_ks"],
                "steps": m["train/steps"],
                "val_nll": m["val/best_nll"],
                "seconds": data.get("fit_seconds") or 0.0,
                "checkpoint": data["tested_checkpoint"],
                "recipe": experiment_of(data),
            }
        )
    return sorted(rows + ngboost_rows(out, name), key=lambda r: (r["model"], r["split"]))


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
    import uci_ngboost
    from uci_report import report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("MDNLAB_UCI_ROOT"), help="your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=None, help="set names (default: all under the root)")
    parser.add_argument("--members", type=int, default=5, help="deep ensemble size (0: single MDN only)")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=list(PEER_MODELS),
        choices=PEER_MODELS,
        help="the peers to run beside the MDN (default: all three; none: --peers)",
    )
    parser.add_argument("--splits", type=int, default=None, help="only the first N splits (a quick look)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "uci" / "latest")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the tables from what --out holds")
    parser.add_argument(
        "--docs-table",
        type=Path,
        default=None,
        help="also write the tables here (docs/tables/uci.md: the docs page includes it)",
    )
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for every run")
    args = parser.parse_args()
    root, sets = root_and_sets(args)
    peers = list(args.peers)
    if "ngboost" in peers and not uci_ngboost.available() and not args.report_only:
        print("NGBoost is not installed (pip install -e '.[peers]'): its columns stay empty", flush=True)
        peers.remove("ngboost")
    start, seconds = time.perf_counter(), {}
    for name in [] if args.report_only else sets:
        seconds[name] = run_set(root, name, args.members, args.out, args.splits, args.overrides)
        for peer in peers:
            seconds[name] += run_peer(root, name, peer, args.out, args.splits, args.overrides)
    rows = [row for name in sets for row in rows_of(args.out, name)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "splits.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tables = report(root, rows)
    timing = ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items())
    footer = (
        f"wall time {time.perf_counter() - start:.0f} s ({timing}) on {os.cpu_count()} cores"
        if seconds
        else "(--report-only: rebuilt from the runs already there; their time is in that run's output)"
    )
    benchmark.write_results(args.out, tables, footer, args.docs_table, "uci.py", {str(args.root): "<UCI root>"})


if __name__ == "__main__":
    main()
