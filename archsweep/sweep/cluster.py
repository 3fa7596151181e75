"""Offline checks of Ray cluster-launcher YAMLs, with Ray's own schema and config preparation (what `ray up`
would reject, found before any machine is started), and Ray Jobs submission of a sweep."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from archsweep.errors import ArchsweepError


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

    from archsweep.runtime import refresh_ray_auth

    refresh_ray_auth()  # the token set in the environment now, not the one Ray saw when it was imported
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        raise _job_server_error(address, exc) from None


def submit_sweep(sweep_file: str | os.PathLike, address: str, overrides: tuple[str, ...] = (),
                 data_dir: str | None = None) -> str:
    """Check the sweep here, then submit `archsweep sweep` as a Ray Job running it on the cluster; returns the job
    id. The sweep file travels as the job's working directory; the cluster must have archsweep installed (the
    cluster YAMLs do) and the data (or `data_dir`, a path on the cluster)."""
    import shlex
    import shutil
    import tempfile

    from archsweep.sweep.spec import load_sweep

    sweep = load_sweep(sweep_file, overrides)  # fail here, not on the cluster
    client = _client(address)
    from archsweep.tracking.wandb import PASSED_ON  # the W&B settings set here; never the API key

    env = {k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}
    if data_dir:
        env["ARCHSWEEP_DATA_DIR"] = data_dir
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(sweep_file, Path(tmp) / "sweep.yaml")
        command = ["archsweep", "sweep", "sweep.yaml", "--address", "auto",
                   *[arg for o in overrides for arg in ("-o", o)]]
        try:
            return client.submit_job(entrypoint=" ".join(shlex.quote(c) for c in command),
                                     runtime_env={"working_dir": tmp, "env_vars": env},
                                     metadata={"archsweep_sweep": sweep.name})
        except (ConnectionError, RuntimeError) as exc:
            raise _job_server_error(address, exc) from None


def job_status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id))


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def follow_job_logs(address: str, job_id: str, write) -> None:
    """Pass the job's log to `write` chunk by chunk as it is written, until the job ends."""
    import asyncio

    async def follow():
        async for chunk in _client(address).tail_job_logs(job_id):
            write(chunk)

    asyncio.run(follow())
