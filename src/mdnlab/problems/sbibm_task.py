"""An sbibm task (Lueckmann et al., AISTATS 2021) as a problem: a prior p(θ) and a simulator
x ~ p(x | θ), read as the inverse problem θ given x, with the task's 10 observations x_o, their
true parameters and reference posterior samples.

sbibm is imported here alone, lazily (the ``sbi`` extra), so that the rest of mdnlab imports
without it. It draws from torch's global generator: every draw here forks that generator and
seeds it, so the same seed gives the same simulations and the caller's generator is untouched.

The prior's support. Several priors are boxes (two_moons, slcp, gaussian_mixture,
gaussian_linear_uniform). With ``support="transform"`` the targets are θ' = T⁻¹(θ) for the
bijection T = ``biject_to(prior.support)`` of torch.distributions (for a box, an affine map of a
sigmoid per coordinate), so that a Gaussian mixture over θ' is a density over θ that is exact
and puts no mass outside the box:

    q(θ | x) = q'(T⁻¹(θ) | x) · |det ∂T⁻¹(θ)/∂θ|.

With ``support="reject"`` the targets are θ itself and the posterior keeps only draws inside the
support, its density renormalised by the acceptance rate (``eval.posterior``). ``support="truncate"``
scores the same way, but the network is also trained on that truncated density,

    −log q(θ | x) + log P_q(box | x),

in closed form for diagonal covariance (``mixtures.mvmixture.log_box_mass``), so that it fits a
posterior cut by the box rather than an untruncated one that the box then cuts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Transform, biject_to, constraints

from mdnlab.errors import ConfigError

# the tasks that run without Julia, in sbibm's order of the paper
TASKS = (
    "two_moons",
    "gaussian_linear",
    "gaussian_linear_uniform",
    "gaussian_mixture",
    "slcp",
    "slcp_distractors",
    "bernoulli_glm",
    "bernoulli_glm_raw",
)
JULIA_TASKS = ("sir", "lotka_volterra")  # their simulators are Julia's (sbibm's diffeqtorch)
SUPPORTS = ("transform", "reject", "truncate")
OBSERVATIONS = tuple(range(1, 11))
MIN_SIMULATIONS = 100
INSTALL_HINT = "the sbi extra installed (make install EXTRAS=dev,sbi)"


def sbibm_module() -> Any:
    """``import sbibm``, or one ConfigError saying how to install it."""
    try:
        import sbibm
    except ImportError as error:
        raise ConfigError("data", "sbibm", f"{INSTALL_HINT}; importing sbibm failed: {error}") from None
    return sbibm


def check_task(name: Any) -> str:
    if name in JULIA_TASKS:
        raise ConfigError(
            "data.task", name, f"one of {', '.join(TASKS)} ({name}'s simulator needs Julia, which mdnlab does not run)"
        )
    if name not in TASKS:
        raise ConfigError("data.task", name, "one of " + ", ".join(TASKS))
    return str(name)


def check_observations(values: Any) -> tuple[int, ...]:
    """The observation numbers asked for: a non-empty list of distinct integers from 1 to 10."""
    allowed = "a non-empty list of distinct observation numbers from 1 to 10, e.g. [1,2,3]"
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    try:
        numbers = tuple(values)
    except TypeError:
        raise ConfigError("data.observations", values, allowed) from None
    if not numbers or len(set(numbers)) != len(numbers):
        raise ConfigError("data.observations", list(numbers), allowed)
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or n not in OBSERVATIONS:
            raise ConfigError("data.observations", n, allowed)
    return numbers


@functools.lru_cache(maxsize=None)
def _task(name: str) -> Any:
    return sbibm_module().get_task(name)


def _safe_globals() -> list[Any]:
    """What slcp_distractors' own file (sbibm's ``files/gmm.torch``, a pickled pyro mixture)
    needs to load under torch.load's weights_only default: these classes and nothing else, so
    that no other pickled object can run code (the reason torch ≥ 2.6 refuses it by default)."""
    import pyro.distributions.multivariate_studentt as studentt
    import pyro.distributions.torch as pyro_torch

    names = ("MixtureSameFamily", "Categorical", "Independent", "Chi2")  # pyro's wrappers of torch's
    return [*(getattr(pyro_torch, name) for name in names), studentt.MultivariateStudentT]


@dataclass(frozen=True)
class SBIBMTask:
    """sbibm task ``task``: inputs x (the simulator's output), targets θ (or θ' = T⁻¹(θ), see the
    module's docstring). No closed-form posterior: the reference samples stand in for it."""

    task: str
    support: str = "transform"
    has_oracle = False

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.support not in SUPPORTS:
            raise ConfigError("data.support", self.support, "one of " + ", ".join(SUPPORTS))

    @property
    def sbibm(self) -> Any:
        return _task(self.task)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f"x{i + 1}" for i in range(self.sbibm.dim_data))

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.sbibm.get_labels_parameters())

    def prior(self) -> Distribution:
        prior: Distribution = self.sbibm.get_prior_dist()
        return prior

    @property
    def bounded(self) -> bool:
        """Whether the prior's support is not all of R^D (a box, say)."""
        support = self.prior().support
        base = getattr(support, "base_constraint", support)
        return base is not constraints.real

    def transform(self) -> Transform:
        """T: θ' ↦ θ, the bijection from R^D onto the prior's support (identity where it is R^D,
        or where the posterior rejects: ``support="reject"`` or ``"truncate"``)."""
        if self.support != "transform" or not self.bounded:
            return torch.distributions.transforms.identity_transform
        transform: Transform = biject_to(self.prior().support)
        return transform

    def box(self) -> tuple[Tensor, Tensor] | None:
        """(low, high), (D,) each, the prior's box where the network trains on the density truncated
        to it (``support="truncate"`` on a box prior), else None."""
        if self.support != "truncate" or not self.bounded:
            return None
        base: Any = getattr(self.prior().support, "base_constraint")  # noqa: B009 - independent(interval(a, b))
        return base.lower_bound.float(), base.upper_bound.float()

    def simulate(self, n: int, seed: int, then: int = 0) -> tuple[Tensor, Tensor]:
        """n draws (x (n, dim_x), θ (n, D)), θ from the prior and x from the simulator, float32,
        from torch's global generator forked and seeded with ``seed``; with ``then``, that many
        further draws from the same stream after them (rows n to n + then), so that the first n
        are the same whatever ``then`` is."""
        parts = []
        with torch.random.fork_rng(), torch.serialization.safe_globals(_safe_globals()):
            torch.manual_seed(int(seed))
            for size in (n, then) if then else (n,):
                theta = self.sbibm.get_prior()(num_samples=size)
                parts.append((self.sbibm.get_simulator()(theta).float(), theta.float()))
        return torch.cat([x for x, _ in parts]), torch.cat([t for _, t in parts])

    def sample(self, n: int, seed: int, then: int = 0) -> tuple[Tensor, Tensor]:
        """(inputs x, targets) as ``simulate`` draws them, the targets in the coordinates the
        model fits (θ or θ')."""
        x, theta = self.simulate(n, seed, then)
        return x, self.transform().inv(theta)

    def observation(self, k: int) -> Tensor:
        """x_o of observation k (1 to 10), (1, dim_x)."""
        x_o: Tensor = self.sbibm.get_observation(num_observation=k)
        return x_o.float()

    def reference_samples(self, k: int) -> Tensor:
        """sbibm's 10,000 reference posterior samples of observation k, (10000, D)."""
        samples: Tensor = self.sbibm.get_reference_posterior_samples(num_observation=k)
        return samples.float()

    def true_parameters(self, k: int) -> Tensor:
        """The θ that simulated x_o of observation k, (1, D)."""
        theta: Tensor = self.sbibm.get_true_parameters(num_observation=k)
        return theta.float()

    def directions(self, inputs: Tensor, targets: Tensor) -> list[tuple["SBIBMTask", Tensor, Tensor]]:
        return [(self, inputs, targets)]
