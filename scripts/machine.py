"""The machine a measurement ran on, as the measuring scripts print it: the CPU's model name
(from /proc/cpuinfo where there is one) and its core count, e.g. "2-core AMD EPYC"."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {name}"
