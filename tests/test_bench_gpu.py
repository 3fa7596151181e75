"""`bench/gpu.py --small` end to end on the CPU (its dry run): both stages beside their plain loops at the same
batch, and the default NAS-Bench-201 pipeline scored, in one run on a local Ray."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_gpu_bench_dry_run_measures_both_stages_and_the_pipeline(data_dir, tmp_path):
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu", "--small", "--json", str(out)], cwd=ROOT,
                         env=os.environ | {"ARCHSWEEP_DATA_DIR": str(data_dir)}, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert rows["peak"] > 0
    vq, lm = rows["stages"]
    for row, unit in ((vq, "graphs/s"), (lm, "tokens/s")):
        # | stage | batch | plain | stage | ratio | MFU |: the stage ran at the batch the CPU's auto gives
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2].endswith(unit) and cells[3].endswith(unit)
        plain, stage = (float(c.split()[0].replace(",", "")) for c in cells[2:4])
        assert plain > 0 and stage > 0 and cells[4] == f"{plain / stage:.2f}x"
    assert "| 256 |" in vq and "| 64 |" in lm and re.search(r"stage \d+\.\d\d %", lm)
    (pipeline,) = rows["pipelines"]
    cells = [c.strip() for c in pipeline.strip("|").split("|")]
    assert cells[0] == "nasbench201" and cells[5].startswith("1,000 at")
    assert float(cells[7].rstrip(" %")) > 50  # validity after one epoch per stage
    assert "Training at the device's scale (CPU dry run)" in run.stdout
