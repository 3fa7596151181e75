"""How far a table's best validation cell lies from what a predictor learnt from the table's other cells expects:
the ceiling of any model-guided search that must find that one cell.

A search reaches the optimum of a column only if, at some round, its model ranks the optimum among the cells it
queries next. Here bo's own predictor (DNGO on the adjacency + one-hot encoding, the search's settings) is fitted
on n random cells of the table, never the optimum, and asked to rank every cell it did not see; the measure is how
many of those it ranks above the optimum. With n far beyond a search's 200 queries this bounds what the search's
model can know: if thousands of cells stand before the optimum at n = 5,000, 200 queries find it by luck only.
Beside it, what the column itself says: the gap between the best cells, and how many lie within a small distance
of the optimum (single training runs: the NAS-Bench-101 subset's one run per cell).

    python -m bench.optimum [--seeds 5] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from archsweep.benchmarks import load_benchmark
from archsweep.config import BOConfig
from archsweep.search.base import Domain
from archsweep.search.encodings import Encoder
from archsweep.search.predictor import DNGO
from bench._report import header, write_block

# (benchmark, dataset, the search harness's target for its best validation cell)
COLUMNS = (("nasbench101", "cifar10", "optimum in >= 10/20 seeds (subset table: validation only)"),
           ("nasbench201", "ImageNet16-120", "best validation cell in >= 18/20 seeds"),
           ("nasbench201", "cifar10", "reached in 19-20/20 seeds (block search)"),
           ("nasbench201", "cifar100", "reached in 20/20 seeds (block search)"))
LABELS = (200, 1000, 5000)  # labelled cells; and four fifths of the table (the "all the rest" column)
NEAR = (0.1, 0.25)  # validation-accuracy points below the optimum


def column(name: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(encodings [N, D], validation accuracies [N]) of the cells a search may query (`Domain.table`)."""
    benchmark = load_benchmark(name)
    table = Domain(benchmark).table()
    values = np.array([benchmark.lookup(benchmark.entry(key), dataset, "val") for _, key in table])
    keep = ~np.isnan(values)
    x = Encoder(benchmark.space, "adjacency")([cell for cell, _ in table])
    return x[keep], values[keep]


def ahead(x: np.ndarray, y: np.ndarray, n: int, seed: int, steps: int) -> tuple[int, int, float]:
    """DNGO fitted on n random cells other than the optimum: (unseen cells it ranks above the optimum, unseen
    cells, the optimum's predicted minus its true value)."""
    best = int(np.argmax(y))
    others = np.delete(np.arange(len(y)), best)
    seen = np.random.default_rng(seed).choice(others, n, replace=False)
    unseen = np.setdiff1d(np.arange(len(y)), seen)
    mean, _ = DNGO(steps=steps, seed=seed).fit(x[seen], y[seen]).predict(x[unseen])
    at = int(np.flatnonzero(unseen == best)[0])
    return int(np.sum(mean > mean[at])), len(unseen), float(mean[at] - y[best])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write the block into docs/BENCHMARKS.md")
    args = parser.parse_args()
    steps = BOConfig().fit_steps
    facts, ranks = [], []
    start = time.perf_counter()
    for name, dataset, target in COLUMNS:
        x, y = column(name, dataset)
        top = np.sort(y)[::-1]
        near = " | ".join(f"{int(np.sum(y >= top[0] - d)) - 1:,}" for d in NEAR)
        facts.append(f"| {name} {dataset} | {len(y):,} | {top[0]:.2f} | {top[0] - top[1]:.2f} | {near} | {target} |")
        cells = []
        for n in (*LABELS, len(y) * 4 // 5):
            runs = [ahead(x, y, n, seed, steps) for seed in range(args.seeds)]
            count = np.array([r[0] for r in runs])
            cells.append(f"{np.median(count):,.0f} of {runs[0][1]:,} ({np.sum(count < 200)}"
                         f"/{args.seeds}; {np.median([r[2] for r in runs]):+.2f})")
            print(f"{name} {dataset} n={n}: ahead {sorted(count.tolist())}", file=sys.stderr, flush=True)
        ranks.append(f"| {name} {dataset} | " + " | ".join(cells) + " |")
    seconds = time.perf_counter() - start
    body = ("### How findable is each table's best validation cell\n\n" + header() + "\n"
            "What a search that must query one particular cell is up against. The first table: the column's "
            "cells a search may query (one per table key), its best validation accuracy, the gap to the "
            "second best, and how many other cells lie within 0.1 and 0.25 points of it. The second: bo's "
            f"predictor (DNGO, {steps} Adam steps, on the adjacency + one-hot encoding, as the searches fit it) "
            "trained on n random cells other than the best one, then asked to rank every cell it did not see: "
            "the median over seeds of how many it ranks above the best cell, of how many unseen; in brackets the "
            "seeds where fewer than 200 stand above it (a search of 200 queries that followed this model's order "
            "alone would reach it), and the median of its predicted minus its true validation accuracy. "
            f"{args.seeds} seeds; {seconds:.0f} s in all.\n\n"
            "| column | cells | best validation | gap to the second | cells within 0.1 | within 0.25 | the "
            "searches' target there |\n|---|---|---|---|---|---|---|\n" + "\n".join(facts) + "\n\n"
            "| column | " + " | ".join(f"n = {n:,}" for n in LABELS) + " | n = four fifths of the table |\n"
            "|---|" + "---|" * (len(LABELS) + 1) + "\n" + "\n".join(ranks) + "\n")
    print(body)
    if args.write:
        write_block("optimum", body)


if __name__ == "__main__":
    main()
