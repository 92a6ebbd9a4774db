"""A sweep's SLURM jobs as SLURM sees them: the job ids a submit-and-go sweep records
(``hydra.launcher.wait=false`` writes ``<sweep>/slurm_jobs.json``) and their states from one
``squeue`` call, for the SLURM launcher's wait and for ``mdn-report``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

JOBS_FILE = "slurm_jobs.json"
QUEUED = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SUSPENDED",
    "STOPPED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
WAITING = QUEUED | RUNNING  # states in which SLURM may still run the job (or run it again)


@dataclass
class StackReturns:
    """What a stack's SLURM job (``hydra/launcher=stacked_slurm``) returns: the JobReturn of each
    of its sweep jobs, in the order submitted."""

    returns: list


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} for the jobs squeue still knows (ended ones for MinJobAge seconds; -r: one
    line per array task, which squeue otherwise folds into 12_[0-3] while they wait); every
    job counts as pending when squeue cannot answer (a busy or unreachable controller: ask again
    later), but not when it answers that it knows none of them."""
    if not job_ids:
        return {}
    unknown = {job_id: "PENDING" for job_id in job_ids}
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return unknown
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return unknown
    return dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)


def read(sweep_dir: Path) -> list[dict]:
    """The recorded jobs ({num, job_id, overrides}), or [] for a sweep that waited."""
    path = sweep_dir / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def record(sweep_dir: Path, jobs: list[dict]) -> None:
    """Add jobs to the record; a rerun's jobs replace the same job numbers'."""
    from mdnlab.io import write_text_atomic

    records = {r["num"]: r for r in read(sweep_dir)}
    records.update((job["num"], job) for job in jobs)
    write_text_atomic(sweep_dir / JOBS_FILE, json.dumps([records[k] for k in sorted(records)], indent=2) + "\n")


def status(state: str | None) -> str:
    """queued | running | ended (SLURM holds no result for it and will not run it again)."""
    return "queued" if state in QUEUED else "running" if state in RUNNING else "ended"


def unfinished(sweep_dir: Path, done: set[int]) -> dict[int, dict]:
    """{job number: {status, error, overrides}} for the recorded jobs whose number is not in
    ``done``: queued, running, or failed when SLURM has ended them without a result."""
    recorded = [r for r in read(sweep_dir) if r["num"] not in done]
    states = squeue_states([r["job_id"] for r in recorded])
    out = {}
    for job in recorded:
        state = states.get(job["job_id"])
        now = status(state)
        error = f"SLURM job {job['job_id']} ended ({state or 'gone from squeue'}) without a result"
        out[job["num"]] = {
            "status": "failed" if now == "ended" else now,
            "error": error if now == "ended" else "",
            "overrides": job["overrides"],
        }
    return out
