"""The LM stage: train the prior on a VQ-VAE stage's codes (DeepSpeed, data parallel), sample it, decode the
samples through the VQ-VAE decoder and score them.

Artifacts in the output directory:
- `lm/`: the trained model in `transformers` format (full weights, whatever the ZeRO stage; with `lm.lora`, the
  `peft` adapters alone, which load onto the base model `lm.name` names)
- `samples.npz`: every sample's raw text, parsed codes (-1 where it does not parse) and validity
- `generated.json`: the first samples one by one (codes, cell, valid, novel, accuracy): what W&B's table shows
- `metrics.json`: validity, uniqueness, novelty (and string variants), `valid_unique(_novel)`, accuracy
  statistics of the generated cells where the benchmark has them, training loss/throughput, sampling speed
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from archsweep import metrics as M
from archsweep.artifacts import load_model, save_lm
from archsweep.benchmarks import has_table, load_benchmark
from archsweep.config import Config, to_dict
from archsweep.data import TrainingSplit, training_split
from archsweep.decoding import generated_cells
from archsweep.layout import LMStage, VQVAEStage
from archsweep.lm.models import add_lora, build
from archsweep.lm.sampling import sample
from archsweep.spaces import get_space
from archsweep.spaces.enumeration import GraphIndex
from archsweep.trace import mark
from archsweep.train import history as train_history
from archsweep.train import plateaued
from archsweep.train.launch import Forward
from archsweep.train.lm import fit, full_state_dict, load_codes
from archsweep.train.scale import sample_batch

TABLE_ROWS = 100  # samples kept one by one in generated.json


def _load_trained(cfg: Config, result, codebook_size: int):
    lm = build(cfg.lm.name, codebook_size, cfg.vqvae.seq_len)
    if cfg.lm.lora.rank:
        add_lora(lm, cfg.lm.lora.rank, cfg.lm.lora.alpha, cfg.lm.lora.dropout, cfg.lm.lora.target_modules)
    with result.checkpoint.as_directory() as directory:
        weights = full_state_dict(directory)
    lm.model.load_state_dict(weights, strict=False)
    if hasattr(lm.model, "tie_weights"):
        lm.model.tie_weights()
    return lm


def ceiling(space, split: TrainingSplit, samples: int, seed: int) -> dict:
    """A perfect model of the training cells: `samples` draws from the training split itself
    (`metrics.training_draws`), scored like generated cells: what a generator that learnt its training distribution
    exactly scores. Its novelty is 0 by construction; a generator above it finds cells beyond the training split."""
    draws = split.index[M.training_draws(len(split.index), samples, seed)]
    return M.generation_metrics([split.enum.cell(int(i)) for i in draws], space, split.hashes, split.strings)


class Scorer:
    """Decodes sampled code sequences through a VQ-VAE stage's decoder and scores them with the metrics module.
    The training reference (for novelty) and the benchmark table are loaded once, for many sample sets."""

    def __init__(self, cfg: Config, vqvae_dir: str | Path, data_dir: str | None = None):
        self.space = get_space(cfg.space)
        self.model, _ = load_model(VQVAEStage(Path(vqvae_dir)).model)
        self.split = training_split(cfg)
        self.train_hashes, self.train_strings = self.split.hashes, self.split.strings
        self.benchmark = load_benchmark(cfg.space, data_dir) if has_table(cfg.space) else None
        self.index = None
        if not hasattr(self.space, "graph_hashes"):  # such a space checks and hashes decoded graphs itself
            self.index = GraphIndex(self.split.ops.numpy(), self.split.adj.numpy(), self.split.enum.hash)

    def rows(self, codes: list[tuple[int, ...] | None], cells: list, limit: int = TABLE_ROWS) -> list[dict]:
        """The first samples one by one (metrics.sample_rows), accuracy on the benchmark's first dataset."""
        dataset = self.benchmark.datasets[0] if self.benchmark else None
        return M.sample_rows(codes, cells, self.space, self.train_hashes, self.benchmark, dataset, limit)

    def ceiling(self, samples: int, seed: int) -> dict:
        return ceiling(self.space, self.split, samples, seed)

    def __call__(self, codes: list[tuple[int, ...] | None]) -> tuple[dict, list]:
        """(metrics, decoded cells with None where the text did not parse)."""
        cells = generated_cells(codes, self.model, self.space, self.index)
        out = M.generation_metrics(cells, self.space, self.train_hashes, self.train_strings)
        for dataset in self.benchmark.datasets if self.benchmark else ():
            out[f"accuracy_{dataset}_val"] = M.accuracy_stats(cells, self.space, self.benchmark, dataset, "val")
        return out, cells


def generate(lm, scorer: Scorer, cfg: Config, samples_path: str | Path | None = None,
             rows_path: str | Path | None = None) -> dict:
    """Sample `cfg.sample` from the LM, decode and score; end-to-end architectures/s included."""
    s = cfg.sample
    gpu = cfg.lm.use_gpu and torch.cuda.is_available()  # a GPU this process may use (Ray sets what it sees)
    lm.model.to("cuda" if gpu else "cpu")
    start = time.perf_counter()
    codes, texts = sample(lm, s.samples, cfg.vqvae.codebook_size, s.temperature, s.top_k, s.top_p, s.seed,
                          batch_size=sample_batch(s.batch_size, gpu), constrained=s.constrained)
    results, cells = scorer(codes)
    results["samples_per_s"] = len(codes) / (time.perf_counter() - start)
    if samples_path is not None:
        np.savez(samples_path, texts=np.array(texts),
                 codes=np.array([c if c is not None else (-1,) * cfg.vqvae.seq_len for c in codes], dtype=np.int32),
                 valid=np.array([c is not None and scorer.space.is_valid(c) for c in cells]))
    if rows_path is not None:
        Path(rows_path).write_text(json.dumps(scorer.rows(codes, cells)))
    return results


def run(cfg: Config, vqvae_dir: str | Path, out_dir: str | Path, env: dict[str, str] | None = None,
        data_dir: str | None = None, log_level: str = "WARNING", forward: Forward | None = None) -> dict:
    """Train (or resume) the LM on the VQ-VAE stage's codes, save it, sample and score; writes `out_dir`."""
    stage = LMStage(Path(out_dir))
    stage.dir.mkdir(parents=True, exist_ok=True)
    codes_path = VQVAEStage(Path(vqvae_dir)).codes
    _, _, codebook_size = load_codes(codes_path)
    start = time.perf_counter()
    mark("lm stage: start")
    result = fit(cfg, codes_path, stage.dir, env, log_level, forward)
    if result.error is not None:
        raise result.error
    train_seconds = time.perf_counter() - start
    lm = _load_trained(cfg, result, codebook_size)
    save_lm(lm, stage.model)
    mark("lm stage: model saved")

    history = train_history(result)
    curve = history[["epoch", "heldout_loss"]].to_dict("records") if "heldout_loss" in history else []
    scorer = Scorer(cfg, vqvae_dir, data_dir)
    results = {"config": to_dict(cfg), "training": {k: v for k, v in (result.metrics or {}).items()
                                                    if isinstance(v, (int, float))},
               "train_wall_s": train_seconds, "node": (result.metrics or {}).get("node"),
               "host": (result.metrics or {}).get("host"),
               "heldout_curve": curve, "epochs_trained": len(curve),
               "plateaued": plateaued("lm", curve, cfg.lm),
               **generate(lm, scorer, cfg, stage.samples, stage.generated),
               "training_cells": scorer.ceiling(cfg.sample.samples, cfg.sample.seed)}
    stage.metrics.write_text(json.dumps(results, indent=2))
    mark("lm stage: done")
    return results
