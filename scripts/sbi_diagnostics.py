"""sbi's calibration checks on a trained MDN posterior (a data=sbibm run): simulation-based
calibration (Talts et al. 2018; ``sbi.diagnostics.run_sbc`` and ``check_sbc``) and TARP (Lemos et
al. 2023; ``run_tarp`` and ``check_tarp``), with the MDN offered to them as a posterior
(``eval.posterior.AmortizedPosterior``). The simulations are the run's test split: simulated from
the prior with the run's seed, outside its budget, never trained or validated on.

    python scripts/sbi_diagnostics.py <run dir> [--samples 1000] [--simulations 1000]

Writes <run dir>/diagnostics/diagnostics.json (SBC: each parameter's KS p-value of its ranks
against uniform, the C2ST of ranks and of the data-averaged posterior against the prior; TARP:
its area-to-curve and KS p-value) and sbc_ranks.png, tarp.png, sbi's own figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a data=sbibm run's directory")
    parser.add_argument("--samples", type=int, default=1000, help="posterior draws per simulation")
    parser.add_argument("--simulations", type=int, default=1000, help="test simulations used (at most the run's)")
    args = parser.parse_args()
    record = args.run / "run.json"
    if not record.is_file():
        sys.exit(f"error: run={args.run} is not allowed: a finished run's directory (it has no run.json)")
    from sbi.analysis.plot import plot_tarp, sbc_rank_plot
    from sbi.diagnostics import check_sbc, check_tarp, run_sbc, run_tarp

    from mdnlab import checkpoint
    from mdnlab.eval.posterior import AmortizedPosterior

    data = json.loads(record.read_text())
    model, datamodule = checkpoint.load(data["tested_checkpoint"], key="run")
    if not hasattr(datamodule, "posterior_settings"):
        sys.exit(f"error: run={args.run} is not allowed: a run trained with data=sbibm")
    datamodule.prepare_splits()
    x, inner = (t[: args.simulations] for t in datamodule.raw["test"])
    theta = datamodule.task.transform()(inner)
    posterior = AmortizedPosterior(model, datamodule.task, seed=int(data["config"]["seed"]))
    with torch.random.fork_rng():  # sbi's checks draw from torch's global generator
        torch.manual_seed(0)
        ranks, dap = run_sbc(theta, x, posterior, num_posterior_samples=args.samples, show_progress_bar=False)
        sbc = check_sbc(ranks, theta, dap, num_posterior_samples=args.samples)
        ecp, alpha = run_tarp(theta, x, posterior, num_posterior_samples=args.samples, show_progress_bar=False)
        atc, ks_pval = check_tarp(ecp, alpha)
    out = args.run / "diagnostics"
    out.mkdir(exist_ok=True)
    result = {
        "task": datamodule.task.task,
        "simulations": len(x),
        "posterior_samples": args.samples,
        "sbc_ks_pvalues": [round(float(v), 4) for v in sbc["ks_pvals"]],
        "sbc_c2st_ranks": [round(float(v), 4) for v in sbc["c2st_ranks"]],
        "sbc_c2st_dap": [round(float(v), 4) for v in sbc["c2st_dap"]],
        "tarp_atc": round(float(atc), 4),
        "tarp_ks_pvalue": round(float(ks_pval), 4),
    }
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2) + "\n")
    figure, _ = sbc_rank_plot(ranks, args.samples, plot_type="hist", num_bins=20)
    figure.savefig(out / "sbc_ranks.png", dpi=80)
    figure, _ = plot_tarp(ecp, alpha)
    figure.savefig(out / "tarp.png", dpi=80)
    print(json.dumps(result, indent=2), f"written to {out}", sep="\n")


if __name__ == "__main__":
    main()
