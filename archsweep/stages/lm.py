"""The LM stage: train the prior on a VQ-VAE stage's codes (DeepSpeed on Ray Train), sample it, decode the samples
through the VQ-VAE decoder and score them.

Artifacts in the output directory:
- `lm/`: the trained model in `transformers` format (full weights, whatever the ZeRO stage)
- `samples.npz`: every sample's raw text, parsed codes (-1 where it does not parse) and validity
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
from archsweep.config import Config, to_dict


def _load_trained(cfg: Config, result, codebook_size: int):
    from archsweep.lm.models import build
    from archsweep.train.lm import full_state_dict

    lm = build(cfg.lm.name, codebook_size, cfg.vqvae.seq_len)
    with result.checkpoint.as_directory() as directory:
        weights = full_state_dict(directory)
    lm.model.load_state_dict(weights, strict=False)
    if hasattr(lm.model, "tie_weights"):
        lm.model.tie_weights()
    return lm


def generated_cells(codes: list[tuple[int, ...] | None], vqvae_model, space):
    """Decode parsed code sequences through the VQ-VAE; None (unparseable) stays None."""
    from archsweep.stages.vqvae import decode_cells

    parsed = [c for c in codes if c is not None]
    if not parsed:  # nothing parsed: every sample is invalid
        return [None] * len(codes)
    decoded = iter(decode_cells(space, vqvae_model, torch.tensor(parsed, dtype=torch.long)))
    return [None if c is None else next(decoded) for c in codes]


def run(cfg: Config, vqvae_dir: str | Path, out_dir: str | Path, env: dict[str, str] | None = None,
        data_dir: str | None = None, log_level: str = "WARNING") -> dict:
    from archsweep.benchmarks import load_benchmark
    from archsweep.lm.sampling import sample
    from archsweep.spaces import get_space
    from archsweep.stages.vqvae import load_model
    from archsweep.train.lm import fit, load_codes

    vqvae_dir, out_dir = Path(vqvae_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes_path = vqvae_dir / "codes.npz"
    _, _, codebook_size = load_codes(codes_path)
    start = time.perf_counter()
    result = fit(cfg, codes_path, out_dir, env, log_level)
    if result.error is not None:
        raise result.error
    train_seconds = time.perf_counter() - start
    lm = _load_trained(cfg, result, codebook_size)
    lm.model.save_pretrained(out_dir / "lm")

    vqvae_model, _ = load_model(vqvae_dir / "model.pt")
    space = get_space(cfg.space)
    start = time.perf_counter()
    codes, texts = sample(lm, cfg.sample.samples, codebook_size, cfg.sample.temperature, cfg.sample.top_k,
                          cfg.sample.top_p, cfg.sample.seed)
    cells = generated_cells(codes, vqvae_model, space)
    sample_seconds = time.perf_counter() - start

    with np.load(codes_path) as z:
        train_mask, hashes, all_codes = z["train"], z["hashes"], z["codes"]
    train_hashes = {bytes(h).hex() for h in hashes[train_mask]}
    train_cells = generated_cells([tuple(c) for c in all_codes[train_mask].tolist()], vqvae_model, space)
    train_strings = {c.to_string() for c in train_cells}
    results = {"config": to_dict(cfg), "training": {k: v for k, v in (result.metrics or {}).items()
                                                    if isinstance(v, (int, float))},
               "train_wall_s": train_seconds, "samples_per_s": len(codes) / sample_seconds,
               **M.generation_metrics(cells, space, train_hashes, train_strings)}
    bench = load_benchmark(cfg.space, data_dir)
    for dataset in bench.datasets:
        results[f"accuracy_{dataset}_val"] = M.accuracy_stats(cells, space, bench, dataset, "val")
    np.savez(out_dir / "samples.npz", texts=np.array(texts),
             codes=np.array([c if c is not None else (-1,) * cfg.vqvae.seq_len for c in codes], dtype=np.int32),
             valid=np.array([c is not None and space.is_valid(c) for c in cells]))
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    return results
