"""mdn-report <sweep dir>: one row per job of a multirun (failed and unfinished jobs included),
as report.csv and report.md in the sweep directory, plus report.png: test NLL against
n_gaussians, one line per hidden size."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mdnlab.io import write_text_atomic

COLUMNS = ["job", "overrides", "status", "val/best_nll", "test/nll", "test/excess_nll",
           "epochs", "wall_s", "error"]


def collect(sweep_dir: Path) -> list[dict]:
    """A dict per job directory (a folder holding .hydra/), in job-number order."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    return [job_row(p) for p in sorted(jobs, key=_job_number)]


def job_row(job_dir: Path) -> dict:
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    row = {"job": job_dir.name.split("_")[0], "overrides": " ".join(overrides), "error": "",
           "_overrides": dict(o.split("=", 1) for o in overrides if "=" in o)}
    if (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())["metrics"]
        run = json.loads((job_dir / "run.json").read_text()) if (job_dir / "run.json").is_file() else {}
        epochs = metrics.get("train/epochs")
        row.update(status="completed", epochs=int(epochs) if epochs is not None else None,
                   wall_s=run.get("fit_seconds"),
                   **{k: metrics.get(k) for k in ("val/best_nll", "test/nll", "test/excess_nll")})
    elif (job_dir / "error.txt").is_file():
        row.update(status="failed", error=(job_dir / "error.txt").read_text().strip())
    else:
        row.update(status="unfinished")  # killed, still running, or crashed without a line
    return row


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """test NLL against model.n_gaussians, one line per model.hidden_size; False if no data."""
    done = [r for r in rows if r["status"] == "completed" and "model.n_gaussians" in r["_overrides"]]
    if not done:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    by_hidden: dict[str, list[tuple[float, float]]] = {}
    for r in done:
        hidden = r["_overrides"].get("model.hidden_size", "default")
        by_hidden.setdefault(hidden, []).append((float(r["_overrides"]["model.n_gaussians"]), r["test/nll"]))
    for hidden, points in sorted(by_hidden.items(), key=lambda kv: _as_number(kv[0])):
        points.sort()
        ax.plot(*zip(*points), marker="o", label=f"hidden_size={hidden}")
    ax.set(xlabel="n_gaussians", ylabel="test NLL (nats)", title="Sweep: held-out NLL")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mdn-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (holds multirun.yaml)")
    args = parser.parse_args(argv)
    sweep = args.sweep_dir
    if not sweep.is_dir() or not any((p / ".hydra").is_dir() for p in sweep.iterdir()):
        print(f"error: sweep_dir={str(sweep)!r} is not allowed: a multirun directory with job "
              "folders (logs/train/multiruns/<run id>)", file=sys.stderr)
        sys.exit(2)
    rows = collect(sweep)
    write_text_atomic(sweep / "report.csv", to_csv(rows))
    markdown = to_markdown(rows)
    write_text_atomic(sweep / "report.md", markdown)
    plotted = plot(rows, sweep / "report.png")
    print(markdown, end="")
    failed = sum(r["status"] != "completed" for r in rows)
    print(f"\n{len(rows)} jobs, {failed} not completed; written: {sweep / 'report.csv'}, "
          f"{sweep / 'report.md'}" + (f", {sweep / 'report.png'}" if plotted else ""))


def _job_number(path: Path) -> int:
    head = path.name.split("_")[0]
    return int(head) if head.isdigit() else 10**9


def _as_number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("inf")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value).replace("|", "\\|")


if __name__ == "__main__":
    main()
