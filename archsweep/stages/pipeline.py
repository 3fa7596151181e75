"""One configuration end to end: VQ-VAE -> codes -> LM -> samples -> metrics, each stage in its own directory.

`out_dir/vqvae/`, `out_dir/lm/` (and with `search.enabled`, `out_dir/search/`) hold each stage's artifacts; `out_dir/metrics.json` joins their metrics, with
the headline generation metrics under `generation` (for the continuous VAE baseline: its prior samples). A
stage whose directory already holds a finished run is not trained again, so rerunning an interrupted pipeline
continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from archsweep.config import Config, to_dict

M_GENERATION = ("samples", "validity", "uniqueness", "novelty", "uniqueness_str", "novelty_str", "valid_unique",
                "valid_unique_novel")


def run(cfg: Config, out_dir: str | Path, env: dict[str, str] | None = None, data_dir: str | None = None,
        log_level: str = "WARNING") -> dict:
    from archsweep.stages import lm, vqvae

    out_dir = Path(out_dir)
    vq = vqvae.run(cfg, out_dir / "vqvae", env, log_level)
    results = {"config": to_dict(cfg), "vqvae": {k: v for k, v in vq.items() if k != "config"}}
    if cfg.vqvae.model == "vae":  # the continuous baseline generates by sampling its own prior: no LM
        results["generation"] = vq["prior_samples"]
    else:
        prior = lm.run(cfg, out_dir / "vqvae", out_dir / "lm", env, data_dir, log_level)
        results["lm"] = {k: v for k, v in prior.items() if k != "config"}
        results["generation"] = {k: v for k, v in results["lm"].items() if k in M_GENERATION}
        if cfg.search.enabled:
            from archsweep.stages import search

            results["search"] = search.run(cfg, out_dir / "vqvae", out_dir / "lm" / "lm", out_dir / "search", data_dir)
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    return results
