"""Which of a multirun's jobs train as one stack: the keys whose values may differ between the
models of a stack, the reason a job runs alone, and the grouping (``plan``)."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from mdnlab.runs import rundir

# keys whose values may differ between the models of one stack (shapes stay equal)
STACKABLE = (
    "seed",
    "data.seed",
    "data.split",
    "data.input_noise",
    "data.target_noise",
    "data.noise_std",
    "model.optimizer.lr",
    "model.optimizer.weight_decay",
    "trainer.max_epochs",
    "callbacks.early_stopping.patience",
    "callbacks.early_stopping.min_delta",
    "figures",
    "test_checkpoint",
    "logger",
    "search",  # a search's trials: each its own trial of one study
)
# what the stacked loop does as a Lightning Trainer would; any other trainer setting runs alone
TRAINER_KEYS = (
    "_target_",
    "default_root_dir",
    "accelerator",
    "devices",
    "num_nodes",
    "max_epochs",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "enable_model_summary",
    "enable_progress_bar",
    "deterministic",
)
CALLBACKS = ("model_checkpoint", "last_checkpoint", "early_stopping", "rich_progress_bar", "lr_monitor")
OPTIMIZER_KEYS = ("_target_", "_partial_", "lr", "weight_decay", "betas", "eps")


def why_not_stackable(cfg: DictConfig) -> str | None:
    """None if the job can train in a stack, else the reason it runs alone."""
    from mdnlab.models.stacked import STACKABLE_OPTIMIZERS

    model, trainer = cfg.model, cfg.trainer
    if model.get("_target_") != "mdnlab.models.MixtureDensityNetwork":
        return f"model {model.get('_target_')}"
    if model.get("scheduler") is not None or (model.get("optimizer") or {}).get("_target_") not in STACKABLE_OPTIMIZERS:
        return "a scheduler or an optimiser other than Adam/AdamW"
    if set(model.optimizer) - set(OPTIMIZER_KEYS) or model.optimizer.get("amsgrad"):
        return "optimiser settings other than lr, weight_decay, betas, eps"
    if any(v is not None for k, v in trainer.items() if k not in TRAINER_KEYS):
        return "trainer settings the stacked loop does not implement"
    if trainer.get("devices", 1) not in (1, "1") or trainer.get("num_nodes", 1) != 1:
        return "more than one device"
    if any(v is not None for k, v in (cfg.get("callbacks") or {}).items() if k not in CALLBACKS):
        return "callbacks the stacked loop does not implement"
    if cfg.get("ckpt_path") is not None:
        return "ckpt_path"
    return None


def plan(cfgs: list[DictConfig]) -> list[list[int]]:
    """Job indices grouped into stacks: equal configs up to ``STACKABLE`` keys. A job that
    cannot stack is a group of its own (run alone, as the basic launcher runs it)."""
    from hydra.core.hydra_config import HydraConfig

    groups: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        HydraConfig.instance().set_config(cfg)  # what the job's own paths resolve against
        if why_not_stackable(cfg) is not None:
            groups[f"alone {index}"] = [index]
            continue
        shared = {
            k: v for k, v in rundir.identity(cfg).items() if not any(k == s or k.startswith(s + ".") for s in STACKABLE)
        }
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(index)
    return list(groups.values())
