"""How models are trained: one model by a Lightning Trainer (``single``, with the epoch-per-step
fast loop of ``models.fast_loop`` and the step progress bar of ``progress``), and many models as
one stacked network (``stack_plan``: which jobs stack; ``stacks``: how each is prepared and
finished; ``stack_job``: one model of a stack; ``stacked_loop``: the loop). Both leave their
results to ``runs``."""
