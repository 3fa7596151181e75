"""Measure NAS with the generator: every strategy of the search files (random, regularized evolution, lm_guided
with and without a surrogate, bo in each representation, rl, lm_ranker), the same harness, budgets and seeds, on
NAS-Bench-201 (CIFAR-10, CIFAR-100, ImageNet16-120) and on NAS-Bench-101's 30k subset table.

    python -m bench.search [--files sweeps/search-nasbench201.yaml ...] [--seeds 20] [--write]

The generator-based strategies and bo/rl over learned representations use the models `bench/lm.py` trained
(runs/bench-lm/<space>/vqvae, and .../vae for bo_vae); run that first. Each file runs
through `archsweep.search.run.run_searches` on a local Ray (the same code as `archsweep search`); finished searches
are read back from their directory, so an interrupted call continues. A call cut with `--datasets`/`--strategies`
runs under a name of its own; the full call reads back what such calls finished with the same settings (`adopt`)
and writes the best-so-far curves beside its block (docs/benchmarks/<search name>.png).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from archsweep.config import LMRankerConfig, RLConfig
from archsweep.runtime import init_local_ray
from archsweep.search.report import markdown, plot_curves, write_report
from archsweep.search.run import run_searches, search_dir_of
from archsweep.search.spec import check_models, load_search_file
from bench._report import ROOT, footer, header, write_block

R, RL = LMRankerConfig(), RLConfig()  # lm_ranker's and rl's settings, as the files leave them
FILES = ("sweeps/search-nasbench201.yaml", "sweeps/search-nasbench101.yaml")
LABELS = {"nasbench201": "NAS-Bench-201 (15,625 cells): test accuracy of the best-by-validation cell",
          "nasbench101": "NAS-Bench-101, **restricted to the 30,001 cells of the public subset table** (one run "
                         "each, validation accuracy only): validation accuracy of the best-by-validation cell"}


def finished(spec) -> int:
    """Searches of the file already finished (read back, not run again)."""
    from archsweep.tracking.store import ResultStore

    directory = search_dir_of(spec)
    return sum(r.status == "TERMINATED" for r in ResultStore(directory).rows()) if directory.is_dir() else 0


def ran(now: int, earlier: int, seconds: float, adopted: dict[str, int] | None = None) -> str:
    """How the searches of a block came to be: run now, read back from an earlier call, or adopted (`adopted`:
    searches per restricted call's directory)."""
    adopted = adopted or {}
    total = sum(adopted.values())
    parts = [f"{now} run in this call in {seconds:.0f} s on this machine"] if now else []
    if earlier > total:
        parts.append(f"{earlier - total} finished in an earlier call of this command and read back")
    if total:
        parts.append(f"{total} finished by earlier calls restricted to some datasets or strategies with the same "
                     "settings, and read back (their wall times are those calls'): " + ", ".join(
                         f"{n} from {name}" for name, n in sorted(adopted.items())))
    return "; ".join(parts)


def provenance(directory: Path) -> dict[str, int]:
    """Finished searches of a directory that `adopt` copied in, per directory they came from."""
    from collections import Counter

    from archsweep.tracking.store import ResultStore

    return dict(Counter(Path(r.paths["adopted_from"]).name for r in ResultStore(directory).rows()
                        if r.status == "TERMINATED" and "adopted_from" in r.paths)) if directory.is_dir() else {}


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


GENERATORS = ("lm_guided", "lm_guided_surrogate", "lm_ranker")


def generators(table: list[dict], dataset: str) -> str:
    """Seeds that reached the optimum and the best validation cell, per generator-based strategy (the issue's 18/20
    and 10/20 targets)."""
    lines = {line["strategy"]: line for line in table if line["dataset"] == dataset}
    parts = [f"{g} {lines[g]['queries_to_optimum_reached']}/{lines[g]['seeds']} "
             f"(best validation cell {lines[g]['queries_to_val_optimum_reached']}/{lines[g]['seeds']})"
             for g in sorted(lines) if g.startswith(GENERATORS)]
    return f"{dataset}: seeds reaching the optimum within the budget, " + ", ".join(parts) if parts else ""


def found_optimum(directory: Path, space: str) -> list[str]:
    """Per dataset with a test split: how many seeds of each strategy queried the table's best test cell at all,
    whether or not their best-by-validation cell ended there (on ImageNet16-120 that cell is only the 10th by
    validation, so a search that also queries a better-validated cell no longer counts as at the optimum)."""
    from collections import defaultdict

    from archsweep.benchmarks import load_benchmark
    from archsweep.search.loop import SearchState
    from archsweep.search.report import strategy_label
    from archsweep.tracking.store import ResultStore

    benchmark = load_benchmark(space)
    if "test" not in benchmark.splits:
        return []
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in ResultStore(directory).rows():
        if row.status != "TERMINATED" or not Path(row.paths.get("state", "")).is_file():
            continue
        dataset = row.config["search"]["dataset"]
        _, optimum = benchmark.best(dataset, "test")
        history = SearchState.load(row.paths["state"]).history
        hits[dataset][strategy_label(row)].append(any(q.test is not None and abs(q.test - optimum) < 1e-9 for q in history))
    return [f"{dataset}: seeds whose queries include the table's best test cell, " + ", ".join(
        f"{label} {sum(h)}/{len(h)}" for label, h in sorted(by_label.items())) for dataset, by_label in hits.items()]


def relevant(cfg) -> dict:
    """A search's configuration without the settings its strategy never reads (another strategy's section; the
    pipeline's stages, which a search with a prior does not run), so that a default changed since for another
    strategy does not make two identical searches look different."""
    from archsweep.config import to_dict
    from archsweep.search.requirements import needs_generator, uses_encoder

    c, strategy = to_dict(cfg), cfg.search.strategy
    s = c["search"]
    readers = {"lm_ranker": strategy == "lm_ranker", "rl": strategy == "rl",
               "evolution": strategy == "regularized_evolution",
               "bo": strategy == "bo" or (strategy == "lm_guided" and uses_encoder(cfg))}  # its surrogate, explorer
    for section, read in readers.items():
        if not read:
            s.pop(section)
    if not needs_generator(cfg):
        s["lm_guided"] = {"prior": s["lm_guided"]["prior"]}  # bo and rl read their VQ-VAE from the prior
    for section in ("vqvae", "train", "lm", "sample"):
        c.pop(section)
    return c


def adopt(spec, siblings: str = "") -> int:
    """Copy into this file's directory the searches that an earlier call restricted to some datasets or strategies
    (a directory `<name>-...` beside it, or those matching the glob `siblings`) finished with the same settings
    (`relevant`, read through today's config schema, so keys added since take their defaults; the newest where several
    did), so that a full comparison reads them back instead of running them again. Returns how many were adopted. A
    strategy whose code changed since needs a fresh restricted call first."""
    import shutil

    from archsweep.config import ConfigError, from_dict
    from archsweep.search.run import state_path
    from archsweep.tracking.store import ResultStore, Row

    target = search_dir_of(spec)
    store = ResultStore(target)
    have = {r.trial_id for r in store.rows() if r.status == "TERMINATED"}
    wanted = {rid: relevant(cfg) for rid, cfg in spec.runs() if rid not in have}
    found: dict[str, tuple] = {}  # run id -> (row, its directory): the newest finished one of the same config
    for sibling in sorted(target.parent.glob(siblings or f"{spec.name}-*")):
        if not (sibling / "results.db").is_file():
            continue
        for row in ResultStore(sibling).rows():
            if row.status != "TERMINATED" or row.trial_id not in wanted:
                continue
            try:
                same = relevant(from_dict(row.config)) == wanted[row.trial_id]
            except ConfigError:  # a config of an older schema: not comparable, so not adopted
                same = False
            if same and Path(row.paths.get("state", "")).is_file() and (
                    row.trial_id not in found or row.updated > found[row.trial_id][0].updated):
                found[row.trial_id] = (row, sibling)
    for rid, (row, sibling) in found.items():
        destination = state_path(target, rid).parent
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(Path(row.paths["state"]).parent, destination)
        store.put(Row(rid, row.status, row.config, row.metrics,
                      {"state": str(destination / "state.jsonl"), "adopted_from": str(sibling)}))
    return len(found)


def overrides(args) -> list[str]:
    return ([f"searches.seeds={args.seeds}"] if args.seeds else []) + (
        [f"searches.datasets=[{', '.join(args.datasets)}]"] if args.datasets else [])


def suffix(args) -> str:
    return "-".join([*(args.datasets or []), *(args.strategies or [])])


def restricted(spec, args):
    """The file's searches, cut to `--strategies`; a cut file runs under a name of its own (its own directory)."""
    if args.strategies:
        unknown = set(args.strategies) - set(spec.searches.strategies)
        if unknown:
            sys.exit(f"{spec.source}: no strategy labelled {', '.join(sorted(unknown))} "
                     f"(it has {', '.join(spec.searches.strategies)})")
        spec.searches.strategies = {k: v for k, v in spec.searches.strategies.items() if k in args.strategies}
    if args.datasets or args.strategies:
        spec.name = f"{spec.name}-{suffix(args)}"
    return spec


def optimum_supplement(args, main) -> str:
    """REA's median queries to the CIFAR-10 optimum can lie beyond the comparison's budget: measure it with longer
    runs of the same searches (same seeds; a longer run's first queries are the shorter run's)."""
    from archsweep.search.report import aggregate
    from archsweep.tracking.store import ResultStore

    long = load_search_file(ROOT / FILES[0], [
        *([f"searches.seeds={args.seeds}"] if args.seeds else []), f"name={main.name}-rea-{args.optimum_budget}",
        f"search.budget={args.optimum_budget}", "searches.datasets=[cifar10]",
        "searches.strategies={regularized_evolution: {search.batch_size: 1}}",
        f"searches.report_budgets=[{args.optimum_budget}]"])
    # a call restricted to some datasets or strategies that included CIFAR-10 ran the same longer searches
    if not (args.datasets or args.strategies):
        adopt(long, f"{main.name}-*-rea-{args.optimum_budget}")
    earlier = finished(long)
    start = time.perf_counter()
    run_searches(long)
    seconds = time.perf_counter() - start
    lines = {(line["strategy"], line["dataset"]): line
             for d in (search_dir_of(main), search_dir_of(long)) for line in aggregate(ResultStore(d).rows(), [])}
    lm, rea = lines[("lm_guided", "cifar10")], lines[("regularized_evolution", "cifar10")]
    a, b = lm["queries_to_optimum_median"], rea["queries_to_optimum_median"]
    ratio = f"{b / a:.2f}x" if math.isfinite(a) and math.isfinite(b) else "not measurable (a median is beyond the budget)"
    how = ran(len(long.runs()) - earlier, earlier, seconds, provenance(search_dir_of(long)))
    return (f"\n#### Queries to the NAS-Bench-201 CIFAR-10 optimum (test 94.37), median over seeds\n\n"
            f"The same regularized-evolution searches run on to {args.optimum_budget} queries ({long.name}: "
            f"{how}):\n\n| strategy | budget | seeds that reached it | median queries |\n"
            f"|---|---|---|---|\n| lm_guided | {lm['queries']} | {lm['queries_to_optimum_reached']}/{lm['seeds']} | "
            f"{a:g} |\n| regularized_evolution | {rea['queries']} | {rea['queries_to_optimum_reached']}/{rea['seeds']} "
            f"| {b:g} |\n\nregularized evolution / lm_guided: **{ratio}**\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=list(FILES))
    parser.add_argument("--seeds", type=int, default=None, help="override searches.seeds")
    parser.add_argument("--optimum-budget", type=int, default=1000,
                        help="budget of the longer REA runs for the queries to the CIFAR-10 optimum (0: skip)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (a block of its own)")
    parser.add_argument("--strategies", nargs="+", help="only these strategy labels of the files (a block of its own)")
    parser.add_argument("--write", action="store_true", help="write the block into docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()
    cut = bool(args.datasets or args.strategies)
    harness = (
            "Every strategy runs in the same harness (a Ray driver actor per search, evaluator actors answering "
            "benchmark queries, generator actors holding the LM prior), with the same budgets and seeds; the "
            "budget is benchmark queries, each distinct cell charged once. At every query the search records the "
            "best cell so far by validation accuracy; the table gives the mean ± std over seeds of that cell's "
            "accuracy at each budget, and the median over seeds of the queries until it is the table's optimum "
            "(its best test accuracy; in brackets: the seeds that got there within the budget), until the table's "
            "best cell by validation is queried, and until it is in the top 0.1 % by validation. Where the best "
            "test cell is not the best by validation (ImageNet16-120: the 10th), a search that finds a "
            "better-validated cell can no longer count as at the optimum; there the best validation cell is the "
            "optimum a search selecting by validation can reach. lm_guided: the VQ-VAE + LM prior of "
            "`bench/lm.py`, adapted each round to the 3 best cells found so far, 512 samples per round at T = 0.7, "
            "10 queries per round; regularized evolution: sequential (1 query per round), population/tournament "
            "as in each file; random: the benchmark's uniform sampler. bo_vq / bo_vae / bo_adjacency: DNGO (a "
            "3 x 50 network's features, Bayesian linear regression) and expected improvement over every unqueried "
            "cell of the table, 5 queries a round, after 16 random queries, in the VQ-VAE's code vectors (the "
            "prior's), the continuous VAE's latent means (`bench/lm.py`'s VAE row) or adjacency + one-hot "
            "operations; rl_vq: REINFORCE with a Gaussian policy over the VQ representation, its mean starting at "
            f"the best of {RL.initial} random queries, each sample rounded to the nearest of {RL.pool_size:,} random "
            "table cells; "
            "lm_guided_surrogate: lm_guided with each round's new samples ranked by bo's DNGO instead of by sample "
            "count; lm_guided_explore: 10 random queries, then each round 7 of lm_guided's cells and 3 picked by a "
            "bo over adjacency + one-hot (expected improvement over 1,000 random table cells; on NAS-Bench-101 over "
            "the whole table); "
            "lm_guided_surrogate_explore: the same with the generator's new samples ranked by the surrogate and bo's "
            "picks from the whole table; lm_ranker: a " + R.name + f" trained on {R.examples:,} ranking examples "
            f"built from the queried cells ({R.steps} steps at its first round, {R.update_steps} more each later "
            f"round), picking among {R.pool} new prior samples. Wall time: mean over seeds of a search's rounds "
            "on its driver actor (in brackets, the strategy's own propose step: model fits, LM adaptation and "
            "sampling), with the other searches sharing the machine's cores.\n")
    body = (f"### NAS search, restricted to {suffix(args)}\n\n" + header() + "\nHarness and columns as in block "
            "search (\"NAS search: every strategy in one harness\"); each strategy as its search file sets it "
            "today.\n" if cut else
            "### NAS search: every strategy in one harness\n\n" + header() + "\n" + harness)
    nb201 = None
    for file in args.files:
        spec = restricted(load_search_file(ROOT / file, overrides(args), check_prior=False), args)
        check_models(spec)  # only the kept strategies' models
        nb201 = spec if file == FILES[0] else nb201
        def show(done, total, finished, file=file):
            print(f"\r{file}: {done}/{total} queries, {finished} searches done", end="", file=sys.stderr, flush=True)

        if not cut:
            adopt(spec)
        earlier = finished(spec)
        start = time.perf_counter()
        run_searches(spec, progress=show)
        seconds = time.perf_counter() - start
        budgets = spec.searches.report_budgets
        table, files = write_report(search_dir_of(spec), budgets)
        notes = [s for d in {line["dataset"] for line in table} for s in (speedup(table, d), generators(table, d)) if s]
        figure = ""
        if not cut:
            notes += found_optimum(search_dir_of(spec), spec.base.space)
        if args.write and not cut:  # the full comparison's curves go beside its table
            from archsweep.tracking.store import ResultStore

            png = plot_curves(ResultStore(search_dir_of(spec)).rows(), ROOT / "docs" / "benchmarks" /
                              f"{spec.name}.png", footer(header()))
            figure = f"\nBest-so-far curves (mean ± std over seeds): ![{spec.name}](benchmarks/{png.name})\n" if png \
                else ""
        body += (f"\n#### {LABELS[spec.base.space]}\n\n`{file}`: {len(spec.runs())} searches, "
                 f"{spec.searches.seeds} seeds, budget {spec.base.search.budget} queries; "
                 f"{ran(len(spec.runs()) - earlier, earlier, seconds, provenance(search_dir_of(spec)))}.\n\n"
                 + (f"Restricted to {'; '.join(', '.join(x) for x in (args.datasets, args.strategies) if x)} "
                    f"(searches named {spec.name}).\n\n" if cut else "")
                 + markdown(table, budgets) + "\n" + "".join(f"- {n}\n" for n in sorted(notes)) + figure)
        print(f"\n{file}: report in {files[0].parent}", file=sys.stderr)
    if args.optimum_budget and nb201 is not None and {"lm_guided", "regularized_evolution"} <= set(
            nb201.searches.strategies) and "cifar10" in nb201.searches.datasets:
        body += optimum_supplement(args, nb201)
    if nb201 is not None and "cifar10" in nb201.searches.datasets:
        body += ("\nPublished NAS-Bench-201 CIFAR-10 test accuracies for reference (their own budgets): REA 93.92 ± "
                 "0.30, random search 93.70 ± 0.36, arch2vec-BO 94.18 ± 0.24; the table's optimum is 94.37.\n")
    print(body)
    if args.write:  # a restricted run has a block of its own beside the full comparison's
        write_block("search-" + suffix(args) if cut else "search", body)


if __name__ == "__main__":
    main()
