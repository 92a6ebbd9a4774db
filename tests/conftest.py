import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from mdnlab.config import compose

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Python's own byte-code cache, for this process, the xdist workers started after this file is
# read, and every mdn-train, script and kernel the tests start. With PYTHONDONTWRITEBYTECODE set
# (some machines set it for every shell) no .pyc is ever written, so each of the ~150 Python
# processes a run starts compiled Lightning's, SciPy's and torchmetrics' ~2000 modules from
# source again: 7 of the 14 s an `import torch, lightning` took here. The first run writes them.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False

# Small enough to run in seconds, big enough to learn something.
FAST = [
    "trainer.max_epochs=3",
    "data.passes_per_epoch=20",
    "data.n_test=500",
    "callbacks.rich_progress_bar=null",
    "trainer.enable_progress_bar=false",
]
# The default recipe trains on all of its points; these give it a validation split back (val
# curves, early stopping, the best checkpoint), as a search or a validation study would.
VALIDATED = ["data.train_fraction=0.9", "data.val_fraction=0.1", "test_checkpoint=best"]


def compose_train(tmp_path: Path, overrides=(), config_name="train"):
    """A composed config, as mdn-train would see it, writing under tmp_path."""
    return compose(overrides, tmp_path / "run", config_name)


def run_cli(args, tmp_path, timeout=300, check=True, cwd=REPO, env=None):
    """Run a console script in a subprocess with logs under tmp_path."""
    env = {**os.environ, "MDNLAB_LOG_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore", **(env or {})}
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_main(tool: str, args, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    """A command-line tool run in this process, as its console script would run it (no
    interpreter start-up, so cheaper than run_cli): (exit status, stderr)."""
    import importlib

    module = importlib.import_module(
        {"mdn-train": "mdnlab.cli.train", "mdn-eval": "mdnlab.cli.evaluate", "mdn-sample": "mdnlab.cli.sample"}[tool]
    )
    monkeypatch.setenv("MDNLAB_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [tool, *args])
    GlobalHydra.instance().clear()
    capsys.readouterr()
    try:
        module.main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        GlobalHydra.instance().clear()
        # Hydra's job logging bound handlers to this test's captured stdout and a log file:
        # drop them, or later tests log into closed streams
        for handler in list(logging.root.handlers):
            if type(handler) in (logging.StreamHandler, logging.FileHandler):
                logging.root.removeHandler(handler)
                handler.close()
    return status, capsys.readouterr().err


def run_record(log_dir: Path, task: str = "train") -> dict:
    """The run.json of the newest ``task`` run (train, eval, sample) under log_dir: how tests
    find what a command wrote, instead of reading its stdout."""
    records = sorted((Path(log_dir) / task / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    assert records, f"no {task} run under {log_dir}"
    return json.loads(records[-1].read_text())


@pytest.fixture
def fast():
    return list(FAST)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test's own torch work on one thread, as mdn-train's runs are (torch_threads=1): the
    xdist workers already keep every core busy, and torch's default of one thread a core (or the
    every-core threads an in-process stack leaves set behind it) made two workers' threads wait
    on each other: a 2.6 s test took 26 s of CPU beside another worker."""
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(False)  # torch's default, whatever a stack in this worker set before


# The modules whose runs take longest here (tens of seconds each) start first: with `-n auto`,
# the workers then fill in with the short tests at the end instead of one of them finishing a
# long run alone while the others idle. Whole modules move, in their own order, so a module's
# fixtures are still set up once.
LONGEST_FIRST = (
    "test_uci.py",
    "test_sweeps.py",
    "test_sbibm.py",
    "test_bench.py",
    "test_search.py",
    "test_finish_sweeps.py",
    "test_notebook.py",
    "test_packaging.py",
)


def pytest_collection_modifyitems(config, items):
    modules: dict[str, int] = {}
    for item in items:
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST) + 1
        if item.get_closest_marker("slow"):
            rank = min(rank, len(LONGEST_FIRST))
        modules[name] = min(modules.get(name, rank), rank)
    order = {id(item): place for place, item in enumerate(items)}
    items.sort(key=lambda item: (modules[item.nodeid.split("::")[0].rsplit("/", 1)[-1]], order[id(item)]))
