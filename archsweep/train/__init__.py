"""Ray Train loops, one readable file per model, and the one way they are launched."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from archsweep.errors import ArchsweepError

log = logging.getLogger(__name__)


HEALTH_CHECK_S = 0.25
HISTORY = "history.json"  # every epoch's report so far, in each checkpoint (Ray keeps only checkpointed reports)
RUN_CONFIG = "config.json"  # the config a checkpoint was trained with (the LM's, beside DeepSpeed's files)


def host() -> str:
    """This machine as a person reads it, `name (address)`: where a stage ran, for reports and W&B."""
    import socket

    import ray

    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


def read_history(directory: str | Path) -> list[dict]:
    """The epoch reports saved with a checkpoint directory ([] for one written before histories were kept)."""
    path = Path(directory) / HISTORY
    return json.loads(path.read_text()) if path.is_file() else []


def write_history(directory: str | Path, history: list[dict]) -> None:
    (Path(directory) / HISTORY).write_text(json.dumps(history))


def write_run_config(directory: str | Path, config: dict) -> None:
    """The run's config beside a checkpoint, readable before the checkpoint itself is loaded."""
    (Path(directory) / RUN_CONFIG).write_text(json.dumps(config))


def read_run_config(directory: str | Path) -> dict | None:
    path = Path(directory) / RUN_CONFIG
    return json.loads(path.read_text()) if path.is_file() else None


def history(result):
    """Every epoch's metrics of a finished run (resumed runs included) as a DataFrame, from its last checkpoint:
    Ray's `Result.metrics_dataframe` holds only the epochs that wrote a checkpoint."""
    import pandas as pd

    with result.checkpoint.as_directory() as directory:
        return pd.DataFrame(read_history(directory))


def flat(values: list[float], patience: int, min_delta: float, mode: str = "max", min_epochs: int = 0) -> bool:
    """Whether a held-out curve has plateaued: its last `patience` epochs gained no more than `min_delta` on its
    best before them, after at least `min_epochs` epochs (a curve can sit flat at its start before it rises: NAS-
    Bench-201's VQ-VAE held-out reconstruction read 0.06 %, 0.06 %, 25 %, 100 % over its first four epochs). Early
    stopping stops at the first epoch where this holds; reports call a run "plateaued" when it holds at its end.

    >>> flat([0.5, 0.8, 0.9, 0.9, 0.9005, 0.9], patience=3, min_delta=0.001)
    True
    >>> flat([0.0, 0.0, 0.0, 0.0], patience=3, min_delta=0.001, min_epochs=5)
    False
    >>> flat([3.0, 2.0, 1.5, 1.4], patience=2, min_delta=0.01, mode="min")
    False
    """
    if len(values) <= patience or len(values) < min_epochs:
        return False
    sign = 1.0 if mode == "max" else -1.0
    return max(sign * v for v in values[-patience:]) <= max(sign * v for v in values[:-patience]) + min_delta


# the held-out curve each stage is judged on, and whether higher is better
CURVES = {"vqvae": ("heldout_exact_graph", "max"), "lm": ("heldout_loss", "min")}


def plateaued(stage: str, history: list[dict], settings) -> bool:
    """Whether a stage's epoch reports (`history`) end on a plateau of its held-out curve, by the stage's settings
    (`train` or `lm`: patience, min_delta, min_epochs)."""
    key, mode = CURVES[stage]
    return flat([row[key] for row in history if key in row], settings.patience, settings.min_delta, mode,
                settings.min_epochs)


# what a checkpoint was trained on: resuming it under other values of these would continue another model
VQVAE_RUN_KEYS = ("space", "seed", "vqvae", "train.dataset_size", "train.dataset_seed", "train.train_fraction")
LM_RUN_KEYS = (*VQVAE_RUN_KEYS, "lm.name", "lm.lora")


def _leaves(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        out |= _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def changed_keys(saved: dict, current: dict, keys: tuple[str, ...]) -> list[str]:
    """The config keys at or under `keys` whose values differ between a checkpoint's config and this run's
    (a key missing from an older checkpoint is not a difference)."""
    old, new = _leaves(saved), _leaves(current)
    under = [k for k in new if any(k == top or k.startswith(top + ".") for top in keys)]
    return sorted(k for k in under if k in old and old[k] != new[k])


def refuse_other_run(saved: dict | None, current: dict, keys: tuple[str, ...], run_dir: str | Path) -> None:
    """Raise when an output directory's checkpoint was trained under another configuration: resuming it would
    silently continue (or, finished, return) a different model."""
    changed = changed_keys(saved or {}, current, keys)
    if changed:
        old, new = _leaves(saved), _leaves(current)
        diff = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed[:5])
        raise ArchsweepError(f"{run_dir} holds a checkpoint trained with other settings ({diff}); resuming it would "
                             "continue that run. Use another output directory, or delete this one to train anew.")


def fatal_error(error: BaseException) -> BaseException | None:
    """The archsweep error behind a failed Ray Train run (bad data, bad config, an unreadable checkpoint), which no
    restart can fix; None for faults (a dead worker, a lost node), which a restart from the last checkpoint can."""
    if isinstance(error, ArchsweepError):
        return error
    for failure in (getattr(error, "worker_failures", None) or {}).values():
        if isinstance(failure, ArchsweepError):
            return failure
    return None


def run_trainer(loop: Callable[[dict], None], loop_config: dict, *, name: str, out_dir: str | Path, num_workers: int,
                cpus_per_worker: int, use_gpu: bool, max_failures: int, gpus_per_worker: float = 1.0,
                log_level: str = "WARNING", callbacks: list | None = None):
    """Run `loop` on `num_workers` Ray Train workers (DDP process group: gloo on CPU, NCCL on GPUs) and return
    Ray's `Result`. The run's state lives in `out_dir/ray/<name>`, so the same call resumes an interrupted run
    from its last checkpoint, and a finished one is not trained again. `callbacks`: Ray Train callbacks, e.g. the
    one a sweep trial uses to forward each epoch's report to Tune.

    Restarts are decided here rather than by Ray Train's FailureConfig, which retries every error alike: a fault
    restarts the worker group from the last checkpoint (up to `max_failures` times, -1: always), while an
    archsweep error raised by a worker ends the run at once and is raised here as itself."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from archsweep.train.group import NodeAddressTorchConfig

    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if use_gpu else {})
    # How often Ray Train's controller looks at its workers (Ray's default: 2 s): a stage ends that much sooner
    # after its last epoch, seconds per stage once the epochs take seconds. Ray passes it on to the controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_S))
    failures = 0
    while True:
        trainer = TorchTrainer(
            loop,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
            torch_config=NodeAddressTorchConfig(),
            run_config=RunConfig(name=name, storage_path=str(Path(out_dir).resolve() / "ray"),
                                 failure_config=FailureConfig(max_failures=0),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=LoggingConfig(log_level=log_level), callbacks=callbacks or []),
        )
        try:
            return trainer.fit()
        except TrainingFailedError as exc:
            fatal = fatal_error(exc)
            if fatal is not None:
                raise fatal from None
            failures += 1
            if 0 <= max_failures < failures:
                raise
            log.warning("%s stage: the worker group failed (%s); restarting it from the last checkpoint "
                        "(restart %d of %s)", name, str(exc).strip().splitlines()[-1][:200], failures,
                        "unlimited" if max_failures < 0 else max_failures)
