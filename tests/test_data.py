"""SinusoidDataModule: determinism, splits, standardisation, directions, shards, batches."""

import torch

from mdnlab.data import SinusoidDataModule, TensorBatches


def make(**kw):
    dm = SinusoidDataModule(**kw)
    dm.setup("fit")
    return dm


def test_same_seed_same_data_different_seed_different_data():
    a, b, c = make(seed=0), make(seed=0), make(seed=1)
    assert torch.equal(a.raw["train"][0], b.raw["train"][0])
    assert not torch.equal(a.raw["train"][0], c.raw["train"][0])


def test_splits_sizes_and_disjoint():
    dm = make(n_samples=1000, train_fraction=0.7, val_fraction=0.2)
    sizes = [len(dm.raw[s][0]) for s in ("train", "val", "test")]
    assert sizes == [700, 200, 100]
    allx = torch.cat([dm.raw[s][0] for s in ("train", "val", "test")])
    assert len(torch.unique(allx)) == 1000


def test_fresh_test_draw_leaves_the_pool_alone():
    pooled = make(n_samples=500, train_fraction=0.8, val_fraction=0.2, n_test=5000)
    assert len(pooled.raw["test"][0]) == 5000
    same_pool = make(n_samples=500, train_fraction=0.8, val_fraction=0.2, n_test=100)
    assert torch.equal(pooled.raw["train"][0], same_pool.raw["train"][0])
    assert not torch.isin(pooled.raw["test"][0], pooled.raw["train"][0]).any()


def test_standardised_with_train_statistics_only():
    dm = make(n_samples=1000)
    x, y = dm.splits["train"]
    assert x.mean().abs() < 1e-5 and (x.std() - 1).abs() < 1e-5
    assert y.mean().abs() < 1e-5 and (y.std() - 1).abs() < 1e-5
    raw_val_x, _ = dm.raw["val"]
    s = dm.standardizer
    torch.testing.assert_close(dm.splits["val"][0], (raw_val_x - s.input_mean) / s.input_std)
    assert dm.splits["val"][0].mean().abs() > 1e-4  # val is not re-centred on its own


def test_directions_swap_input_and_target():
    fwd, inv = make(direction="forward"), make(direction="inverted")
    assert torch.equal(fwd.raw["train"][0], inv.raw["train"][1])
    x = fwd.raw["train"][0]
    assert x.min() >= -10 and x.max() <= 10


def test_full_batch_repeats_and_minibatches_cover_everything():
    x, y = torch.arange(10.0)[:, None], torch.arange(10.0)[:, None]
    full = list(TensorBatches(x, y, batch_size=None, repeats=3))
    assert len(full) == 3 and all(b[0] is x for b in full)
    mini = TensorBatches(x, y, batch_size=4, repeats=2, shuffle=True, seed=0)
    batches = list(mini)
    assert len(batches) == len(mini) == 6
    first_pass = torch.cat([b[0] for b in batches[:3]]).flatten()
    assert sorted(first_pass.tolist()) == list(range(10))
    assert torch.equal(batches[0][0], list(TensorBatches(x, y, 4, 2, True, 0))[0][0])


class FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world
        self.strategy = type("S", (), {"root_device": torch.device("cpu")})()


def test_each_ddp_rank_gets_its_own_shard():
    shards = []
    for rank in range(2):
        dm = SinusoidDataModule(n_samples=100)
        dm.trainer = FakeTrainer(rank, 2)
        dm.setup("fit")
        shards.append(dm.splits["train"][0])
        assert len(dm.splits["test"][0]) == len(dm.raw["test"][0])  # evaluation sees all
    assert len(shards[0]) + len(shards[1]) == 80
    assert not torch.isin(shards[0], shards[1]).any()
