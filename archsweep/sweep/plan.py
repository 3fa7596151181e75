"""How a sweep fits a cluster: what one trial holds at its peak, and how many trials can run at once. Pure
arithmetic on the sweep and the cluster's capacity (archsweep.capacity: the nodes it has, or on an autoscaling
cluster the nodes it can become), so `archsweep sweep --check` answers without starting Ray."""

from __future__ import annotations

import math

from archsweep.capacity import Capacity
from archsweep.config import Config, from_dict, get_key
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


def trial_holds(cfg: Config) -> dict[str, float]:
    """What a trial's own process holds for its whole run (Tune's resources for it). When every training stage
    takes one worker, the stages train in that process (train/launch.py), which then holds the worker's CPUs and
    GPUs; otherwise it only waits on its Ray Train workers and holds no CPU (a bundle of nothing at all is
    rejected, hence a little memory), so that a 2-worker stage never waits on a CPU its own trial holds."""
    need = trial_resources(cfg)
    workers = [cfg.train.num_workers] + ([cfg.lm.num_workers] if cfg.vqvae.model == "vqvae" else [])
    if max(workers) > 1:
        return {"cpu": 0, "memory": 64 * 2**20}
    return {"cpu": need["worker_CPU"]} | ({"gpu": need["worker_GPU"]} if need["worker_GPU"] else {})


def _label(sweep: Sweep, index: int, config: dict, total: int) -> str:
    """`trial 3 (lm.num_workers=4)`: a trial by its position and its swept values."""
    values = [f"{key}={get_key(config, key)}"
              for key in (k for k, spec in sweep.axes.items() if "grid" in spec)]  # a sampled axis has no value yet
    return f"trial {index + 1} of {total}" + (f" ({', '.join(values)})" if values else "")


def plan_concurrency(sweep: Sweep, capacity: Capacity) -> int:
    """How many trials can run at once on this cluster, fully scaled up where it autoscales; a clear error,
    naming the trial and what the cluster has, when a trial can never run on it (Ray Train would otherwise wait
    for resources for ever and the sweep would hang)."""
    nodes, totals = capacity.nodes(), capacity.totals()
    have_cpu, have_gpu = totals.get("CPU", 0.0), totals.get("GPU", 0.0)
    worst = {"CPU": 0.0, "GPU": 0.0}
    configs = trial_configs(sweep)
    for index, config in enumerate(configs):
        need, trial = trial_resources(from_dict(config)), _label(sweep, index, config, len(configs))
        if need["CPU"] > have_cpu or need["GPU"] > have_gpu:
            raise SweepError(
                f"{trial} of sweep {sweep.name!r} needs {need['CPU']:g} CPUs and "
                f"{need['GPU']:g} GPUs at once (num_workers x cpus_per_worker / gpus_per_worker of train.* or lm.*), "
                f"but the cluster has {have_cpu:g} CPUs and {have_gpu:g} GPUs at most ({capacity.describe()}). "
                "Lower train/lm.num_workers or *_per_worker, or use a bigger cluster.")
        if not any(n.get("CPU", 0) >= need["worker_CPU"] and n.get("GPU", 0) >= need["worker_GPU"] for n in nodes):
            raise SweepError(
                f"no node of the cluster fits one Ray Train worker of {trial} of sweep "
                f"{sweep.name!r} ({need['worker_CPU']:g} CPUs, {need['worker_GPU']:g} GPUs): {capacity.describe()}. "
                "Lower *_per_worker, or add a node type that holds it.")
        worst = {k: max(worst[k], need[k]) for k in worst}
    fits = math.floor((have_cpu + 1e-9) / worst["CPU"])
    if worst["GPU"]:
        fits = min(fits, math.floor((have_gpu + 1e-9) / worst["GPU"]))
    wanted = sweep.tune.max_concurrent_trials
    return max(1, min(fits, wanted) if wanted else fits)
