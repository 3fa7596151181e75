"""One configuration end to end: VQ-VAE -> codes -> LM -> samples -> metrics (-> search), each stage in its own
directory. The one composition of the stages: `archsweep run` calls it, and so does every sweep trial, with what
differs between them passed in (where the VQ-VAE stage comes from, callbacks on the LM's epochs).

The run directory's layout is `archsweep.layout.RunDir`; `metrics.json` joins the stages' metrics, with the headline
generation metrics under `generation` (for the continuous VAE baseline: its prior samples, as it has no LM). With
`search.enabled` a search runs last: lm_guided and lm_ranker with this run's own prior; a VAE run, which has no
prior, runs the strategies that need none (config validation refuses the others). A stage whose directory already
holds a finished run is not trained again, so rerunning an interrupted pipeline continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from archsweep.config import Config, to_dict
from archsweep.layout import RunDir
from archsweep.metrics import GENERATION
from archsweep.stages import lm, search, vqvae
from archsweep.train.launch import Forward

# (config) -> (the VQ-VAE stage's metrics, its directory, whether an earlier run had trained it)
VQVAEProvider = Callable[[Config], tuple[dict, Path, bool]]


def run(cfg: Config, out_dir: str | Path, env: dict[str, str] | None = None, data_dir: str | None = None,
        log_level: str = "WARNING", *, vqvae_stage: VQVAEProvider | None = None,
        lm_forward: Forward | None = None) -> dict:
    """Run (or continue) every stage into `out_dir`; returns what `metrics.json` holds. `vqvae_stage`: where the
    VQ-VAE stage comes from (default: trained in `out_dir/vqvae`; a sweep shares one between trials).
    `lm_forward`: where the LM stage's epoch reports go too (a sweep trial sends them to Tune)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if vqvae_stage is None:
        run_dir = RunDir(out_dir)
        vq, reused = vqvae.run(cfg, run_dir.vqvae.dir, env, log_level), False
    else:
        vq, shared, reused = vqvae_stage(cfg)
        run_dir = RunDir(out_dir, Path(shared))
    run_dir.root.mkdir(parents=True, exist_ok=True)
    results = {"config": to_dict(cfg), "vqvae": {k: v for k, v in vq.items() if k != "config"},
               "vqvae_reused": reused, "vqvae_dir": str(run_dir.vqvae.dir)}
    if cfg.vqvae.model == "vae":  # the continuous baseline generates by sampling its own prior: no LM
        results["generation"] = vq["prior_samples"]
    else:
        prior = lm.run(cfg, run_dir.vqvae.dir, run_dir.lm.dir, env, data_dir, log_level, lm_forward)
        results["lm"] = {k: v for k, v in prior.items() if k != "config"}
        results["generation"] = {k: prior[k] for k in GENERATION}
    if cfg.search.enabled:
        results["search"] = search.run(cfg, run_dir.vqvae.dir, run_dir.lm.model, run_dir.search, data_dir)
    results["pipeline_wall_s"] = time.perf_counter() - start  # the run's own work, for a sweep's overhead per trial
    run_dir.metrics.write_text(json.dumps(results, indent=2))
    return results
