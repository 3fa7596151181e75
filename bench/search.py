"""Measure NAS with the generator: LM-guided search against regularized evolution and random search, the same
harness, budgets and seeds, on NAS-Bench-201 (CIFAR-10, CIFAR-100, ImageNet16-120) and on NAS-Bench-101's 30k
subset table.

    python bench/search.py [--files sweeps/search-nasbench201.yaml ...] [--seeds 20] [--write]

lm_guided samples the priors `bench/lm.py` trained (runs/bench-lm/<space>/vqvae); run that first. Each file runs
through `archsweep.search.run.run_searches` on a local Ray (the same code as `archsweep search`); finished searches
are read back from their directory, so an interrupted call continues.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, header, write_block

from archsweep.runtime import init_local_ray
from archsweep.search.report import markdown, write_report
from archsweep.search.run import run_searches, search_dir_of
from archsweep.search.spec import load_search_file

FILES = ("sweeps/search-nasbench201.yaml", "sweeps/search-nasbench101.yaml")
LABELS = {"nasbench201": "NAS-Bench-201 (15,625 cells): test accuracy of the best-by-validation cell",
          "nasbench101": "NAS-Bench-101, **restricted to the 30,001 cells of the public subset table** (one run "
                         "each, validation accuracy only): validation accuracy of the best-by-validation cell"}


def speedup(table: list[dict], dataset: str) -> str:
    lines = {line["strategy"]: line for line in table if line["dataset"] == dataset}
    lm, rea = lines.get("lm_guided"), lines.get("regularized_evolution")
    if not lm or not rea:
        return ""
    a, b = lm["queries_to_optimum_median"], rea["queries_to_optimum_median"]
    if math.isinf(a):
        return f"{dataset}: lm_guided did not reach the optimum in most seeds"
    ratio = "more than " + f"{lm['queries'] / a:.1f}" if math.isinf(b) else f"{b / a:.2f}"
    return f"{dataset}: median queries to the optimum, regularized evolution / lm_guided = {ratio}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=list(FILES))
    parser.add_argument("--seeds", type=int, default=None, help="override searches.seeds")
    parser.add_argument("--write", action="store_true", help="write the block into docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()
    body = ("### NAS search: LM-guided vs regularized evolution vs random search\n\n" + header() + "\n"
            "Every strategy runs in the same harness (a Ray driver actor per search, evaluator actors answering "
            "benchmark queries, generator actors holding the LM prior), with the same budgets and seeds; the "
            "budget is benchmark queries, each distinct cell charged once. At every query the search records the "
            "best cell so far by validation accuracy; the table gives the mean ± std over seeds of that cell's "
            "accuracy at each budget, and the median over seeds of the queries until it is the table's optimum "
            "(in brackets: the seeds that got there within the budget). lm_guided: the VQ-VAE + LM prior of "
            "`bench/lm.py`, adapted each round to the 3 best cells found so far, 512 samples per round at T = 0.7, "
            "10 queries per round; regularized evolution: sequential (1 query per round), population/tournament "
            "as in each file; random: the benchmark's uniform sampler.\n")
    for file in args.files:
        overrides = [f"searches.seeds={args.seeds}"] if args.seeds else []
        spec = load_search_file(ROOT / file, overrides)
        start = time.perf_counter()
        def show(done, total, finished, file=file):
            print(f"\r{file}: {done}/{total} queries, {finished} searches done", end="", file=sys.stderr, flush=True)

        run_searches(spec, progress=show)
        seconds = time.perf_counter() - start
        budgets = spec.searches.report_budgets
        table, files = write_report(search_dir_of(spec), budgets)
        notes = [s for d in {line["dataset"] for line in table} if (s := speedup(table, d))]
        body += (f"\n#### {LABELS[spec.base.space]}\n\n`{file}`: {len(spec.runs())} searches, "
                 f"{spec.searches.seeds} seeds, budget {spec.base.search.budget} queries; wall time {seconds:.0f} s "
                 "on this machine (searches read back from an earlier call count as 0).\n\n"
                 + markdown(table, budgets) + "\n" + "".join(f"- {n}\n" for n in sorted(notes)))
        print(f"\n{file}: report in {files[0].parent}", file=sys.stderr)
    body += ("\nPublished NAS-Bench-201 CIFAR-10 test accuracies for reference (their own budgets): REA 93.92 ± 0.30, "
             "random search 93.70 ± 0.36, arch2vec-BO 94.18 ± 0.24; the table's optimum is 94.37.\n")
    print(body)
    if args.write:
        write_block("search", body)


if __name__ == "__main__":
    main()
