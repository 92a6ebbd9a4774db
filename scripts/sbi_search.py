"""Choose the MDN's recipe for sbibm tasks and budgets on validation simulations only, and write
each as configs/experiment/sbi/<task>_<budget>.yaml (what make sbi then trains and scores).

    python scripts/sbi_search.py --tasks two_moons slcp --budgets 10000
    python scripts/sbi_search.py --tasks two_moons --budgets 1000 -- hydra.sweeper.n_trials=16

Each search is hparams_search=sbi_mdn (an Optuna search, TPE and successive halving, trials of
one network shape as one stack) over the budget's own simulations, data.seed 0, scored on the
budget's 10% validation simulations, never by a C2ST against the reference posteriors. A task
whose prior is a box is searched once per support (--supports: data.support=transform fits
T⁻¹(θ), reject fits θ and renormalises over the box, truncate does too and trains on that truncated
density, with diagonal covariance): each study ranks and prunes its trials by
the validation NLL in its own fitted coordinates, and the recipe is the completed trial, over
both studies, with the best validation NLL of θ in θ's own units (val/nll_theta, the one
density every support defines). The recipe's header lists every trial: its state, scores and
values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import benchmark
from sbi_benchmark import BUDGETS, RECIPES, REPO

from mdnlab.problems.sbibm_task import SUPPORTS, TASKS, SBIBMTask

QUIET = ("callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")
# what a support needs beyond experiment=sbi: the truncated NLL's box mass is closed form for diagonal covariance only
SUPPORT_SETTINGS: dict[str, dict[str, str]] = {"truncate": {"model.covariance": "diag"}}


def search(task: str, budget: int, support: str, out: Path, extra: list[str]) -> tuple[Path, float]:
    sweep = out / task / str(budget) / support
    seconds = benchmark.run_multirun(
        sweep,
        [
            "experiment=sbi",
            "hparams_search=sbi_mdn",
            f"data.task={task}",
            f"data.num_simulations={budget}",
            f"data.support={support}",
            *(f"{key}={value}" for key, value in SUPPORT_SETTINGS.get(support, {}).items()),
            f"hydra.sweeper.study_name=sbi_{task}_{budget}_{support}",
            *QUIET,
            *extra,
        ],
        f"{task} × {budget}, support={support}: recipe search",
    )
    return sweep, seconds


def trials_of(sweep: Path) -> list[dict]:
    """A search's trials, best first: number, state, value (the fitted coordinates' validation
    NLL; a pruned trial's best before it stopped, and where), val/nll_theta (completed trials,
    from their run directory) and the values tried."""
    import json

    import optuna

    from mdnlab.runs.search import storage

    saved = json.loads((sweep / "search.json").read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=saved["study"], storage=storage(saved["storage"], sweep))
    rows = []
    for t in study.get_trials():
        row = {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params, "theta": None}
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            row["value"], row["step"] = min(t.intermediate_values.values()), t.last_step
        if t.state == optuna.trial.TrialState.COMPLETE:
            (metrics,) = [
                json.loads(m.read_text())["metrics"] for m in sweep.glob(f"{t.user_attrs['job']}_*/metrics.json")
            ]
            row["theta"] = metrics.get("val/nll_theta")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["value"] is None, r["value"] or 0.0))


def write_recipe(
    task: str, budget: int, searches: dict[str, list[dict]], seconds: float, path: Path, extra: list[str]
) -> dict:
    """The completed trial with the best val/nll_theta over the supports' searches, its values
    over experiment=sbi (and its support), every trial in the header."""
    from omegaconf import OmegaConf

    candidates = [
        (r["theta"], support, r) for support, rows in searches.items() for r in rows if r["theta"] is not None
    ]
    theta, support, best = min(candidates, key=lambda c: c[0])
    keys = list(best["params"])
    header = [
        f"# {task} at {budget} simulations: chosen by scripts/sbi_search.py ({time.strftime('%Y-%m-%d')},",
        f"# {seconds:.0f} s) on the budget's validation simulations only (hparams_search=sbi_mdn,",
        "# data.seed 0): the completed trial with the best validation NLL of θ in θ's own units",
        "# (val NLL θ); each search ranked and pruned by its fitted coordinates' validation NLL.",
        *([f"# Search overrides: {' '.join(extra)}"] if extra else []),
    ]
    for name, rows in searches.items():
        best_here = min((r["theta"] for r in rows if r["theta"] is not None), default=float("nan"))
        header += [
            f"# data.support={name}: best val NLL θ {best_here:.4f}; every trial, best first:",
            "#   trial  state     val NLL    val NLL θ  " + "  ".join(keys),
        ]
        for r in rows:
            value = "" if r["value"] is None else f"{r['value']:.4f}" + (f" @{r['step']}" if "step" in r else "")
            theta_cell = "" if r["theta"] is None else f"{r['theta']:.4f}"
            values = "  ".join(_cell(r["params"].get(k)) for k in keys)
            header.append(f"#   {r['number']:>5}  {r['state']:<8}  {value:<10} {theta_cell:<9}  {values}")
    nested = OmegaConf.create({})
    for key, value in {**best["params"], "data.support": support, **SUPPORT_SETTINGS.get(support, {})}.items():
        OmegaConf.update(nested, key, value, force_add=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# @package _global_\n" + "\n".join(header) + "\ndefaults:\n  - /experiment/sbi\n\n" + OmegaConf.to_yaml(nested)
    )
    return {"task": task, "budget": budget, "theta": theta, "support": support, "params": best["params"]}


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument("--budgets", nargs="*", type=int, default=list(BUDGETS))
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "sbi" / "search")
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="where the chosen recipes are written")
    parser.add_argument(
        "--supports", nargs="+", default=list(SUPPORTS), choices=SUPPORTS, help="searched where the prior is a box"
    )
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for the searches")
    args = parser.parse_args()
    bad = [b for b in args.budgets if b < 100]
    if bad:
        sys.exit(f"error: --budgets {bad[0]} is not allowed: numbers of simulations ≥ 100")
    for task in args.tasks:
        supports = args.supports if SBIBMTask(task).bounded else ["transform"]  # R^D: the supports are one
        for budget in args.budgets:
            searches, seconds = {}, 0.0
            for support in supports:
                sweep, took = search(task, budget, support, args.out, args.overrides)
                searches[support], seconds = trials_of(sweep), seconds + took
            recipe = args.recipes / f"{task}_{budget}.yaml"
            chosen = write_recipe(task, budget, searches, seconds, recipe, args.overrides)
            print(
                f"{task} × {budget}: val NLL θ {chosen['theta']:.4f} with support={chosen['support']} "
                f"{chosen['params']} -> {recipe}",
                flush=True,
            )


if __name__ == "__main__":
    main()
