"""How a training run follows its device: the batch, the learning rate and warmup that go with it, and when to
checkpoint. Small pure functions, shared by both stages and the benchmarks.

A GPU is idle at the CPU's batch sizes (a tiny model's step is a few kernel launches), so `batch_size: auto` takes
the CPU batch on CPU workers and, on GPU workers, the largest power of two per GPU up to `GPU_MAX_PER_WORKER` that
still leaves an epoch `MIN_STEPS_PER_EPOCH` optimiser steps (NAS-Bench-201's 14k cells: 512; NAS-Bench-101's
381k: 4,096). The learning rate a config gives is the one for the CPU batch; another batch scales it by
sqrt(batch / reference) (the usual rule for Adam) and keeps the warmup as long in sequences seen (at least
20 steps).
"""

from __future__ import annotations

import math

GPU_MAX_PER_WORKER = 4096
MIN_STEPS_PER_EPOCH = 25
MIN_WARMUP_STEPS = 20
VQVAE_REFERENCE_BATCH = 256  # train.lr and the CPU default batch
LM_REFERENCE_BATCH = 64  # lm.lr, lm.warmup_steps and the CPU default batch
CPU_SAMPLE_BATCH, GPU_SAMPLE_BATCH = 1_000, 10_000


def global_batch(setting: int | str, reference: int, examples: int, workers: int, use_gpu: bool,
                 grad_accum: int = 1) -> int:
    """The global batch of a run: `setting` itself when it is a number; for "auto" the reference (CPU) batch, or
    on GPUs the largest `2^k x grad_accum x workers` (2^k per step per worker at most `GPU_MAX_PER_WORKER`) that
    still gives an epoch of `examples` at least `MIN_STEPS_PER_EPOCH` steps, and never below the reference."""
    if setting != "auto":
        return int(setting)
    if not use_gpu:
        return reference
    per_step = GPU_MAX_PER_WORKER
    while per_step > 1 and per_step * grad_accum * workers > max(reference, examples // MIN_STEPS_PER_EPOCH):
        per_step //= 2
    batch = per_step * grad_accum * workers
    if batch < reference:  # a multiple of grad_accum x workers, the smallest at or above the reference
        unit = grad_accum * workers
        batch = unit * math.ceil(reference / unit)
    return batch


def scaled_lr(lr: float, batch: int, reference: int) -> float:
    """The learning rate for `batch`, given the one for `reference` (square-root scaling)."""
    return lr * math.sqrt(batch / reference)


def scaled_warmup(steps: int, batch: int, reference: int) -> int:
    """Warmup steps at `batch` covering as many sequences as `steps` at `reference`, but never fewer than
    `MIN_WARMUP_STEPS` (a large batch's larger learning rate is reached over at least that many steps); 0 stays 0."""
    if steps == 0:
        return 0
    return max(math.ceil(steps * reference / batch), min(steps, MIN_WARMUP_STEPS))


def checkpoint_due(epoch: int, epochs: int, every: int, interval_s: float, since_last_s: float) -> bool:
    """Whether an epoch ends with a checkpoint: the last one always; otherwise every `every` epochs once at least
    `interval_s` seconds have passed since the previous checkpoint (so epochs of seconds do not spend their time
    writing checkpoints)."""
    if epoch == epochs - 1:
        return True
    return (epoch + 1) % every == 0 and since_last_s >= interval_s


def sample_batch(setting: int | str, on_gpu: bool) -> int:
    if setting != "auto":
        return int(setting)
    return GPU_SAMPLE_BATCH if on_gpu else CPU_SAMPLE_BATCH
