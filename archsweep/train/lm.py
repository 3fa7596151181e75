"""Train the LM prior on the VQ-VAE's code sequences with DeepSpeed (ZeRO 0-3) under Ray Train.

`train_loop` runs on every worker and reads top to bottom: set up (data, model, DeepSpeed engine), resume, then
per epoch train, measure the held-out loss, checkpoint and report. Ray Train has already created the process
group (gloo on CPU, NCCL on GPUs); DeepSpeed joins it. Every rank writes its own ZeRO shard into the checkpoint,
which `full_state_dict` turns back into ordinary weights. Rerunning `fit` on the same directory resumes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from archsweep.config import Config, from_dict, to_dict

RUN_NAME = "lm"
TAG = "state"  # not "latest": DeepSpeed writes a file of that name beside the tag directory


def load_codes(path: str | Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], int]:
    """(training sequences, held-out sequences, codebook size) from a VQ-VAE stage's codes.npz."""
    with np.load(path) as z:
        if "codes" not in z.files:
            from archsweep.errors import ArchsweepError

            raise ArchsweepError(f"{path} holds continuous latents (a vqvae.model=vae stage); the LM prior is "
                                 "trained on the discrete codes of a vqvae.model=vqvae stage")
        codes, train, size = z["codes"], z["train"], int(z["codebook_size"])
    return [tuple(c) for c in codes[train].tolist()], [tuple(c) for c in codes[~train].tolist()], size


def deepspeed_config(cfg: Config, world: int, total_steps: int) -> dict:
    lm = cfg.lm
    return {
        "train_batch_size": lm.batch_size,
        "gradient_accumulation_steps": lm.grad_accum,
        "train_micro_batch_size_per_gpu": lm.batch_size // (lm.grad_accum * world),
        "gradient_clipping": 1.0,
        # torch's Adam: DeepSpeed's own CPU Adam would JIT-compile an extension first (minutes, GBs)
        "optimizer": {"type": "AdamW", "params": {"lr": lm.lr, "weight_decay": lm.weight_decay, "torch_adam": True}},
        "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": max(total_steps, 1),
                                                           "warmup_num_steps": min(lm.warmup_steps, total_steps)}},
        "zero_optimization": {"stage": lm.zero_stage},
        "bf16": {"enabled": lm.bf16},
        "steps_per_print": 10**9,
    }


def train_loop(loop_config: dict) -> None:
    import deepspeed
    import ray
    import ray.train
    import torch.distributed as dist

    from archsweep.lm.models import build
    from archsweep.lm.sampling import IGNORE, collate

    # --- set up ---------------------------------------------------------------------------------------------
    os.environ.update(loop_config.get("env", {}))
    cfg = from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(cfg.seed)
    train_seqs, held_seqs, _ = load_codes(loop_config["codes"])
    lm = build(cfg.lm.name, loop_config["codebook_size"], cfg.vqvae.seq_len)
    micro = cfg.lm.batch_size // (cfg.lm.grad_accum * world)
    steps = max(1, len(train_seqs) // cfg.lm.batch_size)  # optimiser steps per epoch, equal on every rank
    engine, _, _, _ = deepspeed.initialize(model=lm.model, model_parameters=lm.model.parameters(),
                                           config=deepspeed_config(cfg, world, steps * cfg.lm.epochs))
    device = engine.device

    # --- resume ---------------------------------------------------------------------------------------------
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            try:
                _, client_state = engine.load_checkpoint(directory, tag=TAG)
            except Exception as exc:
                from archsweep.checkpoint import unreadable

                raise unreadable(checkpoint.path, exc, "Delete the stage's run directory "
                                 f"({Path(checkpoint.path).parent}) to train it from scratch.") from None
        start_epoch = client_state["epoch"] + 1

    for epoch in range(start_epoch, cfg.lm.epochs):
        # --- train ------------------------------------------------------------------------------------------
        engine.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_seqs))
        shard = order[rank::world]
        loss_sum, tokens = torch.zeros(2, dtype=torch.float64), 0
        start = time.perf_counter()
        for micro_step in range(steps * cfg.lm.grad_accum):
            rows = shard[micro_step * micro:(micro_step + 1) * micro]
            batch = {k: v.to(device) for k, v in collate(lm, [train_seqs[i] for i in rows]).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            tokens += int((batch["labels"] != IGNORE).sum())
        seconds = time.perf_counter() - start

        # --- held-out loss on this rank's share ---------------------------------------------------------------
        engine.eval()
        held = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            mine = held_seqs[rank::world]
            for first in range(0, len(mine), max(micro, 64)):
                batch = {k: v.to(device) for k, v in collate(lm, mine[first:first + max(micro, 64)]).items()}
                n = int((batch["labels"] != IGNORE).sum())
                held += torch.tensor([engine(**batch).loss.item() * n, n], dtype=torch.float64)
        totals = torch.cat([loss_sum, held, torch.tensor([tokens], dtype=torch.float64)])
        if world > 1:
            dist.all_reduce(totals)

        # --- checkpoint (every rank writes its shard) and report -----------------------------------------------
        metrics = {"epoch": epoch, "start_epoch": start_epoch, "loss": float(totals[0] / totals[1]),
                   "heldout_loss": float(totals[2] / max(totals[3], 1.0)),
                   "heldout_perplexity": math.exp(float(totals[2] / max(totals[3], 1.0))),
                   "tokens_per_s": float(totals[4]) / seconds, "lr": engine.get_lr()[0],
                   "node": ray.get_runtime_context().get_node_id()}  # where rank 0 ran, for multi-node runs
        last = epoch == cfg.lm.epochs - 1
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if last or (epoch + 1) % cfg.lm.checkpoint_every == 0:
                engine.save_checkpoint(directory, tag=TAG, client_state={"epoch": epoch})
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)


def fit(cfg: Config, codes_path: str | Path, out_dir: str | Path, env: dict[str, str] | None = None,
        log_level: str = "WARNING", callbacks: list | None = None):
    """Run `train_loop` on `cfg.lm.num_workers` Ray Train workers; rerunning on `out_dir` resumes."""
    from archsweep.train import run_trainer

    _, _, codebook_size = load_codes(codes_path)
    loop_config = {"config": to_dict(cfg), "env": env or {}, "codes": str(Path(codes_path).resolve()),
                   "codebook_size": codebook_size}
    return run_trainer(train_loop, loop_config, name=RUN_NAME, out_dir=out_dir, num_workers=cfg.lm.num_workers,
                       cpus_per_worker=cfg.lm.cpus_per_worker, use_gpu=cfg.lm.use_gpu,
                       max_failures=cfg.lm.max_failures, gpus_per_worker=cfg.lm.gpus_per_worker,
                       log_level=log_level, callbacks=callbacks)


def full_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """Ordinary (fp32, unsharded) weights from a DeepSpeed checkpoint of any ZeRO stage."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from archsweep.checkpoint import unreadable

    try:
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=TAG)
    except Exception as exc:
        raise unreadable(checkpoint_dir, exc, "Delete the LM stage's directory and run it again.") from None
