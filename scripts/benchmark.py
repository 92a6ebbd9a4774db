"""What make uci and make sbi share: a method's runs as an mdn-train multirun (its progress
shown), mean ± standard error, paired differences over the units both methods ran (a UCI set's
splits, an sbibm task's observations), Markdown tables, and the results file and docs table
that a run writes (its command and machine named)."""

from __future__ import annotations

import collections
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Hashable, Iterable

import machine  # scripts/ is on the path when run as a script

REPO = Path(__file__).resolve().parents[1]
PROGRESS = ("epoch ", "error", "stacked:", "already finished", "scoring the posterior")


def run_multirun(sweep: Path, overrides: list[str], what: str, launcher: str = "stacked") -> float:
    """One mdn-train multirun into ``sweep`` (hydra/launcher=``launcher``); its progress lines
    shown as they come. Returns the wall seconds."""
    command = [
        str(Path(sys.executable).parent / "mdn-train"),
        "-m",
        f"hydra/launcher={launcher}",
        "figures=false",
        f"hydra.sweep.dir={sweep}",
        *overrides,
    ]
    print(f"== {what} -> {sweep}", flush=True)
    start = time.perf_counter()
    last: collections.deque[str] = collections.deque(maxlen=8)
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        for line in job.stdout or []:
            last.append(line.rstrip())
            if line.startswith(PROGRESS) or "Error" in line:
                print("   " + line.rstrip(), flush=True)
    if job.returncode != 0:  # the multirun's own last lines say why; nothing after it would have its runs
        print("\n".join("   " + line for line in last), file=sys.stderr)
        sys.exit(f"error: {what} failed (mdn-train exit {job.returncode}); its sweep: {sweep}")
    return time.perf_counter() - start


def mean_se(values: list[float], digits: int = 2) -> str:
    """ "mean ± s.e." of ``values`` ("-" for none)."""
    if not values:
        return "-"
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.{digits}f} ± {se:.{digits}f}"


def paired(
    mine: Iterable[dict], theirs: Iterable[dict], metric: str, unit: Callable[[dict], Hashable], digits: int = 2
) -> str:
    """mine − theirs over the units both have (``unit(row)``): mean ± s.e. (units where mine is
    lower, of all)."""
    other = {unit(r): r[metric] for r in theirs if r.get(metric) is not None}
    differences = [r[metric] - other[unit(r)] for r in mine if unit(r) in other and r.get(metric) is not None]
    if not differences:
        return "-"
    return f"{mean_se(differences, digits)} ({sum(d < 0 for d in differences)}/{len(differences)})"


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def sections(parts: list[tuple[str, str]]) -> str:
    """Titled tables, as Markdown."""
    return "\n\n".join(f"{title}:\n\n{body}" for title, body in parts)


def write_results(
    out: Path, tables: str, footer: str, docs_table: Path | None, script: str, hidden: dict[str, str] | None = None
) -> None:
    """<out>/results.md and, with ``docs_table``, the same tables for the docs to include, headed
    by the command that wrote them (``hidden``: values to print as placeholders, a private path)
    and the machine it ran on."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"{tables}\n\n{footer}\n")
    if docs_table:
        command = " ".join(sys.argv[1:])
        for value, placeholder in (hidden or {}).items():
            command = command.replace(value, placeholder)
        docs_table.parent.mkdir(parents=True, exist_ok=True)
        heading = f"<!-- written by scripts/{script} {command} ({machine.cpu()}) -->"
        docs_table.write_text(f"{heading}\n\n{tables}\n\n{footer}\n")
    print(tables, f"\n{footer}", f"\nwritten to {out}", sep="\n")
