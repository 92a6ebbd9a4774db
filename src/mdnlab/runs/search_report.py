"""What a search leaves to read (``runs.search``'s studies): ``search.json``, the history,
importance and validation-curve figures (files and TensorBoard), and mdn-report's section."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mdnlab.runs.search import storage


def summary(study: Any, seconds: float | None = None) -> dict[str, Any]:
    """The study at a glance: trials by state, the best five, and what pruning spared, in
    validation checks (a pruned trial's checks against the median completed trial's)."""
    import statistics

    import optuna

    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    complete = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    full = statistics.median(t.last_step or 0 for t in complete) if complete else None
    return {
        "study": study.study_name,
        "trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "best": [
            {"trial": t.number, "job": t.user_attrs.get("job"), "value": t.value, "params": t.params}
            for t in complete[:5]
        ],
        "checks_trained": sum(t.last_step or 0 for t in trials),
        "median_checks_completed": full,
        "checks_spared_by_pruning": None if full is None else sum(max(0.0, full - (t.last_step or 0)) for t in pruned),
        "seconds": seconds,
    }


def write_summary(study: Any, sweep_dir: Path, storage_line: str, seconds: float | None = None) -> dict[str, Any]:
    """``<sweep dir>/search.json`` (with where the study lives, for mdn-report and
    optuna-dashboard) and, with two completed trials or more, the optimisation history, the
    parameter importances and the trials' validation curves as figures (``<sweep dir>/search/``)
    and in TensorBoard (``tensorboard --logdir <sweep dir>/search``)."""
    import json

    from mdnlab.io import write_json_atomic

    record = {**summary(study, seconds), "storage": storage_line}
    write_json_atomic(Path(sweep_dir) / "search.json", record)
    if record["states"].get("complete", 0) >= 2:
        _figures(study, Path(sweep_dir) / "search")
    print(f"search: {json.dumps({k: record[k] for k in ('trials', 'states')})}; best {record['best'][:1]}")
    return record


def _figures(study: Any, folder: Path) -> None:
    import matplotlib
    import matplotlib.figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures = {"history": plots.plot_optimization_history(study).figure}
        if len(study.best_trial.params) >= 1:
            # PED-ANOVA: Optuna's own importance evaluator that needs no scikit-learn
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            figures["importance"] = plots.plot_param_importances(study, evaluator=evaluator).figure
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            figures["intermediate"] = plots.plot_intermediate_values(study).figure
    writer = SummaryWriter(str(folder))
    for name, figure in figures.items():
        assert isinstance(figure, matplotlib.figure.Figure)
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        writer.add_figure(f"search/{name}", figure, close=False)
        plt.close(figure)
    writer.close()


def report(sweep_dir: Path) -> str | None:
    """mdn-report's section on a search sweep (one with search.json): the study as its storage
    holds it now (every sweeper's trials), in Markdown; None for another sweep."""
    import json

    import optuna

    path = Path(sweep_dir) / "search.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=saved["study"], storage=storage(saved["storage"], Path(sweep_dir)))
    now = summary(study, saved.get("seconds"))
    states = ", ".join(f"{n} {s}" for s, n in now["states"].items())
    lines = [
        f"Search: study {now['study']!r}, {now['trials']} trials ({states}), in {saved['storage']}",
        "",
        "| rank | trial | job | best val score | parameters |",
        "|---|---|---|---|---|",
    ]
    for rank, best in enumerate(now["best"], 1):
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        lines.append(f"| {rank} | {best['trial']} | {best['job']} | {best['value']:.4f} | {params} |")
    if now["checks_spared_by_pruning"] is not None:
        trained, spared = now["checks_trained"], now["checks_spared_by_pruning"]
        lines += [
            "",
            f"validation checks trained: {trained}; pruning spared about {spared:.0f} more (each pruned trial "
            f"against the median completed trial's {now['median_checks_completed']:.0f}), "
            f"{spared / (trained + spared):.0%} of the search",
        ]
    lines += ["", f"browse it: optuna-dashboard {saved['storage']}", ""]
    return "\n".join(lines)
