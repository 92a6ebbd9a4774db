"""What a run leaves behind: its directory's record (run.json: the config that made it, its
status and results), metrics.json and hparams.yaml (``rundir``), and the steps after a fit that
write them: test scores, TensorBoard records, figures (``finish``). The same for a model trained
alone and one trained in a stack."""
