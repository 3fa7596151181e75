"""One configuration end to end on a real local Ray: VQ-VAE -> codes -> LM (DeepSpeed) -> samples -> metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from archsweep.config import load_config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from archsweep.runtime import init_local_ray, worker_env

    init_local_ray(num_cpus=2)
    yield worker_env()
    ray.shutdown()


def test_pipeline_writes_every_artifact_and_one_set_of_metrics(local_ray, data_dir, tmp_path):
    from archsweep.stages import pipeline

    cfg = load_config(overrides=[
        "space=nasbench201", "vqvae.hidden_dim=32", "vqvae.decoder_hidden=128", "vqvae.gin_layers=2",
        "vqvae.seq_len=4", "vqvae.codebook_size=16", "train.epochs=2", "train.num_workers=2",
        "lm.name=gpt2-tiny", "lm.epochs=1", "lm.num_workers=2", "lm.batch_size=128", "sample.samples=300"])
    results = pipeline.run(cfg, tmp_path, local_ray, str(data_dir))

    for path in ("vqvae/model.pt", "vqvae/codes.npz", "vqvae/metrics.json", "lm/lm/config.json",
                 "lm/samples.npz", "lm/metrics.json", "metrics.json"):
        assert (tmp_path / path).exists(), path
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(results))

    lm = results["lm"]
    assert results["generation"] == {k: lm[k] for k in results["generation"]} and "valid_unique" in results["generation"]
    samples = np.load(tmp_path / "lm" / "samples.npz")
    assert len(samples["texts"]) == lm["samples"] == 300
    assert lm["validity"] == pytest.approx(samples["valid"].mean())
    for key in ("validity", "uniqueness", "novelty", "uniqueness_str", "novelty_str", "valid_unique",
                "valid_unique_novel"):
        assert 0 <= lm[key] <= 1
    assert lm["valid_unique"] == pytest.approx(lm["validity"] * lm["uniqueness"])
    assert lm["samples_per_s"] > 0 and lm["training"]["tokens_per_s"] > 0
    for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
        stats = lm[f"accuracy_{dataset}_val"]
        assert stats["coverage"] == 1.0 or lm["validity"] == 0  # NAS-Bench-201 has every valid cell

    # the saved LM samples again without retraining, and the same seed gives the same samples and metrics
    from archsweep.stages.lm import Scorer, generate, load_lm

    again = generate(load_lm(cfg, tmp_path / "lm" / "lm"), Scorer(cfg, tmp_path / "vqvae", str(data_dir)), cfg)
    assert {k: again[k] for k in results["generation"]} == results["generation"]
