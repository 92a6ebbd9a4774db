"""The LightningDataModules a config names: the sinusoid and the robot arm (drawn from their
generative process) and your own table (read from a file), each an ``ArrayDataModule``."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from mdnlab.data.array import ArrayDataModule
from mdnlab.data.batches import split_sizes
from mdnlab.errors import ConfigError, fits_in_memory, integer
from mdnlab.problems import RobotArm, Sinusoid, Table


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
            raise ConfigError(
                "data.n_samples",
                n_samples,
                "enough points for ≥ 2 train, ≥ 1 val and "
                f"≥ 1 test (got {n_train}/{n_val}/{n_rest}); raise it or set data.n_test",
            )

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(int(hp.seed))
        inputs, targets = self.problem.sample(hp.n_samples, generator)
        n_train, n_val, _ = split_sizes(hp.n_samples, hp.train_fraction, hp.val_fraction)
        raw = {
            "train": (inputs[:n_train], targets[:n_train]),
            "val": (inputs[n_train : n_train + n_val], targets[n_train : n_train + n_val]),
        }
        if hp.n_test:
            raw["test"] = self.problem.sample(hp.n_test, generator)
        else:
            raw["test"] = (inputs[n_train + n_val :], targets[n_train + n_val :])
        return raw


class SinusoidDataModule(_ProblemDataModule):
    """The seed's sinusoid, ``forward`` (x → y) or ``inverted`` (y → x); see ``Sinusoid``.
    Inputs and targets are standardised with the train split's statistics (``standardize=False``
    trains on raw values, as the seed does)."""

    def __init__(
        self,
        direction: str = "inverted",
        n_samples: int = 1000,
        noise_std: float = 1.0,
        x_low: float = -10.0,
        x_high: float = 10.0,
        seed: int = 0,
        train_fraction: float = 0.8,
        val_fraction: float = 0.1,
        n_test: int | None = None,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        standardize: bool = True,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
    ) -> None:
        problem = Sinusoid(direction=direction, noise_std=noise_std, x_low=x_low, x_high=x_high)
        super().__init__(
            problem,
            n_samples,
            n_test,
            seed=seed,
            train_fraction=train_fraction,
            val_fraction=val_fraction,
            batch_size=batch_size,
            passes_per_epoch=passes_per_epoch,
            input_noise=input_noise,
            target_noise=target_noise,
        )
        self.save_hyperparameters(logger=False)


class RobotArmDataModule(_ProblemDataModule):
    """Bishop's (1994) two-link arm, inverted: end-effector position (x1, x2) → joint angles
    (θ1, θ2); see ``RobotArm``."""

    def __init__(
        self,
        n_samples: int = 1000,
        n_test: int | None = 1000,
        seed: int = 0,
        link1: float = 0.8,
        link2: float = 0.2,
        theta1_low: float = 0.3,
        theta1_high: float = 1.2,
        theta2_low: float = math.pi / 2,
        theta2_high: float = 3 * math.pi / 2,
        noise_std: float = 0.0,
        train_fraction: float = 0.9,
        val_fraction: float = 0.1,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        standardize: bool = True,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
    ) -> None:
        problem = RobotArm(
            link1=link1,
            link2=link2,
            theta1_low=theta1_low,
            theta1_high=theta1_high,
            theta2_low=theta2_low,
            theta2_high=theta2_high,
            noise_std=noise_std,
        )
        super().__init__(
            problem,
            n_samples,
            n_test,
            seed=seed,
            train_fraction=train_fraction,
            val_fraction=val_fraction,
            batch_size=batch_size,
            passes_per_epoch=passes_per_epoch,
            input_noise=input_noise,
            target_noise=target_noise,
        )
        self.save_hyperparameters(logger=False)


class TableDataModule(ArrayDataModule):
    """Your own data (``Table``): rows shuffled with ``seed`` and split into train/val/test by
    ``train_fraction``/``val_fraction`` (the rest is test). The file is read by ``check()`` and
    ``draw()``, not by the constructor, so a checkpoint rebuilds this module without the file."""

    def __init__(
        self,
        path: str,
        inputs: list[str],
        targets: list[str],
        seed: int = 0,
        train_fraction: float = 0.8,
        val_fraction: float = 0.1,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        standardize: bool = True,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
        sha256: str | None = None,
    ) -> None:
        if path is not None and str(path) not in ("", "???"):
            path = os.path.abspath(Path(str(path)).expanduser())  # a checkpoint must not depend on the cwd
        problem = Table(path, inputs, targets)
        super().__init__(
            problem,
            seed=seed,
            train_fraction=train_fraction,
            val_fraction=val_fraction,
            batch_size=batch_size,
            passes_per_epoch=passes_per_epoch,
            input_noise=input_noise,
            target_noise=target_noise,
        )
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
            raise ConfigError(
                "data.path",
                hp.path,
                "the file this model was trained on (it is not there; "
                "if it moved, name its new place with data.path=...)",
            )
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
        if hp.sha256 and digest != hp.sha256:
            raise ConfigError(
                "data.path",
                hp.path,
                f"the file this model was trained on (sha256 "
                f"{hp.sha256[:12]}…): it has changed since (sha256 {digest[:12]}…)",
            )
        inputs, _ = self._rows = self.problem.load()
        hp["sha256"] = digest
        n_train, n_val, n_test = split_sizes(len(inputs), hp.train_fraction, hp.val_fraction)
        if n_train < 2 or (hp.val_fraction > 0 and n_val < 1) or n_test < 1:
            raise ConfigError(
                "data.path",
                hp.path,
                f"a file with enough rows for ≥ 2 train, ≥ 1 val "
                f"and ≥ 1 test points at train_fraction={hp.train_fraction}, "
                f"val_fraction={hp.val_fraction} (it has {len(inputs)})",
            )

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self._rows is None:
            self.check()
        inputs, targets = self._rows
        hp = self.hparams
        n_train, n_val, _ = split_sizes(len(inputs), hp.train_fraction, hp.val_fraction)
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(int(hp.seed)))
        inputs, targets = inputs[order], targets[order]
        cut = (n_train, n_train + n_val)
        return {
            "train": (inputs[: cut[0]], targets[: cut[0]]),
            "val": (inputs[cut[0] : cut[1]], targets[cut[0] : cut[1]]),
            "test": (inputs[cut[1] :], targets[cut[1] :]),
        }
