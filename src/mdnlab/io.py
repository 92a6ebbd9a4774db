"""Writing files so that a reader (or a kill at any moment) sees the old file or the new one,
never half of one, and nothing is staged outside the target's directory. Imports nothing of
mdnlab."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a temporary file in the same directory (so the rename
    never crosses file systems, where it would be a copy), flushed to disk, then renamed over
    ``path``. On any error, or a kill, ``path`` is untouched; a kill can leave the temporary file
    (``.<name>.<random>.tmp``), which ``remove_temporaries`` clears."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Strict JSON: a NaN or infinite number is written as null, which every reader takes."""
    write_text_atomic(path, json.dumps(_strict(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def remove_temporaries(directory: str | os.PathLike[str]) -> None:
    """Remove what a killed ``atomic_file`` left in ``directory``."""
    for stale in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)
