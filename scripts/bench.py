"""Benchmark: the project's Lightning training path against a hand-written PyTorch loop.

    make bench                      # or: python scripts/bench.py --steps 3000 --repeats 3

For the seed's workload (experiment=seed_mdn_inverted: 1000 training points, 20 tanh hidden
units, 5 Gaussians, full-batch Adam) and the MSE baseline (experiment=seed_mse_forward), it
times N full-batch steps through

  (a) a hand-written loop: the same model, data and optimiser, `loss; zero_grad; backward; step`;
  (b) the project's path exactly as `mdn-train experiment=...` builds it (DataModule,
      LightningModule, Trainer, default callbacks and TensorBoard logger, writing to a
      temporary run directory),

alternating A B C A B C so drift hits them alike (C: the project's path without the progress
bar, to show what the bar costs), and reports the median µs per step of each, the ratio of A and
B, and both final losses (same seed, same steps: they should agree). It also times a real
`mdn-train` process from launch to its first training step, and `mdn-train --help`. Results go
to stdout and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # scripts/ is on the path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
WORKLOADS = {"mdn": "seed_mdn_inverted", "mse": "seed_mse_forward"}
NO_BAR = ("callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false")


def compose(experiment: str, run_dir: Path, steps: int, passes: int | None, extra=()):
    """The experiment's config for ``steps`` optimiser steps of ``passes`` per epoch (default:
    the experiment's own cadence), writing into ``run_dir``."""
    from mdnlab.config import compose as compose_config

    overrides = [f"experiment={experiment}", *extra]
    passes = passes or compose_config(overrides).data.passes_per_epoch
    if steps % passes:
        raise SystemExit(f"--steps {steps} is not a multiple of data.passes_per_epoch={passes}")
    overrides += [f"data.passes_per_epoch={passes}", f"trainer.max_epochs={steps // passes}"]
    return compose_config(overrides, run_dir)


def time_project(experiment: str, steps: int, passes: int, threads: int, extra=()):
    """(µs per step, final train loss, fit setup + teardown s) of Trainer.fit as mdn-train
    builds it. The per-step time runs from the first epoch's start to the end of training, so it
    includes every epoch's validation, checkpointing and logging; the one-off setup (loggers,
    callbacks, optimiser creation) and teardown are reported apart."""
    from lightning.pytorch.callbacks import Callback

    from mdnlab.training.single import build

    class Clock(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.__dict__.setdefault("start", time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(experiment, Path(tmp), steps, passes, [f"torch_threads={threads}", *extra])
        datamodule, model, trainer = build(cfg)
        clock = Clock()
        trainer.callbacks.append(clock)
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        total = time.perf_counter() - start
        assert trainer.global_step == steps, (trainer.global_step, steps)
        x, y = datamodule.splits["train"]
        final = float(model.to(x.device).loss(x, y).detach())
    training = clock.end - clock.start
    return training / steps * 1e6, final, total - training


def time_hand_loop(experiment: str, steps: int, passes: int, threads: int) -> tuple[float, float]:
    """(µs per step, final train loss) of a plain loop over the same model, data and optimiser."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(experiment, Path(tmp), steps, passes)
    torch.set_num_threads(threads)
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    datamodule.setup("fit")
    x, y = datamodule.splits["train"]
    optimizer = instantiate(cfg.model.optimizer, params=model.parameters(), _partial_=False)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    return elapsed / steps * 1e6, float(model.loss(x, y).detach())


def first_step_timer():
    """A Lightning callback, loaded into the probed mdn-train by Hydra, that writes the wall-clock
    time at which training starts (just before the first step) to $MDNLAB_FIRST_STEP_FILE."""
    from lightning.pytorch.callbacks import Callback

    class FirstStepTimer(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            Path(os.environ["MDNLAB_FIRST_STEP_FILE"]).write_text(repr(time.time()))

    return FirstStepTimer()


def time_to_first_step(experiment: str) -> float:
    """Seconds from launching `mdn-train experiment=...` to its first training step."""
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "first_step"
        env = {
            **os.environ,
            "MDNLAB_FIRST_STEP_FILE": str(stamp),
            "MDNLAB_LOG_DIR": tmp,
            "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
        }
        command = [
            str(Path(sys.executable).parent / "mdn-train"),
            f"experiment={experiment}",
            "trainer.max_epochs=1",
            "data.passes_per_epoch=1",
            "figures=false",
            "+callbacks.first_step._target_=bench.first_step_timer",
        ]
        launched = time.time()
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        return float(stamp.read_text()) - launched


def time_help(repeats: int = 3) -> float:
    """Median seconds for `mdn-train --help` to print its page (it must not import torch)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "mdn-train"), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="Lightning path vs hand-written loop")
    parser.add_argument("--steps", type=int, default=3000, help="full-batch steps per timing")
    parser.add_argument(
        "--passes", type=int, default=None, help="data.passes_per_epoch (default: the experiment's own)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="A B pairs per workload")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--skip-startup", action="store_true", help="skip the first-step probe")
    parser.add_argument(
        "--stacked-sizes",
        type=int,
        nargs="*",
        default=[1, 4, 16, 20, 64, 256],
        help="stacked models S to time (none: skip)",
    )
    parser.add_argument(
        "--recipe-sizes",
        type=int,
        nargs="*",
        default=[16, 64, 256],
        help="stacked default-recipe models S to time, with and without noise (none: skip)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[16, 64, 256],
        help="models S for the batch-preparation rows (none: skip)",
    )
    parser.add_argument(
        "--posterior-sizes",
        type=int,
        nargs="*",
        default=[],
        help="stacked make-sbi recipes S to time (two_moons at 10,000 simulations; default: skip)",
    )
    parser.add_argument("--no-compile", action="store_true", help="time stacked steps eager only")
    parser.add_argument("--stacked-threads", type=int, default=None, help="threads for stacks (default: all)")
    parser.add_argument("--device", default="cpu", help="device for the stacked step costs (cuda: a GPU)")
    parser.add_argument("--sweep-seeds", type=int, default=20, help="seeds in the launcher comparison (0: skip)")
    parser.add_argument("--launchers", nargs="*", default=["basic", "parallel", "stacked"])
    parser.add_argument("--sweep-overrides", nargs="*", default=[], help="extra overrides for the sweeps")
    parser.add_argument("--skip-single", action="store_true", help="skip the single-model workloads")
    parser.add_argument("--trainer", default=None, help="trainer config for the single-model path (e.g. gpu)")
    args = parser.parse_args()
    from mdnlab.training.single import quiet_lightning

    quiet_lightning()
    results: dict = {
        "machine": _machine(),
        "threads": args.threads,
        "steps": args.steps,
        "passes_per_epoch": args.passes or "experiment default",
        "repeats": args.repeats,
        "workloads": {},
    }
    for name, experiment in ({} if args.skip_single else WORKLOADS).items():
        hand, project, no_bar = [], [], []
        for _ in range(args.repeats):  # A B C A B C ...
            hand.append(time_hand_loop(experiment, args.steps, args.passes, args.threads))
            on = [f"trainer={args.trainer}"] if args.trainer else []
            project.append(time_project(experiment, args.steps, args.passes, args.threads, on))
            no_bar.append(time_project(experiment, args.steps, args.passes, args.threads, [*on, *NO_BAR]))
        hand_us = statistics.median(t for t, _ in hand)
        project_us = statistics.median(t for t, _, _ in project)
        results["workloads"][name] = {
            "experiment": experiment,
            "hand_us_per_step": hand_us,
            "project_us_per_step": project_us,
            "ratio": project_us / hand_us,
            "hand_final_loss": hand[-1][1],
            "project_final_loss": project[-1][1],
            "fit_setup_s": statistics.median(s for _, _, s in project),
            "no_bar_us_per_step": statistics.median(t for t, _, _ in no_bar),
            "hand_all_us": [t for t, _ in hand],
            "project_all_us": [t for t, _, _ in project],
        }
    if not args.skip_startup:
        results["seconds_to_first_step"] = time_to_first_step(WORKLOADS["mdn"])
        results["seconds_for_help"] = time_help()
    import bench_stacked

    if args.batch_sizes:
        print("batch preparation:", flush=True)
        results["batches"] = bench_stacked.batch_costs(
            args.batch_sizes, args.stacked_threads, args.device, not args.no_compile
        )
    if args.stacked_sizes or args.recipe_sizes or args.posterior_sizes:
        print("stacked step costs:", flush=True)
        results["stacked"] = bench_stacked.step_costs(
            args.stacked_sizes,
            not args.no_compile,
            args.stacked_threads,
            args.device,
            args.recipe_sizes,
            args.posterior_sizes,
        )
    if args.sweep_seeds:
        print("launchers:", flush=True)
        results["sweeps"] = bench_stacked.sweep_walls(args.sweep_seeds, args.launchers, args.sweep_overrides)
    print(report(results))
    single = results["workloads"].get("mdn", {}).get("project_us_per_step")
    print(bench_stacked.report(results.get("stacked", []), single, results.get("sweeps"), results.get("batches", [])))
    out = args.out or REPO / "logs" / "bench" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


def report(results: dict) -> str:
    lines = [
        f"machine: {results['machine']}; torch threads: {results['threads']}; "
        f"N = {results['steps']} full-batch steps (data.passes_per_epoch: "
        f"{results['passes_per_epoch']}), median of {results['repeats']} A/B pairs",
        "",
        "| workload | hand loop µs/step | mdnlab µs/step | ratio | mdnlab, no progress bar "
        "| final loss hand / mdnlab | fit setup s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, w in results["workloads"].items():
        lines.append(
            f"| {name} ({w['experiment']}) | {w['hand_us_per_step']:.0f} | "
            f"{w['project_us_per_step']:.0f} | {w['ratio']:.3f} | {w['no_bar_us_per_step']:.0f} | "
            f"{w['hand_final_loss']:.5f} / {w['project_final_loss']:.5f} | "
            f"{w['fit_setup_s']:.2f} |"
        )
    if "seconds_to_first_step" in results:
        lines += [
            "",
            f"mdn-train launch to first training step: {results['seconds_to_first_step']:.2f} s; "
            f"mdn-train --help: {results['seconds_for_help']:.2f} s",
        ]
    return "\n".join(lines)


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{machine.cpu()}, {device}, torch {torch.__version__}"


if __name__ == "__main__":
    main()
