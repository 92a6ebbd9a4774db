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


def _stack_of(size: int, experiment: str, device: str):
    import lightning as L
    import torch

    from mdnlab.config import compose, instantiate_checked
    from mdnlab.data.batches import StackedBatches
    from mdnlab.models.stacked import StackedAdam, StackedMDN

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"experiment={experiment}"], Path(tmp) / "run")
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
    optimizer = StackedAdam(stack.parameters(), torch.full((size,), 1e-3, device=device),
                            torch.zeros(size, device=device), 1)
    return StackedBatches(loaders), stack, optimizer


def step_cost(size: int, steps: int, compiled: bool, experiment: str = "seed_mdn_inverted",
              device: str = "cpu") -> dict:
    """µs per step and per model-step of ``size`` stacked models (after a warm-up)."""
    import torch

    batches, stack, optimizer = _stack_of(size, experiment, device)
    losses = torch.compile(stack.training_losses) if compiled else stack.training_losses
    inputs, targets = next(iter(batches))

    def run(n: int) -> None:
        for _ in range(n):
            loss = losses(inputs, targets)
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
    return {"models": size, "compiled": compiled, "us_per_step": per_step, "us_per_model_step": per_step / size,
            "warm_up_s": warm_up, "steps": steps}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_costs(sizes: list[int], compiled: bool, threads: int | None, device: str = "cpu") -> list[dict]:
    from mdnlab.training.stacks import use_threads

    use_threads(threads)
    rows = []
    for mode in ([False, True] if compiled else [False]):
        for size in sizes:
            steps = max(30, min(1000, 20000 // size)) if device == "cpu" else 300
            rows.append(step_cost(size, steps, mode, device=device))
            print(f"  stacked S={size} {'compiled' if mode else 'eager'}: "
                  f"{rows[-1]['us_per_model_step']:.1f} µs per model-step", flush=True)
    return rows


def _run(args: list[str], log_dir: Path, extra=()) -> float:
    env = {**os.environ, "MDNLAB_LOG_DIR": str(log_dir)}
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "mdn-train"), *args, *QUIET, *extra], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def _test_nlls(log_dir: Path) -> dict[int, float]:
    nlls = {}
    for record in log_dir.glob("train/multiruns/*/*/run.json"):
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
            out[f"{launcher}_s"] = _run(["-m", f"hydra/launcher={launcher}", f"seed=range({seeds})"], log_dir,
                                        extra if launcher == "stacked" else plain)
            nlls[launcher] = _test_nlls(log_dir)
            print(f"  {seeds} seeds, {launcher}: {out[f'{launcher}_s']:.1f} s", flush=True)
        if "basic" in nlls and "stacked" in nlls:
            out["max_test_nll_difference"] = max(abs(nlls["basic"][s] - nlls["stacked"][s]) for s in nlls["basic"])
    return out


def report(rows: list[dict], single_us: float | None, walls: dict | None) -> str:
    lines = []
    if rows:
        lines += ["", "Stacked seed-recipe MDNs (µs per model-step; speed-up: one model alone through mdnlab's "
                  f"path, {single_us:.0f} µs a step, over the stacked per-model-step)" if single_us else "",
                  "", "| models S | mode | µs per step | µs per model-step | speed-up vs one alone | warm-up s |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            speedup = f"{single_us / r['us_per_model_step']:.1f}×" if single_us else "-"
            lines.append(f"| {r['models']} | {'compiled' if r['compiled'] else 'eager'} | {r['us_per_step']:.0f} | "
                         f"{r['us_per_model_step']:.1f} | {speedup} | {r['warm_up_s']:.1f} |")
    if walls:
        one = walls["one_job_s"]
        lines += ["", f"{walls['seeds']}-seed multirun of the default recipe (whole command, {', '.join(QUIET)}):", "",
                  "| launcher | wall s | × one job |", "|---|---|---|", f"| one job alone | {one:.1f} | 1.0 |"]
        for key, value in walls.items():
            if key.endswith("_s") and key != "one_job_s":
                lines.append(f"| {key[:-2]} | {value:.1f} | {value / one:.2f} |")
        if "max_test_nll_difference" in walls:
            lines.append(f"\nlargest |test/nll stacked − basic| over the seeds: {walls['max_test_nll_difference']:.2e}")
    return "\n".join(lines)
