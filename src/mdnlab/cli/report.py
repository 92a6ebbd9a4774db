"""mdn-report <sweep dir>: a multirun's results in its directory. Jobs that differ only by seed
(or data split) form a setting; per setting, n and the mean ± standard error of every metric
with the individual values (groups.csv), ranked by the validation score when the jobs have one
(by the test score otherwise, and labelled so); one row per job as well (report.csv, failed and
unfinished jobs included); both tables in report.md; report.png plots the ranking score, mean ±
standard error, against the first swept key, one line per value of the second. For a sweep
submitted with hydra.launcher.wait=false, each job not finished is queued, running or failed, as
SLURM says (runs.slurm_jobs). For a search (hparams_search), the study first: trials by state,
the best five, what pruning spared (runs.search)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mdnlab.io import write_text_atomic
from mdnlab.runs.search_report import report as search_report
from mdnlab.runs.sweep import collect, group, groups_csv, groups_markdown, plot, to_csv, to_markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mdn-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (holds multirun.yaml)")
    args = parser.parse_args(argv)
    sweep = args.sweep_dir
    if not (sweep / "multirun.yaml").is_file() or not (
        any((p / ".hydra").is_dir() for p in sweep.iterdir()) or (sweep / "slurm_jobs.json").is_file()
    ):
        print(
            f"error: sweep_dir={str(sweep)!r} is not allowed: a multirun directory with job "
            "folders (logs/train/multiruns/<run id>)",
            file=sys.stderr,
        )
        sys.exit(2)
    rows = collect(sweep)
    groups, rank_by = group(rows)
    write_text_atomic(sweep / "report.csv", to_csv(rows))
    write_text_atomic(sweep / "groups.csv", groups_csv(groups))
    markdown = groups_markdown(groups, rank_by) + "\nJobs\n\n" + to_markdown(rows)
    searched = search_report(sweep)
    if searched is not None:  # a search sweep (hparams_search): its study first
        markdown = searched + "\n" + markdown
    write_text_atomic(sweep / "report.md", markdown)
    plotted = plot(groups, rank_by, sweep / "report.png")
    print(markdown, end="")
    failed = sum(r["status"] != "completed" for r in rows)
    states = ("queued", "running", "completed", "failed", "unfinished")
    print("\njobs: " + ", ".join(f"{n} {s}" for s in states if (n := sum(r["status"] == s for r in rows))))
    written = ", ".join(str(sweep / f) for f in ("groups.csv", "report.csv", "report.md"))
    print(
        f"\n{len(rows)} jobs in {len(groups)} settings, {failed} not completed; written: {written}"
        + (f", {sweep / 'report.png'}" if plotted else "")
    )


if __name__ == "__main__":
    main()
