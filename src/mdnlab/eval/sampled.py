"""Metrics of any predictive distribution, from its ``log_prob`` and its draws.

The Gaussian-mixture closed forms (``metrics.mixture_metrics``) stay the path for MDNs; this is
the path for every other family (a normalizing flow, a Gaussian of another library): a model
whose ``predictive_distribution(inputs)`` is a ``torch.distributions.Distribution`` over the
targets in original units. Every metric keeps its name and meaning:

    nll                 −mean log p(t | x), exact (``log_prob``)
    crps (one target)   E|T − t| − ½ E|T − T'|, from S draws a point: the first term their mean
                        distance to t, the second the unbiased all-pairs mean (sorted draws)
    energy_score (D>1)  E‖T − t‖ − ½ E‖T − T'‖, draw i paired with draw i + 1 (as the mixture's)
    pit_ks, coverage_*  from F(t) = ``cdf(t)`` where the family has one, else the share of the
                        draws below t
    mean, mode          ``mean`` where the family has one, else the draws' mean; the mode is the
                        draw of highest ``log_prob`` among the first MODE_CANDIDATES

A number estimated from draws comes with its Monte Carlo standard error, ``<name>_mc_se``: the
draws are split into MC_BATCHES batches, the metric recomputed on each, and the spread of those
gives the error of the metric from all the draws (batch means). Draws come from a fixed seed.
Mixture-only quantities (effective components, the top component's μ, the smallest σ) have no
meaning here and are left out.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

from mdnlab.eval.scores import NLL_MISS_THRESHOLD, calibration, point_errors
from mdnlab.mixtures import CHUNK_ELEMENTS

DRAWS = 1000  # draws a point: CRPS's Monte Carlo error is then ~1% of its value
MC_BATCHES = 10
MODE_CANDIDATES = 100


def draws_of(distribution: Distribution, n: int, seed: int) -> Tensor:
    """``n`` draws, (n, *batch, *event), from a fixed seed. torch.distributions' ``sample``
    takes no generator, so the global one is forked, seeded and restored around it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return distribution.sample((n,))


def distribution_metrics(
    predictive: Callable[[Tensor], Distribution], inputs: Tensor, targets: Tensor, seed: int = 0, draws: int = DRAWS
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """(metrics, point predictions) of ``predictive(inputs)`` against ``targets`` ((N,) or
    (N, D)), in chunks of rows that keep the draws under CHUNK_ELEMENTS numbers."""
    if draws < 2 * MC_BATCHES or draws % MC_BATCHES:
        raise ValueError(f"draws must be a multiple of {MC_BATCHES} (its batches give the errors), got {draws}")
    t = targets.to(torch.float64).reshape(len(targets), -1)
    n_targets = t.shape[1]
    rows = max(1, CHUNK_ELEMENTS // (draws * n_targets))
    parts = [_chunk(predictive(inputs[i : i + rows]), t[i : i + rows], seed + i, draws) for i in range(0, len(t), rows)]
    joined = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
    log_p, pit = joined.pop("log_p"), joined.pop("pit")
    points = {"mean": joined.pop("mean"), "mode": joined.pop("mode")}
    if n_targets == 1:
        points = {name: p.reshape(-1) for name, p in points.items()}
        t = t.reshape(-1)
    out = {"nll": -log_p.mean().item(), **point_errors(points, t)}
    out["frac_nll_above_6"] = (-log_p > NLL_MISS_THRESHOLD).double().mean().item()
    score = "crps" if n_targets == 1 else "energy_score"
    per_batch = joined.pop("score")  # (N, B)
    out[score], out[f"{score}_mc_se"] = _with_error(per_batch.mean(0), joined.pop("score_all").mean())
    if n_targets == 1:
        out.update(_calibration(pit.reshape(-1, pit.shape[-1])))
    return out, points


def _chunk(distribution: Distribution, t: Tensor, seed: int, draws: int) -> dict[str, Tensor]:
    """Per row of the chunk: log p, the score from all draws and from each batch, the PIT (from
    all draws, then per batch; exact in every column when the family has a cdf), mean and mode."""
    scalar = len(distribution.event_shape) == 0  # a one-target family with scalar events
    sampled = draws_of(distribution, draws, seed)
    as_event = (lambda v: v.squeeze(-1).to(sampled.dtype)) if scalar else (lambda v: v.to(sampled.dtype))
    x = sampled.double().unsqueeze(-1) if scalar else sampled.double()  # (S, n, D)
    batches = x.reshape(MC_BATCHES, draws // MC_BATCHES, *x.shape[1:])
    score_of = _crps if t.shape[1] == 1 else _energy_score
    out = {
        "log_p": distribution.log_prob(as_event(t)).double(),
        "score_all": score_of(x, t),
        "score": torch.stack([score_of(b, t) for b in batches], -1),
        "mean": _mean(distribution, x, scalar),
        "mode": densest_draw(distribution, x, as_event),
        "pit": t.new_zeros(len(t), 0),
    }
    if t.shape[1] == 1:
        exact = _cdf(distribution, as_event(t))
        if exact is not None:
            columns = [exact] * (MC_BATCHES + 1)
        else:
            columns = [draw_pit(x, t)] + [draw_pit(b, t) for b in batches]
        out["pit"] = torch.stack(columns, -1)
    return out


def _crps(x: Tensor, t: Tensor) -> Tensor:
    """E|X − t| − ½ E|X − X'| per row from draws x (S, n, 1): Σ_{i<j} |x_(j) − x_(i)| =
    Σ_j (2j − S − 1) x_(j) over the sorted draws, so all S(S−1)/2 pairs cost a sort."""
    s = x.shape[0]
    first = (x - t).abs().mean(0).squeeze(-1)
    ranks = torch.arange(1, s + 1, dtype=x.dtype).reshape(-1, 1)
    pairs = ((2 * ranks - s - 1) * x.squeeze(-1).sort(0).values).sum(0) * 2 / (s * (s - 1))
    return first - 0.5 * pairs


def _energy_score(x: Tensor, t: Tensor) -> Tensor:
    first = (x - t).norm(dim=-1).mean(0)
    second = (x - x.roll(1, dims=0)).norm(dim=-1).mean(0)
    return first - 0.5 * second


def _cdf(distribution: Distribution, target: Tensor) -> Tensor | None:
    try:
        return distribution.cdf(target).double().reshape(-1)
    except NotImplementedError:
        return None


def draw_pit(x: Tensor, t: Tensor) -> Tensor:
    """The share of the draws x (S, n[, 1]) below each target t (n[, 1]): the PIT from draws, (n,)."""
    return (x < t).double().mean(0).reshape(-1)


def _mean(distribution: Distribution, x: Tensor, squeeze: bool) -> Tensor:
    try:
        mean = distribution.mean.double()
    except NotImplementedError:
        return x.mean(0)
    return mean.unsqueeze(-1) if squeeze else mean


def densest_draw(distribution: Distribution, draws: Tensor, as_event=lambda v: v.float()) -> Tensor:
    """Among the first MODE_CANDIDATES of ``draws`` (S, n, D), the one of highest density per row,
    (n, D); ``as_event`` turns draws into what ``log_prob`` takes."""
    candidates = draws[:MODE_CANDIDATES]
    best = distribution.log_prob(as_event(candidates)).argmax(0)  # log_prob (C, n)
    return candidates[best, torch.arange(candidates.shape[1])]


def _calibration(pit: Tensor) -> dict[str, float]:
    """``scores.calibration`` of the PIT in column 0 (all draws, or the cdf), with standard
    errors from the other columns (one per batch of draws)."""
    out = calibration(pit[:, 0])
    per_batch = [calibration(pit[:, b]) for b in range(1, pit.shape[1])]
    for name in list(out):
        spread = torch.tensor([row[name] for row in per_batch], dtype=torch.float64).std().item()
        out[f"{name}_mc_se"] = spread / len(per_batch) ** 0.5
    return out


def _with_error(per_batch: Tensor, all_draws: Tensor) -> tuple[float, float]:
    return all_draws.item(), per_batch.std().item() / len(per_batch) ** 0.5
