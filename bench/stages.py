"""Each training stage against its plain PyTorch loop at the same work, start-up included, one worker: the stage
trained in this process (what one worker does now, train/launch.py) and on a Ray Train worker group of one (what it
did before), in one run on this machine.

    python -m bench.stages [--repeats 2] [--vqvae-epochs 3] [--lm-epochs 3] [--write]

Wall time of a stage: `fit()` from its call to its return (data, model, process group or worker group, DeepSpeed
for the LM, every epoch with its held-out evaluation and checkpoint, the result). Wall time of the plain loop: the
same model built, the same data moved, the same epochs at the same batch, without evaluation or checkpoints
(bench/_measure.py). The training-speed ratio compares graphs or tokens per second inside the epochs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from archsweep.config import load_config
from archsweep.runtime import init_local_ray, worker_env
from archsweep.train import history
from bench._measure import plain_lm_loop, plain_vqvae_loop
from bench._report import header, write_block

SPACE = "nasbench201"


def timed(fit, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fit(*args, **kwargs)
    if result.error is not None:
        raise result.error
    return time.perf_counter() - start, result


def vqvae_runs(cfg, codes_dir: Path) -> dict[str, tuple[float, float]]:
    """{how: (wall s, graphs/s)} for the plain loop and the stage both ways; writes the stage's codes once."""
    from archsweep.stages import vqvae
    from archsweep.train.vqvae import fit

    out: dict[str, tuple[float, float]] = {}
    for how, here in (("in process", True), ("Ray Train", False)):
        with tempfile.TemporaryDirectory() as tmp:
            wall, result = timed(fit, cfg, Path(tmp), worker_env(), in_process=here)
            out[how] = (wall, float(history(result)["graphs_per_s"].mean()))
    batch = int(result.metrics["batch_size"])
    out["plain"] = plain_vqvae_loop(cfg, batch, threads=cfg.train.cpus_per_worker)
    if not (codes_dir / "codes.npz").is_file():
        vqvae.run(cfg, codes_dir, worker_env())
    return out


def lm_runs(cfg, codes: Path) -> dict[str, tuple[float, float]]:
    from archsweep.train import scale
    from archsweep.train.lm import fit, load_codes

    out: dict[str, tuple[float, float]] = {}
    for how, here in (("in process", True), ("Ray Train", False)):
        with tempfile.TemporaryDirectory() as tmp:
            wall, result = timed(fit, cfg, codes, tmp, worker_env(), in_process=here)
            out[how] = (wall, float(history(result)["tokens_per_s"].mean()))
    train_seqs, _, size = load_codes(codes)
    batch = scale.global_batch(cfg.lm.batch_size, scale.LM_REFERENCE_BATCH, len(train_seqs), 1, False)
    out["plain"] = plain_lm_loop(cfg, train_seqs, size, batch, threads=cfg.lm.cpus_per_worker)
    return out


def row(stage: str, unit: str, runs: list[dict]) -> list[str]:
    plain = statistics.median(r["plain"][0] for r in runs)
    plain_speed = statistics.median(r["plain"][1] for r in runs)
    out = []
    for how in ("in process", "Ray Train"):
        wall = statistics.median(r[how][0] for r in runs)
        speed = statistics.median(r[how][1] for r in runs)
        each = ", ".join(f"{r[how][0]:.1f}" for r in runs)
        out.append(f"| {stage} | {how} | {plain:.1f} s | {wall:.1f} s ({each}) | **{wall / plain:.2f}x** | "
                   f"{plain_speed:,.0f} / {speed:,.0f} {unit} | {plain_speed / speed:.2f}x |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vqvae-epochs", type=int, default=3)
    parser.add_argument("--lm-epochs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()
    cfg = load_config(overrides=[f"space={SPACE}", f"train.epochs={args.vqvae_epochs}",
                                 f"lm.epochs={args.lm_epochs}", "train.num_workers=1", "lm.num_workers=1"])
    vq_runs, lm_runs_ = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            vq_runs.append(vqvae_runs(cfg, Path(tmp)))
            lm_runs_.append(lm_runs(cfg, Path(tmp) / "codes.npz"))
            print(f"run {repeat + 1}: " + "; ".join(
                f"{stage} {how} {r[how][0]:.1f} s" for stage, r in (("VQ-VAE", vq_runs[-1]), ("LM", lm_runs_[-1]))
                for how in ("plain", "in process", "Ray Train")), flush=True)
    rows = [*row(f"VQ-VAE ({args.vqvae_epochs} epochs)", "graphs/s", vq_runs),
            *row(f"LM {cfg.lm.name} ({args.lm_epochs} epochs, DeepSpeed ZeRO-{cfg.lm.zero_stage})", "tokens/s",
                 lm_runs_)]
    body = (
        "### Training stages against their plain PyTorch loops\n\n" + header() + "\n"
        f"{SPACE}, the default configuration, one worker of {cfg.train.cpus_per_worker} CPU; each stage's `fit()` "
        "from call to return against the plain loop doing the same epochs at the same batch (bench/_measure.py: "
        "model, data, training; no held-out evaluation or checkpoints), medians of "
        f"{args.repeats} runs in this one process (each run's stage wall time in brackets). \"in process\": one "
        "worker trains in the calling process (the default for one worker); \"Ray Train\": the same on a worker "
        "group of one (`in_process=False`), as every stage ran before. Target: wall-time ratio ≤ 1.10x.\n\n"
        "| stage | where | plain loop | stage | wall-time ratio | training speed, plain / stage | "
        "training-speed ratio |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(body)
    if args.write:
        write_block("stages", body)


if __name__ == "__main__":
    main()
