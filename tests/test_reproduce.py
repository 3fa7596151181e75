"""The reproduction report: its file is checked like a sweep file, and `bench/reproduce.py` run end to end on a
tiny report (real sweeps, searches and measurements on a local Ray) writes exactly what it printed, every figure
in the tables read from the result stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archsweep.config import ConfigError
from archsweep.tracking import reproduce as R

ROOT = Path(__file__).resolve().parents[1]

GENERATION = """
name: gen-tiny
space: nasbench201
vqvae: {hidden_dim: 32, decoder_hidden: 128, gin_layers: 2, code_dim: 8, codebook_size: 8, seq_len: 2}
train: {epochs: 4, batch_size: 512, early_stop: true, patience: 1, min_delta: 1.0,
        min_epochs: 0}
lm: {name: gpt2-tiny, epochs: 1, batch_size: 256, warmup_steps: 5}
sample: {samples: 300}
sweep:
  lm.name: {grid: [gpt2-tiny, llama-tiny]}
extra_trials:
  - {vqvae.codebook_size: 16}
  - {vqvae.seq_len: 4}
  - {vqvae.model: vae}
tracking: {wandb: true, mode: offline, project: archsweep-test}
"""

SEARCH = """
name: search-tiny
space: nasbench201
search: {budget: 20, batch_size: 10, lm_guided: {candidates: 64, adapt_steps: 2}}
searches:
  strategies: {lm_guided: {}, random: {}}
  datasets: [cifar10]
  seeds: 1
  report_budgets: [10, 20]
tracking: {wandb: false}
"""

REPORT = """
name: tiny
report: docs/REPORT.md
storage: {storage}
generation: [gen.yaml]
temperatures: [0.5, 1.0]
search:
  - {file: search.yaml, prior: gen-tiny}
performance: {enumeration: false, vqvae_epochs: 1, lm_name: gpt2-tiny, lm_epochs: 1, sweep_overhead: true}
"""


def write_report(tmp_path: Path, text: str = REPORT) -> Path:
    (tmp_path / "gen.yaml").write_text(GENERATION)
    (tmp_path / "search.yaml").write_text(SEARCH)
    path = tmp_path / "report.yaml"
    path.write_text(text.replace("{storage}", str(tmp_path / "runs")))
    return path


def test_the_shipped_report_files_are_valid():
    for name in ("reproduce-cpu.yaml", "reproduce-paper.yaml"):
        spec = R.load_report_file(ROOT / "sweeps" / name)
        assert spec.generation and spec.search and all(spec.path_of(g).is_file() for g in spec.generation)
    cpu = R.load_report_file(ROOT / "sweeps" / "reproduce-cpu.yaml")
    assert cpu.report == "docs/REPORT.md" and cpu.name == "cpu"


@pytest.mark.parametrize("text, message", [
    ("name: x\ngeneraton: [gen.yaml]\n", "generaton"),
    ("name: x\n", "generation"),
    ("name: x\nperformance: {lm_epoch: 1}\n", "lm_epoch"),
    ("name: x\ntemperatures: [0.5, hot]\n", "temperatures"),
    ("name: x\ngeneration: [gen.yaml]\ntemperatures: [0.0]\n", "temperatures"),
    ("name: x\ngeneration: [missing.yaml]\n", "missing.yaml"),
    ("name: x\ngeneration: [gen.yaml]\nperformance: {lm_name: gpt5-huge}\n", "gpt5-huge"),
    ("name: x\ngeneration: [gen.yaml]\nperformance: {vqvae_space: nasbench301}\n", "nasbench301"),
    ("name: x\nstorage: ${oc.env:HOME}\n", "interpolation"),
])
def test_a_bad_report_file_is_refused_naming_the_key(tmp_path, text, message):
    path = write_report(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        R.load_report_file(path)
    assert str(path) in str(info.value)


def test_a_search_prior_that_names_no_generation_sweep_is_refused_before_anything_runs(tmp_path):
    path = write_report(tmp_path, REPORT.replace("prior: gen-tiny", "prior: gen-huge"))
    out = subprocess.run([sys.executable, "-m", "bench.reproduce", str(path), "--docs", str(tmp_path / "docs")],
                         capture_output=True, text=True, cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and "gen-huge" in out.stderr and "gen-tiny" in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "docs").exists()


@pytest.mark.ray
@pytest.mark.e2e
def test_reproduce_writes_exactly_what_it_printed_from_the_stored_results(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    path = write_report(tmp_path)
    docs = tmp_path / "docs"
    env = os.environ | {"WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.reproduce", str(path), "--docs", str(docs)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (docs / "REPORT.md").read_text()

    # the file is the printed sections, word for word, and says how it was made
    intro, *sections = report.split("\n## ")
    assert intro.strip() in out.stdout and len(sections) == 3
    for section in sections:
        for part in section.split("\n\n", 1)[1].split("\n### "):
            assert part.strip() in out.stdout
    for key in ("- machine:", "- date:", "- command: `python -m bench.reproduce", "- versions: archsweep",
                "torch ", "ray ", "deepspeed "):
        assert key in report

    # figures, each stamped with the command that made it
    figures = {p.name for p in (docs / "report" / "tiny").glob("*.png")}
    assert figures == {"nasbench201-codebook_size.png", "nasbench201-seq_len.png", "nasbench201-temperature.png",
                       "search-search-tiny.png"}
    for name in figures:
        assert f"](report/tiny/{name})" in report
    from PIL import Image

    assert "bench.reproduce" in Image.open(docs / "report" / "tiny" / "nasbench201-seq_len.png").info["Description"]

    # every number of the generation table is the stored one
    from archsweep.tracking.store import ResultStore

    rows = ResultStore(tmp_path / "runs" / "gen-tiny").rows()
    assert len(rows) == 5 and {r.status for r in rows} == {"TERMINATED"}
    ref = R.reference({"vqvae": {"codebook_size": 8, "seq_len": 2}, "lm": {"name": "gpt2-tiny"}}, rows)
    assert ref == {"vqvae.codebook_size": 8, "vqvae.seq_len": 2, "lm.name": "gpt2-tiny"}
    table = R.generation_table(rows, ref)
    assert [t["generator"] for t in table] == ["continuous VAE, Gaussian prior", "VQ-VAE, uniform prior over codes",
                                              "VQ-VAE + gpt2-tiny", "VQ-VAE + llama-tiny"]
    top = R.ceiling(rows, ref)
    cells = R.metric_rows(table, "generator", top)
    assert len(cells) == 5 and cells[-1][0] == R.CEILING
    for line in cells:
        assert "| " + " | ".join(line) + " |" in report
    gpt2 = next(r for r in rows if r.config["lm"]["name"] == "gpt2-tiny" and r.config["vqvae"]["codebook_size"] == 8
                and r.config["vqvae"]["seq_len"] == 2 and r.config["vqvae"]["model"] == "vqvae")
    assert table[2]["valid_unique"] == gpt2.metrics["valid_unique"]
    # each stage's epochs, and the mark of a curve still improving: the VQ-VAE stopped on its plateau (min_delta
    # 1.0, patience 1: after 2 of 4 epochs), the LM's one epoch cannot show one
    assert cells[2][1] == "2 / 1 (not plateaued)" and cells[0][1] == "2 / –"
    assert "**Cut short**" in report and "VQ-VAE + gpt2-tiny" in report.split("**Cut short**")[1].split("\n")[0]
    # the ceiling: 300 draws from the training cells, the trial's sample count, as its LM stage scored them
    assert top["valid_unique"] == gpt2.metrics["ceiling/valid_unique"] and gpt2.metrics["ceiling/novelty"] == 0.0
    assert cells[2][-1] == f"{gpt2.metrics['valid_unique'] / top['valid_unique']:.2f}"
    uniform = json.loads((Path(gpt2.paths["vqvae_dir"]) / "metrics.json").read_text())["random_codes"]
    assert table[1]["validity"] == uniform["validity"]
    assert [p["vqvae.codebook_size"] for p in R.ablation(rows, ref, "vqvae.codebook_size")] == [8, 16]
    assert [p["vqvae.seq_len"] for p in R.ablation(rows, ref, "vqvae.seq_len")] == [2, 4]

    # the NAS table and the performance rows are there, measured
    assert "| cifar10 | lm_guided | 1 |" in report and "| cifar10 | random | 1 |" in report
    for what in ("VQ-VAE training (nasbench201", "plain PyTorch loop (gpt2-tiny", "MFU", "Sampling (nasbench201",
                 "Sweep overhead", "GFLOP/s"):
        assert what in report
