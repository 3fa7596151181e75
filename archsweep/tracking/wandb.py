"""Weights & Biases mirroring: one W&B run per trial, written by the sweep's driver, offline by default.

Offline runs are written under each trial directory (`<trial>/wandb/offline-run-*`); `archsweep sync` uploads
them when the user has a key. `read_offline_run` reads one back (config, history, summary) from its transaction
log, so tests and `archsweep sync --list` can check what a run holds without a W&B server.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from archsweep.errors import ArchsweepError

# W&B settings every process of a sweep needs (PLATFORM.md: workers do not inherit the driver's WANDB_*).
PASSED_ON = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_SILENT",
             "WANDB_DISABLE_GIT", "WANDB_DISABLE_CODE")


def wandb_env(tracking) -> dict[str, str]:
    import os

    env = {"WANDB_MODE": tracking.mode if tracking.wandb else "disabled", "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    env |= {k: os.environ[k] for k in PASSED_ON if k in os.environ and k != "WANDB_MODE"}
    return env


def check_login(tracking) -> None:
    """Online tracking needs a W&B login; without one, say so before any trial runs (W&B would fail in the
    middle of the sweep instead)."""
    import os

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


def wandb_callback(sweep, sweep_dir: Path) -> list:
    """The Tune callback that mirrors every trial to its own W&B run, or nothing when tracking is off."""
    if not sweep.tracking.wandb or sweep.tracking.mode == "disabled":
        return []
    return [_mirror_class()(project=sweep.tracking.project, entity=sweep.tracking.entity,
                            group=sweep.tracking.group or sweep.name, mode=sweep.tracking.mode)]


# Seconds between writes of a run's log to disk (W&B's default is 15): what a killed driver had logged is on
# disk up to this long before the kill, so `archsweep resume` continues after it.
FLUSH_S = 1.0

# Results Tune adds that say nothing about the trial's model; kept out of the W&B history.
_TUNE_BOOKKEEPING = ("config", "checkpoint_path", "trial_id", "experiment_tag", "date", "hostname", "node_ip",
                     "pid", "timestamp", "done", "should_checkpoint")


def _mirror_class():
    """A Tune callback, in the sweep's driver process, keeping one W&B run per trial: id = Tune trial id (a
    resumed trial continues its run), the trial's config as the run config, every result in the history, the
    final metrics in the summary, and the run written straight into the trial's directory (`trial.path`; Tune's
    `local_path` is a staging copy in Ray's session directory, which a later driver does not see). One process
    writes all runs, so nothing is lost to Tune stopping a per-trial logging actor before W&B has written its
    last records (what Ray's own WandbLoggerCallback does).

    Steps count the run's results, not Tune's `training_iteration`: a trial restarted after a failure, or
    resumed by `archsweep resume` after the driver died, starts its iterations at 1 again, while its run goes on
    from the last step it logged (read back from its earlier offline runs), so no step is logged twice."""
    from numbers import Number

    from ray import tune

    class WandbMirror(tune.Callback):
        def __init__(self, project: str, entity: str | None, group: str, mode: str):
            self.settings = {"project": project, "entity": entity, "group": group, "mode": mode}
            self.runs, self.steps = {}, {}

        def __getstate__(self):  # live runs stay in this process; a restored sweep reopens them by id
            return {"settings": self.settings, "runs": {}, "steps": {}}

        def _run(self, trial):
            import wandb

            if trial.trial_id not in self.runs:
                config = trial.config.get("trial", trial.config)
                self.runs[trial.trial_id] = wandb.init(
                    id=trial.trial_id, name=str(trial), dir=trial.path, config=config, resume="allow",
                    reinit="create_new", settings=wandb.Settings(x_transaction_log_flush_interval=FLUSH_S),
                    **self.settings)
                if trial.trial_id not in self.steps:
                    self.steps[trial.trial_id] = max(last_step(trial.path, trial.trial_id),
                                                     int(getattr(self.runs[trial.trial_id], "starting_step", 0)) - 1)
            return self.runs[trial.trial_id]

        def on_trial_start(self, iteration, trials, trial, **info):
            # Opened now, while the trial's process starts and its VQ-VAE stage trains: a function trial waits
            # for each of its reports to be taken, so opening the run at the first result would stall it.
            self._run(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {k: v for k, v in result.items()
                   if k not in _TUNE_BOOKKEEPING and isinstance(v, Number) and not isinstance(v, bool)}
            run = self._run(trial)
            self.steps[trial.trial_id] += 1
            run.log(row, step=self.steps[trial.trial_id], commit=True)  # on disk now, not at the next step

        def on_trial_complete(self, iteration, trials, trial, **info):
            run = self._run(trial)
            for key, value in (trial.last_result or {}).items():
                if key not in _TUNE_BOOKKEEPING and isinstance(value, (Number, str)):
                    run.summary[key] = value
            self._finish(trial, 0)

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


def offline_runs(root: str | Path) -> list[Path]:
    """Every offline W&B run directory under `root` (e.g. a sweep directory), oldest first per directory."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir() and not p.is_symlink())


def run_id_of(run_dir: str | Path) -> str:
    """The run id of an `offline-run-<date>_<time>-<id>` directory (ids may hold dashes)."""
    return Path(run_dir).name.split("-", 3)[-1]


def last_step(root: str | Path | None, run_id: str) -> int:
    """The last step the offline runs of `run_id` under `root` logged; -1 when there are none."""
    if not root or not Path(root).is_dir():
        return -1
    steps = [h["_step"] for p in offline_runs(root) if p.name.endswith(f"-{run_id}")
             for h in read_offline_run(p)["history"] if "_step" in h]
    return max(steps, default=-1)


_BLOCK, _HEADER = 32768, 7  # the transaction log: LevelDB-style 32 KiB blocks of [crc32c, length, type] records


def _records(path: Path):
    """The records of a transaction log; a record cut off by a killed writer ends it (what precedes is kept)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if len(chunk) < length:
            return
        pos += _HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # full record, or last fragment
            yield pending
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict:
    """{"id", "config", "history": [rows], "summary"} of an offline run directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    out = {"id": run_id_of(run_dir), "config": {}, "history": [], "summary": {}}
    log = next(run_dir.glob("run-*.wandb"), None)
    if log is None:  # a run W&B has only begun to write
        return out

    def items(update):
        for item in update:
            key = item.key or "/".join(item.nested_key)
            yield key, json.loads(item.value_json)

    for raw in _records(log):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a torn tail: everything before it stands
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["config"].update(items(record.run.config.update))
        elif kind == "config":
            out["config"].update(items(record.config.update))
        elif kind == "history":
            out["history"].append(dict(items(record.history.item)))
        elif kind == "summary":
            out["summary"].update(items(record.summary.update))
    out["config"].pop("_wandb", None)
    return out
