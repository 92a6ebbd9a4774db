"""What can go wrong, as exceptions the entry points turn into one line, and the checks that
raise them. Imports nothing of mdnlab: every floor above may use it."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable


class ConfigError(ValueError):
    """A config value that cannot work. ``str(error)`` is the one line to show the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
        self.key = key


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class Interrupted(RuntimeError):
    """Training was stopped by a signal (SIGTERM, as a scheduler sends) after saving its state."""


def is_out_of_memory(error: BaseException) -> bool:
    """A failed allocation: torch's CUDA OutOfMemoryError, its CPU allocator's RuntimeError, or
    Python's MemoryError."""
    return (
        type(error).__name__ == "OutOfMemoryError"
        or isinstance(error, MemoryError)
        or "can't allocate memory" in str(error)
    )


# The checks below are what a constructor calls on its own arguments, so that each class states
# its constraints once, beside its signature, and a bad value names its config key.


def integer(key: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    """``value`` if it is an integer ≥ ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer ≥ {minimum}" + (" or null" if optional else ""))
    return value


def number(key: str, value: Any, allowed: str, ok: Callable[[float], bool] = lambda v: True) -> float:
    """``value`` as a float if it is a finite number for which ``ok`` holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(key, value, allowed)
    return float(value)


def choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(map(str, choices)))
    return value


def physical_memory() -> int:
    """Bytes of memory on this machine (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def fits_in_memory(key: str, value: Any, needed_bytes: float, per_unit_bytes: float) -> None:
    """Refuse ``value`` when what it needs would take more than half the machine's memory."""
    budget = physical_memory() // 2
    if needed_bytes > budget:
        raise ConfigError(
            key,
            value,
            f"at most about {int(budget // per_unit_bytes):,} here (half of this "
            f"machine's {physical_memory() / 2**30:.0f} GiB of memory)",
        )
