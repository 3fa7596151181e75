"""Helpers the tests import (`from tests.helpers import ...`); fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time


def wait_for(check, timeout: float, what: str, *, alive=None, interval: float = 0.2):
    """`check()`'s first true value, polled every `interval` s (an exception counts as not yet). TimeoutError after
    `timeout` s; AssertionError as soon as `alive()` is false (the process being watched has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        if alive is not None and not alive():
            raise AssertionError(f"it ended before {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


ARCHSWEEP = shutil.which("archsweep", path=os.path.dirname(sys.executable)) or "archsweep"


def archsweep(*args: str, cwd=None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed `archsweep` command, run as a user runs it."""
    return subprocess.run([ARCHSWEEP, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_checkpoint(run_dir) -> dict | None:
    """The metrics of the newest checkpoint of a run, or None: the one Ray Train has recorded (a checkpoint
    directory alone may be one still being written), or for a stage trained in its caller's process, the newest
    whole `checkpoint_<epoch>` directory (written aside and renamed into place)."""
    from pathlib import Path

    done = sorted(Path(run_dir).glob("checkpoint_" + "[0-9]" * 6))
    if done:
        try:
            return json.loads((done[-1] / "history.json").read_text())[-1]
        except (OSError, ValueError, IndexError):
            return None
    try:
        snapshot = json.loads((Path(run_dir) / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    return (snapshot.get("latest_checkpoint_result") or {}).get("metrics")
