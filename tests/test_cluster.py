"""The cluster YAMLs in cluster/ pass Ray's own schema and config preparation offline; broken variants of them
are rejected with the file and the key named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from archsweep.capacity import ClusterConfigError, from_cluster_file, validate_cluster_yaml
from archsweep.cli import cli

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
SHIPPED = sorted(p for p in CLUSTER.glob("*.yaml") if p.name != "local.yaml")  # what `ray up` starts


def test_the_cloud_and_onprem_yamls_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_heads_keep_the_dashboard_and_job_server_on_loopback(path):
    starts = [c for c in yaml.safe_load(path.read_text())["head_start_ray_commands"] if "ray start" in c]
    assert starts and all("--dashboard-host=127.0.0.1" in c for c in starts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_cluster_yamls_are_valid(path):
    prepared = validate_cluster_yaml(path)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "archsweep" in setup and "constraints.txt" in setup
    head = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # the job server is not exposed beyond the head


def test_the_local_autoscaling_cluster_validates_and_starts_from_zero_workers():
    """cluster/local.yaml: Ray's fake_multinode provider, a head with no CPU, workers from 0; validated as
    written (Ray ships no defaults for that provider), and a copy missing a key the autoscaler reads is refused."""
    path = CLUSTER / "local.yaml"
    result = CliRunner().invoke(cli, ["cluster", "validate", str(path)])
    assert result.exit_code == 0 and "valid (3 node type(s)" in result.output, result.output
    raw = yaml.safe_load(path.read_text())
    assert raw["provider"]["type"] == "fake_multinode"
    assert all(t.get("min_workers", 0) == 0 for t in raw["available_node_types"].values())
    capacity = from_cluster_file(path)
    assert capacity.autoscaling and capacity.node_types[0].resources == {"CPU": 0.0}
    assert capacity.totals() == {"CPU": 3.0, "GPU": 1.0}
    assert "up to 2 x cpu_worker (1 CPU each)" in capacity.describe()


def written(tmp_path, raw: dict, name: str) -> Path:
    """`raw` (a changed copy of a shipped file) as the file `name` in `tmp_path`."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_local_cluster_file_without_what_the_autoscaler_reads_is_refused(tmp_path):
    raw = yaml.safe_load((CLUSTER / "local.yaml").read_text())
    del raw["worker_start_ray_commands"]
    with pytest.raises(ClusterConfigError, match="read as written.*add worker_start_ray_commands"):
        validate_cluster_yaml(written(tmp_path, raw, "local.yaml"))


def _break(change):
    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    broken = copy.deepcopy(raw)
    change(broken)
    return broken


BROKEN = {
    "typo in a key": (lambda c: c.update(max_workerz=c.pop("max_workers")), "'max_workerz' was unexpected"),
    "undefined head node type": (lambda c: c.update(head_node_type="hed"),
                                 "`head_node_type` must be one of `available_node_types`"),
    "min_workers above max": (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=5),
                              "max_workers` is smaller than the sum of `min_workers`"),
    "node type without resources": (lambda c: c["available_node_types"]["gpu_worker"].pop("resources"),
                                    "available_node_types.gpu_worker: 'resources' is a required property"),
    "no provider": (lambda c: c.pop("provider"), "'provider' is a required property"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_cluster_yamls_are_rejected(tmp_path, case):
    change, message = BROKEN[case]
    path = written(tmp_path, _break(change), "broken.yaml")
    with pytest.raises(ClusterConfigError) as info:
        validate_cluster_yaml(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_cli_validates_and_exits_2_on_a_broken_file(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["cluster", "validate", "--allow-examples", *map(str, SHIPPED)])
    assert ok.exit_code == 0 and ok.output.count(": valid") == len(SHIPPED)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nprovider: [\n")
    result = runner.invoke(cli, ["cluster", "validate", str(bad)])
    assert result.exit_code == 2 and "not valid YAML" in result.output


GPU_SWEEP = str(CLUSTER.parent / "sweeps" / "lm-scale-gpu.yaml")


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_the_gpu_lm_sweep_fits_the_cloud_clusters_scaled_up(name):
    from archsweep.capacity import from_cluster_file

    capacity = from_cluster_file(CLUSTER / name)
    assert capacity.totals() == {"CPU": 40.0, "GPU": 4.0} and len(capacity.nodes()) == 5  # a CPU head and 4 one-GPU workers
    result = CliRunner().invoke(cli, ["sweep", GPU_SWEEP, "--check", "--cluster", str(CLUSTER / name)])
    assert result.exit_code == 0, result.output
    assert "12 trial(s)" in result.output and "2 trial(s) at once" in result.output  # 2 GPUs per trial


def test_a_sweep_that_outgrows_the_cluster_is_refused_before_it_runs():
    result = CliRunner().invoke(cli, ["sweep", GPU_SWEEP, "--check", "--cluster", str(CLUSTER / "aws-gpu.yaml"),
                                      "lm.num_workers=8"])
    assert result.exit_code == 2
    assert "needs 16 CPUs and 8 GPUs at once" in result.stderr and "4 GPUs" in result.stderr


def test_the_shipped_files_example_values_are_refused_naming_each_key_and_what_to_set():
    result = CliRunner().invoke(cli, ["cluster", "validate", *map(str, SHIPPED)])
    assert result.exit_code == 2
    lines = set(result.stderr.splitlines())
    assert {f"{CLUSTER / 'aws-gpu.yaml'}: initialization_commands[2] holds the example 'fs-XXXXXXXX': set your EFS "
            "file system's id",
            f"{CLUSTER / 'gcp-gpu.yaml'}: provider.project_id holds the example 'your-gcp-project': set your GCP "
            "project's id",
            f"{CLUSTER / 'gcp-gpu.yaml'}: initialization_commands[2] holds the example '10.0.0.2:/share': set your "
            "Filestore instance's address and share",
            f"{CLUSTER / 'onprem.yaml'}: provider.head_ip holds the example '10.0.0.10': set your head machine's "
            "address"} <= lines, result.stderr
    assert sum("onprem.yaml: provider.worker_ips[" in line for line in lines) == 2


def test_the_onprem_file_is_read_as_written_plans_its_workers_like_the_head_and_runs_its_setup(tmp_path):
    """Stating Ray's local node type makes Ray read the file as written: its setup runs only from
    head_setup_commands / worker_setup_commands, and the head's type is also the workers' (max_workers of it)."""
    from archsweep.capacity import from_cluster_file

    capacity = from_cluster_file(CLUSTER / "onprem.yaml")
    assert [t.describe() for t in capacity.node_types] == [
        "local.cluster.node (head, 16 CPU)", "up to 2 x local.cluster.node (16 CPU each)"]
    raw = yaml.safe_load((CLUSTER / "onprem.yaml").read_text())
    assert raw["head_setup_commands"] == raw["worker_setup_commands"] == raw["setup_commands"]
    assert any('export PATH="$HOME/venv/bin:$PATH"' in c and "~/.bashrc" in c for c in raw["setup_commands"])
    assert all("RAY_AUTH_MODE=token ARCHSWEEP_DATA_DIR=$HOME/archsweep-data" in c
               for c in raw["head_start_ray_commands"][1:] + raw["worker_start_ray_commands"][1:])
    assert "RAY_enable_autoscaler_v2=0 ray start --head" in raw["head_start_ray_commands"][1]
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_setup_commands", "worker_setup_commands"):
        with pytest.raises(ClusterConfigError, match="never setup_commands: put the setup there"):
            validate_cluster_yaml(written(tmp_path, dict(raw, **{key: []}), "onprem.yaml"))


def test_a_cluster_that_does_not_state_its_resources_cannot_be_checked_offline(tmp_path):
    raw = yaml.safe_load((CLUSTER / "onprem.yaml").read_text())
    for key in ("available_node_types", "head_node_type"):  # Ray then makes the node type, without resources
        del raw[key]
    result = CliRunner().invoke(cli, ["sweep", GPU_SWEEP, "--check", "--cluster", str(written(tmp_path, raw,
                                                                                                "onprem.yaml"))])
    assert result.exit_code == 2 and "does not state the resources of node type(s)" in result.stderr


@pytest.mark.parametrize("name, sdk", [("aws-gpu.yaml", "aws"), ("gcp-gpu.yaml", "gcp")])
def test_the_cloud_yamls_run_the_pinned_ray_and_python_with_the_sdk_shared_storage_and_retried_data(name, sdk):
    """What `ray up` needs of them beyond the schema: Ray's GPU image of the pinned Ray and Python 3.11 (on a host
    image with the NVIDIA driver), the cloud SDK the head's autoscaler uses, the shared storage mounted on the host
    and into the container, and the tables fetched with retries on every node."""
    import ray

    raw = yaml.safe_load((CLUSTER / name).read_text())
    assert raw["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    pinned = (CLUSTER.parent / "requirements" / "constraints.txt").read_text()
    assert f"ray=={ray.__version__}" in pinned
    setup = " ".join(raw["setup_commands"])
    assert f'archsweep[{sdk}]' in setup and "data fetch --retries" in setup
    extras = (CLUSTER.parent / "pyproject.toml").read_text()
    assert f"{sdk} = [" in extras
    assert any("mount" in c and "/mnt/shared" in c for c in raw["initialization_commands"])
    assert "-v /mnt/shared:/mnt/shared" in raw["docker"]["run_options"]
    images = str(raw["available_node_types"])  # the hosts: the clouds' images with the NVIDIA driver (AWS: the
    text = (CLUSTER / name).read_text()          # id read from the SSM parameter the file names)
    assert ("base-oss-nvidia-driver-gpu" in text) if sdk == "aws" else ("deeplearning-platform-release" in images)


@pytest.mark.parametrize("name, sdk", [("aws-gpu.yaml", "aws"), ("gcp-gpu.yaml", "gcp")])
def test_the_config_ray_runs_from_the_cloud_yamls_keeps_the_pins_gives_workers_the_gpu_and_wants_the_token(name, sdk):
    """Checked on the config Ray prepares from the file (its provider defaults merged, as `ray up` runs it), not
    the raw YAML: no default of Ray's replaces a pinned package on the head, workers' containers get the GPU
    explicitly and fail their setup without one, GPU hosts wait for their driver, every node runs Ray with token
    auth and the token file, and the AMI is an id, not an SSM alias the workers' launcher may not resolve."""
    prepared = validate_cluster_yaml(CLUSTER / name)
    installs = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
                for c in prepared[key] if "pip install" in c]
    assert installs and all("-c ~/archsweep/requirements/constraints.txt" in c for c in installs), installs
    assert not any("google-api-python-client==1.7.8" in c or "boto3>=" in c for c in prepared["head_setup_commands"])
    docker = prepared["docker"]
    assert docker["worker_run_options"] == ["--gpus all"] and docker["disable_automatic_runtime_detection"] is True
    assert "nvidia-smi -L" in prepared["worker_setup_commands"]
    assert any("until nvidia-smi -L" in c and "timeout 900" in c for c in prepared["initialization_commands"])
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in prepared[key]
              if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("export RAY_AUTH_MODE=token && ") for c in starts)
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    images = [t["node_config"].get("ImageId") for t in prepared["available_node_types"].values()]
    assert sdk != "aws" or images == ["ami-XXXXXXXXXXXXXXXXX"] * 2  # one id, set once (a YAML anchor)
