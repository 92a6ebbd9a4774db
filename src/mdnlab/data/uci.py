"""The UCI regression benchmark's data (``problems.uci``) as a data module: one of a set's
train/test splits, with part of the training split held out for validation."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from mdnlab.data.array import ArrayDataModule
from mdnlab.data.batches import split_sizes
from mdnlab.errors import ConfigError, integer
from mdnlab.problems.uci import UCISet


class UCIDataModule(ArrayDataModule):
    """Split ``split`` of set ``name`` under ``root``: its test rows are the test split, scored in
    original units; its training rows, shuffled with ``seed``, give ``val_fraction`` of them to
    validation and the rest to training (standardised with the training part's statistics).
    Every choice is made on validation; the test split is never used for one.

    ``search=True`` is for choosing a recipe: the test rows are left out altogether, and a second
    ``val_fraction`` of the training rows stands in for them (scored as "test"). Early stopping
    picks its checkpoint on the validation rows, so their best NLL is biased low; the stand-in
    rows score the recipe without that bias. ``val_fraction=0`` (no search) trains on the whole
    training split, for a final run of a recipe with a fixed length."""

    def __init__(
        self,
        root: str,
        name: str,
        split: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int | None = None,
        passes_per_epoch: int = 100,
        standardize: bool = True,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
        search: bool = False,
    ) -> None:
        if root is None or str(root) in ("", "???"):
            raise ConfigError(
                "data.root", root, "the folder holding your copy of the UCI sets (<root>/<name>/data/data.txt ...)"
            )
        root = os.path.abspath(Path(str(root)).expanduser())  # a checkpoint must not depend on the cwd
        integer("data.split", split, 0)
        self.uci = UCISet(root, str(name))
        super().__init__(
            self.uci,
            seed=seed,
            train_fraction=1 - val_fraction,
            val_fraction=val_fraction,
            batch_size=batch_size,
            passes_per_epoch=passes_per_epoch,
            input_noise=input_noise,
            target_noise=target_noise,
        )
        self.save_hyperparameters(logger=False)

    @property
    def input_names(self) -> tuple[str, ...]:
        self.check()
        return self.uci.input_names

    def check(self) -> None:
        self.uci.check()
        n = self.uci.n_splits()
        if not 0 <= self.hparams.split < n:
            raise ConfigError("data.split", self.hparams.split, f"a split of {self.hparams.name}: 0 to {n - 1}")

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        x_train, y_train, x_test, y_test = self.uci.split(int(hp.split))
        n_train, n_val, _ = split_sizes(len(x_train), 1 - hp.val_fraction, hp.val_fraction)
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(int(hp.seed)))
        n_fit = len(x_train) - (2 * n_val if hp.search else n_val)
        train, val, stand_in = order[:n_fit], order[n_fit : n_fit + n_val], order[n_fit + n_val :]
        if n_fit < 2 or (hp.search and n_val < 1):
            raise ConfigError(
                "data.val_fraction",
                hp.val_fraction,
                f"a fraction of the {len(x_train)} training rows "
                f"that leaves ≥ 2 to train on{' and ≥ 1 to validate (data.search)' if hp.search else ''}",
            )
        test = (x_train[stand_in], y_train[stand_in]) if hp.search else (x_test, y_test)
        return {"train": (x_train[train], y_train[train]), "val": (x_train[val], y_train[val]), "test": test}
