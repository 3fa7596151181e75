"""Load: a sweep of 200 small trials on the local Ray completes with every result stored, the driver's memory
stays bounded while it runs, and the report renders. Each trial is a regularized-evolution search (its own
seed) on one shared VAE stage, so the 200 trials exercise the sweep machinery (Tune, the store, the report)
rather than training. Part of the reliability suite (`pytest -m reliability`, run by `make test`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from archsweep.sweep.spec import load_sweep

pytestmark = [pytest.mark.ray, pytest.mark.reliability]
LOAD = Path(__file__).resolve().parents[1] / "sweeps" / "load.yaml"
TRIALS = 200


def test_a_sweep_of_200_trials_completes_with_bounded_driver_memory(data_dir, tmp_path, measured):
    import psutil
    import ray

    from archsweep.runtime import init_local_ray
    from archsweep.sweep.run import run_sweep, sweep_dir_of
    from archsweep.tracking.report import report
    from archsweep.tracking.store import ResultStore

    sweep = load_sweep(LOAD, [f"storage={tmp_path / 'sweeps'}", "tracking.wandb=false"])
    sweep_dir = sweep_dir_of(sweep)
    driver, samples, stop = psutil.Process(), [], threading.Event()

    def watch():  # (finished trials, driver RSS) every second
        while not stop.wait(1.0):
            try:
                done = sum(r.status == "TERMINATED" for r in ResultStore(sweep_dir).rows())
            except Exception:
                done = 0
            samples.append((done, driver.memory_info().rss))

    init_local_ray(num_cpus=2)
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        start = time.time()
        watcher.start()
        grid = run_sweep(sweep)
        elapsed = time.time() - start
    finally:
        stop.set()
        ray.shutdown()
    assert not grid.errors
    rows = ResultStore(sweep_dir).rows()
    assert len(rows) == TRIALS and {r.status for r in rows} == {"TERMINATED"}
    assert sorted(r.config["search"]["seed"] for r in rows) == list(range(TRIALS))
    assert all(r.metrics["search/queries"] == 20 for r in rows)

    # bounded: the driver grows by less over the last 150 trials than it held after the first 50
    after_50 = max(rss for done, rss in samples if done <= 50)
    peak = max(rss for _, rss in samples)
    print(f"\n{TRIALS} trials in {elapsed:.0f} s; driver RSS after 50 trials {after_50 / 2**20:.0f} MiB, "
          f"peak {peak / 2**20:.0f} MiB")
    assert peak - after_50 < 0.5 * after_50

    table, files = report(sweep_dir, sort_by="search/best_test", metric="search/best_test")
    assert len(table) == TRIALS and (sweep_dir / "report" / "results.csv").is_file()
    assert {f.name for f in files} >= {"results.csv", "results.json", "search_best_test_by_search_seed.png"}
    measured("load: 200 trials on a 2-CPU local Ray (W&B off)", str(TRIALS), str(len(rows)), "0",
             f"{elapsed:.0f} s; driver RSS {after_50 / 2**20:.0f} MiB after 50 trials, peak {peak / 2**20:.0f} MiB; "
             "the report renders")
