"""Pretrained checkpoints through the whole pipeline, offline: a decoder-only (gpt2) and an encoder-decoder (t5)
model saved locally with `save_pretrained` (no hub), fine-tuned fully and through LoRA adapters under DeepSpeed,
saved, loaded back, sampled and scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from archsweep.cli import cli
from archsweep.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.e2e]  # whole commands, minutes: the long suite

TINY = ["space=nasbench201", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2",
        "vqvae.seq_len=4", "vqvae.codebook_size=16", "train.epochs=2", "lm.epochs=1", "lm.batch_size=128",
        "sample.samples=200"]


@pytest.fixture(scope="module")
def lora_run(local_ray, data_dir, pretrained_checkpoint, tmp_path_factory):
    """`archsweep run` with the gpt2 checkpoint and LoRA, ZeRO-3 on 2 workers: the VQ-VAE stage the others share."""
    out = tmp_path_factory.mktemp("lora-run")
    overrides = [*TINY, f"lm.name=pretrained:{pretrained_checkpoint('gpt2')}", "lm.lora.rank=8",
                 "lm.num_workers=2", "lm.zero_stage=3"]
    result = CliRunner().invoke(cli, ["run", "-o", str(out), *overrides])
    assert result.exit_code == 0, (result.output, result.exception)
    return out, overrides


def check_samples_scored(metrics: dict, lm_dir) -> None:
    samples = np.load(lm_dir / "samples.npz")
    assert len(samples["texts"]) == metrics["samples"] == 200
    assert metrics["validity"] == pytest.approx(samples["valid"].mean())
    assert 0 <= metrics["valid_unique"] <= metrics["validity"] <= 1
    assert "accuracy_cifar10_val" in metrics and metrics["training"]["tokens_per_s"] > 0


def test_archsweep_run_fine_tunes_lora_adapters_and_saves_them_alone(lora_run, data_dir, pretrained_checkpoint):
    from archsweep.artifacts import load_lm
    from archsweep.stages.lm import Scorer, generate

    out, overrides = lora_run
    metrics = json.loads((out / "metrics.json").read_text())["lm"]
    check_samples_scored(metrics, out / "lm")
    saved = out / "lm" / "lm"
    assert (saved / "adapter_config.json").is_file() and not (saved / "model.safetensors").exists()
    adapter = (saved / "adapter_model.safetensors").stat().st_size
    assert adapter < 0.1 * (pretrained_checkpoint("gpt2") / "model.safetensors").stat().st_size

    # the adapters load onto the base model again and give the same samples, hence the same metrics
    cfg = load_config(overrides=overrides)
    again = generate(load_lm(cfg, saved), Scorer(cfg, out / "vqvae", str(data_dir)), cfg)
    assert {k: again[k] for k in ("validity", "uniqueness", "valid_unique")} == \
        {k: metrics[k] for k in ("validity", "uniqueness", "valid_unique")}


@pytest.mark.parametrize("family,lora", [("gpt2", False), ("t5", False), ("t5", True)])
def test_train_lm_fine_tunes_a_local_checkpoint(lora_run, pretrained_checkpoint, tmp_path, family, lora):
    out, _ = lora_run
    result = CliRunner().invoke(cli, ["train", "lm", "--vqvae", str(out / "vqvae"), "-o", str(tmp_path), *TINY,
                                      f"lm.name=pretrained:{pretrained_checkpoint(family)}",
                                      f"lm.lora.rank={8 if lora else 0}"])
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    check_samples_scored(metrics, tmp_path)
    saved = tmp_path / "lm"
    assert (saved / "adapter_config.json").is_file() == lora
    assert (saved / "model.safetensors").is_file() != lora
    assert (saved / "tokenizer.json").is_file()  # its own tokenizer travels with it
