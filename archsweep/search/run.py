"""Many searches at once on Ray: one driver actor per search (it owns the search's state), evaluator actors that
query the benchmark, generator actors that hold an LM prior (CPU or a fraction of a GPU).

Layout of a search directory (`<storage>/<name>/`):
- `search.yaml`: the checked search file as it ran
- `results.db`: the result store, one row per search (archsweep.tracking.store), with its summary
- `runs/<id>/state.jsonl`: the search's history, one line appended per round; `runs/<id>/wandb/`: its W&B run,
  logged round by round as the search goes (id `<file name>-<id>`: unique across the search files of a project)

A driver actor that dies is restarted by Ray and its `run` call retried; it continues from `state.jsonl`. Running
the same search file again continues it: finished searches are read back, unfinished ones continue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray

from archsweep.benchmarks import load_benchmark
from archsweep.capacity import Capacity, check_shared, live_capacity
from archsweep.config import Config, from_dict, to_dict
from archsweep.errors import one_line
from archsweep.search.generator import Generator
from archsweep.search.loop import SearchError, SearchState, curves, lookup
from archsweep.search.registry import run_search
from archsweep.search.requirements import needs_generator
from archsweep.search.spec import SearchFile
from archsweep.specfile import preflight, same_spec, to_yaml
from archsweep.tracking.store import ResultStore, Row
from archsweep.tracking.wandb import define_axes, enabled, last_step, open_run, run_id, wandb_env

log = logging.getLogger(__name__)
DRIVER_RESTARTS = 3


# Evaluators and generators hold nothing but what they were built from: Ray restarts them and retries the call.
@ray.remote(num_cpus=0, max_restarts=DRIVER_RESTARTS, max_task_retries=DRIVER_RESTARTS)
class Evaluator:
    """Answers benchmark queries. A table lookup here; the place where a real evaluation (training) would run."""

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def query(self, keys: list[str], dataset: str) -> list[dict]:
        return lookup(self.benchmark, keys, dataset)


@ray.remote(num_cpus=1, max_restarts=DRIVER_RESTARTS, max_task_retries=DRIVER_RESTARTS)
class GeneratorActor:
    """Holds one LM prior; any number of lm_guided drivers call it (its answers depend only on the arguments)."""

    def __init__(self, prior: str, device: str = "cpu"):
        self.generator = Generator.from_prior(prior, device)

    def candidates(self, elite, **settings):
        return self.generator.candidates(elite, **settings)

    def log_likelihood(self, elite, cells, **settings):
        return self.generator.log_likelihood(elite, cells, **settings)


class _RemoteGenerator:
    def __init__(self, actor):
        self.actor = actor

    def candidates(self, elite, **settings):
        return ray.get(self.actor.candidates.remote(elite, **settings))

    def log_likelihood(self, elite, cells, **settings):
        return ray.get(self.actor.log_likelihood.remote(elite, cells, **settings))


@ray.remote(num_cpus=0, max_restarts=DRIVER_RESTARTS, max_task_retries=DRIVER_RESTARTS)
class SearchDriver:
    """Owns one search: its history, budget and best-so-far live in `state_path`, reloaded on every (re)start."""

    def __init__(self, config: dict, state_path: str, benchmark, evaluators: list, generator=None):
        self.cfg = from_dict(config)
        self.state_path = Path(state_path)
        self.benchmark, self.evaluators = benchmark, evaluators
        self.generator = None if generator is None else _RemoteGenerator(generator)

    def _evaluate(self, candidates) -> list[dict]:
        chunks = [c for c in np.array_split(np.array([c.key for c in candidates], dtype=object),
                                            len(self.evaluators)) if len(c)]
        answers = ray.get([ev.query.remote(list(chunk), self.cfg.search.dataset)
                           for ev, chunk in zip(self.evaluators, chunks)])
        return [a for part in answers for a in part]

    def run(self, budgets: list[int]) -> dict:
        return run_search(self.cfg, self.benchmark, self.state_path, self._evaluate, budgets, self.generator)

    def pid(self) -> int:
        return os.getpid()


def search_dir_of(spec: SearchFile) -> Path:
    return (Path(spec.storage) / spec.name).resolve()


def state_path(search_dir: Path, run_id: str) -> Path:
    return search_dir / "runs" / run_id / "state.jsonl"


def start_driver(cfg: Config, path: Path, benchmark_ref, evaluators: list, generator=None):
    """A driver actor for one search; call its `run.remote(budgets)`."""
    return SearchDriver.remote(to_dict(cfg), str(path), benchmark_ref, evaluators, generator)


def plan_searches(spec: SearchFile, capacity: Capacity) -> int:
    """How many searches run at once (their drivers and evaluators hold no CPU; `searches.max_concurrent`, else
    twice the CPUs the cluster has or can scale to); a clear error when a generator actor (1 CPU, `num_gpus`) fits
    no node the cluster can ever have."""
    for _, cfg in spec.runs():
        g = cfg.search.lm_guided
        if needs_generator(cfg) and not any(n.get("CPU", 0) >= 1 and n.get("GPU", 0) >= g.num_gpus
                                            for n in capacity.nodes()):
            raise SearchError(f"search {spec.name!r}: the LM prior's generator actor needs 1 CPU and {g.num_gpus:g} "
                              f"GPUs on one node (search.lm_guided.num_gpus), which no node holds: "
                              f"{capacity.describe()}. Lower search.lm_guided.num_gpus, or add a node type that has it")
    return spec.searches.max_concurrent or max(1, 2 * int(capacity.totals().get("CPU", 0)))


def run_searches(spec: SearchFile, *, search_dir: str | Path | None = None, data_dir: str | None = None,
                 progress: Callable[[int, int, int], None] | None = None, raise_on_failure: bool = True,
                 capacity: Capacity | None = None) -> list:
    """Run (or continue) every search of the file on the Ray this process is connected to; returns the result
    store's rows. `progress(queries done, queries in all, searches finished)` is called while they run. A search
    that fails is recorded (one-line error, `error.log` beside its state) while the others go on; then a
    SearchError, unless `raise_on_failure` is False (the rows say which failed). `capacity`: what the cluster can
    become (archsweep.capacity), for an autoscaling one; by default the nodes alive now."""
    preflight(spec, data_dir)
    limit = plan_searches(spec, capacity or live_capacity())
    search_dir = Path(search_dir) if search_dir else search_dir_of(spec)
    saved = search_dir / "search.yaml"
    if saved.is_file() and not same_spec(saved, spec.to_dict()):
        raise SearchError(f"{search_dir} holds a different search named {spec.name!r}; give this one another name "
                          "(`name=...`) or storage (`storage=...`), or remove that directory")
    search_dir.mkdir(parents=True, exist_ok=True)
    check_shared(search_dir, "search")
    saved.write_text(to_yaml(spec.to_dict()))
    store = ResultStore(search_dir)
    runs = spec.runs()
    done = {r.trial_id for r in store.rows() if r.status == "TERMINATED"}
    todo = [(rid, cfg) for rid, cfg in runs if rid not in done]
    total = sum(cfg.search.budget for _, cfg in runs)
    budgets = list(spec.searches.report_budgets)

    benchmark = load_benchmark(spec.base.space, data_dir)
    benchmark_ref = ray.put(benchmark)
    evaluators = [Evaluator.remote(benchmark_ref) for _ in range(spec.searches.evaluators)] if todo else []
    generators: dict[str, list] = {}
    for _, cfg in todo:
        g = cfg.search.lm_guided
        if needs_generator(cfg) and g.prior not in generators:
            options = {"num_gpus": g.num_gpus} if g.num_gpus else {}
            generators[g.prior] = [GeneratorActor.options(**options).remote(
                str(Path(g.prior).resolve()), "cuda" if g.num_gpus else "cpu") for _ in range(spec.searches.generators)]

    running: dict = {}  # ref -> (run id, config, driver)
    failed: list[str] = []
    tracked = SearchRuns(spec)
    queue = list(todo)
    launched = 0
    while queue or running:
        while queue and len(running) < limit:
            rid, cfg = queue.pop(0)
            pool = generators.get(cfg.search.lm_guided.prior) if needs_generator(cfg) else None
            driver = start_driver(cfg, state_path(search_dir, rid), benchmark_ref, evaluators,
                                  pool[launched % len(pool)] if pool else None)
            launched += 1
            store.put(Row(rid, "RUNNING", to_dict(cfg), paths={"state": str(state_path(search_dir, rid))}))
            running[driver.run.remote(budgets)] = (rid, cfg, driver)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in ready:
            rid, cfg, driver = running.pop(ref)
            path = state_path(search_dir, rid)
            try:
                summary = ray.get(ref)
            except Exception as exc:  # the driver failed for good (restarts spent): recorded, the others go on
                error_log = path.parent / "error.log"
                error_log.parent.mkdir(parents=True, exist_ok=True)
                error_log.write_text(str(exc))
                log.info("search %s failed: %s", rid, exc)
                store.put(Row(rid, "ERROR", to_dict(cfg), paths={"state": str(path), "log": str(error_log)},
                              error=one_line(str(exc))))
                failed.append(rid)
                tracked.update(rid, cfg, _observe(path), failed=True)
                continue
            finally:
                ray.kill(driver, no_restart=True)
            tracked.update(rid, cfg, SearchState.load(path), summary)
            store.put(Row(rid, "TERMINATED", to_dict(cfg), summary, {"state": str(path)}))
        for rid, cfg, _ in running.values():
            tracked.update(rid, cfg, _observe(state_path(search_dir, rid)))
        if progress is not None:
            unfinished = queue + [(rid, cfg) for rid, cfg, _ in running.values()]
            progress(_queries_done(search_dir, unfinished, total), total, len(runs) - len(unfinished))
    for actor in evaluators + [a for pool in generators.values() for a in pool]:
        ray.kill(actor)
    tracked.close()
    if failed and raise_on_failure:
        raise SearchError(f"{len(failed)} of {len(runs)} searches failed ({', '.join(failed[:5])}); their errors are "
                          f"in {store.path} (`archsweep report {search_dir}`); run the file again to retry them")
    return store.rows()


def _queries_done(search_dir: Path, unfinished: list[tuple[str, Config]], total: int) -> int:
    """Queries recorded so far: all of every finished search's, plus what the unfinished ones' states hold."""
    done = total
    for rid, cfg in unfinished:
        done -= cfg.search.budget - len(_observe(state_path(search_dir, rid)).history)
    return done


def _observe(path: Path) -> SearchState:
    """A running search's state as its file holds it now, read without touching the file (its driver appends to
    it); empty where it cannot be read yet."""
    try:
        return SearchState.load(path, repair=False)
    except SearchError:
        return SearchState(path)


class SearchRuns:
    """One W&B run per search (job_type `search`), logged round by round from the search's state file while it
    runs: every query at `search/query` (= the step), with the best-so-far validation accuracy and the test accuracy
    of that cell, so that the best-so-far curves of every strategy share one panel; the summary when it ends. Its id
    is `<search file name>-<strategy label>-<dataset>-s<seed>`, unique across the search files of one project. A
    search continued by a restarted driver, or by running the file again, logs only the queries after the last one
    its run holds, so no step is logged twice."""

    def __init__(self, spec: SearchFile):
        self.spec, self.on = spec, enabled(spec.tracking)
        if self.on:
            os.environ.update(wandb_env(spec.tracking))
        self.runs: dict = {}
        self.logged: dict[str, int] = {}

    def _open(self, rid: str, cfg: Config, directory: Path):
        s = cfg.search
        label = rid.removesuffix(f"-{s.dataset}-s{s.seed}")
        wid = run_id(self.spec.name, rid)
        run = open_run(self.spec.tracking, id=wid, name=rid, directory=directory,
                       group=self.spec.tracking.group or self.spec.name, job_type="search",
                       tags=list(dict.fromkeys([cfg.space, label, s.strategy, s.dataset])),
                       config=to_dict(cfg) | {"search_file": self.spec.name, "label": label})
        define_axes(run, "search")
        self.logged[rid] = max(last_step(directory, wid), int(getattr(run, "starting_step", 0)) - 1)
        self.runs[rid] = run
        return run

    def update(self, rid: str, cfg: Config, state: SearchState, summary: dict | None = None,
               failed: bool = False) -> None:
        """Log the queries `state` holds beyond what the run has; with `summary` (or `failed`), finish the run."""
        if not self.on:
            return
        run = self.runs.get(rid) or self._open(rid, cfg, state.path.parent)
        new = [q for q in state.history if q.n > self.logged[rid]]
        if new:
            c = curves(state.history)
            for q in new:
                row = {"search/query": q.n, "search/val": q.val, "search/best_val": c["best_val"][q.n - 1],
                       "search/seconds": c["seconds"][q.n - 1]}
                if q.test is not None:
                    row |= {"search/test": q.test, "search/test_of_best": c["test_of_best"][q.n - 1]}
                run.log(row, step=q.n)
            self.logged[rid] = new[-1].n
        if summary is not None or failed:
            for key, value in (summary or {}).items():
                if value is not None:
                    run.summary[key] = value
            self.runs.pop(rid).finish(exit_code=1 if failed else 0)

    def close(self) -> None:
        if not self.on:
            return
        import wandb

        for run in self.runs.values():
            run.finish()
        wandb.teardown()  # wait until every run is written
