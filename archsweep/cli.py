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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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


# --- sweeps ---------------------------------------------------------------------------------------------------


class _SweepProgress:
    """A progress bar over a sweep's trials, fed by polling its result store from a thread (Tune callbacks are
    pickled with the experiment state, so they cannot hold a live terminal)."""

    def __init__(self, sweep_dir: Path, total: int | None):
        import threading

        self.sweep_dir, self.total = sweep_dir, total
        self.progress = _progress()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        from archsweep.tracking.store import ResultStore

        task = self.progress.add_task("trials", total=self.total)
        while not self.stop.wait(1.0):
            try:
                rows = ResultStore(self.sweep_dir).rows()
            except Exception:  # the store is being created; try again
                continue
            done = sum(r.status in ("TERMINATED", "ERROR") for r in rows)
            running = sum(r.status == "RUNNING" for r in rows)
            self.progress.update(task, completed=done, description=f"trials ({running} running)")

    def __enter__(self):
        self.progress.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.progress.__exit__(*exc)


def _start_sweep_ray(sweep, address: str | None, num_cpus: int | None) -> str:
    from archsweep.runtime import connect_ray, init_local_ray
    from archsweep.tracking.wandb import check_login, wandb_env

    check_login(sweep.tracking)
    verbose = click.get_current_context().find_root().params["verbose"] > 0
    env = wandb_env(sweep.tracking)
    if address:
        connect_ray(address, env, verbose)
    else:
        init_local_ray(num_cpus=num_cpus, verbose=verbose, env=env)
    return "INFO" if verbose else "WARNING"


def _report_table(table: list[dict], title: str, swept: list[str]):
    from rich.table import Table

    t = Table(title=title)
    metrics = ("validity", "uniqueness", "novelty", "valid_unique")
    for column in ("trial", "status", *swept, *metrics, "VQ-VAE"):
        t.add_column(column, justify="left" if column in ("trial", "status", *swept) else "right")
    for row in table:
        cells = [row["trial"].rsplit("_", 1)[-1], row["status"].lower()]
        cells += [str(row.get(key, "")) for key in swept]
        cells += [f"{row[m]:.3f}" if isinstance(row.get(m), float) else "" for m in metrics]
        cells.append({True: "reused", False: "trained"}.get(row.get("vqvae/reused"), ""))
        t.add_row(*cells)
    return t


def _print_report(sweep_dir, sort_by: str, ascending: bool):
    from archsweep.tracking.report import report, swept_keys

    table, files = report(sweep_dir, sort_by=sort_by, descending=not ascending)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(_report_table(table, f"sweep {sweep_dir} (sorted by {sort_by})", swept_keys(Path(sweep_dir))))
    failed = [r for r in table if r["status"] == "ERROR"]
    for row in failed:
        console.print(f"[red]{row['trial']} failed:[/] {row.get('error', '')}")
    console.print("written: " + ", ".join(str(f) for f in files))


def _run_sweep(sweep_file, overrides=(), address=None, num_cpus=None):
    from archsweep.sweep.run import run_sweep, sweep_dir_of
    from archsweep.sweep.spec import load_sweep, trial_configs

    sweep = load_sweep(sweep_file, overrides)
    total = len(trial_configs(sweep)) * sweep.tune.num_samples
    log_level = _start_sweep_ray(sweep, address, num_cpus)
    sweep_dir = sweep_dir_of(sweep)
    _console().print(f"sweep {sweep.name!r}: {total} trial(s) into {sweep_dir}; `archsweep resume {sweep_dir}` "
                     "continues it if interrupted")
    with _SweepProgress(sweep_dir, total):
        run_sweep(sweep, log_level=log_level)
    _print_report(sweep_dir, sweep.tune.metric, sweep.tune.mode == "min")


@cli.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the sweep file (base config, tune.*, tracking.*, name, storage); repeatable.")
@click.option("--address", default=None, help="Run on this Ray cluster (e.g. `auto` inside a Ray Job) instead "
              "of a local Ray started here.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--check", is_flag=True, help="Check the sweep file and count its trials; run nothing.")
def sweep_command(sweep_file, overrides, address, num_cpus, check):
    """Run a sweep (see sweeps/*.yaml): Ray Tune trials of the pipeline, logged to the result store and W&B,
    then print the report."""
    if check:
        from archsweep.sweep.spec import load_sweep, trial_configs

        sweep = load_sweep(sweep_file, overrides)
        total = len(trial_configs(sweep)) * sweep.tune.num_samples
        _console().print(f"sweep {sweep.name!r}: {total} trial(s); axes: {', '.join(sweep.axes) or 'none'}")
        return
    _run_sweep(sweep_file, overrides, address, num_cpus)


@cli.command("resume")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--address", default=None, help="Ray cluster address (default: a local Ray started here).")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def resume_command(sweep_dir, address, num_cpus):
    """Continue an interrupted sweep; finished trials are not run again."""
    from archsweep.sweep.run import resume_sweep
    from archsweep.sweep.spec import load_sweep

    sweep = load_sweep(Path(sweep_dir) / "sweep.yaml")
    log_level = _start_sweep_ray(sweep, address, num_cpus)
    with _SweepProgress(Path(sweep_dir), None):
        resume_sweep(sweep_dir, log_level=log_level)
    _print_report(sweep_dir, sweep.tune.metric, sweep.tune.mode == "min")


@cli.command("report")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--sort", "sort_by", default="valid_unique", show_default=True, help="Metric to sort the trials by.")
@click.option("--ascending", is_flag=True, help="Smallest first.")
def report_command(sweep_dir, sort_by, ascending):
    """Table of a sweep's trials (or a search directory's summary over seeds), plus CSV, JSON and PNG plots in
    <dir>/report/."""
    if (Path(sweep_dir) / "search.yaml").is_file():
        from archsweep.search.spec import load_search_file

        _print_search_report(sweep_dir, load_search_file(Path(sweep_dir) / "search.yaml").searches.report_budgets)
        return
    _print_report(sweep_dir, sort_by, ascending)


# --- NAS search ------------------------------------------------------------------------------------------------


def _print_search_report(search_dir, budgets):
    from rich.table import Table

    from archsweep.search.report import display_rows, split_of, write_report
    from archsweep.tracking.store import ResultStore

    table, files = write_report(search_dir, budgets)
    t = Table(title=f"search {search_dir}: {split_of(table, budgets)} accuracy of the best-by-validation cell, "
                    "mean ± std over seeds")
    for column in ("dataset", "strategy", "seeds", *(f"@{b}" for b in budgets), "to optimum", "to top 0.1 %"):
        t.add_column(column, justify="left" if column in ("dataset", "strategy") else "right")
    for cells in display_rows(table, budgets):
        t.add_row(*cells)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(t)
    for row in ResultStore(search_dir).rows():
        if row.status == "ERROR":
            console.print(f"[red]{row.trial_id} failed:[/] {row.error}")
    console.print("queries to optimum: median over seeds (seeds that got there); written: "
                  + ", ".join(str(f) for f in files))


@cli.command("search")
@click.argument("search_file", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the search file (base config incl. search.*, searches.*, tracking.*, name, "
                   "storage); repeatable.")
@click.option("--address", default=None, help="Run on this Ray cluster (e.g. `auto` inside a Ray Job) instead "
              "of a local Ray started here.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--check", is_flag=True, help="Check the search file and count its searches; run nothing.")
def search_command(search_file, overrides, address, num_cpus, check):
    """NAS on a benchmark (see sweeps/search-*.yaml): strategies x datasets x seeds as Ray actors, every query
    recorded; then the summary over seeds. Running the file again continues an interrupted search."""
    from archsweep.search.spec import load_search_file

    spec = load_search_file(search_file, overrides)
    runs = spec.runs()
    if check:
        _console().print(f"search {spec.name!r}: {len(runs)} search(es), "
                         f"{sum(c.search.budget for _, c in runs)} queries in all; strategies: "
                         f"{', '.join(spec.searches.strategies)}")
        return
    from archsweep.search.run import run_searches, search_dir_of

    _start_sweep_ray(spec, address, num_cpus)
    search_dir = search_dir_of(spec)
    _console().print(f"search {spec.name!r}: {len(runs)} search(es) into {search_dir}; running the same command "
                     "again continues it if interrupted")
    with _progress() as progress:
        task = progress.add_task("queries", total=None)

        def update(done, total, finished):
            progress.update(task, completed=done, total=total, description=f"queries ({finished}/{len(runs)} "
                            "searches done)")

        run_searches(spec, search_dir=search_dir, progress=update)
    _print_search_report(search_dir, spec.searches.report_budgets)


@cli.command("sync")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--list", "list_only", is_flag=True, help="List the offline W&B runs and what they hold; upload "
              "nothing.")
def sync_command(sweep_dir, list_only):
    """Upload a sweep's offline W&B runs (needs WANDB_API_KEY or `wandb login`)."""
    import subprocess

    from archsweep.tracking.wandb import offline_runs, read_offline_run, run_id_of

    runs = offline_runs(sweep_dir)
    console = _console()
    if list_only or not runs:
        for run in runs:
            data = read_offline_run(run)
            console.print(f"{run}: id {data['id']}, {len(data['history'])} logged steps, "
                          f"{len(data['summary'])} summary keys")
        if not runs:
            console.print(f"no offline W&B runs under {sweep_dir}")
        return
    wandb = Path(sys.executable).with_name("wandb")
    by_id: dict[str, list[Path]] = {}
    for run in runs:  # a resumed trial has several offline runs under one id: uploaded in order into that run
        by_id.setdefault(run_id_of(run), []).append(run)
    for run_id, parts in by_id.items():
        subprocess.run([str(wandb) if wandb.exists() else "wandb", "sync", "--id", run_id, *map(str, parts)],
                       check=True)


# --- clusters and jobs -----------------------------------------------------------------------------------------


@cli.group()
def cluster():
    """Ray cluster-launcher YAMLs (see cluster/)."""


@cluster.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def cluster_validate(files):
    """Check cluster YAMLs offline with Ray's own schema (what `ray up` would reject)."""
    from archsweep.sweep.cluster import validate_cluster_yaml

    for path in files:
        prepared = validate_cluster_yaml(path)
        types = prepared.get("available_node_types", {})
        _console().print(f"{path}: valid ({len(types)} node type(s): {', '.join(types)}; "
                         f"max_workers {prepared.get('max_workers')})")


_ADDRESS = click.option("--address", envvar="RAY_ADDRESS", required=True,
                        help="The cluster's job server, e.g. http://127.0.0.1:8265 [env: RAY_ADDRESS].")


@cli.command("submit")
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@_ADDRESS
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE", help="As for `archsweep sweep`.")
@click.option("--cluster-data-dir", default=None, help="The benchmark data directory on the cluster's nodes "
              "(default: theirs, as set up by the cluster YAMLs).")
@click.option("--follow", is_flag=True, help="Stream the job's log until it ends.")
def submit_command(sweep_file, address, overrides, cluster_data_dir, follow):
    """Submit a sweep to a Ray cluster as a Ray Job; prints the job id."""
    from archsweep.sweep.cluster import follow_job_logs, submit_sweep

    job_id = submit_sweep(sweep_file, address, overrides, cluster_data_dir)
    click.echo(job_id)
    _console(stderr=True).print(f"follow it: archsweep logs {job_id} --address {address} --follow")
    if follow:
        follow_job_logs(address, job_id, lambda chunk: click.echo(chunk, nl=False))


@cli.command("logs")
@click.argument("job_id")
@_ADDRESS
@click.option("--follow", is_flag=True, help="Keep streaming until the job ends.")
def logs_command(job_id, address, follow):
    """A submitted sweep's log."""
    from archsweep.sweep.cluster import follow_job_logs, job_logs

    if follow:
        follow_job_logs(address, job_id, lambda chunk: click.echo(chunk, nl=False))
    else:
        click.echo(job_logs(address, job_id), nl=False)


@cli.command("status")
@click.argument("job_id")
@_ADDRESS
def status_command(job_id, address):
    """A submitted sweep's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from archsweep.sweep.cluster import job_status

    click.echo(job_status(address, job_id))


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
@click.option("--sweep", "sweep_file", default="sweeps/quick.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="The sweep to run.")
def demo(sweep_file):
    """The main job on this machine: verify the data, summarise the spaces and benchmarks, then run the quick
    sweep (NAS-Bench-201; codebook size x sequence length x two LMs) on a local Ray and print its report."""
    from archsweep.benchmarks import files

    console = _console()
    problems = {p: e for p, e in files.verify().items() if e is not None}
    if problems:
        from archsweep.errors import DataError

        raise DataError("; ".join(problems.values()) + ". Run `archsweep data fetch` first.")
    for name in _space_names(()):
        console.print(space_stats_table(name))
        console.print(benchmark_stats_table(name))
    _run_sweep(sweep_file)


def main() -> None:
    cli(prog_name="archsweep")


if __name__ == "__main__":
    main()
