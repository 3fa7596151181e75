"""Ray Train loops, one readable file per model, and the one way they are launched."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


HEALTH_CHECK_S = 0.25
HISTORY = "history.json"  # every epoch's report so far, in each checkpoint (Ray keeps only checkpointed reports)


def read_history(directory: str | Path) -> list[dict]:
    """The epoch reports saved with a checkpoint directory ([] for one written before histories were kept)."""
    import json

    path = Path(directory) / HISTORY
    return json.loads(path.read_text()) if path.is_file() else []


def write_history(directory: str | Path, history: list[dict]) -> None:
    import json

    (Path(directory) / HISTORY).write_text(json.dumps(history))


def history(result):
    """Every epoch's metrics of a finished run (resumed runs included) as a DataFrame, from its last checkpoint:
    Ray's `Result.metrics_dataframe` holds only the epochs that wrote a checkpoint."""
    import pandas as pd

    with result.checkpoint.as_directory() as directory:
        return pd.DataFrame(read_history(directory))


def fatal_error(error: BaseException) -> BaseException | None:
    """The archsweep error behind a failed Ray Train run (bad data, bad config, an unreadable checkpoint), which no
    restart can fix; None for faults (a dead worker, a lost node), which a restart from the last checkpoint can."""
    from archsweep.errors import ArchsweepError

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
