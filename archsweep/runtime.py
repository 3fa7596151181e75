"""Starting Ray: the embedded default is a local, private, in-process instance."""

from __future__ import annotations

import os

from archsweep.errors import ArchsweepError
from archsweep.settings import absolute

# Variables every Ray worker needs so it reads the same data and cache as the driver.
PROPAGATED_ENV = ("ARCHSWEEP_DATA_DIR", "ARCHSWEEP_CACHE_DIR", "ARCHSWEEP_TRACE")

_STARTED_HERE = False  # this process started the local Ray it is connected to (`init_local_ray`)


def worker_env() -> dict[str, str]:
    """The data and cache directories as absolute paths: a Ray worker's working directory is not the driver's."""
    return {k: str(absolute(os.environ[k])) for k in PROPAGATED_ENV if os.environ.get(k)}


def refresh_ray_auth() -> bool:
    """Ray reads RAY_AUTH_MODE and its token once, when first imported; after this process has set them, have
    it read them again. False if this Ray cannot (its auth settings then stay as they were at import)."""
    import sys

    if "ray" not in sys.modules:
        return True
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        return False
    return True


def loopback_only() -> None:
    """Have the Ray started by this process, and every process it starts, listen on 127.0.0.1 only: Ray's own
    switch for a machine that is not part of a cluster (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, its default on macOS
    and Windows). Ray reads it when first imported; if this process imported Ray already, its copy is set too."""
    import sys

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and "ray._private.ray_constants" in sys.modules:
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False


def keep_loopback(address: str) -> None:
    """For a cluster on this machine's loopback (the local rehearsal cluster): keep Ray from rewriting 127.0.0.1
    to the machine's network address, where that cluster does not listen."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        loopback_only()


def init_local_ray(num_cpus: int | None = None, num_gpus: int | None = None, verbose: bool = False,
                   env: dict[str, str] | None = None) -> None:
    """Start a local Ray in this process (no-op if one is running). It listens on loopback only (`loopback_only`),
    runs no dashboard and no job server, and unless the user set RAY_AUTH_MODE it requires a token: a fresh
    random one for this process, held in its environment only, never written to disk or logs. Workers' output
    reaches this console only when `verbose` (it is always in Ray's session logs, and errors always propagate).
    `env`: more variables for every worker (e.g. W&B settings)."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return
    loopback_only()
    ours = "RAY_AUTH_MODE" not in os.environ
    if ours:
        import secrets

        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    if not refresh_ray_auth() and ours:  # this Ray keeps the mode it was imported with
        os.environ["RAY_AUTH_MODE"] = "disabled"
        del os.environ["RAY_AUTH_TOKEN"]
    import ray

    global _STARTED_HERE
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             runtime_env={"env_vars": worker_env() | (env or {})}, logging_level="WARNING", log_to_driver=verbose)
    _STARTED_HERE = True


def started_here() -> bool:
    """Whether this process started the local Ray it is on: the whole machine is then its own to use."""
    import sys

    return _STARTED_HERE and "ray" in sys.modules and sys.modules["ray"].is_initialized()


def connect_ray(address: str, env: dict[str, str] | None = None, verbose: bool = False) -> None:
    """Join an existing Ray cluster (`auto` inside a Ray Job) with these variables for every worker."""
    import ray

    if ray.is_initialized():
        return
    if address.startswith(("http://", "https://")):
        raise ArchsweepError(
            f"{address} is a Ray job server's address (the dashboard's, for `archsweep submit` and `archsweep job`); "
            "a sweep or search run from here joins the cluster itself: give the head's GCS address, host:6379 "
            "(`--address` or RAY_ADDRESS), or submit it as a job with `archsweep submit`")
    keep_loopback(address)
    # Inside a Ray Job (`archsweep submit`), the job's runtime env already holds some of these variables: merge.
    os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    ray.init(address=address, runtime_env={"env_vars": worker_env() | (env or {})}, logging_level="WARNING",
             log_to_driver=verbose)
