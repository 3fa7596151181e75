"""The `archsweep` command. Only click is imported up front, so `--help` stays fast; each command imports
what it needs. Library code never prints: rendering (tables, progress bars) happens here."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from archsweep import version


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


def _absolute(ctx, param, value):
    """A path the user typed, made absolute against the directory the command was started in, once, before any
    Ray process starts (trials, Ray Train workers and actors run elsewhere and see only this absolute path)."""
    if value is None:
        return value
    from archsweep.settings import absolute

    return str(absolute(value))


def _print_version(ctx, param, value):
    if value and not ctx.resilient_parsing:  # the commit is looked up only when asked for
        click.echo(f"archsweep, version {version()}")
        ctx.exit()


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
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version (and the git commit of a checkout) and exit.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="ARCHSWEEP_DATA_DIR", callback=_absolute,
              help="Benchmark data directory [env: ARCHSWEEP_DATA_DIR; default: the per-user data dir].")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="ARCHSWEEP_CACHE_DIR", callback=_absolute,
              help="Cache for enumerations and parsed tables [env: ARCHSWEEP_CACHE_DIR].")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(data_dir, cache_dir, verbose):
    """archsweep: sweeps for discrete-latent neural-architecture generation on Ray."""
    # Exported so that everything this process starts (worker processes, later Ray workers) sees the same dirs;
    # `_absolute` has already resolved them against the directory the command was started in.
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
@click.option("--from", "mirror", type=click.Path(exists=True, file_okay=False), callback=_absolute,
              help="Copy from this local directory (same layout) instead of downloading.")
@click.option("--full-nb101", is_flag=True, help="Also fetch NAS-Bench-101's full table (about 499 MB).")
@click.option("--timeout", default=30.0, show_default=True, help="Network timeout per file, in seconds.")
@click.option("--retries", default=2, show_default=True, help="Tries again after a network failure or a "
              "server error (5xx), 2, 4, 8 ... s apart; a missing file (404) is not retried.")
def data_fetch(mirror, full_nb101, timeout, retries):
    """Put every benchmark file into the data directory and check its sha256; intact files are left alone."""
    from archsweep.benchmarks import files
    from archsweep.settings import data_dir

    console = _console()
    console.print(f"data directory: {data_dir()}")
    files.fetch(mirror=mirror, include_optional=full_nb101, timeout=timeout, retries=retries,
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
    """Enumerate a space (cached) and summarise it as a rich table; a space too large to enumerate gets its size
    and what its models train on instead."""
    import numpy as np
    from rich.table import Table

    from archsweep.benchmarks import has_table
    from archsweep.config import TrainConfig
    from archsweep.spaces import get_space

    space = get_space(name)
    if not space.enumerable:
        table = Table(title=f"search space {name}", show_header=False)
        table.add_row("cells", f"{space.num_cells:,} (about {space.num_cells:.3g}; too many to enumerate)")
        table.add_row("training cells", f"sampled uniformly: train.dataset_size (default {TrainConfig.dataset_size:,})"
                      ", distinct up to isomorphism, built once and cached")
        table.add_row("vertices per cell (graph form)", str(space.max_vertices))
        if not has_table(name):
            table.add_row("accuracy table", "none: generation is scored (validity, uniqueness, novelty), accuracies "
                          "read n/a, searches are refused")
        return table
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
    edges = np.bincount(enum.num_edges)
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
    """Load each benchmark table (checksums verified) and print its optima; no NAMES: every space's that has one."""
    from archsweep.benchmarks import BENCHMARKS

    console = _console()
    for name in names or tuple(BENCHMARKS):
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
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), callback=_absolute,
              help="YAML config file.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True, callback=_absolute,
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
    _console().print(results_table(results, f"VQ-VAE stage: {out_dir}"))


@train.command("lm")
@click.argument("overrides", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), callback=_absolute,
              help="YAML config file.")
@click.option("--vqvae", "vqvae_dir", type=click.Path(exists=True, file_okay=False), required=True,
              callback=_absolute,
              help="A finished VQ-VAE stage's directory (its model.pt and codes.npz).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True, callback=_absolute,
              help="Output directory; rerunning with the same one resumes from its last checkpoint.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def train_lm(overrides, config_path, vqvae_dir, out_dir, num_cpus):
    """Train the LM prior on a VQ-VAE's codes (DeepSpeed on Ray Train), sample it and score the samples.

    OVERRIDES are config keys, e.g. `lm.name=llama-1m lm.zero_stage=3 sample.temperature=0.8`; the space and
    vqvae.* keys must match the VQ-VAE stage's.
    """
    from archsweep.config import load_config

    cfg = load_config(config_path, overrides)
    from archsweep.benchmarks import check_data
    from archsweep.runtime import worker_env
    from archsweep.stages import lm

    check_data([cfg.space])  # the samples are scored against the table: checked before the LM trains
    results = lm.run(cfg, vqvae_dir, out_dir, env=worker_env(), log_level=_start_local_ray(num_cpus))
    _console().print(results_table(results, f"LM stage: {out_dir}"))


@cli.command("run")
@click.argument("overrides", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), callback=_absolute,
              help="YAML config file.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True, callback=_absolute,
              help="Output directory; rerunning with the same one continues an interrupted run.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
def run_pipeline(overrides, config_path, out_dir, num_cpus):
    """One configuration end to end: VQ-VAE, codes, LM, samples, metrics."""
    from archsweep.config import load_config

    cfg = load_config(config_path, overrides)
    from archsweep.benchmarks import check_data
    from archsweep.runtime import worker_env
    from archsweep.stages import pipeline

    check_data([cfg.space])  # the samples are scored against the table: checked before anything trains
    results = pipeline.run(cfg, out_dir, env=worker_env(), log_level=_start_local_ray(num_cpus))
    console = _console()
    console.print(results_table(results["vqvae"], f"VQ-VAE stage: {out_dir}/vqvae"))
    if "lm" in results:
        console.print(results_table(results["lm"], f"LM stage: {out_dir}/lm"))
    if "search" in results:
        console.print(results_table(results["search"], f"search: {out_dir}/search"))


# --- sweeps ---------------------------------------------------------------------------------------------------

_OVERRIDES = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


class SweepMonitor:
    """What a running sweep is doing, from its result store, polled by a thread (Tune callbacks are pickled with
    the experiment state, so they cannot hold a terminal): on a terminal a live panel with the trials pending,
    running, finished and failed, the best metric so far and the elapsed time; elsewhere (CI, `tee`) one plain
    line per event."""

    def __init__(self, sweep_dir: Path, total: int, metric: str, mode: str, waiting=None):
        import threading

        self.sweep_dir, self.total, self.metric, self.mode = Path(sweep_dir), total, metric, mode
        self.waiting, self.waited = waiting, {}  # waiting(): node type -> nodes the autoscaler is bringing up
        self.console = _console(stderr=True)
        self.live = None
        self.start = time.monotonic()
        self.seen: dict[str, str] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _rows(self):
        from archsweep.tracking.store import FILE, ResultStore

        if not (self.sweep_dir / FILE).is_file():
            return []
        try:
            return ResultStore(self.sweep_dir).rows()
        except Exception:  # the store is being created; read it again next time
            return None

    def _best(self, rows) -> tuple[float, str] | None:
        scored = [(r.metrics[self.metric], r.trial_id) for r in rows
                  if r.status == "TERMINATED" and isinstance(r.metrics.get(self.metric), (int, float))]
        if not scored:
            return None
        return max(scored) if self.mode == "max" else min(scored)

    def _counts(self, rows) -> dict[str, int]:
        counts = {s: sum(r.status == s for r in rows) for s in ("RUNNING", "TERMINATED", "STOPPED", "ERROR")}
        return {"pending": max(0, self.total - sum(counts.values())), "running": counts["RUNNING"],
                "finished": counts["TERMINATED"] + counts["STOPPED"], "failed": counts["ERROR"]}

    def _panel(self, rows):
        from rich.table import Table

        counts, best = self._counts(rows), self._best(rows)
        grid = Table.grid(padding=(0, 2))
        grid.add_row(f"[bold]trials[/] {counts['pending']} pending", f"[cyan]{counts['running']} running",
                     f"[green]{counts['finished']} finished", f"[red]{counts['failed']} failed",
                     f"of {self.total}", f"elapsed {_clock(time.monotonic() - self.start)}")
        grid.add_row(f"best {self.metric}", f"{best[0]:.4f}" if best else "-",
                     f"(trial {best[1]})" if best else "", "", "", "")
        if self.waited:
            grid.add_row(f"[yellow]{self._waiting_line(counts)}", "", "", "", "", "")
        return grid

    def _waiting_line(self, counts: dict[str, int]) -> str:
        nodes = ", ".join(f"{n} x {name}" for name, n in sorted(self.waited.items()))
        return f"{counts['pending']} pending, {counts['running']} running: waiting for nodes ({nodes})"

    def _poll_waiting(self, rows) -> None:
        """What the autoscaler is bringing up; a line when that changes (plain output)."""
        try:
            now = self.waiting() if self.waiting else {}
        except Exception:  # the status is only informative; the next poll tries again
            return
        changed, self.waited = now != self.waited, now
        if changed and self.live is None:
            stamp = _clock(time.monotonic() - self.start)
            self.console.print(f"[{stamp}] {self._waiting_line(self._counts(rows))}" if now else
                               f"[{stamp}] the nodes asked for are up", highlight=False, soft_wrap=True)

    def _events(self, rows) -> None:
        """Plain lines for what changed since the last poll."""
        now = {r.trial_id: r.status for r in rows}
        if self.seen is None:  # a resumed sweep: say once what had ended already; what runs gets its own line
            counts = self._counts(rows)
            if rows:
                self.console.print(f"[{_clock(0)}] {counts['finished']} finished, {counts['failed']} failed of "
                                   f"{self.total} trials already", highlight=False, soft_wrap=True)
            self.seen = {r.trial_id: r.status for r in rows if r.status != "RUNNING"}
        for row in rows:
            if self.seen.get(row.trial_id) == row.status:
                continue
            stamp, counts = _clock(time.monotonic() - self.start), self._counts(rows)
            if row.status == "RUNNING":
                self.console.print(f"[{stamp}] trial {row.trial_id} started ({counts['running']} running, "
                                   f"{counts['pending']} pending)", highlight=False, soft_wrap=True)
            elif row.status == "TERMINATED":
                value, best = row.metrics.get(self.metric), self._best(rows)
                shown = f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"
                self.console.print(f"[{stamp}] trial {row.trial_id} finished: {self.metric} {shown} (best "
                                   f"{best[0]:.4f}; {counts['finished']} finished, {counts['failed']} failed of "
                                   f"{self.total})" if best else f"[{stamp}] trial {row.trial_id} finished",
                                   highlight=False, soft_wrap=True)
            elif row.status == "STOPPED":
                self.console.print(f"[{stamp}] trial {row.trial_id} stopped early", highlight=False, soft_wrap=True)
            elif row.status == "ERROR":
                self.console.print(f"[{stamp}] trial {row.trial_id} failed: {row.error}", highlight=False, soft_wrap=True)
        self.seen = now

    def _poll(self):
        while True:
            rows = self._rows()
            if rows is not None:
                self._poll_waiting(rows)
                if self.live is not None:
                    self.live.update(self._panel(rows))
                else:
                    self._events(rows)
            if self.stop.wait(1.0):
                return

    def __enter__(self):
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._panel([]), console=self.console, transient=True, refresh_per_second=4)
            self.live.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.live is not None:
            self.live.__exit__(*exc)
        else:  # the last events (the poller may have stopped between two polls)
            rows = self._rows()
            if rows:
                self._events(rows)


def _capacity(address: str | None, cluster_file: str | None):
    """What the joined cluster can become (its autoscaler's node types, or `cluster_file`'s), said on the console;
    None for the embedded local Ray, which is planned from its nodes."""
    if not address:
        return None
    from archsweep.capacity import running_capacity

    capacity = running_capacity(cluster_file)
    _console().print(capacity.describe(), highlight=False, soft_wrap=True)
    return capacity


def _waiting(address: str | None):
    """For the progress display: what the autoscaler is bringing up (None on the embedded local Ray)."""
    if not address:
        return None
    from archsweep.capacity import waiting_for

    return waiting_for


def _start_sweep_ray(sweep, address: str | None, num_cpus: int | None, cluster_file: str | None = None) -> str:
    """Join the cluster or start the local Ray, after every check that can fail without it: the W&B login and
    the benchmark tables the trials read (a missing table fails here in seconds, and no Ray process starts)."""
    from archsweep.runtime import connect_ray, init_local_ray
    from archsweep.specfile import preflight
    from archsweep.tracking.wandb import wandb_env

    if cluster_file and not address:
        raise click.UsageError("--cluster goes with --check, or with --address (the cluster it describes)")
    preflight(sweep)
    verbose = click.get_current_context().find_root().params["verbose"] > 0
    env = wandb_env(sweep.tracking)
    if address:
        connect_ray(address, env, verbose)
    else:
        init_local_ray(num_cpus=num_cpus, verbose=verbose, env=env)
    if not verbose:  # a failed trial is one line in the summary, its traceback in its error.log: not on the console
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return "INFO" if verbose else "WARNING"


def _report_table(table: list[dict], title: str, swept: list[str]):
    from rich.table import Table

    t = Table(title=title)
    metrics = ("validity", "uniqueness", "novelty", "valid_unique")
    for column in ("trial", "status", *swept, *metrics, "mean val. accuracy", "VQ-VAE"):
        t.add_column(column, justify="left" if column in ("trial", "status", *swept) else "right")
    for row in table:
        cells = [row["trial"].rsplit("_", 1)[-1], row["status"].lower()]
        cells += [str(row.get(key, "")) for key in swept]
        cells += [f"{row[m]:.3f}" if isinstance(row.get(m), float) else "" for m in metrics]
        cells.append(row.get("accuracy", ""))
        cells.append({True: "reused", False: "trained"}.get(row.get("vqvae/reused"), ""))
        t.add_row(*cells)
    # the ceiling, a perfect model of the training cells sampled as often: one row per distinct one (trials of
    # one space, split and sample count share it)
    ceilings = dict.fromkeys(tuple(row[f"ceiling/{m}"] for m in metrics) for row in table
                             if all(isinstance(row.get(f"ceiling/{m}"), float) for m in metrics))
    for values in ceilings:
        t.add_row("ceiling", "", *([""] * len(swept)), *(f"{v:.3f}" for v in values), "", "", style="dim")
    return t


def _report_console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _print_failures(console, rows, noun: str) -> int:
    """`N of M <noun>s failed`, then each failed one's one-line error and the path of its full log; the count."""
    failed = [r for r in rows if r.status == "ERROR"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} {noun}s failed[/]")
        for row in failed:
            console.print(f"  {row.trial_id}: {row.error or 'unknown error'}", highlight=False, soft_wrap=True)
            if row.paths.get("log"):
                console.print(f"    full log: {row.paths['log']}", highlight=False, soft_wrap=True)
    return len(failed)


def _print_report(sweep_dir, sort_by: str, ascending: bool) -> int:
    """The report table, then the failed trials; returns how many failed."""
    from archsweep.tracking.report import report, swept_keys
    from archsweep.tracking.store import ResultStore

    table, files = report(sweep_dir, sort_by=sort_by, descending=not ascending)
    console = _report_console()
    console.print(_report_table(table, f"sweep {sweep_dir} (sorted by {sort_by})", swept_keys(Path(sweep_dir))))
    console.print("written: " + ", ".join(str(f) for f in files))
    rows = ResultStore(sweep_dir).rows()
    failed = _print_failures(console, rows, "trial")
    stopped = sum(r.status == "STOPPED" for r in rows)
    if not failed:
        console.print(f"[green]all {len(rows)} trials finished[/]" + (
            f" ({stopped} stopped early by the scheduler or the time budget)" if stopped else ""))
    return failed


def _exit_on_failures(failed: int) -> None:
    if failed:
        raise click.exceptions.Exit(1)


def _run_sweep(sweep_file, overrides=(), address=None, num_cpus=None, cluster_file=None) -> int:
    """Run a sweep and print its report; returns how many of its trials failed."""
    from archsweep.sweep.run import cluster_concurrency, run_sweep, sweep_dir_of
    from archsweep.sweep.spec import load_sweep

    sweep = load_sweep(sweep_file, overrides)
    total = sweep.trial_count()
    log_level = _start_sweep_ray(sweep, address, num_cpus, cluster_file)
    capacity = _capacity(address, cluster_file)
    at_once = cluster_concurrency(sweep, capacity)  # a trial that can never run is refused here
    sweep_dir = sweep_dir_of(sweep)
    _console().print(f"sweep {sweep.name!r}: {total} trial(s), up to {at_once} at once, into {sweep_dir}; "
                     f"`archsweep resume {sweep_dir}` continues it if interrupted")
    with SweepMonitor(sweep_dir, total, sweep.tune.metric, sweep.tune.mode, _waiting(address)):
        run_sweep(sweep, log_level=log_level, capacity=capacity)
    return _print_report(sweep_dir, sweep.tune.metric, sweep.tune.mode == "min")


_JOIN = click.option("--address", envvar="RAY_ADDRESS", default=None, show_envvar=True,
                     help="Run on this Ray cluster, its head's host:port (`auto` inside a Ray Job), instead of a "
                          "local Ray started here.")
_CLUSTER_FILE = click.option("--cluster", "clusters", multiple=True, type=click.Path(dir_okay=False),
                             callback=lambda ctx, param, value: tuple(_absolute(ctx, param, v) for v in value),
                             help="A cluster YAML (cluster/*.yaml): with --check, one every trial must fit, scaled all "
                                  "the way up (may be given more than once); with --address, the cluster's node types, "
                                  "where it does not publish them itself.")


@cli.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False), callback=_absolute)
@_OVERRIDES
@_JOIN
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--check", is_flag=True, help="Check the sweep file and count its trials; run nothing.")
@_CLUSTER_FILE
def sweep_command(sweep_file, overrides, address, num_cpus, check, clusters):
    """Run a sweep (see sweeps/*.yaml): Ray Tune trials of the pipeline, logged to the result store and W&B,
    then print the report. Exit status 1 if any trial failed.

    KEY=VALUE arguments set keys of the sweep file: the base config (`lm.epochs=4`), `tune.*`, `tracking.*`, `name`,
    `storage`. Relative paths (the file, `storage`, `search.lm_guided.prior`) are taken from the current
    directory."""
    if check:
        from archsweep.capacity import from_cluster_file
        from archsweep.sweep.plan import plan_concurrency
        from archsweep.sweep.spec import load_sweep

        sweep = load_sweep(sweep_file, overrides)
        total = sweep.trial_count()
        _console().print(f"sweep {sweep.name!r}: {total} trial(s), {sweep.tune.search} search, "
                         f"{sweep.tune.scheduler} scheduler; axes: {', '.join(sweep.axes) or 'none'}", soft_wrap=True)
        for path in clusters:
            capacity = from_cluster_file(path)
            at_once = plan_concurrency(sweep, capacity)
            totals = capacity.totals()
            _console().print(f"fits {path} ({totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs on "
                             f"{len(capacity.nodes())} nodes at most): {at_once} trial(s) at once", soft_wrap=True)
        return
    if len(clusters) > 1:
        raise click.UsageError("--cluster is given once when running (the cluster at --address)")
    _exit_on_failures(_run_sweep(sweep_file, overrides, address, num_cpus, clusters[0] if clusters else None))


@cli.command("resume")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False), callback=_absolute)
@_JOIN
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--cluster", type=click.Path(dir_okay=False), callback=_absolute, default=None,
              help="The cluster's YAML, where it does not publish its node types itself.")
def resume_command(sweep_dir, address, num_cpus, cluster):
    """Continue an interrupted sweep; finished trials are not run again, failed ones are. Exit status 1 if any
    trial failed."""
    from archsweep.sweep.run import resume_sweep
    from archsweep.sweep.spec import load_sweep

    sweep = load_sweep(Path(sweep_dir) / "sweep.yaml")
    log_level = _start_sweep_ray(sweep, address, num_cpus, cluster)
    capacity = _capacity(address, cluster)
    with SweepMonitor(Path(sweep_dir), sweep.trial_count(), sweep.tune.metric, sweep.tune.mode, _waiting(address)):
        resume_sweep(sweep_dir, log_level=log_level, capacity=capacity)
    _exit_on_failures(_print_report(sweep_dir, sweep.tune.metric, sweep.tune.mode == "min"))


@cli.command("report")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False), callback=_absolute)
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


def _searches_finished(spec, search_dir: Path) -> bool:
    """Whether `search_dir` holds this very search file with every search of it finished."""
    from archsweep.specfile import same_spec
    from archsweep.tracking.store import ResultStore

    saved = search_dir / "search.yaml"
    if not saved.is_file() or not same_spec(saved, spec.to_dict()):
        return False
    done = {r.trial_id for r in ResultStore(search_dir).rows() if r.status == "TERMINATED"}
    return all(rid in done for rid, _ in spec.runs())


def _print_search_report(search_dir, budgets) -> int:
    """The summary over seeds, then the failed searches; returns how many failed."""
    from rich.table import Table

    from archsweep.search.report import WALL, display_rows, query_columns, split_of, write_report
    from archsweep.tracking.store import ResultStore

    table, files = write_report(search_dir, budgets)
    split = split_of(table, budgets)
    t = Table(title=f"search {search_dir}: {split} accuracy of the best-by-validation cell, mean ± std over seeds")
    heads = [("to optimum", "to best val cell", "to top 0.1 %")[i] for i in query_columns(split)]
    for column in ("dataset", "strategy", "seeds", *(f"@{b}" for b in budgets), *heads, WALL):
        t.add_column(column, justify="left" if column in ("dataset", "strategy") else "right")
    for cells in display_rows(table, budgets):
        t.add_row(*cells)
    console = _report_console()
    console.print(t)
    console.print("queries to optimum: median over seeds (seeds that got there); wall time: mean over seeds, on the "
                  "driver actor, of the rounds (the strategy's propose step in brackets); written: "
                  + ", ".join(str(f) for f in files))
    return _print_failures(console, ResultStore(search_dir).rows(), "search")


class SearchMonitor:
    """`progress` for run_searches: a live bar of queries used and searches done on a terminal, elsewhere a plain
    line each time a search finishes."""

    def __init__(self, searches: int):
        self.searches, self.finished = searches, None
        self.console = _console(stderr=True)
        self.bar = _progress() if self.console.is_terminal else None
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, finished: int):
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total,
                            description=f"queries ({finished}/{self.searches} searches done)")
        elif finished != self.finished:
            self.console.print(f"[{_clock(time.monotonic() - self.start)}] searches done {finished}/{self.searches}, "
                               f"queries used {done}/{total}", highlight=False, soft_wrap=True)
        self.finished = finished

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task("queries", total=None)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


@cli.command("search")
@click.argument("search_file", type=click.Path(dir_okay=False), callback=_absolute)
@_OVERRIDES
@_JOIN
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--check", is_flag=True, help="Check the search file and count its searches; run nothing.")
@click.option("--cluster", type=click.Path(dir_okay=False), callback=_absolute, default=None,
              help="With --address: the cluster's YAML, where it does not publish its node types itself.")
def search_command(search_file, overrides, address, num_cpus, check, cluster):
    """NAS on a benchmark (see sweeps/search-*.yaml): strategies x datasets x seeds as Ray actors, every query
    recorded; then the summary over seeds. Running the file again continues an interrupted search. Exit status 1
    if any search failed.

    KEY=VALUE arguments set keys of the search file: the base config incl. `search.*`, `searches.*`, `tracking.*`, `name`,
    `storage`. Relative paths (the file, `storage`, `search.lm_guided.prior`) are taken from the current
    directory."""
    from archsweep.search.spec import load_search_file

    spec = load_search_file(search_file, overrides)
    runs = spec.runs()
    if check:
        _console().print(f"search {spec.name!r}: {len(runs)} search(es), "
                         f"{sum(c.search.budget for _, c in runs)} queries in all; strategies: "
                         f"{', '.join(spec.searches.strategies)}")
        return
    from archsweep.search.run import run_searches, search_dir_of

    search_dir = search_dir_of(spec)
    if _searches_finished(spec, search_dir):  # nothing left to run: the summary, without starting Ray
        _console().print(f"search {spec.name!r}: all {len(runs)} search(es) in {search_dir} have finished")
        _exit_on_failures(_print_search_report(search_dir, spec.searches.report_budgets))
        return
    _start_sweep_ray(spec, address, num_cpus, cluster)
    capacity = _capacity(address, cluster)
    _console().print(f"search {spec.name!r}: {len(runs)} search(es) into {search_dir}; running the same command "
                     "again continues it if interrupted")
    with SearchMonitor(len(runs)) as monitor:
        run_searches(spec, search_dir=search_dir, progress=monitor, raise_on_failure=False, capacity=capacity)
    _exit_on_failures(_print_search_report(search_dir, spec.searches.report_budgets))


@cli.command("sync")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--project", default=None, help="Upload into this W&B project (default: the one each run recorded).")
@click.option("--entity", default=None, help="Upload under this W&B entity (default: the run's, else your default).")
@click.option("--dry-run", is_flag=True, help="Show which runs would go where; upload nothing.")
@click.option("--list", "list_only", is_flag=True, help="List the offline W&B runs and what they hold; upload "
              "nothing.")
def sync_command(run_dir, project, entity, dry_run, list_only):
    """Upload the offline W&B runs of a sweep or search directory in one `wandb sync` call (needs WANDB_API_KEY or
    `wandb login`), then declare which VQ-VAE stage each trial used. Runs already uploaded are skipped: syncing
    again is harmless."""
    import subprocess

    from rich.table import Table

    from archsweep.tracking.wandb import declare_uses, read_offline_run, sync_command_line, sync_plan
    from archsweep.tracking.wandb_log import rewrite

    console = _console()
    plan = sync_plan(run_dir, project, entity)
    if not plan:
        console.print(f"no offline W&B runs under {run_dir}")
        return
    if list_only:
        for entry in plan:
            for part in entry["dirs"]:
                data = read_offline_run(part)
                console.print(f"{part}: id {data['id']}, {data['job_type'] or 'run'} {data['name']!r}, "
                              f"{len(data['history'])} logged steps, {len(data['summary'])} summary keys, "
                              f"{len(data['artifacts'])} artifacts", soft_wrap=True)
        return
    table = Table(title=f"W&B runs under {run_dir}")
    for column in ("run id", "name", "job type", "to", "parts", "steps", "artifact files", "uses", "state"):
        table.add_column(column, overflow="fold")
    for e in plan:
        files = [f for found in e["files"].values() for f in found]
        lost, moved = sum(not f.found for f in files), sum(f.moved for f in files)
        table.add_row(e["id"], e["name"] or "", e["job_type"] or "", f"{e['entity'] or '(default entity)'}/"
                      f"{e['project']}", str(len(e["dirs"])), str(e["steps"]),
                      f"{len(files)}" + (f", {moved} moved" if moved else "") + (f", {lost} missing" if lost else ""),
                      ", ".join(e["uses"]), "synced" if e["synced"] else "to upload")
    console.print(table)
    todo = [e for e in plan if not e["synced"]]
    files = [f for e in todo for found in e["files"].values() for f in found]
    missing = [f for f in files if not f.found]
    for f in missing:
        click.echo(f"missing: {f.recorded} (file {f.path} of artifact {f.artifact}) is not there, nor under "
                   f"{run_dir} by the end of its path with its digest", err=True)
    if missing:
        click.echo(f"{len(missing)} artifact file(s) of runs to upload are missing: copy the whole directory the runs "
                   "were written in (`ray rsync-down` keeps its layout), or sync where they were written", err=True)
    moved = sum(f.moved for f in files)
    found = f"all {len(files)} artifact files found" + (f" ({moved} under {run_dir}, where the runs' logs will point "
                                                         "before uploading)" if moved else "")
    if dry_run:
        console.print(f"dry run: {len(todo)} of {len(plan)} runs would be uploaded; "
                      f"{found if not missing else f'{len(missing)} artifact file(s) missing'}; nothing was",
                      soft_wrap=True)
        raise SystemExit(1 if missing else 0)
    if missing:
        raise SystemExit(1)
    for e in todo:
        for log, run_files in e["files"].items():
            rewrite(log, run_files)
    wandb = Path(sys.executable).with_name("wandb")
    command = sync_command_line(plan, project, entity, str(wandb) if wandb.exists() else "wandb")
    if subprocess.run(command).returncode != 0:
        raise SystemExit(1)
    for line in declare_uses(plan):
        console.print(f"declared: {line}")


# --- clusters and jobs -----------------------------------------------------------------------------------------


@cli.group()
def cluster():
    """Ray cluster-launcher YAMLs (see cluster/)."""


@cluster.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--allow-examples", is_flag=True,
              help="Pass a file that still holds the shipped files' example values (project, file system, addresses).")
def cluster_validate(files, allow_examples):
    """Check cluster YAMLs offline with Ray's own schema and config preparation (what `ray up` would reject), and
    that no example value of the shipped files is left in them; exit status 2 names the file and the key."""
    from archsweep.capacity import examples_left, validate_cluster_yaml

    left = []
    for path in files:
        prepared = validate_cluster_yaml(path)
        types = prepared.get("available_node_types", {})
        _console().print(f"{path}: valid ({len(types)} node type(s): {', '.join(types)}; "
                         f"max_workers {prepared.get('max_workers')})")
        left += [] if allow_examples else examples_left(path)
    if left:
        click.echo("\n".join(left), err=True)
        raise SystemExit(2)


@cluster.command("start")
@click.argument("file", type=click.Path(exists=True, dir_okay=False), default="cluster/local.yaml")
@click.option("--port", type=int, default=6390, show_default=True, help="The head's GCS port (RAY_ADDRESS).")
@click.option("--dashboard-port", type=int, default=8265, show_default=True, help="The dashboard and job server.")
def cluster_start(file, port, dashboard_port):
    """Start the local autoscaling cluster (cluster/local.yaml) in the foreground: a head on 127.0.0.1 whose
    autoscaler starts worker nodes on this machine when trials wait for them and stops them when idle. Ctrl-C
    stops the head and every worker it started."""
    import signal

    from archsweep.sweep.cluster import start_local_cluster

    console = _console(stderr=True)
    console.print(f"starting the head of {file} ...", highlight=False)
    local = start_local_cluster(file, port, dashboard_port)
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a kill: stop it all, once
        signal.signal(signum, lambda *_: stopping.append(1) or local.process.terminate())
    console.print(f"cluster up: {_capacity_line(file)}\n"
                  f"  sweeps and searches: --address {local.address}  (or export "
                  + " ".join(f"{k}={v}" for k, v in local.env.items()) + ")\n"
                  f"  jobs (archsweep submit / job): --address {local.jobs}\n"
                  f"  watch it scale: ray status --address {local.address}\n"
                  f"  logs: {local.temp_dir}\n"
                  "Ctrl-C stops it and every worker node it started.", highlight=False, soft_wrap=True)
    try:
        local.process.wait()
    finally:
        console.print("stopping the cluster ...", highlight=False)
        local.stop()
    if local.process.returncode not in (0, None, -signal.SIGTERM, -signal.SIGINT) and not stopping:
        raise click.ClickException(f"the head stopped (exit {local.process.returncode}); see {local.temp_dir}")


def _capacity_line(file) -> str:
    from archsweep.capacity import from_cluster_file

    return from_cluster_file(file).describe()


_ADDRESS = click.option("--address", envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"], required=True,
                        help="The cluster's job server (http://127.0.0.1:8265), or its head (host:6379) [env: "
                             "RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, as Ray's own job CLI].")


def _submit(spec_file, overrides, address, cluster_data_dir, follow):
    from archsweep.sweep.cluster import follow_job_logs, job_outcome, submit_file

    info = _console(stderr=True)
    job_id = submit_file(spec_file, address, overrides, cluster_data_dir,
                         notes=lambda line: info.print(line, highlight=False, soft_wrap=True))
    click.echo(job_id)
    info.print(f"follow it: archsweep job logs {job_id} --address {address} --follow", highlight=False,
               soft_wrap=True)
    if follow:
        follow_job_logs(address, job_id, lambda chunk: click.echo(chunk, nl=False))
        status, message = job_outcome(address, job_id)
        if status != "SUCCEEDED":
            click.secho(f"job {job_id} {status}" + (f": {message}" if message else ""), fg="red", err=True)
            raise click.exceptions.Exit(1)


@cli.command("submit")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False), callback=_absolute)
@_OVERRIDES
@_ADDRESS
@click.option("--cluster-data-dir", default=None, help="The benchmark data directory on the cluster's nodes, "
              "absolute or under ~ (default: theirs, as set up by the cluster YAMLs).")
@click.option("--follow", is_flag=True, help="Stream the job's log until it ends; exit status 1 if the job failed.")
def submit_command(spec_file, overrides, address, cluster_data_dir, follow):
    """Submit a sweep file or a search file to a Ray cluster as a Ray Job; prints the job id.

    KEY=VALUE arguments as for `archsweep sweep` / `archsweep search`. Paths are the cluster's: a relative `storage`
    is taken from the home directory of the cluster's user. Before submitting, a one-second job checks that the
    cluster can run archsweep, and says which version it runs."""
    _submit(spec_file, overrides, address, cluster_data_dir, follow)


@cli.group()
def job():
    """The archsweep jobs on a Ray cluster: list, status, logs, stop (Ray's Job API)."""


@job.command("list")
@_ADDRESS
def job_list(address):
    """The cluster's archsweep jobs, newest first."""
    from rich.table import Table

    from archsweep.sweep.cluster import list_jobs

    table = Table(title=f"archsweep jobs on {address}")
    for column in ("job", "kind", "name", "status", "submitted", "by archsweep"):
        table.add_column(column)
    for j in list_jobs(address):
        table.add_row(j["id"], j["kind"], j["name"], j["status"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["start"])) if j["start"] else "",
                      j["version"])
    _report_console().print(table)


@job.command("status")
@click.argument("job_id")
@_ADDRESS
def job_status_command(job_id, address):
    """A job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from archsweep.sweep.cluster import job_status

    click.echo(job_status(address, job_id))


@job.command("logs")
@click.argument("job_id")
@_ADDRESS
@click.option("--follow", is_flag=True, help="Keep streaming until the job ends.")
def job_logs_command(job_id, address, follow):
    """A job's log."""
    from archsweep.sweep.cluster import follow_job_logs, job_logs

    if follow:
        follow_job_logs(address, job_id, lambda chunk: click.echo(chunk, nl=False))
    else:
        click.echo(job_logs(address, job_id), nl=False)


@job.command("stop")
@click.argument("job_id")
@_ADDRESS
def job_stop_command(job_id, address):
    """Stop a job. Its finished trials stay in its result store; `archsweep resume` (or the same search file
    again) continues it later."""
    from archsweep.sweep.cluster import stop_job

    click.echo(f"job {job_id}: " + ("stopping" if stop_job(address, job_id) else "had already ended"))


# `archsweep logs` and `archsweep status` as before: the same as `archsweep job logs|status`
cli.add_command(job_logs_command, "logs")
cli.add_command(job_status_command, "status")


def results_table(results: dict, title: str):
    from rich.table import Table

    from archsweep.benchmarks import has_table

    table = Table(title=title, show_header=False)
    rows = {k: v for k, v in results.items() if k not in ("config", "training")}
    space = results.get("config", {}).get("space")
    if "validity" in rows and space and not has_table(space):
        rows["accuracy"] = f"n/a ({space} has no accuracy table)"
    for key, value in rows.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, str(value))
    return table


@cli.command()
@click.option("--sweep", "sweep_file", default="sweeps/quick.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), callback=_absolute, help="The sweep to run.")
def demo(sweep_file):
    """The main job on this machine: verify the data, summarise the spaces and benchmarks, then run the quick
    sweep (NAS-Bench-201; codebook size x sequence length x two LMs) on a local Ray and print its report. Exit
    status 1 if any trial failed."""
    from archsweep.benchmarks import files

    console = _console()
    problems = {p: e for p, e in files.verify().items() if e is not None}
    if problems:
        from archsweep.errors import DataError

        raise DataError("; ".join(problems.values()) + ". Run `archsweep data fetch` first.")
    print_summaries(console)
    _exit_on_failures(_run_sweep(sweep_file))


def print_summaries(console) -> None:
    """Every search space's summary, each followed by its benchmark table where it has one."""
    from archsweep.benchmarks import has_table

    for name in _space_names(()):
        console.print(space_stats_table(name))
        if has_table(name):
            console.print(benchmark_stats_table(name))


def main() -> None:
    cli(prog_name="archsweep")


if __name__ == "__main__":
    main()
