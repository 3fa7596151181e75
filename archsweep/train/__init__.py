"""Ray Train loops, one readable file per model, and the one way they are launched."""

from __future__ import annotations

import json
from pathlib import Path

from archsweep.errors import ArchsweepError

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
