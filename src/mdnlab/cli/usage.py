"""--help for the command-line tools: examples first, printed before torch or Hydra is imported
(Hydra's own page stays behind --hydra-help)."""

from __future__ import annotations

import sys

TRAIN = """\
mdn-train: fit a model from the composed config, score it on the test split, and leave the run
directory (config, TensorBoard events, checkpoints, metrics.json, run.json, figures) under
logs/train/runs/ (or $MDNLAB_LOG_DIR).

  mdn-train                                         the default experiment (mdn_inverted)
  mdn-train experiment=seed_mdn_inverted seed=1     another experiment (configs/experiment/*.yaml)
  mdn-train experiment=flow_inverted                a conditional spline flow (model=flow) instead
  mdn-train model.n_gaussians=3 model.hidden_size=50 trainer.max_epochs=4
  mdn-train data=table data.path=my.csv 'data.inputs=[a,b]' 'data.targets=[c]'
  mdn-train trainer=gpu                             the same run on a GPU (trainer=ddp: several)
  mdn-train resume=logs/train/runs/<run>            continue a run that was cut off
  mdn-train -m model.n_gaussians=1,3,5 seed=0,1,2   a sweep, one job after another
  mdn-train -m hydra/launcher=stacked seed='range(20)'
                                                    the fastest sweep: jobs that differ in seeds,
                                                    noise, lr or length train as one network
  mdn-train -m hydra/launcher=parallel ...          jobs side by side on this machine's cores
  mdn-train -m hydra/launcher=slurm ...             jobs on a SLURM cluster (submitit), one a job
  mdn-train -m hydra/launcher=stacked_slurm ...     stacks as SLURM jobs: many models a job
  mdn-train -m ... hydra.sweep.dir=<sweep dir>      finish a killed sweep: the same command again
  mdn-train --config-dir my_configs experiment=mine your own experiment YAML beside ours

Groups: data, model, trainer, logger, callbacks, experiment, hydra/launcher, hparams_search.
mdn-train --cfg job prints the composed config; --hydra-help shows Hydra's own options.
"""

EVAL = """\
mdn-eval: score a checkpoint on a split of the data it was trained on (rebuilt from the
checkpoint), printing the metrics and writing metrics.json under logs/eval/runs/.

  mdn-eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
  mdn-eval ckpt_path=... split=val
  mdn-eval ckpt_path=... data.path=<new place of a moved table file>
"""

SAMPLE = """\
mdn-sample: draws, modes, mean, standard deviation, mixture parameters and the density on a
grid at given inputs, from a checkpoint alone, written under logs/sample/runs/.

  mdn-sample ckpt_path=<checkpoint> 'inputs=[-5,0,5]' n_samples=1000
  mdn-sample ckpt_path=<checkpoint> 'inputs=[[0.5,0.4],[0.3,0.6]]' format=csv temperature=0.5
"""


def help_if_asked(text: str) -> None:
    """Print ``text`` and exit when the command line asks for --help or -h."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print(text, end="")
        sys.exit(0)
