"""make uci's tables, from what a run left under --out: the MDN beside its peers run here (a
conditional spline flow, a Gaussian deep ensemble, NGBoost), per set mean ± standard error over
the splits of NLL, RMSE and CRPS, a paired column (MDN − peer) for each peer, the published
numbers beside them, the time each took, and the NLL with and without the test rows on which a
density can spike (targets that take few distinct values)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import benchmark
from benchmark import mean_se

# Published held-out NLL, mean ± error as printed: Lakshminarayanan et al. 2017 (PBP, MC dropout
# 2016, deep ensembles), the DropoutUncertaintyExps readme (2018 rerun), Duan et al. 2020 (NGBoost).
PUBLISHED = {  # set: (PBP, MC dropout 2016, MC dropout 2018, deep ensembles, NGBoost)
    "bostonHousing": ("2.57 ± .09", "2.46 ± .25", "2.40 ± .04", "2.41 ± .25", "2.43 ± .15"),
    "concrete": ("3.16 ± .02", "3.04 ± .09", "2.93 ± .02", "3.06 ± .18", "3.04 ± .17"),
    "energy": ("2.04 ± .02", "1.99 ± .09", "1.21 ± .01", "1.38 ± .22", "0.60 ± .45"),
    "kin8nm": ("−0.90 ± .01", "−0.95 ± .03", "−1.14 ± .01", "−1.20 ± .02", "−0.49 ± .02"),
    "naval-propulsion-plant": ("−3.73 ± .01", "−3.80 ± .05", "−4.45 ± .00", "−5.63 ± .05", "−5.34 ± .04"),
    "power-plant": ("2.84 ± .01", "2.80 ± .05", "2.80 ± .01", "2.79 ± .04", "2.79 ± .11"),
    "protein-tertiary-structure": ("2.97 ± .00", "2.89 ± .01", "2.87 ± .00", "2.83 ± .02", "2.81 ± .03"),
    "wine-quality-red": ("0.97 ± .01", "0.93 ± .06", "0.93 ± .01", "0.94 ± .12", "0.91 ± .06"),
    "yacht": ("1.63 ± .02", "1.55 ± .12", "1.25 ± .01", "1.18 ± .21", "0.20 ± .26"),
}
MDN = ("single", "ensemble")  # the protocol counts the one with the lower validation NLL
PEERS = {"flow": "flow", "gaussian": "Gaussian ensemble", "ngboost": "NGBoost"}
# A test row is "spiked" for a model when its target is a value the training targets repeat and
# the model's density there is SPIKE times its density half-way to the nearest other training
# value: the density resolves the lattice (σ ≲ gap / 4.3 for a Gaussian), so it can win NLL on
# the spikes rather than on the shape.
SPIKE = 10.0


def picked(rows: list[dict]) -> str:
    """The MDN the protocol counts: the lower mean validation NLL over the splits (never test)."""
    return min(MDN, key=lambda m: statistics.mean([r["val_nll"] for r in rows if r["model"] == m] or [math.inf]))


def by_method(rows: list[dict], name: str) -> dict[str, list[dict]]:
    """The set's rows per method: "MDN" (the picked one) and each peer that has rows."""
    mine = [r for r in rows if r["set"] == name]
    out = {"MDN": [r for r in mine if r["model"] == picked(mine)]}
    out.update({peer: found for peer in PEERS if (found := [r for r in mine if r["model"] == peer])})
    return out


def paired(mdn: list[dict], peer: list[dict], metric: str) -> str:
    """MDN − peer over the splits both have: mean ± s.e. (splits where the MDN is better)."""
    return benchmark.paired(mdn, peer, metric, unit=lambda r: r["split"])


def paired_with_dropout(root: Path, name: str, mdn: list[dict]) -> str:
    """MDN − MC dropout (2018 rerun) per split, from the set's results/test_ll_*.txt where present."""
    files = sorted((root / name / "results").glob("test_ll_*.txt"))
    if not files or not mdn:
        return "-"
    dropout = {split: -float(v) for split, v in enumerate(files[0].read_text().split())}
    return paired(mdn, [{"split": k, "nll": v} for k, v in dropout.items()], "nll")


def fewer_splits(root: Path | None, name: str, mdn: list[dict]) -> str:
    """ ", k of n splits" where the runs cover fewer than the set's splits (a quick look, or a
    large set cut to fit the time), else nothing."""
    if root is None or not mdn:
        return ""
    from mdnlab.problems import UCISet

    total = UCISet(str(root), name).n_splits()
    return f", {len(mdn)} of {total} splits" if len(mdn) < total else ""


def metric_table(rows: list[dict], metric: str, published: bool, root: Path | None = None) -> str:
    sets = sorted({r["set"] for r in rows})
    head = [
        "data set (MDN picked)",
        "MDN single",
        "MDN ensemble",
        "MDN (picked)",
        *PEERS.values(),
        *(f"MDN − {p}, paired (MDN better)" for p in PEERS.values()),
    ]
    if published:
        head += ["deep ensembles (2017)", "NGBoost (2020)", "MC dropout (2018)", "MDN − MC dropout 2018, paired"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in sets:
        methods = by_method(rows, name)
        mdn = methods["MDN"]
        cells = [f"{name} ({mdn[0]['model'] if mdn else '-'}{fewer_splits(root, name, mdn)})"]
        cells += [mean_se([r[metric] for r in rows if r["set"] == name and r["model"] == m]) for m in MDN]
        cells.append(mean_se([r[metric] for r in mdn]))
        cells += [mean_se([r[metric] for r in methods.get(p, [])]) for p in PEERS]
        cells += [paired(mdn, methods.get(p, []), metric) for p in PEERS]
        if published:
            quoted = PUBLISHED.get(name, ("-",) * 5)
            cells += [quoted[3], quoted[4], quoted[2], paired_with_dropout(root, name, mdn) if root else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# make uci trains these as stacks (hydra/launcher=stacked): every run of a stack records the stack's
# wall time, so a stack costs its largest record, not their sum; the others train one at a time
STACKED = ("single", "ensemble", "gaussian")


def seconds(rows: list[dict], model: str) -> float:
    values = [r["seconds"] for r in rows if r["model"] == model]
    return (max(values) if model in STACKED else sum(values)) if values else 0.0


def time_table(rows: list[dict]) -> str:
    lines = ["| data set | " + " | ".join(["MDN (both)", *PEERS.values()]) + " |", "|---" * 5 + "|"]
    for name in sorted({r["set"] for r in rows}):
        mine = [r for r in rows if r["set"] == name]
        cells = [sum(seconds(mine, m) for m in MDN)] + [seconds(mine, p) for p in PEERS]
        lines.append(f"| {name} | " + " | ".join(f"{c:.0f}" if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def log_densities(row: dict, x, points):
    """log p(points | x) of the row's model, points (P, n): (P, n)."""
    import torch

    if "loc" in row:  # NGBoost's Normal, kept as its parameters
        loc, scale = (torch.tensor(row[k], dtype=torch.float64) for k in ("loc", "scale"))
        return torch.distributions.Normal(loc, scale).log_prob(points)
    from mdnlab import checkpoint
    from mdnlab.eval.metrics import predict

    model = checkpoint.load(row["checkpoint"])[0]
    with torch.no_grad():
        if hasattr(model, "predictive_mixture"):
            return predict(model, x).log_prob(points)
        return model.predictive_distribution(x).log_prob(points.unsqueeze(-1).float()).double()


def spikes(root: Path, rows: list[dict], name: str) -> dict:
    """Per method, the test NLL on all rows and on the rows no method spikes on (the same rows
    for every method, per split); the share of rows left out; the set's distinct target values."""
    import torch

    from mdnlab.problems import UCISet

    uci, methods = UCISet(str(root), name), by_method(rows, name)
    nll = {m: {"all": [], "kept": []} for m in methods}
    shares, distinct = [], []
    for split in sorted({r["split"] for r in methods["MDN"]}):
        _, y_train, x_test, y_test = uci.split(int(split))
        values, counts = torch.unique(y_train.reshape(-1).double(), return_counts=True)
        distinct.append(len(values))
        t = y_test.reshape(-1).double()
        spiked = torch.zeros_like(t, dtype=torch.bool)
        per_method = {}
        place = torch.searchsorted(values, t).clamp(0, len(values) - 1)
        on_repeat = (values[place] == t) & (counts[place] > 1)
        gaps = torch.cat([values.diff(), values.new_full((1,), math.inf)])
        before = torch.cat([values.new_full((1,), math.inf), values.diff()])
        gap = torch.minimum(gaps[place], before[place]).clamp(max=1e6)
        points = torch.stack([t, t - gap / 2, t + gap / 2])
        for method, found in methods.items():
            row = next((r for r in found if r["split"] == split), None)
            if row is None:
                continue
            log_p = log_densities(row, x_test, points)
            per_method[method] = -log_p[0]
            spiked |= on_repeat & (log_p[0] - log_p[1:].max(0).values > math.log(SPIKE))
        shares.append(spiked.double().mean().item())
        for method, row_nll in per_method.items():
            nll[method]["all"].append(row_nll.mean().item())
            if (~spiked).any():
                nll[method]["kept"].append(row_nll[~spiked].mean().item())
    return {
        "nll": nll,
        "share": statistics.mean(shares) if shares else 0.0,
        "distinct": min(distinct) if distinct else 0,
    }


def spike_table(root: Path, rows: list[dict]) -> str:
    head = ["data set", "distinct training targets", "test rows spiked"]
    head += [f"{m} NLL: all / unspiked rows" for m in ["MDN", *PEERS.values()]]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in sorted({r["set"] for r in rows}):
        found = spikes(root, rows, name)
        cells = [name, str(found["distinct"]), f"{100 * found['share']:.1f}%"]
        for method in ["MDN", *PEERS]:
            scores = found["nll"].get(method)
            cells.append(f"{mean_se(scores['all'])} / {mean_se(scores['kept'])}" if scores else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_table(rows: list[dict]) -> str:
    """Per set and method, the recipe it trained with: one chosen on validation by
    scripts/uci_search.py (configs/experiment/uci/...), or its family's base recipe."""
    lines = ["| data set | " + " | ".join(["MDN", *PEERS.values()]) + " |", "|---" * 5 + "|"]
    for name in sorted({r["set"] for r in rows}):
        methods, cells = by_method(rows, name), []
        for method in ["MDN", *PEERS]:
            found = {r.get("recipe", "") for r in methods.get(method, [])}
            if method == "ngboost":
                cells.append("its paper's, rounds on validation" if methods.get(method) else "-")
            elif not found:
                cells.append("-")
            else:
                cells.append(
                    " / ".join(f"{'searched' if e.startswith('uci/') else 'base'} ({e})" for e in sorted(found))
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(root: Path, rows: list[dict]) -> str:
    """Every table, as Markdown."""
    parts = [
        (
            "Recipes (searched: chosen on validation rows by scripts/uci_search.py; base: the family's "
            "starting recipe, not searched)",
            recipe_table(rows),
        ),
        ("Test NLL (nats; lower is better), mean ± s.e. over the splits", metric_table(rows, "nll", True, root)),
        ("Test RMSE", metric_table(rows, "rmse", False, root)),
        ("Test CRPS (target units)", metric_table(rows, "crps", False, root)),
        (
            "Seconds of training and scoring, all splits (a stack's wall time; the flows and NGBoost one "
            "split after another)",
            time_table(rows),
        ),
        (
            f"Spikes: test rows whose target repeats in training and where a method's density is {SPIKE:g}× "
            "higher than half-way to the next training value, left out for every method",
            spike_table(root, rows),
        ),
    ]
    return "\n\n".join(f"{title}:\n\n{body}" for title, body in parts)


def ngboost_rows(out: Path, name: str) -> list[dict]:
    rows = []
    for path in sorted((out / name / "ngboost").glob("split_*.json")):
        record = json.loads(path.read_text())
        m = record["metrics"]
        rows.append(
            {
                "set": name,
                "model": "ngboost",
                "split": record["split"],
                "nll": m["test/nll"],
                "rmse": math.sqrt(m["test/mse"]),
                "crps": m["test/crps"],
                "coverage_90": m["test/coverage_90"],
                "pit_ks": m["test/pit_ks"],
                "steps": m["train/steps"],
                "val_nll": m["val/best_nll"],
                "seconds": record["seconds"],
                "checkpoint": str(path),
                "loc": record["loc"],
                "scale": record["scale"],
            }
        )
    return rows
