"""The fault suite: processes and nodes die mid-sweep, on a real Ray, and nothing finished is lost.

- Ray Train workers of both stages (VQ-VAE, DeepSpeed LM) SIGKILLed mid-trial: the stage resumes from its last
  checkpoint in place (FailureConfig), with no trial retry to hide behind (tune.max_failures=0).
- A trial whose one-worker stages train in its own process SIGKILLed mid-LM: Tune retries it, and the LM stage
  resumes from its checkpoint (the VQ-VAE stage, finished, is not trained again).
- The sweep's driver SIGKILLed mid-sweep: `archsweep resume` completes it, the finished trial is not rerun, and
  the interrupted trial's W&B run goes on under the same id with monotonic steps.
- A worker node of a `ray.cluster_utils.Cluster` removed mid-sweep: its trial is rescheduled and the sweep ends.
- The search driver and evaluators killed mid-search: tests/test_search.py
  (`test_killed_driver_and_evaluator_actors_restart_and_the_search_loses_and_repeats_nothing`; for bo and rl,
  `test_killed_driver_of_a_representation_search_continues_the_same_search`; lm_ranker cut and resumed in
  tests/test_pipeline.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from archsweep.sweep.spec import load_sweep
from tests.helpers import latest_checkpoint, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.reliability]

TINY = """
name: faults
space: nasbench201
vqvae: {hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}
train: {epochs: 1, batch_size: 512, checkpoint_interval_s: 0}  # a checkpoint every epoch: what a fault resumes from
lm: {epochs: 2, batch_size: 256, warmup_steps: 5, checkpoint_interval_s: 0}
sample: {samples: 100}
sweep:
  lm.name: {grid: [%s]}
tracking: {wandb: true, mode: offline, project: archsweep-test}
"""


def tiny_sweep(tmp_path: Path, *overrides: str, lms: str = "gpt2-tiny, llama-tiny"):
    path = tmp_path / "faults.yaml"
    path.write_text(TINY % lms)
    return path, load_sweep(path, [f"storage={tmp_path / 'sweeps'}", *overrides])



def actor_pids(actor_class: str = "RayTrainWorker") -> list[int]:
    """PIDs of the live actors of a class, from Ray's own actor table: by default the Ray Train workers (only the
    stage running now has any); "ImplicitFunc": the Tune trials."""
    from ray._private import state

    return [a["Pid"] for a in state.actors().values()
            if a["ActorClassName"] == actor_class and a["State"] == "ALIVE" and a["Pid"]]


class Killer(threading.Thread):
    """For each `ready` in turn: once `ready()` turns true, SIGKILLs the live actors of `actor_class`."""

    def __init__(self, *plan, actor_class: str = "RayTrainWorker"):
        super().__init__(daemon=True)
        self.plan, self.killed, self.errors, self.stop = list(plan), [], [], threading.Event()
        self.actor_class = actor_class

    def run(self):
        import psutil

        while self.plan and not self.stop.is_set():
            try:  # directories and processes come and go while this looks at them: never let that end the thread
                if (label := self.plan[0]()) and (pids := actor_pids(self.actor_class)):
                    for pid in pids:
                        try:
                            psutil.Process(pid).send_signal(signal.SIGKILL)
                        except psutil.Error:
                            pass
                    self.killed.append((label, pids))
                    self.plan.pop(0)
            except Exception as exc:
                self.errors.append(repr(exc))
            time.sleep(0.1)


def early_checkpoint(sweep_dir: Path, pattern: str, label: str, epochs: int):
    """A `ready` for Killer: `label` once a run under `pattern` has a checkpoint with at least two of its `epochs`
    still to run after it, else None."""
    def ready():
        for run_dir in sweep_dir.glob(pattern):
            if (latest := latest_checkpoint(run_dir)) and latest["epoch"] <= epochs - 3:
                return label
        return None
    return ready


def sweep_while(killer: Killer, sweep):
    """Run `sweep` on a local Ray of 2 CPUs (W&B as the sweep says) while `killer` watches; returns Tune's grid."""
    import ray

    from archsweep.runtime import init_local_ray
    from archsweep.sweep.run import run_sweep
    from archsweep.tracking.wandb import wandb_env

    init_local_ray(num_cpus=2, env=wandb_env(sweep.tracking))
    try:
        killer.start()
        return run_sweep(sweep)
    finally:
        killer.stop.set()
        ray.shutdown()


def _finished(sweep_dir: Path):
    from archsweep.tracking.store import ResultStore

    return {r.trial_id: r for r in ResultStore(sweep_dir).rows()}


def _runs_by_id(sweep_dir: Path, job_type: str = "trial") -> dict[str, list[dict]]:
    from archsweep.tracking.wandb import offline_runs, read_offline_run

    runs: dict[str, list[dict]] = {}
    for path in offline_runs(sweep_dir):
        run = read_offline_run(path)
        if run["job_type"] in (job_type, None):  # None: a run W&B has only begun to write
            runs.setdefault(run["id"].rsplit("-", 1)[-1], []).append(run)  # by trial id (behind the sweep's prefix)
    return runs


def _steps(parts: list[dict]) -> list[int]:
    return [h["_step"] for run in parts for h in run["history"]]


def test_killed_train_workers_of_both_stages_resume_from_their_checkpoints(data_dir, tmp_path, wandb_offline,
                                                                           measured):
    from archsweep.sweep.run import sweep_dir_of

    epochs = 6  # two workers a stage: one would train in the trial's own process, without Ray Train workers
    _, sweep = tiny_sweep(tmp_path, f"train.epochs={epochs}", f"lm.epochs={epochs}", "tune.max_failures=0",
                          "train.num_workers=2", "lm.num_workers=2", lms="gpt2-tiny")
    sweep_dir = sweep_dir_of(sweep)
    killer = Killer(early_checkpoint(sweep_dir, "artifacts/vqvae-*/ray/vqvae", "vqvae", epochs),
                    early_checkpoint(sweep_dir, "trials/*/lm/ray/lm", "lm", epochs))
    grid = sweep_while(killer, sweep)
    assert len(killer.killed) == 2, f"only {killer.killed} were killed; {killer.errors[-3:]}"
    assert not grid.errors
    (row,) = _finished(sweep_dir).values()
    assert row.status == "TERMINATED" and 0 <= row.metrics["validity"] <= 1

    # each stage's last attempt started from a checkpoint, not from scratch, and ran to the last epoch
    import json

    vq = json.loads((Path(row.paths["vqvae_dir"]) / "metrics.json").read_text())["training"]
    lm = json.loads((Path(row.paths["lm_dir"]) / "metrics.json").read_text())["training"]
    assert [k[0] for k in killer.killed] == ["vqvae", "lm"]
    assert vq["epoch"] == epochs - 1 and vq["start_epoch"] >= 1 and not vq["in_process"]
    assert lm["epoch"] == epochs - 1 and lm["start_epoch"] >= 1 and not lm["in_process"]

    # W&B: one run, the LM's epochs in order with none trained twice, steps strictly increasing
    (parts,) = _runs_by_id(sweep_dir).values()
    # (an epoch's own report has lm/start_epoch; W&B copies lm/epoch, the axis, into the rows after it)
    trained = [h["lm/epoch"] for run in parts for h in run["history"] if "lm/start_epoch" in h]
    assert trained == list(range(epochs))
    steps = _steps(parts)
    assert steps == sorted(set(steps))
    measured("a Ray Train worker of the VQ-VAE stage, then of the LM stage, SIGKILLed", "1", "1", "0",
             f"VQ-VAE resumed at epoch {vq['start_epoch']} of {epochs}, LM at epoch {lm['start_epoch']} of {epochs}; "
             "no trial retry")


def test_a_killed_trial_training_in_its_own_process_is_retried_from_its_checkpoints(data_dir, tmp_path,
                                                                                    wandb_offline, measured):
    import json

    from archsweep.sweep.run import sweep_dir_of

    epochs = 6
    _, sweep = tiny_sweep(tmp_path, f"lm.epochs={epochs}", "tune.max_failures=1", lms="gpt2-tiny")
    sweep_dir = sweep_dir_of(sweep)
    killer = Killer(early_checkpoint(sweep_dir, "trials/*/lm/ray/lm", "trial", epochs), actor_class="ImplicitFunc")
    grid = sweep_while(killer, sweep)
    assert len(killer.killed) == 1, f"no trial was killed; {killer.errors[-3:]}"
    assert not grid.errors
    (row,) = _finished(sweep_dir).values()
    assert row.status == "TERMINATED" and 0 <= row.metrics["validity"] <= 1
    lm = json.loads((Path(row.paths["lm_dir"]) / "metrics.json").read_text())["training"]
    assert lm["epoch"] == epochs - 1 and lm["start_epoch"] >= 1 and lm["in_process"]
    assert row.metrics["vqvae/reused"]  # the retry found the VQ-VAE stage it had finished
    (parts,) = _runs_by_id(sweep_dir).values()  # one W&B run, its steps strictly increasing across the retry
    steps = _steps(parts)
    assert steps == sorted(set(steps))
    measured("the trial's own process, training its LM stage, SIGKILLed (tune.max_failures=1)", "1", "1", "0",
             f"retried by Tune; LM resumed at epoch {lm['start_epoch']} of {epochs}, the VQ-VAE stage reused")


def test_killed_sweep_driver_resumes_without_rerunning_and_wandb_steps_go_on(data_dir, tmp_path, wandb_offline,
                                                                            measured):
    """The driver (and the local Ray it started) is SIGKILLed once one trial has finished and the other's W&B
    run holds an LM epoch on disk; `archsweep resume` completes the sweep."""
    from archsweep.sweep.run import sweep_dir_of

    path, sweep = tiny_sweep(tmp_path, "tune.max_concurrent_trials=1", "lm.epochs=8")
    sweep_dir = sweep_dir_of(sweep)
    command = [sys.executable, "-m", "archsweep.cli", "sweep", str(path), "--num-cpus", "2",
               f"storage={tmp_path / 'sweeps'}", "tune.max_concurrent_trials=1", "lm.epochs=8"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        states = list((sweep_dir / "trials").glob("experiment_state-*.json"))
        finished = bool(states) and '\\"status\\": \\"TERMINATED\\"' in states[0].read_text()
        running = [t for t in (sweep_dir / "trials").glob("trial_*") if not (t / "metrics.json").exists()]
        return finished and any(_steps(_runs_by_id(t).get(t.name.removeprefix("trial_"), [])) for t in running)

    wait_for(ready, 600, "a finished trial and another one training", alive=lambda: driver.poll() is None)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = {i: r for i, r in _finished(sweep_dir).items() if r.status == "TERMINATED"}
    assert len(finished) == 1
    (first_id, first), = finished.items()
    before = _runs_by_id(sweep_dir)

    resumed = subprocess.run([sys.executable, "-m", "archsweep.cli", "resume", str(sweep_dir), "--num-cpus", "2"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _finished(sweep_dir)
    assert len(rows) == 2 and {r.status for r in rows.values()} == {"TERMINATED"}
    assert rows[first_id].updated == first.updated  # not run (or rewritten) again
    assert "valid_unique" in resumed.stdout

    runs = _runs_by_id(sweep_dir)
    assert set(runs) == set(rows)
    assert len(runs[first_id]) == 1 and runs[first_id][0]["history"] == before[first_id][0]["history"]
    (second_id,) = set(rows) - {first_id}
    parts = runs[second_id]
    assert len(parts) == 2  # the run written before the kill, kept, and its continuation under the same id
    steps = _steps(parts)
    assert steps == sorted(set(steps)) and _steps(parts[:1])  # monotonic, none twice, the first part not empty
    assert parts[1]["summary"]["valid_unique"] == {"max": pytest.approx(rows[second_id].metrics["valid_unique"])}
    measured("the sweep's driver and its local Ray SIGKILLed, then `archsweep resume`", "2", str(len(rows)), "0",
             f"the finished trial not rerun; the other's W&B steps {_steps(parts[:1])} then {_steps(parts[1:])}, "
             "one run id")


def test_an_optuna_sweep_resumes_after_its_driver_is_killed_with_the_searcher_it_had(data_dir, tmp_path,
                                                                                   wandb_offline, measured):
    """`sweeps/optuna-quick.yaml` made tiny, 3 trials one at a time: the driver is SIGKILLed once the first trial
    has finished and the second is training; `archsweep resume` restores Tune's Optuna searcher from the sweep's
    state and ends with 3 trials, the first not rerun and every trial a full configuration with its own sample."""
    from archsweep.sweep.run import EXPERIMENT

    sweep_dir = tmp_path / "sweeps" / "optuna-quick"
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "archsweep.cli", "sweep", "sweeps/optuna-quick.yaml", "--num-cpus", "2",
               f"storage={tmp_path / 'sweeps'}", "tune.num_samples=3", "tune.max_concurrent_trials=1",
               "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2", "train.epochs=1",
               "lm.epochs=3", "sample.samples=100", "tracking.project=archsweep-test"]
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=root)
    assert check.returncode == 0 and "3 trial(s), optuna search" in check.stdout, check.stderr[-2000:]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=root)

    def ready() -> bool:
        done = [r for r in _finished(sweep_dir).values() if r.status == "TERMINATED"] if sweep_dir.is_dir() else []
        running = [t for t in (sweep_dir / EXPERIMENT).glob("trial_*") if not (t / "metrics.json").exists()]
        return len(done) == 1 and bool(running)

    wait_for(ready, 600, "a finished trial and another one started", alive=lambda: driver.poll() is None)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    (first_id, first), = [(i, r) for i, r in _finished(sweep_dir).items() if r.status == "TERMINATED"]
    assert list((sweep_dir / EXPERIMENT).glob("searcher-state-*.pkl"))  # what the resumed driver restores

    resumed = subprocess.run([sys.executable, "-m", "archsweep.cli", "resume", str(sweep_dir), "--num-cpus", "2"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _finished(sweep_dir)
    assert len(rows) == 3 and {r.status for r in rows.values()} == {"TERMINATED"}
    assert rows[first_id].updated == first.updated  # not run again
    samples = {(r.config["vqvae"]["codebook_size"], r.config["vqvae"]["seq_len"], r.config["lm"]["name"],
                r.config["lm"]["lr"]) for r in rows.values()}
    assert len(samples) == 3 and all(1e-4 <= lr <= 3e-3 for *_, lr in samples)
    assert {r.config["lm"]["epochs"] for r in rows.values()} == {3}  # the base configuration around each sample
    # every trial has its W&B run (the killed driver's unsaved trial keeps its own, unfinished one: it crashed)
    runs = _runs_by_id(sweep_dir)
    assert set(rows) <= set(runs) and all("lr=" in runs[t][-1]["name"] for t in rows)
    measured("an Optuna (TPE) sweep's driver and its local Ray SIGKILLed, then `archsweep resume`", "3",
             str(len(rows)), "0", "the searcher restored from its saved state; the finished trial not rerun")


def test_a_lost_worker_node_reschedules_its_trial(data_dir, tmp_path, wandb_offline, measured):
    """Two 1-CPU nodes, a 1-worker trial on each; the worker node is removed once the LM stage running on it has
    a checkpoint: that stage goes on from its checkpoint on the head node and the sweep finishes."""
    import json

    import ray
    from ray.cluster_utils import Cluster

    from archsweep.runtime import worker_env
    from archsweep.sweep.run import run_sweep, sweep_dir_of

    epochs = 10  # Ray Train records a checkpoint some time after the epoch: a long window to catch one early
    _, sweep = tiny_sweep(tmp_path, "tracking.wandb=false", f"lm.epochs={epochs}", "tune.max_failures=2")
    sweep_dir = sweep_dir_of(sweep)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    removed, stop = [], threading.Event()

    def lm_on_worker_node():
        for run_dir in sweep_dir.glob("trials/*/lm/ray/lm"):
            latest = latest_checkpoint(run_dir) or {}
            if latest.get("node") == worker.node_id and latest["epoch"] < epochs - 2:
                return run_dir.parents[2].name
        return None

    def remove_when_busy():
        try:
            while not stop.is_set():
                if trial := lm_on_worker_node():
                    cluster.remove_node(worker, allow_graceful=False)
                    removed.append(trial)
                    return
                time.sleep(0.1)
        except Exception as exc:  # shown by the assertion below
            removed.append(exc)

    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()}, logging_level="WARNING",
                 log_to_driver=False)
        head = ray.get_runtime_context().get_node_id()
        threading.Thread(target=remove_when_busy, daemon=True).start()
        grid = run_sweep(sweep)
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()
    assert removed and isinstance(removed[0], str), f"the worker node was not removed mid-LM: {removed}"
    assert not grid.errors
    rows = _finished(sweep_dir)
    assert len(rows) == 2 and {r.status for r in rows.values()} == {"TERMINATED"}
    assert all(0 <= r.metrics["validity"] <= 1 for r in rows.values())
    (moved,) = [r for r in rows.values() if Path(r.paths["trial_dir"]).name == removed[0]]
    lm = json.loads((Path(moved.paths["lm_dir"]) / "metrics.json").read_text())["training"]
    assert moved.paths["lm_node"] == head and lm["epoch"] == epochs - 1 and lm["start_epoch"] >= 1
    measured("the worker node of a 2-node `Cluster` removed mid-LM", "2", str(len(rows)), "0",
             f"the LM stage went on on the head node from epoch {lm['start_epoch']} of {epochs}")
