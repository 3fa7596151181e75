"""Regenerate the reproduction report: every table and plot of the report a report file names (docs/REPORT.md for
sweeps/reproduce-cpu.yaml), from the sweep and search files it lists, with the machine, date, versions and command
in the report and on every figure.

    python -m bench.reproduce [sweeps/reproduce-cpu.yaml] [--fresh] [--address ADDR] [--docs DIR]

1. Generation: each generation sweep runs (as `archsweep sweep`); the table reads its trials at the sweep's base
   codebook size K, sequence length L and LM; the K and L ablations read the trials varying one of them; the
   reference LM is sampled again at each temperature.
2. NAS: each search file runs (as `archsweep search`), its model-based strategies using the reference trial (LM
   prior and VQ-VAE) of the generation sweep it names; the table (with each strategy's wall time on its driver
   actor) and the best-so-far curves (mean ± std over seeds) per dataset.
3. Performance: NAS-Bench-101 enumeration, VQ-VAE graphs/s on 1 vs 2 Ray Train workers, LM tokens/s and model FLOPs
   utilisation against this machine's measured matrix-multiply peak (and on a GPU when there is one: bf16,
   DeepSpeed ZeRO-2 vs ZeRO-0 data parallel), sampling architectures/s, the sweep's overhead over calling the
   pipeline directly, Ray Train + DeepSpeed against a plain PyTorch loop.

Trials and searches finished in the report's storage are read back (an interrupted call continues); `--fresh`
deletes that storage first. Every section is printed as it is written; the report file holds exactly those.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from archsweep.config import from_dict, load_config
from archsweep.layout import LMStage, VQVAEStage
from archsweep.metrics import STANDARD_SAMPLES
from archsweep.settings import CACHE_DIR_ENV
from archsweep.tracking import reproduce as R
from bench._measure import CPU_PEAK_N, GPU_PEAK_N, flops_per_token, matmul_peak, plain_lm_loop
from bench._report import ROOT, footer, header


def say(text: str) -> str:
    print(text, flush=True)
    return text


# --- 1. generation ---------------------------------------------------------------------------------------------------

def run_generation(path: Path, storage: str):
    """(sweep, its finished rows): the sweep run to the end, or read back where it already finished."""
    from archsweep.cli import SweepMonitor
    from archsweep.sweep.run import run_sweep, sweep_dir_of
    from archsweep.sweep.spec import load_sweep
    from archsweep.tracking.store import ResultStore

    sweep = load_sweep(path, [f"storage={storage}"])
    sweep_dir = sweep_dir_of(sweep)
    total = sweep.trial_count()
    finished = sweep_dir.is_dir() and sum(r.status == "TERMINATED" for r in ResultStore(sweep_dir).rows()) == total
    if not finished:
        print(f"sweep {sweep.name}: {total} trials -> {sweep_dir}", flush=True)
        with SweepMonitor(sweep_dir, total, sweep.tune.metric, sweep.tune.mode):
            grid = run_sweep(sweep)
        if grid.errors:
            raise SystemExit(f"{len(grid.errors)} trial(s) of {path} failed; `archsweep report {sweep_dir}` shows "
                             "them; run this command again to retry them")
    return sweep, ResultStore(sweep_dir).rows()


def temperature_points(row, temperatures: list[float]) -> list[dict]:
    """The reference trial's LM sampled again at each temperature (its sample count and seed, so T = 1.0 repeats
    the trial's own samples)."""
    from archsweep.artifacts import load_lm
    from archsweep.stages import lm as lm_stage

    cfg = from_dict(row.config)
    lm = load_lm(cfg, LMStage(Path(row.paths["lm_dir"])).model)
    scorer = lm_stage.Scorer(cfg, row.paths["vqvae_dir"])
    points = []
    for t in temperatures:
        cfg.sample.temperature = t
        m = lm_stage.generate(lm, scorer, cfg)
        points.append({"temperature": t, **{k: m[k] for k in R.METRICS}, "samples_per_s": m["samples_per_s"]})
        print(f"  T = {t}: valid_unique {m['valid_unique']:.4f}, {m['samples_per_s']:,.0f} architectures/s",
              flush=True)
    return points


def training_text(base) -> str:
    """How the sweep's stages train: fixed epochs, or up to a cap and stopped on the held-out plateau."""
    parts = []
    for what, t, curve in (("VQ-VAE", base.train, "held-out reconstruction"), ("LM", base.lm, "held-out loss")):
        rule = f"patience {t.patience} epochs, min_delta {t.min_delta:g}, at least {t.min_epochs} epochs"
        parts.append(f"{what} up to {t.epochs} epochs, stopped once its {curve} plateaus ({rule})" if t.early_stop
                     else f"{what} {t.epochs} epochs (judged plateaued by {curve}, {rule})")
    return "; ".join(parts)


def cut_short_text(lines: list[dict], first: str) -> str:
    short = R.cut_short(lines)
    if not short:
        return ("Every row's held-out curves had plateaued when its training ended (none cut short).\n")
    names = ", ".join(str(line[first]) for line in short)
    return (f"**Cut short** ({R.CUT_SHORT}: fewer epochs than `min_epochs`, or its held-out curve still gained more "
            f"than min_delta within the last `patience` epochs when its epochs ran out): {names}. Read those rows as "
            "under-trained, not as the effect of the setting.\n")


def generation_section(sweep, rows, spec, figures: Path, footer: str) -> tuple[str, dict]:
    """The section of one space, and what later sections need from it (reference trial, sampling speed)."""
    ref = R.reference(dataclasses.asdict(sweep.base), rows)
    space = sweep.base.space
    lines = R.generation_table(rows, ref)
    top = R.ceiling(rows, ref)
    text = (f"### {space}\n\n`{rel(sweep.source)}`: reference K = {ref['vqvae.codebook_size']}, "
            f"L = {ref['vqvae.seq_len']}; {training_text(sweep.base)}; {sweep.base.sample.samples:,} LM samples per "
            f"row (the VAE's prior and the uniform prior: {STANDARD_SAMPLES:,}, as the VQ-VAE stage measures them). "
            "The last row, the ceiling, samples the training split itself as often: what a generator that learnt "
            "its training cells exactly would score (novelty 0; a generator above it finds cells beyond them).\n\n"
            + R.markdown(["generator", *R.METRIC_HEAD], R.metric_rows(lines, "generator", top))
            + "\n" + cut_short_text(lines, "generator"))
    for key, label in R.ABLATIONS.items():
        points = R.ablation(rows, ref, key)
        if len(points) < 2:
            continue
        png = R.plot_metrics(points, key, figures / f"{space}-{key.split('.')[1]}.png",
                             f"{space}: {label} ({ref['lm.name']})", footer, label, log2=True, top=top)
        text += (f"\nAblation over {label} ({ref['lm.name']}, the other of K and L at its reference value):\n\n"
                 + R.markdown([label, *R.METRIC_HEAD], R.metric_rows(points, key, top))
                 + "\n" + cut_short_text(points, key)
                 + f"\n![{space} {label}]({link(png, spec)})\n")
    out = {"ref_row": R.reference_trial(rows, ref), "space": space}
    if out["ref_row"] is not None and spec.temperatures:
        print(f"{space}: sampling {ref['lm.name']} at temperatures {spec.temperatures}", flush=True)
        points = temperature_points(out["ref_row"], spec.temperatures)
        png = R.plot_metrics(points, "temperature", figures / f"{space}-temperature.png",
                             f"{space}: sampling temperature ({ref['lm.name']})", footer, top=top)
        table = [[str(p["temperature"]), *(R.pct(p[m]) for m in R.METRICS), f"{p['samples_per_s']:,.0f}"]
                 for p in points]
        if top:
            table.append([R.CEILING, *(R.pct(top[m]) for m in R.METRICS), "–"])
        text += (f"\nSampling temperature ({ref['lm.name']}, the same trained LM sampled again with the trial's sample "
                 "count and seed, so T = 1.0 repeats its own samples):\n\n"
                 + R.markdown(["temperature", *R.METRICS, "architectures/s"], table)
                 + f"\n![{space} temperature]({link(png, spec)})\n")
        out["sampling"] = next((p for p in points if p["temperature"] == 1.0), points[0])
    return say(text), out


# --- 2. NAS ----------------------------------------------------------------------------------------------------------

def search_section(entry, spec, generated: dict, storage: str, figures: Path, footer: str) -> str:
    from archsweep.cli import SearchMonitor
    from archsweep.search.report import aggregate, markdown, plot_curves
    from archsweep.search.run import run_searches, search_dir_of
    from archsweep.search.spec import load_search_file

    overrides = [f"storage={storage}"]
    if entry.prior:
        ref_row = generated[entry.prior]["ref_row"]
        overrides.append(f"search.lm_guided.prior={ref_row.paths['trial_dir']}")
    search = load_search_file(spec.path_of(entry.file), overrides)
    print(f"search {search.name}: {len(search.runs())} searches -> {search_dir_of(search)}", flush=True)
    with SearchMonitor(len(search.runs())) as monitor:
        rows = run_searches(search, progress=monitor)
    budgets = list(search.searches.report_budgets)
    png = plot_curves(rows, figures / f"search-{search.name}.png", footer)
    text = (f"### {search.base.space}: {search.name}\n\n`{rel(search.source)}`: {len(rows)} searches (seeds: "
            f"{search.searches.seeds}, budget: {search.base.search.budget} queries)"
            + (f"; the strategies that use a trained model (lm_guided, lm_ranker: the LM prior; bo and rl over vq: "
               f"its VQ-VAE) use the reference trial of `{entry.prior}`" if entry.prior else "") + ".\n\n"
            + markdown(aggregate(rows, budgets), budgets)
            + (f"\n![{search.name}]({link(png, spec)})\n" if png else ""))
    return say(text)


# --- 3. performance --------------------------------------------------------------------------------------------------

def lm_rows(spec, ref_row, peaks: dict) -> list[list[str]]:
    """LM training on the reference trial's codes: plain PyTorch and Ray Train + DeepSpeed ZeRO-2 on this CPU (one
    worker, one thread each, as a Ray Train worker with 1 CPU runs), then bf16 on a GPU when there is one."""
    import torch

    from archsweep.runtime import worker_env
    from archsweep.train import history, scale
    from archsweep.train.lm import fit, load_codes

    cfg = from_dict(ref_row.config)
    cfg.lm.name, cfg.lm.epochs, cfg.lm.num_workers = spec.performance.lm_name, spec.performance.lm_epochs, 1
    codes = VQVAEStage(Path(ref_row.paths["vqvae_dir"])).codes
    train_seqs, _, size = load_codes(codes)
    fpt = flops_per_token(cfg, train_seqs, size)
    batch = scale.global_batch(cfg.lm.batch_size, scale.LM_REFERENCE_BATCH, len(train_seqs), 1, False)
    what = f"{cfg.lm.name}, {cfg.space} codes ({len(train_seqs):,} sequences), epochs: {cfg.lm.epochs}, batch {batch}"

    def train(c) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = fit(c, codes, out, worker_env())
            wall = time.perf_counter() - start
            if result.error is not None:
                raise result.error
            return wall, float(history(result)["tokens_per_s"].mean())

    plain_wall, plain_tps = plain_lm_loop(cfg, train_seqs, size, batch, threads=cfg.lm.cpus_per_worker)
    ray_wall, ray_tps = train(cfg)
    peak = peaks["cpu, 1 thread"]
    rows = [
        [f"LM training, plain PyTorch loop ({what})", f"{plain_tps:,.0f} tokens/s, {plain_wall:.1f} s wall; MFU "
         f"{100 * plain_tps * fpt / peak:.1f} % of the 1-thread peak ({fpt / 1e6:.2f} MFLOP per token)"],
        [f"LM training, Ray Train (1 worker) + DeepSpeed ZeRO-{cfg.lm.zero_stage} (same)",
         f"{ray_tps:,.0f} tokens/s, {ray_wall:.1f} s wall; MFU {100 * ray_tps * fpt / peak:.1f} %"],
        ["Ray Train + DeepSpeed overhead against the plain loop (same run)",
         f"wall time {ray_wall / plain_wall:.2f}x (start-up, per-epoch held-out loss and checkpoints included); "
         f"training speed {plain_tps / ray_tps:.2f}x"],
    ]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peaks[f"{name}, bf16"] = peak = matmul_peak("cuda", torch.bfloat16)
        for zero in (2, 0):
            c = copy.deepcopy(cfg)
            c.lm.use_gpu, c.lm.gpus_per_worker, c.lm.bf16, c.lm.zero_stage = True, 1.0, True, zero
            wall, tps = train(c)
            rows.append([f"LM training on {name}, bf16, DeepSpeed ZeRO-{zero}"
                         + (" (plain data parallel)" if zero == 0 else "") + f" ({what})",
                         f"{tps:,.0f} tokens/s, {wall:.1f} s wall; MFU {100 * tps * fpt / peak:.1f} %"])
    else:
        rows.append(["LM training on a GPU (bf16, ZeRO-2 vs ZeRO-0)", "not measured: no GPU on this machine"])
    return rows


def enumeration_row() -> list[str]:
    from archsweep.spaces import get_space

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        enum = get_space("nasbench101").enumerate(cache_dir=cache)
        seconds = time.perf_counter() - start
    return [f"NAS-Bench-101 enumeration from scratch ({os.cpu_count()} processes)",
            f"{len(enum):,} cells in {seconds:.1f} s"]


def vqvae_row(spec) -> list[str]:
    from archsweep.runtime import worker_env
    from archsweep.train import history
    from archsweep.train.vqvae import fit

    p = spec.performance
    speeds = []
    for workers in (1, 2):
        cfg = load_config(overrides=[f"space={p.vqvae_space}", f"train.epochs={p.vqvae_epochs}",
                                     f"train.num_workers={workers}"])
        with tempfile.TemporaryDirectory() as out:
            result = fit(cfg, Path(out), worker_env())
            if result.error is not None:
                raise result.error
            speeds.append(float(history(result)["graphs_per_s"].mean()))
    return [f"VQ-VAE training ({p.vqvae_space}, default model, epochs: {p.vqvae_epochs}), Ray Train data parallel",
            f"1 worker {speeds[0]:,.0f} graphs/s, 2 workers {speeds[1]:,.0f} graphs/s ({speeds[1] / speeds[0]:.2f}x)"]


def overhead_row(path: Path) -> list[str]:
    """One small trial as a 1-trial sweep (Tune, result store, W&B offline) against the same pipeline called
    directly in this process."""
    from bench.overhead import measure

    sweep, t = measure(path, ["name=overhead", "train.epochs=1", "lm.epochs=1", "sample.samples=1000"])
    swept, direct = t["sweep"], t["direct"]
    return [f"Sweep overhead: one trial ({sweep.base.space}, {sweep.base.lm.name}, 1 + 1 epochs, 1,000 samples) as a "
            "sweep vs the pipeline called directly",
            f"{swept:.1f} s vs {direct:.1f} s: {swept - direct:+.1f} s per trial (Tune, result store, W&B offline)"]


def performance_section(spec, generated: dict) -> str:
    import torch

    p = spec.performance
    first = generated[next(iter(generated))]
    peaks = {"cpu, 1 thread": matmul_peak(threads=1), f"cpu, {torch.get_num_threads()} threads": matmul_peak()}
    rows = []

    def add(*new: list[str]) -> None:
        for row in new:
            rows.append(row)
            print("| " + " | ".join(row) + " |", flush=True)

    if p.enumeration:
        add(enumeration_row())
    add(vqvae_row(spec))
    if first["ref_row"] is not None:
        add(*lm_rows(spec, first["ref_row"], peaks))
    for info in generated.values():
        if "sampling" in info:
            add([f"Sampling ({info['space']}, reference LM, T = {info['sampling']['temperature']}): generate, parse, "
                 "decode through the VQ-VAE, score", f"{info['sampling']['samples_per_s']:,.0f} architectures/s"])
    if p.sweep_overhead:
        add(overhead_row(spec.path_of(spec.generation[0])))
    peak_text = "; ".join(f"{k}: {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items())
    return say("Measured matrix-multiply peak (best of 8 square multiplies, fp32 on the CPU "
               f"{CPU_PEAK_N}x{CPU_PEAK_N}, bf16 on a GPU {GPU_PEAK_N}x{GPU_PEAK_N}): {peak_text}. Model FLOPs "
               "utilisation (MFU) = tokens/s x the model's training FLOPs per token (counted by "
               "`torch.utils.flop_counter` on a real batch) / that peak.\n\n"
               + R.markdown(["what", "result"], rows))


# --- the report ------------------------------------------------------------------------------------------------------

def rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def link(png: Path, spec) -> str:
    """A figure's path from the report's folder (figures live in report/<name>/ beside it)."""
    return f"report/{spec.name}/{png.name}"


def start_ray(tracking, address: str | None) -> None:
    """The local Ray (or the cluster at `address`) every part of the report runs on, with W&B settings for its
    workers (the report's sweeps all track the same way)."""
    from archsweep.runtime import connect_ray, init_local_ray
    from archsweep.tracking.wandb import check_login, wandb_env

    check_login(tracking)
    if address:
        connect_ray(address, wandb_env(tracking))
    else:
        init_local_ray(env=wandb_env(tracking))


def preflight(spec):
    """Every sweep and search file checked before anything runs (a search's prior is checked once it exists);
    returns the first generation sweep."""
    from archsweep.search.spec import load_search_file
    from archsweep.sweep.spec import load_sweep

    sweeps = [load_sweep(spec.path_of(name), [f"storage={spec.storage}"]) for name in spec.generation]
    names = [sweep.name for sweep in sweeps]
    for entry in spec.search:
        if entry.prior and entry.prior not in names:
            raise R.ConfigError(f"{spec.source}: search {entry.file!r} names prior {entry.prior!r}, which is not one "
                                f"of its generation sweeps ({', '.join(names)})")
        load_search_file(spec.path_of(entry.file), [f"storage={spec.storage}"], check_prior=not entry.prior)
    return sweeps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", default="sweeps/reproduce-cpu.yaml", type=Path)
    parser.add_argument("--fresh", action="store_true", help="delete the report's storage first and build the caches "
                        "anew inside it (rerun everything)")
    parser.add_argument("--address", help="run on this Ray cluster instead of a local Ray (e.g. auto in a Ray Job)")
    parser.add_argument("--docs", type=Path, help="write the report here instead of where the report file says")
    args = parser.parse_args()
    from archsweep.errors import ArchsweepError

    try:
        spec = R.load_report_file(args.file)
        first = preflight(spec)
    except ArchsweepError as exc:
        raise SystemExit(f"error: {exc}") from None
    report = (args.docs or ROOT / Path(spec.report).parent) / Path(spec.report).name
    figures = report.parent / "report" / spec.name
    if args.fresh:  # results and derived caches (enumerations, parsed tables) all rebuilt
        shutil.rmtree(spec.storage, ignore_errors=True)
        os.environ[CACHE_DIR_ENV] = str(Path(spec.storage).resolve() / "cache")
    shutil.rmtree(figures, ignore_errors=True)
    started = time.perf_counter()
    head = header()
    edge = footer(head)

    start_ray(first.tracking, args.address)
    sections, generated = [], {}
    for name in spec.generation:
        sweep, rows = run_generation(spec.path_of(name), spec.storage)
        text, generated[sweep.name] = generation_section(sweep, rows, spec, figures, edge)
        sections.append(("Generation", text))
    for entry in spec.search:
        sections.append(("NAS", search_section(entry, spec, generated, spec.storage, figures, edge)))
    sections.append(("Performance", performance_section(spec, generated)))

    body = [f"# Reproduction report: {spec.name}\n\n" + head + f"- wall time: {(time.perf_counter() - started) / 60:.1f}"
            " min for the whole command (trials and searches read back from an earlier call are not counted)\n\n"
            f"Generated by the command above from `{rel(spec.source)}`; nothing in this file is typed by hand. "
            "Metrics as defined in `archsweep/metrics.py`: validity, uniqueness and novelty by canonical hash "
            "(uniqueness and novelty among the valid samples; novelty against the training split), "
            "`valid_unique` = validity x uniqueness, `valid_unique_novel` = that x novelty. Held-out "
            "reconstruction: exact match of the decoded cell on the 10 % of cells not trained on.\n"]
    for title in ("Generation", "NAS", "Performance"):
        parts = [text for kind, text in sections if kind == title]
        if parts:
            body.append(f"## {title}\n\n" + "\n".join(parts))
    say(body[0])
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(body))
    print(f"wrote {report} and {len(list(figures.glob('*.png')))} figures in {figures}", flush=True)


if __name__ == "__main__":
    main()
