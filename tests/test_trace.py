"""The trace marks of archsweep/trace.py: written only when $ARCHSWEEP_TRACE names a file, read back in time order
from every process that wrote them."""

from __future__ import annotations

import subprocess
import sys

from archsweep.trace import TRACE_ENV, mark, read


def test_marks_go_to_the_named_file_only_and_read_back_in_time_order_across_processes(tmp_path, monkeypatch):
    monkeypatch.delenv(TRACE_ENV, raising=False)
    mark("nowhere")  # no variable: nothing written, nothing raised
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    mark("here: first")
    subprocess.run([sys.executable, "-c", "from archsweep.trace import mark; mark('child: second')"], check=True)
    mark("here: third")
    marks = read(trace)
    assert [m["event"] for m in marks] == ["here: first", "child: second", "here: third"]
    assert len({m["pid"] for m in marks}) == 2 and marks[0]["t"] <= marks[1]["t"] <= marks[2]["t"]
