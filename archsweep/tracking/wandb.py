"""Weights & Biases: the runs a researcher compares, offline by default.

A sweep writes, all in one W&B group (the sweep's name):
- one run per trial (job_type `trial`; id: the sweep's prefix and Tune's trial id), named after its swept values
  (`K64-L8-gpt2-tiny`) and tagged with its space
  and LM; its config names the swept keys and archsweep's version and commit; the LM's epochs are on the
  `lm/epoch` axis, held-out loss is summarised by its minimum and the generation metrics by their maximum; a table
  of generated cells; its LM as an artifact;
- one run per VQ-VAE stage (job_type `vqvae`), however many trials share it: its epochs on `vqvae/epoch`, the stage
  as an artifact (model.pt, codes.npz, metrics.json) that the trials using it name in their config
  (`vqvae_artifact`). W&B refuses `use_artifact` offline, so `archsweep sync` declares each use once uploaded;
- one sweep-summary run (job_type `sweep-summary`): the results table and the report's plots.
A search file writes one run per search (job_type `search`, archsweep.search.run), round by round.

Offline runs are written under what they describe (`<trial>/wandb/offline-run-*`, `<stage>/wandb/...`); `archsweep
sync` uploads them. `read_offline_run` reads one back from its transaction log (config, history, summary, names,
axes, artifacts), so tests and `archsweep sync --list` can check what a run holds without a W&B server.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from archsweep import __version__, commit
from archsweep.config import get_key
from archsweep.errors import ArchsweepError
from archsweep.layout import RunDir, VQVAEStage
from archsweep.trace import mark
from archsweep.tracking.wandb_log import artifact_files, records, staged_in

log = logging.getLogger(__name__)
# W&B settings every process of a sweep needs (PLATFORM.md: workers do not inherit the driver's WANDB_*).
PASSED_ON = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_SILENT",
             "WANDB_DISABLE_GIT", "WANDB_DISABLE_CODE")


def wandb_env(tracking) -> dict[str, str]:
    env = {"WANDB_MODE": tracking.mode if tracking.wandb else "disabled", "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    env |= {k: os.environ[k] for k in PASSED_ON if k in os.environ and k != "WANDB_MODE"}
    return env


def check_login(tracking) -> None:
    """Online tracking needs a W&B login; without one, say so before any trial runs (W&B would fail in the
    middle of the sweep instead)."""
    if not tracking.wandb or tracking.mode != "online":
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    try:
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        if read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")):
            return
    except Exception:  # this W&B version keeps its login elsewhere: let W&B itself decide
        return
    raise ArchsweepError("tracking.mode=online needs a W&B login: set WANDB_API_KEY or run `wandb login` (the key "
                         "stays in your environment, never in archsweep's files); or use tracking.mode=offline and "
                         "`archsweep sync` later")


def enabled(tracking) -> bool:
    return bool(tracking.wandb) and tracking.mode != "disabled"


def run_id(*parts: str) -> str:
    """A W&B run id from readable parts: characters W&B refuses replaced, at most 64 of them (a hash keeps long
    ids distinct)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
    return text if len(text) <= 64 else f"{text[:55]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def sweep_prefix(name: str, sweep_dir: str | Path) -> str:
    """The id prefix of a sweep's own runs (VQ-VAE stages, summary): its name, and a hash of its directory that
    keeps two sweeps of one name in different storages apart."""
    return run_id(name, hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:6])


SHORT = {"vqvae.codebook_size": "K", "vqvae.seq_len": "L"}  # the papers' names for the two VQ-VAE axes


def value_text(key: str, value) -> str:
    """A swept value as a run name shows it: `K64`, `gpt2-tiny`, `lr=0.000316`."""
    if key in SHORT:
        return f"{SHORT[key]}{value}"
    if isinstance(value, str):
        return Path(value).name if "/" in value else value
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{key.rsplit('.', 1)[-1]}={value}"


def trial_name(config: dict, keys: list[str]) -> str:
    """`K64-L8-gpt2-tiny`: a trial by its swept values, in the sweep's order of keys."""
    return "-".join(value_text(k, get_key(config, k)) for k in keys) or "trial"


@functools.cache
def provenance() -> dict:
    """archsweep's version and git commit (`+dirty` with uncommitted changes), in every run's config: W&B's own
    git capture is off (WANDB_DISABLE_GIT: a run's directory is not archsweep's checkout)."""
    return {"version": __version__, "commit": commit()}


def tags_of(config: dict) -> list[str]:
    """Space and generator: `nasbench201`, `gpt2-tiny` (or `vae`, which has no LM)."""
    model = get_key(config, "vqvae.model")
    return [t for t in (get_key(config, "space"), get_key(config, "lm.name") if model == "vqvae" else model) if t]


# What a reader wants of a curve: its best value. Everything else keeps W&B's default, its last value.
SUMMARIES = {"lm/loss": "min", "lm/heldout_loss": "min", "lm/heldout_perplexity": "min", "vqvae/loss": "min",
             "vqvae/recon_loss": "min", "vqvae/heldout_exact_graph": "max", "search/best_val": "max",
             **{k: "max" for k in ("validity", "uniqueness", "novelty", "valid_unique", "valid_unique_novel")}}


def define_axes(run, stage: str) -> None:
    """`<stage>/*` plotted against `<stage>/epoch` (or `search/query`), and the best-value summaries."""
    axis = "search/query" if stage == "search" else f"{stage}/epoch"
    run.define_metric(axis)
    run.define_metric(f"{stage}/*", step_metric=axis)
    for key, how in SUMMARIES.items():
        if key.startswith(f"{stage}/"):
            run.define_metric(key, step_metric=axis, summary=how)
        elif "/" not in key and stage == "lm":
            run.define_metric(key, summary=how)


# The sweep's driver writes every run, wherever the work ran: no system charts or host metadata of its own machine,
# which would be read as the trial's (`ran_on` in a trial's config names the machines of its stages).
NOT_HERE = {"x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True}


def open_run(tracking, *, id: str, name: str, directory: str | Path, group: str, job_type: str, tags: list[str],
             config: dict):
    """A W&B run (created, or continued when `id` exists), its log on disk within FLUSH_S seconds."""
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    return wandb.init(id=id, name=name, dir=str(directory), project=tracking.project, entity=tracking.entity,
                      group=group, job_type=job_type, tags=[t[:64] for t in tags], mode=tracking.mode,
                      config=config | {"archsweep": provenance()}, resume="allow", reinit="create_new",
                      settings=wandb.Settings(x_transaction_log_flush_interval=FLUSH_S, **NOT_HERE))


def wandb_callback(sweep, sweep_dir: Path) -> list:
    """The Tune callback that mirrors every trial to its own W&B run, or nothing when tracking is off."""
    if not enabled(sweep.tracking):
        return []
    return [_mirror_class()(sweep.tracking, group=sweep.tracking.group or sweep.name, keys=sweep.swept_keys(),
                            prefix=sweep_prefix(sweep.name, sweep_dir))]


# Seconds between writes of a run's log to disk (W&B's default is 15): what a killed driver had logged is on
# disk up to this long before the kill, so `archsweep resume` continues after it.
FLUSH_S = 1.0

# Results Tune adds that say nothing about the trial's model; kept out of the W&B history.
_TUNE_BOOKKEEPING = ("config", "checkpoint_path", "trial_id", "experiment_tag", "date", "hostname", "node_ip",
                     "pid", "timestamp", "done", "should_checkpoint")
# The VQ-VAE stage's per-epoch metrics worth a curve.
_VQVAE_CURVES = ("loss", "recon_loss", "latent_loss", "heldout_exact_graph", "codebook_usage", "perplexity",
                 "graphs_per_s", "lr")
STAGE_MARKER = "wandb-run.json"  # in a VQ-VAE stage's directory once its W&B run is written: {"id", "artifact"}


def _mirror_class():
    """A Tune callback, in the sweep's driver process, keeping one W&B run per trial: id = Tune trial id (a
    resumed trial continues its run), name = its swept values, the trial's config as the run config, every result
    in the history, and the run written straight into the trial's directory (`trial.path`; Tune's `local_path` is
    a staging copy in Ray's session directory, which a later driver does not see). When a trial finishes, its
    VQ-VAE stage gets its own run (once, however many trials share it), and the trial's run its table of generated
    cells and its LM. One process writes all runs, so nothing is lost to Tune stopping a per-trial logging actor
    before W&B has written its last records (what Ray's own WandbLoggerCallback does).

    Steps count the run's results, not Tune's `training_iteration`: a trial restarted after a failure, or
    resumed by `archsweep resume` after the driver died, starts its iterations at 1 again, while its run goes on
    from the last step it logged (read back from its earlier offline runs), so no step is logged twice."""
    from numbers import Number

    from ray import tune

    class WandbMirror(tune.Callback):
        def __init__(self, tracking, group: str, keys: list[str], prefix: str):
            self.tracking, self.group, self.keys, self.prefix = tracking, group, keys, prefix
            self.runs, self.steps, self.stages = {}, {}, {}

        def __getstate__(self):  # live runs stay in this process; a restored sweep reopens them by id
            return {"tracking": self.tracking, "group": self.group, "keys": self.keys, "prefix": self.prefix,
                    "runs": {}, "steps": {}, "stages": {}}

        def _run(self, trial):
            if trial.trial_id not in self.runs:
                config = trial.config.get("trial", trial.config)
                run = self.runs[trial.trial_id] = open_run(
                    self.tracking, id=self._id(trial), name=trial_name(config, self.keys), directory=trial.path,
                    group=self.group, job_type="trial", tags=tags_of(config), config=config | {"swept": self.keys})
                define_axes(run, "lm")
                if trial.trial_id not in self.steps:
                    self.steps[trial.trial_id] = max(last_step(trial.path, self._id(trial)),
                                                     int(getattr(run, "starting_step", 0)) - 1)
            return self.runs[trial.trial_id]

        def _id(self, trial) -> str:
            """The trial's run id: Tune's trial id behind the sweep's prefix, so that sweeps sharing a project
            never write into each other's runs."""
            return run_id(self.prefix, trial.trial_id)

        def on_trial_start(self, iteration, trials, trial, **info):
            # Opened now, while the trial's process starts and its VQ-VAE stage trains: a function trial waits
            # for each of its reports to be taken, so opening the run at the first result would stall it.
            mark("wandb: opening the trial's run")
            self._run(trial)
            mark("wandb: trial's run open")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {k: v for k, v in result.items()
                   if k not in _TUNE_BOOKKEEPING and isinstance(v, Number) and not isinstance(v, bool)}
            run = self._run(trial)
            self.steps[trial.trial_id] += 1
            run.log(row, step=self.steps[trial.trial_id], commit=True)  # on disk now, not at the next step

        def on_trial_complete(self, iteration, trials, trial, **info):
            mark("wandb: logging the trial's outputs")
            run = self._run(trial)
            for key, value in (trial.last_result or {}).items():  # numbers are summarised from the history
                if key not in _TUNE_BOOKKEEPING and isinstance(value, str):
                    run.summary[key] = value
            try:
                self._outputs(run, trial)
            except Exception as exc:  # the trial's results are in the store whatever W&B makes of its files
                log.warning("W&B: the outputs of trial %s were not logged: %s", trial.trial_id, exc)
            self._finish(trial, 0)
            mark("wandb: trial's run finished")

        def _outputs(self, run, trial):
            """The trial's table of generated cells, its LM artifact, its VQ-VAE stage's run and the reference to
            that stage's artifact."""
            import wandb

            done = RunDir.finished(trial.path)
            if not done.metrics.is_file():  # stopped early by the scheduler: it generated nothing
                return
            config = trial.config.get("trial", trial.config)
            ran_on = {stage: json.loads(path.read_text()).get("host") for stage, path in (
                ("vqvae", done.vqvae.metrics), ("lm", done.lm.metrics)) if path.is_file()}
            run.config.update({"ran_on": ran_on}, allow_val_change=True)  # this run is written by the driver
            if done.vqvae.metrics.is_file():
                ref = self._stage(done.vqvae.dir, config)
                if ref:
                    run.config.update({"vqvae_artifact": ref}, allow_val_change=True)
                    if self.tracking.mode == "online":  # offline, `archsweep sync` declares it after the upload
                        run.use_artifact(ref)
            if done.lm.generated.is_file():
                rows = json.loads(done.lm.generated.read_text())
                columns = list(rows[0]) if rows else ["codes", "cell", "valid", "novel", "accuracy"]
                self.steps[trial.trial_id] += 1
                with staged_in(run):
                    run.log({"generated": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                             for r in rows], allow_mixed_types=True)},
                            step=self.steps[trial.trial_id])
            if self.tracking.artifacts and done.lm.finished():
                artifact = wandb.Artifact(run_id(self._id(trial), "lm"), type="lm",
                                          metadata={"trial": run.name, **config.get("lm", {})})
                artifact.add_dir(str(done.lm.model), name="lm", policy="immutable")
                for path in (done.lm.metrics, done.lm.samples, done.lm.generated):
                    if path.is_file():
                        artifact.add_file(str(path), policy="immutable")
                run.log_artifact(artifact)

        def _stage(self, stage_dir: Path, config: dict) -> str | None:
            """The VQ-VAE stage's W&B run, written once (marked in the stage's directory); its artifact's name."""
            if stage_dir in self.stages:
                return self.stages[stage_dir]
            marker = stage_dir / STAGE_MARKER
            if marker.is_file():
                self.stages[stage_dir] = json.loads(marker.read_text()).get("artifact")
                return self.stages[stage_dir]
            self.stages[stage_dir] = ref = log_vqvae_stage(self.tracking, VQVAEStage(stage_dir), self.prefix,
                                                           self.group, config, self.keys)
            return ref

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finish(trial, 1)

        def _finish(self, trial, exit_code: int):
            run = self.runs.pop(trial.trial_id, None)
            if run is not None:
                run.finish(exit_code=exit_code)

        def on_experiment_end(self, trials, **info):
            import wandb

            for trial_id in list(self.runs):
                self.runs.pop(trial_id).finish()
            wandb.teardown()  # wait until every run is written

    return WandbMirror


UPSTREAM = ("space", "seed", "vqvae.", "train.")  # the keys that make a VQ-VAE stage (sweep.run.upstream_key)


def log_vqvae_stage(tracking, stage: VQVAEStage, prefix: str, group: str, config: dict,
                    keys: list[str]) -> str | None:
    """One W&B run for a VQ-VAE stage: its epochs on `vqvae/epoch`, its measured metrics in the summary, the stage
    as an artifact; marks the stage's directory. Returns the artifact's `name:latest` (None without artifacts)."""
    import wandb

    metrics = json.loads(stage.metrics.read_text())
    own = [k for k in keys if k.startswith(UPSTREAM)]
    upstream = {k: v for k, v in metrics.get("config", {}).items() if k in ("space", "seed", "vqvae", "train")}
    name = run_id(prefix, stage.dir.name)
    run = open_run(tracking, id=name, name="vqvae-" + trial_name(config, own) if own else "vqvae",
                   directory=stage.dir, group=group, job_type="vqvae", tags=tags_of(config)[:1] + ["vqvae"],
                   config=upstream | {"swept": own})
    ref = None
    try:
        define_axes(run, "vqvae")
        for row in metrics.get("history", []):
            run.log({f"vqvae/{k}": row[k] for k in ("epoch", *_VQVAE_CURVES) if k in row})
        for key in ("reconstruction_accuracy", "codebook_usage", "perplexity", "train_wall_s", "graphs_per_s"):
            if isinstance(metrics.get(key), (int, float)):
                run.summary[f"vqvae/{key}"] = metrics[key]
        for key, value in (metrics.get("random_codes") or metrics.get("prior_samples") or {}).items():
            run.summary[f"decoded/{key}"] = value
        if tracking.artifacts:
            artifact = wandb.Artifact(name, type="vqvae", metadata={k: metrics.get(k) for k in (
                "reconstruction_accuracy", "codebook_usage", "perplexity")} | {"config": upstream})
            for path in (stage.model, stage.codes, stage.metrics):
                artifact.add_file(str(path), policy="immutable")
            run.log_artifact(artifact)
            if tracking.mode == "online":
                artifact.wait()  # committed before a trial's run declares it uses it
            ref = f"{name}:latest"
    finally:
        run.finish()
    (stage.dir / STAGE_MARKER).write_text(json.dumps({"id": name, "artifact": ref}))
    return ref


def log_sweep_summary(tracking, group: str, prefix: str, table: list[dict], plots: list[Path],
                      directory: Path) -> None:
    """The sweep-summary run: the results table (one row per trial) and the report's plots as images."""
    import wandb

    run = open_run(tracking, id=run_id(prefix, "summary"), name=f"{group} (summary)", directory=directory,
                   group=group, job_type="sweep-summary", tags=["summary"], config={})
    try:
        columns = list(dict.fromkeys(k for r in table for k in r))
        data = [[_cell(r.get(c)) for c in columns] for r in table]
        row = {"results": wandb.Table(columns=columns, data=data, allow_mixed_types=True)}
        row |= {f"plots/{p.stem}": wandb.Image(str(p)) for p in plots if p.suffix == ".png"}
        with staged_in(run):
            run.log(row)
        statuses = [r.get("status") for r in table]
        run.summary["trials"] = len(table)
        run.summary["finished"] = statuses.count("TERMINATED")
        run.summary["stopped"] = statuses.count("STOPPED")
        run.summary["failed"] = statuses.count("ERROR")
    finally:
        run.finish()


def _cell(value):
    """A value a W&B table column holds: numbers, text, flags; anything else as text."""
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def offline_runs(root: str | Path) -> list[Path]:
    """Every offline W&B run directory under `root` (e.g. a sweep directory), oldest first per directory."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir() and not p.is_symlink())


def run_id_of(run_dir: str | Path) -> str:
    """The run id of an offline run directory: its log's name, `run-<id>.wandb` (the directory's name,
    `offline-run-<date>_<time>-<id>`, gets a `-1` suffix when two parts of a run start within one second)."""
    log = next(Path(run_dir).glob("run-*.wandb"), None)
    return log.name[4:-6] if log is not None else Path(run_dir).name.split("-", 3)[-1]


def last_step(root: str | Path | None, run_id: str) -> int:
    """The last step the offline runs of `run_id` under `root` logged; -1 when there are none."""
    if not root or not Path(root).is_dir():
        return -1
    steps = [h["_step"] for p in offline_runs(root) if run_id_of(p) == run_id
             for h in read_offline_run(p)["history"] if "_step" in h]
    return max(steps, default=-1)


def read_offline_run(run_dir: str | Path) -> dict:
    """What an offline run directory holds: {"id", "name", "group", "job_type", "tags", "project", "entity",
    "config", "history": [rows], "summary", "metrics": {name: {"step_metric", "summary"}} (its define_metric
    axes), "artifacts": [{"name", "type", "files", "metadata"}]}."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    out = {"id": run_id_of(run_dir), "name": None, "group": None, "job_type": None, "tags": [], "project": None,
           "entity": None, "config": {}, "history": [], "summary": {}, "metrics": {}, "artifacts": []}
    log = next(run_dir.glob("run-*.wandb"), None)
    if log is None:  # a run W&B has only begun to write
        return out

    def items(update):
        for item in update:
            key = item.key or "/".join(item.nested_key)
            yield key, json.loads(item.value_json)

    for raw in records(log):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a torn tail: everything before it stands
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out["config"].update(items(r.config.update))
            out |= {"name": r.display_name or None, "group": r.run_group or None, "job_type": r.job_type or None,
                    "tags": list(r.tags), "project": r.project or None, "entity": r.entity or None}
        elif kind == "config":
            out["config"].update(items(record.config.update))
        elif kind == "history":
            out["history"].append(dict(items(record.history.item)))
        elif kind == "summary":
            out["summary"].update(items(record.summary.update))
        elif kind == "metric":
            m = record.metric
            how = [k for k in ("min", "max", "mean", "last", "best") if getattr(m.summary, k)]
            out["metrics"][m.name or m.glob_name] = {"step_metric": m.step_metric or None, "summary": how}
        elif kind == "artifact":
            a = record.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "files": [c.path for c in a.manifest.contents],
                                     "metadata": json.loads(a.metadata) if a.metadata else {}})
    out["config"].pop("_wandb", None)
    return out


def synced(run_dir: str | Path) -> bool:
    """Whether `wandb sync` has uploaded this offline run (it leaves `run-<id>.wandb.synced` beside the log)."""
    return any(Path(run_dir).glob("run-*.wandb.synced"))


def sync_plan(root: str | Path, project: str | None = None, entity: str | None = None) -> list[dict]:
    """Where each W&B run under `root` goes: one entry per run id (a resumed run's parts together, oldest first):
    {"id", "name", "job_type", "project", "entity", "dirs", "steps", "synced", "uses", "files"}; `project` and
    `entity` override what the runs recorded. `uses`: the artifacts the run used (recorded offline, declared after
    upload). `files`: {log: [ArtifactFile]}, each artifact file and where it is now, looked for under `root` when
    the directory has moved since the run wrote it."""
    plan: dict[str, dict] = {}
    for run_dir in offline_runs(root):
        data = read_offline_run(run_dir)
        entry = plan.setdefault(data["id"], {"id": data["id"], "name": None, "job_type": None, "dirs": [],
                                             "steps": 0, "synced": True, "uses": [], "files": {},
                                             "project": project, "entity": entity})
        if (log := next(run_dir.glob("run-*.wandb"), None)) is not None:
            entry["files"][log] = artifact_files(log, Path(root).resolve())
        entry["name"] = data["name"] or entry["name"]
        entry["job_type"] = data["job_type"] or entry["job_type"]
        entry["project"] = entry["project"] or data["project"]
        entry["entity"] = entry["entity"] or data["entity"]
        entry["dirs"].append(run_dir)
        entry["steps"] += len(data["history"])
        entry["synced"] &= synced(run_dir)
        ref = data["config"].get("vqvae_artifact")
        if ref and ref not in entry["uses"]:
            entry["uses"].append(ref)
    return list(plan.values())


def sync_command_line(plan: list[dict], project: str | None, entity: str | None, wandb_bin: str = "wandb") -> list[str]:
    """The one `wandb sync` call that uploads every run of the plan (already synced parts are skipped by W&B)."""
    flags = [*(["--project", project] if project else []), *(["--entity", entity] if entity else [])]
    return [wandb_bin, "sync", *flags, *(str(d) for entry in plan for d in entry["dirs"])]


def declare_uses(plan: list[dict]) -> list[str]:
    """After an upload: each run's recorded artifact uses declared through W&B's API (the lineage W&B could not
    record offline). Returns what was declared, `run -> artifact`."""
    import wandb

    api = wandb.Api()
    done = []
    for entry in plan:
        if not entry["uses"]:
            continue
        path = "/".join(p for p in (entry["entity"] or api.default_entity, entry["project"]) if p)
        run = api.run(f"{path}/{entry['id']}")
        for ref in entry["uses"]:
            run.use_artifact(api.artifact(f"{path}/{ref}"))
            done.append(f"{entry['id']} -> {ref}")
    return done
