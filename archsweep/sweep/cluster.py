"""The local autoscaling cluster (a `fake_multinode` YAML started on this machine), and Ray Jobs: submitting a
sweep or a search file, listing, following and stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from archsweep import version
from archsweep.capacity import ClusterConfigError, validate_cluster_yaml
from archsweep.runtime import keep_loopback, refresh_ray_auth
from archsweep.search.spec import SECTIONS as SEARCH_SECTIONS
from archsweep.search.spec import load_search_file
from archsweep.specfile import read_spec_file
from archsweep.sweep.spec import SECTIONS, load_sweep
from archsweep.tracking.wandb import PASSED_ON  # the W&B settings a job is given; never the API key

# --- the local autoscaling cluster ------------------------------------------------------------------------------


@dataclass
class LocalCluster:
    process: subprocess.Popen  # `ray start --head --block`, leader of a process group that holds every node
    address: str  # the GCS, what `--address` and RAY_ADDRESS take
    jobs: str  # the job server, what `archsweep submit` and `archsweep job` take
    temp_dir: Path
    env: dict[str, str]  # what a client needs in its environment (RAY_ADDRESS, RAY_AUTH_MODE)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the head and every worker node it started: `ray start --block` stops the head's processes on
        SIGTERM; the autoscaler's worker nodes are in its process group and go with it."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5  # the worker nodes' processes, which `ray start` does not wait for
        while time.monotonic() < deadline and _group_alive(self.process.pid):
            time.sleep(0.2)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_local_cluster(path: str | os.PathLike, port: int = 6390, dashboard_port: int = 8265,
                        temp_dir: str | os.PathLike | None = None, log=None) -> LocalCluster:
    """Start the head of a `fake_multinode` cluster YAML (cluster/local.yaml) on this machine: Ray's own
    autoscaler then starts and stops real worker nodes here as the cluster's load asks, as it would start cloud
    machines. It listens on 127.0.0.1 only, and its workers join the head at `port`. Returns once the job server
    answers; `LocalCluster.stop()` stops it all."""
    import shutil
    import tempfile

    import yaml

    path = Path(path)
    config = validate_cluster_yaml(path)
    if config["provider"]["type"] != "fake_multinode":
        raise ClusterConfigError(f"{path} is a {config['provider']['type']!r} cluster: start it with `ray up {path}`; "
                                 "`archsweep cluster start` starts the local rehearsal cluster (cluster/local.yaml)")
    head = config["available_node_types"][config["head_node_type"]].get("resources", {})
    temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="archsweep-cluster-", dir="/tmp"))  # Ray's socket paths must
    temp_dir.mkdir(parents=True, exist_ok=True)                                             # stay under 107 bytes
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    autoscaling = temp_dir / "autoscaling.yaml"
    autoscaling.write_text(yaml.safe_dump(config, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    ray = shutil.which("ray", path=bin_dir) or "ray"
    env = dict(os.environ, RAY_FAKE_CLUSTER="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))  # jobs find this `archsweep`
    env.setdefault("RAY_AUTH_MODE", "disabled")  # it listens on loopback only
    env.pop("RAY_ADDRESS", None)
    log = log or open(temp_dir / "head.log", "w")
    process = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp_dir / 'ray'}",
         f"--num-cpus={int(head.get('CPU', 0))}", f"--num-gpus={int(head.get('GPU', 0))}",
         f"--autoscaling-config={autoscaling}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = LocalCluster(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", temp_dir,
                           {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": env["RAY_AUTH_MODE"],
                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise ClusterConfigError(f"the head of {path} did not start (exit {process.returncode}); its log: "
                                     f"{temp_dir / 'head.log'} (is port {port} or {dashboard_port} taken?)")
        try:
            urllib.request.urlopen(f"{cluster.jobs}/api/version", timeout=2).read()
            return cluster
        except urllib.error.HTTPError:  # it answers (to ask for the token it was started with)
            return cluster
        except OSError:
            if time.monotonic() > deadline:
                cluster.stop()
                raise ClusterConfigError(f"the head of {path} started but its job server did not answer at "
                                         f"{cluster.jobs} within 120 s; its log: {temp_dir / 'head.log'}") from None
            time.sleep(0.5)


# --- Ray Jobs --------------------------------------------------------------------------------------------------


def _scrub(text: str) -> str:
    """`text` with the Ray token, if one is set, blanked out (errors may echo request headers)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    return text.replace(token, "***") if token else text


def _job_server_error(address: str, exc: Exception) -> ClusterConfigError:
    message = _scrub(str(exc))
    if any(word in message for word in ("401", "403", "nauthorized", "nauthenticated", "orbidden", "token")):
        return ClusterConfigError(
            f"the Ray job server at {address} refused this client's token ({message.splitlines()[0][:200]}). Set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, e.g. from "
            "`ray get-auth-token` on the head; archsweep never stores it")
    return ClusterConfigError(f"cannot reach the Ray job server at {address}: {message}. Is the cluster up, and "
                              "its dashboard forwarded (`ray dashboard cluster/<file>.yaml`)?")


def _client(address: str):
    """A Ray Jobs client for the job server at `address` (http://host:8265), or for the cluster whose head is at
    `address` (host:6379: Ray looks up its job server there). With RAY_AUTH_MODE=token, Ray adds the token
    (RAY_AUTH_TOKEN or its token file) to each request itself, so it never passes through archsweep's arguments,
    configs or logs."""
    from ray.job_submission import JobSubmissionClient

    if "://" not in address:
        keep_loopback(address)
    refresh_ray_auth()  # the token set in the environment now, not the one Ray saw when it was imported
    # Ray's client takes RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, over its argument: while it is made, they say
    # `address` (which the user's --address or RAY_ADDRESS gave)
    saved = {k: os.environ.pop(k, None) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")}
    os.environ["RAY_API_SERVER_ADDRESS" if "://" in address else "RAY_ADDRESS"] = address
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        raise _job_server_error(address, exc) from None
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def cluster_path(path: str) -> tuple[str, bool]:
    """(the path as the cluster will see it, whether it was relative): a submitted sweep runs in the job's
    temporary working directory on the head node, so a relative path is taken from the home directory of the
    cluster's user instead (`~` is expanded there, by the job)."""
    if path.startswith(("/", "~")):
        return path, False
    return "~/" + path.removeprefix("./"), True


def check_archsweep_on_cluster(client, address: str, timeout: float = 120.0) -> str:
    """Run `archsweep --version` as a tiny Ray Job, as the sweep's job will run it; its version line, or a
    ClusterConfigError with the fix when the cluster cannot find archsweep (Ray started from outside the
    environment archsweep is installed in)."""
    import time

    job = client.submit_job(entrypoint="archsweep --version", entrypoint_num_cpus=0,
                            metadata={"archsweep_check": "version"})
    deadline = time.monotonic() + timeout
    while (status := str(client.get_job_status(job))) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise ClusterConfigError(f"the cluster at {address} did not run a 1-second check job within "
                                     f"{timeout:.0f} s (status {status}); is it busy, or its head overloaded?")
        time.sleep(0.5)
    logs = _scrub(client.get_job_logs(job))
    try:
        client.delete_job(job)
    except Exception:  # only tidiness: the check job stays in the job list
        pass
    if status == "SUCCEEDED":
        return logs.strip().splitlines()[-1] if logs.strip() else ""
    if "not found" in logs or "No such file" in logs:
        raise ClusterConfigError(
            f"the cluster at {address} cannot find the `archsweep` command (its job said: "
            f"{logs.strip().splitlines()[-1][:200] if logs.strip() else 'nothing'}). Start Ray on the cluster from "
            "the environment where archsweep is installed (activate its venv, or put its bin/ directory on PATH, "
            "before `ray start`), or install archsweep on every node (the cluster YAMLs' setup_commands do)")
    raise ClusterConfigError(f"`archsweep --version` failed on the cluster at {address} ({status}): "
                             f"{logs.strip()[-500:] or 'no output'}")


def file_kind(path: str | os.PathLike) -> str:
    """"search" for a search file (it has a `searches` section), else "sweep"."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return "sweep"  # the sweep reader says what is wrong with it
    return "search" if isinstance(raw, dict) and "searches" in raw else "sweep"


def submit_file(spec_file: str | os.PathLike, address: str, overrides: tuple[str, ...] = (),
                data_dir: str | None = None, notes=None) -> str:
    """Check a sweep or search file here, check that the cluster can run archsweep, then submit `archsweep sweep`
    (or `archsweep search`) as a Ray Job running it on the cluster; returns the job id. The file travels as the
    job's working directory; the cluster must have archsweep installed (the cluster YAMLs do) and the data (or
    `data_dir`, a path on the cluster). Paths are the cluster's: a relative `storage` is taken from the cluster
    user's home directory (`cluster_path`). `notes(line)` is told where it will read and write, as the cluster
    sees it, and which archsweep the cluster runs. The job's metadata records this archsweep's version."""
    import shlex
    import shutil
    import tempfile

    kind = file_kind(spec_file)
    if kind == "search":  # a prior named in it is the cluster's path, checked there
        spec = load_search_file(spec_file, overrides, check_prior=False)
        sections_of, default_storage = SEARCH_SECTIONS, "runs/searches"
    else:
        spec = load_sweep(spec_file, overrides)
        sections_of, default_storage = SECTIONS, "runs/sweeps"
    if data_dir and not data_dir.startswith(("/", "~")):
        raise ClusterConfigError(f"--cluster-data-dir {data_dir!r} is relative; give the data directory as the "
                                 "cluster's nodes see it: an absolute path or one under ~ (their user's home)")
    settings = ("searches", "tracking") if kind == "search" else ("tune", "tracking")
    _, sections, _, _ = read_spec_file(Path(spec_file), overrides, sections_of, settings, kind)
    storage, relative = cluster_path(str(sections.get("storage") or default_storage))
    say = notes or (lambda line: None)
    say(f"on the cluster: results in {storage.rstrip('/')}/{spec.name}" + (
        " (a relative storage is taken from the home directory of the cluster's user)" if relative else ""))
    say(f"on the cluster: benchmark data from {data_dir}" if data_dir else
        "on the cluster: benchmark data from the nodes' own data directory (their ARCHSWEEP_DATA_DIR, or the "
        "per-user data dir); --cluster-data-dir sets it")
    client = _client(address)
    try:
        theirs = check_archsweep_on_cluster(client, address)
    except (ConnectionError, RuntimeError) as exc:
        raise _job_server_error(address, exc) from None
    say(f"on the cluster: {theirs}")
    if version() not in theirs:
        say(f"note: the cluster runs another archsweep than this one ({version()}): the job runs the cluster's code")

    env = {k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}
    if data_dir:
        env["ARCHSWEEP_DATA_DIR"] = data_dir
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(spec_file, Path(tmp) / f"{kind}.yaml")
        command = ["archsweep", kind, "--address", "auto", *overrides, f"storage={storage}"]
        # The job runs from the home directory, its file read from the job's working directory at once: Ray may
        # garbage-collect that directory while the job runs (nodes sharing a temp dir, as the local cluster's do)
        entrypoint = f'f="$PWD/{kind}.yaml"; cd ~ && ' + " ".join(shlex.quote(c) for c in command[:2]) + ' "$f" ' \
            + " ".join(shlex.quote(c) for c in command[2:])
        try:
            return client.submit_job(entrypoint=entrypoint,
                                     runtime_env={"working_dir": tmp, "env_vars": env},
                                     metadata={f"archsweep_{kind}": spec.name, "archsweep_kind": kind,
                                               "archsweep_version": version(), "archsweep_cluster": theirs})
        except (ConnectionError, RuntimeError) as exc:
            raise _job_server_error(address, exc) from None


def list_jobs(address: str) -> list[dict]:
    """The cluster's archsweep jobs, newest first: id, kind, name, status, submitted by which archsweep, start."""
    out = []
    for job in _client(address).list_jobs():
        meta = job.metadata or {}
        if "archsweep_kind" not in meta and "archsweep_sweep" not in meta:
            continue  # the one-second version checks and other users' jobs
        kind = meta.get("archsweep_kind", "sweep")
        out.append({"id": job.submission_id, "kind": kind, "name": meta.get(f"archsweep_{kind}", ""),
                    "status": str(job.status), "version": meta.get("archsweep_version", ""),
                    "start": (job.start_time or 0) / 1000, "message": _scrub(job.message or "")})
    return sorted(out, key=lambda j: j["start"], reverse=True)


def stop_job(address: str, job_id: str) -> bool:
    """Ask Ray to stop the job (its driver gets SIGTERM, then SIGKILL); False if it had already ended."""
    return bool(_client(address).stop_job(job_id))


def job_status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id))


def job_outcome(address: str, job_id: str) -> tuple[str, str]:
    """(status, Ray's message about it) of a job, e.g. ("FAILED", "Job entrypoint command failed with exit code 1")."""
    info = _client(address).get_job_info(job_id)
    return str(info.status), _scrub(info.message or "")


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def follow_job_logs(address: str, job_id: str, write) -> None:
    """Pass the job's log to `write` chunk by chunk as it is written, until the job ends."""
    import asyncio

    async def follow():
        async for chunk in _client(address).tail_job_logs(job_id):
            write(chunk)

    asyncio.run(follow())
