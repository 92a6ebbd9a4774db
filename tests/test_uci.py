"""The UCI benchmark layout (data=uci) and make uci, on a small set the test writes itself."""

import csv
import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from mdnlab.data import UCIDataModule
from mdnlab.errors import ConfigError
from mdnlab.problems import UCISet


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


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda root: {"name": "nope"}, "data.name"),
        (lambda root: {"split": 3}, "data.split"),
        (lambda root: {"root": str(root / "missing")}, "data.root"),
        (lambda root: (root / "toy" / "data" / "index_target.txt").write_text("seven\n") and {}, "data.name"),
        (lambda root: (root / "toy" / "data" / "index_test_0.txt").write_text("5000\n") and {}, "data.split"),
    ],
)
def test_bad_input_is_one_error_naming_the_key(tmp_path, change, key):
    write_set(tmp_path)
    arguments = {"root": str(tmp_path), "name": "toy", "split": 0, **change(tmp_path)}
    with pytest.raises(ConfigError) as raised:
        module = UCIDataModule(**arguments)
        module.check()
        module.setup("fit")
    assert raised.value.key == key


def test_a_search_split_leaves_the_test_rows_out_and_scores_other_training_rows(tmp_path):
    table = write_set(tmp_path)
    module = UCIDataModule(str(tmp_path), "toy", split=1, seed=3, val_fraction=0.1, search=True)
    module.setup("fit")
    train_rows = {
        round(v, 4)
        for v in table[
            [int(v) for v in (tmp_path / "toy" / "data" / "index_train_1.txt").read_text().split()], 1
        ].tolist()
    }
    parts = {name: module.raw[name][1].reshape(-1).tolist() for name in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [86, 11, 11]
    assert all(round(v, 4) in train_rows for part in parts.values() for v in part)  # no test row anywhere
    assert not set(parts["test"]) & set(parts["val"]) and not set(parts["test"]) & set(parts["train"])
    with pytest.raises(ConfigError) as raised:
        UCIDataModule(str(tmp_path), "toy", val_fraction=0.0, search=True).setup("fit")
    assert raised.value.key == "data.val_fraction"


@pytest.mark.slow
def test_make_uci_writes_rows_and_a_table_and_a_rerun_trains_nothing(tmp_path, monkeypatch, capsys):
    write_set(tmp_path / "root")
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "scripts" / "uci.py"),
        "--root",
        str(tmp_path / "root"),
        "--members",
        "2",
        "--splits",
        "2",
        "--peers",
        "flow",
        "gaussian",
        "--out",
        str(out),
        "trainer.max_epochs=2",
        "data.passes_per_epoch=10",
        "hydra.launcher.compile=false",
        "hydra.launcher.threads=1",  # the other xdist worker has the other core
    ]
    first = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    assert "epoch 2/2" in first.stdout  # the stacks' progress comes through
    rows = list(csv.DictReader((out / "splits.csv").open()))
    assert sorted((r["model"], r["split"]) for r in rows) == [
        (model, split) for model in ("ensemble", "flow", "gaussian", "single") for split in ("0", "1")
    ]
    assert all(float(r["rmse"]) > 0 and float(r["seconds"]) > 0 for r in rows)
    report = (out / "results.md").read_text()
    nll_table = report.split("Test RMSE")[0]
    line = next(ln for ln in nll_table.splitlines() if ln.startswith("| toy ("))
    picked = min(("single", "ensemble"), key=lambda m: sum(float(r["val_nll"]) for r in rows if r["model"] == m))
    assert line.startswith(f"| toy ({picked}, 2 of 3 splits) |")  # picked on validation, not on test; 2 splits run
    cells = [c.strip() for c in line.strip("|").split("|")]
    mdn = [float(r["nll"]) for r in rows if r["model"] == picked]
    flow = [float(r["nll"]) for r in rows if r["model"] == "flow"]
    assert cells[3].startswith(f"{sum(mdn) / 2:.2f} ±") and cells[4].startswith(f"{sum(flow) / 2:.2f} ±")
    assert cells[3] == cells[1 if picked == "single" else 2] and cells[6] == "-"  # NGBoost not asked for
    paired = [m - f for m, f in zip(mdn, flow)]  # both sorted by split
    assert cells[7] == f"{sum(paired) / 2:.2f} ± {abs(paired[0] - paired[1]) / 2:.2f} ({sum(d < 0 for d in paired)}/2)"
    assert "| toy |" in report.split("Spikes")[1]  # the spike analysis ran, on every method
    assert "| toy | base (uci) | base (uci_flow) | base (uci) | - |" in report  # no recipe searched for toy
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("toy/**/metrics.json")}
    assert len(stamps) == 8
    # the rerun and the report from the runs there: the script's main in this process (its
    # mdn-train multiruns are still their own processes), not a third and fourth interpreter
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import uci

    monkeypatch.setattr(sys, "argv", command[1:])
    capsys.readouterr()
    uci.main()
    assert "already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("toy/**/metrics.json")} == stamps
    monkeypatch.setattr(sys, "argv", [*command[1:-4], "--report-only"])
    uci.main()
    rebuilt = (out / "results.md").read_text()
    assert rebuilt.split("\n\n(--report-only")[0] == report.split("\n\nwall time")[0]


def test_spiked_rows_are_found_from_the_data_and_the_density_and_left_out_for_every_method(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from uci_report import spikes

    table = write_set(tmp_path, rows=120, splits=2)
    data = tmp_path / "toy" / "data" / "data.txt"
    table[:, 1] = torch.round(2 * table[:, 1]) / 2  # targets on a lattice of 0.5: few distinct values
    data.write_text("\n".join(" ".join(f"{v:.6f}" for v in row.tolist()) for row in table))
    rows = []
    for split in range(2):
        test_rows = [int(v) for v in (tmp_path / "toy" / "data" / f"index_test_{split}.txt").read_text().split()]
        t = table[test_rows, 1].double()
        # a spiky "MDN" that puts a narrow density on each true value, and a smooth peer
        rows.append(
            {
                "set": "toy",
                "model": "single",
                "split": split,
                "val_nll": 0.0,
                "loc": t.tolist(),
                "scale": [0.01] * len(t),
            }
        )
        rows.append(
            {
                "set": "toy",
                "model": "ngboost",
                "split": split,
                "val_nll": 0.0,
                "loc": (t + 0.3).tolist(),
                "scale": [1.0] * len(t),
            }
        )
    found = spikes(tmp_path, rows, "toy")
    assert found["distinct"] <= 9 and found["share"] > 0.9  # nearly every test value repeats in training
    spiky, smooth = found["nll"]["MDN"], found["nll"]["ngboost"]
    assert spiky["all"][0] < 0 < smooth["all"][0]  # the spikes win on all rows...
    # ...and on the rows left (values training never saw, if any) both are scored alike
    assert len(spiky["kept"]) == len(smooth["kept"])


@pytest.mark.skipif(not importlib.util.find_spec("ngboost"), reason="the peers extra is not installed")
def test_the_ngboost_adapter_writes_rows_the_report_reads(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import uci_ngboost
    from uci_report import ngboost_rows

    write_set(tmp_path / "root", splits=2)
    uci_ngboost.run_set(tmp_path / "root", "toy", tmp_path / "out", splits=2)
    rows = ngboost_rows(tmp_path / "out", "toy")
    assert [r["split"] for r in rows] == [0, 1] and all(r["model"] == "ngboost" for r in rows)
    for r in rows:
        assert 0 < r["steps"] <= uci_ngboost.ROUNDS and len(r["loc"]) == len(r["scale"]) == 12
        # the NLL it reports is its Normal's on the test rows
        _, _, _, y_test = UCISet(str(tmp_path / "root"), "toy").split(r["split"])
        normal = torch.distributions.Normal(*(torch.tensor(r[k], dtype=torch.float64) for k in ("loc", "scale")))
        assert r["nll"] == pytest.approx(-normal.log_prob(y_test.reshape(-1).double()).mean().item(), rel=1e-9)
        assert r["nll"] < 1.5  # it learnt sin(2x): a constant Normal scores ~1.1 + log σ_y
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "out" / "toy" / "ngboost").iterdir())]
    uci_ngboost.run_set(tmp_path / "root", "toy", tmp_path / "out", splits=2)  # a rerun fits nothing
    assert stamps == [p.stat().st_mtime_ns for p in sorted((tmp_path / "out" / "toy" / "ngboost").iterdir())]


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [False, True], ids=["grid", "pruned"])
def test_the_recipe_search_scores_on_training_rows_only_and_writes_a_loadable_recipe(tmp_path, pruned):
    write_set(tmp_path / "root")
    recipes = tmp_path / "recipes"
    # pruned: a rung at the first check, reduction factor 3: 2 of the 6 candidates go on
    pruning = ["+hydra.sweeper.pruner_options.min_resource=1"] if pruned else ["--exhaustive"]
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "uci_search.py"),
            "--root",
            str(tmp_path / "root"),
            "--splits",
            "2",
            "--stages",
            "rate",
            "--out",
            str(tmp_path / "search"),
            "--recipes",
            str(recipes),
            *pruning,
            "trainer.max_epochs=2",
            "data.passes_per_epoch=10",
            "hydra.launcher.threads=1",  # the other xdist worker has the other core
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = [json.loads(p.read_text()) for p in (tmp_path / "search" / "toy").glob("*/*/run.json")]
    assert len(records) == 6 * 2 and all(r["config"]["data.search"] is True for r in records)
    scores, stopped = {}, set()
    for r in records:
        key = (r["config"]["model.optimizer.lr"], r["config"]["model.optimizer.weight_decay"])
        if "search/pruned_epoch" in r["metrics"]:  # pruned: no stand-in score, both splits stopped
            stopped.add(key)
            continue
        scores.setdefault(key, []).append(r["metrics"]["test/nll"])  # the stand-in rows' NLL
    assert len(stopped) == (4 if pruned else 0) and all(len(v) == 2 for v in scores.values())
    best = min(scores, key=lambda k: sum(scores[k]) / 2)
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(recipes / "toy.yaml")
    assert (recipe.model.optimizer.lr, recipe.model.optimizer.weight_decay) == best
    assert recipe.defaults == ["/experiment/uci"] and recipe.data.name == "toy"
    text = (recipes / "toy.yaml").read_text()
    assert "<- chosen" in text and text.count("pruned at check 1") == len(stopped)
