"""The embedded local Ray listens on loopback only: read from the OS's own table of listening sockets while a
command runs on it, for every process it started (GCS, raylet, agents, Ray Train workers and their torch process
group, trials training in their own process, DeepSpeed, search actors, W&B)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.helpers import ARCHSWEEP

pytestmark = pytest.mark.ray

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
SEARCH = Path(__file__).resolve().parent.parent / "sweeps" / "search-quick.yaml"
SWEEP = """
name: loopback
space: nasbench201
vqvae: {hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}
train: {epochs: 1, batch_size: 512}
lm: {name: gpt2-tiny, epochs: 1, batch_size: 256, warmup_steps: 5, zero_stage: 2}
sample: {samples: 100}
sweep:
  lm.num_workers: {grid: [1, 2]}
tracking: {wandb: true, mode: offline, project: archsweep-test}
"""


def listening(root: int) -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every listening TCP socket of `root` and its descendants."""
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for process in tree:
        try:
            for c in process.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out[(c.laddr.ip, c.laddr.port)] = process.name()
        except psutil.Error:  # it ended while being read
            pass
    return out


def watch(*args: str) -> dict[tuple[str, int], str]:
    """Run the archsweep command to its end, reading its processes' listening sockets all along."""
    run = subprocess.Popen([ARCHSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[tuple[str, int], str] = {}
    try:
        while run.poll() is None:
            seen |= listening(run.pid)
            try:
                run.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        output = run.stdout.read()
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    return seen


def assert_loopback_only(seen: dict[tuple[str, int], str]) -> None:
    beyond = {f"{ip}:{port} ({name})" for (ip, port), name in seen.items() if ip not in LOOPBACK}
    assert not beyond, f"listening beyond loopback: {sorted(beyond)}"


def test_nothing_the_embedded_ray_opens_for_a_search_listens_beyond_loopback(data_dir, tmp_path, wandb_offline):
    seen = watch("search", str(SEARCH), "searches.seeds=2", f"storage={tmp_path}", "--num-cpus", "2")
    assert len(seen) >= 5 and {"gcs_server", "raylet"} <= set(seen.values()), seen  # Ray's own servers were seen
    assert_loopback_only(seen)


def test_nothing_a_sweep_trains_with_listens_beyond_loopback(data_dir, tmp_path, wandb_offline):
    """Two LM workers: rank 0 serves the process group's store, and gloo connects the ranks; one LM worker: the
    stage trains in the trial's own process, in a process group of one."""
    sweep = tmp_path / "loopback.yaml"
    sweep.write_text(SWEEP)
    seen = watch("sweep", str(sweep), f"storage={tmp_path}", "--num-cpus", "2")
    assert len(seen) >= 7 and {"gcs_server", "raylet"} <= set(seen.values()), seen
    trainers = {name for name in seen.values() if name.startswith("ray::") and "Train" in name}
    assert trainers, f"no Ray Train worker was seen listening (its process group's store): {seen}"
    assert_loopback_only(seen)
    where = {json.loads(m.read_text())["lm"]["training"]["in_process"]
             for m in (tmp_path / "loopback" / "trials").glob("*/metrics.json")}
    assert where == {True, False}  # one trial trained its LM in its own process, the other on Ray Train workers


def test_the_interface_of_an_address_is_found_from_the_machines_own_table():
    from archsweep.train.launch import interface_of

    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.77") is None  # TEST-NET-3: on no interface here
