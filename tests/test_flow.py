"""model=flow: a conditional spline flow through the same harness as the MDN."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, VALIDATED, run_main, run_record

from mdnlab import checkpoint
from mdnlab.training.stack_plan import why_not_stackable

FLOW = ["experiment=flow_inverted", *FAST, *VALIDATED, "model.hidden_size=16", "model.transforms=2"]


def test_the_flow_trains_and_its_test_nll_is_its_mean_negative_log_prob(tmp_path, monkeypatch, capsys):
    assert run_main("mdn-train", FLOW, tmp_path, monkeypatch, capsys)[0] == 0
    record = run_record(tmp_path)
    metrics = json.loads((Path(record["run_dir"]) / "metrics.json").read_text())["metrics"]
    model, datamodule = checkpoint.load(record["tested_checkpoint"])
    datamodule.prepare_splits()
    inputs, targets = datamodule.raw["test"]
    # by hand: the flow's density of the standardised targets, less log σ_t (the change of units)
    with torch.no_grad():
        standard = (targets.reshape(-1, 1) - model.target_mean) / model.target_std
        log_p = model.flow(model.standardize_inputs(inputs.reshape(-1, 1))).log_prob(standard)
    by_hand = -(log_p.double() - torch.log(model.target_std).double().sum()).mean().item()
    assert metrics["test/nll"] == pytest.approx(by_hand, rel=1e-5)
    assert metrics["test/nll"] < 3.0  # it learnt something: a Gaussian fit of x(y) scores ~3.4
    assert 0 < metrics["test/crps_mc_se"] < 0.02 * metrics["test/crps"]
    assert "test/oracle_nll" in metrics and "test/mae_top_component" not in metrics
    assert sorted(p.name for p in (Path(record["run_dir"]) / "figures").iterdir()) == [
        "data.png",
        "density.png",
        "mse_fit.png",
        "pit.png",
        "samples.png",
    ]
    # mdn-eval scores the checkpoint the same way, draws included (a fixed seed)
    assert run_main("mdn-eval", [f"ckpt_path={record['tested_checkpoint']}"], tmp_path, monkeypatch, capsys)[0] == 0
    evaluated = json.loads((Path(run_record(tmp_path, "eval")["run_dir"]) / "metrics.json").read_text())["metrics"]
    for name, value in evaluated.items():
        assert value == pytest.approx(metrics[name], rel=1e-6, abs=1e-9), name
    # mdn-sample: draws, their moments, the densest draw and the density on a grid (from log_prob)
    ckpt = f"ckpt_path={record['tested_checkpoint']}"
    for fmt in ("npz", "csv"):
        args = [ckpt, "inputs=[-5,0,5]", "n_samples=400", f"format={fmt}", "grid_points=300", "plot=true"]
        assert run_main("mdn-sample", args, tmp_path, monkeypatch, capsys)[0] == 0
        directory = Path(run_record(tmp_path, "sample")["run_dir"])
        assert (directory / "predictive.png").is_file()
    data = np.load(next((tmp_path / "sample").rglob("samples.npz")))
    assert data["samples"].shape == (3, 400) and "pi" not in data
    # the density's mass on the grid is the share of the draws that fall on it (within their error)
    mass = np.trapezoid(data["density"], data["grid"], axis=-1)
    inside = ((data["samples"] >= data["grid"][0]) & (data["samples"] <= data["grid"][-1])).mean(-1)
    assert np.all(np.abs(mass - inside) < 4 * np.sqrt(inside * (1 - inside) / 400) + 0.005), (mass, inside)
    assert np.all(np.abs(data["samples"].mean(-1) - data["mean"]) < 1e-12)
    with open(directory / "summary.csv") as handle:
        assert {"mean", "std", "most_probable_mode"} == set(next(csv.DictReader(handle))) - {"input"}
    status, err = run_main("mdn-sample", [ckpt, "inputs=[0]", "temperature=0.5"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "temperature" in err and len(err.strip().splitlines()) == 1


def test_a_flow_over_two_targets_gives_the_energy_score(tmp_path, monkeypatch, capsys):
    status, err = run_main(
        "mdn-train",
        [
            "~experiment",
            "data=robot_arm",
            "model=flow",
            *FAST,
            "figures=false",
            "model.hidden_size=16",
            "model.transforms=1",
            "data.n_samples=300",
        ],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 0, err
    metrics = run_record(tmp_path)["metrics"]
    assert metrics["test/energy_score_mc_se"] > 0 and "test/crps" not in metrics
    assert metrics["test/endpoint_rmse_mode"] > 0


def test_a_flow_trains_alone_in_a_stacked_sweep():
    from conftest import compose_train

    cfg = compose_train(Path("/tmp"), ["experiment=flow_inverted"])
    assert "ConditionalFlow" in why_not_stackable(cfg)
