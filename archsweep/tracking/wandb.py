"""Weights & Biases mirroring: one W&B run per trial, written by the sweep's driver, offline by default.

Offline runs are written under each trial directory (`<trial>/wandb/offline-run-*`); `archsweep sync` uploads
them when the user has a key. `read_offline_run` reads one back (config, history, summary) from its transaction
log, so tests and `archsweep sync --list` can check what a run holds without a W&B server.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# W&B settings every process of a sweep needs (PLATFORM.md: workers do not inherit the driver's WANDB_*).
PASSED_ON = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_SILENT",
             "WANDB_DISABLE_GIT", "WANDB_DISABLE_CODE")


def wandb_env(tracking) -> dict[str, str]:
    import os

    env = {"WANDB_MODE": tracking.mode if tracking.wandb else "disabled", "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    env |= {k: os.environ[k] for k in PASSED_ON if k in os.environ and k != "WANDB_MODE"}
    return env


def wandb_callback(sweep, sweep_dir: Path) -> list:
    """The Tune callback that mirrors every trial to its own W&B run, or nothing when tracking is off."""
    if not sweep.tracking.wandb or sweep.tracking.mode == "disabled":
        return []
    return [_mirror_class()(project=sweep.tracking.project, entity=sweep.tracking.entity,
                            group=sweep.tracking.group or sweep.name, mode=sweep.tracking.mode)]


# Results Tune adds that say nothing about the trial's model; kept out of the W&B history.
_TUNE_BOOKKEEPING = ("config", "checkpoint_path", "trial_id", "experiment_tag", "date", "hostname", "node_ip",
                     "pid", "timestamp", "done", "should_checkpoint")


def _mirror_class():
    """A Tune callback, in the sweep's driver process, keeping one W&B run per trial: id = Tune trial id (a
    resumed trial continues its run), the trial's config as the run config, every result in the history at
    step = Tune's training_iteration, the final metrics in the summary, and the run written under the trial
    directory. One process writes all runs, so nothing is lost to Tune stopping a per-trial logging actor
    before W&B has written its last records (what Ray's own WandbLoggerCallback does)."""
    from numbers import Number

    from ray import tune

    class WandbMirror(tune.Callback):
        def __init__(self, project: str, entity: str | None, group: str, mode: str):
            self.settings = {"project": project, "entity": entity, "group": group, "mode": mode}
            self.runs = {}

        def __getstate__(self):  # live runs stay in this process; a restored sweep reopens them by id
            return {"settings": self.settings, "runs": {}}

        def _run(self, trial):
            import wandb

            if trial.trial_id not in self.runs:
                config = trial.config.get("trial", trial.config)
                self.runs[trial.trial_id] = wandb.init(
                    id=trial.trial_id, name=str(trial), dir=trial.local_path, config=config, resume="allow",
                    reinit="create_new", **self.settings)
            return self.runs[trial.trial_id]

        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {k: v for k, v in result.items()
                   if k not in _TUNE_BOOKKEEPING and isinstance(v, Number) and not isinstance(v, bool)}
            self._run(trial).log(row, step=int(result.get("training_iteration", 0)))

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
    """Every offline W&B run directory under `root` (e.g. a sweep directory)."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir() and not p.is_symlink())


_BLOCK, _HEADER = 32768, 7  # the transaction log: LevelDB-style 32 KiB blocks of [crc32c, length, type] records


def _records(path: Path):
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
    log = next(run_dir.glob("run-*.wandb"))
    out = {"id": log.stem.removeprefix("run-"), "config": {}, "history": [], "summary": {}}

    def items(update):
        for item in update:
            key = item.key or "/".join(item.nested_key)
            yield key, json.loads(item.value_json)

    for raw in _records(log):
        record = pb.Record()
        record.ParseFromString(raw)
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
