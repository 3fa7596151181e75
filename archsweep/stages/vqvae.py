"""The VQ-VAE stage: train (train/vqvae.py), then encode every cell of the space and measure the model.

Artifacts in the output directory:
- `model.pt`: the trained model (weights + config), loadable with `archsweep.artifacts.load_model`
- `codes.npz`: every cell's code sequence (VQ-VAE) or latent means (VAE), its canonical hash and its split;
  the LM stage reads this
- `metrics.json`: every epoch's training metrics (`history`), their last values, throughput, held-out
  reconstruction accuracy, codebook usage and perplexity, and the generation metrics of decoding random codes
  (VQ-VAE) or prior samples (VAE)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from archsweep import metrics as M
from archsweep.artifacts import new_model, save_model
from archsweep.checkpoint import torch_load
from archsweep.config import Config, to_dict
from archsweep.data import load_cells, reference
from archsweep.decoding import decode_cells, encode_graphs, generated_cells
from archsweep.layout import VQVAEStage
from archsweep.spaces import get_space, training_cells
from archsweep.spaces.enumeration import GraphIndex
from archsweep.trace import mark
from archsweep.train import history as train_history
from archsweep.train import plateaued
from archsweep.train.vqvae import fit

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model, cfg: Config, samples: int = M.STANDARD_SAMPLES, seed: int = 0) -> tuple[dict, dict]:
    """(metrics, codes artifact arrays) of a trained model over its whole space."""
    space = get_space(cfg.space)
    enum = training_cells(cfg)
    ops, adj, train = load_cells(cfg)
    latents = encode_graphs(model, ops, adj)
    held = np.flatnonzero(~train)
    decoded = decode_cells(space, model, latents[torch.from_numpy(held)])
    out = {"cells": len(ops), "held_out": len(held),
           "reconstruction_accuracy": M.reconstruction_accuracy([enum.cell(int(i)) for i in held], decoded, space)}
    train_hashes, train_strings = reference(space, enum, ops, adj, train)
    rng = torch.Generator().manual_seed(seed)
    if cfg.vqvae.model == "vqvae":
        out |= M.codebook_stats(latents.numpy(), cfg.vqvae.codebook_size)
        random_codes = torch.randint(0, cfg.vqvae.codebook_size, (samples, cfg.vqvae.seq_len), generator=rng)
        index = GraphIndex(ops.numpy(), adj.numpy(), enum.hash)
        generated = generated_cells([tuple(c) for c in random_codes.tolist()], model, space, index)
        out["random_codes"] = M.generation_metrics(generated, space, train_hashes, train_strings)
        arrays = {"codes": latents.numpy().astype(np.int32)}
    else:
        flat = latents[torch.from_numpy(np.flatnonzero(train))].flatten(1).double()
        mean, cov = flat.mean(0), torch.cov(flat.T) + 1e-6 * torch.eye(flat.shape[1], dtype=torch.float64)
        prior = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            z = prior.sample((samples,)).float().view(samples, cfg.vqvae.seq_len, cfg.vqvae.code_dim)
        out["prior_samples"] = M.generation_metrics(decode_cells(space, model, z), space, train_hashes, train_strings)
        arrays = {"latents": latents.numpy().astype(np.float32)}
    arrays |= {"hashes": enum.hashes, "train": train, "codebook_size": np.array(cfg.vqvae.codebook_size),
               "seq_len": np.array(cfg.vqvae.seq_len)}
    return out, arrays


def run(cfg: Config, out_dir: str | Path, env: dict[str, str] | None = None, log_level: str = "WARNING") -> dict:
    """Train (or resume) and evaluate; writes model.pt, codes.npz and metrics.json into `out_dir`."""
    out_dir = Path(out_dir)
    stage = VQVAEStage(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mark("vqvae stage: start")
    training_cells(cfg)  # built (or loaded) here once, not by every worker at once
    mark("vqvae stage: cells ready")
    result = fit(cfg, out_dir, env, log_level)
    if result.error is not None:
        raise result.error
    train_seconds = time.perf_counter() - start
    with result.checkpoint.as_directory() as directory:
        state = torch_load(Path(directory) / "state.pt", fix=f"Delete {out_dir} and run the stage again.")
    model = new_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    save_model(model, cfg, stage.model)

    measured, arrays = evaluate(model, cfg)
    np.savez(stage.codes, space=np.array(cfg.space), **arrays)
    history = train_history(result)
    epochs = [] if history is None else [{k: v for k, v in row.items() if isinstance(v, (int, float))}
                                         for row in json.loads(history.to_json(orient="records"))]
    results = {
        "config": to_dict(cfg),
        "training": {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))},
        "graphs_per_s": float(history["graphs_per_s"].mean()) if history is not None and len(history) else None,
        "train_wall_s": train_seconds,
        "node": (result.metrics or {}).get("node"),
        "host": (result.metrics or {}).get("host"),
        "history": epochs,
        "epochs_trained": len(epochs),  # below train.epochs: stopped on its plateau (train.early_stop)
        "plateaued": plateaued("vqvae", epochs, cfg.train),
        **measured,
    }
    stage.metrics.write_text(json.dumps(results, indent=2))
    mark("vqvae stage: done")
    log.info("VQ-VAE stage done: %s", out_dir)
    return results
