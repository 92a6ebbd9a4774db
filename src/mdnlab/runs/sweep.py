"""What a multirun left behind, as tables: a row per job (its metrics, or why it has none: failed,
unfinished, or queued/running/failed as SLURM says for a submit-and-go sweep), settings grouped
over seeds with mean ± standard error, CSV and Markdown, and the ranking plot. ``mdn-report``
(cli/report.py) writes them into the sweep directory."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from omegaconf import OmegaConf

COLUMNS = ["job", "overrides", "status", "val/best_nll", "test/nll", "test/excess_nll", "epochs", "wall_s", "error"]
REPLICATE_KEYS = ("seed", "data.seed", "data.split")  # what varies between repeats of one setting
SHOWN = ("test/nll", "test/excess_nll", "test/crps", "test/mse", "test/coverage_90")  # in report.md


def collect(sweep_dir: Path) -> list[dict]:
    """A dict per job directory (a folder holding .hydra/), in job-number order, and per SLURM
    job that has no directory yet."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    rows = [job_row(p) for p in sorted(jobs, key=_job_number)]
    return with_slurm_states(sweep_dir, rows)


def with_slurm_states(sweep_dir: Path, rows: list[dict]) -> list[dict]:
    """A submit-and-go sweep's jobs without a result, as SLURM has them (runs.slurm_jobs)."""
    from mdnlab.runs import slurm_jobs

    by_number = {int(row["job"]): row for row in rows if str(row["job"]).isdigit()}
    done = {n for n, row in by_number.items() if row["status"] != "unfinished"}
    for num, job in slurm_jobs.unfinished(sweep_dir, done).items():
        row = by_number.setdefault(
            num,
            {
                "job": str(num),
                "overrides": " ".join(job["overrides"]),
                "_overrides": dict(o.split("=", 1) for o in job["overrides"] if "=" in o),
            },
        )
        row.update(status=job["status"], error=job["error"])
    return [by_number[k] for k in sorted(by_number)]


def job_row(job_dir: Path) -> dict:
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    row = {
        "job": job_dir.name.split("_")[0],
        "overrides": " ".join(overrides),
        "error": "",
        "_overrides": dict(o.split("=", 1) for o in overrides if "=" in o),
    }
    if (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())["metrics"]
        run = json.loads((job_dir / "run.json").read_text()) if (job_dir / "run.json").is_file() else {}
        epochs = metrics.get("train/epochs")
        row.update(
            status="completed",
            epochs=int(epochs) if epochs is not None else None,
            wall_s=run.get("fit_seconds"),
            _metrics=metrics,
            **{k: metrics.get(k) for k in ("val/best_nll", "test/nll", "test/excess_nll")},
        )
    elif (job_dir / "error.txt").is_file():
        row.update(status="failed", error=(job_dir / "error.txt").read_text().strip())
    else:
        row.update(status="unfinished")  # killed, still running, or crashed without a line
    return row


def group(rows: list[dict]) -> tuple[list[dict], str]:
    """Settings (jobs alike but for REPLICATE_KEYS), best first, and the metric that ranks them:
    the best validation score when every completed job has one, else test/nll."""
    settings: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(sorted((k, v) for k, v in row["_overrides"].items() if k not in REPLICATE_KEYS))
        entry = settings.setdefault(
            key,
            {
                "overrides": " ".join(f"{k}={v}" for k, v in key) or "(defaults)",
                "_overrides": dict(key),
                "jobs": [],
                "not_completed": 0,
            },
        )
        if row["status"] == "completed":
            entry["jobs"].append(row)
        else:
            entry["not_completed"] += 1
    done = [r for r in rows if r["status"] == "completed"]
    rank_by = next(
        (m for m in ("val/best_nll", "val/best_mse") if done and all(_finite(r["_metrics"].get(m)) for r in done)),
        "test/nll",
    )
    groups = []
    for entry in settings.values():
        names = sorted({name for job in entry["jobs"] for name in job["_metrics"]})
        entry["n"] = len(entry["jobs"])
        entry["stats"] = {name: _mean_se([job["_metrics"].get(name) for job in entry["jobs"]]) for name in names}
        groups.append(entry)
    groups.sort(key=lambda g: (g["n"] == 0, g["stats"].get(rank_by, (math.inf,))[0]))
    varying = swept_keys(groups)  # a setting is named by what differs between settings
    for g in groups:
        g["setting"] = " ".join(f"{k}={g['_overrides'].get(k, '(default)')}" for k in varying) or g["overrides"]
    return groups, rank_by


def _mean_se(values: list) -> tuple[float, float | None, list]:
    """(mean, standard error of the mean, the values) of the finite values."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return math.nan, None, values
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else None
    return statistics.fmean(finite), se, values


def groups_csv(groups: list[dict]) -> str:
    names = sorted({name for g in groups for name in g["stats"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["setting", "overrides", "n", "not_completed"]
        + [f"{name}{part}" for name in names for part in ("_mean", "_se", "_values")]
    )
    for g in groups:
        cells = []
        for name in names:
            mean, se, values = g["stats"].get(name, (math.nan, None, []))
            cells += [mean, "" if se is None else se, " ".join(_cell(v) for v in values)]
        writer.writerow([g["setting"], g["overrides"], g["n"], g["not_completed"], *cells])
    return buffer.getvalue()


def groups_markdown(groups: list[dict], rank_by: str) -> str:
    shown = [rank_by] + [m for m in SHOWN if m != rank_by and any(m in g["stats"] for g in groups)]
    title = (
        f"Settings ranked by {rank_by} (mean ± standard error over seeds)"
        if rank_by.startswith("val/")
        else f"Settings ranked by {rank_by}, a test score: the jobs have no validation split"
    )
    lines = [
        title,
        "",
        "| rank | setting | n | " + " | ".join(shown) + f" | {rank_by} per seed |",
        "|" + "---|" * (len(shown) + 4),
    ]
    for i, g in enumerate(groups, 1):
        cells = [_pm(*g["stats"].get(m, (math.nan, None, []))[:2]) for m in shown]
        values = ", ".join(_cell(v) for v in g["stats"].get(rank_by, (0, 0, []))[2])
        failed = f" ({g['not_completed']} not completed)" if g["not_completed"] else ""
        lines.append(f"| {i} | {_cell(g['setting'])} | {g['n']}{failed} | " + " | ".join(cells) + f" | {values} |")
    return "\n".join(lines) + "\n"


def _pm(mean: float, se: float | None) -> str:
    if not _finite(mean):
        return ""
    return f"{mean:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """The per-job table; its overrides column shows only the keys that vary between jobs."""
    varying = [
        k
        for k in dict.fromkeys(k for r in rows for k in r["_overrides"])
        if len({r["_overrides"].get(k) for r in rows}) > 1
    ]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        shown = {**row, "overrides": " ".join(f"{k}={row['_overrides'].get(k, '')}" for k in varying)}
        lines.append("| " + " | ".join(_cell(shown.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def swept_keys(groups: list[dict]) -> list[str]:
    """The override keys whose values differ between settings, in the order they were given."""
    keys: list[str] = []
    for g in groups:
        keys += [k for k in g["_overrides"] if k not in keys]
    return [k for k in keys if len({g["_overrides"].get(k) for g in groups}) > 1]


def plot(groups: list[dict], rank_by: str, path: Path) -> bool:
    """``rank_by`` (mean ± standard error) against the first swept key, one line per value of
    the second; False if nothing completed."""
    groups = [g for g in groups if g["n"] and _finite(g["stats"][rank_by][0])]
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(groups) or ["setting"]
    x_key, line_key = keys[0], keys[1] if len(keys) > 1 else None
    x_values = sorted({g["_overrides"].get(x_key, g["setting"]) for g in groups}, key=_order)
    numeric = all(_finite(_as_number(v)) for v in x_values)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    lines: dict[str, list] = {}
    for g in groups:
        lines.setdefault(g["_overrides"].get(line_key, "") if line_key else "", []).append(g)
    for label, members in sorted(lines.items(), key=lambda kv: _order(kv[0])):
        members.sort(key=lambda g: _order(g["_overrides"].get(x_key, g["setting"])))
        xs = [g["_overrides"].get(x_key, g["setting"]) for g in members]
        xs = [_as_number(x) for x in xs] if numeric else [x_values.index(x) for x in xs]
        means = [g["stats"][rank_by][0] for g in members]
        errors = [g["stats"][rank_by][1] or 0.0 for g in members]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=f"{line_key}={label}" if line_key else None)
    if not numeric:
        ax.set_xticks(range(len(x_values)), x_values, rotation=20, fontsize=8)
    elif all(float(_as_number(v)).is_integer() for v in x_values):
        ax.set_xticks([_as_number(v) for v in x_values])
    n = sorted({g["n"] for g in groups})
    ax.set(
        xlabel=x_key,
        ylabel=f"{rank_by} (mean ± s.e., n={'/'.join(map(str, n))})",
        title=f"Sweep: {rank_by} per setting",
    )
    if line_key:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _order(value) -> tuple:
    number = _as_number(value)
    return (0, number, "") if _finite(number) else (1, 0.0, str(value))


def _job_number(path: Path) -> int:
    head = path.name.split("_")[0]
    return int(head) if head.isdigit() else 10**9


def _as_number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value).replace("|", "\\|")
