"""Train the LM prior on the VQ-VAE's code sequences with DeepSpeed (ZeRO 0-3), data parallel.

`train_loop` runs on every worker and reads top to bottom: set up (data, model, DeepSpeed engine), resume, then
per epoch train, measure the held-out loss, checkpoint and report. The process group (gloo on CPU, NCCL on GPUs)
exists already, made by train/launch.py for Ray Train's workers or for the one worker in this process; DeepSpeed
joins it. Every rank writes its own ZeRO shard into the checkpoint, which `full_state_dict` turns back into
ordinary weights. Rerunning `fit` on the same directory resumes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from archsweep.checkpoint import unreadable
from archsweep.config import Config, from_dict, to_dict
from archsweep.errors import ArchsweepError
from archsweep.lm.models import add_lora, build
from archsweep.lm.sampling import IGNORE, collate
from archsweep.trace import mark
from archsweep.train import (
    LM_RUN_KEYS,
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

RUN_NAME = "lm"
TAG = "state"  # not "latest": DeepSpeed writes a file of that name beside the tag directory


def load_codes(path: str | Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], int]:
    """(training sequences, held-out sequences, codebook size) from a VQ-VAE stage's codes.npz."""
    with np.load(path) as z:
        if "codes" not in z.files:
            raise ArchsweepError(f"{path} holds continuous latents (a vqvae.model=vae stage); the LM prior is "
                                 "trained on the discrete codes of a vqvae.model=vqvae stage")
        codes, train, size = z["codes"], z["train"], int(z["codebook_size"])
    return [tuple(c) for c in codes[train].tolist()], [tuple(c) for c in codes[~train].tolist()], size


def deepspeed_config(cfg: Config, world: int, total_steps: int, batch: int) -> dict:
    lm, gpu = cfg.lm, cfg.lm.use_gpu
    # torch's AdamW either way: DeepSpeed's CPU Adam JIT-compiles an extension first (minutes, GBs) and its
    # FusedAdam needs the CUDA toolkit to build; on GPUs torch's fused kernel does the same one-launch update
    # (not on offloaded state, which is in host memory).
    optimizer = {"lr": scale.scaled_lr(lm.lr, batch, scale.LM_REFERENCE_BATCH), "weight_decay": lm.weight_decay,
                 "torch_adam": True} | ({"fused": True} if gpu and lm.offload == "none" else {})
    warmup = min(scale.scaled_warmup(lm.warmup_steps, batch, scale.LM_REFERENCE_BATCH), total_steps)
    zero: dict = {"stage": lm.zero_stage}
    if lm.offload != "none":
        zero["offload_optimizer"] = {"device": lm.offload}
        if lm.zero_stage == 3:
            zero["offload_param"] = {"device": lm.offload}
    return {
        "train_batch_size": batch,
        "gradient_accumulation_steps": lm.grad_accum,
        "train_micro_batch_size_per_gpu": batch // (lm.grad_accum * world),
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": optimizer},
        "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": max(total_steps, 1),
                                                           "warmup_num_steps": warmup}},
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,  # offload with torch's AdamW, as above
        "bf16": {"enabled": lm.bf16 and gpu},
        "steps_per_print": 10**9,
    }


def planned_steps(steps_per_epoch: int, epochs: int, max_steps: int) -> tuple[int, int]:
    """(optimiser steps in all, epochs that run): every epoch through, or cut at `max_steps` (0: no cut).

    >>> planned_steps(100, 20, 0), planned_steps(100, 20, 250), planned_steps(100, 2, 10_000)
    ((2000, 20), (250, 3), (200, 2))
    """
    total = steps_per_epoch * epochs if not max_steps else min(steps_per_epoch * epochs, max_steps)
    return total, math.ceil(total / steps_per_epoch)


def memory_footprint(engine) -> dict[str, int]:
    """What this rank holds, in bytes: its parameters (a ZeRO-3 partition, or the whole model), its optimizer
    state (Adam's moments and the fp32 master copies ZeRO 1-3 keep of their partition, wherever they live: with
    offload, in host memory) and its peak memory (resident set on CPU workers, allocated device memory on GPUs).
    Read from the tensors DeepSpeed partitioned, so it is what ZeRO actually did, not what it should do."""
    import resource

    def nbytes(t) -> int:
        return t.numel() * t.element_size()

    held = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]  # ZeRO-3: this rank's partition
    model = {t.data_ptr() for t in held if t.numel()}
    base = engine.optimizer
    while hasattr(base, "optimizer"):  # DeepSpeed's ZeRO / bf16 wrappers around the torch optimizer
        base = base.optimizer
    state = 0
    for p, moments in base.state.items():  # (ZeRO-3 empties param_groups between steps; the state stays)
        state += (0 if p.data_ptr() in model else nbytes(p)) + sum(nbytes(v) for v in moments.values()
                                                                   if torch.is_tensor(v))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if engine.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(engine.device)
    return {"param_bytes": sum(nbytes(t) for t in held), "optimizer_bytes": state,
            "peak_memory_bytes": peak}


def stale_build_locks(root: Path, now: float, compiling, older_than_s: float = 600.0) -> list[Path]:
    """Lock files of torch extension builds (DeepSpeed's first start on a machine builds one) that a killed build
    left behind: torch waits on such a lock for ever, without a word. Stale: older than `older_than_s` while
    `compiling()` says no compiler runs on this machine (asked only when there is a lock at all)."""
    locks = [p for p in (*root.glob("*/lock"), *root.glob("*/*/lock")) if now - p.stat().st_mtime > older_than_s]
    return sorted(locks) if locks and not compiling() else []


def _compiling() -> bool:
    import psutil

    return any(p.info["name"] in ("ninja", "cc1plus", "c++", "g++") for p in psutil.process_iter(["name"]))


def check_build_locks() -> None:
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    stale = stale_build_locks(root, time.time(), _compiling) if root.is_dir() else []
    if stale:
        raise ArchsweepError(f"{stale[0]} is left from a torch extension build that was interrupted (no compiler "
                             "runs, and it is over 10 minutes old); DeepSpeed would wait on it for ever. Delete it "
                             f"and run again: rm {' '.join(map(str, stale))}")


def train_loop(loop_config: dict) -> None:
    import deepspeed
    import ray
    import torch.distributed as dist

    # --- set up: every sequence becomes a row of one tensor, on the device, once ---------------------------
    entered = time.perf_counter()
    os.environ.update(loop_config.get("env", {}))
    cfg = from_dict(loop_config["config"])
    where = session(loop_config)  # this process, or a Ray Train worker
    rank, world = where.rank, where.world
    if rank == 0:
        mark("lm: loop entered")
    torch.manual_seed(cfg.seed)
    train_seqs, held_seqs, _ = load_codes(loop_config["codes"])
    batch = scale.global_batch(cfg.lm.batch_size, scale.LM_REFERENCE_BATCH, len(train_seqs), world,
                               cfg.lm.use_gpu, cfg.lm.grad_accum)
    micro = batch // (cfg.lm.grad_accum * world)
    steps = max(1, len(train_seqs) // batch)  # optimiser steps per epoch, equal on every rank
    total_steps, epochs = planned_steps(steps, cfg.lm.epochs, cfg.lm.max_steps)
    ds_config = deepspeed_config(cfg, world, total_steps, batch)
    check_build_locks()
    if cfg.lm.zero_stage == 3:  # transformers then builds (or loads) the model already sharded: a 1B model
        from transformers.integrations import HfDeepSpeedConfig  # never sits whole in one worker's memory

        deepspeed.init_distributed()  # joins the process group, which sharding at construction needs
        hf_zero3 = HfDeepSpeedConfig(ds_config)  # noqa: F841 (transformers holds a weak reference to it)
    lm = build(cfg.lm.name, loop_config["codebook_size"], cfg.vqvae.seq_len)
    if cfg.lm.gradient_checkpointing:
        lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.model.config.use_cache = False
    if cfg.lm.lora.rank:
        add_lora(lm, cfg.lm.lora.rank, cfg.lm.lora.alpha, cfg.lm.lora.dropout, cfg.lm.lora.target_modules)
    trainable = [p for p in lm.model.parameters() if p.requires_grad]
    if rank == 0:
        mark("lm: model built")
    engine, _, _, _ = deepspeed.initialize(model=lm.model, model_parameters=trainable, config=ds_config)
    if rank == 0:
        mark("lm: DeepSpeed engine ready")
    if cfg.lm.compile:
        engine.compile()
    device = engine.device
    data = {k: v.to(device) for k, v in collate(lm, train_seqs).items()}
    row_tokens = (data["labels"] != IGNORE).sum(1).cpu().numpy()
    held = {k: v[rank::world].contiguous().to(device) for k, v in collate(lm, held_seqs).items()} if held_seqs \
        else None
    eval_batch = max(micro, 1024)
    held_batches = math.ceil(math.ceil(len(held_seqs) / world) / eval_batch)  # the same count on every rank

    # --- resume ---------------------------------------------------------------------------------------------
    start_epoch, history = 0, []
    checkpoint = where.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            refuse_other_run(read_run_config(directory), loop_config["config"], LM_RUN_KEYS,
                             Path(checkpoint.path).parent)
            try:
                _, client_state = engine.load_checkpoint(directory, tag=TAG)
            except Exception as exc:
                raise unreadable(checkpoint.path, exc, "Delete the stage's run directory "
                                 f"({Path(checkpoint.path).parent}) to train it from scratch.") from None
            history = read_history(directory)
        start_epoch = client_state["epoch"] + 1
    if cfg.lm.early_stop and plateaued("lm", history, cfg.lm):
        start_epoch = epochs  # it had stopped on its plateau: nothing is left to train

    last_checkpoint = time.perf_counter()
    setup_s = last_checkpoint - entered  # data, model, process group, resume: the stage's fixed cost
    if rank == 0:
        mark("lm: set up")
    for epoch in range(start_epoch, epochs):
        # --- train: no host sync inside the epoch, the loss is summed on the device ------------------------------
        engine.train()
        micro_steps = min(steps, total_steps - epoch * steps) * cfg.lm.grad_accum  # lm.max_steps cuts the last
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_seqs))
        shard = order[rank::world][: micro_steps * micro]
        rows = torch.from_numpy(shard).to(device, non_blocking=True)
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        start = time.perf_counter()
        for micro_step in range(micro_steps):
            index = rows[micro_step * micro:(micro_step + 1) * micro]
            loss = engine(**{k: v[index] for k, v in data.items()}).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach().float()
        loss_sum = loss_sum.double().cpu()  # waits for the epoch's last step
        seconds = time.perf_counter() - start

        # --- held-out loss on this rank's share ---------------------------------------------------------------
        engine.eval()
        held_sum = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.no_grad():
            for first in range(0, held_batches * eval_batch, eval_batch):
                part = {k: v[first:first + eval_batch] for k, v in held.items()}
                n = (part["labels"] != IGNORE).sum()  # the tokens the loss is averaged over
                if len(part["labels"]) == 0:  # this rank's share ran out: ZeRO-3 needs every rank's forward
                    part, n = {k: v[:1] for k, v in held.items()}, n * 0
                held_sum += torch.stack([engine(**part).loss.double() * n, n.double()])
        totals = torch.cat([torch.tensor([float(loss_sum), micro_steps, float(row_tokens[shard].sum()),
                                          time.perf_counter() - last_checkpoint], dtype=torch.float64),
                            held_sum.cpu()])
        if world > 1:  # on the device: NCCL reduces GPU tensors only
            totals = totals.to(device)
            dist.all_reduce(totals)
            totals = totals.cpu()
            totals[3] /= world  # every rank then takes the same checkpoint decision

        # --- checkpoint (every rank writes its shard) and report -----------------------------------------------
        heldout = float(totals[4] / max(totals[5], 1.0))
        metrics = {"epoch": epoch, "start_epoch": start_epoch, "loss": float(totals[0] / totals[1]),
                   "heldout_loss": heldout, "heldout_perplexity": math.exp(heldout),
                   "tokens_per_s": float(totals[2]) / seconds, "lr": engine.get_lr()[0], "batch_size": batch,
                   "setup_s": setup_s, "steps": min(total_steps, (epoch + 1) * steps), **memory_footprint(engine),
                   "node": ray.get_runtime_context().get_node_id(), "host": host(),  # where rank 0 ran
                   "in_process": where.in_process}
        history.append(metrics)
        metrics["plateaued"] = plateaued("lm", history, cfg.lm)  # same on every rank
        stop = cfg.lm.early_stop and metrics["plateaued"]
        with tempfile.TemporaryDirectory() as directory:
            due = stop or scale.checkpoint_due(epoch, epochs, cfg.lm.checkpoint_every, cfg.lm.checkpoint_interval_s,
                                               float(totals[3]))
            if due:
                engine.save_checkpoint(directory, tag=TAG, client_state={"epoch": epoch})
                if rank == 0:
                    write_history(directory, history)
                    write_run_config(directory, loop_config["config"])
                last_checkpoint = time.perf_counter()
            where.report(metrics, directory if due else None)
            if rank == 0:
                mark(f"lm: epoch {epoch} {'checkpointed' if due else 'reported'}")
        if stop:
            break


def fit(cfg: Config, codes_path: str | Path, out_dir: str | Path, env: dict[str, str] | None = None,
        log_level: str = "WARNING", forward: Forward | None = None,
        in_process: bool | None = None):
    """Run `train_loop` on `cfg.lm.num_workers` workers; rerunning on `out_dir` resumes.
    `in_process`: where one worker runs (train/launch.py `run_trainer`; None decides by what this process holds)."""
    _, _, codebook_size = load_codes(codes_path)
    if latest := latest_checkpoint(run_dir_of(out_dir, RUN_NAME)):  # refused before any worker starts
        refuse_other_run(read_run_config(latest.path), to_dict(cfg), LM_RUN_KEYS, Path(latest.path).parent)
    loop_config = {"config": to_dict(cfg), "env": env or {}, "codes": str(Path(codes_path).resolve()),
                   "codebook_size": codebook_size}
    return run_trainer(train_loop, loop_config, name=RUN_NAME, out_dir=out_dir, num_workers=cfg.lm.num_workers,
                       cpus_per_worker=cfg.lm.cpus_per_worker, use_gpu=cfg.lm.use_gpu,
                       max_failures=cfg.lm.max_failures, gpus_per_worker=cfg.lm.gpus_per_worker,
                       log_level=log_level, forward=forward, in_process=in_process)


def full_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """Ordinary (fp32, unsharded) weights from a DeepSpeed checkpoint of any ZeRO stage."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=TAG)
    except Exception as exc:
        raise unreadable(checkpoint_dir, exc, "Delete the LM stage's directory and run it again.") from None
