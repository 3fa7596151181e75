"""Where a run's seconds go: `mark(event)` appends (wall time, process, event) to the file $ARCHSWEEP_TRACE names,
from every process of a run (the driver, a trial, its Ray Train workers; all on one machine's clock); without the
variable it does nothing. `bench/startup.py` turns a trace into the breakdown of a trial's fixed costs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TRACE_ENV = "ARCHSWEEP_TRACE"


def mark(event: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as f:  # one short append per line: lines of concurrent processes do not interleave
            f.write(json.dumps({"t": time.time(), "pid": os.getpid(), "event": event}) + "\n")


def read(path: str | Path) -> list[dict]:
    """The trace's marks in time order."""
    lines = Path(path).read_text().splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda m: m["t"])
