"""A stack's whole training state on disk, so that a killed stack resumes when its sweep is
rerun and a requeued SLURM job resumes where it was stopped.

One file per stack, ``<sweep dir>/.stacks/<digest of its run directories>.pt``, rewritten
atomically after every epoch and at a scheduler's signal. It holds every model's weights, Adam
moments, the shared Adam step, the best weights so far, per model what its early stopping and
checkpointing know (epochs, steps, wait, best score and epoch, stopped, failed), the epoch and
step the stack is at, and the losses of that epoch's steps so far. The data need no state: the
draws are counter-based (``data.draws``), so the epoch and step say which batch comes next.

A stack resumes from a file that holds all of its models (a superset: a stack of the same jobs
less those that finished), each checked against the config that trained it. Read with
``weights_only=True``: a file in a sweep directory must not be able to run code when loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mdnlab.io import atomic_file

FOLDER = ".stacks"
JOB_FIELDS = (
    "epochs",
    "steps",
    "stopped",
    "best_score",
    "best_epoch",
    "wait",
    "pruned_step",
    "pruned_epoch",
    "search_best",
)


def fingerprint(cfg) -> str:
    """What a saved model must have been trained with: its run record's config."""
    from mdnlab.runs import rundir

    return hashlib.sha1(json.dumps(rundir.identity(cfg), sort_keys=True, default=str).encode()).hexdigest()


def path_for(run_dirs: list[Path]) -> Path:
    """The state file of a stack of these run directories (in their sweep directory)."""
    names = sorted(str(Path(d).resolve()) for d in run_dirs)
    sweep = Path(names[0]).parent
    return sweep / FOLDER / (hashlib.sha1("\n".join(names).encode()).hexdigest()[:16] + ".pt")


def write(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        torch.save(state, handle)


def partition(run_dirs: list[Path], fingerprints: list[str]) -> list[tuple[list[int], Path | None, dict | None]]:
    """These runs grouped by where they resume: (positions in the list, the saved stack's file,
    its state) for runs that a saved stack holds with the same config, then (the rest, None,
    None) to start at step 0."""
    wanted = [str(Path(d).resolve()) for d in run_dirs]
    folder = Path(wanted[0]).parent / FOLDER
    left = set(range(len(wanted)))
    groups: list[tuple[list[int], Path | None, dict | None]] = []
    # newest first: a stack split after it saved holds newer states than the one it resumed from
    for candidate in sorted(_saved(folder), key=lambda pair: pair[0], reverse=True):
        candidate = candidate[1]
        state = _read(candidate)
        if state is None:
            continue
        saved = {(d, f) for d, f in zip(state["run_dirs"], state["fingerprints"])}
        held = [i for i in sorted(left) if (wanted[i], fingerprints[i]) in saved]
        if held:
            groups.append((held, candidate, state))
            left -= set(held)
    if left:
        groups.append((sorted(left), None, None))
    return groups


def positions(state: dict, run_dirs: list[Path]) -> list[int]:
    """Each run's index in a saved stack."""
    where = {d: i for i, d in enumerate(state["run_dirs"])}
    return [where[str(Path(d).resolve())] for d in run_dirs]


KEYS = {
    "format",
    "epoch",
    "step",
    "epoch_losses",
    "run_dirs",
    "fingerprints",
    "parameters",
    "moments",
    "adam_step",
    "best",
    "jobs",
}


def _saved(folder: Path) -> list[tuple[int, Path]]:
    """(modification time, file) of the saved stacks in a folder (other stacks' jobs may remove
    theirs meanwhile)."""
    found = []
    for path in folder.glob("*.pt") if folder.is_dir() else []:
        try:
            found.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue
    return found


def _read(path: Path) -> dict[str, Any] | None:
    """A saved stack's state, or None for a file that is unreadable, damaged or of another
    format (its stack then starts at step 0)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable or foreign file is not a stack's state
        return None
    if not (
        isinstance(state, dict)
        and state.get("format") == 1
        and KEYS <= set(state)
        and len(state["run_dirs"]) == len(state["fingerprints"]) == len(state["jobs"])
    ):
        return None
    return state


def of(fit, epoch: int, step: int, epoch_losses: Tensor | None) -> dict[str, Any]:
    """A ``StackedFit``'s state at (epoch, step taken in it), on the CPU."""
    cpu = lambda tensors: [t.detach().cpu() for t in tensors]  # noqa: E731
    return {
        "format": 1,
        "epoch": epoch,
        "step": step,
        "epoch_losses": epoch_losses.cpu() if epoch_losses is not None else None,
        "run_dirs": [str(j.run_dir.resolve()) for j in fit.jobs],
        "fingerprints": fit.fingerprints,
        "parameters": cpu(fit.stack.parameters()),
        "moments": [cpu(pair) for pair in fit.optimizer.moments],
        "adam_step": fit.optimizer.step_count,
        "best": cpu(fit.best) if fit.best is not None else None,
        # mid-epoch, the loaders have begun that epoch: it is drawn again on resuming
        "jobs": [
            {
                **{k: getattr(j, k) for k in JOB_FIELDS},
                "error": str(j.error) if j.error is not None else None,
                "epochs_served": loader._epochs_served - (1 if step else 0),
            }
            for j, loader in zip(fit.jobs, fit.batches.loaders)
        ],
    }


@torch.no_grad()
def load(fit, state: dict[str, Any], indices: list[int]) -> None:
    """Put the saved models ``indices`` (in the order of ``fit.jobs``) into a fresh ``StackedFit``."""
    from mdnlab.errors import NonFiniteLossError

    rows = members(indices, fit.stack.n_members)
    pick = lambda t: t[rows].to(fit.device)  # noqa: E731
    for param, saved in zip(fit.stack.parameters(), state["parameters"]):
        param.copy_(pick(saved))
    for (mean, square), (saved_mean, saved_square) in zip(fit.optimizer.moments, state["moments"]):
        mean.copy_(pick(saved_mean))
        square.copy_(pick(saved_square))
    fit.optimizer.step_count = int(state["adam_step"])
    fit.best = [pick(t) for t in state["best"]] if state["best"] is not None else None
    for job, loader, index in zip(fit.jobs, fit.batches.loaders, indices):
        saved = state["jobs"][index]
        for key in JOB_FIELDS:
            if key in saved:  # a state written before a field was added starts it at its default
                setattr(job, key, saved[key])
        job.error = NonFiniteLossError(saved["error"]) if saved["error"] is not None else None
        loader._epochs_served = int(saved["epochs_served"])
    fit.first_epoch, fit.first_step = int(state["epoch"]), int(state["step"])
    if state["epoch_losses"] is not None:
        fit.epoch_losses = state["epoch_losses"][:, indices]


def members(models: list[int], n_members: int) -> Tensor:
    """The network rows (of B = S·M) of these models, in their order."""
    return torch.tensor([m * n_members + k for m in models for k in range(n_members)])


def forget(path: Path | None, done: list[Path]) -> None:
    """Remove a stack's file once every run it holds is done (among ``done``, or its directory
    holds its metrics.json or error.txt); one that holds unfinished runs stays for them."""
    if path is None or not path.is_file():
        return
    state = _read(path)
    done_here = {str(Path(d).resolve()) for d in done}
    if state is None or all(d in done_here or _finished(Path(d)) for d in state["run_dirs"]):
        path.unlink(missing_ok=True)


def _finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() or (run_dir / "error.txt").is_file()
