"""LightningDataModules: a problem's draws become standardised, split, in-memory tensors.

The tensors move to the training device once, in ``setup``, and stay there. Each module checks
its own arguments in its constructor (one ConfigError naming the key); ``check()`` does the
checks that read files.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from mdnlab.data.batches import Standardizer, TensorBatches, split_sizes
from mdnlab.errors import ConfigError, fits_in_memory, integer, number
from mdnlab.problems import RobotArm, Sinusoid, Table

# data.val_fraction=0 (no validation split) is deliberate; Lightning would warn about it every fit
warnings.filterwarnings("ignore", message=r"Total length of .* across ranks is zero")


class ArrayDataModule(L.LightningDataModule):
    """What every data module shares: raw splits in original units (``raw``, on the CPU), the
    train split's standardisation, standardised splits on the training device (``splits``),
    equal DDP shards and in-memory batches. A subclass gives the problem (which names the
    variables) and says where the points come from by implementing ``draw()``.

    Under DDP each rank trains and validates on its own shard of train and val; the test split
    is evaluated whole, on rank 0.
    """

    def __init__(self, problem, seed: int, train_fraction: float, val_fraction: float,
                 batch_size: int | None, passes_per_epoch: int, input_noise: float,
                 target_noise: float) -> None:
        super().__init__()
        integer("data.seed", seed, 0)
        train = number("data.train_fraction", train_fraction, "a number in (0, 1]", lambda v: 0 < v <= 1)
        val = number("data.val_fraction", val_fraction, "a number in [0, 1)", lambda v: 0 <= v < 1)
        if train + val > 1 + 1e-9:
            raise ConfigError("data.val_fraction", val,
                              f"data.train_fraction + data.val_fraction ≤ 1 (train_fraction={train})")
        for key, value in (("data.input_noise", input_noise), ("data.target_noise", target_noise)):
            number(key, value, "a finite number ≥ 0", lambda v: v >= 0)
        integer("data.batch_size", batch_size, 1, optional=True)
        integer("data.passes_per_epoch", passes_per_epoch, 1)
        self.problem = problem
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}  # standardised, on the device
        self.raw: dict[str, tuple[Tensor, Tensor]] = {}  # original units, on the CPU
        self.standardizer: Standardizer | None = None
        self.rank = 0

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.problem.input_names)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.problem.target_names)

    @property
    def input_dim(self) -> int:
        return len(self.input_names)

    @property
    def target_dim(self) -> int:
        return len(self.target_names)

    def check(self) -> None:
        """Checks that need more than the arguments (a file's contents); nothing by default."""

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

    def __init__(self, problem, n_samples: int, n_test: int | None, **shared) -> None:
        super().__init__(problem, **shared)
        integer("data.n_samples", n_samples, 2)
        integer("data.n_test", n_test, 1, optional=True)
        # raw, standardised and noisy float32 copies, float64 for scoring and the oracle: ~64 B a value
        per_point = 64 * (len(problem.input_names) + len(problem.target_names))
        fits_in_memory("data.n_samples", n_samples, n_samples * per_point, per_point)
        fits_in_memory("data.n_test", n_test, (n_test or 0) * per_point, per_point)
        n_train, n_val, n_rest = split_sizes(n_samples, shared["train_fraction"], shared["val_fraction"])
        if n_train < 2 or (shared["val_fraction"] > 0 and n_val < 1) or (n_test is None and n_rest < 1):
            raise ConfigError("data.n_samples", n_samples, "enough points for ≥ 2 train, ≥ 1 val and "
                              f"≥ 1 test (got {n_train}/{n_val}/{n_rest}); raise it or set data.n_test")

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(int(hp.seed))
        inputs, targets = self.problem.sample(hp.n_samples, generator)
        n_train, n_val, _ = split_sizes(hp.n_samples, hp.train_fraction, hp.val_fraction)
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
        problem = Sinusoid(direction=direction, noise_std=noise_std, x_low=x_low, x_high=x_high)
        super().__init__(problem, n_samples, n_test, seed=seed, train_fraction=train_fraction,
                         val_fraction=val_fraction, batch_size=batch_size,
                         passes_per_epoch=passes_per_epoch, input_noise=input_noise,
                         target_noise=target_noise)
        self.save_hyperparameters(logger=False)


class RobotArmDataModule(_ProblemDataModule):
    """Bishop's (1994) two-link arm, inverted: end-effector position (x1, x2) → joint angles
    (θ1, θ2); see ``RobotArm``."""

    def __init__(self, n_samples: int = 1000, n_test: int | None = 1000, seed: int = 0,
                 link1: float = 0.8, link2: float = 0.2, theta1_low: float = 0.3,
                 theta1_high: float = 1.2, theta2_low: float = math.pi / 2,
                 theta2_high: float = 3 * math.pi / 2, noise_std: float = 0.0,
                 train_fraction: float = 0.9, val_fraction: float = 0.1,
                 batch_size: int | None = None, passes_per_epoch: int = 1, standardize: bool = True,
                 input_noise: float = 0.0, target_noise: float = 0.0) -> None:
        problem = RobotArm(link1=link1, link2=link2, theta1_low=theta1_low, theta1_high=theta1_high,
                           theta2_low=theta2_low, theta2_high=theta2_high, noise_std=noise_std)
        super().__init__(problem, n_samples, n_test, seed=seed, train_fraction=train_fraction,
                         val_fraction=val_fraction, batch_size=batch_size,
                         passes_per_epoch=passes_per_epoch, input_noise=input_noise,
                         target_noise=target_noise)
        self.save_hyperparameters(logger=False)


class TableDataModule(ArrayDataModule):
    """Your own data (``Table``): rows shuffled with ``seed`` and split into train/val/test by
    ``train_fraction``/``val_fraction`` (the rest is test). The file is read by ``check()`` and
    ``draw()``, not by the constructor, so a checkpoint rebuilds this module without the file."""

    def __init__(self, path: str, inputs: list[str], targets: list[str], seed: int = 0,
                 train_fraction: float = 0.8, val_fraction: float = 0.1,
                 batch_size: int | None = None, passes_per_epoch: int = 1, standardize: bool = True,
                 input_noise: float = 0.0, target_noise: float = 0.0, sha256: str | None = None) -> None:
        if path is not None and str(path) not in ("", "???"):
            path = os.path.abspath(Path(str(path)).expanduser())  # a checkpoint must not depend on the cwd
        problem = Table(path, inputs, targets)
        super().__init__(problem, seed=seed, train_fraction=train_fraction,
                         val_fraction=val_fraction, batch_size=batch_size,
                         passes_per_epoch=passes_per_epoch, input_noise=input_noise,
                         target_noise=target_noise)
        # plain str/list, read by save_hyperparameters: a checkpoint must load with weights_only
        path, inputs, targets = problem.path, list(problem.inputs), list(problem.targets)
        self.save_hyperparameters(logger=False)
        self._rows: tuple[Tensor, Tensor] | None = None

    def check(self) -> None:
        """Read the file: the same file as in training (by content hash, when the module was
        rebuilt from a checkpoint), the columns exist and hold finite numbers, enough rows for
        the splits. A first read records the hash (``sha256``, saved in checkpoints)."""
        hp = self.hparams
        file = Path(hp.path)
        if hp.sha256 and not file.is_file():
            raise ConfigError("data.path", hp.path, "the file this model was trained on (it is not there; "
                              "if it moved, name its new place with data.path=...)")
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
        if hp.sha256 and digest != hp.sha256:
            raise ConfigError("data.path", hp.path, f"the file this model was trained on (sha256 "
                              f"{hp.sha256[:12]}…): it has changed since (sha256 {digest[:12]}…)")
        inputs, _ = self._rows = self.problem.load()
        hp["sha256"] = digest
        n_train, n_val, n_test = split_sizes(len(inputs), hp.train_fraction, hp.val_fraction)
        if n_train < 2 or (hp.val_fraction > 0 and n_val < 1) or n_test < 1:
            raise ConfigError("data.path", hp.path, f"a file with enough rows for ≥ 2 train, ≥ 1 val "
                              f"and ≥ 1 test points at train_fraction={hp.train_fraction}, "
                              f"val_fraction={hp.val_fraction} (it has {len(inputs)})")

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self._rows is None:
            self.check()
        inputs, targets = self._rows
        hp = self.hparams
        n_train, n_val, _ = split_sizes(len(inputs), hp.train_fraction, hp.val_fraction)
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(int(hp.seed)))
        inputs, targets = inputs[order], targets[order]
        cut = (n_train, n_train + n_val)
        return {"train": (inputs[:cut[0]], targets[:cut[0]]),
                "val": (inputs[cut[0]:cut[1]], targets[cut[0]:cut[1]]),
                "test": (inputs[cut[1]:], targets[cut[1]:])}
