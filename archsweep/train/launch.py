"""How a stage's loop is launched: Ray Train workers, restarts decided by archsweep, and a torch process group
that listens on the node's Ray address only.

Ray Train's own setup (env:// rendezvous) has rank 0 start torch's TCPStore server, which binds every interface
(`::`) whatever address it is given. Here rank 0 binds a socket to its node's Ray address first and hands it to
the store (`master_listen_fd`); the other ranks connect to it as clients. On the embedded local Ray that address
is 127.0.0.1, and the collective libraries are told to use the loopback interface too (gloo would otherwise bind
the address the host name resolves to, NCCL its first network interface); on a cluster they keep their defaults.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psutil
import ray
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.torch.config import _TorchBackend

from archsweep.trace import mark
from archsweep.train import fatal_error

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


def join_group(backend: str, address: str, port: int, timeout_s: float) -> None:
    """Join the process group whose store rank 0 serves at address:port, with torchrun's variables set."""
    global _STORE
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(context.get_local_rank()),
                      LOCAL_WORLD_SIZE=str(context.get_local_world_size()), NODE_RANK=str(context.get_node_rank()))
    if address == "127.0.0.1" and (interface := interface_of(address)):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
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
