"""The classifier two-sample test (C2ST) of sbibm (Lueckmann et al., 2021), every fold of every
pair of samples trained as one stacked network.

For samples X (the reference) and Y of one pair, the score is the mean held-out accuracy of a
classifier telling them apart over k folds (0.5: indistinguishable, 1.0: fully separable):

    C2ST(X, Y) = (1/k) Σ_f  (1/|T_f|) Σ_{i ∈ T_f} 1[ (c_f(z_i) > ½) = l_i ],

with z the rows of X and Y z-scored by X's mean and standard deviation, l_i = 0 for X and 1
for Y, T_f fold f of a shuffled k-fold split and c_f the classifier trained on the other folds.
sbibm's ``c2st`` (``sbibm/metrics/c2st.py``) does this with scikit-learn's ``MLPClassifier``
one fold at a time; this module does what that classifier does, as scikit-learn writes it:

- two ReLU layers of 10·D units, one logistic output, Glorot-uniform weights and biases
  (bound √(6 / (fan_in + fan_out)));
- the loss: mean binary cross-entropy of a minibatch + ½ α Σ‖W‖² / batch size (α = 1e-4, the
  weights only); minibatches of min(200, n), reshuffled every epoch;
- Adam with scikit-learn's update, θ ← θ − lr √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε), lr = 1e-3;
- stopping: after each epoch, the epoch's mean training loss counts as no improvement when it
  is above the best so far − tol (1e-4); training stops once that count passes 10, or after
  10,000 epochs; the final weights are scored.

Written by hand because no library trains many such classifiers at once: sbibm's took 341 s for
one 10,000-against-10,000 test of 10-D samples on a 2-core machine, where a benchmark needs
hundreds. Here all P × k classifiers are one network with a leading axis (each with its own
data, shuffles and stopping), a stopped one leaves the stack at once, and the folds come from
one seeded ``torch.Generator``: the same numbers for the same seed, not scikit-learn's draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["C2STSettings", "c2st"]


@dataclass(frozen=True)
class C2STSettings:
    """scikit-learn's ``MLPClassifier`` defaults as sbibm's ``c2st`` uses them."""

    folds: int = 5
    width_per_dim: int = 10
    alpha: float = 1e-4
    batch_size: int = 200
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    tol: float = 1e-4
    n_iter_no_change: int = 10
    max_epochs: int = 10_000


def c2st(
    reference: Tensor,
    samples: Tensor,
    seed: int = 1,
    z_score: bool = True,
    settings: C2STSettings = C2STSettings(),
) -> Tensor:
    """C2ST accuracy of each pair: ``reference`` (P, N, D) against ``samples`` (P, M, D), or one
    pair as (N, D) and (M, D); returns (P,) (or a 0-d tensor for one pair), float64."""
    single = reference.dim() == 2
    if single:
        reference, samples = reference.unsqueeze(0), samples.unsqueeze(0)
    if reference.dim() != 3 or samples.dim() != 3 or reference.shape[::2] != samples.shape[::2]:
        raise ValueError(f"reference (P, N, D) and samples (P, M, D), got {tuple(reference.shape)}, {samples.shape}")
    x, y = reference.detach().cpu().float(), samples.detach().cpu().float()
    if z_score:
        mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True)
        x, y = (x - mean) / std, (y - mean) / std
    data = torch.cat([x, y], 1)  # (P, N + M, D)
    labels = torch.cat([torch.zeros(x.shape[:2]), torch.ones(y.shape[:2])], 1)
    generator = torch.Generator().manual_seed(int(seed))
    train_rows, test_rows = _fold_rows(data.shape[0], data.shape[1], settings.folds, generator)
    pairs = torch.arange(data.shape[0]).repeat_interleave(settings.folds)  # classifier b is of pair pairs[b]
    accuracy = _train_and_score(data, labels, pairs, train_rows, test_rows, settings, generator)
    scores = accuracy.view(-1, settings.folds).mean(1)
    return scores[0] if single else scores


def _fold_rows(pairs: int, n: int, folds: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffled k-fold rows (scikit-learn's KFold(shuffle=True) layout: the first n % k folds one
    row larger), per pair: train (P·k, n − largest fold) and test (P·k, largest fold) index
    tensors. Where folds differ in size, a test row list is padded with −1 and a classifier
    with a smaller test fold leaves out its last training row, so that all train equally long."""
    sizes = [n // folds + (1 if f < n % folds else 0) for f in range(folds)]
    starts = [sum(sizes[:f]) for f in range(folds)]
    longest = max(sizes)
    train, test = [], []
    for _ in range(pairs):
        order = torch.randperm(n, generator=generator)
        for f in range(folds):
            held = order[starts[f] : starts[f] + sizes[f]]
            kept = torch.cat([order[: starts[f]], order[starts[f] + sizes[f] :]])
            test.append(torch.cat([held, held.new_full((longest - len(held),), -1)]))
            train.append(kept[: n - longest])
    return torch.stack(train), torch.stack(test)


def _init(classifiers: int, widths: list[int], generator: torch.Generator) -> list[Tensor]:
    """Glorot-uniform weights (B, in, out) and biases (B, 1, out), each layer in turn."""
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        for shape in ((classifiers, fan_in, fan_out), (classifiers, 1, fan_out)):
            params.append((torch.rand(shape, generator=generator) * 2 - 1).mul_(bound))
    return params


def _logits(params: list[Tensor], inputs: Tensor) -> Tensor:
    """(B, n, D) → (B, n): ReLU layers, then the output's logit."""
    h = inputs
    for layer in range(0, len(params) - 2, 2):
        h = torch.relu(torch.baddbmm(params[layer + 1], h, params[layer]))
    return torch.baddbmm(params[-1], h, params[-2]).squeeze(-1)


def _losses_and_gradients(
    params: list[Tensor], inputs: Tensor, targets: Tensor, alpha: float
) -> tuple[Tensor, list[Tensor]]:
    """Each classifier's minibatch loss (B,), binary cross-entropy + ½ α Σ‖W‖² / batch size, and
    its gradient with respect to every parameter. Backpropagation written out (a ReLU MLP's is
    six batched matmuls) rather than autograd's: a step of these small networks costs mostly
    per-operation overhead, and the graph autograd records is a large part of it."""
    n = inputs.shape[1]
    activations, pre = [inputs], []
    for layer in range(0, len(params) - 2, 2):
        z = torch.baddbmm(params[layer + 1], activations[-1], params[layer])
        pre.append(z)
        activations.append(torch.relu(z))
    logits = torch.baddbmm(params[-1], activations[-1], params[-2])  # (B, n, 1)
    cross_entropy = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.squeeze(-1), targets, reduction="none"
    ).mean(1)
    squares = sum(w.pow(2).sum((1, 2)) for w in params[::2])
    losses = cross_entropy + 0.5 * alpha * squares / n
    delta = (torch.sigmoid(logits) - targets.unsqueeze(-1)) / n  # ∂loss/∂logit
    gradients: list[Tensor] = [torch.empty(0)] * len(params)
    for layer in range(len(params) - 2, -1, -2):
        weight = params[layer]
        gradients[layer] = torch.bmm(activations[layer // 2].transpose(1, 2), delta).add_(weight, alpha=alpha / n)
        gradients[layer + 1] = delta.sum(1, keepdim=True)
        if layer:
            delta = torch.bmm(delta, weight.transpose(1, 2)).mul_(pre[layer // 2 - 1] > 0)
    return losses, gradients


def _train_and_score(
    data: Tensor,
    labels: Tensor,
    pairs: Tensor,
    train_rows: Tensor,
    test_rows: Tensor,
    s: C2STSettings,
    generator: torch.Generator,
) -> Tensor:
    """Train the B = P·k classifiers to their stopping rule; each one's held-out accuracy (B,)."""
    dim = data.shape[-1]
    width = s.width_per_dim * dim
    n_train = train_rows.shape[1]
    batch = min(s.batch_size, n_train)
    x_train = data[pairs.unsqueeze(1), train_rows]  # (B, n_train, D)
    t_train = labels[pairs.unsqueeze(1), train_rows]
    params = _init(len(pairs), [dim, width, width, 1], generator)
    moments = ([torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params])
    alive = torch.arange(len(pairs))  # the classifiers still training, by their index b
    best = torch.full((len(pairs),), math.inf, dtype=torch.float64)
    waits = torch.zeros(len(pairs), dtype=torch.long)
    accuracy = torch.empty(len(pairs), dtype=torch.float64)
    step = 0
    for _ in range(s.max_epochs):
        order = torch.rand(len(alive), n_train, generator=generator).argsort(1)
        epoch_loss = torch.zeros(len(alive), dtype=torch.float64)
        for start in range(0, n_train, batch):
            rows = order[:, start : start + batch]
            inputs = x_train.gather(1, rows.unsqueeze(-1).expand(-1, -1, dim))
            targets = t_train.gather(1, rows)
            step += 1
            losses, gradients = _losses_and_gradients(params, inputs, targets, s.alpha)
            _adam(params, moments, gradients, step, s)
            epoch_loss += losses.double() * rows.shape[1]
        epoch_loss /= n_train
        index = alive
        improved = epoch_loss <= best[index] - s.tol
        waits[index] = torch.where(improved, 0, waits[index] + 1)
        best[index] = torch.minimum(best[index], epoch_loss)
        stopping = waits[index] > s.n_iter_no_change
        if bool(stopping.any()):
            done = stopping.nonzero().view(-1)
            accuracy[index[done]] = _accuracy(params, done, data, labels, pairs[index[done]], test_rows[index[done]])
            keep = (~stopping).nonzero().view(-1)
            alive, x_train, t_train = index[keep], x_train[keep], t_train[keep]
            params = [p[keep] for p in params]
            moments = ([m[keep] for m in moments[0]], [v[keep] for v in moments[1]])
        if len(alive) == 0:
            return accuracy
    if len(alive):  # max_epochs reached: the final weights, as scikit-learn keeps them
        everyone = torch.arange(len(alive))
        accuracy[alive] = _accuracy(params, everyone, data, labels, pairs[alive], test_rows[alive])
    return accuracy


def _adam(
    params: list[Tensor],
    moments: tuple[list[Tensor], list[Tensor]],
    gradients: list[Tensor],
    step: int,
    s: C2STSettings,
) -> None:
    """scikit-learn's Adam step (ε added to √v, the bias corrections folded into the rate), with
    torch's multi-tensor (foreach) kernels: one call per operation for all the parameters."""
    beta1, beta2 = s.betas
    rate = s.lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    means, squares = moments
    torch._foreach_lerp_(means, gradients, 1 - beta1)  # m ← β1 m + (1 − β1) g
    torch._foreach_mul_(squares, beta2)
    torch._foreach_addcmul_(squares, gradients, gradients, value=1 - beta2)
    denominators = torch._foreach_sqrt(squares)
    torch._foreach_add_(denominators, s.eps)
    torch._foreach_addcdiv_(params, means, denominators, value=-rate)


@torch.no_grad()
def _accuracy(
    params: list[Tensor], which: Tensor, data: Tensor, labels: Tensor, pairs: Tensor, test_rows: Tensor
) -> Tensor:
    """Held-out accuracy of classifiers ``which`` (positions in ``params``) on their test rows."""
    valid = test_rows >= 0
    rows = test_rows.clamp(min=0)
    inputs = data[pairs.unsqueeze(1), rows]
    predicted = (_logits([p[which] for p in params], inputs) > 0).float()  # σ(logit) > ½
    correct = (predicted == labels[pairs.unsqueeze(1), rows]) & valid
    return correct.double().sum(1) / valid.double().sum(1)
