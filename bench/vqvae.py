"""Measure the VQ-VAE stage: held-out reconstruction, codebook use and decoding validity of the default VQ-VAE
beside the continuous VAE baseline, on both spaces; and Ray Train throughput on 1 vs 2 workers.

    python -m bench.vqvae [--spaces nasbench201 nasbench101] [--epochs-201 10] [--epochs-101 6] [--write]

Every row is a full `archsweep train vqvae` stage run (Ray Train, 2 workers unless stated) in a fresh directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from archsweep.config import load_config
from archsweep.runtime import init_local_ray, worker_env
from archsweep.stages import vqvae
from bench._report import header, write_block


def stage(overrides: list[str]) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = vqvae.run(load_config(overrides=overrides), out, env=worker_env())
        return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=["nasbench201", "nasbench101"])
    parser.add_argument("--epochs-201", type=int, default=10)
    parser.add_argument("--epochs-101", type=int, default=6)
    parser.add_argument("--throughput-epochs", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()

    rows = []
    for space in args.spaces:
        epochs = args.epochs_201 if space == "nasbench201" else args.epochs_101
        for model in ("vqvae", "vae"):
            overrides = [f"space={space}", f"vqvae.model={model}", f"train.epochs={epochs}", "train.num_workers=2"]
            results, wall = stage(overrides)
            generated = results.get("random_codes") or results["prior_samples"]
            rows.append(
                f"| {space} | {model} | {epochs} | {100 * results['reconstruction_accuracy']:.2f} % | "
                + (f"{100 * results['codebook_usage']:.0f} % / {results['perplexity']:.1f} | " if model == "vqvae"
                   else "n/a | ")
                + f"{'random codes' if model == 'vqvae' else 'prior samples'}: "
                  f"{100 * generated['validity']:.1f} % valid, {100 * generated['uniqueness']:.1f} % unique | "
                + f"{results['graphs_per_s']:,.0f} | {wall / 60:.1f} min |")
            print(rows[-1], flush=True)

    throughput = []
    for workers in (1, 2):
        results, wall = stage(["space=nasbench101", f"train.epochs={args.throughput_epochs}",
                               f"train.num_workers={workers}"])
        throughput.append(results["graphs_per_s"])
        print(f"{workers} worker(s): {results['graphs_per_s']:,.0f} graphs/s", flush=True)

    body = (
        "### VQ-VAE stage (default model: K = 64, L = 8 pooled latents, GIN 4 x 128)\n\n" + header() + "\n"
        "Held-out reconstruction: exact match of the decoded cell's canonical hash, on the 10 % of cells not "
        "trained on. Codebook usage / perplexity over every cell's codes. Decoding validity: 10,000 uniform random "
        "code sequences (VQ-VAE) or samples from the Gaussian fitted to the training latents (VAE).\n\n"
        "| space | model | epochs | held-out reconstruction | codebook usage / perplexity | decoding | "
        "training graphs/s (2 workers) | stage wall time |\n|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        f"Ray Train data-parallel throughput, NAS-Bench-101, {args.throughput_epochs} epochs: "
        f"1 worker {throughput[0]:,.0f} graphs/s, 2 workers {throughput[1]:,.0f} graphs/s "
        f"(scaling {throughput[1] / throughput[0]:.2f}x on this machine's cores).\n"
    )
    print(body)
    if args.write:
        write_block("vqvae", body)


if __name__ == "__main__":
    main()
