"""Benchmarks of stacked training (hydra/launcher=stacked), run by scripts/bench.py.

- ``step_costs``: µs per model-step of S stacked seed-recipe MDNs (experiment=seed_mdn_inverted:
  1000 points, 1→20 tanh→5 Gaussians, full-batch Adam), eager and compiled, through the very
  pieces the stacked launcher trains with (StackedBatches, StackedMDN, StackedAdam), with the
  launcher's threads and denormal setting;
- ``sweep_walls``: whole-command wall time of one default-recipe job and of a 20-seed multirun
  of it with the basic, parallel (joblib) and stacked launchers, and how far the stacked jobs'
  test NLLs are from the same jobs run one after another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ("figures=false", "callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")


def _stack_of(size: int, experiment: str, device: str, overrides=(), kernel=None):
    import lightning as L
    import torch

    from mdnlab.config import compose, instantiate_checked
    from mdnlab.data.batches import StackedBatches
    from mdnlab.models.stacked import StackedAdam, StackedMDN

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"experiment={experiment}", *overrides], Path(tmp) / "run")
    loaders, models = [], []
    for seed in range(size):
        cfg.seed = seed
        L.seed_everything(seed, verbose=False)
        datamodule, model = instantiate_checked(cfg)
        datamodule.setup("fit")
        datamodule.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
        loaders.append(datamodule.train_dataloader())
        models.append(model)
    stack = StackedMDN(models).to(device)
    optimizer = StackedAdam(
        stack.parameters(), torch.full((size,), 1e-3, device=device), torch.zeros(size, device=device), 1
    )
    return StackedBatches(loaders, kernel), stack, optimizer


def _endless(batches):
    while True:
        yield from batches


def step_cost(
    size: int, steps: int, compiled: bool, experiment: str = "seed_mdn_inverted", device: str = "cpu", overrides=()
) -> dict:
    """µs per step and per model-step of ``size`` stacked models (after a warm-up). Each step
    takes the next batch (with its noise, where the recipe has noise), as the stacked loop does."""

    from mdnlab.data import draws

    batches, stack, optimizer = _stack_of(
        size, experiment, device, overrides, draws.compiled(device) if compiled else None
    )
    losses = stack.compiled_training_losses() if compiled else stack.training_losses
    served = _endless(batches)

    def run(n: int) -> None:
        for _ in range(n):
            loss = losses(*next(served))
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()

    start = time.perf_counter()
    run(3)  # compiles, when compiled
    _sync(device)
    warm_up = time.perf_counter() - start
    run(10)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    per_step = (time.perf_counter() - start) / steps * 1e6
    return {
        "models": size,
        "compiled": compiled,
        "us_per_step": per_step,
        "us_per_model_step": per_step / size,
        "warm_up_s": warm_up,
        "steps": steps,
        "experiment": experiment,
        "overrides": list(overrides),
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


NO_NOISE = ("data.input_noise=0", "data.target_noise=0")


# sbibm's two_moons at 10,000 simulations with make sbi's base recipe: 2 → 2×100 tanh → 10
# full-covariance Gaussians over θ ∈ R², mini-batches of 256
POSTERIOR = ("data.task=two_moons", "data.num_simulations=10000")


def step_costs(
    sizes: list[int],
    compiled: bool,
    threads: int | None,
    device: str = "cpu",
    recipe_sizes: list[int] = (),
    posterior_sizes: list[int] = (),
) -> list[dict]:
    """The seed recipe (no noise) eager and compiled at ``sizes``; the default recipe
    (experiment=mdn_inverted) compiled, with its noise and without, at ``recipe_sizes``; the
    posterior recipe (experiment=sbi, two targets, full covariance) eager and compiled at
    ``posterior_sizes``."""
    from mdnlab.training.stacks import use_threads

    use_threads(threads)
    rows = []
    runs = [
        (size, mode, "seed_mdn_inverted", ()) for mode in ([False, True] if compiled else [False]) for size in sizes
    ]
    runs += [(size, compiled, "mdn_inverted", noise) for size in recipe_sizes for noise in (NO_NOISE, ())]
    runs += [
        (size, mode, "sbi", POSTERIOR) for mode in ([False, True] if compiled else [False]) for size in posterior_sizes
    ]
    for size, mode, experiment, overrides in runs:
        steps = max(30, min(1000, 20000 // size)) if device == "cpu" else 300
        rows.append(step_cost(size, steps, mode, experiment, device, overrides))
        print(
            f"  stacked {experiment} {' '.join(overrides)} S={size} {'compiled' if mode else 'eager'}: "
            f"{rows[-1]['us_per_model_step']:.1f} µs per model-step",
            flush=True,
        )
    return rows


def batch_costs(
    sizes: list[int], threads: int | None, device: str = "cpu", compiled: bool = True, steps: int = 30
) -> list[dict]:
    """µs per step to serve S models' batches (StackedBatches: 1000 points, full batch) without
    noise and with the default recipe's (eager and compiled draws), against the same noise drawn
    by S per-model torch.Generators (two randn calls per model and step)."""
    import torch

    from mdnlab.data import TensorBatches, draws
    from mdnlab.data.batches import StackedBatches
    from mdnlab.training.stacks import use_threads

    use_threads(threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1000, 1, generator=g).to(device), torch.randn(1000, 1, generator=g).to(device)
    kernel = draws.compiled(device) if compiled else None

    def per_step(noise: float, kernel=None) -> float:
        loaders = [
            TensorBatches(x, y, repeats=10**6, seed=s, input_noise=noise, target_noise=noise / 2) for s in range(size)
        ]
        served = iter(StackedBatches(loaders, kernel))
        next(served)
        return _timed(lambda: next(served), steps, device)

    def generators() -> float:
        rngs = [torch.Generator(device).manual_seed(s) for s in range(size)]
        buffers = torch.empty(2, size, 1000, device=device)

        def step():
            for s, rng in enumerate(rngs):
                for i in (0, 1):
                    torch.randn(1000, generator=rng, device=device, out=buffers[i, s])
            return x.T + 0.03 * buffers[0], y.T + 0.015 * buffers[1]

        return _timed(step, steps, device)

    rows = []
    for size in sizes:
        rows.append(
            {
                "models": size,
                "no_noise_us": per_step(0.0),
                "eager_us": per_step(0.03),
                "compiled_us": per_step(0.03, kernel) if kernel else None,
                "generators_us": generators(),
            }
        )
        print(
            f"  batches S={size}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in rows[-1].items() if k != "models" and v is not None),
            flush=True,
        )
    return rows


def _timed(step, steps: int, device: str) -> float:
    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1e6


def _run(args: list[str], log_dir: Path, extra=()) -> float:
    env = {**os.environ, "MDNLAB_LOG_DIR": str(log_dir)}
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "mdn-train"), *args, *QUIET, *extra],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def nlls_by_seed(log_dir: Path, runs: str = "train/multiruns/*/*/run.json") -> dict[int, float]:
    """Each run's test NLL by its seed, from the run.json files ``runs`` matches under ``log_dir``."""
    nlls = {}
    for record in log_dir.glob(runs):
        data = json.loads(record.read_text())
        nlls[int(data["config"]["seed"])] = data["metrics"]["test/nll"]
    return nlls


def sweep_walls(seeds: int, launchers: list[str], extra=()) -> dict:
    """Wall seconds of one job and of a ``seeds``-seed multirun per launcher (whole commands)."""
    out: dict = {"seeds": seeds}
    with tempfile.TemporaryDirectory() as tmp:
        plain = [o for o in extra if not o.startswith("hydra.launcher.")]  # for the stacked launcher only
        out["one_job_s"] = _run([], Path(tmp) / "one", plain)
        print(f"  one job: {out['one_job_s']:.1f} s", flush=True)
        nlls = {}
        for launcher in launchers:
            log_dir = Path(tmp) / launcher
            out[f"{launcher}_s"] = _run(
                ["-m", f"hydra/launcher={launcher}", f"seed=range({seeds})"],
                log_dir,
                extra if launcher == "stacked" else plain,
            )
            nlls[launcher] = nlls_by_seed(log_dir)
            print(f"  {seeds} seeds, {launcher}: {out[f'{launcher}_s']:.1f} s", flush=True)
        if "basic" in nlls and "stacked" in nlls:
            out["max_test_nll_difference"] = max(abs(nlls["basic"][s] - nlls["stacked"][s]) for s in nlls["basic"])
    return out


def report(rows: list[dict], single_us: float | None, walls: dict | None, batches: list[dict] = ()) -> str:
    lines = []
    if batches:
        lines += [
            "",
            "Batch preparation of S models (µs a step: 1000 points, full batch; noise: input 0.03, "
            "target 0.015, counter-based draws; last column: the same noise from S per-model generators)",
            "",
            "| models S | no noise | noise, eager draw | noise, compiled draw | per-model generators |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['models']} | {r['no_noise_us']:.0f} | {r['eager_us']:.0f} | "
            f"{'-' if r['compiled_us'] is None else format(r['compiled_us'], '.0f')} | "
            f"{r['generators_us']:.0f} |"
            for r in batches
        ]
    if rows:
        lines += [
            "",
            "Stacked MDNs (µs per model-step; speed-up: one seed-recipe model alone through mdnlab's "
            f"path, {single_us:.0f} µs a step, over the stacked per-model-step)"
            if single_us
            else "",
            "",
            "| recipe | models S | mode | µs per step | µs per model-step | speed-up vs one alone | warm-up s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            speedup = f"{single_us / r['us_per_model_step']:.1f}×" if single_us else "-"
            recipe = {"seed_mdn_inverted": "seed", "sbi": "sbi two_moons 10k"}.get(r["experiment"], "default")
            if recipe == "default":
                recipe += ", no noise" if r["overrides"] else ", noise"
            lines.append(
                f"| {recipe} | {r['models']} | {'compiled' if r['compiled'] else 'eager'} | "
                f"{r['us_per_step']:.0f} | {r['us_per_model_step']:.1f} | {speedup} | {r['warm_up_s']:.1f} |"
            )
    if walls:
        one = walls["one_job_s"]
        lines += [
            "",
            f"{walls['seeds']}-seed multirun of the default recipe (whole command, {', '.join(QUIET)}):",
            "",
            "| launcher | wall s | × one job |",
            "|---|---|---|",
            f"| one job alone | {one:.1f} | 1.0 |",
        ]
        for key, value in walls.items():
            if key.endswith("_s") and key != "one_job_s":
                lines.append(f"| {key[:-2]} | {value:.1f} | {value / one:.2f} |")
        if "max_test_nll_difference" in walls:
            lines.append(f"\nlargest |test/nll stacked − basic| over the seeds: {walls['max_test_nll_difference']:.2e}")
    return "\n".join(lines)
