"""hydra/launcher=slurm against a real one-node SLURM cluster (scripts/slurm_cluster.sh), started
for these tests: a sweep collected, a failing job, a job SLURM drops without a result, and the
ways SLURM stops a job (scontrol requeue, preemption by a higher partition, scancel). Each
finished job's metrics.json must equal, byte for byte, the same job run alone on this machine.

Run by `make test-cluster` (marker `cluster`); without the SLURM binaries these tests skip with
one line saying how to get them, and with MDNLAB_REQUIRE_SLURM=1 (CI) they fail instead.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOW = "sudo apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"
# 6 epochs of 250 steps (~0.5 s an epoch here): long enough to signal a job mid-run
JOB = [
    "trainer.max_epochs=6",
    "data.passes_per_epoch=250",
    "data.n_test=500",
    "figures=false",
    "callbacks.rich_progress_bar=null",
    "trainer.enable_progress_bar=false",
]
ON_SLURM = ["hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [
        b
        for b in ("slurmctld", "slurmd", "sbatch", "munged")
        if not shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin")
    ]
    why = (
        f"SLURM is not installed ({', '.join(missing)} missing): {HOW}"
        if missing
        else "starting a SLURM cluster needs root"
        if os.geteuid() != 0
        else None
    )
    if why:
        if os.environ.get("MDNLAB_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    where = Path(tempfile.mkdtemp(prefix="mdnlab-slurm-"))  # not under pytest's 0700 folder: munged must reach it
    started = subprocess.run(
        ["bash", str(REPO / "scripts/slurm_cluster.sh"), "start", str(where)], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    env = {**os.environ, "SLURM_CONF": str(where / "slurm.conf"), "PATH": os.environ["PATH"] + ":/usr/sbin"}
    yield env
    subprocess.run(["bash", str(REPO / "scripts/slurm_cluster.sh"), "stop", str(where)], capture_output=True)
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def alone(cluster, tmp_path_factory):
    """metrics.json of each seed's job in an uninterrupted SLURM sweep, by seed, once its metrics
    are checked to be those of the same job run on this machine without SLURM."""
    where = tmp_path_factory.mktemp("alone")
    done = sweep(cluster, where / "sweep", "seed=0,1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sacct" not in done.stderr and "Traceback" not in done.stderr
    runs = job_metrics(where / "sweep")
    subprocess.run(
        [str(BIN / "mdn-train"), *JOB, "seed=1", f"hydra.run.dir={where / 'here'}"],
        check=True,
        capture_output=True,
        cwd=where,
    )
    assert json.loads((where / "here" / "metrics.json").read_bytes())["metrics"] == json.loads(runs[1])["metrics"]
    return runs


def sweep(env, where: Path, *overrides, background=False, launcher="slurm"):
    command = [
        str(BIN / "mdn-train"),
        "-m",
        f"hydra/launcher={launcher}",
        *ON_SLURM,
        *JOB,
        f"hydra.sweep.dir={where}",
        *overrides,
    ]
    if background:
        return subprocess.Popen(
            command, env=env, cwd=where.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(command, env=env, cwd=where.parent, capture_output=True, text=True, timeout=600)


def job_metrics(where: Path) -> dict[int, bytes]:
    out = {}
    for path in where.glob("*/metrics.json"):
        seed = int(path.parent.name.split("seed-")[1].split("_")[0])
        out[seed] = path.read_bytes()
    return out


def job_process(where: Path) -> int | None:
    """The pid of the process that trains the sweep's running job (submitit's ``_submit``, not
    the srun whose arguments name it), or None before it starts."""
    pattern = f"^[^ ]*python[^ ]* -u -m submitit.core._submit {where / '.submitit'}/"
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert len(pids) <= 1, pids
    return int(pids[0]) if pids else None


def proc_status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return ""


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while "State:\tT" not in proc_status(pid):  # SIGSTOP lands asynchronously
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.01)


def held(pid: int) -> bool:
    """Whether the process is stopped with no signal waiting for it. SLURM sends SIGCONT with
    every signal it sends a job, so a held job also goes on by itself when one comes."""
    status = proc_status(pid)
    masks = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", status, re.MULTILINE)
    return "State:\tT" in status and not any(int(mask, 16) for mask in masks)


def epoch_saved(where: Path) -> bool:
    """A single run's first epoch is in its last.ckpt, or a stack's first epoch in .stacks/."""
    from mdnlab import checkpoint

    if list((where / ".stacks").glob("*.pt")):
        return True
    for last in where.glob("*/checkpoints/last.ckpt"):
        try:
            return checkpoint.read(last)["epoch"] >= 0
        except (OSError, KeyError, RuntimeError, EOFError):
            pass  # being written
    return False


@contextmanager
def held_mid_run(env, where: Path, timeout: float = 120):
    """The sweep's one running job, stopped (SIGSTOP) once it has saved its first epoch: it runs
    in 0.1 s slices until then, so that it is mid-run on a machine of any speed or load. Yields
    (SLURM job id, pid); SIGCONT on leaving, for the job SLURM has not ended meanwhile."""
    deadline = time.monotonic() + timeout
    while (pid := job_process(where)) is None:
        assert time.monotonic() < deadline, f"no job of {where} started in {timeout} s"
        time.sleep(0.05)
    stop(pid)
    try:
        while not epoch_saved(where):
            assert time.monotonic() < deadline and proc_status(pid), f"no epoch of {where} saved"
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.1)
            stop(pid)
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env, capture_output=True, text=True)
        [job] = out.stdout.split()
        yield job, pid
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def until_slurm_signals(pid: int, timeout: float = 120) -> None:
    """Waits, the job held, until SLURM signals it."""
    deadline = time.monotonic() + timeout
    while held(pid):
        assert time.monotonic() < deadline, f"SLURM sent process {pid} no signal in {timeout} s"
        time.sleep(0.1)


def time_limit_warning_mid_run(env, where: Path) -> None:
    """Cuts the held job's time limit to one minute (it was submitted with ten) and lets it go on
    once SLURM's warning (USR2, ``signal_delay_s`` before the limit) comes. SLURM checks limits
    about every 30 s: with a 40 s warning it comes 20-50 s into the job, always while it is held."""
    with held_mid_run(env, where) as (job, pid):
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], env=env, check=True)
        until_slurm_signals(pid)


def steps_at_the_requeue(where: Path, step: str) -> tuple[str, str]:
    """(where the first attempt stopped, where the next resumed), as the jobs' logs say."""
    logs = "".join(p.read_text() for p in sorted((where / ".submitit").glob("*/*_log.*")))
    return re.search(f"stopping at {step}", logs).groups(), re.search(f"resumes? at {step}", logs).groups()


def finished(process, timeout=600) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_a_sweep_runs_on_slurm_as_it_runs_here(alone):
    assert sorted(alone) == [0, 1]  # the fixture's sweep, checked there


def test_submit_and_go_then_mdn_report_follows_the_jobs(cluster, alone, tmp_path):
    """hydra.launcher.wait=false: the command returns once the jobs are queued, naming them and
    the sweep; mdn-report says what SLURM has of each, then reports the finished."""
    where = tmp_path / "sweep"
    start = time.monotonic()
    done = sweep(cluster, where, "seed=0,1", "hydra.launcher.wait=false", "hydra.launcher.cpus_per_task=1")
    returned_after = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert "submitted 2 SLURM jobs" in done.stdout and f"mdn-report {where}" in done.stdout
    report = [str(BIN / "mdn-report"), str(where)]
    early = subprocess.run(report, env=cluster, capture_output=True, text=True, check=True)
    [line] = [line for line in early.stdout.splitlines() if line.startswith("jobs: ")]
    counts = {state: int(n) for n, state in (part.split() for part in line[len("jobs: ") :].split(", "))}
    assert sum(counts.values()) == 2 and counts.get("queued", 0) + counts.get("running", 0) >= 1, line
    deadline = time.monotonic() + 300
    while len(job_metrics(where)) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert job_metrics(where) == alone
    assert returned_after < 0.5 * (time.monotonic() - start)  # it did not wait for the jobs
    final = subprocess.run(report, env=cluster, capture_output=True, text=True, check=True)
    assert "\njobs: 2 completed" in final.stdout


def test_scontrol_requeue_loses_nothing(cluster, alone, tmp_path):
    """SLURM's SIGTERM of a requeue: the attempt stops without a result, the next resumes."""
    process = sweep(cluster, tmp_path / "sweep", "seed=0", background=True)
    with held_mid_run(cluster, tmp_path / "sweep") as (job, _):
        subprocess.run(["scontrol", "requeue", job], env=cluster, check=True)
    status, err = finished(process)
    assert status == 0, err[-2000:]
    assert job_metrics(tmp_path / "sweep") == {0: alone[0]}
    assert "Traceback" not in err
    stopped, resumed = steps_at_the_requeue(tmp_path / "sweep", "global step (\\d+)")
    assert stopped == resumed  # the state of the step in flight was saved: no step is taken twice


@pytest.mark.parametrize("partition", ["debug", "debug_grace"])
def test_a_preempted_job_is_requeued_and_loses_nothing(cluster, alone, tmp_path, partition):
    """An "urgent" job takes the node: the sweep's job is requeued at once (debug) or after its
    grace time (debug_grace), and resumes once the node is free."""
    process = sweep(cluster, tmp_path / "sweep", "seed=1", f"hydra.launcher.partition={partition}", background=True)
    with held_mid_run(cluster, tmp_path / "sweep") as (_, pid):
        subprocess.run(
            ["sbatch", "-p", "urgent", "-c", "2", "-o", os.devnull, "--wrap", "sleep 1"],
            env=cluster,
            check=True,
            capture_output=True,
        )
        until_slurm_signals(pid)
    status, err = finished(process)
    assert status == 0, err[-2000:]
    assert job_metrics(tmp_path / "sweep") == {1: alone[1]}
    assert "Traceback" not in err
    stopped, resumed = steps_at_the_requeue(tmp_path / "sweep", "global step (\\d+)")
    assert stopped == resumed


def test_a_job_reaching_its_time_limit_is_requeued_and_loses_nothing(cluster, alone, tmp_path):
    """A one-minute limit with the warning 40 s before it: the job gets USR2 mid-run (held
    still until then), submitit requeues it, and the next attempt resumes at the step the first
    stopped and finishes with the metrics of the uninterrupted job."""
    limit = ["hydra.launcher.signal_delay_s=40", "hydra.launcher.max_num_timeout=8"]
    process = sweep(cluster, tmp_path / "sweep", "seed=0", *limit, background=True)
    time_limit_warning_mid_run(cluster, tmp_path / "sweep")
    status, err = finished(process)
    assert status == 0, err[-2000:]
    assert "Traceback" not in err
    [log] = (tmp_path / "sweep" / ".submitit").glob("*/*_0_log.err")
    assert "timed-out" in log.read_text()  # submitit's line: it was signalled, and requeued
    stopped, resumed = steps_at_the_requeue(tmp_path / "sweep", "global step (\\d+)")
    assert stopped == resumed
    assert job_metrics(tmp_path / "sweep") == {0: alone[0]}


def test_scancel_ends_in_one_line_and_a_rerun_finishes(cluster, alone, tmp_path):
    process = sweep(cluster, tmp_path / "sweep", "seed=0", background=True)
    with held_mid_run(cluster, tmp_path / "sweep") as (job, _):
        subprocess.run(["scancel", job], env=cluster, check=True)
    status, err = finished(process)
    assert status == 1 and "Traceback" not in err
    assert f"error: SLURM job {job} was cancelled without a result" in err, err
    rerun = sweep(cluster, tmp_path / "sweep", "seed=0")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert job_metrics(tmp_path / "sweep") == {0: alone[0]}


def test_a_failing_job_fails_in_one_line(cluster, tmp_path):
    done = sweep(cluster, tmp_path / "sweep", "seed=0", "model.optimizer.lr=300")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "non-finite" in done.stderr


def test_a_job_dropped_without_a_result_ends_the_sweep(cluster, tmp_path):
    """A job whose process dies before it can write a result (SIGKILL here; on a cluster, a
    warning signal that comes before submitit's handler, say) is reported from squeue, not
    waited on forever."""
    process = sweep(cluster, tmp_path / "sweep", "seed=0", background=True)
    with held_mid_run(cluster, tmp_path / "sweep") as (job, pid):
        os.kill(pid, signal.SIGKILL)
    status, err = finished(process, timeout=120)
    assert status == 1 and "Traceback" not in err
    assert f"SLURM job {job} ended" in err and "without a result" in err, err


def test_ddp_as_two_srun_tasks_equals_ddp_cpu_here(cluster, tmp_path):
    """trainer=ddp on CPUs with two tasks: srun starts the ranks (Lightning's SLURM environment),
    as on a GPU cluster; the metrics are those of trainer=ddp_cpu (two spawned ranks) here."""
    done = sweep(
        cluster,
        tmp_path / "sweep",
        "seed=0",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "hydra.launcher.cpus_per_task=1",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [rank_1] = (tmp_path / "sweep" / ".submitit").glob("*/*_1_log.out")
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank_1.read_text()
    here = subprocess.run(
        [str(BIN / "mdn-train"), *JOB, "seed=0", "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'here'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert here.returncode == 0, here.stderr[-2000:]
    [metrics] = job_metrics(tmp_path / "sweep").values()
    assert json.loads(metrics)["metrics"] == json.loads((tmp_path / "here" / "metrics.json").read_bytes())["metrics"]


# ---- hydra/launcher=stacked_slurm: each stack one SLURM job ---------------------------------

STACKED = ["hydra.launcher.compile=false", "seed=0,1,2"]
LONGER = "trainer.max_epochs=20"  # 5,000 steps: the stack is still training when the tests act on it


@pytest.fixture(scope="module")
def stacked_here(cluster, tmp_path_factory):
    """The three seeds' metrics.json as hydra/launcher=stacked leaves them on this machine."""
    where = tmp_path_factory.mktemp("stacked") / "sweep"
    subprocess.run(
        [str(BIN / "mdn-train"), "-m", "hydra/launcher=stacked", *JOB, *STACKED, LONGER, f"hydra.sweep.dir={where}"],
        check=True,
        capture_output=True,
        cwd=where.parent,
    )
    return job_metrics(where)


def stacked_sweep(env, where: Path, *overrides, background=False):
    return sweep(env, where, *STACKED, LONGER, *overrides, background=background, launcher="stacked_slurm")


def test_a_requeued_stack_resumes_at_the_step_it_stopped(cluster, stacked_here, tmp_path):
    """Three seeds, one stack, one SLURM job, requeued mid-run: the stack saves its state after
    the step in flight, the next attempt resumes there, and every model's metrics.json is the
    one the stacked launcher leaves on this machine."""
    process = stacked_sweep(cluster, tmp_path / "sweep", background=True)
    with held_mid_run(cluster, tmp_path / "sweep") as (job, _):
        subprocess.run(["scontrol", "requeue", job], env=cluster, check=True)
    status, err = finished(process)
    assert status == 0, err[-2000:]
    assert "Traceback" not in err
    assert job_metrics(tmp_path / "sweep") == stacked_here
    stopped, resumed = steps_at_the_requeue(tmp_path / "sweep", "epoch (\\d+), step (\\d+)")
    assert stopped == resumed
    assert not list((tmp_path / "sweep" / ".stacks").glob("*.pt"))


def test_a_stack_reaching_its_time_limit_resumes(cluster, stacked_here, tmp_path):
    """USR2 40 s before a one-minute limit, mid-run: the stack saves its state, submitit
    requeues its job (StackTask.checkpoint), and the next attempt resumes at that step."""
    limit = ["hydra.launcher.signal_delay_s=40", "hydra.launcher.max_num_timeout=8"]
    process = stacked_sweep(cluster, tmp_path / "sweep", *limit, background=True)
    time_limit_warning_mid_run(cluster, tmp_path / "sweep")
    status, err = finished(process)
    assert status == 0, err[-2000:]
    assert "Traceback" not in err
    [log] = (tmp_path / "sweep" / ".submitit").glob("*/*_0_log.err")
    assert "timed-out" in log.read_text()
    stopped, resumed = steps_at_the_requeue(tmp_path / "sweep", "epoch (\\d+), step (\\d+)")
    assert stopped == resumed
    assert job_metrics(tmp_path / "sweep") == stacked_here


def test_two_stacked_slurm_searches_share_one_study(cluster, tmp_path):
    """Two sweepers, each launching its batches of two trials as stacked_slurm jobs, one study
    in a journal file both reach: six trials in all, each asked once and run once, in one sweep
    or the other, every trial's score the mean its job's run directory records."""
    import optuna

    from mdnlab.runs import search

    journal = tmp_path / "shared" / "study.log"
    common = [
        "hparams_search=mdn_training",
        "hydra.launcher.compile=false",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner=null",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.storage={journal}",
    ]
    first = sweep(cluster, tmp_path / "a", *common, background=True, launcher="stacked_slurm")
    second = sweep(cluster, tmp_path / "b", *common, "hydra.sweeper.seed=1", background=True, launcher="stacked_slurm")
    for process in (first, second):
        status, err = finished(process)
        assert status == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=search.storage(str(journal), tmp_path))
    trials = [t for t in study.get_trials() if not t.user_attrs.get("orphan")]
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers == {str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())}
    for trial in trials:
        where = Path(trial.user_attrs["worker"])
        (run,) = [p for p in where.iterdir() if p.name.split("_")[0] == str(trial.user_attrs["job"])]
        metrics = json.loads((run / "metrics.json").read_text())["metrics"]
        assert trial.value == pytest.approx(metrics["val/best_nll"], abs=1e-9)
        assert f"search.trial={trial.number}" in (run / ".hydra" / "overrides.yaml").read_text()
    runs = [p for w in ("a", "b") for p in (tmp_path / w).iterdir() if (p / "metrics.json").is_file()]
    assert len(runs) == 6
