"""An sbibm task's simulations as a data module (``problems.sbibm_task``): the budget's θ from
the prior and x from the simulator, inputs x and targets θ, for an amortized posterior p(θ | x)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mdnlab.data.array import ArrayDataModule
from mdnlab.data.batches import split_sizes
from mdnlab.errors import ConfigError, integer
from mdnlab.problems.sbibm_task import MIN_SIMULATIONS, SBIBMTask, check_observations


class SBIBMDataModule(ArrayDataModule):
    """``num_simulations`` simulations of ``task`` drawn with ``seed`` (the same draws for the
    same seed: a rerun, or every model of a stack that shares data.seed), ``val_fraction`` of
    them validating (early stopping, the best checkpoint), the rest training; x and θ
    standardised with the training rows' statistics. The test split is ``n_test`` further
    simulations from the same seed, outside the budget: test/nll is the posterior's NLL of θ
    over fresh draws of the prior predictive, in the fitted coordinates (θ', see ``support``;
    with ``support="truncate"``, of the truncated density, ``target_box``),
    and test/nll_theta (val/nll_theta on the validation split) the same in θ's own units, which
    compares the supports (``eval.posterior.theta_nll``).

    After the fit, the posterior of each observation in ``observations`` (1 to 10) is scored
    against the task's reference (``eval.posterior``): ``posterior_samples`` draws, C2ST
    (when ``c2st``; on its first ``c2st_samples`` draws and reference samples), NLTP, and
    MMD (when ``mmd``: O(n²), about 7 s an observation at 10,000 draws on 2 cores)."""

    def __init__(
        self,
        task: str,
        num_simulations: int = 10_000,
        seed: int = 0,
        val_fraction: float = 0.1,
        n_test: int = 1000,
        support: str = "transform",
        observations: Any = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
        posterior_samples: int = 10_000,
        c2st: bool = True,
        c2st_samples: int | None = None,
        mmd: bool = True,
        batch_size: int | None = None,
        passes_per_epoch: int = 1,
        standardize: bool = True,
        input_noise: float = 0.0,
        target_noise: float = 0.0,
    ) -> None:
        self.task = SBIBMTask(str(task), str(support))
        if (integer("data.num_simulations", num_simulations, 1) or 0) < MIN_SIMULATIONS:
            raise ConfigError(
                "data.num_simulations",
                num_simulations,
                f"an integer ≥ {MIN_SIMULATIONS} (sbibm's budgets: 1000, 10000, 100000)",
            )
        integer("data.n_test", n_test, 1)
        integer("data.posterior_samples", posterior_samples, 100)
        integer("data.c2st_samples", c2st_samples, 100, optional=True)
        for key, value in (("data.c2st", c2st), ("data.mmd", mmd)):
            if not isinstance(value, bool):
                raise ConfigError(key, value, "true or false")
        observations = list(check_observations(observations))  # a plain list for save_hyperparameters
        super().__init__(
            self.task,
            seed=seed,
            train_fraction=1 - val_fraction,
            val_fraction=val_fraction,
            batch_size=batch_size,
            passes_per_epoch=passes_per_epoch,
            input_noise=input_noise,
            target_noise=target_noise,
        )
        self.save_hyperparameters(logger=False)

    def check(self) -> None:
        """sbibm installed and the task loads (its files ship inside the package)."""
        self.task.sbibm  # noqa: B018 - loads the task, or says how to install sbibm

    def posterior_settings(self) -> dict[str, Any]:
        """What ``eval.posterior.score`` takes after the fit, besides the model and the seed."""
        hp = self.hparams
        return {
            "task": self.task,
            "observations": list(hp["observations"]),
            "n_samples": int(hp["posterior_samples"]),
            "with_c2st": bool(hp["c2st"]),
            "c2st_samples": hp["c2st_samples"],
            "with_mmd": bool(hp["mmd"]),
        }

    @property
    def truncates(self) -> bool:
        return self.task.box() is not None

    def target_box(self) -> Tensor | None:
        """The prior's box in standardised units where ``support="truncate"``, else None."""
        box = self.task.box()
        if box is None:
            return None
        self.prepare_splits()
        s = self.standardizer
        assert s is not None  # prepare_splits fits it
        return torch.stack([(bound - s.target_mean) / s.target_std for bound in box])

    def draw(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        n = int(hp["num_simulations"])
        x, theta = self.task.sample(n, int(hp["seed"]), then=int(hp["n_test"]))
        n_val = split_sizes(n, 1 - hp["val_fraction"], hp["val_fraction"])[1]
        n_train = n - n_val
        return {
            "train": (x[:n_train], theta[:n_train]),
            "val": (x[n_train:n], theta[n_train:n]),
            "test": (x[n:], theta[n:]),
        }
