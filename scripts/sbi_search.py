"""Choose the MDN's recipe for sbibm tasks and budgets on validation simulations only, and write
each as configs/experiment/sbi/<task>_<budget>.yaml (what make sbi then trains and scores).

    python scripts/sbi_search.py --tasks two_moons slcp --budgets 10000
    python scripts/sbi_search.py --tasks two_moons --budgets 1000 -- hydra.sweeper.n_trials=16

Each search is hparams_search=sbi_mdn (an Optuna search, TPE and successive halving, trials of
one network shape as one stack) over the budget's own simulations, data.seed 0: the objective is
the best validation NLL of θ on the budget's 10% validation simulations, never a C2ST against
the reference posteriors. The recipe's header lists every trial: its state, score and values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import benchmark
from sbi_benchmark import BUDGETS, RECIPES, REPO

from mdnlab.problems.sbibm_task import TASKS

QUIET = ("callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")


def search(task: str, budget: int, out: Path, extra: list[str]) -> tuple[Path, float]:
    sweep = out / task / str(budget)
    seconds = benchmark.run_multirun(
        sweep,
        [
            "experiment=sbi",
            "hparams_search=sbi_mdn",
            f"data.task={task}",
            f"data.num_simulations={budget}",
            *QUIET,
            *extra,
        ],
        f"{task} × {budget}: recipe search",
    )
    return sweep, seconds


def write_recipe(task: str, budget: int, sweep: Path, seconds: float, path: Path, extra: list[str]) -> dict:
    """The best completed trial's values over experiment=sbi, every trial in the header."""
    import json

    import optuna
    from omegaconf import OmegaConf

    from mdnlab.runs.search import storage

    saved = json.loads((sweep / "search.json").read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=saved["study"], storage=storage(saved["storage"], sweep))
    best = study.best_trial
    trials = sorted(study.get_trials(), key=lambda t: (t.value is None, t.value or 0.0))
    keys = list(best.params)
    header = [
        f"# {task} at {budget} simulations: chosen by scripts/sbi_search.py ({time.strftime('%Y-%m-%d')},",
        f"# {seconds:.0f} s) on the budget's validation simulations only (hparams_search=sbi_mdn: the best",
        "# validation NLL of θ in the fitted coordinates; data.seed 0).",
        *([f"# Search overrides: {' '.join(extra)}"] if extra else []),
        "# Every trial, best first:",
        "#   trial  state     val NLL   " + "  ".join(keys),
    ]
    for t in trials:
        value = "" if t.value is None else f"{t.value:.4f}"
        if t.state == optuna.trial.TrialState.PRUNED:
            value = f"{min(t.intermediate_values.values()):.4f} @{t.last_step}" if t.intermediate_values else ""
        values = "  ".join(_cell(t.params.get(k)) for k in keys)
        header.append(f"#   {t.number:>5}  {t.state.name.lower():<8}  {value:<9}  {values}")
    nested = OmegaConf.create({})
    for key, value in best.params.items():
        OmegaConf.update(nested, key, value, force_add=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# @package _global_\n" + "\n".join(header) + "\ndefaults:\n  - /experiment/sbi\n\n" + OmegaConf.to_yaml(nested)
    )
    return {"task": task, "budget": budget, "value": best.value, "params": best.params, "seconds": seconds}


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument("--budgets", nargs="*", type=int, default=list(BUDGETS))
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "sbi" / "search")
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="where the chosen recipes are written")
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for the searches")
    args = parser.parse_args()
    bad = [b for b in args.budgets if b < 100]
    if bad:
        sys.exit(f"error: --budgets {bad[0]} is not allowed: numbers of simulations ≥ 100")
    for task in args.tasks:
        for budget in args.budgets:
            sweep, seconds = search(task, budget, args.out, args.overrides)
            recipe = args.recipes / f"{task}_{budget}.yaml"
            chosen = write_recipe(task, budget, sweep, seconds, recipe, args.overrides)
            print(f"{task} × {budget}: val NLL {chosen['value']:.4f} with {chosen['params']} -> {recipe}", flush=True)


if __name__ == "__main__":
    main()
