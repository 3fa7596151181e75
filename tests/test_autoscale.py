"""Sweeps and searches on a real autoscaling cluster: cluster/local.yaml started by `archsweep cluster start`'s
code, whose head holds no CPU and whose worker types start at 0 workers. Ray's own autoscaler (the fake_multinode
provider) starts real worker nodes on this machine as trials wait for them and stops them when idle; nothing is
mocked. The commands run as a user types them, in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from archsweep.tracking.store import ResultStore
from tests.helpers import ARCHSWEEP, archsweep, free_port, latest_checkpoint, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.reliability]

CLUSTER = Path(__file__).resolve().parent.parent / "cluster" / "local.yaml"
HEAD = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # the fake provider's id for the head node

TINY = """
name: {name}
space: nasbench201
vqvae: {{hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}}
train: {{epochs: 1, batch_size: 512, checkpoint_interval_s: 0}}
lm: {{epochs: {epochs}, batch_size: 256, warmup_steps: 5, checkpoint_interval_s: 0}}
sample: {{samples: 100}}
sweep:
  lm.name: {{grid: [{lms}]}}
tracking: {{wandb: false}}
storage: {storage}
"""



@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The local autoscaling cluster with a short idle timeout (workers leave 6 s after their last task)."""
    from archsweep.sweep.cluster import start_local_cluster

    raw = yaml.safe_load(CLUSTER.read_text())
    raw["idle_timeout_minutes"] = 0.1
    path = tmp_path_factory.mktemp("cluster") / "local.yaml"
    path.write_text(yaml.safe_dump(raw))
    local = start_local_cluster(path, free_port(), free_port(), tempfile.mkdtemp(prefix="as", dir="/tmp"))
    try:
        yield local
    finally:
        local.stop()


def nodes(address: str) -> dict[str, str]:
    """Node id -> ALIVE or DEAD, from the cluster's GCS."""
    from ray._raylet import GcsClient

    info = GcsClient(address=address).get_all_node_info(timeout=10)
    return {node_id.hex(): ("ALIVE" if n.state == 0 else "DEAD") for node_id, n in info.items()}


def alive_workers(address: str) -> set[str]:
    return {n for n, state in nodes(address).items() if state == "ALIVE" and n != HEAD}


def sweep_file(tmp_path: Path, name: str, lms: str = "gpt2-tiny, llama-tiny", epochs: int = 1) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, lms=lms, epochs=epochs, storage=tmp_path / "sweeps"))
    return path


def rows(sweep_dir: Path):
    return ResultStore(sweep_dir).rows()


def test_a_sweep_given_only_ray_address_scales_a_workerless_cluster_up_runs_every_stage_there_and_it_scales_down(
        cluster, data_dir, tmp_path, measured):
    assert not alive_workers(cluster.address)
    start = time.monotonic()
    done = archsweep("sweep", str(sweep_file(tmp_path, "up")), env=cluster.env, timeout=600)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "can scale to" in done.stdout and "up to 2 x cpu_worker" in done.stdout
    assert "waiting for nodes" in done.stderr  # the progress said what the trials were waiting for
    finished = rows(tmp_path / "sweeps" / "up")
    assert len(finished) == 2 and {r.status for r in finished} == {"TERMINATED"}
    ran_on = {r.paths["lm_node"] for r in finished} | {r.paths["vqvae_node"] for r in finished}
    known = nodes(cluster.address)
    assert HEAD not in ran_on and ran_on <= set(known), ran_on  # every stage on an autoscaled worker node
    gone = wait_for(lambda: not alive_workers(cluster.address), 120, "the idle workers to be removed")
    measured("2-trial sweep on a cluster with 0 workers, RAY_ADDRESS only", "autoscaled workers",
             f"{len(ran_on)} worker node(s) used", f"{took:.0f} s", f"workers removed when idle: {gone}")


def _pids_of_node(node_id: str) -> list[int]:
    """The processes of a fake node: its raylet and everything it started carry the node's id in their env."""
    import psutil

    pids = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id:
                pids.append(process.pid)
        except psutil.Error:
            pass
    return pids



def test_a_worker_node_lost_mid_trial_is_replaced_and_the_trial_resumes_from_its_checkpoint(cluster, data_dir,
                                                                                              tmp_path, measured):
    """The machine under the LM stage vanishes (every process of its node SIGKILLed once the stage has a
    checkpoint with epochs left): the autoscaler terminates it through the provider and starts another, Ray Train
    restarts the stage there from the checkpoint, and the sweep (run with --address) finishes."""
    import subprocess

    epochs = 10
    path = sweep_file(tmp_path, "lost", lms="gpt2-tiny", epochs=epochs)
    sweep_dir = tmp_path / "sweeps" / "lost"
    run = subprocess.Popen([ARCHSWEEP, "sweep", str(path), "--address", cluster.address, "tune.max_failures=2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, **{k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"}})
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(run.stdout), daemon=True)
    reader.start()

    def lm_checkpoint_on_a_worker():
        for run_dir in sweep_dir.glob("trials/*/lm/ray/lm"):
            latest = latest_checkpoint(run_dir) or {}
            if latest.get("node") not in (None, HEAD) and latest["epoch"] < epochs - 3:
                return latest["node"]
        return None

    try:
        victim = wait_for(lm_checkpoint_on_a_worker, 300, "an LM checkpoint on a worker node",
                          alive=lambda: run.poll() is None)
        killed = _pids_of_node(victim)
        assert killed, f"no process of node {victim} found"
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert run.wait(600) == 0, "".join(output)[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
    reader.join(10)
    (row,) = rows(sweep_dir)
    assert row.status == "TERMINATED"
    lm = json.loads((Path(row.paths["lm_dir"]) / "metrics.json").read_text())["training"]
    assert lm["epoch"] == epochs - 1 and lm["start_epoch"] >= 1  # resumed, not restarted
    assert row.paths["lm_node"] not in (victim, HEAD)  # on the replacement worker node
    assert nodes(cluster.address).get(victim) == "DEAD"
    measured("a worker node killed under the LM stage", "replaced by the autoscaler", "1 trial finished",
             f"LM resumed at epoch {lm['start_epoch']} of {epochs}", f"on node ...{row.paths['lm_node'][-5:]}")


def test_a_trial_no_node_type_can_ever_hold_is_refused_naming_its_needs_and_the_node_types(cluster, data_dir,
                                                                                          tmp_path):
    refused = archsweep("sweep", str(sweep_file(tmp_path, "never")), "--address", cluster.address,
                        "lm.num_workers=4", env={k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "trial 1 of 2 (lm.name=gpt2-tiny) of sweep 'never' needs 4 CPUs and 0 GPUs at once" in refused.stderr
    assert "up to 2 x cpu_worker (1 CPU each); up to 1 x gpu_worker (1 CPU, 1 GPU each)" in refused.stderr
    assert not (tmp_path / "sweeps" / "never").exists()  # refused before anything was written
