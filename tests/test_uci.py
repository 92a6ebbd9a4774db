"""The UCI benchmark layout (data=uci) and make uci, on a small set the test writes itself."""

import csv
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from mdnlab.data import UCIDataModule
from mdnlab.errors import ConfigError


def write_set(root, name="toy", rows=120, splits=3):
    """A set in the Hernández-Lobato & Adams layout: 3 inputs, the target in column 1."""
    folder = root / name / "data"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 3, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(rows, generator=g)
    table = torch.stack([x[:, 0], y, x[:, 1], x[:, 2]], 1)
    (folder / "data.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row.tolist()) for row in table))
    (folder / "index_features.txt").write_text("0\n2\n3\n")
    (folder / "index_target.txt").write_text("1\n")
    (folder / "n_splits.txt").write_text(f"{splits}\n")
    for k in range(splits):
        order = torch.randperm(rows, generator=g).tolist()
        (folder / f"index_train_{k}.txt").write_text("\n".join(map(str, order[:108])))
        (folder / f"index_test_{k}.txt").write_text("\n".join(map(str, order[108:])))
    return table


def test_a_split_is_read_held_out_and_standardised_on_its_training_part(tmp_path):
    table = write_set(tmp_path)
    module = UCIDataModule(str(tmp_path), "toy", split=2, seed=0, val_fraction=0.1)
    module.setup("fit")
    test_rows = [int(v) for v in (tmp_path / "toy" / "data" / "index_test_2.txt").read_text().split()]
    x_test, y_test = module.raw["test"]
    assert torch.allclose(y_test[:, 0], table[test_rows, 1], atol=1e-6)
    assert torch.allclose(x_test, table[test_rows][:, [0, 2, 3]], atol=1e-6)
    (x_train, y_train), (x_val, _) = module.raw["train"], module.raw["val"]
    assert len(x_train) + len(x_val) == 108 and len(x_val) == 11
    assert torch.allclose(module.standardizer.target_mean, y_train.mean(0))  # the training part's statistics
    assert module.input_dim == 3 and module.target_dim == 1


@pytest.mark.parametrize("change, key", [
    (lambda root: {"name": "nope"}, "data.name"),
    (lambda root: {"split": 3}, "data.split"),
    (lambda root: {"root": str(root / "missing")}, "data.root"),
    (lambda root: (root / "toy" / "data" / "index_target.txt").write_text("seven\n") and {}, "data.name"),
    (lambda root: (root / "toy" / "data" / "index_test_0.txt").write_text("5000\n") and {}, "data.split"),
])
def test_bad_input_is_one_error_naming_the_key(tmp_path, change, key):
    write_set(tmp_path)
    arguments = {"root": str(tmp_path), "name": "toy", "split": 0, **change(tmp_path)}
    with pytest.raises(ConfigError) as raised:
        module = UCIDataModule(**arguments)
        module.check()
        module.setup("fit")
    assert raised.value.key == key


@pytest.mark.slow
def test_make_uci_writes_rows_and_a_table_and_a_rerun_trains_nothing(tmp_path):
    write_set(tmp_path / "root")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "scripts" / "uci.py"), "--root", str(tmp_path / "root"), "--members", "2",
               "--splits", "2", "--out", str(out), "trainer.max_epochs=2", "data.passes_per_epoch=10",
               "hydra.launcher.compile=false"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=300)
    rows = list(csv.DictReader((out / "splits.csv").open()))
    assert sorted((r["model"], r["split"]) for r in rows) == [("ensemble", "0"), ("ensemble", "1"),
                                                               ("single", "0"), ("single", "1")]
    assert all(float(r["rmse"]) > 0 for r in rows)
    table = (out / "results.md").read_text()
    assert "| toy |" in table and "NLL ensemble" in table
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("toy/*/*/metrics.json")}
    again = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    assert "already finished" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("toy/*/*/metrics.json")} == stamps
