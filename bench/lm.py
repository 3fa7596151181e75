"""Measure the LM prior: generation metrics of VQ-VAE + LM beside the continuous VAE baseline on both spaces
(10,000 samples, temperature 1.0), the effect of temperature, every LM family side by side on NAS-Bench-201 (from
scratch and from a pretrained checkpoint, with and without LoRA), the overhead of the LM stage (DeepSpeed) against a
plain single-process PyTorch loop, and sampling throughput.

    python -m bench.lm [--spaces nasbench201 nasbench101 | --spaces darts] [--out runs/bench-lm] [--fresh] [--write]
    python -m bench.lm --families-only [--write]     # the family table alone (block lm-families)

Each generation row is a full `archsweep run` pipeline (VQ-VAE stage, then the LM stage: DeepSpeed ZeRO-2 on 2
Ray Train workers) with the default configuration, except the epochs set per space below. Pipelines finished
in an earlier call are read back from `--out` unless `--fresh`; the temperature sweep samples their saved LM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from archsweep.artifacts import load_lm
from archsweep.config import from_dict, load_config, to_dict
from archsweep.layout import LMStage, RunDir, VQVAEStage
from archsweep.runtime import init_local_ray, worker_env
from archsweep.stages import lm as lm_stage
from archsweep.stages import pipeline
from archsweep.tracking import reproduce as R
from bench._measure import plain_lm_loop
from bench._report import header, write_block

EPOCHS = {  # training length per space (VQ-VAE as bench/vqvae.py); everything else is the default configuration
    "nasbench201": ["train.epochs=10"],
    "nasbench101": ["train.epochs=6", "lm.epochs=8"],  # at 3 its held-out loss still fell
    # a sampled training set (train.dataset_size, default 100,000 cells) of a space too large to enumerate
    # the LM's one worker takes both cores (Ray gives a worker's torch as many threads as it has CPUs)
    # (its LM was still improving at 10 epochs: trained to its plateau under the default 20-epoch cap)
    "darts": ["train.epochs=4", "lm.epochs=20", "lm.early_stop=true", "lm.cpus_per_worker=2"],
}
ENUMERATED = ["nasbench201", "nasbench101"]  # the "lm" block; DARTS has a block of its own (`--spaces darts`)
WORKERS = ["train.num_workers=2"]  # the LM: the default (1 worker, in process, DeepSpeed ZeRO-2)
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5)
METRICS = ("validity", "uniqueness", "novelty", "valid_unique", "valid_unique_novel")


def same_config(saved: dict, cfg) -> bool:
    """Whether a finished run had this configuration: keys added since then read as their defaults."""
    return to_dict(from_dict(saved)) == to_dict(cfg)


def pipeline_run(overrides: list[str], out: Path, fresh: bool) -> dict:
    """The pipeline in `out`: read back if it finished with this configuration, otherwise run (continuing an
    interrupted one: finished stages are not trained again)."""
    cfg = load_config(overrides=overrides)
    done = RunDir(out).metrics
    if done.exists() and not fresh and same_config(json.loads(done.read_text())["config"], cfg):
        return json.loads(done.read_text())
    if fresh or done.exists():
        shutil.rmtree(out, ignore_errors=True)
    return pipeline.run(cfg, out, env=worker_env())


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def generation_rows(args) -> tuple[list[str], list[str], list[str]]:
    rows, temperature_rows, speed = [], [], []
    for space in args.spaces:
        base = [f"space={space}", *EPOCHS[space], *WORKERS]
        for model in ("vqvae", "vae"):
            out = args.out / space / model
            results = pipeline_run([*base, f"vqvae.model={model}"], out, args.fresh)
            g = results["generation"]
            label = f"VQ-VAE + {results['config']['lm']['name']} (T = 1.0)" if model == "vqvae" else \
                "continuous VAE, Gaussian prior"
            vq, lm = results["vqvae"], results.get("lm", {})
            trained = R.epochs_cell({"vqvae_epochs": vq.get("epochs_trained"), "vqvae_plateaued": vq.get("plateaued"),
                                     "lm_epochs": lm.get("epochs_trained"), "lm_plateaued": lm.get("plateaued")})
            rows.append(f"| {space} | {label} | {trained} | {pct(vq['reconstruction_accuracy'])} | "
                        + " | ".join(pct(g[m]) for m in METRICS) + " |")
            print(rows[-1], flush=True)
            if model != "vqvae":
                continue
            training = results["lm"]["training"]
            speed.append(f"| {space} | {results['lm'].get('epochs_trained')} | {training['heldout_perplexity']:.3f} |")
            cfg = load_config(overrides=[*base, "vqvae.model=vqvae"])
            lm = load_lm(cfg, RunDir(out).lm.model)
            scorer = lm_stage.Scorer(cfg, RunDir(out).vqvae.dir)
            top = scorer.ceiling(cfg.sample.samples, cfg.sample.seed)
            rows.append(f"| {space} | {R.CEILING} | – | – | " + " | ".join(pct(top[m]) for m in METRICS) + " |")
            for t in TEMPERATURES:
                cfg.sample.temperature = t
                m = lm_stage.generate(lm, scorer, cfg)
                accuracy = m[f"accuracy_{scorer.benchmark.datasets[0]}_val"].get("mean") if scorer.benchmark \
                    else None
                temperature_rows.append(f"| {space} | {t} | " + " | ".join(pct(m[k]) for k in METRICS)
                                        + (f" | {accuracy:.2f}" if accuracy is not None else " | n/a")
                                        + f" | {m['samples_per_s']:,.0f} |")
                print(temperature_rows[-1], flush=True)
    return rows, temperature_rows, speed


# The family table: the same VQ-VAE stage (NAS-Bench-201's generation row above), each LM trained as the stage
# trains it (DeepSpeed ZeRO-2, 1 worker, in process) until its held-out loss plateaus (lm.early_stop, at most
# FAMILY_EPOCHS), so the families compare at convergence; 10,000 samples at temperature 1.0.
# Pretrained checkpoints: archsweep.lm.checkpoints (byte-level BPE, briefly pretrained on number strings), saved
# locally; these machines reach no model hub.
FAMILY_EPOCHS = 40  # the cap; the tiny presets plateaued after 10-18 epochs
FAMILIES = [("gpt2-tiny", []), ("llama-tiny", []), ("t5-tiny", []),
            ("pretrained:gpt2", []), ("pretrained:llama", []), ("pretrained:t5", []),
            ("pretrained:gpt2", ["lm.lora.rank=16"]), ("pretrained:t5", ["lm.lora.rank=16"])]


def family_rows(args) -> list[str]:
    from archsweep.lm.checkpoints import save_small_checkpoint

    space = "nasbench201"
    vq = RunDir(args.out / space / "vqvae").vqvae.dir
    if not VQVAEStage(vq).finished():  # the stage the generation row's pipeline then continues from
        from archsweep.stages import vqvae

        vqvae.run(load_config(overrides=[f"space={space}", *EPOCHS[space], *WORKERS]), vq, worker_env())
    rows, scorer = [], None
    for name, extra in FAMILIES:
        label = name
        if name.startswith("pretrained:"):
            family = name.split(":")[1]
            checkpoint = args.out / "checkpoints" / family
            if not (checkpoint / "config.json").exists():
                save_small_checkpoint(checkpoint, family)
            name = f"pretrained:{checkpoint.resolve()}"
            label = f"{family}, pretrained (local checkpoint)" + (", LoRA rank 16" if extra else ", every weight")
        cfg = load_config(overrides=[f"space={space}", *EPOCHS[space], f"lm.name={name}",
                                     f"lm.epochs={FAMILY_EPOCHS}", "lm.early_stop=true", *extra])
        out = args.out / "families" / (label.replace(" ", "").replace(",", "-").replace("(", "").replace(")", ""))
        done = LMStage(out).metrics
        if done.exists() and not args.fresh and same_config(json.loads(done.read_text())["config"], cfg):
            m = json.loads(done.read_text())
        else:
            shutil.rmtree(out, ignore_errors=True)
            m = lm_stage.run(cfg, vq, out, env=worker_env())
        samples = np.load(LMStage(out).samples)
        parsed = float((samples["codes"][:, 0] >= 0).mean())
        scorer = scorer or lm_stage.Scorer(cfg, vq)
        cfg.sample.constrained = True
        c = lm_stage.generate(load_lm(cfg, LMStage(out).model), scorer, cfg)
        epochs = f"{m['epochs_trained']}" + ("" if m.get("plateaued") else f" ({R.CUT_SHORT})")
        rows.append(f"| {label} | {epochs} | {m['training']['heldout_perplexity']:.3f} | {pct(parsed)} | "
                    f"{pct(m['validity'])} | "
                    f"{pct(m['valid_unique'])} | {pct(c['validity'])} | {pct(c['valid_unique'])} | "
                    f"{pct(c['valid_unique_novel'])} | {m['train_wall_s']:.0f} s |")
        print(rows[-1], flush=True)
    if scorer is not None:
        top = scorer.ceiling(cfg.sample.samples, cfg.sample.seed)
        rows.append(f"| {R.CEILING} | – | – | – | {pct(top['validity'])} | {pct(top['valid_unique'])} | – | – | "
                    f"{pct(top['valid_unique_novel'])} | – |")
    return rows


def families_block(args) -> str:
    return (
        "### LM families side by side (NAS-Bench-201)\n\n" + header() + "\n"
        f"One VQ-VAE stage (NAS-Bench-201, {', '.join(EPOCHS['nasbench201'])}, K = 64, L = 8); each LM trained by "
        f"the LM stage (DeepSpeed ZeRO-2, 1 worker) until its held-out loss plateaus (`lm.early_stop=true`: "
        f"no gain above lm.min_delta in lm.patience epochs; at most {FAMILY_EPOCHS} epochs), 10,000 samples at "
        "temperature 1.0. Pretrained rows: a checkpoint saved locally by `archsweep.lm.checkpoints` (64 wide, 2 "
        "layers, byte-level BPE tokenizer, pretrained briefly on number strings; these machines reach no model hub), "
        "fine-tuned fully or through LoRA adapters. Free sampling (the default): parsed = samples that are exactly "
        "L numbers below K, validity = parsed and decoded into a valid cell. Constrained (`sample.constrained=true`, "
        "the same trained LM sampled again): decoding keeps to L numbers below K, so every sample parses.\n\n"
        "| LM | epochs | held-out perplexity | parsed | validity | valid_unique | validity, "
        "constrained | valid_unique, constrained | valid_unique_novel, constrained | training wall |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(family_rows(args)) + "\n")


def overhead_row(args) -> str:
    """The LM stage (1 worker, in process, DeepSpeed ZeRO-2) vs the plain loop, on NAS-Bench-201's codes from the run above."""
    from archsweep.train import history, scale
    from archsweep.train.lm import fit, load_codes

    space = "nasbench201"
    codes = RunDir(args.out / space / "vqvae").vqvae.codes
    cfg = load_config(overrides=[f"space={space}", *EPOCHS[space], "lm.num_workers=1",
                                 f"lm.epochs={args.overhead_epochs}"])
    train_seqs, _, codebook_size = load_codes(codes)
    batch = scale.global_batch(cfg.lm.batch_size, scale.LM_REFERENCE_BATCH, len(train_seqs), 1, False)
    plain_wall, plain_tps = plain_lm_loop(cfg, train_seqs, codebook_size, batch, threads=cfg.lm.cpus_per_worker)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = fit(cfg, codes, out, worker_env())
        ray_wall = time.perf_counter() - start
        ray_tps = float(history(result)["tokens_per_s"].mean())
    return (f"| {cfg.lm.name}, {args.overhead_epochs} epochs of {len(train_seqs):,} sequences, batch "
            f"{batch} | {plain_wall:.1f} s / {plain_tps:,.0f} tokens/s | {ray_wall:.1f} s / "
            f"{ray_tps:,.0f} tokens/s | {ray_wall / plain_wall:.2f}x | {plain_tps / ray_tps:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=ENUMERATED, choices=list(EPOCHS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-lm"))
    parser.add_argument("--fresh", action="store_true", help="retrain even where a finished pipeline exists")
    parser.add_argument("--overhead-epochs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    parser.add_argument("--families-only", action="store_true", help="only the LM family table")
    parser.add_argument("--skip-families", action="store_true", help="no LM family table")
    args = parser.parse_args()
    init_local_ray()
    if not args.skip_families:
        families = families_block(args)
        print(families)
        if args.write:
            write_block("lm-families", families)
    if args.families_only:
        return

    rows, temperature_rows, speed = generation_rows(args)
    overhead = overhead_row(args) if "nasbench201" in args.spaces else None
    print(overhead, flush=True)
    cfg = load_config()
    body = (
        f"### LM prior and generation (default LM: {cfg.lm.name}, DeepSpeed ZeRO-{cfg.lm.zero_stage}, batch "
        f"{cfg.lm.batch_size})\n\n" + header() + "\n"
        "Training length per space: " + "; ".join(f"{space}: {', '.join(EPOCHS[space])}" for space in args.spaces)
        + f" (default lm.epochs={cfg.lm.epochs}); everything else is the default configuration. "
        f"{cfg.sample.samples:,} samples per row. Validity, uniqueness, novelty as defined in archsweep.metrics "
        "(uniqueness and novelty by canonical hash, among the valid samples; novelty against the training split). "
        "Both models go through the same pipeline and metric code; the VAE samples the Gaussian fitted to its "
        "training latents.\n\n"
        "Epochs: each stage's, marked \"not plateaued\" where its held-out curve (reconstruction; the LM's loss) still "
        "gained more than min_delta within the last `patience` epochs when they ran out (archsweep.train.plateaued). "
        "The ceiling row: as many draws from the training split itself (archsweep.stages.lm.ceiling).\n\n"
        "| space | generator | epochs (VQ-VAE / LM) | held-out reconstruction | validity | uniqueness | novelty | "
        "valid_unique | valid_unique_novel |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Temperature (same trained LM, fresh samples; accuracy: mean benchmark validation accuracy of the distinct "
        "valid generated cells, first dataset of the table; architectures/s: sampling throughput end to end, i.e. "
        "generate, parse, decode through the VQ-VAE and score, batches of 1,000, this CPU):\n\n"
        "| space | temperature | validity | uniqueness | novelty | valid_unique | valid_unique_novel | "
        "mean accuracy | architectures/s |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(temperature_rows) + "\n\n"
        "The LM's held-out perplexity per code token (on the 10 % of cells not trained on):\n\n"
        "| space | LM epochs | held-out perplexity |\n|---|---|---|\n" + "\n".join(speed) + "\n"
        + ("" if overhead is None else "\nOverhead of the LM stage (1 worker) + DeepSpeed ZeRO-2 against a plain single-process PyTorch loop "
        "(same model, data order, batches, AdamW and clipping, a warmup-cosine schedule); wall time includes start-up (process "
        "group, DeepSpeed engine, checkpoints):\n\n"
        "| run | plain PyTorch | LM stage + DeepSpeed | wall-time ratio | training-speed ratio |\n"
        "|---|---|---|---|---|\n" + overhead + "\n")
    )
    print(body)
    if args.write:  # both enumerated spaces: the "lm" block; any other set: a block of its own beside it
        write_block("lm" if args.spaces == ENUMERATED else "lm-" + "-".join(args.spaces), body)


if __name__ == "__main__":
    main()
