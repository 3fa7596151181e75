"""The `archsweep` command. Only click is imported up front, so `--help` stays fast; each command imports
what it needs. Library code never prints: rendering (tables, progress bars) happens here."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from archsweep import __version__


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=_console(stderr=True), transient=True)


class _Group(click.Group):
    """Turns archsweep's own errors into one clear line and exit status 2, without a traceback."""

    def invoke(self, ctx):
        from archsweep.errors import ArchsweepError

        try:
            return super().invoke(ctx)
        except ArchsweepError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archsweep")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="ARCHSWEEP_DATA_DIR",
              help="Benchmark data directory [env: ARCHSWEEP_DATA_DIR; default: the per-user data dir].")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="ARCHSWEEP_CACHE_DIR",
              help="Cache for enumerations and parsed tables [env: ARCHSWEEP_CACHE_DIR].")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(data_dir, cache_dir, verbose):
    """archsweep: sweeps for discrete-latent neural-architecture generation on Ray."""
    # Exported so that everything this process starts (worker processes, later Ray workers) sees the same dirs.
    if data_dir:
        os.environ["ARCHSWEEP_DATA_DIR"] = str(data_dir)
    if cache_dir:
        os.environ["ARCHSWEEP_CACHE_DIR"] = str(cache_dir)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_console(stderr=True))])


# --- data ------------------------------------------------------------------------------------------------------


@cli.group()
def data():
    """Fetch and verify the benchmark tables."""


@data.command("fetch")
@click.option("--from", "mirror", type=click.Path(exists=True, file_okay=False),
              help="Copy from this local directory (same layout) instead of downloading.")
@click.option("--full-nb101", is_flag=True, help="Also fetch NAS-Bench-101's full table (about 499 MB).")
@click.option("--timeout", default=30.0, show_default=True, help="Network timeout per file, in seconds.")
def data_fetch(mirror, full_nb101, timeout):
    """Put every benchmark file into the data directory and check its sha256; intact files are left alone."""
    from archsweep.benchmarks import files
    from archsweep.settings import data_dir

    console = _console()
    console.print(f"data directory: {data_dir()}")
    files.fetch(mirror=mirror, include_optional=full_nb101, timeout=timeout,
                on_file=lambda f, action: console.print(f"  {'ok' if action == 'ok' else action:<12} {f.path}"))


@data.command("verify")
def data_verify():
    """Check every data file's sha256 (and the full NAS-Bench-101 table's record CRCs, if present)."""
    from rich.table import Table

    from archsweep.benchmarks import files
    from archsweep.settings import data_dir

    report = files.verify()
    table = Table(title=f"benchmark data in {data_dir()}")
    table.add_column("file")
    table.add_column("status")
    for path, problem in report.items():
        table.add_row(path, "[green]ok[/]" if problem is None else f"[red]{problem}[/]")
    _console().print(table)
    if any(problem is not None for problem in report.values()):
        raise click.exceptions.Exit(1)


# --- spaces and benchmarks -------------------------------------------------------------------------------------


def _space_names(names):
    from archsweep.spaces import SPACES

    return names or tuple(SPACES)


def space_stats_table(name: str):
    """Enumerate a space (cached) and summarise it as a rich table."""
    import numpy as np
    from rich.table import Table

    from archsweep.spaces import get_space

    space = get_space(name)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"enumerating {name}", total=None)
        enum = space.enumerate(progress=lambda done, total: bar.update(task, completed=done, total=total))
    seconds = time.perf_counter() - start
    table = Table(title=f"search space {name}", show_header=False)
    table.add_row("cells", f"{len(enum):,}")
    table.add_row("canonical classes", f"{len(enum.index):,}")
    vertices = np.bincount(enum.num_vertices)
    table.add_row("cells by vertex count", ", ".join(f"{v}: {c:,}" for v, c in enumerate(vertices) if c))
    edges = np.bincount(np.bitwise_count(enum.edge_bits))
    table.add_row("cells by edge count", ", ".join(f"{e}: {c:,}" for e, c in enumerate(edges) if c))
    table.add_row("enumerate (build or cache load)", f"{seconds:.2f} s")
    return table


@cli.group()
def space():
    """Search spaces."""


@space.command("stats")
@click.argument("names", nargs=-1)
def space_stats(names):
    """Enumerate each space (built once, then cached) and print its counts."""
    console = _console()
    for name in _space_names(names):
        console.print(space_stats_table(name))


def benchmark_stats_table(name: str):
    from rich.table import Table

    from archsweep.benchmarks import load_benchmark

    bench = load_benchmark(name)
    table = Table(title=bench.label)
    for column in ("dataset", "entries", "best val (index)", "its test", "best test (index)"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    for dataset in bench.datasets:
        i, val = bench.best(dataset, "val")
        test_of_best = f"{bench.lookup(i, dataset, 'test'):.2f}" if "test" in bench.splits else "n/a"
        best_test = "n/a"
        if "test" in bench.splits:
            j, acc = bench.best(dataset, "test")
            best_test = f"{acc:.2f} ({j})"
        table.add_row(dataset, f"{len(bench):,}", f"{val:.2f} ({i})", test_of_best, best_test)
    return table


@cli.group()
def benchmark():
    """Benchmark tables."""


@benchmark.command("stats")
@click.argument("names", nargs=-1)
def benchmark_stats(names):
    """Load each benchmark table (checksums verified) and print its optima."""
    console = _console()
    for name in _space_names(names):
        console.print(benchmark_stats_table(name))


def _start_local_ray(num_cpus: int | None) -> str:
    """Start the embedded local Ray; returns the Ray Train log level that matches the CLI's verbosity."""
    from archsweep.runtime import init_local_ray

    verbose = click.get_current_context().find_root().params["verbose"]
    init_local_ray(num_cpus=num_cpus, verbose=verbose > 0)
    return "INFO" if verbose else "WARNING"


# --- training stages -----------------------------------------------------------------------------------------


@cli.group()
def train():
    """Run one pipeline stage on its own."""


@train.command("vqvae", context_settings={"ignore_unknown_options": False})
@click.argument("overrides", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory; rerunning with the same one resumes from its last checkpoint.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def train_vqvae(overrides, config_path, out_dir, num_cpus):
    """Train the VQ-VAE (or `vqvae.model=vae`) and write model.pt, codes.npz and metrics.json.

    OVERRIDES are config keys, e.g. `space=nasbench201 vqvae.codebook_size=64 vqvae.seq_len=8`.
    """
    from archsweep.config import load_config

    cfg = load_config(config_path, overrides)
    from archsweep.runtime import worker_env
    from archsweep.stages import vqvae

    log_level = _start_local_ray(num_cpus)
    _console(stderr=True).print(f"training {cfg.vqvae.model} on {cfg.space} with {cfg.train.num_workers} Ray Train "
                                f"worker(s) for {cfg.train.epochs} epochs; rerun the same command to resume")
    results = vqvae.run(cfg, out_dir, env=worker_env(), log_level=log_level)
    _console().print(_results_table(results, f"VQ-VAE stage: {out_dir}"))


@train.command("lm")
@click.argument("overrides", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--vqvae", "vqvae_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="A finished VQ-VAE stage's directory (its model.pt and codes.npz).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory; rerunning with the same one resumes from its last checkpoint.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def train_lm(overrides, config_path, vqvae_dir, out_dir, num_cpus):
    """Train the LM prior on a VQ-VAE's codes (DeepSpeed on Ray Train), sample it and score the samples.

    OVERRIDES are config keys, e.g. `lm.name=llama-small lm.zero_stage=3 sample.temperature=0.8`; the space and
    vqvae.* keys must match the VQ-VAE stage's.
    """
    from archsweep.config import load_config

    cfg = load_config(config_path, overrides)
    from archsweep.runtime import worker_env
    from archsweep.stages import lm

    results = lm.run(cfg, vqvae_dir, out_dir, env=worker_env(), log_level=_start_local_ray(num_cpus))
    _console().print(_results_table(results, f"LM stage: {out_dir}"))


@cli.command("run")
@click.argument("overrides", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory; rerunning with the same one continues an interrupted run.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def run_pipeline(overrides, config_path, out_dir, num_cpus):
    """One configuration end to end: VQ-VAE, codes, LM, samples, metrics."""
    from archsweep.config import load_config

    cfg = load_config(config_path, overrides)
    from archsweep.runtime import worker_env
    from archsweep.stages import pipeline

    results = pipeline.run(cfg, out_dir, env=worker_env(), log_level=_start_local_ray(num_cpus))
    console = _console()
    console.print(_results_table(results["vqvae"], f"VQ-VAE stage: {out_dir}/vqvae"))
    if "lm" in results:
        console.print(_results_table(results["lm"], f"LM stage: {out_dir}/lm"))


def _results_table(results: dict, title: str):
    from rich.table import Table

    table = Table(title=title, show_header=False)
    rows = {k: v for k, v in results.items() if k not in ("config", "training")}
    for key, value in rows.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, str(value))
    return table


@cli.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Where the demo's stage outputs go; rerunning reuses finished work.")
def demo(out_dir):
    """The main job on this machine: verify the data, enumerate the spaces, summarise the benchmarks, then
    train the default VQ-VAE on NAS-Bench-201 with 2 Ray Train workers on a local Ray and report it."""
    from archsweep.benchmarks import files

    console = _console()
    problems = {p: e for p, e in files.verify().items() if e is not None}
    if problems:
        from archsweep.errors import DataError

        raise DataError("; ".join(problems.values()) + ". Run `archsweep data fetch` first.")
    for name in _space_names(()):
        console.print(space_stats_table(name))
        console.print(benchmark_stats_table(name))

    from archsweep.config import load_config
    from archsweep.runtime import init_local_ray, worker_env
    from archsweep.stages import vqvae

    cfg = load_config(overrides=["space=nasbench201", "train.epochs=10", "train.num_workers=2"])
    stage_dir = Path(out_dir) / "vqvae-nasbench201"
    console.print(f"training the default VQ-VAE on nasbench201 (2 Ray Train workers, 10 epochs) into {stage_dir}")
    init_local_ray(num_cpus=max(2, os.cpu_count() or 1))
    console.print(_results_table(vqvae.run(cfg, stage_dir, env=worker_env()), f"VQ-VAE stage: {stage_dir}"))


def main() -> None:
    cli(prog_name="archsweep")


if __name__ == "__main__":
    main()
