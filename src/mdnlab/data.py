"""LightningDataModules: a problem's draws become standardised, split, in-memory tensors.

Batches are served straight from memory (no Dataset, no DataLoader collation): for a model
this small, the DataLoader machinery costs more than the training step itself. The tensors
move to the training device once, in ``setup``, and stay there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import lightning as L
import torch
from torch import Tensor

from mdnlab.config import ConfigError
from mdnlab.problems import RobotArm, Sinusoid

# data.val_fraction=0 (no validation split) is deliberate; Lightning would warn about it every fit
warnings.filterwarnings("ignore", message=r"Total length of .* across ranks is zero")


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


class ArrayDataModule(L.LightningDataModule):
    """What every data module shares: raw splits in original units (``raw``, on the CPU), the
    train split's standardisation, standardised splits on the training device (``splits``),
    equal DDP shards and in-memory batches. A subclass says where the points come from by
    implementing ``draw()``, and names its columns in ``input_names``/``target_names``.

    Under DDP each rank trains and validates on its own shard of train and val; the test split
    is evaluated whole, on rank 0.
    """

    input_names: tuple[str, ...] = ("input",)
    target_names: tuple[str, ...] = ("target",)
    problem = None  # an object with the problem's oracle, where one is known

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}  # standardised, on the device
        self.raw: dict[str, tuple[Tensor, Tensor]] = {}  # original units, on the CPU
        self.standardizer: Standardizer | None = None
        self.rank = 0

    @property
    def input_dim(self) -> int:
        return len(self.input_names)

    @property
    def target_dim(self) -> int:
        return len(self.target_names)

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The raw train/val/test splits, (inputs (n, input_dim), targets (n, target_dim))."""
        raise NotImplementedError

    def prepare_splits(self) -> None:
        """Draw and split the data (idempotent); called by ``setup`` or directly for evaluation."""
        if self.raw:
            return
        self.raw.update(self.draw())
        fit = Standardizer.fit if self.hparams.standardize else Standardizer.identity
        self.standardizer = fit(*self.raw["train"])

    def setup(self, stage: str | None = None) -> None:
        self.prepare_splits()
        device, rank, world = torch.device("cpu"), 0, 1
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            rank, world = self.trainer.global_rank, self.trainer.world_size
        self.rank = rank
        for name, (inputs, targets) in self.raw.items():
            x, y = self.standardize(inputs, targets)
            if name != "test":  # each rank its own shard; evaluation always sees the whole test set
                # equal shards (the remainder is dropped, as DistributedSampler(drop_last) does):
                # ranks with different step counts would deadlock in the gradient all-reduce
                usable = len(x) // world * world
                if usable == 0 and (name == "train" or len(x)):
                    raise ConfigError(f"data.{name}_fraction", getattr(self.hparams, f"{name}_fraction"),
                                      f"enough {name} points for {world} ranks (got {len(x)})")
                x, y = x[rank:usable:world], y[rank:usable:world]
            self.splits[name] = (x.to(device), y.to(device))

    def standardize(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        s = self.standardizer
        return (inputs - s.input_mean) / s.input_std, (targets - s.target_mean) / s.target_std

    def train_dataloader(self) -> TensorBatches:
        hp = self.hparams
        trainer = self.trainer
        return TensorBatches(*self.splits["train"], batch_size=hp.batch_size,
                             repeats=hp.passes_per_epoch, shuffle=True, seed=int(hp.seed),
                             rank=self.rank, input_noise=hp.input_noise, target_noise=hp.target_noise,
                             epoch_of=(lambda: trainer.current_epoch) if trainer is not None else None)

    def val_dataloader(self) -> TensorBatches | list:
        return TensorBatches(*self.splits["val"]) if len(self.splits["val"][0]) else []

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["test"])

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # The splits already live on the device: skip Lightning's generic recursive move.
        return batch


class _ProblemDataModule(ArrayDataModule):
    """Points drawn from ``self.problem``: ``n_samples`` split into train/val/test by
    ``train_fraction``/``val_fraction`` (the rest is test), or, with ``n_test`` set, a fresh
    test draw of that size from the same generator after the pool: low-noise held-out numbers
    without taking from the training budget."""

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(int(hp.seed))
        inputs, targets = self.problem.sample(hp.n_samples, generator)
        n_train = int(round(hp.train_fraction * hp.n_samples))
        n_val = int(round(hp.val_fraction * hp.n_samples))
        raw = {"train": (inputs[:n_train], targets[:n_train]),
               "val": (inputs[n_train:n_train + n_val], targets[n_train:n_train + n_val])}
        if hp.n_test:
            raw["test"] = self.problem.sample(hp.n_test, generator)
        else:
            raw["test"] = (inputs[n_train + n_val:], targets[n_train + n_val:])
        return raw


class SinusoidDataModule(_ProblemDataModule):
    """The seed's sinusoid, ``forward`` (x → y) or ``inverted`` (y → x); see ``Sinusoid``.
    Inputs and targets are standardised with the train split's statistics (``standardize=False``
    trains on raw values, as the seed does)."""

    def __init__(self, direction: str = "inverted", n_samples: int = 1000, noise_std: float = 1.0,
                 x_low: float = -10.0, x_high: float = 10.0, seed: int = 0,
                 train_fraction: float = 0.8, val_fraction: float = 0.1, n_test: int | None = None,
                 batch_size: int | None = None, passes_per_epoch: int = 1,
                 standardize: bool = True, input_noise: float = 0.0,
                 target_noise: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.problem = Sinusoid(direction=direction, noise_std=noise_std, x_low=x_low, x_high=x_high)
        self.input_names, self.target_names = (("x",), ("y",)) if direction == "forward" else (("y",), ("x",))


class RobotArmDataModule(_ProblemDataModule):
    """Bishop's (1994) two-link arm, inverted: end-effector position (x1, x2) → joint angles
    (θ1, θ2); see ``RobotArm``."""

    input_names = ("x1", "x2")
    target_names = ("theta1", "theta2")

    def __init__(self, n_samples: int = 1000, n_test: int | None = 1000, seed: int = 0,
                 link1: float = 0.8, link2: float = 0.2, theta1_low: float = 0.3,
                 theta1_high: float = 1.2, theta2_low: float = math.pi / 2,
                 theta2_high: float = 3 * math.pi / 2, noise_std: float = 0.0,
                 train_fraction: float = 0.9, val_fraction: float = 0.1,
                 batch_size: int | None = None, passes_per_epoch: int = 1, standardize: bool = True,
                 input_noise: float = 0.0, target_noise: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.problem = RobotArm(link1=link1, link2=link2, theta1_low=theta1_low,
                                theta1_high=theta1_high, theta2_low=theta2_low,
                                theta2_high=theta2_high, noise_std=noise_std)


class TableDataModule(ArrayDataModule):
    """Your own data: named input and target columns of a CSV file (header row, comma
    separated) or an NPZ file (one 1-D array per name). Rows are shuffled with ``seed`` and
    split into train/val/test by ``train_fraction``/``val_fraction`` (the rest is test).
    ``mdnlab.table.load`` checks the file and says in one line what is wrong with it."""

    def __init__(self, path: str, inputs: list[str], targets: list[str], seed: int = 0,
                 train_fraction: float = 0.8, val_fraction: float = 0.1,
                 batch_size: int | None = None, passes_per_epoch: int = 1, standardize: bool = True,
                 input_noise: float = 0.0, target_noise: float = 0.0) -> None:
        super().__init__()
        # plain str/list, read by save_hyperparameters: a checkpoint must load with weights_only
        path, inputs, targets = str(path), [str(c) for c in inputs], [str(c) for c in targets]
        self.save_hyperparameters(logger=False)
        self.input_names, self.target_names = tuple(inputs), tuple(targets)

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        from mdnlab.table import load, split_sizes

        hp = self.hparams
        inputs, targets = load(hp.path, self.input_names, self.target_names,
                               hp.train_fraction, hp.val_fraction)
        n_train, n_val, _ = split_sizes(len(inputs), hp.train_fraction, hp.val_fraction)
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(int(hp.seed)))
        inputs, targets = inputs[order], targets[order]
        cut = (n_train, n_train + n_val)
        return {"train": (inputs[:cut[0]], targets[:cut[0]]),
                "val": (inputs[cut[0]:cut[1]], targets[cut[0]:cut[1]]),
                "test": (inputs[cut[1]:], targets[cut[1]:])}


def _safe_std(t: Tensor) -> Tensor:
    std = t.std(0)
    return torch.where(std > 0, std, torch.ones_like(std))
