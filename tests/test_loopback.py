"""The embedded local Ray listens on loopback only: read from the OS's own table of listening sockets while a
search runs on it, for every process the command started (GCS, raylet, agents, workers, actors)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from tests.helpers import ARCHSWEEP

pytestmark = pytest.mark.ray

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
SEARCH = Path(__file__).resolve().parent.parent / "sweeps" / "search-quick.yaml"


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


def test_nothing_the_embedded_ray_opens_listens_beyond_loopback(data_dir, tmp_path, wandb_offline):
    run = subprocess.Popen([ARCHSWEEP, "search", str(SEARCH), "searches.seeds=2", f"storage={tmp_path}",
                            "--num-cpus", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    names = set(seen.values())
    assert len(seen) >= 5 and {"gcs_server", "raylet"} <= names, seen  # Ray's own servers were seen listening
    beyond = {f"{ip}:{port} ({name})" for (ip, port), name in seen.items() if ip not in LOOPBACK}
    assert not beyond, f"listening beyond loopback: {sorted(beyond)}"
