"""This process's place in a ``torchrun`` job, read from the variables torchrun sets (WORLD_SIZE,
RANK, LOCAL_RANK), and its device: DistributedDataParallel over gloo on the CPU, nccl on CUDA.
The training loop (scratchgpt.book.train) takes its rank and world size."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scratchgpt.device import pick_device


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def agree(self, decision: bool) -> bool:
        """Rank 0's ``decision``, on every rank (a decision that reads the clock may differ)."""
        if not self.enabled:
            return decision
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        flag = torch.tensor([int(decision)], device=on)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def init_distributed(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return Dist(rank, world, local), device
