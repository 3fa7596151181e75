"""Shared by the bench scripts: the device's measured matmul peak, model FLOPs per token, and the plain PyTorch
loops each stage is measured against: the same model, data order, batch, optimiser, schedule and clipping as the
stage's Ray Train loop, in this process with torch alone, the data on the device beforehand, bf16 autocast and
fused AdamW on a GPU. They are the ceiling a stage's speed is quoted against (a ratio, measured in the same run).
"""

from __future__ import annotations

import time

import numpy as np
import torch

CPU_PEAK_N, GPU_PEAK_N = 2048, 8192


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str = "cpu", dtype=None, threads: int | None = None) -> float:
    """Best FLOP/s of a square matrix multiply over a few seconds (`threads`: the CPU threads torch may use)."""
    dtype = dtype or torch.float32
    n = CPU_PEAK_N if device == "cpu" else GPU_PEAK_N
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        best = 0.0
        for _ in range(8):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(old)


def flops_per_token(cfg, train_seqs: list, codebook_size: int, batch: int = 64) -> float:
    """Model FLOPs of one training step (forward and backward) per target token, counted by torch on a real
    batch: the numerator of model FLOPs utilisation."""
    from torch.utils.flop_counter import FlopCounterMode

    from archsweep.lm.models import build
    from archsweep.lm.sampling import IGNORE, collate

    lm = build(cfg.lm.name, codebook_size, cfg.vqvae.seq_len)
    data = collate(lm, train_seqs[:batch])
    with FlopCounterMode(display=False) as counter:
        lm.model(**data).loss.backward()
    return counter.get_total_flops() / int((data["labels"] != IGNORE).sum())


def _threads(device, threads: int | None):
    """Torch's CPU threads as a Ray Train worker with `threads` CPUs has them (restored by the caller)."""
    old = torch.get_num_threads()
    if threads and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    return old


def plain_lm_loop(cfg, train_seqs: list, codebook_size: int, batch: int, device: str = "cpu",
                  threads: int | None = None) -> tuple[float, float]:
    """`train.lm.train_loop` on one worker without Ray or DeepSpeed: (wall seconds including model construction
    and moving the data, tokens/s while training)."""
    from archsweep.lm.models import build
    from archsweep.lm.sampling import IGNORE, collate
    from archsweep.train import scale

    old = _threads(device, threads)
    try:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        lm = build(cfg.lm.name, codebook_size, cfg.vqvae.seq_len)
        model = lm.model.to(device)
        gpu = torch.device(device).type == "cuda"
        data = {k: v.to(device) for k, v in collate(lm, train_seqs).items()}
        row_tokens = (data["labels"] != IGNORE).sum(1).cpu().numpy()
        steps = max(1, len(train_seqs) // batch)
        total = steps * cfg.lm.epochs
        lr = scale.scaled_lr(cfg.lm.lr, batch, scale.LM_REFERENCE_BATCH)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.lm.weight_decay, fused=gpu)
        warmup = min(scale.scaled_warmup(cfg.lm.warmup_steps, batch, scale.LM_REFERENCE_BATCH), total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (
            1 + np.cos(np.pi * min(1.0, max(0, s - warmup) / max(total - warmup, 1)))))
        tokens, train_seconds = 0, 0.0
        for epoch in range(cfg.lm.epochs):
            model.train()
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_seqs))[: steps * batch]
            rows = torch.from_numpy(order).to(device)
            loss_sum = torch.zeros((), device=device)
            sync(device)
            tick = time.perf_counter()
            for step in range(steps):
                index = rows[step * batch:(step + 1) * batch]
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu and cfg.lm.bf16):
                    loss = model(**{k: v[index] for k, v in data.items()}).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                loss_sum += loss.detach().float()
            float(loss_sum)
            train_seconds += time.perf_counter() - tick
            tokens += int(row_tokens[order].sum())
        return time.perf_counter() - start, tokens / train_seconds
    finally:
        torch.set_num_threads(old)


def plain_vqvae_loop(cfg, batch: int, device: str = "cpu", threads: int | None = None) -> tuple[float, float]:
    """`train.vqvae.train_loop` on one worker without Ray: (wall seconds including building the cells' tensors,
    graphs/s while training)."""
    from archsweep.data import load_cells
    from archsweep.models.vqvae import build_model, start_training
    from archsweep.spaces import get_space
    from archsweep.train import scale

    old = _threads(device, threads)
    try:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        torch.set_float32_matmul_precision("high")
        space = get_space(cfg.space)
        ops, adj, train_mask = load_cells(cfg)
        ops, adj = ops.to(device), adj.to(device)
        train_idx = torch.from_numpy(np.flatnonzero(train_mask))
        model = build_model(cfg.vqvae, len(space.op_vocab), space.max_vertices).to(device)
        start_training(model, ops[train_idx.to(device)], adj[train_idx.to(device)])
        optimizer = torch.optim.Adam(model.parameters(), lr=scale.scaled_lr(cfg.train.lr, batch,
                                                                            scale.VQVAE_REFERENCE_BATCH),
                                     weight_decay=cfg.train.weight_decay, fused=torch.device(device).type == "cuda")
        steps = max(1, len(train_idx) // batch)
        total = steps * cfg.train.epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: float(
            0.5 * (1 + np.cos(np.pi * min(s, total) / total))))
        graphs, train_seconds = 0, 0.0
        for epoch in range(cfg.train.epochs):
            model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(epoch))]
            rows = order[: steps * batch].to(device)
            sums = torch.zeros(3, device=device)
            sync(device)
            tick = time.perf_counter()
            for step in range(steps):
                index = rows[step * batch:(step + 1) * batch]
                out = model(ops[index], adj[index])
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                schedule.step()
                sums += torch.stack([out.loss.detach(), out.recon_loss.detach(), out.latent_loss.detach()])
            sums.cpu()
            train_seconds += time.perf_counter() - tick
            graphs += steps * batch
        return time.perf_counter() - start, graphs / train_seconds
    finally:
        torch.set_num_threads(old)
