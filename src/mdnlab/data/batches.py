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

    The shuffling and noise of an epoch are drawn from generators seeded by (seed, rank,
    epoch), with the epoch read from ``epoch_of()``: a run resumed at epoch e draws exactly
    what the uninterrupted run drew there, and DDP ranks draw different noise.
    """

    def __init__(self, inputs: Tensor, targets: Tensor, batch_size: int | None = None,
                 repeats: int = 1, shuffle: bool = False, seed: int = 0, rank: int = 0,
                 input_noise: float = 0.0, target_noise: float = 0.0,
                 epoch_of: Callable[[], int] | None = None) -> None:
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
        order_rng = torch.Generator().manual_seed(_stream(self.seed, self.rank, epoch, 0))
        noise_rng = None
        if any(self.noise):
            noise_rng = torch.Generator(self.inputs.device)
            noise_rng.manual_seed(_stream(self.seed, self.rank, epoch, 1))
        n = len(self.inputs)
        for _ in range(self.repeats):
            if self.batch_size is None or self.batch_size >= n:
                yield self._jitter(self.inputs, self.targets, noise_rng)
                continue
            order = torch.randperm(n, generator=order_rng) if self.shuffle else torch.arange(n)
            for idx in order.to(self.inputs.device).split(self.batch_size):
                yield self._jitter(self.inputs[idx], self.targets[idx], noise_rng)

    def _jitter(self, x: Tensor, y: Tensor, rng: torch.Generator | None) -> tuple[Tensor, Tensor]:
        if rng is None:
            return x, y
        input_noise, target_noise = self.noise
        if input_noise:
            x = x + input_noise * torch.randn(x.shape, generator=rng, device=x.device)
        if target_noise:
            y = y + target_noise * torch.randn(y.shape, generator=rng, device=y.device)
        return x, y


def _stream(*parts: int) -> int:
    """A 63-bit seed for one (seed, rank, epoch, purpose) stream: deterministic across runs
    (Python hashes tuples of ints without salt)."""
    return hash(tuple(int(p) for p in parts)) & (2**63 - 1)


def _safe_std(t: Tensor) -> Tensor:
    std = t.std(0)
    return torch.where(std > 0, std, torch.ones_like(std))


class StackedBatches:
    """S ``TensorBatches`` of equal shapes served together: each batch is (inputs (S, D, n),
    targets (S, T, n)), laid out for ``models.stacked`` (points last), and model s's slice is
    exactly what its own TensorBatches yields: the same shuffling and noise, from the same
    generators drawn in the same order. Written apart from TensorBatches because drawing S
    models' noise into one buffer and adding it in one operation is what keeps a stacked step
    cheap (zipping S iterators cost more than the stacked network's step)."""

    def __init__(self, loaders: list[TensorBatches]) -> None:
        self.loaders = loaders
        first = loaders[0]
        self.batch_size, self.repeats, self.shuffle = first.batch_size, first.repeats, first.shuffle
        self.inputs = torch.stack([b.inputs for b in loaders])  # (S, N, D)
        self.targets = torch.stack([b.targets for b in loaders])
        device = self.inputs.device
        self.noise = [torch.tensor([b.noise[i] for b in loaders], device=device).view(-1, 1, 1) for i in (0, 1)]
        self.noisy = [[bool(b.noise[i]) for b in loaders] for i in (0, 1)]
        self.whole = (self.inputs.transpose(1, 2).contiguous(), self.targets.transpose(1, 2).contiguous())

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epochs = []
        for loader in self.loaders:
            epochs.append(loader.epoch_of())
            loader._epochs_served += 1
        parts = [(b.seed, b.rank, e) for b, e in zip(self.loaders, epochs)]
        order_rngs = [torch.Generator().manual_seed(_stream(*p, 0)) for p in parts]
        noise_rngs = None
        if any(map(any, self.noisy)):
            noise_rngs = [torch.Generator(self.inputs.device) for _ in parts]
            for rng, p in zip(noise_rngs, parts):
                rng.manual_seed(_stream(*p, 1))
        n = self.inputs.shape[1]
        models = torch.arange(len(self.loaders), device=self.inputs.device).unsqueeze(1)
        for _ in range(self.repeats):
            if self.batch_size is None or self.batch_size >= n:
                yield self._jitter(*self.whole, noise_rngs)
                continue
            if self.shuffle:
                orders = torch.stack([torch.randperm(n, generator=g) for g in order_rngs])
            else:
                orders = torch.arange(n).expand(len(self.loaders), n)
            for idx in orders.to(self.inputs.device).split(self.batch_size, dim=1):  # (S, B)
                x, y = self.inputs[models, idx], self.targets[models, idx]
                yield self._jitter(x.transpose(1, 2), y.transpose(1, 2), noise_rngs)

    def _jitter(self, x: Tensor, y: Tensor, rngs: list | None) -> tuple[Tensor, Tensor]:
        """x + σ_in ε, y + σ_out ε per model, ε drawn as TensorBatches draws it: (n, D) row-major,
        inputs before targets, nothing drawn for a zero level."""
        if rngs is None:
            return x, y
        buffers = [torch.zeros(x.shape[0], x.shape[2], x.shape[1], device=x.device),
                   torch.zeros(y.shape[0], y.shape[2], y.shape[1], device=y.device)]
        for s, rng in enumerate(rngs):
            for i in (0, 1):
                if self.noisy[i][s]:
                    torch.randn(buffers[i][s].shape, generator=rng, device=x.device, out=buffers[i][s])
        return (x + self.noise[0] * buffers[0].transpose(1, 2) if any(self.noisy[0]) else x,
                y + self.noise[1] * buffers[1].transpose(1, 2) if any(self.noisy[1]) else y)
