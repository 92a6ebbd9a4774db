"""A fitted model as an amortized posterior q(θ | x) on an sbibm task, scored at the task's
observations as sbibm scores a method (Lueckmann et al., 2021; ``benchmarking_sbi/run.py``):

    C2ST   the stacked classifier test of ``eval.c2st`` (z-scored by the reference), reference
           samples against the posterior's draws
    NLTP   −log q(θ_true | x_o) at the observation's true parameters
    MMD    sbibm's ``metrics.mmd`` (Gaussian kernel, median-heuristic bandwidth, unbiased MMD²,
           no z-scoring), reference against the draws

Nothing here imports Lightning or the models: a model is anything with
``predictive_mixture(inputs) -> Mixture`` in the fitted coordinates, a task a
``problems.SBIBMTask``. Draws and scores are seeded: the same run scores the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torch.distributions import Transform
from torch.distributions.transforms import identity_transform

from mdnlab.eval.c2st import c2st
from mdnlab.mixtures import Mixture

REJECTION_BATCH = 10_000
MAX_REJECTION_ROUNDS = 1000  # an acceptance rate under ~1e-3 is a failed posterior, not a slow one
SUPPORT_DRAWS = 2000  # per input, for a full-covariance mixture's mass in the box (± ~0.011 at 1/2)
ROWS_PER_CHUNK = 500  # inputs per chunk of those draws: 500 × 2000 × D float64s


@dataclass(frozen=True)
class MixturePosterior:
    """q(θ | x_o) from a Gaussian mixture q'(θ' | x_o) in the fitted coordinates and θ = T(θ')
    (``SBIBMTask.transform``), or, with ``support`` (a constraint), q restricted to the prior's
    support and renormalised by the acceptance rate:

        transform   q(θ) = q'(T⁻¹θ) |det ∂T⁻¹(θ)/∂θ|
        reject      q(θ) = q'(θ) 1[θ ∈ support] / P_q'(support)

    where P_q'(support) is estimated from the draws that ``sample`` made (``acceptance``)."""

    mixture: Mixture  # one input: logits (1, K), mu (1, K, D), scale (1, K, D[, D])
    transform: Transform
    support: Any = None

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, float]:
        """(n draws (n, D), the acceptance rate: 1.0 unless rejecting)."""
        if self.support is None:
            return self.transform(self.mixture.sample(n, generator=generator)[0]), 1.0
        kept, drawn = [], 0
        for _ in range(MAX_REJECTION_ROUNDS):
            draws = self.mixture.sample(REJECTION_BATCH, generator=generator)[0]
            drawn += len(draws)
            kept.append(draws[self.support.check(draws)])
            if sum(len(k) for k in kept) >= n:
                break
        accepted = torch.cat(kept)
        if len(accepted) < n:
            raise RuntimeError(f"{len(accepted)} of {drawn} draws fell inside the prior's support, fewer than {n}")
        return accepted[:n], len(accepted) / drawn

    def log_prob(self, theta: Tensor, acceptance: float | Tensor = 1.0) -> Tensor:
        """log q(θ) for θ (n, D); a batch of mixtures (n inputs) takes one acceptance per input."""
        if self.support is not None:
            inside = self.support.check(theta)
            log_q = self.mixture.log_prob(theta) - torch.as_tensor(acceptance, dtype=theta.dtype).log()
            return torch.where(inside, log_q, -math.inf)
        inner = self.transform.inv(theta)
        log_q = self.mixture.log_prob(inner)
        if self.transform is identity_transform:  # its log_abs_det_jacobian is per coordinate
            return log_q
        log_det: Tensor = self.transform.log_abs_det_jacobian(inner, theta)  # type: ignore[no-untyped-call]
        return log_q - log_det

    @property
    def exact_marginals(self) -> bool:
        """Whether ``marginal_log_prob`` is exact: a mixture (of the fitted coordinates, through an
        elementwise T) has closed-form marginals; a truncated one (rejection) has not."""
        return self.support is None

    def marginal_log_prob(self, dims: list[int], theta: Tensor) -> Tensor:
        """log q(θ_dims) of the marginal over coordinates ``dims`` at points θ (n, len(dims)):
        the mixture's marginal (μ_k[dims], Σ_k[dims, dims]) at θ'_dims = T⁻¹(θ)_dims, less
        Σ_{d ∈ dims} log|∂T_d/∂θ'_d| (T acts on each coordinate alone, so this is exact)."""
        full = theta.new_zeros(len(theta), self.mixture.mu.shape[-1])
        full[:, dims] = theta
        inner = self.transform.inv(full)
        log_det = _elementwise_log_det(self.transform, inner, full)[:, dims]
        logits, mu, scale = self.mixture
        index = torch.tensor(dims)
        if self.mixture.full_covariance:
            covariance = scale @ scale.transpose(-1, -2)
            scale = torch.linalg.cholesky(covariance[..., index[:, None], index])
        else:
            scale = scale[..., index]
        marginal = Mixture(logits, mu[..., index], scale)
        return marginal.log_prob(inner[:, dims].unsqueeze(1)).squeeze(-1) - log_det.sum(-1)


def _elementwise_log_det(transform: Transform, inner: Tensor, outer: Tensor) -> Tensor:
    """log|∂T_d/∂θ'_d| per coordinate, (n, D): 0 for the identity; for an IndependentTransform
    (what biject_to gives a box), its base transform's, which acts on each coordinate alone."""
    if transform is identity_transform:
        return torch.zeros_like(inner)
    base = getattr(transform, "base_transform", transform)
    log_det: Tensor = base.log_abs_det_jacobian(inner, outer)
    return log_det


def rejection_support(task: Any) -> Any:
    """The prior's support where the posterior rejects outside it (``support="reject"`` or
    ``"truncate"`` on a bounded prior), else None."""
    return task.prior().support if task.support in ("reject", "truncate") and task.bounded else None


def support_mass(mixture: Mixture, support: Any, generator: torch.Generator) -> Tensor:
    """P_q(box) = ∫_box q(θ) dθ per input, (n,), for a box support ``independent(interval(a, b))``.

    Diagonal covariance, in closed form:  Σ_k π_k Π_d [Φ((b_d − μ_kd)/σ_kd) − Φ((a_d − μ_kd)/σ_kd)].
    Full covariance (no closed form for a box): the fraction of ``SUPPORT_DRAWS`` draws inside,
    at least one draw's worth, so that a poor fit scores badly rather than infinitely well."""
    base = support.base_constraint
    low, high = base.lower_bound.to(mixture.mu), base.upper_bound.to(mixture.mu)
    if not mixture.full_covariance:
        return mixture.log_box_mass(low, high).exp()
    masses = []
    for start in range(0, len(mixture.logits), ROWS_PER_CHUNK):
        draws = mixture.rows(slice(start, start + ROWS_PER_CHUNK)).sample(SUPPORT_DRAWS, generator=generator)
        masses.append(support.check(draws).double().mean(-1).clamp_min(1 / SUPPORT_DRAWS))
    return torch.cat(masses)


def theta_nll(model: Any, task: Any, inputs: Tensor, targets: Tensor, seed: int = 0) -> float:
    """The mean −log q(θ_i | x_i) over simulations (x_i, θ_i) in θ's own units, ``targets`` in
    the fitted coordinates (``task.sample``'s). The fitted NLL (val/nll) is in T⁻¹'s coordinates,
    which differ between supports; this one is the same density for all, so that the recipe
    search can choose the support on validation simulations."""
    from mdnlab.eval.metrics import predict

    mixture = predict(model, inputs).columns()
    theta = task.transform()(targets.double())
    support = rejection_support(task)
    acceptance: Tensor | float = 1.0
    if support is not None:
        acceptance = support_mass(mixture, support, torch.Generator().manual_seed(int(seed)))
    return -float(MixturePosterior(mixture, task.transform(), support).log_prob(theta, acceptance).mean())


def posterior_at(model: Any, task: Any, x_o: Tensor) -> MixturePosterior:
    """The model's posterior at one observation x_o (1, dim_x), float64 on the CPU."""
    from mdnlab.eval.metrics import predict

    support = rejection_support(task)
    return MixturePosterior(predict(model, x_o).columns(), task.transform(), support)


class AmortizedPosterior:
    """The fitted model as the posterior that sbi's diagnostics take (``sbi.diagnostics.run_sbc``,
    ``run_tarp``): ``sample``, ``sample_batched`` and ``log_prob`` given x, in θ's own units, from
    one seeded generator. Duck-typed to sbi's ``NeuralPosterior`` so that sbi need not be imported
    here."""

    def __init__(self, model: Any, task: Any, seed: int = 0) -> None:
        self.model, self.task = model, task
        self.generator = torch.Generator().manual_seed(int(seed))

    def _at(self, x: Tensor) -> list[MixturePosterior]:
        rows = x.unsqueeze(0) if x.dim() == 1 else x  # one x, or one per row
        return [posterior_at(self.model, self.task, row.unsqueeze(0)) for row in rows]

    def sample_batched(self, sample_shape: Any, x: Tensor, **_: Any) -> Tensor:
        """(n, len(x), D): n draws at each row of x."""
        n = int(torch.Size(sample_shape).numel())
        draws = [posterior.sample(n, self.generator)[0] for posterior in self._at(x)]
        return torch.stack(draws, 1).float()

    def sample(self, sample_shape: Any, x: Tensor, **_: Any) -> Tensor:
        return self.sample_batched(sample_shape, x.reshape(1, -1))[:, 0]

    def log_prob(self, theta: Tensor, x: Tensor, **_: Any) -> Tensor:
        """log q(θ_i | x) for θ (n, D) at one x, or at each row of x (n rows)."""
        posteriors = self._at(x)
        if len(posteriors) == 1:
            return posteriors[0].log_prob(theta.double()).float()
        return torch.cat([p.log_prob(t.double().unsqueeze(0)) for p, t in zip(posteriors, theta)]).float()


def mmd(reference: Tensor, samples: Tensor) -> float:
    """sbibm's MMD² (``sbibm.metrics.mmd``, z_score=False as published)."""
    from sbibm.metrics.mmd import mmd as sbibm_mmd

    return float(sbibm_mmd(reference.float(), samples.float(), z_score=False))


def score(
    model: Any,
    task: Any,
    observations: list[int],
    n_samples: int,
    seed: int = 0,
    with_c2st: bool = True,
    c2st_samples: int | None = None,
    with_mmd: bool = True,
    posterior_of: Callable[[Tensor], Any] | None = None,
) -> tuple[list[dict[str, float]], dict[int, Tensor]]:
    """Per observation: its number, c2st, nltp, mmd, acceptance; and each one's draws (n, D).
    ``posterior_of(x_o)``: another method's posterior at x_o (with ``sample(n, generator)`` and
    ``log_prob(θ, acceptance)``, as ``MixturePosterior``), scored by the same code; by default
    the model's."""
    generator = torch.Generator().manual_seed(int(seed))
    rows, draws, references = [], {}, []
    for k in observations:
        x_o = task.observation(k)
        posterior = posterior_of(x_o) if posterior_of is not None else posterior_at(model, task, x_o)
        samples, acceptance = posterior.sample(n_samples, generator)
        true_theta = task.true_parameters(k).double()
        nltp = -float(posterior.log_prob(true_theta, acceptance)[0])
        reference = task.reference_samples(k)[:n_samples]
        rows.append({"observation": k, "nltp": nltp, "acceptance": acceptance})
        if with_mmd:
            rows[-1]["mmd"] = mmd(reference, samples)
        draws[k] = samples.float()
        references.append(reference)
    if with_c2st:
        m = min(c2st_samples or n_samples, n_samples, min(len(r) for r in references))
        scores = c2st(torch.stack([r[:m] for r in references]), torch.stack([draws[k][:m] for k in observations]))
        for row, value in zip(rows, scores.tolist()):
            row["c2st"] = value
    return rows, draws


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """test/c2st, test/nltp, test/mmd: means over the observations, and per observation
    (test/c2st_<k>, ...); test/acceptance when rejecting."""
    out: dict[str, float] = {}
    for name in ("c2st", "nltp", "mmd", "acceptance"):
        values = [row[name] for row in rows if name in row]
        if not values or (name == "acceptance" and all(v == 1.0 for v in values)):
            continue
        out[f"test/{name}"] = sum(values) / len(values)
        out.update({f"test/{name}_{int(row['observation'])}": row[name] for row in rows})
    return out
