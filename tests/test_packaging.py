"""A built wheel carries the configs; a user's own experiment composes with ours."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import FAST, REPO, compose_train

USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: sinusoid_recipe
model:
  n_gaussians: 2
"""


@pytest.fixture
def user_configs(tmp_path):
    """A user's config folder, outside the project, holding experiment/mine.yaml."""
    folder = tmp_path / "my_configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    return folder


def test_user_experiment_composes_through_the_search_path(tmp_path, user_configs):
    cfg = compose_train(tmp_path, [f"hydra.searchpath=[file://{user_configs}]", "experiment=mine"])
    assert cfg.model.n_gaussians == 2 and cfg.data.n_test == 10000  # ours, with the user's change
    assert cfg.hydra.runtime.choices.experiment == "mine"


@pytest.mark.slow
def test_installed_wheel_trains_from_another_folder_with_a_user_experiment(tmp_path, user_configs):
    """pip install of the wheel (not editable) into a fresh venv, then mdn-train from an
    unrelated folder with --config-dir. The venv borrows the test environment's dependencies
    through a .pth file (torch and friends need not be installed twice); mdnlab itself comes
    only from the wheel."""
    source = tmp_path / "source"  # build from a copy: setuptools writes build/ into the tree
    for name in ("src", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            *wheels.glob("mdnlab-*.whl"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import mdnlab.config as c; print(c.CONFIG_DIR)"],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv) and Path(where, "train.yaml").is_file()
    out = subprocess.run(
        [str(venv / "bin" / "mdn-train"), "--config-dir", str(user_configs), "experiment=mine", *FAST, "figures=false"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (record,) = (elsewhere / "logs" / "train" / "runs").glob("*/run.json")
    saved = json.loads((record.parent / "metrics.json").read_text())
    assert saved["experiment"] == "mine" and saved["metrics"]["test/nll"] < 10
    assert "n_gaussians: 2" in (record.parent / ".hydra" / "config.yaml").read_text()
