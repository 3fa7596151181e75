"""What a Ray cluster holds, or can become: its node types, their resources and how many of each may run.

A fixed cluster is the nodes alive now. An autoscaling one is its autoscaler's node types at their `max_workers`,
read from a cluster YAML (`--cluster FILE`) or from the running cluster itself: the cluster config the autoscaler
publishes in the GCS (autoscaler v2, KubeRay) or the YAML its monitor process on the head was started with
(`ray up`'s `~/ray_bootstrap_config.yaml`, or `ray start --head --autoscaling-config FILE`). Planning against what
the cluster can become is what lets a sweep submitted to a freshly launched cluster (0 workers) ask for workers
instead of being refused. Ray is imported inside the functions that talk to it: `--check` stays light."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

from archsweep.errors import ArchsweepError


class ClusterConfigError(ArchsweepError):
    pass


LOCAL_NODE_TYPE = "local.cluster.node"  # Ray's name for the one node type of a `local` (on-premise) cluster
# Ray ships no defaults file for the fake_multinode provider, and merges none into a local cluster that states its
# node type: its autoscaler reads such a YAML as written, so these keys must be in it (cluster/local.yaml and
# cluster/onprem.yaml have them all).
AS_WRITTEN = ("file_mounts", "cluster_synced_files", "initialization_commands", "setup_commands",
              "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    count: int  # how many may run at once (the head: 1; a worker type: its max_workers, within the cluster's)
    head: bool = False

    def shown(self) -> str:
        return ", ".join(f"{self.resources.get(k, 0):g} {k}" for k in ("CPU", "GPU")
                         if k == "CPU" or self.resources.get(k))

    def describe(self) -> str:
        return (f"{self.name} (head, {self.shown()})" if self.head else
                f"up to {self.count} x {self.name} ({self.shown()} each)")


@dataclass(frozen=True)
class Capacity:
    node_types: tuple[NodeType, ...]
    autoscaling: bool
    source: str  # where it was read: "the running cluster", a file, "its autoscaler"

    def nodes(self) -> list[dict[str, float]]:
        """One resource dict per node the cluster has (fixed) or can have at once (autoscaling, fully scaled up)."""
        return [dict(t.resources) for t in self.node_types for _ in range(t.count)]

    def totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for node in self.nodes():
            for key, value in node.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        return totals

    def describe(self) -> str:
        if not self.autoscaling:
            return f"{self.source} has {len(self.node_types)} node(s): " + "; ".join(t.shown() for t in self.node_types)
        return f"{self.source} can scale to: " + "; ".join(t.describe() for t in self.node_types)


def validate_cluster_yaml(path: str | os.PathLike) -> dict:
    """The prepared config (defaults merged) if `path` is a valid cluster YAML; otherwise a ClusterConfigError
    that names the file and the offending key."""
    import logging

    import jsonschema
    import yaml
    from ray.autoscaler import __file__ as autoscaler_init
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # config preparation's notes, not for users
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
    provider = raw.get("provider", {}).get("type")
    as_written = provider == "fake_multinode" or (
        provider == "local" and LOCAL_NODE_TYPE in (raw.get("available_node_types") or {}))
    if as_written and (missing := [k for k in AS_WRITTEN if k not in raw]):
        why = ("Ray has no defaults for that provider" if provider == "fake_multinode" else
               f"Ray merges no defaults into a local cluster that states its node type {LOCAL_NODE_TYPE}")
        raise ClusterConfigError(f"{path}: a {provider} cluster is read as written here ({why}); add "
                                 f"{', '.join(missing)} (empty is fine), as cluster/local.yaml and onprem.yaml have")
    if as_written and raw.get("setup_commands") and not (raw.get("head_setup_commands") and
                                                         raw.get("worker_setup_commands")):
        raise ClusterConfigError(f"{path}: Ray runs only head_setup_commands and worker_setup_commands of a file "
                                 "read as written, never setup_commands: put the setup there (`setup_commands: "
                                 "&setup`, then `head_setup_commands: *setup`, as cluster/onprem.yaml does)")
    try:
        prepared = copy.deepcopy(raw) if as_written else prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except (ValueError, KeyError, jsonschema.ValidationError) as exc:
        message = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
        raise ClusterConfigError(f"{path}: {message}") from None
    return prepared


# The example values of the shipped cluster files, which are no one's: `archsweep cluster validate` refuses a file
# that still holds one, naming the key. Substrings, but for the on-premise addresses, which must match whole.
EXAMPLES = {"your-gcp-project": "your GCP project's id", "fs-XXXXXXXX": "your EFS file system's id",
            "ami-XXXXXXXXXXXXXXXXX": "the AMI id the comment above it reads from AWS's SSM parameter",
            "10.0.0.2:/share": "your Filestore instance's address and share"}
EXAMPLE_ADDRESSES = {"10.0.0.10": "your head machine's address", "10.0.0.11": "your worker machines' addresses",
                     "10.0.0.12": "your worker machines' addresses"}


def examples_left(path: str | os.PathLike) -> list[str]:
    """One line for each example value still in the cluster file at `path`: its key and what to set there."""
    import yaml

    found: list[str] = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            hits = [(e, what) for e, what in EXAMPLES.items() if e in node]
            hits += [(node, EXAMPLE_ADDRESSES[node])] if node in EXAMPLE_ADDRESSES else []
            found.extend(f"{path}: {where} holds the example {e!r}: set {what}" for e, what in hits)

    walk(yaml.safe_load(Path(path).read_text()), "")
    return found


def from_cluster_config(config: dict, source: str, head_resources: dict[str, float] | None = None) -> Capacity:
    """The capacity of an autoscaling config scaled all the way up: the head plus every worker type at its
    `max_workers`, within the cluster's `max_workers` (handed out in the file's order). `head_resources`: the
    live head's, where the config leaves them out."""
    types, head = config["available_node_types"], config["head_node_type"]
    room = config.get("max_workers", sum(spec.get("max_workers", 0) for spec in types.values()))
    out = [NodeType(head, {k: float(v) for k, v in (types[head].get("resources") or head_resources or {}).items()},
                    1, head=True)]
    for name, spec in types.items():
        count = min(spec.get("max_workers", 0), room)
        if name == head and not count:
            continue
        room -= count
        # a local cluster's workers are of the head's type: where the type leaves them out, the head's resources
        resources = spec.get("resources") or (head_resources if name == head else None) or {}
        out.append(NodeType(name, {k: float(v) for k, v in resources.items()}, count))
    if missing := [t.name for t in out if "CPU" not in t.resources]:
        raise ClusterConfigError(f"{source} does not state the resources of node type(s) {', '.join(missing)} (the "
                                 "machines of a `local` provider report theirs when Ray starts on them), so trials "
                                 "cannot be planned against it; give each node type `resources: {CPU: ..., GPU: ...}`")
    return Capacity(tuple(out), autoscaling=True, source=source)


def from_cluster_file(path: str | os.PathLike) -> Capacity:
    return from_cluster_config(validate_cluster_yaml(path), str(path))


def from_nodes(nodes: list[dict[str, float]]) -> Capacity:
    """A fixed cluster: each alive node its own type."""
    return Capacity(tuple(NodeType(f"node {i}", {k: float(v) for k, v in n.items()}, 1)
                          for i, n in enumerate(nodes)), autoscaling=False, source="the cluster")


def alive_nodes() -> list[dict]:
    """Ray's records of the nodes alive now, in the cluster this process has joined."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def live_capacity() -> Capacity:
    """The nodes alive now, as a fixed cluster."""
    return from_nodes([n["Resources"] for n in alive_nodes()])


def _from_gcs() -> Capacity | None:
    """The cluster config an autoscaler v2 (or KubeRay) publishes in the GCS, or None."""
    import ray

    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    types = tuple(NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                           max(g.max_count, 0) if g.max_count >= 0 else 1_000) for g in config.node_group_configs)
    return Capacity(types, autoscaling=True, source="the cluster's autoscaler")


def _monitor_config(gcs_port: str) -> dict | None:
    """On the head: the autoscaling YAML the monitor process of the cluster whose GCS listens on `gcs_port` was
    started with, or None (a machine may run more than one cluster)."""
    import psutil
    import yaml

    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if not any(part.endswith("/monitor.py") and "/ray/autoscaler/" in part for part in cmdline):  # v1 or v2
            continue
        if not any(p.startswith("--gcs-address=") and p.rsplit(":", 1)[-1] == gcs_port for p in cmdline):
            continue
        for part in cmdline:
            if part.startswith("--autoscaling-config="):
                path = Path(os.path.expanduser(part.split("=", 1)[1]))
                if path.is_file():
                    return yaml.safe_load(path.read_text())
    return None


def running_capacity(cluster_file: str | os.PathLike | None = None) -> Capacity:
    """The capacity of the Ray cluster this process has joined: `cluster_file`'s when given; else its
    autoscaler's; else (a cluster without an autoscaler) the nodes alive now."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if cluster_file:
        return from_cluster_file(cluster_file)
    if (found := _from_gcs()) is not None:
        return found
    heads = [n for n in alive_nodes() if "node:__internal_head__" in n.get("Resources", {})]
    if heads:
        on_head = ray.remote(num_cpus=0)(_monitor_config).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(heads[0]["NodeID"], soft=False))
        gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]
        config = ray.get(on_head.remote(gcs_port), timeout=120)
        if config and config.get("available_node_types"):
            return from_cluster_config(config, "the cluster's autoscaler", heads[0]["Resources"])
    return live_capacity()


def waiting_for() -> dict[str, int]:
    """Node type -> how many nodes the autoscaler is launching or waiting on now ({} without an autoscaler)."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return {}
    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
    out = {name: int(count) for name, count in (report.get("pending_launches") or {}).items() if count}
    for node in report.get("pending_nodes") or []:  # (ip, node type, status)
        if len(node) > 1:
            out[node[1]] = out.get(node[1], 0) + 1
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_shared(directory: Path, what: str) -> None:
    """Refuse a `directory` that some node alive now does not share with this process: the result store (SQLite)
    and the VQ-VAE stage's file lock need one directory every node reads and writes, with working POSIX locks
    (NFSv4.1: EFS, Filestore; cluster/README.md). Nodes the autoscaler adds later are checked by Ray Train, which
    writes and reads a file of its own under the same directory before a stage starts."""
    import secrets

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = alive_nodes()
    if len(alive) < 2:
        return
    marker = directory / f".shared-check-{secrets.token_hex(4)}"
    token = secrets.token_hex(16)
    marker.write_text(token)
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read)
        refs = [read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker)) for n in alive]
        ray.wait(refs, num_returns=len(refs), timeout=60)
        seen = []
        for ref in refs:  # a node that went away meanwhile, or did not answer in time, is not judged
            try:
                seen.append(ray.get(ref, timeout=0))
            except Exception:
                seen.append(token)
    finally:
        marker.unlink(missing_ok=True)
    blind = [f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n, text in zip(alive, seen) if text != token]
    if blind:
        raise ClusterConfigError(
            f"the {what} directory {directory} is not shared by every node of the cluster: {', '.join(blind)} "
            "cannot read what this node wrote there. Its trials would lose their results: set `storage:` to a "
            "directory on storage every node mounts at the same path, with POSIX locks (EFS or Filestore over "
            "NFSv4.1; the cluster YAMLs mount one at /mnt/shared; see cluster/README.md)")
