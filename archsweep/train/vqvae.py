"""Train the graph VQ-VAE (or the continuous VAE baseline): data parallel, checkpointed, resumable.

`train_loop` runs on every worker (Ray Train's, or this process when one worker does the work: train/launch.py)
and reads top to bottom: set up, resume, then per epoch train, evaluate on the held-out cells, checkpoint and
report. `fit` launches it; rerunning `fit` on the same output directory resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from archsweep.checkpoint import torch_load
from archsweep.config import Config, from_dict, to_dict
from archsweep.data import load_cells
from archsweep.metrics import codebook_stats_from_counts
from archsweep.models.vqvae import build_model, decode_graph, start_training
from archsweep.spaces import get_space
from archsweep.trace import mark
from archsweep.train import (
    VQVAE_RUN_KEYS,
    host,
    plateaued,
    read_history,
    read_run_config,
    refuse_other_run,
    scale,
    write_history,
    write_run_config,
)
from archsweep.train.launch import Forward, latest_checkpoint, run_dir_of, run_trainer, session

RUN_NAME = "vqvae"


def train_loop(loop_config: dict) -> None:
    import ray
    import torch.distributed as dist

    # --- set up: the whole space's cells are two tensors, on the device, once ---------------------------------
    entered = time.perf_counter()
    os.environ.update(loop_config.get("env", {}))
    cfg = from_dict(loop_config["config"])
    where = session(loop_config)  # this process, or a Ray Train worker
    rank, world = where.rank, where.world
    if rank == 0:
        mark("vqvae: loop entered")
    torch.manual_seed(cfg.seed)
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it; no effect on CPUs
    space = get_space(cfg.space)
    device = where.device
    ops, adj, train_mask = load_cells(cfg)
    ops, adj = ops.to(device), adj.to(device)
    train_idx, held_idx = torch.from_numpy(np.flatnonzero(train_mask)), torch.from_numpy(np.flatnonzero(~train_mask))
    module = build_model(cfg.vqvae, len(space.op_vocab), space.max_vertices).to(device)
    start_training(module, ops[train_idx.to(device)], adj[train_idx.to(device)])  # a resume overwrites it
    model = where.prepare_model(module)
    if cfg.train.compile:
        model = torch.compile(model)
    batch = scale.global_batch(cfg.train.batch_size, scale.VQVAE_REFERENCE_BATCH, len(train_idx), world,
                               cfg.train.use_gpu) // world  # this worker's share of the global batch
    lr = scale.scaled_lr(cfg.train.lr, batch * world, scale.VQVAE_REFERENCE_BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay,
                                 fused=device.type == "cuda")
    steps = max(1, len(train_idx) // (batch * world))  # equal on every rank, so data-parallel steps stay paired
    total_steps = steps * cfg.train.epochs
    # float, not numpy: the schedule's state goes into checkpoints, which hold plain data only
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: float(
        0.5 * (1 + np.cos(np.pi * min(s, total_steps) / total_steps)) if cfg.train.lr_schedule == "cosine" else 1.0))

    # --- resume ---------------------------------------------------------------------------------------------
    start_epoch, history = 0, []
    checkpoint = where.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch_load(Path(directory) / "state.pt", map_location=device,
                               fix=f"Delete the stage's run directory ({Path(checkpoint.path).parent}) to train "
                               "it from scratch.")
            history = read_history(directory)
        refuse_other_run(state.get("config"), loop_config["config"], VQVAE_RUN_KEYS, Path(checkpoint.path).parent)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"] + 1
    t = cfg.train
    if t.early_stop and plateaued("vqvae", history, t):
        start_epoch = t.epochs  # it had stopped on its plateau: nothing is left to train

    last_checkpoint = time.perf_counter()
    setup_s = last_checkpoint - entered  # data, model, process group, resume: the stage's fixed cost
    if rank == 0:
        mark("vqvae: set up")
    for epoch in range(start_epoch, cfg.train.epochs):
        # --- train: no host sync inside the epoch, the losses are summed on the device --------------------------
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        shard = order[rank::world][: steps * batch].to(device, non_blocking=True)
        sums = torch.zeros(3, device=device)
        start = time.perf_counter()
        for step in range(steps):
            rows = shard[step * batch:(step + 1) * batch]
            out = model(ops[rows], adj[rows])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            schedule.step()
            sums += torch.stack([out.loss.detach(), out.recon_loss.detach(), out.latent_loss.detach()])
        sums = sums.cpu()  # waits for the epoch's last step
        seconds = time.perf_counter() - start

        # --- evaluate on this rank's share of the held-out cells ---------------------------------------------
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # exact reconstructions, cells
        counts = torch.zeros(cfg.vqvae.codebook_size, dtype=torch.float64, device=device)
        with torch.no_grad():
            for rows in held_idx[rank::world].to(device).split(4096):
                o, a = ops[rows], adj[rows]
                out = module(o, a)
                pred_ops, pred_adj = decode_graph(out.op_logits, out.adj_logits)
                exact = ((pred_ops == o).all(1) & (pred_adj == a).flatten(1).all(1)).sum()
                totals += torch.stack([exact.double(), torch.tensor(len(rows), dtype=torch.float64, device=device)])
                if out.codes is not None:
                    counts += torch.bincount(out.codes.flatten(), minlength=cfg.vqvae.codebook_size).double()
        since_checkpoint = torch.tensor([time.perf_counter() - last_checkpoint], dtype=torch.float64, device=device)
        if world > 1:  # on the device: NCCL reduces GPU tensors only
            sums = sums.to(device)
            for tensor in (totals, counts, sums, since_checkpoint):
                dist.all_reduce(tensor)
            sums /= world
            since_checkpoint /= world
        totals, counts, sums = totals.cpu(), counts.cpu(), sums.cpu()

        # --- checkpoint and report ----------------------------------------------------------------------------
        metrics = {
            "epoch": epoch,
            "start_epoch": start_epoch,  # > 0: this attempt resumed from a checkpoint (after a failure)
            "loss": float(sums[0]) / steps,
            "recon_loss": float(sums[1]) / steps,
            "latent_loss": float(sums[2]) / steps,
            "heldout_exact_graph": float(totals[0] / totals[1]),
            "graphs_per_s": steps * batch * world / seconds,
            "lr": schedule.get_last_lr()[0],
            "node": ray.get_runtime_context().get_node_id(),  # where rank 0 ran, for multi-node runs
            "host": host(),
            "batch_size": batch * world,
            "setup_s": setup_s,
            "in_process": where.in_process,  # trained in the caller's process, not on Ray Train workers
        }
        if cfg.vqvae.model == "vqvae":
            metrics |= codebook_stats_from_counts(counts.numpy())
        history.append(metrics)
        metrics["plateaued"] = plateaued("vqvae", history, t)  # same on every rank
        stop = t.early_stop and metrics["plateaued"]
        due = stop or scale.checkpoint_due(epoch, t.epochs, t.checkpoint_every, t.checkpoint_interval_s,
                                           float(since_checkpoint))
        if due:
            last_checkpoint = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0 and due:
                torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "epoch": epoch,
                            "config": to_dict(cfg)}, Path(directory) / "state.pt")
                write_history(directory, history)
                write_run_config(directory, loop_config["config"])
            where.report(metrics, directory if rank == 0 and due else None)
        if rank == 0:
            mark(f"vqvae: epoch {epoch} {'checkpointed' if due else 'reported'}")
        if stop:
            break


def fit(cfg: Config, out_dir: Path, env: dict[str, str] | None = None, log_level: str = "WARNING",
        forward: Forward | None = None, in_process: bool | None = None):
    """Run `train_loop` on `cfg.train.num_workers` workers; rerunning on `out_dir` resumes.
    `in_process`: where one worker runs (train/launch.py `run_trainer`; None decides by what this process holds)."""
    t = cfg.train
    if latest := latest_checkpoint(run_dir_of(out_dir, RUN_NAME)):  # refused before any worker starts
        refuse_other_run(read_run_config(latest.path), to_dict(cfg), VQVAE_RUN_KEYS, Path(latest.path).parent)
    return run_trainer(train_loop, {"config": to_dict(cfg), "env": env or {}}, name=RUN_NAME, out_dir=out_dir,
                       num_workers=t.num_workers, cpus_per_worker=t.cpus_per_worker, use_gpu=t.use_gpu,
                       max_failures=t.max_failures, gpus_per_worker=t.gpus_per_worker,
                       log_level=log_level, forward=forward, in_process=in_process)
