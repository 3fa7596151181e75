"""Measure lm_ranker's ranker on cells it never saw: trained as the strategy trains it on the first n queried cells
of a search (here: n random cells of NAS-Bench-201), then asked to pick the best of 4 in prompts built from 1,000
other cells, with and without the loss on the context cells' score tokens. Chance is 1 in 4. For reference, the
predictor bo uses (DNGO) on the same cells' VQ code vectors, picking the best of 4 held-out cells by its mean.

    python -m bench.ranker [--seeds 3] [--write]

Uses the VQ-VAE of bench/lm.py's NAS-Bench-201 prior (runs/bench-lm/nasbench201/vqvae); run that first.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
from scipy.stats import kendalltau

from archsweep.benchmarks import load_benchmark
from archsweep.config import LMRankerConfig
from archsweep.layout import VQVAEStage, resolve_prior
from archsweep.search.base import Domain
from archsweep.search.encodings import CodeEncoder, Encoder
from archsweep.search.predictor import DNGO
from archsweep.search.ranker import Prompts, Ranker, pool_scores, training_examples
from archsweep.spaces import get_space
from bench._report import ROOT, header, write_block

HISTORY = (50, 100, 150)
HELD_OUT = 1000
EARLIER = (150, 1024)  # the ranker's training before it was measured against DNGO: steps, examples
GROUPINGS = 8  # random groupings of the held-out cells a ranker's per-cell score averages over


def accuracy(codes, values, n: int, score_weight: float, seed: int, s: LMRankerConfig,
             prompts: Prompts) -> tuple[float, float]:
    """(best-of-4 accuracy in 500 held-out prompts, Kendall tau of lm_ranker's pool scores (`pool_scores`) on the
    held-out cells)."""
    rows, answers = training_examples(codes[:n], values[:n], prompts, s.examples, np.random.default_rng(seed))
    ranker = Ranker(s.name, prompts, seed)
    ranker.fit(rows, answers, s.steps, s.lr, s.batch_size, seed, score_weight)
    test, truth = training_examples(codes[n:], values[n:], prompts, 500, np.random.default_rng(seed + 1000))
    score = pool_scores(ranker, prompts, codes[:n], values[:n], codes[n:], np.random.default_rng(seed + 3000),
                        GROUPINGS)
    return float((ranker.scores(test).argmax(1) == truth).mean()), float(kendalltau(score, values[n:])[0])


def dngo_accuracy(vectors: np.ndarray, values, n: int, seed: int, candidates: int) -> tuple[float, float]:
    """DNGO fitted on the first n cells picks the best of `candidates` random held-out cells, 500 times; and the
    Kendall tau of its mean on the held-out cells."""
    mean, _ = DNGO(seed=seed).fit(vectors[:n], values[:n]).predict(vectors[n:])
    truth = np.asarray(values[n:])
    rng = np.random.default_rng(seed + 2000)
    picks = [rng.choice(len(truth), candidates, replace=False) for _ in range(500)]
    return float(np.mean([np.argmax(mean[p]) == np.argmax(truth[p]) for p in picks])), float(kendalltau(mean, truth)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--prior", default=str(ROOT / "runs/bench-lm/nasbench201/vqvae"),
                        help="a finished NAS-Bench-201 run (or its VQ-VAE stage) whose codes the ranker reads")
    parser.add_argument("--write", action="store_true", help="write the block into docs/BENCHMARKS.md")
    args = parser.parse_args()
    s = LMRankerConfig()
    benchmark = load_benchmark("nasbench201")
    table = Domain(benchmark).table()
    stage = resolve_prior(args.prior)[1]
    encoder = CodeEncoder(get_space("nasbench201"), VQVAEStage(stage).model)
    vq = Encoder(get_space("nasbench201"), "vq", VQVAEStage(stage).model)
    prompts = Prompts(encoder.codebook_size, encoder.seq_len, s.context, s.candidates_per_prompt)
    variants = {  # label -> (score weight, steps, examples)
        "answer loss alone": (0.0, s.steps, s.examples),
        f"answer + score tokens, {EARLIER[0]} steps on {EARLIER[1]:,} examples": (s.score_weight, *EARLIER),
        f"answer + score tokens, {s.steps} steps on {s.examples:,} examples (default)": (s.score_weight, s.steps,
                                                                                          s.examples)}
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
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
            for label, (weight, steps, examples) in variants.items():
                v = dataclasses.replace(s, score_weight=weight, steps=steps, examples=examples)
                acc, tau = accuracy(codes[:n] + held[0], values[:n] + held[1], n, weight, seed, v, prompts)
                results.setdefault((n, label), []).append((acc, tau))
                print(f"seed {seed} history {n} {label}: best of {s.candidates_per_prompt} {acc:.3f}, "
                      f"Kendall tau {tau:.3f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    columns = [*variants, "dngo"]
    lines = ["| queried cells it learns from | measure | " + " | ".join(f"ranker: {v}" for v in variants)
             + " | DNGO on the VQ code vectors (reference) |", "|---|---|" + "---|" * len(columns)]
    for n in HISTORY:
        for j, measure in enumerate((f"best of {s.candidates_per_prompt} picked", "Kendall tau")):
            cell = [f"{np.mean([r[j] for r in results[(n, w)]]):.3f} ± {np.std([r[j] for r in results[(n, w)]]):.3f}"
                    for w in columns]
            lines.append(f"| {n} | {measure} | {' | '.join(cell)} |")
    body = ("### lm_ranker's ranker on unseen cells (NAS-Bench-201 " + args.dataset + ")\n\n" + header() + "\n"
            f"The ranker as lm_ranker builds it ({s.name}, ranking examples from the queried cells, AdamW at lr "
            f"{s.lr}, batch {s.batch_size}, context {s.context}, {s.candidates_per_prompt} candidates a "
            f"prompt), trained on n random cells' VQ codes and validation accuracies, then asked for the best of "
            f"{s.candidates_per_prompt} in 500 prompts built from {HELD_OUT} other cells: the fraction it gets "
            f"right (chance {1 / s.candidates_per_prompt:.2f}), and the Kendall tau between the true validation "
            f"accuracies of those {HELD_OUT} cells and each cell's score as lm_ranker scores its pool (the 8 best "
            f"learnt cells as context, groups of {s.candidates_per_prompt}, the probability of being the group's "
            f"best, averaged over {GROUPINGS} random groupings) or DNGO's predicted mean; mean ± std over "
            f"{args.seeds} seeds (each its own cells and initialisation); {seconds:.0f} s in all.\n\n"
            + "\n".join(lines) + "\n")
    print(body)
    if args.write:
        write_block("ranker", body)


if __name__ == "__main__":
    main()
