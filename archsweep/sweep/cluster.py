"""Offline checks of Ray cluster-launcher YAMLs, with Ray's own schema and config preparation (what `ray up`
would reject, found before any machine is started), and Ray Jobs submission of a sweep."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from archsweep.errors import ArchsweepError
from archsweep.runtime import refresh_ray_auth
from archsweep.specfile import read_spec_file
from archsweep.sweep.spec import SECTIONS, load_sweep
from archsweep.tracking.wandb import PASSED_ON  # the W&B settings a job is given; never the API key


class ClusterConfigError(ArchsweepError):
    pass


def validate_cluster_yaml(path: str | os.PathLike) -> dict:
    """The prepared config (defaults merged) if `path` is a valid cluster YAML; otherwise a ClusterConfigError
    that names the file and the offending key."""
    import jsonschema
    import yaml
    from ray.autoscaler import __file__ as autoscaler_init
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    if not path.is_file():
        raise ClusterConfigError(f"cluster file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"{path}: a cluster YAML is a mapping (cluster_name, provider, ...)")
    schema = json.loads((Path(autoscaler_init).parent / "ray-schema.json").read_text())
    try:
        jsonschema.validate(raw, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ClusterConfigError(f"{path}: {where}: {exc.message}") from None
    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except (ValueError, KeyError, jsonschema.ValidationError) as exc:
        message = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
        raise ClusterConfigError(f"{path}: {message}") from None
    return prepared


def cluster_capacity(path: str | os.PathLike) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(total resources, one resource dict per node) of a cluster YAML scaled all the way up: the head node plus
    every node type at its `max_workers` (bounded by the cluster's `max_workers`)."""
    import logging

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # config preparation's notes, not for users
    prepared = validate_cluster_yaml(path)
    types, head = prepared["available_node_types"], prepared["head_node_type"]
    nodes = [dict(types[head].get("resources", {}))]
    room = prepared.get("max_workers", 0)
    for spec in (spec for name, spec in types.items() if name != head):
        count = min(spec.get("max_workers", 0), room)
        room -= count
        nodes += [dict(spec.get("resources", {}))] * count
    if not all("CPU" in node for node in nodes):
        raise ClusterConfigError(f"{path} does not state its nodes' resources (the machines of a `local` provider "
                                 "report theirs when Ray starts on them), so a sweep cannot be checked against it "
                                 "offline; the sweep's driver checks every trial against the running cluster")
    totals: dict[str, float] = {}
    for node in nodes:
        for key, value in node.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals, nodes


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
    """A Ray Jobs client; with RAY_AUTH_MODE=token, Ray adds the token (RAY_AUTH_TOKEN or its token file) to each
    request itself, so it never passes through archsweep's arguments, configs or logs."""
    from ray.job_submission import JobSubmissionClient

    refresh_ray_auth()  # the token set in the environment now, not the one Ray saw when it was imported
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        raise _job_server_error(address, exc) from None


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


def submit_sweep(sweep_file: str | os.PathLike, address: str, overrides: tuple[str, ...] = (),
                 data_dir: str | None = None, notes=None) -> str:
    """Check the sweep here, check that the cluster can run archsweep, then submit `archsweep sweep` as a Ray Job
    running it on the cluster; returns the job id. The sweep file travels as the job's working directory; the
    cluster must have archsweep installed (the cluster YAMLs do) and the data (or `data_dir`, a path on the
    cluster). Paths are the cluster's: a relative `storage` is taken from the cluster user's home directory
    (`cluster_path`). `notes(line)` is told where the sweep will read and write, as the cluster sees it."""
    import shlex
    import shutil
    import tempfile

    sweep = load_sweep(sweep_file, overrides)  # fail here, not on the cluster
    if data_dir and not data_dir.startswith(("/", "~")):
        raise ClusterConfigError(f"--cluster-data-dir {data_dir!r} is relative; give the data directory as the "
                                 "cluster's nodes see it: an absolute path or one under ~ (their user's home)")
    _, sections, _, _ = read_spec_file(Path(sweep_file), overrides, SECTIONS, ("tune", "tracking"), "sweep")
    storage, relative = cluster_path(str(sections.get("storage") or "runs/sweeps"))
    say = notes or (lambda line: None)
    say(f"on the cluster: results in {storage.rstrip('/')}/{sweep.name}" + (
        " (a relative storage is taken from the home directory of the cluster's user)" if relative else ""))
    say(f"on the cluster: benchmark data from {data_dir}" if data_dir else
        "on the cluster: benchmark data from the nodes' own data directory (their ARCHSWEEP_DATA_DIR, or the "
        "per-user data dir); --cluster-data-dir sets it")
    client = _client(address)
    try:
        say(f"on the cluster: {check_archsweep_on_cluster(client, address)}")
    except (ConnectionError, RuntimeError) as exc:
        raise _job_server_error(address, exc) from None

    env = {k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}
    if data_dir:
        env["ARCHSWEEP_DATA_DIR"] = data_dir
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(sweep_file, Path(tmp) / "sweep.yaml")
        command = ["archsweep", "sweep", "sweep.yaml", "--address", "auto", *overrides, f"storage={storage}"]
        try:
            return client.submit_job(entrypoint=" ".join(shlex.quote(c) for c in command),
                                     runtime_env={"working_dir": tmp, "env_vars": env},
                                     metadata={"archsweep_sweep": sweep.name})
        except (ConnectionError, RuntimeError) as exc:
            raise _job_server_error(address, exc) from None


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
