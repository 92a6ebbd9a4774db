"""In-memory tensors as training batches: the train split's standardisation, the split sizes,
and an iterable of full or mini batches with seeded shuffling and noise regularisation.

Batches are served straight from memory (no Dataset, no DataLoader collation): for a model
this small, the DataLoader machinery costs more than the training step itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from mdnlab.data import draws


def split_sizes(n: int, train_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes of n points; the test split is the rest."""
    n_train, n_val = int(round(train_fraction * n)), int(round(val_fraction * n))
    return n_train, n_val, n - n_train - n_val


@dataclass
class Standardizer:
    """Affine maps to and from the train split's zero-mean, unit-variance coordinates."""

    input_mean: Tensor
    input_std: Tensor
    target_mean: Tensor
    target_std: Tensor

    @classmethod
    def fit(cls, inputs: Tensor, targets: Tensor) -> "Standardizer":
        return cls(inputs.mean(0), _safe_std(inputs), targets.mean(0), _safe_std(targets))

    @classmethod
    def identity(cls, inputs: Tensor, targets: Tensor) -> "Standardizer":
        zeros = lambda t: torch.zeros_like(t[0])  # noqa: E731
        ones = lambda t: torch.ones_like(t[0])  # noqa: E731
        return cls(zeros(inputs), ones(inputs), zeros(targets), ones(targets))

    def as_dict(self) -> dict[str, Tensor]:
        return dict(self.__dict__)


class TensorBatches:
    """An iterable over (inputs, targets) batches of in-memory tensors, one epoch per iteration.

    ``batch_size=None`` serves the whole split as one batch, ``repeats`` times per epoch: with
    full batches one Lightning epoch can then hold many optimiser steps, so the per-epoch work
    (validation, checkpointing, logging) is paid once per ``repeats`` steps. With a batch size,
    each pass is shuffled. ``input_noise``/``target_noise`` add fresh Gaussian noise to every
    batch (noise regularisation).

    The shuffling and noise are counter-based draws (``data.draws``) keyed by (seed, rank,
    epoch), with the epoch read from ``epoch_of()``: a run resumed at epoch e draws exactly
    what the uninterrupted run drew there, DDP ranks draw different noise, and the same model
    in a stack (``StackedBatches``) draws the same bits through the same function.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int | None = None,
        repeats: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.repeats, self.shuffle = batch_size, repeats, shuffle
        self.seed, self.rank, self.noise = seed, rank, (input_noise, target_noise)
        self._epochs_served = 0
        self.epoch_of = epoch_of or (lambda: self._epochs_served)

    def __len__(self) -> int:
        if self.batch_size is None:
            return self.repeats
        return self.repeats * math.ceil(len(self.inputs) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_of()
        self._epochs_served += 1
        keys = epoch_keys([(self.seed, self.rank, epoch)], self.inputs.device)
        n_inputs = self.inputs.shape[1]
        width = n_inputs + self.targets.shape[1]
        input_noise, target_noise = self.noise
        steps = epoch_steps(
            keys, len(self.inputs), self.batch_size, self.repeats, self.shuffle, width if any(self.noise) else 0
        )
        for idx, eps in steps:
            x, y = (self.inputs, self.targets) if idx is None else (self.inputs[idx[0]], self.targets[idx[0]])
            if input_noise:
                x = x + input_noise * eps[0, :n_inputs].T
            if target_noise:
                y = y + target_noise * eps[0, n_inputs:].T
            yield x, y


CHUNK_ELEMENTS = 1 << 20  # noise drawn per call: enough steps to amortise the ~60 operations of a draw


def epoch_keys(parts: list[tuple[int, int, int]], device: torch.device) -> Tensor:
    """(S,) draw keys of S models' (seed, rank, epoch)."""
    seeds, ranks, epochs = torch.tensor(parts, dtype=torch.int64, device=device).T
    return draws.keys(seeds, ranks, epochs)


def epoch_steps(
    keys: Tensor,
    n: int,
    batch_size: int | None,
    repeats: int,
    shuffle: bool,
    width: int,
    kernel: Callable[[Tensor, int], Tensor] | None = None,
) -> Iterator[tuple[Tensor | None, Tensor | None]]:
    """What each step of an epoch uses, for S models at once: (idx (S, b): the points of the
    batch, None for the whole split; ε (S, width, b): standard normals for its inputs' columns
    then its targets', None for width 0). Column c of the point in place j of step t's batch
    gets normal c·rows + j of draw (key, t), rows being the full batch size: the same whatever
    b, S or how many steps are drawn together."""
    n_models, device = len(keys), keys.device
    whole = batch_size is None or batch_size >= n
    rows = n if whole else batch_size
    per_pass = 1 if whole else math.ceil(n / rows)
    n_steps = repeats * per_pass
    orders = None
    if not whole:
        passes = torch.arange(repeats, device=device)
        orders = (
            draws.permutations(keys, passes, n)
            if shuffle
            else torch.arange(n, device=device).expand(n_models, repeats, n)
        )
    chunk = max(1, min(n_steps, CHUNK_ELEMENTS // max(1, n_models * rows * width)))
    eps = None
    for step in range(n_steps):
        if width and step % chunk == 0:
            block = torch.arange(step, step + chunk, device=device)
            eps = draws.normals(keys, block, rows * width, kernel).view(n_models, chunk, width, rows)
        idx = None
        if orders is not None:
            pass_, first = step // per_pass, (step % per_pass) * rows
            idx = orders[:, pass_, first : first + rows]
        b = n if idx is None else idx.shape[1]
        yield idx, (eps[:, step % chunk, :, :b] if width else None)


def _safe_std(t: Tensor) -> Tensor:
    std = t.std(0)
    return torch.where(std > 0, std, torch.ones_like(std))


class StackedBatches:
    """S ``TensorBatches`` of equal shapes served together: each batch is (inputs (S, D, n),
    targets (S, T, n)), laid out for ``models.stacked`` (points last), and model s's slice is
    exactly what its own TensorBatches yields: the same shuffles and noise, drawn by the same
    function (``epoch_steps``) for all S models at once. ``kernel`` may be
    ``draws.compiled(device)``, which draws the same bits faster."""

    def __init__(self, loaders: list[TensorBatches], kernel: Callable[[Tensor, int], Tensor] | None = None) -> None:
        self.loaders, self.kernel = loaders, kernel
        first = loaders[0]
        self.batch_size, self.repeats, self.shuffle = first.batch_size, first.repeats, first.shuffle
        self.inputs = torch.stack([b.inputs for b in loaders])  # (S, N, D)
        self.targets = torch.stack([b.targets for b in loaders])
        device = self.inputs.device
        self.noise = [torch.tensor([b.noise[i] for b in loaders], device=device).view(-1, 1, 1) for i in (0, 1)]
        self.noisy = [any(b.noise[i] for b in loaders) for i in (0, 1)]
        self.whole = (self.inputs.transpose(1, 2).contiguous(), self.targets.transpose(1, 2).contiguous())

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epochs = []
        for loader in self.loaders:
            epochs.append(loader.epoch_of())
            loader._epochs_served += 1
        keys = epoch_keys([(b.seed, b.rank, e) for b, e in zip(self.loaders, epochs)], self.inputs.device)
        n, n_inputs = self.inputs.shape[1], self.inputs.shape[2]
        width = n_inputs + self.targets.shape[2] if any(self.noisy) else 0
        models = torch.arange(len(self.loaders), device=self.inputs.device).unsqueeze(1)
        steps = epoch_steps(keys, n, self.batch_size, self.repeats, self.shuffle, width, self.kernel)
        for idx, eps in steps:
            if idx is None:
                x, y = self.whole
            else:
                x, y = self.inputs[models, idx].transpose(1, 2), self.targets[models, idx].transpose(1, 2)
            if self.noisy[0]:
                x = x + self.noise[0] * eps[:, :n_inputs]
            if self.noisy[1]:
                y = y + self.noise[1] * eps[:, n_inputs:]
            yield x, y
