"""`ray up` for real: cluster/onprem.yaml launched from this machine (the user's laptop) over SSH onto test hosts
with their own addresses, sshd, PID, mount and UTS namespaces (cluster/hosts.py), and the user's path walked on it
as cluster/README.md types it: submit, watch the autoscaler join machines and let them go, lose one mid-trial,
`ray rsync-down`, report and sync on the laptop, `ray down`. Needs root (namespaces); skipped with the reason
elsewhere. The tests run in order on one cluster; everything is removed afterwards, also when one fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from archsweep.tracking.store import ResultStore
from tests.helpers import ARCHSWEEP, archsweep, free_port, latest_checkpoint, wait_for

REPO = Path(__file__).resolve().parent.parent
HOSTS = REPO / "cluster" / "hosts.py"
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
HEAD, W1, W2, X1 = (f"10.213.0.{i}" for i in (10, 11, 12, 13))
CPUS = os.cpu_count()  # what each host has: a stage asking for all of them cannot share the head with trials

pytestmark = [
    pytest.mark.ray, pytest.mark.reliability,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test hosts are network, PID and mount namespaces"),
]

SWEEP = """
name: {name}
space: nasbench201
vqvae: {{hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}}
train: {{epochs: 1, batch_size: 512, checkpoint_interval_s: 0, cpus_per_worker: {cpus}}}
lm: {{epochs: {epochs}, batch_size: 256, warmup_steps: 5, checkpoint_interval_s: 0, cpus_per_worker: {cpus}}}
sample: {{samples: 100}}
sweep:
  lm.name: {{grid: [{lms}]}}
storage: /mnt/shared/sweeps
"""


class Rehearsal:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.yaml = state_dir / "onprem.yaml"
        self.shared = state_dir / "shared"  # what the hosts see at /mnt/shared
        # as cluster/README.md has the user type it; RAY_AUTH_TOKEN, which would win over the file, emptied: a local
        # Ray started earlier in this process leaves its own there
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state_dir / "auth_token"),
                    "RAY_AUTH_TOKEN": ""}
        self.jobs = ""
        self.timings: dict[str, float] = {}

    def ray(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def hosts(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(HOSTS), *args, "--dir", str(self.dir)], capture_output=True,
                              text=True, timeout=120)

    def ssh(self, ip: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-i", str(self.dir / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o",
                               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                               f"root@{ip}", command], capture_output=True, text=True, timeout=timeout)

    def nodes(self) -> dict[str, tuple[str, bool]]:
        """Node id -> (address, alive), read from the head's GCS by a client with the cluster's token."""
        code = ("import json; from ray._raylet import GcsClient; "
                f"info = GcsClient(address='{HEAD}:6379').get_all_node_info(timeout=10); "
                "print(json.dumps({k.hex(): [n.node_manager_address, n.state == 0] for k, n in info.items()}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env})
        return {k: tuple(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}

    def alive_workers(self) -> set[str]:
        return {ip for ip, alive in self.nodes().values() if alive and ip != HEAD}

    def local(self, cluster_path: str) -> Path:
        """A path on the cluster's shared storage, as this machine sees it."""
        return self.shared / Path(cluster_path).relative_to("/mnt/shared")


@pytest.fixture(scope="module")
def onprem(data_dir):
    for tool in ("ip", "unshare", "/usr/sbin/sshd", "rsync", "ssh"):
        if not shutil.which(tool):
            message = f"`{tool}` not found: the test hosts need iproute2, openssh-server and rsync (`make test` " \
                      "installs them as root)"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    rehearsal = Rehearsal(Path(tempfile.mkdtemp(prefix="asw-", dir="/tmp")))
    rehearsal.dir.rmdir()  # hosts.py makes it
    dashboard = None
    try:
        start = time.monotonic()
        made = rehearsal.hosts("up", "--idle-minutes", "0.25", "--data-dir", str(data_dir))
        assert made.returncode == 0, made.stdout + made.stderr
        rehearsal.timings["hosts up"] = time.monotonic() - start
        start = time.monotonic()
        up = rehearsal.ray("up", "-y", str(rehearsal.yaml), timeout=600)
        rehearsal.timings["ray up"] = time.monotonic() - start
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        port = free_port()
        dashboard = subprocess.Popen([RAY, "dashboard", "--port", str(port), str(rehearsal.yaml)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **rehearsal.env}, start_new_session=True)
        rehearsal.jobs = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(rehearsal.jobs), 60, "the job server through `ray dashboard`'s tunnel")
        yield rehearsal
    finally:
        if dashboard is not None:
            dashboard.kill()
        if rehearsal.yaml.is_file():
            rehearsal.hosts("back", W1)
            try:
                rehearsal.ray("down", "-y", str(rehearsal.yaml), timeout=180)
            except subprocess.TimeoutExpired:
                pass
        gone = rehearsal.hosts("down")
        assert gone.returncode == 0, gone.stderr
        for leftover in Path("/tmp/ray").glob(f"cluster-archsweep-rehearsal-{rehearsal.dir.name}.*"):
            leftover.unlink(missing_ok=True)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/version", timeout=2)
    except urllib.error.HTTPError:
        return True  # it answers, asking for the token
    except OSError:
        return False
    return True


def test_ray_up_installs_the_checkout_on_the_head_over_ssh_and_its_job_server_wants_the_token(onprem):
    where = onprem.ssh(HEAD, "cd /tmp && ~/venv/bin/python -c 'import archsweep; print(archsweep.__file__)' "
                             "&& hostname && test -f ~/archsweep-data/nasbench201/nasbench201_cifar10.csv; echo $?")
    assert where.stdout.split() == ["/root/archsweep/archsweep/__init__.py", "asw-head", "0"], where.stdout
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{onprem.jobs}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)
    assert onprem.alive_workers() == set()  # nothing waits yet: no worker joined


def test_a_submitted_sweep_scales_out_survives_a_machine_cut_off_mid_trial_and_the_workers_leave_idle(
        onprem, measured):
    """Two trials whose stages each need a whole machine: the autoscaler joins both workers over SSH; the machine
    under one trial's LM stage is cut off the network once the stage has a checkpoint with epochs left; the stage
    goes on elsewhere from that checkpoint and the submitted sweep exits 0. Then the idle workers leave."""
    epochs, name = 16, "walk"  # a tiny LM's epoch takes about a second: enough of them to cut one mid-stage
    spec = onprem.dir / f"{name}.yaml"
    spec.write_text(SWEEP.format(name=name, cpus=CPUS, epochs=epochs, lms="gpt2-tiny, llama-tiny"))
    start = time.monotonic()
    run = subprocess.Popen([ARCHSWEEP, "submit", str(spec), "--address", onprem.jobs, "--follow"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, **onprem.env})
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(run.stdout), daemon=True)
    reader.start()
    sweep_dir = onprem.shared / "sweeps" / name

    def lm_checkpoint_on_a_worker():
        for run_dir in sweep_dir.glob("trials/*/lm/ray/lm"):
            latest = latest_checkpoint(run_dir) or {}
            if latest.get("node") and latest["epoch"] < epochs // 2:
                ip = onprem.nodes()[latest["node"]][0]
                if ip != HEAD:
                    return latest["node"], ip
        return None

    try:
        victim, victim_ip = wait_for(lm_checkpoint_on_a_worker, 420, "an LM checkpoint on a worker host",
                                     alive=lambda: run.poll() is None, interval=0.5)
        cut = onprem.hosts("cut", victim_ip)
        assert cut.returncode == 0, cut.stderr
        assert run.wait(600) == 0, "".join(output)[-5000:]
    finally:
        if run.poll() is None:
            run.kill()
    took = time.monotonic() - start
    reader.join(10)
    text = "".join(output)
    assert "up to 2 x local.cluster.node" in text and "all 2 trials finished" in text, text[-3000:]
    assert "waiting for nodes (1 x local.cluster.node)" in text and "the nodes asked for are up" in text
    rows = ResultStore(sweep_dir).rows()
    assert len(rows) == 2 and {r.status for r in rows} == {"TERMINATED"}
    addresses = {k: ip for k, (ip, _) in onprem.nodes().items()}
    assert victim_ip in (W1, W2)  # the stage had gone to a machine the autoscaler joined over SSH
    (hit,) = [r for r in rows if json.loads(
        (onprem.local(r.paths["lm_dir"]) / "metrics.json").read_text())["training"]["start_epoch"] >= 1]
    lm = json.loads((onprem.local(hit.paths["lm_dir"]) / "metrics.json").read_text())["training"]
    assert lm["epoch"] == epochs - 1 and addresses[hit.paths["lm_node"]] != victim_ip
    assert onprem.nodes()[victim][1] is False
    onprem.timings["sweep (2 trials, a host cut)"] = took
    back = onprem.hosts("back", victim_ip)
    assert back.returncode == 0, back.stderr
    start = time.monotonic()
    wait_for(lambda: not onprem.alive_workers(), 240, "the idle workers to leave", interval=2)
    onprem.timings["idle workers gone"] = time.monotonic() - start
    measured(f"a worker host cut off the network under the LM stage ({victim_ip})", "2", "2", "0",
             f"LM resumed at epoch {lm['start_epoch']} of {epochs} on {addresses[hit.paths['lm_node']]}; "
             f"{took:.0f} s; idle workers left after {onprem.timings['idle workers gone']:.0f} s")


def test_a_submitted_search_file_and_the_job_commands_on_the_launched_cluster(onprem):
    search_file = REPO / "sweeps" / "search-quick.yaml"
    start = time.monotonic()
    search = archsweep("submit", str(search_file), "searches.seeds=1", "searches.strategies={random: {}}",
                       "storage=/mnt/shared/searches", "--address", onprem.jobs, "--follow", env=onprem.env,
                       timeout=400)
    onprem.timings["search file"] = time.monotonic() - start
    assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
    (done,) = ResultStore(onprem.shared / "searches" / "search-quick").rows()
    assert done.status == "TERMINATED" and done.metrics["queries"] == 100
    listed = archsweep("job", "list", "--address", onprem.jobs, env=onprem.env)
    assert listed.returncode == 0 and "walk" in listed.stdout and "search-quick" in listed.stdout, listed.stdout
    assert listed.stdout.count("SUCCEEDED") == 2  # the sweep and the search file (and the version checks: hidden)
    job_id = next(w for line in listed.stdout.splitlines() if "search-quick" in line for w in line.split()
                  if w.startswith("raysubmit_"))
    logs = archsweep("job", "logs", job_id, "--address", onprem.jobs, env=onprem.env)
    assert logs.returncode == 0 and "random" in logs.stdout


def test_results_pulled_with_ray_rsync_down_report_and_sync_on_the_laptop(onprem, tmp_path):
    start = time.monotonic()
    pulled = onprem.ray("rsync-down", str(onprem.yaml), "/mnt/shared/sweeps/walk/", str(tmp_path / "walk") + "/")
    onprem.timings["rsync-down"] = time.monotonic() - start
    assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-3000:]
    report = archsweep("report", str(tmp_path / "walk"))
    assert report.returncode == 0 and "gpt2-tiny" in report.stdout and "llama-tiny" in report.stdout, report.stdout
    synced = archsweep("sync", str(tmp_path / "walk"), "--dry-run")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    said = " ".join(synced.stdout.split())
    assert "dry run: 4 of 4 runs would be uploaded; all" in said, said  # 2 trials, the VQ-VAE stage, the summary
    assert "artifact files found" in said and f"under {tmp_path / 'walk'}" in said, said  # found where they went
    assert synced.stdout.count("│ trial ") == 2, synced.stdout


def test_a_machine_without_the_shared_storage_is_refused_naming_it_and_the_directory(onprem):
    """A machine joined by hand whose NFS mount is missing: the sweep is refused before any trial, naming the
    machine and the directory; nothing is lost (the directory stays as it was)."""
    token = (onprem.dir / "auth_token").read_text()
    joined = onprem.ssh(X1, f"mkdir -p ~/.ray && echo {token} > ~/.ray/auth_token && source ~/venv/bin/activate && "
                            f"RAY_AUTH_MODE=token ray start --address={HEAD}:6379", timeout=120)
    assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-2000:]
    try:
        wait_for(lambda: X1 in onprem.alive_workers(), 60, "the machine joined by hand")
        spec = onprem.dir / "blind.yaml"
        spec.write_text(SWEEP.format(name="blind", cpus=1, epochs=1, lms="gpt2-tiny"))
        refused = archsweep("submit", str(spec), "--address", onprem.jobs, "--follow", env=onprem.env, timeout=300)
        assert refused.returncode == 1, refused.stdout[-3000:]
        assert ("the sweep directory /mnt/shared/sweeps/blind is not shared by every node of the cluster: "
                f"{X1}") in " ".join(refused.stdout.split()), refused.stdout[-3000:]
        assert not (onprem.shared / "sweeps" / "blind" / "results.db").exists()  # refused before any trial
    finally:
        onprem.ssh(X1, "source ~/venv/bin/activate && ray stop", timeout=120)


def test_ray_down_stops_ray_on_every_host(onprem, measured):
    start = time.monotonic()
    down = onprem.ray("down", "-y", str(onprem.yaml), timeout=300)
    onprem.timings["ray down"] = time.monotonic() - start
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    for ip in (HEAD, W1, W2):
        left = onprem.ssh(ip, "pgrep -c raylet || true")
        assert left.stdout.strip() == "0", (ip, left.stdout)
    measured("the whole path: hosts.py up, ray up, submit, cut, search, rsync-down, report, sync, ray down",
             "-", "-", "-", "; ".join(f"{k} {v:.0f} s" for k, v in onprem.timings.items()))
