"""`archsweep submit` against a real Ray cluster started with `ray start` (a head and a worker node on this
machine, each with its own temp dir and ports, stopped by PID), then `status`/`logs` and the sweep's results."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from archsweep.cli import cli

pytestmark = pytest.mark.ray

SWEEP = """
name: submitted
space: nasbench201
vqvae: {hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}
train: {epochs: 1, batch_size: 512}
lm: {epochs: 1, batch_size: 256, warmup_steps: 5}
sample: {samples: 100}
sweep:
  lm.name: {grid: [gpt2-tiny, llama-tiny]}
tracking: {wandb: false}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(args: list[str], temp_dir: Path, env: dict) -> subprocess.Popen:
    """`ray start --block`: the process stays in the foreground and stops the node's processes when signalled."""
    ray = Path(sys.executable).with_name("ray")
    log = open(f"{temp_dir}.log", "w")
    return subprocess.Popen([str(ray), "start", "--block", f"--temp-dir={temp_dir}", "--num-cpus=1",
                             f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                             f"--runtime-env-agent-port={free_port()}", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture
def ray_cluster(data_dir):
    """A head and a worker node (1 CPU each) from `ray start` with token auth, the job server on 127.0.0.1:
    (address, token). Their temp dirs are short paths of their own (Ray's socket paths must fit in 107 bytes)."""
    import shutil
    import tempfile

    import secrets

    root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    gcs, dashboard = free_port(), free_port()
    token = secrets.token_hex(32)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    nodes = [ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                        f"--ray-client-server-port={free_port()}"], root / "head", env)]
    address = f"http://127.0.0.1:{dashboard}"
    try:
        from ray.job_submission import JobSubmissionClient

        try:
            wait_for(lambda: JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
                     is not None, 120, "the head's job server")
        except TimeoutError:
            raise TimeoutError(Path(f"{root / 'head'}.log").read_text()[-3000:]) from None
        nodes.append(ray_start([f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1"],
                               root / "worker", env))
        yield address, token
    finally:  # `ray start --block` stops its node's processes on SIGTERM; whatever is left goes with its group
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def test_submit_runs_the_sweep_as_a_ray_job_with_token_auth(ray_cluster, data_dir, tmp_path, monkeypatch):
    """The token comes from the environment (RAY_AUTH_TOKEN) and appears in no output, log or file."""
    from archsweep.tracking.store import ResultStore

    address, token = ray_cluster
    sweep_file = tmp_path / "submitted.yaml"
    sweep_file.write_text(SWEEP)
    storage = tmp_path / "sweeps"
    runner = CliRunner()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)  # the wrong token: refused with the fix
    refused = runner.invoke(cli, ["submit", str(sweep_file), "--address", address, "-o", f"storage={storage}"])
    assert refused.exit_code == 2 and "RAY_AUTH_TOKEN" in refused.stderr, refused.output
    assert "0" * 64 not in refused.output
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    result = runner.invoke(cli, ["submit", str(sweep_file), "--address", address, "-o", f"storage={storage}",
                                 "--cluster-data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[0]

    def finished():
        status = runner.invoke(cli, ["status", job_id, "--address", address]).stdout.strip()
        return status if status in ("SUCCEEDED", "FAILED", "STOPPED") else None

    status = wait_for(finished, 600, f"job {job_id}")
    logs = runner.invoke(cli, ["logs", job_id, "--address", address]).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    assert "sweep 'submitted': 2 trial(s)" in logs

    rows = ResultStore(storage / "submitted").rows()
    assert len(rows) == 2 and {r.status for r in rows} == {"TERMINATED"}
    assert {r.config["lm"]["name"] for r in rows} == {"gpt2-tiny", "llama-tiny"}
    assert all(0 <= r.metrics["validity"] <= 1 for r in rows)
    assert token not in logs + result.output
    assert not [p for p in storage.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]


def test_submit_checks_the_sweep_before_contacting_the_cluster(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {lm.name: {grid: [gpt5]}}\n")
    result = CliRunner().invoke(cli, ["submit", str(bad), "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "unknown language model 'gpt5'" in result.output
