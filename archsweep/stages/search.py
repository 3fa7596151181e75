"""The optional search stage of a pipeline or sweep trial (`search.enabled`): one NAS search with the trial's own
VQ-VAE + LM as the lm_guided generator (bo and rl: its VQ-VAE, or VAE, as the encoder unless search.encoder names
another; or a baseline strategy), in this process, on the benchmark table.

Artifacts in the output directory: `state.jsonl` (every query, appended after each round, so a retried trial
continues the search) and `metrics.json` (the summary: best-by-validation accuracy at budgets, queries to the
optimum)."""

from __future__ import annotations

import json
from pathlib import Path

from archsweep.benchmarks import load_benchmark
from archsweep.config import Config
from archsweep.layout import METRICS
from archsweep.search.generator import Generator
from archsweep.search.loop import lookup
from archsweep.search.registry import run_search, strategy_encoder
from archsweep.search.requirements import needs_generator

BUDGETS = (50, 100, 200)


def run(cfg: Config, vqvae_dir: str | Path, lm_dir: str | Path, out_dir: str | Path, data_dir: str | None = None
        ) -> dict:
    """Run (or continue) the search `cfg.search` describes; lm_guided samples the LM in `lm_dir` (a saved
    `transformers` model) decoded by the VQ-VAE in `vqvae_dir`."""
    out_dir = Path(out_dir)
    s = cfg.search
    benchmark = load_benchmark(cfg.space, data_dir)
    dataset = s.dataset or benchmark.datasets[0]
    generator = Generator(cfg, vqvae_dir, lm_dir) if needs_generator(cfg) else None
    encoder = strategy_encoder(cfg, vqvae_dir)
    budgets = sorted({b for b in BUDGETS if b < s.budget} | {s.budget})
    summary = run_search(cfg, benchmark, out_dir / "state.jsonl",
                         lambda candidates: lookup(benchmark, [c.key for c in candidates], dataset), budgets, generator,
                         encoder)
    results = {"strategy": s.strategy, "dataset": dataset, **summary}
    (out_dir / METRICS).write_text(json.dumps(results, indent=2))
    return results
