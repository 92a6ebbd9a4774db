"""Evaluation of a fitted model: metrics (against the oracle where there is one), the predictive
summary that mdn-sample writes, and figures (``eval.figures``, loaded only when drawing).
Nothing here imports Lightning, the models or the command-line tools."""
