"""Multi-process training with PyTorch DistributedDataParallel, launched through torchrun.

``train.nproc: N`` makes the train stage start itself again under ``torch.distributed.run``
(torchrun) with N processes: gloo on CPU, NCCL on GPUs (one per process). Every process holds the
decoded data, draws the same batch order, and trains on its share of each batch; gradients are
averaged by DDP, so N processes take the same optimizer steps as one process on the whole batch.
Validation outputs are gathered from all processes, so every process computes the same metrics
and takes the same early-stopping and best-epoch decisions. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from visionpipe.core.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  # the processes on this node, which share its cores

    def threads(self, num_threads: int, cores: int) -> int:
        """Threads per process: ``num_threads`` (0: all ``cores``) shared between this node's
        processes (not the whole job's: every node has its own cores)."""
        return max(1, (num_threads or cores) // self.local_world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's share of a batch of indices (every world-th, from its rank)."""
        return idx[self.rank :: self.world] if self.active else idx

    def gather(self, values: torch.Tensor, total: int) -> torch.Tensor:
        """Undo :meth:`shard` over a whole split: every process gets all ``total`` rows in
        their original order (gloo and NCCL both gather equal-sized tensors, so pad first)."""
        if not self.active:
            return values
        rows = -(-total // self.world)
        padded = torch.zeros((rows, *values.shape[1:]), dtype=values.dtype)
        padded[: len(values)] = values
        device = torch.device("cuda", self.local_rank) if backend() == "nccl" else None
        parts = [torch.empty_like(padded, device=device) for _ in range(self.world)]
        torch_dist.all_gather(parts, padded.to(device) if device else padded)
        out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
        for rank, part in enumerate(parts):
            out[rank :: self.world] = part.cpu()[: len(range(rank, total, self.world))]
        return out

    def sum(self, *values: float) -> list[float]:
        """Sum of each value over all processes."""
        if not self.active:
            return list(values)
        device = torch.device("cuda", self.local_rank) if backend() == "nccl" else None
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.cpu().tolist()


def backend() -> str:
    return "nccl" if torch.cuda.is_available() and torch_dist.is_nccl_available() else "gloo"


def launched() -> bool:
    """Whether this process was started by torchrun."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def capacity(device: torch.device) -> tuple[int, str]:
    """How many processes the device kind can take: GPUs, or CPU cores."""
    if device.type == "cuda":
        return torch.cuda.device_count(), "CUDA device(s)"
    return len(os.sched_getaffinity(0)), "CPU core(s)"


def check_nproc(nproc: int, device: torch.device) -> None:
    """One clear line, before any work, when there are fewer GPUs or cores than processes."""
    available, what = capacity(device)
    if nproc > available:
        raise UserError(
            f"train.nproc: {nproc} processes but this machine has {available} {what} "
            f"on {device.type}; use at most {available}"
        )


def relaunch(nproc: int, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` under torchrun with ``nproc`` processes on this node.

    On several nodes, start the stage command yourself with ``torchrun --nnodes ...``: a process
    that torchrun started does not relaunch.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *argv,
    ]
    log.info("train.nproc %d: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def init() -> Dist:
    """Join the process group torchrun set up (no-op in a single process)."""
    if not launched():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if backend() == "nccl":
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend())
    log.info("process %d of %d, %d on this node (%s)", rank, world, local_world, backend())
    return Dist(rank, world, local_rank, local_world)


def finish(dist: Dist) -> None:
    if dist.active and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def relaunch_train(nproc: int, device: torch.device) -> bool:
    """With ``train.nproc > 1`` outside torchrun: rerun the train stage under torchrun and
    return True (the caller is done); else False (train in this process)."""
    if nproc <= 1 or launched():
        return False
    check_nproc(nproc, device)
    code = relaunch(nproc, "stages.train", sys.argv[1:])
    if code:
        raise UserError(f"train: the {nproc} training processes failed (exit {code})")
    return True
