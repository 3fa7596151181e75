"""Ray Train loops, one readable file per model, and the one way they are launched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def run_trainer(loop: Callable[[dict], None], loop_config: dict, *, name: str, out_dir: str | Path, num_workers: int,
                cpus_per_worker: int, use_gpu: bool, max_failures: int, gpus_per_worker: float = 1.0,
                log_level: str = "WARNING", callbacks: list | None = None):
    """Run `loop` on `num_workers` Ray Train workers (DDP process group: gloo on CPU, NCCL on GPUs) and return
    Ray's `Result`. The run's state lives in `out_dir/ray/<name>`, so the same call resumes an interrupted run
    from its last checkpoint, and a finished one is not trained again. `callbacks`: Ray Train callbacks, e.g. the
    one a sweep trial uses to forward each epoch's report to Tune."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str(Path(out_dir).resolve() / "ray"),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             logging_config=LoggingConfig(log_level=log_level), callbacks=callbacks or []),
    )
    return trainer.fit()
