"""The user's own data as a problem: named numeric columns of a CSV or NPZ file, checked.

Every problem with the file is one ConfigError naming the config key, what was found and what
is allowed, raised before anything is trained or written. numpy is used here, at the edge, to
read NPZ files; the columns leave as float32 torch tensors.
"""

from __future__ import annotations

import csv
import math
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from mdnlab.errors import ConfigError

FORMATS = (".csv", ".npz")


@dataclass(frozen=True)
class Table:
    """Your own data: named input and target columns of a CSV file (header row, comma
    separated) or an NPZ file (one 1-D array per name). Nothing knows its true density."""

    path: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    has_oracle = False

    def __post_init__(self) -> None:
        if self.path is None or str(self.path) in ("", "???"):
            raise ConfigError("data.path", self.path, "the path of a CSV or NPZ file")
        if Path(str(self.path)).suffix.lower() not in FORMATS:
            raise ConfigError("data.path", str(self.path), "a file ending in " + " or ".join(FORMATS))
        for key, names in (("data.inputs", self.inputs), ("data.targets", self.targets)):
            if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__") or not list(names):
                raise ConfigError(key, names, "a non-empty list of column names, e.g. [x1,x2]")
        # a header of numbers arrives from the command line as ints: names are strings
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "inputs", tuple(str(n) for n in self.inputs))
        object.__setattr__(self, "targets", tuple(str(n) for n in self.targets))
        overlap = set(self.inputs) & set(self.targets)
        if overlap:
            raise ConfigError("data.targets", sorted(overlap)[0], "a column that is not also an input")

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.inputs

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.targets

    def directions(self, inputs: Tensor, targets: Tensor) -> list[tuple["Table", Tensor, Tensor]]:
        return [(self, inputs, targets)]

    def load(self) -> tuple[Tensor, Tensor]:
        """(inputs (n, len(inputs)), targets (n, len(targets))) as float32, checked."""
        columns = read_columns(self.path)
        for key, names in (("data.inputs", self.inputs), ("data.targets", self.targets)):
            for name in names:
                if name not in columns:
                    raise ConfigError(key, name, f"a column of {self.path}: {', '.join(columns)}")
        return (
            torch.stack([_numeric(columns, n, self.path) for n in self.inputs], 1),
            torch.stack([_numeric(columns, n, self.path) for n in self.targets], 1),
        )


def load(path: str | Path, inputs: Sequence[str], targets: Sequence[str]) -> tuple[Tensor, Tensor]:
    """``Table(path, inputs, targets).load()``."""
    return Table(str(path), tuple(inputs), tuple(targets)).load()


def read_columns(path: str | Path) -> dict[str, list[Any]]:
    """Column name → values (strings for CSV, arrays' items for NPZ), all of one length."""
    file = Path(path).expanduser()
    if file.exists() and not file.is_file():
        kind = "a directory" if file.is_dir() else "a FIFO" if stat.S_ISFIFO(file.stat().st_mode) else "not a file"
        raise ConfigError("data.path", str(path), f"a regular file (that is {kind})")
    if not file.is_file():
        raise ConfigError("data.path", str(path), "an existing file (no file at that path)")
    columns = _read_csv(file) if file.suffix.lower() == ".csv" else _read_npz(file)
    if not columns:
        raise ConfigError("data.path", str(path), "a file with a header row and data rows (it is empty)")
    return columns


def _read_csv(file: Path) -> dict[str, list[Any]]:
    try:  # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark
        with file.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(
            "data.path", str(file), f"a UTF-8 text CSV file ({type(error).__name__}: re-save it as CSV UTF-8)"
        ) from None
    if not rows:
        return {}
    header = [name.strip() for name in rows[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(
            "data.path",
            str(file),
            f"unique column names ('{repeated[0]}' appears {header.count(repeated[0])} times in the header)",
        )
    # (line number in the file, row), blank lines skipped
    data = [(n, row) for n, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]
    for number, row in data:
        if len(row) != len(header):
            raise ConfigError(
                "data.path", str(file), f"{len(header)} cells per row as in the header (line {number} has {len(row)})"
            )
    return {name: [row[i] for _, row in data] for i, name in enumerate(header)}


def _read_npz(file: Path) -> dict[str, list[Any]]:
    import numpy as np

    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError("data.path", str(file), f"a readable NPZ file ({type(error).__name__})") from None
    columns = {}
    for name in archive.files:
        try:
            values = archive[name]
        except Exception as error:  # noqa: BLE001 - e.g. an object array (needs pickle): refused
            raise ConfigError("data.path", str(file), f"numeric arrays ('{name}': {type(error).__name__})") from None
        if values.ndim != 1:
            values = values.reshape(len(values), -1) if values.ndim else values.reshape(1)
            if values.ndim != 1 and values.shape[1] != 1:
                raise ConfigError(
                    "data.path", str(file), f"1-D arrays, one per column ('{name}' has shape {archive[name].shape})"
                )
            values = values.reshape(-1)
        columns[name] = values.tolist()
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ConfigError("data.path", str(file), f"arrays of one length (found {sorted(lengths)})")
    return columns


def _numeric(columns: dict[str, list[Any]], name: str, path: str | Path) -> Tensor:
    values = []
    for row, cell in enumerate(columns[name]):
        try:
            value = float(cell)
        except (TypeError, ValueError):
            raise ConfigError(
                "data.path", str(path), f"numbers in column '{name}' (row {row + 1} holds {cell!r})"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(
                "data.path",
                str(path),
                f"finite numbers in column '{name}' (row {row + 1} holds {cell!r}; drop or fill missing values first)",
            )
        values.append(value)
    return torch.tensor(values, dtype=torch.float32)
