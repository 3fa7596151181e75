"""The LM prior on DeepSpeed, on CPU: ZeRO-2 and ZeRO-3 with 2 Ray Train workers over gloo, one worker in this
process; checkpoints every rank writes, resume, and the full weights recovered from the shards for sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archsweep.config import load_config
from archsweep.errors import ArchsweepError

pytestmark = pytest.mark.ray

K, L = 16, 4


@pytest.fixture
def codes_file(tmp_path):
    """A codes artifact as the VQ-VAE stage writes it: 32 distinct sequences repeated, 10 % held out."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, K, size=(32, L))
    codes = patterns[rng.integers(0, 32, size=2000)].astype(np.int32)
    train = rng.random(2000) < 0.9
    path = tmp_path / "codes.npz"
    np.savez(path, codes=codes, train=train, hashes=np.zeros((2000, 16), np.uint8), codebook_size=np.array(K),
             seq_len=np.array(L))
    return path


def config(*overrides):
    return load_config(overrides=[f"vqvae.seq_len={L}", f"vqvae.codebook_size={K}", "lm.name=gpt2-tiny",
                                  "lm.batch_size=64", "lm.num_workers=2", "lm.lr=3e-3", "lm.warmup_steps=5",
                                  *overrides])


def test_zero2_trains_checkpoints_and_resumes(local_ray, codes_file, tmp_path):
    from archsweep.train import history
    from archsweep.train.lm import fit

    # epochs of well under the default 30 s between checkpoints: only the last epoch writes one
    first = fit(config("lm.zero_stage=2", "lm.epochs=3"), codes_file, tmp_path / "run", local_ray)
    assert first.error is None, first.error
    assert first.metrics_dataframe["epoch"].tolist() == [2]
    trained = history(first)  # every epoch, kept in the checkpoint
    assert trained["epoch"].tolist() == [0, 1, 2]
    assert trained["heldout_loss"].iloc[-1] < trained["heldout_loss"].iloc[0]
    assert (trained["tokens_per_s"] > 0).all() and (trained["batch_size"] == 64).all()
    from archsweep.lm.models import parameter_count

    full = 4 * parameter_count("gpt2-tiny", K, L)  # ZeRO-2 shards optimizer state and gradients, not parameters
    assert (trained["param_bytes"] == full).all()
    assert trained["optimizer_bytes"].iloc[-1] == pytest.approx(1.5 * full, rel=0.01)  # moments + master, halved

    resumed = fit(config("lm.zero_stage=2", "lm.epochs=4"), codes_file, tmp_path / "run", local_ray)
    assert resumed.error is None, resumed.error
    after = history(resumed)
    assert after["epoch"].tolist() == [0, 1, 2, 3] and after["start_epoch"].tolist() == [0, 0, 0, 3]
    assert after.iloc[:3].equals(trained)  # the first run's epochs as they were, none trained again

    with pytest.raises(ArchsweepError, match=r"lm.name: 'gpt2-tiny' -> 'llama-tiny'"):  # another model: refused
        fit(config("lm.zero_stage=2", "lm.epochs=5", "lm.name=llama-tiny"), codes_file, tmp_path / "run", local_ray)


def test_early_stop_ends_training_on_the_held_out_loss_plateau(local_ray, codes_file, tmp_path):
    """lm.min_delta 100 nats: no epoch beats the first by as much, so with patience 1 training stops after epoch 1
    of 5 (checkpointed there, though 30 s have not passed), and running it again trains nothing more. One worker:
    DeepSpeed in this process, its checkpoint where Ray Train's would be, loaded again by the rerun."""
    from archsweep.train import history
    from archsweep.train.lm import fit

    stop = config("lm.num_workers=1", "lm.zero_stage=2", "lm.epochs=5", "lm.early_stop=true", "lm.patience=1", "lm.min_delta=100",
                  "lm.min_epochs=0")
    first = fit(stop, codes_file, tmp_path / "run", local_ray)
    assert first.error is None, first.error
    trained = history(first)
    assert trained["epoch"].tolist() == [0, 1] and trained["plateaued"].tolist() == [False, True]
    assert trained["in_process"].all()
    assert [p.name for p in (tmp_path / "run" / "ray" / "lm").iterdir()] == ["checkpoint_000001"]
    again = fit(stop, codes_file, tmp_path / "run", local_ray)
    assert again.error is None and history(again).equals(trained)


def test_zero3_checkpoint_gives_full_weights_for_sampling(local_ray, codes_file, tmp_path):
    from archsweep.lm.models import build
    from archsweep.lm.sampling import IGNORE, collate, sample
    from archsweep.train import history
    from archsweep.train.lm import fit, full_state_dict, load_codes

    # lm.max_steps cuts the second epoch short: 28 optimiser steps an epoch, 40 in all
    result = fit(config("lm.zero_stage=3", "lm.epochs=3", "lm.max_steps=40"), codes_file, tmp_path / "run",
                 local_ray)
    assert result.error is None, result.error
    trained = history(result)
    assert trained["epoch"].tolist() == [0, 1] and trained["steps"].tolist() == [28, 40]

    # each rank holds half of every parameter (rounded up), measured from what DeepSpeed partitioned; Adam's two
    # moments and the fp32 master copy are of that half too
    lm = build("gpt2-tiny", K, L)
    half = sum(4 * -(-p.numel() // 2) for p in lm.model.parameters())
    assert (trained["param_bytes"] == half).all()
    assert trained["optimizer_bytes"].iloc[-1] == pytest.approx(3 * half, rel=0.01)
    assert (trained["peak_memory_bytes"] > 0).all()
    with result.checkpoint.as_directory() as directory:
        weights = full_state_dict(directory)  # reassembled from both ranks' parameter shards
    missing, unexpected = lm.model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected

    # the reassembled weights are exactly the trained model: they reproduce the held-out loss the workers reported
    _, held, _ = load_codes(codes_file)
    lm.model.eval()
    with torch.no_grad():
        batch = collate(lm, held)
        tokens = (batch["labels"] != IGNORE).sum()
        loss = lm.model(**batch).loss
    assert float(loss) == pytest.approx(result.metrics["heldout_loss"], abs=1e-4)
    assert tokens > 0

    codes, texts = sample(lm, 100, K, seed=0)
    assert len(texts) == 100 and sum(c is not None for c in codes) >= 50


def test_vae_latents_are_refused_with_the_reason(tmp_path):
    from archsweep.errors import ArchsweepError
    from archsweep.train.lm import load_codes

    path = tmp_path / "codes.npz"
    np.savez(path, latents=np.zeros((10, L, 8), np.float32), train=np.ones(10, bool), codebook_size=np.array(K))
    with pytest.raises(ArchsweepError, match="continuous latents .* vqvae.model=vqvae"):
        load_codes(path)


@pytest.mark.parametrize("name", ["llama-tiny", "t5-tiny"])
def test_other_families_train_under_deepspeed(local_ray, codes_file, tmp_path, name):
    from archsweep.lm.models import build
    from archsweep.train.lm import fit, full_state_dict

    result = fit(config(f"lm.name={name}", "lm.num_workers=1", "lm.zero_stage=2", "lm.epochs=1"), codes_file,
                 tmp_path / "run", local_ray)
    assert result.error is None, result.error
    assert result.metrics["epoch"] == 0 and np.isfinite(result.metrics["heldout_loss"])
    with result.checkpoint.as_directory() as directory:
        weights = full_state_dict(directory)
    missing, unexpected = build(name, K, L).model.load_state_dict(weights, strict=False)
    assert not unexpected and all("embed" in k or "lm_head" in k or "shared" in k for k in missing)


def test_a_lock_left_by_a_killed_extension_build_is_named_not_waited_on(tmp_path):
    import os
    import time

    from archsweep.train.lm import stale_build_locks

    lock = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    now = time.time()
    assert stale_build_locks(tmp_path, now, lambda: False) == []  # a build may be starting: fresh locks are fine
    os.utime(lock, (now - 3600, now - 3600))
    assert stale_build_locks(tmp_path, now, lambda: True) == []  # a compiler runs: the build is alive
    assert stale_build_locks(tmp_path, now, lambda: False) == [lock]
