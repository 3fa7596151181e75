"""The ceiling of every generation table: "a perfect model of the training cells", i.e. as many draws from the
training split itself as a generator samples, scored by the same metrics (`archsweep.stages.lm.ceiling`), beside
what the draws' expectation says (sum over isomorphism classes of 1 - (1 - n_c / N)^S, over S samples).

    python -m bench.ceiling [--samples 10000] [--write]

The split is the default configuration's (seed 0, 90 % of the cells; DARTS: its sampled training set of
train.dataset_size cells), the one every generation table in docs/ trains on. No model is trained: the ceiling
depends on the data, the split and the sample count only, so it holds for every row of those tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from archsweep.config import load_config
from archsweep.data import training_split
from archsweep.spaces import get_space
from archsweep.stages.lm import ceiling
from archsweep.tracking.reproduce import METRICS, pct
from bench._report import header, write_block

SPACES = ("nasbench201", "nasbench101", "darts")
SEEDS = (0, 1, 2)  # draws of the ceiling: how much it moves between sample sets


def space_row(space_name: str, samples: int) -> str:
    cfg = load_config(overrides=[f"space={space_name}"])
    space = get_space(space_name)
    start = time.perf_counter()
    split = training_split(cfg)
    index = split.index
    _, sizes = np.unique([split.enum.hash(int(i)) for i in index], return_counts=True)
    expected = (1 - (1 - sizes / len(index)) ** samples).sum() / samples
    draws = [ceiling(space, split, samples, seed) for seed in SEEDS]
    first = draws[0]
    spread = [d["valid_unique"] for d in draws]
    row = (f"| {space_name} | {len(split.ops):,} | {len(index):,} | {len(sizes):,} | {samples:,} | "
           + " | ".join(pct(first[m]) for m in METRICS)
           + f" | {pct(min(spread))} - {pct(max(spread))} | {pct(expected)} | {time.perf_counter() - start:.0f} s |")
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    rows = [space_row(space, args.samples) for space in args.spaces]
    body = (
        "### The ceiling: a perfect model of the training cells\n\n" + header() + "\n"
        f"{args.samples:,} draws (with replacement) from the training split of the default configuration, scored by "
        "`archsweep.metrics.generation_metrics` exactly as generated samples are: what a generator that learnt its "
        "training cells exactly would score. Its novelty is 0 by construction; a generator above it finds cells "
        "beyond its training split (the continuous VAE's novelty on NAS-Bench-201). A generation row reads as a "
        "fraction of this one. "
        f"Seeds {', '.join(map(str, SEEDS))} give the range of valid_unique; expected: the sum over the training "
        "split's isomorphism classes of 1 - (1 - n_c / N)^S, over S.\n\n"
        "| space | cells | training split | distinct classes in it | samples | validity | uniqueness | novelty | "
        "valid_unique | valid_unique_novel | valid_unique, 3 seeds | expected | wall |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(body)
    if args.write:
        write_block("ceiling", body)


if __name__ == "__main__":
    main()
