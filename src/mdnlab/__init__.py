"""mdnlab: Mixture Density Networks on inverse problems (Lightning + Hydra).

errors, io      exceptions and checks; atomic writes (import nothing of mdnlab)
dist            Gaussian-mixture math, one and D targets (torch only)
problems        sinusoid, robot arm, a user's table: draws, names, oracles (torch only)
data, models    LightningDataModules and LightningModules
eval            metrics, predictive summaries, figures (no Lightning, no models)
checkpoint      the one safe reader of checkpoints
cli             mdn-train, mdn-eval, mdn-sample, mdn-report
"""
