"""Counter-based draws (data.draws): exact words, stored bits, the normal's moments and a
normality test, one draw for a model alone and in a stack, resumed epochs, and a stacked step
whose operation count does not grow with the number of models."""

import math

import pytest
import torch

from mdnlab.data import TensorBatches, draws
from mdnlab.data.batches import StackedBatches, epoch_keys
from mdnlab.models import MixtureDensityNetwork
from mdnlab.models.stacked import StackedAdam, StackedMDN

U64 = (1 << 64) - 1


def test_words_are_splitmix64_of_the_counter_exactly():
    """Every word equals the big-integer reference: wrapping int64 products, logical shifts."""
    parts = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2**40 + 3, 5, 123456)]
    keys = epoch_keys(parts, "cpu")
    assert [k & U64 for k in keys.tolist()] == [draws.key_reference(*p) & U64 for p in parts]
    steps = torch.tensor([0, 1, 999_999])
    got = draws.words(keys, steps, draws.SHUFFLE, 5)
    for s, key in enumerate(keys.tolist()):
        for t, step in enumerate(steps.tolist()):
            step_key = draws.mix_reference(key + (step * 4 + draws.SHUFFLE + 1) * 0xD1B54A32D192ED03)
            want = [draws.mix_reference(step_key + i * 0x9E3779B97F4A7C15) for i in range(1, 6)]
            assert [w & U64 for w in got[s, t].tolist()] == want


# float32 bits of draws.normals for keys of (seed, rank, epoch) = (0, 0, 0) and (7, 1, 3) at steps 0
# and 5, six normals each. The same call on a GPU must give these bits (scripts/gpu_check.sh).
STORED_NORMALS = [
    0xBF035E8A,
    0xBF23D013,
    0xBEC14385,
    0xBE6E3649,
    0x3F1B74A9,
    0xBE55DCC9,
    0x3F328997,
    0x3EA9C08B,
    0x3E487F31,
    0xBF469377,
    0xBAA28CA2,
    0xBFA4B286,
    0x3EDB2458,
    0x3E9E89C1,
    0xBF72AADE,
    0xBF7830BA,
    0x3FE32786,
    0x3F574AE1,
    0xBF28F896,
    0x3F6DCC79,
    0xBF57DBD7,
    0xBE56CC80,
    0xBF94832D,
    0x3FC0DC6A,
]
STORED_PERMUTATIONS = [
    [[3, 6, 7, 4, 1, 5, 2, 0], [7, 4, 1, 3, 6, 0, 2, 5]],
    [[0, 7, 3, 4, 2, 1, 5, 6], [3, 2, 1, 5, 4, 7, 0, 6]],
]


def stored_draws(device="cpu"):
    keys = epoch_keys([(0, 0, 0), (7, 1, 3)], device)
    steps = torch.tensor([0, 5], device=device)
    normals = draws.normals(keys, steps, 6)
    return normals, draws.permutations(keys, steps.new_tensor([0, 1]), 8)


def test_the_same_seed_draws_the_stored_bits():
    normals, orders = stored_draws()
    assert [v & 0xFFFFFFFF for v in normals.view(torch.int32).flatten().tolist()] == STORED_NORMALS
    assert orders.tolist() == STORED_PERMUTATIONS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_gpu_draws_the_same_bits_as_the_cpu():
    normals, orders = stored_draws("cuda")
    assert [v & 0xFFFFFFFF for v in normals.cpu().view(torch.int32).flatten().tolist()] == STORED_NORMALS
    assert orders.cpu().tolist() == STORED_PERMUTATIONS


def test_normals_have_the_moments_and_distribution_of_a_standard_normal():
    """4M normals from 64 models × 16 steps: mean 0, variance 1, skewness 0, kurtosis 3 within
    five standard errors; Kolmogorov–Smirnov √n·D below 1.95 (p = 0.001); no correlation between
    a model's cos and sin halves, neighbouring models or neighbouring steps."""
    keys = epoch_keys([(seed, 0, 0) for seed in range(64)], "cpu")
    z = draws.normals(keys, torch.arange(16), 4096).double()
    x = z.flatten()
    n = x.numel()
    mean, centred = x.mean(), x - x.mean()
    var = (centred**2).mean()
    assert abs(mean) < 5 / math.sqrt(n)
    assert abs(var - 1) < 5 * math.sqrt(2 / n)
    assert abs((centred**3).mean() / var**1.5) < 5 * math.sqrt(6 / n)
    assert abs((centred**4).mean() / var**2 - 3) < 5 * math.sqrt(24 / n)
    ordered = x.sort().values
    cdf = torch.special.ndtr(ordered)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    assert torch.maximum(i / n - cdf, cdf - (i - 1) / n).max() * math.sqrt(n) < 1.95
    for a, b in [(z[..., :2048], z[..., 2048:]), (z[:-1], z[1:]), (z[:, :-1], z[:, 1:])]:
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 5 / math.sqrt(a.numel())


def test_permutations_are_uniform():
    """Each of 6 values lands in each place about equally often over 60 000 permutations."""
    keys = epoch_keys([(seed, 0, 0) for seed in range(100)], "cpu")
    orders = draws.permutations(keys, torch.arange(600), 6).reshape(-1, 6)
    assert torch.equal(orders.sort(dim=1).values, torch.arange(6).expand_as(orders))
    counts = torch.stack([(orders == v).sum(0) for v in range(6)]).double()
    expected = len(orders) / 6
    assert ((counts - expected) ** 2 / expected).sum() < 68  # χ² with 25 degrees of freedom: p ≈ 1e-5


def _loaders(pairs, settings, **common):
    return [TensorBatches(x, y, **common, **s) for (x, y), s in zip(pairs, settings)]


def test_a_model_alone_in_a_stack_and_resumed_draws_the_same():
    """Model s's slice of every stacked batch is what its own TensorBatches serves, and an epoch
    served after a resume (epoch_of) is the uninterrupted run's, for full and mini batches."""
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(50, 2, generator=g), torch.randn(50, 1, generator=g)) for _ in range(3)]
    settings = [
        dict(seed=0, input_noise=0.1, target_noise=0.2),
        dict(seed=5, input_noise=0.0, target_noise=0.3),
        dict(seed=9, input_noise=0.0, target_noise=0.0),
    ]
    for common in [dict(batch_size=16, repeats=2, shuffle=True), dict(batch_size=None, repeats=3)]:
        alone, stack = _loaders(pairs, settings, **common), StackedBatches(_loaders(pairs, settings, **common))
        epochs = [[list(loader) for loader in alone] for _ in range(3)]
        for epoch in range(3):
            for step, (x, y) in enumerate(stack):
                for s in range(3):
                    assert torch.equal(x[s], epochs[epoch][s][step][0].T)
                    assert torch.equal(y[s], epochs[epoch][s][step][1].T)
        resumed = TensorBatches(*pairs[0], **common, **settings[0], epoch_of=lambda: 2)
        for got, want in zip(resumed, epochs[2][0]):
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    noisy = list(_loaders(pairs, settings, batch_size=None)[0])[0]
    assert not torch.equal(noisy[0], pairs[0][0]) and not torch.equal(noisy[1], pairs[0][1])


def _count_operations(n_models: int, monkeypatch) -> int:
    """torch operations the profiler records in one stacked training step with noise, counting
    the operations called by our code and by autograd, not those an operation calls inside
    (torch.cat, say, narrows its large inputs to copy them in parallel)."""
    monkeypatch.setattr("mdnlab.data.batches.CHUNK_ELEMENTS", 1)  # one step drawn per call, whatever S
    torch.manual_seed(0)
    x = torch.randn(100, 1)
    loaders = [
        TensorBatches(x, torch.sin(x), repeats=4, seed=s, input_noise=0.1, target_noise=0.1) for s in range(n_models)
    ]
    stack = StackedMDN([MixtureDensityNetwork(hidden_size=8) for _ in range(n_models)])
    optimizer = StackedAdam(stack.parameters(), torch.full((n_models,), 1e-3), torch.zeros(n_models), 1)
    batches = iter(StackedBatches(loaders))
    next(batches)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        inputs, targets = next(batches)
        stack.training_losses(inputs, targets).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return sum(
        1
        for event in profile.events()
        if event.name.startswith("aten::") and not (event.cpu_parent and event.cpu_parent.name.startswith("aten::"))
    )


def test_a_stacked_step_runs_as_many_operations_for_4_models_as_for_256(monkeypatch):
    assert _count_operations(4, monkeypatch) == _count_operations(256, monkeypatch)


def test_compiled_draws_are_the_eager_bits():
    """draws.compiled (what a compiled stack draws with) gives normals_of's bits."""
    keys = epoch_keys([(seed, 0, 1) for seed in range(8)], "cpu")
    steps = torch.arange(3)
    for count in (6, 250):
        assert torch.equal(draws.normals(keys, steps, count, draws.compiled("cpu")), draws.normals(keys, steps, count))
