"""The command-line tools (mdn-train, mdn-eval, mdn-sample, mdn-report) and what only they
share: bad input turned into one line and ``resume=`` (``entry``), the --help pages (``usage``).
Thin: they compose the config and call ``training``, ``eval`` and ``runs``."""
