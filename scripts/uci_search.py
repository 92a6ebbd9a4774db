"""Choose each UCI set's recipe on validation data only, and write it as
configs/experiment/uci/<set>.yaml (what make uci then trains on every split).

    python scripts/uci_search.py --root /path/to/UCI_Datasets --sets yacht concrete
    python scripts/uci_search.py --root ... --family gaussian   # a peer's: configs/experiment/uci/gaussian/

The protocol of the published numbers: every choice is made inside the training splits. Each
candidate trains on the first --splits training splits with data.search=true: the test rows are
left out altogether, 10% of the training rows validate (early stopping, best checkpoint) and
another 10% stand in for the test rows and score the candidate (mean NLL over the splits; a
failed or diverged candidate scores +inf). The search is one pass of coordinate descent over
STAGES, each stage a grid over a few keys with the others at their chosen values, starting from
the base recipe (experiment=uci; minibatches of 256 on sets with more than 2000 training rows,
so that a step costs about what it costs on the small sets). The log of every candidate's score
goes to <out>/<set>/search.md and into the recipe's header.

Each stage is an Optuna grid search (hparams_search=uci_stage): the stage's candidates and
splits asked at once and trained as stacks, successive halving stopping those whose mean
validation NLL trails at 5, 15 and 45 checks; the stage's choice is the completed candidate with
the best stand-in NLL. --exhaustive trains every candidate to its end instead (a Hydra grid), as
the flow's search always does (a flow does not stack, and its jobs run apart, so none is pruned).
make bench-search ARGS="uci ..." measures the two side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from uci import FLOW_LAUNCHER, LARGE, RECIPES, REPO, minibatches, root_and_sets, run_multirun

sys.path.insert(0, str(REPO / "src"))

# one pass, in this order; values as Hydra overrides. The network's size first (the largest
# effect on a first look at yacht: 2 layers 0.37 nats better than 1), then the noise
# regularisation that size needs, then the learning rate. The ensemble size is not searched
# here: make uci trains the single MDN and the ensemble on every split, and the validation
# NLL of those runs picks which one counts.
NOISE = ("noise", {"data.input_noise": (0.0, 0.02, 0.05, 0.1, 0.2, 0.3), "data.target_noise": (0.0, 0.02, 0.05, 0.1)})
RATE = ("rate", {"model.optimizer.lr": (1e-3, 3e-3, 1e-2), "model.optimizer.weight_decay": (0.0, 1e-4)})
STAGES = (
    ("size", {"model.hidden_size": (50, 100), "model.n_gaussians": (3, 5), "model.n_hidden_layers": (1, 2)}),
    NOISE,
    RATE,
)
BASE = {
    "data.input_noise": 0.0,
    "data.target_noise": 0.0,
    "model.hidden_size": 50,
    "model.n_gaussians": 3,
    "model.n_hidden_layers": 1,
    "model.optimizer.lr": 3e-3,
    "model.optimizer.weight_decay": 0.0,
    "model.n_members": 1,
    "data.batch_size": None,
    "data.passes_per_epoch": 100,
}


@dataclass(frozen=True)
class Family:
    """What a search searches: its stages, its starting point, the experiment it starts from,
    where its recipes go (configs/experiment/uci/<folder><set>.yaml) and the Hydra launcher its
    candidates train with (stacked, or parallel for a model that does not stack)."""

    stages: tuple
    base: dict
    experiment: str
    folder: str
    launcher: str = "stacked"


# The peers get the MDN's protocol and budget: the same stages over the keys they have. The
# Gaussian network (a deep ensemble's member, Lakshminarayanan et al. 2017) is the MDN with one
# component, so its size stage drops n_gaussians, and it adds the paper's adversarial training
# (off or its ε = 0.01) as a last stage; the flow's size stage is its network and its number of
# spline transforms.
FAMILIES = {
    "mdn": Family(STAGES, BASE, "uci", ""),
    "gaussian": Family(
        (
            (STAGES[0][0], {k: v for k, v in STAGES[0][1].items() if k != "model.n_gaussians"}),
            NOISE,
            RATE,
            ("adversarial", {"model.adversarial": (0.0, 0.01)}),
        ),
        {**BASE, "model.n_gaussians": 1, "model.adversarial": 0.0},
        "uci",
        "gaussian/",
    ),
    "flow": Family(
        (
            ("size", {"model.hidden_size": (50, 100), "model.transforms": (1, 2), "model.n_hidden_layers": (1, 2)}),
            NOISE,
            RATE,
        ),
        {k: v for k, v in BASE.items() if k not in ("model.n_gaussians", "model.n_members")}
        | {"model.transforms": 1, "model.n_hidden_layers": 2},
        "uci_flow",
        "flow/",
        FLOW_LAUNCHER,
    ),
}
# torch.compile costs ~10 s a stack and saves ~40% a step from about 16 networks up (make bench):
# the search's small stacks (5 splits of one candidate) train eager
COMPILE_FROM = 40


def base_recipe(n_train: int, base: dict = BASE) -> dict:
    """The search's starting point: full batch on small sets; minibatches of 256 on large ones,
    with an epoch (a validation check) about every 100 steps, as on the small sets."""
    if n_train <= LARGE:
        return dict(base)
    return {**base, **minibatches(int(0.8 * n_train))}  # data.search holds out 2 × 10%


def override(key: str, value) -> str:
    return f"{key}={'null' if value is None else value}"


def scores(sweep: Path, keys: list[str], splits: int) -> tuple[dict[tuple, float], dict[tuple, int]]:
    """Mean stand-in NLL over the splits per candidate (values of ``keys``), +inf if any failed
    or was pruned; and the validation check each pruned candidate stopped at (its splits stop
    together)."""
    per_candidate: dict[tuple, list[float]] = {}
    pruned: dict[tuple, int] = {}
    for record in sweep.glob("*/run.json"):
        data = json.loads(record.read_text())
        candidate = tuple(data["config"][k] for k in keys)
        metrics = data.get("metrics") or {}
        nll = metrics.get("test/nll", math.inf)
        per_candidate.setdefault(candidate, []).append(nll if math.isfinite(nll) else math.inf)
        if "search/pruned_epoch" in metrics:
            pruned[candidate] = int(metrics["search/pruned_epoch"])
    means = {c: statistics.mean(v) if len(v) == splits else math.inf for c, v in per_candidate.items()}
    return means, pruned


def score_line(candidate: tuple, nll: float, best: tuple, pruned: dict[tuple, int]) -> str:
    text = f"pruned at check {pruned[candidate]}" if candidate in pruned else f"{nll:.4f}"
    return f"  {' '.join(map(str, candidate))}: {text}{'  <- chosen' if candidate == best else ''}"


def stage_overrides(grid: dict, splits: int, pruned: bool) -> list[str]:
    """The stage's candidates as a multirun: a Hydra grid sweep over the splits, or (``pruned``)
    Optuna's grid sampler with the splits as each trial's repeats."""
    axes = [f"{k}={','.join(str(v) for v in values)}" for k, values in grid.items()]
    if not pruned:
        return ["data.search=true", f"data.split=range({splits})", *axes]
    n = math.prod(map(len, grid.values()))
    return [
        "hparams_search=uci_stage",
        f"hydra.sweeper.n_trials={n}",
        f"hydra.sweeper.n_jobs={n}",
        f"hydra.sweeper.repeats={{data.split:'range({splits})'}}",
        *axes,
    ]


def search_set(
    root: Path,
    name: str,
    splits: int,
    out: Path,
    stages: list[str],
    extra: list[str],
    family: Family = FAMILIES["mdn"],
    pruned: bool = False,
) -> tuple[dict, list[str], int]:
    from mdnlab.problems import UCISet

    uci = UCISet(str(root), name)
    n_train = len(uci.split(0)[0])
    # large sets: fewer splits (their 10% stand-in rows already score with little noise)
    splits = min(splits, uci.n_splits(), 3 if n_train > LARGE else splits)
    choice, log = base_recipe(n_train, family.base), []
    for index, (stage, grid) in enumerate(family.stages):
        if stage not in stages:
            continue
        keys = list(grid)
        fixed = [override(k, v) for k, v in choice.items() if k not in grid]
        sweep = out / name / f"{index}_{stage}"
        from mdnlab.training.stack_plan import STACKABLE

        networks = splits * math.prod(len(v) for k, v in grid.items() if k in STACKABLE)  # in a stack
        compile_ = [] if networks >= COMPILE_FROM else ["hydra.launcher.compile=false"]
        seconds = run_multirun(
            root,
            name,
            sweep,
            [*stage_overrides(grid, splits, pruned), *fixed, *compile_, *extra],
            f"search stage {stage}: {math.prod(map(len, grid.values()))} candidates × {splits} splits",
            experiment=family.experiment,
            launcher=family.launcher,
        )
        means, pruned_checks = scores(sweep, keys, splits)
        table = sorted(means.items(), key=lambda item: item[1])
        best, best_nll = table[0]
        if not math.isfinite(best_nll):
            sys.exit(f"error: every candidate of stage {stage} failed on {name}: see {sweep}/*/error.txt")
        choice.update(zip(keys, best))
        log += [f"stage {stage} ({seconds:.0f} s): " + ", ".join(keys)]
        log += [score_line(c, v, best, pruned_checks) for c, v in table]
    return choice, log, splits


def write_recipe(name: str, choice: dict, log: list[str], splits: int, path: Path, experiment: str = "uci") -> None:
    from omegaconf import OmegaConf

    nested = OmegaConf.create({"data": {"name": name}})
    for key, value in choice.items():
        OmegaConf.update(nested, key, value)
    header = [
        f"# {name}: chosen by scripts/uci_search.py ({time.strftime('%Y-%m-%d')}) on validation only:",
        f"# training splits 0-{splits - 1} with data.search=true (test rows left out; 10% of the training",
        "# rows validate, another 10% score), mean stand-in NLL per candidate, stages in order:",
    ]
    body = OmegaConf.to_yaml(nested)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# @package _global_\n"
        + "\n".join(header + [f"#   {line}" for line in log])
        + f"\ndefaults:\n  - /experiment/{experiment}\n\n"
        + body
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("MDNLAB_UCI_ROOT"), help="your UCI_Datasets folder")
    parser.add_argument("--sets", nargs="*", default=None, help="set names (default: all under the root)")
    parser.add_argument("--splits", type=int, default=5, help="training splits each candidate is scored on")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "uci" / "search")
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="where the chosen recipes are written")
    parser.add_argument(
        "--family",
        default="mdn",
        choices=list(FAMILIES),
        help="mdn, or a peer: gaussian (the deep ensemble's network), flow",
    )
    parser.add_argument(
        "--stages",
        nargs="*",
        default=None,
        choices=sorted({s for f in FAMILIES.values() for s, _ in f.stages}),
        help="stages to run (default: all of the family's; the others keep the base recipe's values)",
    )
    parser.add_argument(
        "--exhaustive", action="store_true", help="every candidate to its end (default: successive halving)"
    )
    parser.add_argument("overrides", nargs="*", help="extra mdn-train overrides for every run (e.g. a shorter test)")
    args = parser.parse_args()
    root, sets = root_and_sets(args)
    family = FAMILIES[args.family]
    if args.stages is None:
        args.stages = [s for s, _ in family.stages]
    for name in sets:
        start = time.perf_counter()
        out = args.out / family.folder
        choice, log, splits = search_set(
            root,
            name,
            args.splits,
            out,
            args.stages,
            args.overrides,
            family,
            not args.exhaustive and family.launcher == "stacked",
        )
        log.append(f"search took {time.perf_counter() - start:.0f} s on {os.cpu_count()} cores")
        recipe = args.recipes / f"{family.folder}{name}.yaml"
        write_recipe(name, choice, log, splits, recipe, family.experiment)
        (out / name / "search.md").write_text("\n".join(log) + "\n")
        print("\n".join(log), f"-> {recipe}", sep="\n", flush=True)


if __name__ == "__main__":
    main()
