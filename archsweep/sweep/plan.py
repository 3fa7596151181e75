"""How a sweep fits a cluster: what one trial holds at its peak, and how many trials can run at once. Pure
arithmetic on the sweep and the cluster's resources, so `archsweep sweep --check` answers without starting Ray."""

from __future__ import annotations

import math

from archsweep.config import Config, from_dict
from archsweep.errors import ArchsweepError
from archsweep.sweep.spec import Sweep, trial_configs


class SweepError(ArchsweepError):
    pass


def trial_resources(cfg: Config) -> dict[str, float]:
    """What one trial holds at its peak: its stages run one after another, so the larger of the two."""
    stages = [(cfg.train.num_workers, cfg.train.cpus_per_worker, cfg.train.use_gpu, cfg.train.gpus_per_worker)]
    if cfg.vqvae.model == "vqvae":
        stages.append((cfg.lm.num_workers, cfg.lm.cpus_per_worker, cfg.lm.use_gpu, cfg.lm.gpus_per_worker))
    return {"CPU": max(n * c for n, c, _, _ in stages),
            "GPU": max((n * g if gpu else 0.0) for n, _, gpu, g in stages),
            "worker_CPU": max(c for _, c, _, _ in stages),
            "worker_GPU": max((g if gpu else 0.0) for _, _, gpu, g in stages)}


def plan_concurrency(sweep: Sweep, cluster: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many trials can run at once on this cluster; a clear error when a trial can never run on it
    (Ray Train would otherwise wait for resources for ever and the sweep would hang)."""
    worst = {"CPU": 0.0, "GPU": 0.0, "worker_CPU": 0.0, "worker_GPU": 0.0}
    for config in trial_configs(sweep):
        for key, value in trial_resources(from_dict(config)).items():
            worst[key] = max(worst[key], value)
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if worst["CPU"] > have_cpu or worst["GPU"] > have_gpu:
        raise SweepError(
            f"a trial of sweep {sweep.name!r} needs {worst['CPU']:g} CPUs and {worst['GPU']:g} GPUs at "
            f"once (num_workers x cpus_per_worker / gpus_per_worker of train.* or lm.*), but the cluster has "
            f"{have_cpu:g} CPUs and {have_gpu:g} GPUs. Lower train/lm.num_workers or *_per_worker, or use a "
            "bigger cluster.")
    if not any(n.get("CPU", 0) >= worst["worker_CPU"] and n.get("GPU", 0) >= worst["worker_GPU"] for n in nodes):
        raise SweepError(f"no node of the cluster fits one Ray Train worker of sweep {sweep.name!r} "
                         f"({worst['worker_CPU']:g} CPUs, {worst['worker_GPU']:g} GPUs)")
    fits = math.floor((have_cpu + 1e-9) / worst["CPU"])
    if worst["GPU"]:
        fits = min(fits, math.floor((have_gpu + 1e-9) / worst["GPU"]))
    wanted = sweep.tune.max_concurrent_trials
    return max(1, min(fits, wanted) if wanted else fits)
