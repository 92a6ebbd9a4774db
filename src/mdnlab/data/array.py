"""What every data module shares (``ArrayDataModule``): a problem's draws become standardised,
split, in-memory tensors.

The tensors move to the training device once, in ``setup``, and stay there. Each module checks
its own arguments in its constructor (one ConfigError naming the key); ``check()`` does the
checks that read files.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from torch import Tensor

from mdnlab.data.batches import Standardizer, TensorBatches
from mdnlab.errors import ConfigError, integer, number

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

    def __init__(
        self,
        problem,
        seed: int,
        train_fraction: float,
        val_fraction: float,
        batch_size: int | None,
        passes_per_epoch: int,
        input_noise: float,
        target_noise: float,
    ) -> None:
        super().__init__()
        integer("data.seed", seed, 0)
        train = number("data.train_fraction", train_fraction, "a number in (0, 1]", lambda v: 0 < v <= 1)
        val = number("data.val_fraction", val_fraction, "a number in [0, 1)", lambda v: 0 <= v < 1)
        if train + val > 1 + 1e-9:
            raise ConfigError(
                "data.val_fraction", val, f"data.train_fraction + data.val_fraction ≤ 1 (train_fraction={train})"
            )
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
                    raise ConfigError(
                        f"data.{name}_fraction",
                        getattr(self.hparams, f"{name}_fraction"),
                        f"enough {name} points for {world} ranks (got {len(x)})",
                    )
                x, y = x[rank:usable:world], y[rank:usable:world]
            self.splits[name] = (x.to(device), y.to(device))

    def input_range(self) -> Tensor:
        """Each input's range (max − min) over the training split, in standardised units."""
        self.prepare_splits()
        inputs = self.raw["train"][0]
        return (inputs.amax(0) - inputs.amin(0)) / self.standardizer.input_std

    @property
    def truncates(self) -> bool:
        """Whether ``target_box`` gives a box (known without drawing the data)."""
        return False

    def target_box(self) -> Tensor | None:
        """(2, target_dim): the box (low, high) that the targets' density is truncated to during
        training, in standardised units, or None (no truncation; every problem but a truncated
        sbibm prior)."""
        return None

    def standardize(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        s = self.standardizer
        return (inputs - s.input_mean) / s.input_std, (targets - s.target_mean) / s.target_std

    def train_dataloader(self) -> TensorBatches:
        hp = self.hparams
        trainer = self.trainer
        return TensorBatches(
            *self.splits["train"],
            batch_size=hp.batch_size,
            repeats=hp.passes_per_epoch,
            shuffle=True,
            seed=int(hp.seed),
            rank=self.rank,
            input_noise=hp.input_noise,
            target_noise=hp.target_noise,
            epoch_of=(lambda: trainer.current_epoch) if trainer is not None else None,
        )

    def val_dataloader(self) -> TensorBatches | list:
        return TensorBatches(*self.splits["val"]) if len(self.splits["val"][0]) else []

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["test"])

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # The splits already live on the device: skip Lightning's generic recursive move.
        return batch
