"""The command-line tools (mdn-train, mdn-eval, mdn-sample, mdn-report) and what they share:
config location, resolvers and run-level checks (``config``), and bad input turned into one
line (``entry``). Thin: they compose, check, call the library and write the run directory."""
