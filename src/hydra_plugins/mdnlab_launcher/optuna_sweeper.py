"""``hparams_search=mdn_optuna``'s sweeper: an Optuna (5.x) ask-and-tell search whose batches of
trials go to any launcher (``hydra/launcher=stacked``: a batch's trials of one architecture
train as one stack), each trial reporting its validation score at every check and stopping
where the study's pruner says (``mdnlab.runs.search``).

Written here, not hydra-optuna-sweeper: that plugin pins optuna 2.10 and cannot prune (its
trial lives in the sweeper's process, out of the training job's reach: hydra issue 1954). Here
the trial lives in the study's storage, which the training job opens by name.

The study survives its sweeper: trials this sweep directory started and did not finish (a
killed search) run again under the same trial numbers and job numbers, into the same run
directories (a stack resumes from its saved state; finished runs are skipped), and new trials
are asked until the study holds ``n_trials``, counting every sweeper's trials (several
sweepers may share one study through a journal file on a shared filesystem).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class OptunaSearch(Sweeper):
    def __init__(
        self,
        n_trials: int = 20,
        n_jobs: int = 8,
        sampler: str = "tpe",
        sampler_options: dict[str, Any] | None = None,
        pruner: str | None = "successive_halving",
        pruner_options: dict[str, Any] | None = None,
        storage: str | None = None,
        study_name: str = "search",
        direction: str = "minimize",
        seed: int | None = 0,
        params: dict[str, str] | None = None,
        repeats: dict[str, str] | None = None,
    ) -> None:
        from mdnlab.errors import choice, integer

        integer("hydra.sweeper.n_trials", n_trials, 1)
        integer("hydra.sweeper.n_jobs", n_jobs, 1)
        choice("hydra.sweeper.direction", direction, ("minimize",))  # mdn-train returns a validation loss
        self.n_trials, self.batch = int(n_trials), int(n_jobs)
        self.sampler_name, self.sampler_options = sampler, dict(sampler_options or {})
        self.pruner_name = pruner
        self.pruner_options = dict(pruner_options or {})
        self.storage_value, self.study_name, self.seed = storage, str(study_name), seed
        self.params = dict(params or {})
        self.repeats = dict(repeats or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.hydra_context = hydra_context

    def sweep(self, arguments: list[str]) -> Any:
        """The search, or one line naming the bad setting (exit status 1, nothing written)."""
        from mdnlab.errors import ConfigError

        try:
            return self._search(arguments)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    def _search(self, arguments: list[str]) -> Any:
        import optuna

        from mdnlab.runs import search, search_report

        assert self.config is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        fixed, params = self._split(arguments)
        assert self.hydra_context is not None
        composed = self.hydra_context.config_loader.load_sweep_config(self.config, list(fixed))
        space = search.distributions(params, composed)
        max_resource = OmegaConf.select(composed, "trainer.max_epochs")
        pruner = search.pruner(self.pruner_name, self.pruner_options, max_resource)
        sampler = search.sampler(self.sampler_name, self.sampler_options, self.seed, space)
        storage = search.storage(self.storage_value, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # every setting checked: now write
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper leaves it
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True
        )
        study.set_user_attr(
            "pruner", {"name": self.pruner_name, "options": self.pruner_options, "max_resource": max_resource}
        )
        storage_line = self.storage_value or str((sweep_dir / search.DEFAULT_STORAGE).resolve())
        self.link = [f"search.storage='{storage_line}'", f"search.study={self.study_name}"]
        self.variants = _variants(self.repeats)
        me = search.worker_name(sweep_dir)
        target = min(self.n_trials, _grid_size(space)) if self.sampler_name == "grid" else self.n_trials
        start = time.perf_counter()
        unfinished = self._unfinished(study, me)
        if unfinished:
            log.info(f"search: {len(unfinished)} trials of this sweep did not finish; running them again")
            self._run(study, unfinished, fixed)
        while (left := target - _counted(study)) > 0:
            mine = [t.user_attrs for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == me]
            next_job = max((a["job"] + a.get("jobs", 1) for a in mine if "job" in a), default=0)
            batch = []
            for _ in range(min(self.batch, left)):
                trial = study.ask()
                if _counted(study, below=trial.number) >= target:  # another sweeper asked the last ones
                    trial.set_user_attr("orphan", True)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                trial.set_user_attr("worker", me)
                trial.set_user_attr("job", next_job)
                trial.set_user_attr("jobs", len(self.variants))  # read by the trial's jobs: set first
                overrides = [f"{k}={_override_value(v)}" for k, v in search.suggest(trial, space).items()]
                trial.set_user_attr("overrides", overrides)  # last: a trial without it was never launched
                batch.append((trial.number, next_job, overrides))
                next_job += len(self.variants)
            self._run(study, batch, fixed)
        search_report.write_summary(study, sweep_dir, storage_line, time.perf_counter() - start)
        return study.best_trial if _has_complete(study) else None

    def _unfinished(self, study: Any, me: str) -> list[tuple[int, int, list[str]]]:
        """This sweep's trials left running by a killed sweeper, to run again; a trial killed
        before it was launched (between ask and its last attribute) fails, marked an orphan,
        and does not count towards ``n_trials``: so did another sweeper's, a minute on."""
        import optuna

        again = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if worker == me and "overrides" in t.user_attrs:
                again.append((t.number, int(t.user_attrs["job"]), list(t.user_attrs["overrides"])))
            elif worker == me or (worker is None and _age_s(t) > ORPHAN_AFTER_S):
                study._storage.set_trial_user_attr(t._trial_id, "orphan", True)
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        return again

    def _split(self, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
        """Command-line overrides: plain ones go to every trial; sweeps (a,b / choice / interval /
        range) join the search space."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        fixed: list[str] = []
        params = dict(self.params)
        for override in OverridesParser.create().parse_overrides(arguments):
            if override.is_sweep_override():  # the text as written: Hydra cannot print a choice(...) sweep back
                params[override.get_key_element()] = str(override.input_line).split("=", 1)[1]
            else:
                fixed.append(str(override.input_line))
        return fixed, params

    def _run(self, study: Any, batch: list[tuple[int, int, list[str]]], fixed: list[str]) -> None:
        """Launch each (trial, first job number, overrides) as one job per repeat, jobs of
        consecutive numbers together (one launch: the stacked launcher stacks across trials),
        and tell the study each trial's outcome: the mean of its jobs' scores."""
        jobs = sorted(
            (first + i, number, [*fixed, *overrides, *variant, f"search.trial={number}", *self.link])
            for number, first, overrides in batch
            for i, variant in enumerate(self.variants)
        )
        runs: list[list[tuple[int, int, list[str]]]] = []
        for job in jobs:
            if runs and runs[-1][-1][0] + 1 == job[0]:
                runs[-1].append(job)
            else:
                runs.append([job])
        outcomes: dict[int, list[JobReturn]] = {}
        for run in runs:
            returns = self.launcher.launch([job[2] for job in run], initial_job_idx=run[0][0])
            for (_, number, _), ret in zip(run, returns):
                outcomes.setdefault(number, []).append(ret)
        for number, returns in outcomes.items():
            _tell(study, number, returns)


def _tell(study: Any, number: int, returns: list[JobReturn]) -> None:
    """A trial's outcome: pruned if its jobs were, else the mean of their scores; failed if one
    failed or scored no finite number."""
    import optuna

    from mdnlab.runs.search import Pruned

    state = optuna.trial.TrialState
    values = [r.return_value if r.status == JobStatus.COMPLETED else None for r in returns]
    if any(isinstance(v, Pruned) for v in values):
        study.tell(number, state=state.PRUNED)
    elif all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        study.tell(number, math.fsum(float(v) for v in values) / len(values))  # type: ignore[arg-type]
    else:
        study.tell(number, state=state.FAIL)


def _variants(repeats: dict[str, str]) -> list[list[str]]:
    """The overrides of a trial's jobs: one list per combination of the repeats' values (e.g.
    data.split: range(5) gives five jobs, each a split); [[]] without repeats."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = []
    for key, text in repeats.items():
        override = parser.parse_override(f"{key}={text}")
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(text)]
        axes.append([f"{key}={v}" for v in values])
    return [list(combination) for combination in itertools.product(*axes)]


ORPHAN_AFTER_S = 60  # another sweeper takes milliseconds from ask to its trial's last attribute


def _age_s(trial: Any) -> float:
    import datetime

    started = trial.datetime_start or datetime.datetime.now()
    return (datetime.datetime.now() - started).total_seconds()


def _counted(study: Any, below: int | None = None) -> int:
    """The study's trials (those numbered below ``below``), less the orphans (never launched).
    The storage numbers a study's trials in the order they were asked, whichever sweeper
    asked: so with several sweepers the trials past ``n_trials`` are told apart exactly."""
    trials = study.get_trials(deepcopy=False)
    return sum(not t.user_attrs.get("orphan") and (below is None or t.number < below) for t in trials)


def _has_complete(study: Any) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _grid_size(space: dict[str, Any]) -> int:
    return math.prod(len(v) for v in space.values())


def _override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        import json

        return json.dumps(value).replace('"', "'")
    return str(value)
