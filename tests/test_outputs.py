"""What a run shows: metrics.json, figures, TensorBoard events, and mdn-sample's files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, VALIDATED, compose_train, run_cli, run_main, run_record
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mdnlab.eval.figures import FIGURES
from mdnlab.mixtures import mixture
from mdnlab.training.single import train

METRICS = [
    "nll",
    "oracle_nll",
    "excess_nll",
    "mse_floor",
    "mse",
    "mae",
    "mse_mode",
    "mae_mode",
    "mae_top_component",
    "crps",
    "pit_ks",
    "coverage_50",
    "coverage_90",
    "effective_components",
    "min_sigma",
    "frac_nll_above_6",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    metrics = train(compose_train(tmp, [*FAST, *VALIDATED]))
    return tmp / "run", metrics


def test_every_metric_is_in_metrics_json(finished_run):
    run, metrics = finished_run
    saved = json.loads((run / "metrics.json").read_text())["metrics"]
    for name in METRICS:
        assert f"test/{name}" in saved, name
        assert np.isfinite(saved[f"test/{name}"]), name
    assert 0 <= saved["test/coverage_50"] <= saved["test/coverage_90"] <= 1
    assert 1 <= saved["test/effective_components"] <= 5


def test_figures_are_written(finished_run):
    run, _ = finished_run
    for name in FIGURES:
        path = run / "figures" / f"{name}.png"
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_tensorboard_has_scalars_images_and_hparams(finished_run):
    run, metrics = finished_run
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/nll", "val/nll", "test/nll", "test/excess_nll", "test/crps", "hp/best_val_nll"):
        assert tag in scalars, (tag, scalars)
    assert "lr-Adam" not in scalars  # no scheduler: no constant learning-rate chart
    assert events.Scalars("test/nll")[-1].value == pytest.approx(metrics["test/nll"], rel=1e-6)
    # one axis, the optimiser step: one point per epoch (20 steps each), the test scores at the end
    assert [e.step for e in events.Scalars("val/nll")] == [20, 40, 60]
    assert [e.step for e in events.Scalars("train/nll")] == [20, 40, 60]
    assert [e.step for e in events.Scalars("test/nll")] == [60]
    assert "run" in set(events.Tags()["tensors"]) or "run/text_summary" in set(events.Tags()["tensors"])
    images = set(events.Tags()["images"])
    assert {f"figures/{name}" for name in FIGURES} <= images
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    assert "_hparams_/experiment" not in hparams  # TensorBoard builds the table from all runs
    start = hparams["_hparams_/session_start_info"]
    assert b"model.n_gaussians" in start and b"data.direction" in start
    assert b"_target_" not in start and b"default_root_dir" not in start


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_mdn_sample_writes_samples_and_summaries(finished_run, tmp_path, fmt, monkeypatch, capsys):
    run, _ = finished_run
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    args = [f"ckpt_path={ckpt}", "inputs=[-5,0,5]", "n_samples=300", f"format={fmt}", "grid_points=400"]
    if fmt == "npz":  # the command itself
        run_cli(["mdn-sample", *args], tmp_path)
    else:  # its main in this process: the same files without another start-up
        assert run_main("mdn-sample", args, tmp_path, monkeypatch, capsys)[0] == 0
    directory = Path(run_record(tmp_path, "sample")["run_dir"])
    if fmt == "npz":
        data = np.load(directory / "samples.npz")
        assert data["samples"].shape == (3, 300)
        assert data["pi"].shape == data["mu"].shape == data["sigma"].shape == (3, 5)
        np.testing.assert_allclose(data["pi"].sum(-1), 1.0, rtol=1e-9)
        # the density on the grid integrates to the mixture's mass between the grid's ends
        mass = np.trapezoid(data["density"], data["grid"], axis=-1)
        logits, mu, sigma = (
            torch.from_numpy(np.log(data["pi"])),
            torch.from_numpy(data["mu"]),
            torch.from_numpy(data["sigma"]),
        )
        ends = torch.tensor(data["grid"][[0, -1]]).expand(3, 2).T
        cdf = mixture.cdf(logits, mu, sigma, ends)
        np.testing.assert_allclose(mass, (cdf[1] - cdf[0]).numpy(), atol=2e-3)
        # sample mean agrees with the mixture mean within Monte-Carlo error
        assert np.all(np.abs(data["samples"].mean(-1) - data["mean"]) < 4 * data["std"] / np.sqrt(300))
    else:
        with open(directory / "summary.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [float(r["input"]) for r in rows] == [-5, 0, 5]
        assert {"mean", "std", "most_probable_mode", "pi_0", "mu_4", "sigma_2"} <= set(rows[0])
        with open(directory / "samples.csv") as handle:
            assert sum(1 for _ in handle) == 1 + 3 * 300
        with open(directory / "density.csv") as handle:
            assert sum(1 for _ in handle) == 1 + 3 * 400
    assert all(Path(f).parent == directory for f in run_record(tmp_path, "sample")["files"])


def test_the_predictive_distribution_scores_what_metrics_json_says(finished_run):
    """model.predictive_distribution(inputs) is a torch MixtureSameFamily in original units:
    its log_prob on the test split is the run's test/nll."""
    from mdnlab import checkpoint

    run, metrics = finished_run
    model, datamodule = checkpoint.load(json.loads((run / "run.json").read_text())["tested_checkpoint"])
    datamodule.prepare_splits()
    inputs, targets = datamodule.raw["test"]
    p = model.predictive_distribution(inputs)  # float32, as the model is
    assert isinstance(p, torch.distributions.MixtureSameFamily)
    nll = -p.log_prob(targets.reshape(-1)).mean().item()
    assert nll == pytest.approx(metrics["test/nll"], rel=1e-5)  # metrics are scored in float64
    assert p.sample((3,)).shape == (3, len(inputs)) and p.cdf(targets.reshape(-1)).max() <= 1


def test_metrics_json_is_strict_json_and_hparams_yaml_is_filled(tmp_path):
    import math

    metrics = train(compose_train(tmp_path, [*FAST, "figures=false"]))  # no validation split
    assert math.isnan(metrics["val/best_nll"])
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["val/best_nll"] is None
    json.loads((tmp_path / "run" / "run.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    hparams = (tmp_path / "run" / "hparams.yaml").read_text()
    assert "model.n_gaussians: 5" in hparams and "seed: 0" in hparams
