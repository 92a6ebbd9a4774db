"""Problems: where (input, target) pairs come from, what each variable is called, and, where it
is known, the true conditional density (the oracle) that a model is scored against.

No Lightning here. A problem is an object with

    input_names, target_names                        the variables, in the problem's own direction
    has_oracle                                       whether the methods below give a density
    directions(inputs, targets)                      the same draw read every way the problem can
                                                     be read: [(problem, inputs, targets), ...]
    sample(n, generator) -> (inputs, targets)        float32 (n, input_dim), (n, target_dim)
                                                     (``load()`` for a table: its rows)
    oracle(inputs, targets) -> (log p, E, Var)       true log p(target | input) and moments
    log_density_grid, moments                        the same on a grid / without targets
    endpoint_errors(inputs, predictions) -> (n,)     a task error of point predictions (robot arm)
    observation(k), reference_samples(k)             an sbibm task's x_o and reference posterior
"""

from mdnlab.problems.robot_arm import RobotArm
from mdnlab.problems.sbibm_task import SBIBMTask
from mdnlab.problems.sinusoid import DIRECTIONS, Sinusoid
from mdnlab.problems.table import Table
from mdnlab.problems.uci import UCISet, available_sets

__all__ = ["DIRECTIONS", "RobotArm", "SBIBMTask", "Sinusoid", "Table", "UCISet", "available_sets"]
