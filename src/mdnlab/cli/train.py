"""mdn-train: compose the config and train it (``training.single`` for one run; a launcher for a
multirun), leaving everything in the run directory (config, TensorBoard events, checkpoints,
metrics.json, run.json, figures)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from mdnlab.cli import usage
from mdnlab.cli.entry import check_log_folder, resume_arguments, run_entry_point
from mdnlab.config import CONFIG_DIR
from mdnlab.runs.search import Pruned, objective
from mdnlab.training.single import train


def _train_task(cfg: DictConfig) -> float | Pruned | None:
    # What a sweeper (e.g. Optuna) minimises: the validation score, never a test number.
    return objective(run_entry_point(train, cfg))


_train_task.mdnlab_stackable = True  # hydra/launcher=stacked may train this task's jobs as stacks
_hydra_main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(_train_task)


def main() -> None:
    """mdn-train [overrides] | mdn-train resume=<run dir> | mdn-train -m <sweep overrides>"""
    usage.help_if_asked(usage.TRAIN)
    sys.argv = resume_arguments(sys.argv)
    check_log_folder(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
