"""`archsweep submit` against a real Ray cluster started with `ray start` (a head and a worker node on this
machine, each with its own temp dir and ports, stopped by PID), then `status`/`logs` and the sweep's results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archsweep.cli import cli
from tests.helpers import free_port, wait_for

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



def ray_start(args: list[str], temp_dir: Path, env: dict) -> subprocess.Popen:
    """`ray start --block`: the process stays in the foreground and stops the node's processes when signalled."""
    ray = Path(sys.executable).with_name("ray")
    log = open(f"{temp_dir}.log", "w")
    return subprocess.Popen([str(ray), "start", "--block", f"--temp-dir={temp_dir}", "--num-cpus=1",
                             f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                             f"--runtime-env-agent-port={free_port()}", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_cluster(token: str, path: str, workers: int):
    """A head and `workers` worker nodes (1 CPU each) from `ray start` with token auth, the job server on
    127.0.0.1, started with `path` as PATH (the venv's `ray` is always called by its full path): yields the job
    server's address. Their temp dirs are short paths of their own (Ray's socket paths must fit in 107 bytes)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    gcs, dashboard = free_port(), free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=path)
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
        for _ in range(workers):
            nodes.append(ray_start([f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1"],
                                   root / f"worker{len(nodes)}", env))
        yield address
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


VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture
def ray_cluster(data_dir):
    """A head and a worker node started from the venv's environment (its bin/ on PATH): (address, token)."""
    import secrets

    token = secrets.token_hex(32)
    yield from ((address, token) for address in start_cluster(token, f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", 1))


@pytest.fixture
def cluster_without_archsweep():
    """A head started as `.venv/bin/ray start` from a shell that never activated the venv: its jobs' shell cannot
    find `archsweep`. (address, token)."""
    import secrets

    token = secrets.token_hex(32)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() !=
                           Path(VENV_BIN).resolve())
    yield from ((address, token) for address in start_cluster(token, path, 0))


@pytest.mark.e2e  # a whole sweep: minutes; the long suite
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
    refused = runner.invoke(cli, ["submit", str(sweep_file), "--address", address, f"storage={storage}"])
    assert refused.exit_code == 2 and "RAY_AUTH_TOKEN" in refused.stderr, refused.output
    assert "0" * 64 not in refused.output
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    result = runner.invoke(cli, ["submit", str(sweep_file), "--address", address, f"storage={storage}",
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
    assert "on the cluster: results in " + str(storage / "submitted") in result.stderr

    # a job that fails (here: no data where the cluster was told to look) makes `submit --follow` exit 1
    failed = runner.invoke(cli, ["submit", str(sweep_file), "--address", address, f"storage={tmp_path / 'other'}",
                                 "--cluster-data-dir", str(tmp_path / "nothing"), "--follow"])
    assert failed.exit_code == 1, failed.output
    assert "benchmark data file missing" in failed.stdout and "FAILED" in failed.stderr
    assert "Traceback" not in failed.output and not (tmp_path / "other").exists()


def test_submit_to_a_cluster_that_cannot_find_archsweep_says_how_to_start_ray(cluster_without_archsweep, tmp_path,
                                                                             monkeypatch):
    """Checked before the sweep is submitted: one line with the fix, exit status 2, and no sweep job on the cluster."""
    from ray.job_submission import JobSubmissionClient

    address, token = cluster_without_archsweep
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    sweep_file = tmp_path / "submitted.yaml"
    sweep_file.write_text(SWEEP)
    result = CliRunner().invoke(cli, ["submit", str(sweep_file), "--address", address, "--follow"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "cannot find the `archsweep` command" in message
    assert "environment where archsweep is installed" in message and "Traceback" not in result.output
    jobs = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
    assert not [job for job in jobs if (job.metadata or {}).get("archsweep_sweep")]


def test_relative_paths_of_a_submitted_sweep_are_the_cluster_users():
    from archsweep.sweep.cluster import cluster_path

    assert cluster_path("runs/sweeps") == ("~/runs/sweeps", True)
    assert cluster_path("./runs") == ("~/runs", True)
    assert cluster_path("/mnt/shared/sweeps") == ("/mnt/shared/sweeps", False)
    assert cluster_path("~/sweeps") == ("~/sweeps", False)


def test_submit_checks_the_sweep_before_contacting_the_cluster(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {lm.name: {grid: [gpt5]}}\n")
    result = CliRunner().invoke(cli, ["submit", str(bad), "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "unknown language model 'gpt5'" in result.output
