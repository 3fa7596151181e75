"""Measure the training stages at the device's scale, each against its plain PyTorch loop in the same run, and the
default pipelines' time to quality.

    python -m bench.gpu [--small] [--write] [--out DIR]

On the GPU when there is one (otherwise the CPU, one thread per worker as Ray would give it):
1. the device's peak: a measured square matmul (bf16 8192^3 on a GPU, fp32 2048^3 on one CPU thread);
2. VQ-VAE stage (1 worker, in process) against the plain loop at the same batch (the device's `auto` batch):
   graphs/s and their ratio;
3. LM stage (1 worker, in process, DeepSpeed ZeRO-2, bf16 on a GPU) against the plain loop at the same batch, on
   the codes step 2 wrote: tokens/s, the ratio, and model FLOPs utilisation against the peak;
4. the default NAS-Bench-201 and NAS-Bench-101 pipelines (VQ-VAE, LM, 10,000 samples decoded and scored) after Ray
   is up: wall time per stage, validity and valid_unique, architectures/s of sampling.

`--small` (what the test runs, a few minutes on the 2-core CPU): NAS-Bench-201 only, 1 epoch per stage, 1,000
samples. `--write` records the block in docs/BENCHMARKS.md (`gpu` on a GPU, `gpu-dry-run` on a CPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from archsweep.config import load_config
from archsweep.layout import RunDir
from archsweep.runtime import init_local_ray, worker_env
from archsweep.train import history, scale
from bench._measure import flops_per_token, matmul_peak, plain_lm_loop, plain_vqvae_loop
from bench._report import header, write_block


def device_overrides(gpu: bool) -> list[str]:
    return ["train.use_gpu=true", "lm.use_gpu=true"] if gpu else []


def stage_rows(args, gpu: bool, device: str, peak: float, out: Path) -> tuple[list[str], Path]:
    """VQ-VAE and LM: the stage beside its plain loop at the same batch; returns the rows and the codes file."""
    from archsweep.stages import vqvae
    from archsweep.train.lm import fit as fit_lm
    from archsweep.train.lm import load_codes

    space = "nasbench201" if args.small else "nasbench101"
    epochs = 1 if args.small else 2
    cfg = load_config(overrides=[f"space={space}", f"train.epochs={epochs}", f"lm.epochs={epochs}",
                                 *device_overrides(gpu)])
    rows = []

    vq = vqvae.run(cfg, RunDir(out).vqvae.dir, env=worker_env())
    stage_gps = float(vq["graphs_per_s"])
    batch = int(vq["training"]["batch_size"])
    _, plain_gps = plain_vqvae_loop(cfg, batch, device, threads=cfg.train.cpus_per_worker)
    rows.append(f"| VQ-VAE ({space}, {epochs} epochs) | {batch:,} | {plain_gps:,.0f} graphs/s | "
                f"{stage_gps:,.0f} graphs/s | {plain_gps / stage_gps:.2f}x | |")
    print(rows[-1], flush=True)

    codes = RunDir(out).vqvae.codes
    train_seqs, _, size = load_codes(codes)
    batch = scale.global_batch(cfg.lm.batch_size, scale.LM_REFERENCE_BATCH, len(train_seqs), 1, gpu)
    fpt = flops_per_token(cfg, train_seqs, size)
    _, plain_tps = plain_lm_loop(cfg, train_seqs, size, batch, device, threads=cfg.lm.cpus_per_worker)
    with tempfile.TemporaryDirectory() as directory:
        result = fit_lm(cfg, codes, directory, worker_env())
        if result.error is not None:
            raise result.error
        stage_tps = float(history(result)["tokens_per_s"].mean())
    precision = "bf16" if gpu and cfg.lm.bf16 else "fp32"
    rows.append(f"| LM {cfg.lm.name} ({space} codes, {epochs} epochs, DeepSpeed ZeRO-{cfg.lm.zero_stage}, "
                f"{precision}) | {batch:,} | {plain_tps:,.0f} tokens/s | {stage_tps:,.0f} tokens/s | "
                f"{plain_tps / stage_tps:.2f}x | plain {100 * plain_tps * fpt / peak:.2f} %, stage "
                f"{100 * stage_tps * fpt / peak:.2f} % |")
    print(rows[-1], flush=True)
    return rows, codes


def pipeline_rows(args, gpu: bool, out: Path) -> list[str]:
    """The default pipeline of each space, timed after Ray is up, with its generation quality."""
    from archsweep.stages import pipeline

    rows = []
    for space in ("nasbench201",) if args.small else ("nasbench201", "nasbench101"):
        small = ["train.epochs=1", "lm.epochs=1", "sample.samples=1000"] if args.small else []
        cfg = load_config(overrides=[f"space={space}", *small, *device_overrides(gpu)])
        start = time.perf_counter()
        results = pipeline.run(cfg, out / f"pipeline-{space}", env=worker_env())
        wall = time.perf_counter() - start
        vq, lm, g = results["vqvae"], results["lm"], results["generation"]
        rows.append(f"| {space} | {cfg.train.epochs} / {cfg.lm.epochs} | {vq['training']['batch_size']:,} / "
                    f"{lm['training']['batch_size']:,} | {vq['train_wall_s']:.1f} s | {lm['train_wall_s']:.1f} s | "
                    f"{g['samples']:,} at {lm['samples_per_s']:,.0f}/s | {wall:.1f} s | {100 * g['validity']:.2f} % | "
                    f"{100 * g['valid_unique']:.2f} % |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="NAS-Bench-201 only, 1 epoch per stage, 1,000 samples")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if gpu:
        peak, peak_text = matmul_peak("cuda", torch.bfloat16), f"{torch.cuda.get_device_name()}, bf16"
    else:
        peak, peak_text = matmul_peak("cpu", threads=1), "CPU, fp32, 1 thread"
    print(f"measured matmul peak ({peak_text}): {peak / 1e12:.3f} TFLOP/s", flush=True)

    from archsweep.spaces import get_space

    for space in ("nasbench201",) if args.small else ("nasbench201", "nasbench101"):
        get_space(space).enumerate()  # the enumeration cache, warmed before anything is timed
    init_local_ray()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        stages, _ = stage_rows(args, gpu, device, peak, out)
        pipelines = pipeline_rows(args, gpu, out)

    body = (
        f"### Training at the device's scale ({'GPU' if gpu else 'CPU dry run'})\n\n" + header() + "\n"
        f"Measured matmul peak ({peak_text}): {peak / 1e12:.3f} TFLOP/s. Each stage runs as one worker in this process at "
        "the device's `batch_size: auto`; the plain loop is the same model, data order, batch, optimiser and "
        "schedule in this process with torch alone, data on the device beforehand (bench/_measure.py). Ratio: "
        "plain / stage (1.00x: no overhead). MFU: model FLOPs (counted by torch) per second / the peak.\n\n"
        "| stage | batch | plain PyTorch loop | archsweep stage | ratio | MFU |\n|---|---|---|---|---|---|\n"
        + "\n".join(stages) + "\n\n"
        "Default pipelines, timed after Ray is up (VQ-VAE stage, LM stage, sampling decoded and scored); "
        "generation quality of the samples:\n\n"
        "| space | epochs VQ-VAE / LM | batch VQ-VAE / LM | VQ-VAE stage | LM stage | sampling | pipeline | "
        "validity | valid_unique |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(pipelines) + "\n"
    )
    print(body)
    if args.json:
        args.json.write_text(json.dumps({"stages": stages, "pipelines": pipelines, "peak": peak}, indent=2))
    if args.write:
        write_block("gpu" if gpu else "gpu-dry-run", body)


if __name__ == "__main__":
    main()
