"""Run a sweep as Ray Tune trials, each one the pipeline for one configuration.

Layout of a sweep directory (`<storage>/<name>/`):
- `sweep.yaml`: the checked sweep as it ran (what `resume` and `report` read)
- `results.db`: the result store, one row per trial (archsweep.tracking.store)
- `artifacts/vqvae-<key>/`: VQ-VAE stages, shared by every trial with the same upstream configuration
- `trials/<trial>/`: Tune's trial directories: the LM stage (`lm/`), `metrics.json`, the offline W&B run

The trial is a function trainable (Ray 2.60, Train V2): it runs the pipeline's stages itself (in its own process
when each takes one worker, on Ray Train workers otherwise), sends each LM epoch's report on to Tune (what ASHA
and W&B see), then reports the final metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock

from archsweep.capacity import Capacity, check_shared, live_capacity
from archsweep.config import Config, from_dict, to_dict
from archsweep.errors import one_line
from archsweep.layout import RunDir, VQVAEStage
from archsweep.metrics import GENERATION
from archsweep.runtime import worker_env
from archsweep.specfile import preflight, same_spec, set_key, to_yaml
from archsweep.stages import pipeline, vqvae
from archsweep.sweep.plan import SweepError, plan_concurrency, trial_holds
from archsweep.sweep.spec import Sweep, load_sweep, max_lm_epochs, trial_configs
from archsweep.trace import mark
from archsweep.tracking.report import report
from archsweep.tracking.store import ResultStore, Row
from archsweep.tracking.wandb import enabled, log_sweep_summary, sweep_prefix, wandb_callback, wandb_env
from archsweep.train import fatal_error
from archsweep.train.launch import Forward

log = logging.getLogger(__name__)
# Ray Tune is imported where it is used: it reads some of the settings `run_sweep` makes (TUNE_*) when imported.

EXPERIMENT = "trials"
# Settings that change how a stage runs, not what it computes: left out of the reuse key.
EXECUTION_ONLY = {"cpus_per_worker", "gpus_per_worker", "checkpoint_every", "checkpoint_interval_s", "max_failures"}
# The result a trial reports when it fails with an archsweep error: its one-line message (see `_store_callback`).
FATAL = "archsweep/error"


def upstream_key(cfg: Config) -> str:
    """Identifies a VQ-VAE stage: trials whose space, seed, vqvae.* and train.* agree share one."""
    train = {k: v for k, v in asdict(cfg.train).items() if k not in EXECUTION_ONLY}
    blob = json.dumps({"space": cfg.space, "seed": cfg.seed, "vqvae": asdict(cfg.vqvae), "train": train},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def shared_vqvae(cfg: Config, artifacts: Path, env: dict, log_level: str) -> tuple[dict, Path, bool]:
    """(VQ-VAE stage metrics, its directory, whether it was reused). A file lock makes concurrent trials with
    the same upstream configuration wait for one training instead of racing (the storage must be shared by
    all nodes, as Tune requires anyway)."""
    stage_dir = artifacts / f"vqvae-{upstream_key(cfg)}"
    artifacts.mkdir(parents=True, exist_ok=True)
    with FileLock(str(stage_dir) + ".lock"):
        done = VQVAEStage(stage_dir).metrics
        if done.exists():
            return json.loads(done.read_text()), stage_dir, True
        return vqvae.run(cfg, stage_dir, env, log_level), stage_dir, False


class TuneForward(Forward):
    """A stage's epoch reports sent on to the Tune trial, keys prefixed with the stage ("lm/loss"): directly when
    the stage runs in the trial's process, through Ray Train's Tune callback when it runs on a worker group."""

    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, metrics: dict) -> None:
        import ray.tune

        ray.tune.report({f"{self.stage}/{k}": v for k, v in metrics.items()})

    def train_callbacks(self) -> list:
        from ray.tune.integration.ray_train import TuneReportCallback

        stage = self.stage

        class StageReport(TuneReportCallback):  # made inside the trial, where Tune's session is
            def after_report(self, run_context, metrics, checkpoint):
                prefixed = [{f"{stage}/{k}": v for k, v in m.items()} for m in metrics]
                super().after_report(run_context, prefixed, None)

        return [StageReport()]


def final_metrics(results: dict) -> dict:
    """The flat row a trial reports last (and the store and W&B summary keep)."""
    out = {k: results["generation"][k] for k in GENERATION if k != "samples"}
    vq = results["vqvae"]
    for key in ("reconstruction_accuracy", "codebook_usage", "perplexity", "train_wall_s"):
        if vq.get(key) is not None:
            out[f"vqvae/{key}"] = vq[key]
    out["vqvae/reused"] = bool(results.get("vqvae_reused"))
    for key in ("epochs_trained", "plateaued"):  # how far each stage trained, and whether its held-out curve was flat
        if key in vq:
            out[f"vqvae/{key}"] = vq[key]
    if "pipeline_wall_s" in results:
        out["pipeline_wall_s"] = results["pipeline_wall_s"]
    for key, value in results.get("search", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"search/{key}"] = value
    lm = results.get("lm")
    if lm:
        for key in ("loss", "heldout_loss", "heldout_perplexity", "tokens_per_s"):
            if key in lm["training"]:
                out[f"lm/{key}"] = lm["training"][key]
        out["lm/train_wall_s"] = lm["train_wall_s"]
        for key in ("epochs_trained", "plateaued"):
            if key in lm:
                out[f"lm/{key}"] = lm[key]
        for key, value in lm.get("training_cells", {}).items():  # the ceiling: as many draws from the training cells
            if key != "samples":
                out[f"ceiling/{key}"] = value
        out["samples_per_s"] = lm["samples_per_s"]
        for key, stats in lm.items():
            if key.startswith("accuracy_") and isinstance(stats, dict):
                for stat in ("max", "mean", "top5_mean", "coverage"):
                    if stat in stats:
                        out[f"{key}/{stat}"] = stats[stat]
    return out


def run_trial(config: dict, sweep_dir: str, env: dict, log_level: str = "WARNING") -> None:
    """One Tune trial: the pipeline for `config`, its VQ-VAE shared, its LM stage in the trial directory."""
    import ray.tune

    os.environ.update(env)
    mark("trial: entered")
    cfg = from_dict(config.get("trial", config))
    context = ray.tune.get_context()
    done = ResultStore(sweep_dir).get(context.get_trial_id())
    if done is not None and done.status == "TERMINATED":  # finished before a driver died, after Tune's last save
        ray.tune.report(done.metrics)
        return
    try:
        _run_pipeline(cfg, context, Path(sweep_dir), env, log_level)
    except Exception as exc:
        if (fatal := fatal_error(exc)) is not None:  # no retry can fix it: the store callback stops Tune retrying
            ray.tune.report({FATAL: one_line(str(fatal))})
        raise


def _run_pipeline(cfg: Config, context, sweep_dir: Path, env: dict, log_level: str) -> None:
    import ray.tune

    # The trial's directory in the sweep's storage, not Tune's working copy in this node's Ray session directory:
    # the LM stage's checkpoints must outlive this node, and the store must point where the results stay.
    trial_dir = sweep_dir / EXPERIMENT / Path(context.get_trial_dir()).name
    results = pipeline.run(cfg, trial_dir, env, log_level=log_level,
                           vqvae_stage=lambda c: shared_vqvae(c, sweep_dir / "artifacts", env, log_level),
                           lm_forward=TuneForward("lm"))
    final = final_metrics(results)
    run_dir = RunDir(trial_dir, Path(results["vqvae_dir"]))
    paths = {"trial_dir": str(trial_dir), "vqvae_dir": results["vqvae_dir"], "vqvae_node": results["vqvae"].get("node"),
             "vqvae_host": results["vqvae"].get("host")}
    if "lm" in results:
        paths |= {"lm_dir": str(run_dir.lm.dir), "lm_node": results["lm"].get("node"),
                  "lm_host": results["lm"].get("host")}
    # The trial records itself: a finished trial is in the store even if the sweep's driver dies right after.
    ResultStore(sweep_dir).put(Row(context.get_trial_id(), "TERMINATED", to_dict(cfg), final, paths))
    mark("trial: recorded")
    ray.tune.report(final)
    mark("trial: reported")


def param_space(sweep: Sweep) -> dict:
    """The base configuration as a nested dict with Tune search specs at the swept keys; with extra trials, a
    grid over the listed configurations instead (all axes are grids then)."""
    from ray import tune

    if sweep.extra_trials:
        return {"trial": tune.grid_search(trial_configs(sweep))}
    space = to_dict(sweep.base)
    for key, spec in sweep.axes.items():
        (kind, args), = spec.items()
        if kind == "grid" and sweep.tune.search == "random":
            kind = "choice"
        value = {"grid": tune.grid_search, "choice": tune.choice}[kind](args) if kind in ("grid", "choice") else \
            {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*args)
        space = set_key(space, key, value)
    return space


def _trial_dirname(trial) -> str:
    """Short and stable (Tune's default packs every swept value into the name, too long for big sweeps)."""
    return f"trial_{trial.trial_id}"


def sweep_dir_of(sweep: Sweep) -> Path:
    return (Path(sweep.storage) / sweep.name).resolve()


def scheduler(sweep: Sweep):
    """FIFO, or ASHA / asynchronous HyperBand on the LM's per-epoch reports (one Tune iteration per LM epoch, plus
    the final report); `max_t` reaches the longest trial the sweep can run (a swept `lm.epochs` included)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    t = sweep.tune
    if t.scheduler == "fifo":
        return FIFOScheduler()
    return AsyncHyperBandScheduler(time_attr="training_iteration", metric=t.scheduler_metric, mode=t.scheduler_mode,
                                   max_t=max(max_lm_epochs(sweep), t.grace_period) + 1, grace_period=t.grace_period,
                                   brackets=t.brackets if t.scheduler == "async_hyperband" else 1)


def search_algorithm(sweep: Sweep, concurrency: int):
    """Tune's variant generator (grid and random), or Optuna's TPE, seeded, asked for at most `concurrency` trials
    at once (TPE models the finished ones: asking for all at once would make it random search)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    t = sweep.tune
    if t.search != "optuna":
        return BasicVariantGenerator(random_state=t.seed, max_concurrent=concurrency)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class FinalMetricOptuna(OptunaSearch):
        """Told only the trial's final metric: the LM's per-epoch reports do not carry it (Ray's searcher would
        raise a KeyError on them)."""

        def on_trial_result(self, trial_id: str, result: dict):
            if self.metric in result:
                super().on_trial_result(trial_id, result)

    # TPE samples at random for its first trials; with a small sweep, half of it, so that the rest is modelled
    sampler = optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=max(1, min(10, t.num_samples // 2)),
                                         constant_liar=True)
    return ConcurrencyLimiter(FinalMetricOptuna(sampler=sampler, metric=t.metric, mode=t.mode),
                              max_concurrent=concurrency)


def cluster_concurrency(sweep: Sweep, capacity: Capacity | None = None) -> int:
    """`plan_concurrency` on `capacity`, by default the nodes alive on the Ray this process is connected to."""
    return plan_concurrency(sweep, capacity or live_capacity())


def build_tuner(sweep: Sweep, sweep_dir: Path, callbacks: list, env: dict, log_level: str, resume: bool,
                concurrency: int):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep_dir=str(sweep_dir), env=env, log_level=log_level),
        lambda config: trial_holds(from_dict(config.get("trial", config))))
    experiment = sweep_dir / EXPERIMENT
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise SweepError(f"{sweep_dir} holds no sweep state to resume (no {experiment}); run the sweep first")
        return tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)

    t = sweep.tune
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(search_alg=search_algorithm(sweep, concurrency), scheduler=scheduler(sweep),
                                    num_samples=t.num_samples, time_budget_s=t.time_budget_s or None,
                                    reuse_actors=t.reuse_actors,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(sweep_dir), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=t.max_failures),
                                  verbose=1 if log_level == "INFO" else 0),
    )


def run_sweep(sweep: Sweep, *, sweep_dir: str | Path | None = None, resume: bool = False, callbacks: list = (),
              log_level: str = "WARNING", capacity: Capacity | None = None):
    """Run (or, with `resume`, continue) the sweep on the Ray this process is connected to; returns the
    ResultGrid. Finished trials of a resumed sweep are not run again; running a sweep whose directory already
    holds the same sweep continues it. `capacity`: what the cluster can become (archsweep.capacity), for an
    autoscaling cluster; by default the nodes alive now."""
    mark("sweep: start")
    preflight(sweep)
    concurrency = cluster_concurrency(sweep, capacity)  # a trial that can never run is refused before any write
    sweep_dir = Path(sweep_dir) if sweep_dir else sweep_dir_of(sweep)
    spec = sweep_dir / "sweep.yaml"
    if not resume and spec.is_file():  # the same sweep again continues it; another one may not overwrite it
        if not same_spec(spec, sweep.to_dict()):
            raise SweepError(f"{sweep_dir} holds a different sweep named {sweep.name!r}; give this one another "
                             "name (`name=...`) or storage (`storage=...`), or remove that directory")
        resume = (sweep_dir / EXPERIMENT).is_dir()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    check_shared(sweep_dir, "sweep")
    if not resume:
        spec.write_text(to_yaml(sweep.to_dict()))
    env = worker_env() | wandb_env(sweep.tracking)
    os.environ.update(env)
    # Tune's per-trial CSV and TensorBoard files duplicate what the store and W&B hold (result.json is kept)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune would stop the whole sweep on a result without ASHA's metric, such as a failing trial's FATAL report;
    # the metric is checked against what the LM reports when the sweep file is read (spec.ASHA_METRICS) instead.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if log_level != "INFO":  # Tune's own console output; the CLI shows a progress bar and the report instead
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "60")  # "took 3 s" notes about a loaded 2-core machine
    from ray.tune.logger import JsonLoggerCallback

    callbacks = [*callbacks, JsonLoggerCallback(), _store_callback(sweep_dir, sweep.tune.max_failures),
                 *wandb_callback(sweep, sweep_dir)]
    tuner = build_tuner(sweep, sweep_dir, callbacks, env, log_level, resume, concurrency)
    mark("sweep: trials start")
    grid = tuner.fit()
    mark("sweep: trials done")
    _forget_unsaved(sweep_dir)
    if enabled(sweep.tracking):
        _summary_run(sweep, sweep_dir)
    mark("sweep: done")
    return grid


def _forget_unsaved(sweep_dir: Path) -> None:
    """Once Tune has ended, a row still RUNNING is a trial Tune does not have: one a driver started and died before
    Tune saved it (the resumed Tune never knew it and ran its work as another trial). Its row goes; its directory
    stays."""
    store = ResultStore(sweep_dir)
    for row in store.rows():
        if row.status == "RUNNING":
            log.info("trial %s was started by a driver that died before saving it; removed from the store",
                     row.trial_id)
            store.delete(row.trial_id)


def _summary_run(sweep: Sweep, sweep_dir: Path) -> None:
    """The sweep-summary W&B run: the report's table and plots, as they stand when the sweep ends."""
    import wandb

    table, files = report(sweep_dir, sweep.tune.metric, sweep.tune.mode == "max", sweep.tune.metric)
    try:
        log_sweep_summary(sweep.tracking, sweep.tracking.group or sweep.name, sweep_prefix(sweep.name, sweep_dir),
                          table, files, sweep_dir / "report")
    except Exception as exc:  # every trial's result is in the store and its own run; the summary is a view
        log.warning("W&B: the sweep-summary run was not written: %s", exc)
    wandb.teardown()


def resume_sweep(sweep_dir: str | Path, callbacks: list = (), log_level: str = "WARNING",
                 capacity: Capacity | None = None):
    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / "sweep.yaml").is_file():
        raise SweepError(f"{sweep_dir} is not a sweep directory (no sweep.yaml); give the directory "
                         "`archsweep sweep` printed")
    sweep = load_sweep(sweep_dir / "sweep.yaml")
    return run_sweep(sweep, sweep_dir=sweep_dir, resume=True, callbacks=callbacks, log_level=log_level,
                     capacity=capacity)


def _config_of(trial) -> dict:
    return trial.config.get("trial", trial.config)


def _store_callback(sweep_dir: Path, max_failures: int):
    """A Tune callback that records trial starts, failures and early stops in the result store (trials record
    their own success, see `run_trial`), and keeps Tune from retrying a trial that failed with an archsweep error.

    A failed trial's row holds the error's one-line message and the path of `error.log` in the trial directory,
    which holds every failure's full traceback. Tune retries each failed trial up to `tune.max_failures` times;
    a trial that reported `FATAL` just before failing gets no retry (its limit is set to 0 before Tune decides,
    and set back when the trial starts again, e.g. when the sweep is resumed after the data is mended)."""
    from ray import tune

    store = ResultStore(sweep_dir)

    class StoreCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            trial.max_failures = max_failures
            if (row := store.get(trial.trial_id)) is None or row.status != "TERMINATED":
                store.put(Row(trial.trial_id, "RUNNING", _config_of(trial), paths={"trial_dir": trial.path}))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if FATAL in result:
                trial.max_failures = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            # a trial that finished recorded itself; one the scheduler or the time budget ended did not
            if (row := store.get(trial.trial_id)) is None or row.status != "TERMINATED":
                metrics = {k: v for k, v in (trial.last_result or {}).items()
                           if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
                store.put(Row(trial.trial_id, "STOPPED", _config_of(trial), metrics, {"trial_dir": trial.path}))

        def on_trial_error(self, iteration, trials, trial, **info):
            text = ""
            if trial.error_file and Path(trial.error_file).is_file():  # Ray colours the worker's name: plain text
                text = re.sub(r"\x1b\[[0-9;]*m", "", Path(trial.error_file).read_text())
            log = Path(trial.path) / "error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
            message = (trial.last_result or {}).get(FATAL) or one_line(text)
            store.put(Row(trial.trial_id, "ERROR", _config_of(trial), paths={"trial_dir": trial.path,
                                                                               "log": str(log)}, error=message))

    return StoreCallback()
