"""How a run follows its device (archsweep.train.scale): exact batches for the real data set sizes, the learning
rate and warmup rule, and when a checkpoint is written."""

from __future__ import annotations

import math

import pytest

from archsweep.config import ConfigError, load_config
from archsweep.train import scale

NB201_TRAIN, NB101_TRAIN = 14_062, 381_262  # 90 % of 15,625 and of 423,624 cells


@pytest.mark.parametrize("examples, reference, workers, use_gpu, expected", [
    (NB201_TRAIN, 64, 1, False, 64),  # CPU: the reference batch, whatever the data
    (NB101_TRAIN, 256, 2, False, 256),
    (NB201_TRAIN, 64, 1, True, 512),  # 512 leaves 27 steps an epoch; 1,024 would leave 13
    (NB201_TRAIN, 256, 1, True, 512),
    (NB101_TRAIN, 64, 1, True, 4096),  # the per-GPU cap
    (NB101_TRAIN, 64, 4, True, 8192),  # 2,048 per GPU: 4 x 4,096 would leave 23 steps
    (1_000, 64, 1, True, 64),  # never below the reference batch
    (1_000, 64, 3, True, 66),  # ... as a multiple of the workers
])
def test_auto_batch(examples, reference, workers, use_gpu, expected):
    batch = scale.global_batch("auto", reference, examples, workers, use_gpu)
    assert batch == expected
    assert batch % workers == 0


def test_a_number_is_taken_as_given():
    assert scale.global_batch(100, 64, NB201_TRAIN, 2, True) == 100
    # micro batch x accumulation x workers: 1,024 x 4 x 2 (2,048 would leave 23 steps an epoch)
    assert scale.global_batch("auto", 64, NB101_TRAIN, 2, True, grad_accum=4) == 1024 * 4 * 2


def test_learning_rate_and_warmup_follow_the_batch():
    assert scale.scaled_lr(5e-4, 64, 64) == 5e-4
    assert scale.scaled_lr(5e-4, 4096, 64) == pytest.approx(4e-3)  # sqrt(64) = 8
    assert scale.scaled_lr(1e-3, 512, 256) == pytest.approx(1e-3 * math.sqrt(2))
    assert scale.scaled_warmup(100, 64, 64) == 100
    assert scale.scaled_warmup(400, 512, 64) == 50  # as many sequences: 25,600
    assert scale.scaled_warmup(100, 512, 64) == 20  # 13 would do the sequences; never under 20 steps
    assert scale.scaled_warmup(100, 4096, 64) == 20
    assert scale.scaled_warmup(5, 256, 64) == 5 and scale.scaled_warmup(0, 4096, 64) == 0


def test_checkpoint_cadence():
    due = scale.checkpoint_due
    assert due(9, 10, every=5, interval_s=1e9, since_last_s=0)  # the last epoch always
    assert not due(0, 10, every=1, interval_s=30, since_last_s=2)  # 2-s epochs: not yet
    assert due(14, 20, every=1, interval_s=30, since_last_s=31)
    assert not due(2, 10, every=2, interval_s=0, since_last_s=100)  # every 2 epochs: epochs 1, 3, 5 ...
    assert due(3, 10, every=2, interval_s=0, since_last_s=0)
    assert due(1, 10, every=2, interval_s=0, since_last_s=0)


def test_sample_batch():
    assert scale.sample_batch("auto", on_gpu=False) == 1_000
    assert scale.sample_batch("auto", on_gpu=True) == 10_000
    assert scale.sample_batch(256, on_gpu=True) == 256


def test_batch_settings_in_configs():
    cfg = load_config()
    assert cfg.train.batch_size == "auto" and cfg.lm.batch_size == "auto" and cfg.sample.batch_size == "auto"
    assert load_config(overrides=["lm.batch_size=512"]).lm.batch_size == 512
    for bad in ("lm.batch_size=large", "lm.batch_size=0", "train.batch_size=1.5", "sample.batch_size=true"):
        with pytest.raises(ConfigError, match=r"allowed: \"auto\" or an integer >= 1"):
            load_config(overrides=[bad])
    with pytest.raises(ConfigError, match="multiple of 'lm.grad_accum'"):
        load_config(overrides=["lm.batch_size=100", "lm.num_workers=3"])
    load_config(overrides=["lm.num_workers=3"])  # auto is always a multiple
    # bf16 is the GPU default; CPU workers ignore it rather than refusing the config
    assert load_config().lm.bf16 and not load_config().lm.use_gpu
