"""hparams_search's Optuna search: the space grammar and bad settings, a stacked search whose
pruned trials stop where the study's pruner says, the Lightning path's pruning, and a killed
search that continues with no trial lost or repeated."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import BIN, FAST, REPO, run_main
from omegaconf import OmegaConf

from mdnlab.errors import ConfigError
from mdnlab.runs import search

QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]
# the default recipe's network, a validation check every 20 steps, at most 9 checks
SHORT = ["data.passes_per_epoch=20", "trainer.max_epochs=9", "data.n_test=300", *QUIET]
STACKED = ["hydra/launcher=stacked", "hydra.launcher.threads=1", "hydra.launcher.compile=false"]


def _study(sweep: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.storage(None, sweep))


def _run_dir(sweep: Path, job: int) -> Path:
    (found,) = [p for p in sweep.iterdir() if p.name.split("_")[0] == str(job) and p.is_dir()]
    return found


def test_the_grid_sampler_asks_a_whole_grid_at_once_and_takes_every_outcome():
    # Optuna's GridSampler calls study.stop() once its grid is done, which raises outside
    # study.optimize: the sweeper asks and tells, so search.sampler's grid must not
    space = {"a": [1, 2, 3], "b": [0.0, 0.5]}
    study = optuna.create_study(sampler=search.sampler("grid", {}, 0, space))
    trials = [study.ask() for _ in range(6)]  # one batch: every candidate before any outcome
    points = [tuple(search.suggest(t, space).values()) for t in trials]
    for trial, (a, b) in zip(trials, points):
        study.tell(trial, a + b)
    assert sorted(points) == [(a, b) for a in (1, 2, 3) for b in (0.0, 0.5)]
    assert study.best_params == {"a": 1, "b": 0.0}


def test_the_search_space_reads_hydras_sweep_grammar_and_names_a_bad_key():
    cfg = OmegaConf.create({"model": {"n_gaussians": 5, "optimizer": {"lr": 1e-3}}, "data": {"seed": 0}})
    space = search.distributions(
        {
            "model.n_gaussians": "choice(2, 3, 5)",
            "model.optimizer": {"lr": "tag(log, interval(0.0001, 0.01))"},  # nested, as +key=... makes it
            "data.seed": "range(0, 6, 2)",
        },
        cfg,
    )
    assert space["model.n_gaussians"] == [2, 3, 5] and space["data.seed"] == [0, 2, 4]
    lr = space["model.optimizer.lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.model.width="):
        search.distributions({"model.width": "choice(1, 2)"}, cfg)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.sampler='cmaes'.*tpe, random, grid"):
        search.sampler("cmaes", {}, 0, space)
    with pytest.raises(ConfigError, match=r"grid needs choice"):
        search.sampler("grid", {}, 0, space)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner='asha'.*or null"):
        search.pruner("asha")
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner_options"):
        search.pruner("median", {"reduction_factor": 3})
    assert isinstance(search.pruner(None), optuna.pruners.NopPruner)
    hyperband = search.pruner("hyperband", None, max_resource=90)
    assert hyperband._max_resource == 90 and hyperband._min_resource == 5


def test_sweeps_on_the_command_line_replace_or_join_the_configs_space():
    from hydra_plugins.mdnlab_launcher.optuna_sweeper import OptunaSearch

    sweeper = OptunaSearch(params={"model.n_gaussians": "choice(10, 20)", "data.input_noise": "interval(0, 0.1)"})
    fixed, params = sweeper._split(["model.n_gaussians=choice(1,3,10)", "model.hidden_size=64,128", "seed=3"])
    assert fixed == ["seed=3"]
    assert params == {
        "model.n_gaussians": "choice(1,3,10)",
        "data.input_noise": "interval(0, 0.1)",
        "model.hidden_size": "64,128",
    }
    cfg = OmegaConf.create({"model": {"n_gaussians": 5, "hidden_size": 8}, "data": {"input_noise": 0.0}})
    space = search.distributions(params, cfg)
    assert space["model.n_gaussians"] == [1, 3, 10] and space["model.hidden_size"] == [64, 128]


def test_a_bad_search_setting_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    for bad, key in (
        ("hydra.sweeper.sampler=annealing", "hydra.sweeper.sampler"),
        ("hydra.sweeper.pruner=asha", "hydra.sweeper.pruner"),
        ('+hydra.sweeper.params.model.width="choice(1,2)"', "hydra.sweeper.params.model.width"),
        (f"hydra.sweeper.storage={tmp_path / 'a_file' / 'study.log'}", "hydra.sweeper.storage"),
    ):
        (tmp_path / "a_file").write_text("kept\n")
        status, err = run_main(
            "mdn-train",
            ["-m", "hparams_search=mdn_optuna", bad, f"hydra.sweep.dir={sweep}"],
            tmp_path,
            monkeypatch,
            capsys,
        )
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert status == 1 and len(lines) == 1 and lines[0].startswith(f"error: {key}="), err
        assert not sweep.exists() and (tmp_path / "a_file").read_text() == "kept\n"


@pytest.mark.slow
def test_a_stacked_search_prunes_a_rung_at_once_and_each_run_says_where(tmp_path, monkeypatch, capsys):
    """Eight random trials of one network shape, each scored on two seeds (repeats), as one stack
    of 16 models, successive halving from the first check: a pruned trial's two runs stop at a
    rung (1, 3 or 9 checks), their run directories saying where, no test split scored; a trial's
    score is its two runs' mean; the study, search.json, the figures and mdn-report agree."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hparams_search=mdn_training",
        *STACKED,
        *SHORT,
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=8",
        "hydra.sweeper.sampler=random",
        "+hydra.sweeper.pruner_options.min_resource=1",
        '+hydra.sweeper.repeats={seed: "range(2)"}',
        f"hydra.sweep.dir={sweep}",
    ]
    status, err = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 0, err
    study = _study(sweep, "mdn_training")
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 8 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert 3 <= len(pruned) <= 7  # about 2/3 of a rung leave it
    for trial in trials:
        first = trial.user_attrs["job"]
        assert trial.user_attrs["jobs"] == 2
        runs = [json.loads((_run_dir(sweep, j) / "metrics.json").read_text()) for j in (first, first + 1)]
        seeds = [
            json.loads((_run_dir(sweep, j) / "run.json").read_text())["config"]["seed"] for j in (first, first + 1)
        ]
        assert seeds == [0, 1]
        mean = sum(r["metrics"]["val/best_nll"] for r in runs) / 2
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.last_step in (1, 3, 9) and mean == pytest.approx(trial.intermediate_values[trial.last_step])
            for run in runs:
                metrics = run["metrics"]
                assert metrics["search/pruned_epoch"] == trial.last_step and "test/nll" not in metrics
        else:
            assert trial.value == pytest.approx(mean, abs=1e-6)
            assert all("test/nll" in r["metrics"] for r in runs)
    summary = json.loads((sweep / "search.json").read_text())
    assert summary["states"] == {"complete": 8 - len(pruned), "pruned": len(pruned)}
    assert summary["best"][0]["value"] == pytest.approx(study.best_value)
    assert summary["checks_trained"] == sum(t.last_step for t in trials)
    assert len([p for p in sweep.iterdir() if (p / "metrics.json").is_file()]) == 16
    assert {p.name for p in (sweep / "search").glob("*.png")} == {"history.png", "importance.png", "intermediate.png"}
    assert list((sweep / "search").glob("events.out.tfevents.*"))
    from mdnlab.cli import report

    capsys.readouterr()
    report.main([str(sweep)])
    out = capsys.readouterr().out
    assert f"Search: study 'mdn_training', 8 trials ({8 - len(pruned)} complete, {len(pruned)} pruned)" in out
    assert f"| 1 | {study.best_trial.number} | {study.best_trial.user_attrs['job']} | {study.best_value:.4f} |" in out
    assert "pruning spared about" in out and f"optuna-dashboard {sweep / 'optuna.log'}" in out


@pytest.mark.slow
def test_lightnings_loop_reports_and_a_hopeless_trial_is_pruned_at_its_first_check(tmp_path, monkeypatch, capsys):
    """hydra/launcher=basic (Lightning's loop): a first trial that learns, then a second at a
    learning rate of 1e-7 in the same study (an empty space: the learning rate set on the command
    line), which the median pruner stops at its first check."""
    sweep, storage = tmp_path / "sweep", tmp_path / "study.log"
    common = [
        "-m",
        "hparams_search=mdn_optuna",
        *FAST,
        "figures=false",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=median",
        "+hydra.sweeper.pruner_options={n_startup_trials: 1, n_warmup_steps: 0}",
        "~hydra.sweeper.params",
        f"hydra.sweeper.storage={storage}",
    ]
    for trials, lr, folder in ((1, "0.003", sweep), (2, "0.0000001", tmp_path / "second")):
        status, err = run_main(
            "mdn-train",
            [
                *common,
                f"hydra.sweeper.n_trials={trials}",
                f"model.optimizer.lr={lr}",
                f"hydra.sweep.dir={folder}",
            ],
            tmp_path,
            monkeypatch,
            capsys,
        )
        assert status == 0, err
    first, second = optuna.load_study(study_name="mdn_inverted", storage=search.storage(str(storage), tmp_path)).trials
    assert first.state == optuna.trial.TrialState.COMPLETE and first.last_step == 3
    assert second.state == optuna.trial.TrialState.PRUNED and second.last_step == 1
    metrics = json.loads((_run_dir(tmp_path / "second", 0) / "metrics.json").read_text())["metrics"]
    assert metrics["search/pruned_epoch"] == 1 and metrics["train/steps"] == 20


@pytest.mark.slow
def test_a_killed_search_continues_with_no_trial_lost_or_repeated(tmp_path):
    """Two batches of two stacked trials, killed (SIGKILL) while the second batch trains, then
    the same command again: four trials, each once, the first batch's runs not trained again."""
    sweep = tmp_path / "sweep"
    command = [
        str(BIN / "mdn-train"),
        "-m",
        "hparams_search=mdn_training",
        *STACKED,
        "data.passes_per_epoch=200",
        "trainer.max_epochs=9",
        "data.n_test=300",
        *QUIET,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner=null",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "MDNLAB_LOG_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(sweep.glob(".stacks/*.pt")) or not list(sweep.glob("2_*/run.json")):
        assert job.poll() is None and time.monotonic() < deadline, "the search ended before the second batch"
        time.sleep(0.2)
    time.sleep(1.0)  # some steps into the second batch's stack
    job.send_signal(signal.SIGKILL)
    job.wait()
    first = {j: (_run_dir(sweep, j) / "metrics.json").stat().st_mtime_ns for j in range(2)}
    running = [t for t in _study(sweep, "mdn_training").get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 2
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    trials = _study(sweep, "mdn_training").get_trials()
    assert [t.number for t in trials] == list(range(4))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["job"] for t in trials) == list(range(4))
    assert len([p for p in sweep.iterdir() if (p / "metrics.json").is_file()]) == 4
    assert {j: (_run_dir(sweep, j) / "metrics.json").stat().st_mtime_ns for j in range(2)} == first
    assert "resume at epoch" in result.stdout + result.stderr  # the killed stack went on from its state
