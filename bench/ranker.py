"""Measure lm_ranker's ranker on cells it never saw: trained as the strategy trains it on the first n queried cells
of a search (here: n random cells of NAS-Bench-201), then asked to pick the best of 4 in prompts built from 1,000
other cells, with and without the loss on the context cells' score tokens. Chance is 1 in 4. For reference, the
predictor bo uses (DNGO) on the same cells' VQ code vectors, picking the best of 4 held-out cells by its mean.

    python -m bench.ranker [--seeds 3] [--write]

Uses the VQ-VAE of bench/lm.py's NAS-Bench-201 prior (runs/bench-lm/nasbench201/vqvae); run that first.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from archsweep.benchmarks import load_benchmark
from archsweep.config import LMRankerConfig
from archsweep.layout import VQVAEStage, resolve_prior
from archsweep.search.base import Domain
from archsweep.search.encodings import CodeEncoder, Encoder
from archsweep.search.predictor import DNGO
from archsweep.search.ranker import Prompts, Ranker, training_examples
from archsweep.spaces import get_space
from bench._report import ROOT, header, write_block

HISTORY = (50, 100, 150)
HELD_OUT = 1000


def accuracy(codes, values, n: int, score_weight: float, seed: int, s: LMRankerConfig, prompts: Prompts) -> float:
    rows, answers = training_examples(codes[:n], values[:n], prompts, s.examples, np.random.default_rng(seed))
    ranker = Ranker(s.name, prompts, seed)
    ranker.fit(rows, answers, s.steps, s.lr, s.batch_size, seed, score_weight)
    test, truth = training_examples(codes[n:], values[n:], prompts, 500, np.random.default_rng(seed + 1000))
    return float((ranker.scores(test).argmax(1) == truth).mean())


def dngo_accuracy(vectors: np.ndarray, values, n: int, seed: int, candidates: int) -> float:
    """DNGO fitted on the first n cells picks the best of `candidates` random held-out cells, 500 times."""
    mean, _ = DNGO(seed=seed).fit(vectors[:n], values[:n]).predict(vectors[n:])
    truth = np.asarray(values[n:])
    rng = np.random.default_rng(seed + 2000)
    picks = [rng.choice(len(truth), candidates, replace=False) for _ in range(500)]
    return float(np.mean([np.argmax(mean[p]) == np.argmax(truth[p]) for p in picks]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--write", action="store_true", help="write the block into docs/BENCHMARKS.md")
    args = parser.parse_args()
    s = LMRankerConfig()
    benchmark = load_benchmark("nasbench201")
    table = Domain(benchmark).table()
    stage = resolve_prior(str(ROOT / "runs/bench-lm/nasbench201/vqvae"))[1]
    encoder = CodeEncoder(get_space("nasbench201"), VQVAEStage(stage).model)
    vq = Encoder(get_space("nasbench201"), "vq", VQVAEStage(stage).model)
    prompts = Prompts(encoder.codebook_size, encoder.seq_len, s.context, s.candidates_per_prompt)
    results: dict[tuple[int, float | str], list[float]] = {}
    start = time.perf_counter()
    for seed in range(args.seeds):
        pick = np.random.default_rng(seed).choice(len(table), max(HISTORY) + HELD_OUT, replace=False)
        cells = [table[i][0] for i in pick]
        values = [benchmark.lookup(benchmark.entry(table[i][1]), args.dataset, "val") for i in pick]
        codes = [tuple(int(x) for x in c) for c in encoder(cells)]
        held = codes[max(HISTORY):], values[max(HISTORY):]
        vectors = vq(cells)
        for n in HISTORY:
            rows = np.concatenate([vectors[:n], vectors[max(HISTORY):]])
            results.setdefault((n, "dngo"), []).append(
                dngo_accuracy(rows, values[:n] + held[1], n, seed, s.candidates_per_prompt))
            for weight in (0.0, s.score_weight):
                acc = accuracy(codes[:n] + held[0], values[:n] + held[1], n, weight, seed, s, prompts)
                results.setdefault((n, weight), []).append(acc)
                print(f"seed {seed} history {n} score weight {weight}: {acc:.3f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    lines = [("| queried cells it learns from | ranker: answer loss alone | ranker: answer + score tokens | DNGO on "
              "the VQ code vectors (reference) |"), "|---|---|---|---|"]
    for n in HISTORY:
        cell = [f"{np.mean(results[(n, w)]):.3f} ± {np.std(results[(n, w)]):.3f}"
                for w in (0.0, s.score_weight, "dngo")]
        lines.append(f"| {n} | {' | '.join(cell)} |")
    body = ("### lm_ranker's ranker on unseen cells (NAS-Bench-201 " + args.dataset + ")\n\n" + header() + "\n"
            f"The ranker as lm_ranker builds it ({s.name}, {s.examples} ranking examples from the queried cells, "
            f"{s.steps} AdamW steps at lr {s.lr}, context {s.context}, {s.candidates_per_prompt} candidates a "
            f"prompt), trained on n random cells' VQ codes and validation accuracies, then asked for the best of "
            f"{s.candidates_per_prompt} in 500 prompts built from {HELD_OUT} other cells: the fraction it gets "
            f"right (chance {1 / s.candidates_per_prompt:.2f}), mean ± std over {args.seeds} seeds (each its own "
            f"cells and initialisation); {seconds:.0f} s in all.\n\n" + "\n".join(lines) + "\n")
    print(body)
    if args.write:
        write_block("ranker", body)


if __name__ == "__main__":
    main()
