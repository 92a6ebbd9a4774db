"""Metrics of a fitted model on a split, in original units, against the oracle where the problem
has one. One code path for the end of training and ``mdn-eval``, for one target and for D.

Nothing here imports Lightning, the models or the command-line tools: a model is anything with
``predictive_mixture(inputs) -> Mixture`` (the closed forms) or else with
``predictive_distribution(inputs) -> torch.distributions.Distribution`` (``sampled``: from
``log_prob`` and draws), a datamodule anything with ``raw`` splits and a ``problem``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mdnlab.eval.sampled import distribution_metrics
from mdnlab.eval.scores import NLL_MISS_THRESHOLD, calibration, point_errors
from mdnlab.mixtures import Mixture, map_rows, mixture

ENERGY_SCORE_DRAWS = 200  # Monte-Carlo draws per point for the energy score (several targets)


@torch.no_grad()
def predict(model, inputs: Tensor) -> Mixture:
    """The model's predictive mixture in original units, float64, on the CPU."""
    model = model.eval()
    mixture_ = model.predictive_mixture(inputs.to(model.device, model.dtype))
    return Mixture(*mixture_).map(lambda p: p.detach().to("cpu", torch.float64))


def mixture_metrics(
    m: Mixture, targets: Tensor, points: dict[str, Tensor] | None = None, seed: int = 0
) -> dict[str, float]:
    """Scores of a predictive mixture against targets ((N,) or (N, 1) for one target, (N, D)).

    NLL and the point errors (of the mixture mean, the most probable mode and the top
    component's μ; ``points`` when the caller already has them) are joint, averaged over
    targets. CRPS, PIT and coverage are those of each target's one-dimensional marginal: with
    D > 1 each comes per target (``_<d>`` suffixes) and averaged, with the energy score (the
    multivariate CRPS, Monte Carlo from a fixed ``seed`` so a run's numbers repeat).
    """
    t = targets.to(torch.float64)
    t = t.reshape(-1) if m.univariate else t
    log_p = m.log_prob(t)
    out = {
        "nll": -log_p.mean().item(),
        **point_errors(points or m.point_predictions(), t),
        "effective_components": mixture.effective_components(m.logits).item(),
    }
    if m.univariate:
        out["frac_nll_above_6"] = (-log_p > NLL_MISS_THRESHOLD).double().mean().item()
        out.update(marginal_metrics(m, t))
        return out
    generator = torch.Generator().manual_seed(seed)
    out["energy_score"] = _energy_score(m, t, generator)
    per_target = [marginal_metrics(m.marginal(d), t[:, d]) for d in range(m.n_targets)]
    for name in per_target[0]:
        values = [row[name] for row in per_target]
        out[name] = min(values) if name == "min_sigma" else sum(values) / len(values)
        out.update({f"{name}_{d}": v for d, v in enumerate(values)})
    return out


def marginal_metrics(m: Mixture, t: Tensor) -> dict[str, float]:
    """CRPS (closed form), PIT KS distance, central 50%/90% coverage and the smallest σ of a
    one-target mixture against targets (N,)."""
    pit = mixture.cdf(*m, t)
    return {
        "crps": map_rows(lambda c, tt: mixture.crps(*c, tt), m, t, per_row=m.logits.shape[-1] ** 2).mean().item(),
        **calibration(pit),
        "min_sigma": m.scale.min().item(),
    }


def _energy_score(m: Mixture, t: Tensor, generator: torch.Generator) -> float:
    from mdnlab.mixtures import mvmixture

    def score(chunk: Mixture, targets: Tensor) -> Tensor:
        return mvmixture.energy_score(*chunk, targets, ENERGY_SCORE_DRAWS, generator=generator)

    per_row = ENERGY_SCORE_DRAWS * m.logits.shape[-1] * m.n_targets
    return map_rows(score, m, t, per_row=per_row).mean().item()


def oracle_metrics(problem, inputs: Tensor, targets: Tensor, nll: float) -> dict[str, float]:
    """Bayes NLL on the very same points, the excess over it (a low-noise estimate of the KL gap,
    E[KL(p_true ‖ p_model)]) and the MSE floor E[Var(target | input)]."""
    log_density, _, variance = problem.oracle(inputs, targets)
    oracle_nll = -log_density.mean().item()
    return {"oracle_nll": oracle_nll, "excess_nll": nll - oracle_nll, "mse_floor": variance.mean().item()}


def evaluate(model, datamodule, split: str = "test") -> dict[str, float]:
    """All metrics of ``model`` on ``split``, named ``<split>/<metric>``."""
    datamodule.prepare_splits()
    inputs, targets = datamodule.raw[split]
    if hasattr(model, "predictive_mixture"):
        m = predict(model, inputs)
        points = m.point_predictions()  # mean-shift once, for the metrics and the task error
        metrics = mixture_metrics(m, targets, points)
    else:  # another family: from its log_prob and its draws
        with torch.no_grad():
            metrics, points = distribution_metrics(model.eval().predictive_distribution, inputs, targets)
    problem = datamodule.problem
    if problem.has_oracle:
        metrics.update(oracle_metrics(problem, inputs, targets, metrics["nll"]))
    if hasattr(problem, "endpoint_errors"):
        for name, prediction in points.items():
            errors = problem.endpoint_errors(inputs, prediction)
            metrics[f"endpoint_rmse_{name}"] = errors.square().mean().sqrt().item()
    metrics["n_points"] = float(len(targets))
    return {f"{split}/{name}": value for name, value in metrics.items()}
