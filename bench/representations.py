"""Measure how well each representation predicts accuracy: the same predictor (DNGO's posterior mean,
archsweep.search.predictor) trained on 100 / 500 / 1,000 labelled cells drawn at random, Kendall tau and Spearman
rho against the validation accuracy of every other cell of the table, mean ± std over seeds.

    python -m bench.representations [--spaces nasbench201 nasbench101] [--seeds 10] [--write]

Encodings: `adjacency` (adjacency + one-hot operations, no model), `vq` (the VQ-VAE's code vectors), `vae` (the
continuous VAE's latent means). The VQ-VAE and VAE are the VQ-VAE stages of bench/lm.py's generation rows
(runs/bench-lm/<space>/{vqvae,vae}/vqvae), trained here with the same settings where they are missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress

from archsweep.benchmarks import load_benchmark
from archsweep.config import load_config
from archsweep.layout import RunDir, VQVAEStage
from archsweep.runtime import init_local_ray, worker_env
from archsweep.search.encodings import ENCODINGS, Encoder
from archsweep.search.predictor import DNGO, rank_correlations
from archsweep.stages import vqvae as vqvae_stage
from bench._report import header, write_block
from bench.lm import EPOCHS, WORKERS

LABELS = (100, 500, 1000)
MODEL = {"vq": "vqvae", "vae": "vae"}


def model_path(space: str, encoding: str, out: Path) -> Path | None:
    """The model.pt of bench/lm.py's VQ-VAE stage for this space and encoding, trained now if missing."""
    if encoding == "adjacency":
        return None
    stage_dir = RunDir(out / space / MODEL[encoding]).vqvae.dir
    path = VQVAEStage(stage_dir).model
    if not path.is_file():
        init_local_ray()
        cfg = load_config(overrides=[f"space={space}", *EPOCHS[space], *WORKERS, f"vqvae.model={MODEL[encoding]}"])
        vqvae_stage.run(cfg, stage_dir, env=worker_env())
    return path


def correlations(x: np.ndarray, y: np.ndarray, labels: int, seed: int) -> tuple[float, float]:
    order = np.random.default_rng([seed, labels]).permutation(np.flatnonzero(~np.isnan(y)))
    train, rest = order[:labels], order[labels:]
    mean, _ = DNGO(seed=seed).fit(x[train], y[train]).predict(x[rest])
    return rank_correlations(mean, y[rest])


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=["nasbench201", "nasbench101"],
                        choices=["nasbench201", "nasbench101"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-lm"))
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()

    rows, best = [], []
    for space in args.spaces:
        bench = load_benchmark(space)
        cells = [bench.cell(i) for i in range(len(bench))]
        encoded = {}
        for encoding in ENCODINGS:
            start = time.perf_counter()
            encoded[encoding] = Encoder(bench.space, encoding, model_path(space, encoding, args.out))(cells)
            print(f"{space} {encoding}: {encoded[encoding].shape[1]} dimensions, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        for dataset in bench.datasets:
            y = bench.accuracy[(dataset, "val", bench.default_epochs)].astype(np.float64)
            results: dict[tuple[str, int], tuple[list, list]] = {}
            with Progress(transient=True) as progress:
                task = progress.add_task(f"{space} {dataset}", total=len(ENCODINGS) * len(LABELS) * args.seeds)
                for encoding in ENCODINGS:
                    for labels in LABELS:
                        taus, rhos = [], []
                        for seed in range(args.seeds):
                            tau, rho = correlations(encoded[encoding], y, labels, seed)
                            taus.append(tau)
                            rhos.append(rho)
                            progress.advance(task)
                        results[(encoding, labels)] = (taus, rhos)
                        rows.append(f"| {space} | {dataset} | {encoding} | {labels} | {fmt(taus)} | {fmt(rhos)} |")
                        print(rows[-1], flush=True)
            for labels in LABELS:
                top = max(ENCODINGS, key=lambda e: np.mean(results[(e, labels)][0]))
                best.append(f"| {space} | {dataset} | {labels} | {top} ({np.mean(results[(top, labels)][0]):.3f}) |")

    body = "\n".join([
        "### How well each representation predicts accuracy", "", header(),
        ("Predictor: DNGO (archsweep.search.predictor: a 3 x 50 tanh network, then Bayesian linear regression on "
         "its last layer), its posterior mean; trained on the validation accuracy of n cells drawn at random from "
         f"the table, scored on every other cell of it; mean ± std over {args.seeds} seeds (each seed its own draw "
         "and network initialisation). Encodings: adjacency = upper-triangular adjacency + one-hot operations; "
         "vq = the VQ-VAE's code vectors (L x code_dim); vae = the continuous VAE's latent means (L x code_dim); "
         "both models are bench/lm.py's VQ-VAE stages."), "",
        "| space | dataset | encoding | labelled cells | Kendall tau | Spearman rho |",
        "|---|---|---|---|---|---|", *rows, "",
        "Best encoding by mean Kendall tau:", "",
        "| space | dataset | labelled cells | best (tau) |", "|---|---|---|---|", *best])
    print(body)
    if args.write:  # both spaces: the "representations" block; one: a block of its own
        both = set(args.spaces) == {"nasbench201", "nasbench101"}
        write_block("representations" if both else "representations-" + "-".join(args.spaces), body)


if __name__ == "__main__":
    main()
