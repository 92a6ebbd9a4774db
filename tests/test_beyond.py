"""Beyond the sinusoid: your own table, several targets, and Bishop's robot arm."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, compose_train, run_main, run_record
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from mdnlab.data import TableDataModule
from mdnlab.errors import ConfigError
from mdnlab.mixtures import mvmixture
from mdnlab.models import MixtureDensityNetwork, MSERegression
from mdnlab.problems import RobotArm
from mdnlab.problems.table import load
from mdnlab.training.single import train


def write_csv(path: Path, n=300, seed=0, bad=None):
    """Two inputs a, b and two targets c, d (d bimodal given a, b), plus a text column."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g), torch.randn(n, generator=g)
    c = 2 * a + 0.1 * torch.randn(n, generator=g)
    d = torch.where(torch.rand(n, generator=g) < 0.5, b, -b) + 0.05 * torch.randn(n, generator=g)
    lines = ["a,b,c,d,note"] + [f"{a[i]:.6f},{b[i]:.6f},{c[i]:.6f},{d[i]:.6f},row{i}" for i in range(n)]
    if bad:
        row, text = bad
        cells = lines[row + 1].split(",")
        cells[2] = text
        lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- your own data -----------------------------------------------------------------------------


def test_csv_and_npz_load_the_same_columns(tmp_path):
    csv_path = write_csv(tmp_path / "data.csv")
    x, t = load(csv_path, ["a", "b"], ["c"])
    assert x.shape == (300, 2) and t.shape == (300, 1) and x.dtype == torch.float32
    np.savez(tmp_path / "data.npz", a=x[:, 0].numpy(), b=x[:, 1].numpy(), c=t[:, 0].numpy())
    x2, t2 = load(tmp_path / "data.npz", ["a", "b"], ["c"])
    assert torch.equal(x, x2) and torch.equal(t, t2)


@pytest.mark.parametrize(
    "case, key, words",
    [
        ("missing file", "data.path", "no file at that path"),
        ("wrong suffix", "data.path", ".csv or .npz"),
        ("missing column", "data.inputs", "a column of"),
        ("missing target", "data.targets", "a column of"),
        ("non-numeric", "data.path", "numbers in column 'c' (row 5 holds 'abc')"),
        ("NaN", "data.path", "finite numbers in column 'c' (row 7 holds 'nan'"),
        ("empty cell", "data.path", "numbers in column 'c' (row 3 holds '')"),
        ("too few rows", "data.path", "enough rows"),
        ("target is input", "data.targets", "not also an input"),
    ],
)
def test_bad_tables_get_one_clear_error(tmp_path, case, key, words):
    path, inputs, targets = tmp_path / "data.csv", ["a", "b"], ["c"]
    if case == "missing file":
        path = tmp_path / "absent.csv"
    elif case == "wrong suffix":
        path = tmp_path / "data.txt"
        path.write_text("a,b,c\n1,2,3\n")
    elif case == "non-numeric":
        write_csv(path, bad=(4, "abc"))
    elif case == "NaN":
        write_csv(path, bad=(6, "nan"))
    elif case == "empty cell":
        write_csv(path, bad=(2, ""))
    elif case == "too few rows":
        write_csv(path, n=3)
    else:
        write_csv(path)
    if case == "missing column":
        inputs = ["a", "zz"]
    if case == "missing target":
        targets = ["zz"]
    if case == "target is input":
        targets = ["a"]
    with pytest.raises(ConfigError) as raised:  # as mdn-train checks it: constructor, then file
        TableDataModule(str(path), inputs, targets).check()
    assert raised.value.key == key
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "case, words",
    [
        ("latin-1", "a UTF-8 text CSV file"),
        ("duplicate header", "unique column names ('a' appears 2 times"),
        ("ragged after blank", "(line 4 has 2)"),
        ("object npz", "numeric arrays ('a'"),
    ],
)
def test_more_bad_files_get_one_clear_error(tmp_path, case, words):
    path = tmp_path / ("data.npz" if case == "object npz" else "data.csv")
    if case == "latin-1":
        path.write_bytes("caf\xe9,b,c\n1,2,3\n".encode("latin-1"))
    elif case == "duplicate header":
        path.write_text("a,b,a\n1,2,3\n")
    elif case == "ragged after blank":
        path.write_text("a,b,c\n1,2,3\n\n4,5\n")
    else:
        np.savez(path, a=np.array([{"x": 1}], dtype=object), b=np.zeros(1))
    with pytest.raises(ConfigError) as raised:
        load(path, ["a"], ["b"])
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_byte_order_mark_and_numeric_headers_are_read(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("\ufeff1,2,3\n".encode("utf-8") + "".join(f"{i},{2 * i},{3 * i}\n" for i in range(20)).encode())
    x, t = load(path, [1, 2], [3])  # a header of numbers arrives from Hydra as ints
    assert x.shape == (20, 2) and t[5, 0] == 15


def test_bad_table_on_the_command_line_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    write_csv(tmp_path / "data.csv")
    quiet = ["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]
    status, err = run_main(
        "mdn-train",
        ["data=table", f"data.path={tmp_path / 'data.csv'}", "data.inputs=[a,zz]", "data.targets=[c]", *quiet],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: data.inputs='zz' is not allowed: a column of {tmp_path / 'data.csv'}: a, b, c, d, note"]
    assert not (tmp_path / "train").exists()  # no run directory, no empty folders
    status, err = run_main("mdn-train", ["data=table", *quiet], tmp_path, monkeypatch, capsys)
    assert status == 2 and "data.path" in err


def test_training_on_a_csv_with_two_targets(tmp_path):
    path = write_csv(tmp_path / "data.csv")
    cfg = compose_train(
        tmp_path,
        [
            "data=table",
            f"data.path={path}",
            "data.inputs=[a,b]",
            "data.targets=[c,d]",
            "model.n_gaussians=3",
            "trainer.max_epochs=4",
            "callbacks.rich_progress_bar=null",
            "trainer.enable_progress_bar=false",
        ],
    )
    metrics = train(cfg)
    assert metrics["test/n_points"] == 30
    for key in (
        "test/nll",
        "test/energy_score",
        "test/crps",
        "test/crps_1",
        "test/coverage_90",
        "test/mae_mode",
        "test/pit_ks",
    ):
        assert math.isfinite(metrics[key]), key
    assert "test/oracle_nll" not in metrics  # no oracle for the user's own data
    figures = {p.stem for p in (tmp_path / "run" / "figures").glob("*.png")}
    assert {"data", "predictions", "mixture_parameters", "samples", "density", "pit"} <= figures


def test_one_input_two_targets_sample_without_the_training_file(tmp_path, monkeypatch, capsys):
    path = write_csv(tmp_path / "data.csv")
    quiet = ["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]
    assert (
        run_main(
            "mdn-train",
            [
                "data=table",
                f"data.path={path}",
                "data.inputs=[a]",
                "data.targets=[c,d]",
                "model.covariance=full",
                "trainer.max_epochs=2",
                "data.passes_per_epoch=5",
                "figures=false",
                *quiet,
            ],
            tmp_path,
            monkeypatch,
            capsys,
        )[0]
        == 0
    )
    run_dir = Path(run_record(tmp_path)["run_dir"])
    tested = run_record(tmp_path)["tested_checkpoint"]
    assert "best-" in tested  # the table has a validation split, so auto picks the best
    path.unlink()  # sampling needs the checkpoint only
    for inputs in ("inputs=[0.5,0.3]", "inputs=[[0.5],[0.3]]"):
        assert (
            run_main(
                "mdn-sample",
                [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", inputs, "n_samples=20"],
                tmp_path,
                monkeypatch,
                capsys,
            )[0]
            == 0
        )
        saved = np.load(run_record(tmp_path, "sample")["files"][0])
        assert saved["samples"].shape == (2, 20, 2) and saved["scale"].shape == (2, 5, 2, 2)


def test_training_on_a_csv_with_one_input_and_target_draws_the_seven_figures(tmp_path):
    path = write_csv(tmp_path / "data.csv")
    cfg = compose_train(
        tmp_path, ["data=table", f"data.path={path}", "data.inputs=[b]", "data.targets=[d]", "trainer.max_epochs=2"]
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["test/crps"]) and "test/oracle_nll" not in metrics
    assert len(list((tmp_path / "run" / "figures").glob("*.png"))) == 7


# ---- several targets -------------------------------------------------------------------------


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("members", [1, 3])
def test_mdn_with_two_targets_matches_torch_distributions_in_original_units(covariance, members):
    torch.manual_seed(0)
    model = MixtureDensityNetwork(
        input_dim=3, target_dim=2, n_gaussians=4, covariance=covariance, n_members=members
    ).double()
    model.set_standardizer(
        {
            "input_mean": torch.tensor([1.0, 2, 3]),
            "input_std": torch.tensor([2.0, 1, 3]),
            "target_mean": torch.tensor([-1.0, 5]),
            "target_std": torch.tensor([0.5, 4.0]),
        }
    )
    x, t = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    logits, mu, scale = model.predictive_mixture(x)
    assert logits.shape == (16, 4 * members) and mu.shape == (16, 4 * members, 2)
    components = MultivariateNormal(mu, scale_tril=scale) if covariance == "full" else Independent(Normal(mu, scale), 1)
    reference = MixtureSameFamily(Categorical(logits=logits), components).log_prob(t)
    torch.testing.assert_close(mvmixture.log_prob(logits, mu, scale, t), reference)
    # the logged NLL (standardised NLL + Σ log σ_target) is the NLL in original units
    xs = model.standardize_inputs(x)
    ts = (t - model.target_mean) / model.target_std
    torch.testing.assert_close(model.to_original_units(model.loss(xs, ts)), -reference.mean())


def test_full_covariance_learns_correlated_noise_better_than_diagonal():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 1, generator=g) * 2 - 1
    e = torch.randn(2000, 1, generator=g)
    t = torch.cat([x + 0.3 * e, -x + 0.3 * e + 0.05 * torch.randn(2000, 1, generator=g)], 1)
    scores = {}
    for covariance in ("diag", "full"):
        torch.manual_seed(0)
        model = MixtureDensityNetwork(input_dim=1, target_dim=2, n_gaussians=1, covariance=covariance)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(400):
            loss = model.loss(x, t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scores[covariance] = loss.item()
    assert scores["full"] < scores["diag"] - 0.5  # nearly singular noise: full wins by far


def test_mse_with_two_targets_minimises_mse_in_original_units():
    model = MSERegression(input_dim=1, target_dim=2)
    model.set_standardizer(
        {
            "input_mean": torch.zeros(1),
            "input_std": torch.ones(1),
            "target_mean": torch.zeros(2),
            "target_std": torch.tensor([1.0, 10.0]),
        }
    )
    x, ts = torch.randn(50, 1), torch.randn(50, 2)
    residual = (model(x) - ts) * model.target_std
    torch.testing.assert_close(model.to_original_units(model.loss(x, ts)), residual.square().mean())


# ---- the robot arm -----------------------------------------------------------------------------


def test_robot_arm_kinematics_round_trip():
    arm = RobotArm()
    x, theta = arm.sample(2000, torch.Generator().manual_seed(0))
    assert x.shape == theta.shape == (2000, 2)
    assert theta[:, 0].min() >= 0.3 and theta[:, 0].max() <= 1.2
    assert theta[:, 1].min() >= math.pi / 2 and theta[:, 1].max() <= 3 * math.pi / 2
    solutions, inside = arm.inverse_kinematics(x)
    assert inside.any(-1).all()  # the sampled configuration is always among the solutions
    nearest = (solutions - theta.double().unsqueeze(1)).abs().amax(-1).min(-1).values
    assert nearest.max() < 1e-3
    for k in range(2):
        assert arm.endpoint_errors(x, solutions[:, k]).max() < 1e-5
    # averaging elbow up and down (what least squares learns) misses the position
    both = inside.all(-1)
    assert arm.endpoint_errors(x[both], solutions[both].mean(1)).mean() > 0.03


def test_robot_arm_defaults_are_config_keys(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=robot_arm_mdn"])
    assert (cfg.data.link1, cfg.data.link2, cfg.data.theta1_low, cfg.data.theta1_high) == (0.8, 0.2, 0.3, 1.2)
    assert cfg.data.theta2_low == pytest.approx(math.pi / 2) and cfg.data.theta2_high == pytest.approx(3 * math.pi / 2)
    assert (cfg.data.n_samples, cfg.data.n_test) == (1000, 1000)
    cfg = compose_train(tmp_path, ["experiment=robot_arm_mdn", "data.theta1_high=0.1"])
    from mdnlab.config import validate

    with pytest.raises(ConfigError, match="data.theta1_high"):
        validate(cfg)


@pytest.mark.slow
def test_robot_arm_mdn_beats_least_squares_on_end_effector_error(tmp_path):
    short = [
        "data.passes_per_epoch=500",
        "trainer.max_epochs=4",  # the MDN's error is 0.07x least squares' here, at 8 epochs 0.066x
        "callbacks.early_stopping=null",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        "figures=false",
    ]
    mdn = train(compose_train(tmp_path / "mdn", ["experiment=robot_arm_mdn", *short]))
    mse = train(compose_train(tmp_path / "mse", ["experiment=robot_arm_mse", *short]))
    # one component: its mode is its mean (to rounding: the two are summed in different orders)
    assert mse["test/endpoint_rmse_mode"] == pytest.approx(mse["test/endpoint_rmse_mean"], rel=1e-9)
    assert mse["test/endpoint_rmse_mean"] > 0.05  # averages the two elbows
    assert mdn["test/endpoint_rmse_mode"] < 0.5 * mse["test/endpoint_rmse_mean"]
    assert mdn["test/nll"] < mse["test/nll"] - 2


def test_robot_arm_figures_and_sampling_from_a_checkpoint(tmp_path, monkeypatch, capsys):
    assert run_main("mdn-train", ["experiment=robot_arm_mdn", *FAST], tmp_path, monkeypatch, capsys)[0] == 0
    run_dir = Path(run_record(tmp_path)["run_dir"])
    figures = {p.stem for p in (run_dir / "figures").glob("*.png")}
    assert "endpoint" in figures and "density" in figures
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert {"test/endpoint_rmse_mode", "test/endpoint_rmse_mean", "test/energy_score"} <= set(metrics)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run_main(
        "mdn-sample",
        [f"ckpt_path={ckpt}", "inputs=[[0.5,0.4],[0.3,0.6]]", "n_samples=50"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    saved = np.load(run_record(tmp_path, "sample")["files"][0])
    assert saved["samples"].shape == (2, 50, 2) and saved["mu"].shape == (2, 2, 2)
    assert saved["most_probable_mode"].shape == (2, 2) and saved["marginal_density"].shape == (2, 2, 200)
    status, err = run_main("mdn-sample", [f"ckpt_path={ckpt}", "inputs=[0.5,0.4]"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "one row of 2 per input" in err
    run_main("mdn-sample", [f"ckpt_path={ckpt}", "inputs=[[0.5,0.4]]", "format=csv"], tmp_path, monkeypatch, capsys)
    files = [Path(f).name for f in run_record(tmp_path, "sample")["files"]]
    assert files == ["summary.csv", "samples.csv", "density.csv"]
