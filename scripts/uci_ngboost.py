"""NGBoost (Duan et al., 2020) on the UCI splits, as a peer of the MDN under the same protocol;
make uci runs it (scripts/uci.py) where the package is installed.

The peer, not a dependency: it needs the ``peers`` extra (``pip install -e '.[peers]'``). Each
split uses exactly the rows an MDN run of the same split uses (``UCIDataModule``, seed 0): it
boosts on the training rows, stops on the validation rows (the paper's settings: a Normal output,
depth-3 regression trees, learning rate 0.01, up to 2000 rounds, the round with the best
validation NLL kept), and its predictive Normal is scored on the test rows by the same code as
the MDN's (a one-component mixture: closed-form CRPS, PIT and coverage). Each split writes
``<out>/<set>/ngboost/split_<k>.json`` (its metrics and the test rows' predicted loc and
scale); a rerun skips the splits already there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ROUNDS, LEARNING_RATE, DEPTH, PATIENCE = 2000, 0.01, 3, 50


def fit_and_score(root: Path, name: str, split: int, rounds: int = ROUNDS) -> dict:
    """The split's record: its test metrics (original units) and the per-row test NLL."""
    import numpy as np
    import torch
    from ngboost import NGBRegressor
    from ngboost.distns import Normal
    from sklearn.tree import DecisionTreeRegressor

    from mdnlab.data import UCIDataModule
    from mdnlab.eval.metrics import mixture_metrics
    from mdnlab.mixtures import Mixture

    data = UCIDataModule(str(root), name, split=split, seed=0, val_fraction=0.1)
    data.prepare_splits()
    (x, y), (x_val, y_val), (x_test, y_test) = (
        tuple(t.double().numpy() for t in data.raw[s]) for s in ("train", "val", "test")
    )
    start = time.perf_counter()
    tree = DecisionTreeRegressor(criterion="friedman_mse", max_depth=DEPTH, random_state=split)
    boost = NGBRegressor(
        Dist=Normal,
        Base=tree,
        n_estimators=rounds,
        learning_rate=LEARNING_RATE,
        minibatch_frac=1.0,
        verbose=False,
        random_state=split,
    )
    boost.fit(x, y.ravel(), X_val=x_val, Y_val=y_val.ravel(), early_stopping_rounds=PATIENCE)
    best = boost.best_val_loss_itr if boost.best_val_loss_itr is not None else len(boost.base_models)
    seconds = time.perf_counter() - start
    val = boost.pred_dist(x_val, max_iter=best)
    test = boost.pred_dist(x_test, max_iter=best)
    loc, scale = (
        torch.from_numpy(np.asarray(test.params[k], dtype=np.float64)).reshape(-1, 1) for k in ("loc", "scale")
    )
    predictive = Mixture(torch.zeros_like(loc), loc, scale)
    targets = torch.from_numpy(y_test).reshape(-1)
    metrics = {f"test/{k}": v for k, v in mixture_metrics(predictive, targets).items()}
    metrics["val/best_nll"] = float(-val.logpdf(y_val.ravel()).mean())
    metrics["train/steps"] = float(best)
    return {
        "set": name,
        "split": split,
        "model": "ngboost",
        "metrics": metrics,
        "seconds": seconds,
        "loc": loc.reshape(-1).tolist(),
        "scale": scale.reshape(-1).tolist(),
    }


def run_set(root: Path, name: str, out: Path, splits: int | None) -> float:
    """Every split of the set not yet recorded under <out>/<set>/ngboost: seconds taken."""
    from mdnlab.problems import UCISet

    folder = out / name / "ngboost"
    folder.mkdir(parents=True, exist_ok=True)
    n = UCISet(str(root), name).n_splits() if splits is None else splits
    print(f"== {name}, NGBoost, {n} splits -> {folder}", flush=True)
    start = time.perf_counter()
    for split in range(n):
        path = folder / f"split_{split}.json"
        if path.is_file():
            continue
        record = fit_and_score(root, name, split)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(record))
        partial.replace(path)  # a split is recorded whole or not at all
        print(
            f"   split {split}: test NLL {record['metrics']['test/nll']:.3f}, "
            f"{int(record['metrics']['train/steps'])} rounds, {record['seconds']:.1f} s",
            flush=True,
        )
    return time.perf_counter() - start


def available() -> bool:
    try:
        import ngboost  # noqa: F401
    except ImportError:
        return False
    return True
