"""Optuna searches (``hparams_search=mdn_optuna``): the study, its samplers and pruners by name,
the search space in Hydra's sweep grammar, and each trial's link to its study while it trains.

The sweeper (``hydra_plugins.mdnlab_launcher.optuna_sweeper``) asks Optuna for a batch of
trials and launches them as mdn-train jobs; each job's ``search`` config names its study and
trial number. While a job trains, ``TrialLink`` reports its validation score at every check
and asks the study's pruner whether to stop; the stacked loop reports every model of a stack
first and asks after, so a rung's decision sees the whole batch. A pruned job records the step
(metrics.json: ``search/pruned_step``, ``search/pruned_epoch``) and returns ``Pruned``; the
sweeper tells the study. ``runs.search_report`` writes what a search leaves to read. Nothing
here imports Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mdnlab.errors import ConfigError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("successive_halving", "hyperband", "median")
DEFAULT_STORAGE = "optuna.log"  # in the sweep directory: Optuna's journal file (see storage())


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial's job returns: the validation score it was stopped at, and when."""

    value: float
    step: int


def objective(metrics: Mapping[str, float] | None) -> float | Pruned | None:
    """What mdn-train hands a sweeper: the best validation score, never a test number; a
    pruned run's as ``Pruned``."""
    metrics = metrics or {}
    value = metrics.get("val/best_nll", metrics.get("val/best_mse"))
    if "search/pruned_step" in metrics and value is not None:
        return Pruned(float(value), int(metrics["search/pruned_epoch"]))
    return value


# ---- the sweeper's side -----------------------------------------------------------------------


def storage(value: str | None, sweep_dir: Path) -> Any:
    """The study's storage: a journal file (the default ``<sweep dir>/optuna.log``, or any path
    ending in .log, or ``journal:<path>``), or a database URL (``sqlite:///<path>``, ...).

    The journal file is the default because a stack checks many trials at once: on this
    project's 2-core machine one report and pruning decision took 0.46 ms a trial with the
    journal file and 13 ms with SQLite (16 trials × 20 checks), the pruner reading every trial
    of the study each time. It is also what Optuna recommends for several processes on a shared
    filesystem (NFS), where SQLite's locks are not safe."""
    import optuna

    text = str(value) if value is not None else str(sweep_dir / DEFAULT_STORAGE)
    if "://" in text and not text.startswith("journal:"):
        if text.startswith("sqlite:///"):
            _writable(Path(text[len("sqlite:///") :]), value)
        return text
    path = Path(text.removeprefix("journal:")).expanduser()
    _writable(path, value)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _writable(path: Path, value: str | None) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as error:
        raise ConfigError(
            "hydra.sweeper.storage",
            value if value is not None else str(path),
            f"a file this process can write (a journal file path, journal:<path> or sqlite:///<path>; "
            f"null: {DEFAULT_STORAGE} in the sweep directory): {error.strerror or error}",
        ) from None


def sampler(name: str, options: Mapping[str, Any], seed: int | None, space: Mapping[str, Any]) -> Any:
    """Optuna's sampler by name; ``grid`` walks every combination of ``choice`` / ``range`` values."""
    import optuna

    name = str(name)
    if name not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler", name, "one of " + ", ".join(SAMPLERS))
    options = dict(options or {})
    if name == "grid":
        grid = {key: list(values) for key, values in space.items() if isinstance(values, list)}
        if len(grid) != len(space):
            raise ConfigError(
                "hydra.sweeper.sampler",
                name,
                "tpe or random for interval() parameters (grid needs choice() or range() for every key)",
            )
        return _ask_tell_grid(grid, seed)
    sampler_class = optuna.samplers.TPESampler if name == "tpe" else optuna.samplers.RandomSampler
    return sampler_class(seed=seed, **options)


def _ask_tell_grid(grid: dict[str, list[Any]], seed: int | None) -> Any:
    """Optuna's grid sampler without its ``study.stop()`` once the grid is done: that works only
    inside ``study.optimize`` and raises in ask-and-tell, where the sweeper itself stops asking
    at the grid's size."""
    import optuna

    class AskTellGrid(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass

    return AskTellGrid(grid, seed=seed)


# each pruner's options unless given: a rung every 3× the checks from 5 on (min_resource "auto"
# would wait for a trial to complete, and a stack's first batch has none until its end)
PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "successive_halving": {"min_resource": 5, "reduction_factor": 3},
    "hyperband": {"min_resource": 5, "reduction_factor": 3},
    "median": {"n_warmup_steps": 5},
}


def pruner(name: str | None, options: Mapping[str, Any] | None = None, max_resource: int | None = None) -> Any:
    """Optuna's pruner by name (None: ``NopPruner``, every trial runs to its end), with
    ``PRUNER_DEFAULTS`` under the given options; Hyperband's ``max_resource``: the trials' most
    validation checks (trainer.max_epochs)."""
    import optuna

    defaults = dict(PRUNER_DEFAULTS.get(str(name), {}))
    if name == "hyperband" and max_resource is not None:
        defaults["max_resource"] = max_resource
    options = {**defaults, **dict(options or {})}
    if name is None or str(name) in ("none", "null"):
        return optuna.pruners.NopPruner()
    classes: dict[str, Any] = {
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "median": optuna.pruners.MedianPruner,
    }
    if str(name) not in classes:
        raise ConfigError("hydra.sweeper.pruner", name, "one of " + ", ".join(PRUNERS) + ", or null (no pruning)")
    try:
        return classes[str(name)](**options)
    except (TypeError, ValueError) as error:
        raise ConfigError("hydra.sweeper.pruner_options", options, f"{name}'s own options ({error})") from None


def distributions(params: Mapping[str, str], config_keys: Any) -> dict[str, Any]:
    """The search space: each ``key: choice(...) | interval(lo, hi) | tag(log, interval(...)) |
    range(start, stop[, step])`` (Hydra's sweep grammar) as what ``space_value`` reads: a list
    of values for choice/range, an Optuna distribution for interval. ``config_keys``: the
    composed config, to refuse a key that is not one of its keys."""
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    for key, text in _flat(params).items():
        key = str(key)
        if OmegaConf.select(config_keys, key, default="\0missing") == "\0missing":
            raise ConfigError(
                f"hydra.sweeper.params.{key}", text, "a key of the composed config (e.g. model.n_gaussians)"
            )
        override = parser.parse_override(f"{key}={text}")
        sweep = override.value()
        if isinstance(sweep, ChoiceSweep):
            space[key] = list(sweep.list)
        elif isinstance(sweep, RangeSweep):
            space[key] = list(override.sweep_iterator())
        elif isinstance(sweep, IntervalSweep):
            low, high, log = sweep.start, sweep.end, "log" in sweep.tags
            assert low is not None and high is not None  # the grammar requires both
            if "int" in sweep.tags:
                space[key] = optuna.distributions.IntDistribution(int(low), int(high), log=log)
            else:
                space[key] = optuna.distributions.FloatDistribution(float(low), float(high), log=log)
        else:
            raise ConfigError(
                f"hydra.sweeper.params.{key}", text, "choice(...), range(start, stop[, step]) or interval(low, high)"
            )
    return space


def _flat(params: Any, prefix: str = "") -> dict[str, str]:
    """``{model: {optimizer: {lr: ...}}}`` (what +hydra.sweeper.params.model.optimizer.lr=...
    makes) as ``{"model.optimizer.lr": ...}``; dotted keys stay as they are."""
    flat: dict[str, str] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping) or hasattr(value, "items"):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """One value per key of the space, asked of ``trial``. Choices Optuna cannot store (lists,
    say) are asked as their index."""
    import optuna

    values: dict[str, Any] = {}
    for key, what in space.items():
        if isinstance(what, optuna.distributions.IntDistribution):
            values[key] = trial.suggest_int(key, what.low, what.high, log=what.log)
        elif isinstance(what, optuna.distributions.FloatDistribution):
            values[key] = trial.suggest_float(key, what.low, what.high, log=what.log)
        elif all(v is None or isinstance(v, (bool, int, float, str)) for v in what):
            values[key] = trial.suggest_categorical(key, what)
        else:
            values[key] = what[trial.suggest_categorical(key, list(range(len(what))))]
    return values


def worker_name(sweep_dir: Path) -> str:
    """Which sweeper runs a trial: its sweep directory (a rerun of the same sweep is the same one)."""
    return str(Path(sweep_dir).resolve())


# ---- the training job's side ------------------------------------------------------------------


class TrialLink:
    """A training job's trial, opened from its ``search`` config (storage, study, trial number):
    ``report`` a validation score at a check, ``should_prune`` by the study's own pruner (saved
    with the study by the sweeper). ``jobs``: how many jobs the trial scores together (its
    ``repeats``: one per split, say), whose stack reports their mean once. For a job outside a
    search, ``of`` returns None."""

    _studies: dict[tuple[str, str], Any] = {}  # one study per process: a journal replays on loading

    def __init__(self, storage_value: str, study_name: str, number: int) -> None:
        import optuna

        key = (storage_value, study_name)
        if key not in self._studies:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            where = storage(storage_value, Path.cwd())
            settings = optuna.load_study(study_name=study_name, storage=where).user_attrs.get("pruner", {})
            rule = pruner(settings.get("name"), settings.get("options"), settings.get("max_resource"))
            self._studies[key] = optuna.load_study(study_name=study_name, storage=where, pruner=rule)
        self.study = self._studies[key]
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.number = number
        self.jobs = int(self.study._storage.get_trial(trial_id).user_attrs.get("jobs", 1))

    @classmethod
    def of(cls, cfg: Any) -> "TrialLink | None":
        search = cfg.get("search") if hasattr(cfg, "get") else None
        if not search or search.get("trial") is None:
            return None
        return cls(str(search.storage), str(search.study), int(search.trial))

    def report(self, value: float, step: int) -> None:
        if math.isfinite(value):  # a NaN check is the run's own failure, not the pruner's
            self.trial.report(value, step)

    def should_prune(self) -> bool:
        return bool(self.trial.should_prune())


def pruned_metrics(best: float | None, metric: str, step: int, epoch: int, epochs: int) -> dict[str, float]:
    """What a pruned run records in metrics.json (no test split scored: the search is done with it)."""
    return {
        f"val/best_{metric}": math.nan if best is None else float(best),
        "search/pruned_step": float(step),
        "search/pruned_epoch": float(epoch),
        "train/steps": float(step),
        "train/epochs": float(epochs),
    }
