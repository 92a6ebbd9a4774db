"""make sbi's peers: sbi's neural posterior estimation (``sbi.inference.NPE``) at sbi's defaults,
with its mixture density network (``density_estimator="mdn"``) or its neural spline flow
(``"nsf"``, the published NPE's estimator), trained on the same simulations as the MDN (the
same ``SBIBMDataModule`` draw: the budget's rows, train and validation together, since sbi
holds out its own 10%) and scored by the same code (``eval.posterior``'s C2ST, NLTP, MMD).

Each run leaves <out>/<task>/<budget>/<peer>/seed<k>/: posterior.csv (one row per observation),
posterior_samples.pt and record.json (seconds of training, of sampling, epochs). A finished run
is not trained again.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PEERS = {"sbi_mdn": "mdn", "sbi_nsf": "nsf"}


def simulations(task: str, budget: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The budget's simulations (θ, x) exactly as the MDN's run draws them, in θ's own units."""
    from mdnlab.data import SBIBMDataModule

    data = SBIBMDataModule(task, num_simulations=budget, seed=seed, n_test=1)
    data.prepare_splits()
    x = torch.cat([data.raw["train"][0], data.raw["val"][0]])
    theta = data.task.transform()(torch.cat([data.raw["train"][1], data.raw["val"][1]]))
    return theta, x


class SBIPosterior:
    """sbi's posterior behind the interface ``eval.posterior.score`` samples and scores."""

    def __init__(self, posterior, x_o: torch.Tensor) -> None:
        self.posterior, self.x_o = posterior, x_o

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        with torch.random.fork_rng():  # sbi draws from torch's global generator: seed it from ours
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            draws = self.posterior.sample((n,), x=self.x_o, show_progress_bars=False)
        return draws.double(), 1.0

    def log_prob(self, theta: torch.Tensor, acceptance: float = 1.0) -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the leakage correction of a bounded prior is a Monte-Carlo estimate
            return self.posterior.log_prob(theta.float(), x=self.x_o).double()


def run(task: str, budget: int, peer: str, seed: int, out: Path, n_samples: int, with_mmd: bool) -> Path:
    """Train and score one peer; returns its run directory."""
    from sbi.inference import NPE

    from mdnlab.eval import posterior
    from mdnlab.problems import SBIBMTask

    folder = out / task / str(budget) / peer / f"seed{seed}"
    if (folder / "record.json").is_file():
        print(f"   already finished: {folder}", flush=True)
        return folder
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard import SummaryWriter

    problem = SBIBMTask(task)
    theta, x = simulations(task, budget, seed)
    folder.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(folder / "tensorboard"))  # sbi's curves, beside the run (not ./sbi-logs)
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        inference = NPE(
            prior=problem.prior(),
            density_estimator=PEERS[peer],
            show_progress_bars=False,
            tracker=TensorBoardTracker(writer),
        )
        estimator = inference.append_simulations(theta, x).train()
        fitted = inference.build_posterior(estimator)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows, draws = posterior.score(
        None,
        problem,
        list(range(1, 11)),
        n_samples,
        seed,
        with_mmd=with_mmd,
        posterior_of=lambda x_o: SBIPosterior(fitted, x_o),
    )
    writer.close()
    torch.save(draws, folder / "posterior_samples.pt")
    table = io.StringIO()
    writer = csv.DictWriter(table, ["observation", "c2st", "nltp", "mmd", "acceptance"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "posterior.csv").write_text(table.getvalue())
    record = {
        "task": task,
        "budget": budget,
        "peer": peer,
        "seed": seed,
        "fit_seconds": train_seconds,
        "score_seconds": time.perf_counter() - start,
        "epochs": int(inference._summary["epochs_trained"][-1]),
    }
    (folder / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder


def available() -> bool:
    try:
        import sbi  # noqa: F401
    except ImportError:
        return False
    return True
