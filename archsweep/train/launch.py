"""How a stage's loop is launched: in the calling process when one worker does the work and this process holds
what that worker needs, otherwise on Ray Train workers, with restarts decided by archsweep and a torch process
group that listens on the node's Ray address only. The loop sees the same `session()` either way.

A one-worker stage needs no worker group: starting one (a controller, a placement group, a worker process that
imports torch again) took 8-10 s per stage on a 2-core machine, more than the training of a quick trial. Run in the
calling process, the loop keeps its checkpoints in the same place (`out_dir/ray/<name>/checkpoint_*`), so a rerun
resumes from them whichever way either run was launched; a fault there (a killed process, a lost node) is the
caller's to retry, which for a sweep trial is Tune's trial retry (`tune.max_failures`).

Ray Train's own setup (env:// rendezvous) has rank 0 start torch's TCPStore server, which binds every interface
(`::`) whatever address it is given. Here rank 0 binds a socket to its node's Ray address first and hands it to
the store (`master_listen_fd`); the other ranks connect to it as clients. On the embedded local Ray that address
is 127.0.0.1, and the collective libraries are told to use the loopback interface too (gloo would otherwise bind
the address the host name resolves to, NCCL its first network interface); on a cluster they keep their defaults.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psutil
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.torch.config import _TorchBackend

from archsweep.runtime import started_here
from archsweep.trace import mark
from archsweep.train import HISTORY, fatal_error

log = logging.getLogger(__name__)
HEALTH_CHECK_S = 0.25

_STORE: dist.TCPStore | None = None  # rank 0's server, until its process group takes it over


def interface_of(address: str) -> str | None:
    """The network interface that carries `address` on this machine, None if none does."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addrs):
            return name
    return None


def serve_store(world_size: int, timeout_s: float) -> tuple[str, int]:
    """Start the rendezvous store's server on this worker's node address; returns (address, port)."""
    global _STORE
    address = ray.util.get_node_ip_address()
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    listener.bind((address, 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    _STORE = dist.TCPStore(address, port, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                           wait_for_workers=False, master_listen_fd=listener.detach())
    return address, port


def _collectives_on(address: str) -> None:
    """Point gloo and NCCL at the loopback interface when the node's address is loopback (unless set)."""
    if address == "127.0.0.1" and (interface := interface_of(address)):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)


def join_group(backend: str, address: str, port: int, timeout_s: float) -> None:
    """Join the process group whose store rank 0 serves at address:port, with torchrun's variables set."""
    global _STORE
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(context.get_local_rank()),
                      LOCAL_WORLD_SIZE=str(context.get_local_world_size()), NODE_RANK=str(context.get_node_rank()))
    _collectives_on(address)
    if "nccl" in backend:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a stuck collective fails, as under Ray's own
    timeout = timedelta(seconds=timeout_s)
    if rank == 0:
        store, _STORE = _STORE, None  # the process group holds it from here
    else:
        store = dist.TCPStore(address, port, world_size, False, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class NodeAddressBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        address, port = worker_group.execute_single(0, serve_store, len(worker_group), backend_config.timeout_s)
        joins = [worker_group.execute_single_async(rank, join_group, backend_config.backend, address, port,
                                                   backend_config.timeout_s) for rank in range(len(worker_group))]
        ray.get(joins)


class NodeAddressTorchConfig(TorchConfig):
    """TorchConfig for `TorchTrainer(torch_config=...)`: the same process group, its store on the node's address."""

    @property
    def backend_cls(self):
        return NodeAddressBackend


class Forward:
    """Where a stage's epoch reports go besides its checkpoints (a sweep trial sends them on to Tune): called with
    each report when the loop runs in this process; `train_callbacks` when it runs on Ray Train workers, whose
    reports reach this process through Ray Train's callbacks."""

    def __call__(self, metrics: dict) -> None:
        pass

    def train_callbacks(self) -> list:
        return []


class TrainSession:
    """What a loop asks of where it runs, on a Ray Train worker: Ray Train's own answers, and for a run Ray Train
    has no state of (its checkpoints were written in-process), the checkpoint `run_trainer` found."""

    in_process = False

    def __init__(self, loop_config: dict):
        self.resume_from = loop_config.get(RESUME_FROM)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        found = ray.train.get_checkpoint()
        if found is None and self.resume_from:
            found = ray.train.Checkpoint.from_directory(self.resume_from)
        return found

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir)
                         if checkpoint_dir else None)


class LocalSession:
    """The same answers for a loop run in this process as the only worker: its checkpoints are copied into
    `run_dir/checkpoint_<epoch>` (the last `keep`), its reports go to `forward`."""

    rank, world, in_process = 0, 1, True

    def __init__(self, run_dir: Path, use_gpu: bool, forward: Forward | None, keep: int = 2):
        self.run_dir, self.forward, self.keep = run_dir, forward, keep
        self.device = torch.device("cuda", 0) if use_gpu and torch.cuda.is_available() else torch.device("cpu")
        self.latest = latest_checkpoint(run_dir)
        self.metrics: dict | None = None

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return self.latest

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        if checkpoint_dir:
            final = self.run_dir / f"checkpoint_{metrics['epoch']:06d}"
            partial = final.with_name(final.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(checkpoint_dir, partial)
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)  # whole or absent: a process killed while copying leaves only the .partial
            self.latest = ray.train.Checkpoint.from_directory(str(final))
            for old in sorted(self.run_dir.glob("checkpoint_" + "[0-9]" * 6))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.metrics = metrics
        if self.forward is not None:
            self.forward(metrics)


_LOCAL: LocalSession | None = None
RESUME_FROM = "resume_from"  # the loop config's key for a checkpoint Ray Train does not know of


def session(loop_config: dict) -> TrainSession | LocalSession:
    """Where the calling loop runs: this process (`run_trainer` ran it here) or a Ray Train worker."""
    return _LOCAL if _LOCAL is not None else TrainSession(loop_config)


def _epochs_in(directory: Path) -> int:
    try:
        return len(json.loads((directory / HISTORY).read_text()))
    except (OSError, ValueError):
        return -1


def run_dir_of(out_dir: str | Path, name: str) -> Path:
    """Where a stage's run keeps its checkpoints (and, on Ray Train, its run state)."""
    return Path(out_dir).resolve() / "ray" / name


def latest_checkpoint(run_dir: Path) -> ray.train.Checkpoint | None:
    """The checkpoint holding the most epochs under `run_dir`, whether this process or Ray Train wrote it."""
    found = [d for d in run_dir.glob("checkpoint_*") if d.is_dir() and not d.name.endswith(".partial")]
    best = max(found, key=_epochs_in, default=None)
    return ray.train.Checkpoint.from_directory(str(best)) if best is not None and _epochs_in(best) >= 0 else None


def holds(cpus: int, gpus: float) -> bool:
    """Whether this process may do one worker's work itself: it is a Ray task or actor (a sweep trial) that holds
    that worker's resources, or it started the local Ray it is on."""
    if started_here():
        return True
    if not ray.is_initialized():
        return False
    held = ray.get_runtime_context().get_assigned_resources()
    return held.get("CPU", 0.0) >= cpus and held.get("GPU", 0.0) >= gpus


def _group_of_one() -> None:
    """The process group of a world of one (DeepSpeed needs one), made once per process and kept: DeepSpeed holds
    on to the groups it derives from it, so a second stage in this process must find the same one."""
    if dist.is_initialized():
        return
    _collectives_on(ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1")
    # both backends where there is a GPU: a CPU stage may make the group, a GPU stage use it later
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def run_here(loop: Callable[[dict], None], loop_config: dict, run_dir: Path, cpus: int, use_gpu: bool,
             forward: Forward | None):
    """Run `loop` in this process as a world of one and return a Ray `Result` as Ray Train would."""
    global _LOCAL
    run_dir.mkdir(parents=True, exist_ok=True)
    local = LocalSession(run_dir, use_gpu, forward)
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", NODE_RANK="0")  # torchrun's
    _group_of_one()
    torch.set_num_threads(cpus)
    _LOCAL = local
    try:
        loop(loop_config)
    finally:
        _LOCAL = None
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved_env)
    metrics = local.metrics
    if metrics is None and local.latest is not None:  # finished before: nothing left to train, nothing reported
        metrics = (json.loads((Path(local.latest.path) / HISTORY).read_text()) or [None])[-1]
    return ray.train.Result(metrics=metrics, checkpoint=local.latest, error=None, path=str(run_dir))


def run_trainer(loop: Callable[[dict], None], loop_config: dict, *, name: str, out_dir: str | Path, num_workers: int,
                cpus_per_worker: int, use_gpu: bool, max_failures: int, gpus_per_worker: float = 1.0,
                log_level: str = "WARNING", forward: Forward | None = None, in_process: bool | None = None):
    """Run `loop` as `num_workers` data-parallel workers and return Ray's `Result`. The run's state lives in
    `out_dir/ray/<name>`, so the same call resumes an interrupted run from its last checkpoint, and a finished
    one is not trained again. `forward`: where each epoch's report goes too (a sweep trial sends it to Tune).

    One worker runs in this process when this process holds what it needs (`holds`; `in_process` decides
    instead when given); otherwise the loop runs on Ray Train workers (DDP process group: gloo on CPU, NCCL on
    GPUs). Restarts are then decided here rather than by Ray Train's FailureConfig, which retries every error
    alike: a fault restarts the worker group from the last checkpoint (up to `max_failures` times, -1: always),
    while an archsweep error raised by a worker ends the run at once and is raised here as itself."""
    run_dir = run_dir_of(out_dir, name)
    if in_process is None:
        in_process = num_workers == 1 and holds(cpus_per_worker, gpus_per_worker if use_gpu else 0.0)
    if in_process:
        mark(f"{name}: in process")
        result = run_here(loop, loop_config, run_dir, cpus_per_worker, use_gpu, forward)
        mark(f"{name}: fit returned")
        return result
    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if use_gpu else {})
    # How often Ray Train's controller looks at its workers (Ray's default: 2 s): a stage ends that much sooner
    # after its last epoch, seconds per stage once the epochs take seconds. Ray passes it on to the controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_S))
    failures = 0
    while True:
        latest = latest_checkpoint(run_dir)
        trainer = TorchTrainer(
            loop,
            train_loop_config=loop_config | {RESUME_FROM: latest.path if latest else None},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
            torch_config=NodeAddressTorchConfig(),
            run_config=RunConfig(name=name, storage_path=str(Path(out_dir).resolve() / "ray"),
                                 failure_config=FailureConfig(max_failures=0),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=LoggingConfig(log_level=log_level),
                                 callbacks=forward.train_callbacks() if forward else []),
        )
        try:
            mark(f"{name}: launch")
            result = trainer.fit()
            mark(f"{name}: fit returned")
            return result
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
