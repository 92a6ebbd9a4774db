"""A run or a stack stopped between two optimiser steps (as a SLURM signal stops it) or killed
after an epoch resumes where it stopped and ends with byte-identical metrics. The signals are
stood in for by a watch that fires at a chosen step; tests/test_cluster.py sends real ones."""

import json

import pytest
from conftest import FAST, VALIDATED, run_main

from mdnlab.training import scheduler_signals, stack_state, stacks

pytestmark = pytest.mark.slow

# 4 epochs of 30 steps, validated every epoch, early stopping that can end a model early
RUN = [
    *FAST,
    *VALIDATED,
    "trainer.max_epochs=4",
    "data.passes_per_epoch=30",
    "figures=false",
    "callbacks.early_stopping.patience=1",
]


class StopAtStep:
    """A SignalWatch whose signal comes after the ``at``-th step it is asked about."""

    def __init__(self, at: int) -> None:
        self.at, self.asked, self.left_at = at, 0, None

    def install(self) -> None:
        pass

    @property
    def pending(self) -> bool:
        self.asked += 1
        return self.asked == self.at

    def leave(self, where: str, saved: str) -> None:
        self.left_at = where
        raise SystemExit(0)


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_a_run_stopped_between_steps_resumes_there(tmp_path, monkeypatch, capsys):
    """SlurmRequeue saves the whole Lightning state at step 45 (mid-epoch): the rerun skips the
    45 steps, and the epoch's logged loss, the weights and every metric are those of a run
    that never stopped."""
    from lightning.pytorch import Callback

    from mdnlab.training import single

    status, _ = run_main("mdn-train", [*RUN, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path, monkeypatch, capsys)
    assert status == 0
    watch = StopAtStep(45)
    callbacks = single._callbacks

    def with_a_signal(cfg, *args, **kwargs):
        requeue = scheduler_signals.SlurmRequeue(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
        requeue.watch = watch
        assert isinstance(requeue, Callback)
        return [*callbacks(cfg, *args, **kwargs), requeue]

    monkeypatch.setattr(single, "_callbacks", with_a_signal)
    args = [*RUN, f"hydra.run.dir={tmp_path / 'stopped'}"]
    status, _ = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 0 and watch.left_at == "global step 45" and not (tmp_path / "stopped" / "metrics.json").exists()
    steps = []

    class CountSteps(Callback):
        def on_step_boundary(self, trainer, pl_module) -> None:
            steps.append(trainer.global_step)

    monkeypatch.setattr(single, "_callbacks", lambda *a, **k: [*callbacks(*a, **k), CountSteps()])
    status, _ = run_main("mdn-train", args, tmp_path, monkeypatch, capsys)
    assert status == 0
    assert steps == list(range(46, 121))  # no step taken twice
    assert (tmp_path / "stopped" / "metrics.json").read_bytes() == (tmp_path / "whole" / "metrics.json").read_bytes()
    assert metrics(tmp_path / "stopped")["train/steps"] == metrics(tmp_path / "whole")["train/steps"]


def _resumed_at(monkeypatch) -> list:
    """Where each stack built from now on starts: [(epoch, step)]."""
    starts, fit = [], stacks.StackedFit

    class Recorded(fit):
        def run(self):
            starts.append((self.first_epoch, self.first_step))
            return super().run()

    monkeypatch.setattr(stacks, "StackedFit", Recorded)
    return starts


def _stack(tmp_path, name, monkeypatch, capsys):
    args = [
        "-m",
        *RUN,
        "hydra/launcher=stacked",
        "hydra.launcher.compile=false",
        "hydra.launcher.threads=1",  # the other xdist worker has the other core
        "seed=0,1,2",
        f"hydra.sweep.dir={tmp_path / name}",
    ]
    return run_main("mdn-train", args, tmp_path, monkeypatch, capsys)


def _job_metrics(sweep) -> list[bytes]:
    return [p.read_bytes() for p in sorted(sweep.glob("*/metrics.json"))]


@pytest.fixture(scope="module")
def whole_stack(tmp_path_factory):
    """The three-seed stack's metrics.json files, uninterrupted."""
    tmp_path = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as monkeypatch:
        status, err = _stack(tmp_path, "sweep", monkeypatch, _NoCapture())
    assert status == 0, err
    assert not list((tmp_path / "sweep" / stack_state.FOLDER).glob("*.pt"))  # a finished stack's file goes
    return _job_metrics(tmp_path / "sweep")


class _NoCapture:
    """capsys for run_main in a module-scoped fixture (capsys itself is per test)."""

    def readouterr(self):
        return type("Captured", (), {"err": "", "out": ""})()


def test_a_stack_stopped_between_steps_resumes_there(whole_stack, tmp_path, monkeypatch, capsys):
    """In a SLURM job the stack saves its whole state (weights, Adam moments and step, early
    stopping, best weights, the epoch's losses) after the step in flight and leaves; the rerun
    resumes at that step of that epoch."""
    watch = StopAtStep(75)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setattr(stacks, "SignalWatch", lambda: watch)
    status, _ = _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert status == 0 and watch.left_at == "epoch 2, step 15 of the stack"
    assert not _job_metrics(tmp_path / "sweep")
    watch.at = -1
    starts = _resumed_at(monkeypatch)
    status, err = _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert status == 0, err
    assert starts == [(2, 15)]
    assert _job_metrics(tmp_path / "sweep") == whole_stack


def test_a_killed_stack_resumes_from_its_last_epoch(whole_stack, tmp_path, monkeypatch, capsys):
    """Killed just after its third epoch's state was written (a stand-in for kill -9), the
    stack resumes at the fourth when the sweep is rerun."""
    write, writes = stack_state.write, []

    def then_killed(path, state):
        write(path, state)
        writes.append(state["epoch"])
        if len(writes) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(stack_state, "write", then_killed)
    with pytest.raises(KeyboardInterrupt):
        _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert writes == [1, 2, 3]
    monkeypatch.setattr(stack_state, "write", write)
    damaged = tmp_path / "sweep" / stack_state.FOLDER / "damaged.pt"
    damaged.write_bytes(b"not a saved stack")  # ignored, not a traceback
    starts = _resumed_at(monkeypatch)
    status, err = _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert status == 0, err
    assert starts == [(3, 0)]
    assert list((tmp_path / "sweep" / stack_state.FOLDER).iterdir()) == [damaged]  # the stack's own file is gone
    assert _job_metrics(tmp_path / "sweep") == whole_stack


def _out_of_memory_above(monkeypatch, models: int, after_steps: int = 0) -> None:
    """Every stack of more than ``models`` models runs out of memory after ``after_steps`` steps,
    as the CPU allocator says it."""
    from mdnlab.models.stacked import StackedMDN

    losses, steps = StackedMDN.training_losses, []

    def tight(self, inputs, targets, subset=None):
        if self.n_models > models:
            steps.append(1)
            if len(steps) > after_steps:
                raise RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                    "memory: you tried to allocate 400000000000 bytes."
                )
        return losses(self, inputs, targets, subset)

    monkeypatch.setattr(StackedMDN, "training_losses", tight)


def test_a_stack_that_does_not_fit_splits_and_resumes(whole_stack, tmp_path, monkeypatch, capsys):
    """Out of memory in its second epoch, a stack of three trains on as stacks of one and two,
    each from the state the three saved after the first epoch."""
    _out_of_memory_above(monkeypatch, 2, after_steps=40)
    starts = _resumed_at(monkeypatch)
    status, err = _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert status == 0, err
    assert starts == [(0, 0), (1, 0), (1, 0)]
    # each model's arithmetic is its own, but batched matrix products of another batch size may
    # round differently: close, not bitwise
    for split, whole in zip(_job_metrics(tmp_path / "sweep"), whole_stack, strict=True):
        split, whole = json.loads(split)["metrics"], json.loads(whole)["metrics"]
        assert split["train/steps"] == whole["train/steps"]
        assert split["test/nll"] == pytest.approx(whole["test/nll"], abs=1e-4)
    assert not list((tmp_path / "sweep" / stack_state.FOLDER).glob("*.pt"))


def test_a_model_that_does_not_fit_alone_fails_in_one_line(tmp_path, monkeypatch, capsys):
    _out_of_memory_above(monkeypatch, 0)
    status, err = _stack(tmp_path, "sweep", monkeypatch, capsys)
    assert status == 1 and "Traceback" not in err
    errors = [p.read_text() for p in sorted((tmp_path / "sweep").glob("*/error.txt"))]
    assert len(errors) == 3
    assert all("out of CPU memory training this model alone" in e and "model.hidden_size=20" in e for e in errors)
