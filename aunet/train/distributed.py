"""Where a run executes: its device and, under torchrun, its rank in the process group."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from aunet.train.errors import EXIT_NO_HARDWARE, TrainError


@dataclass
class DistEnv:
    """This process's place in a torchrun launch (world 1, rank 0 without one)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, logs and writes the run folder."""
        return self.rank == 0


def init_distributed(device_name: str) -> DistEnv:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; join its process group (NCCL on GPUs, gloo on CPUs)."""
    env = DistEnv(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    if env.world > 1 and not torch.distributed.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(env.local_rank)
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return env


def pick_device(name: str, env: DistEnv) -> torch.device:
    """The device of a TrainConfig.device (auto | cpu | cuda | cuda:N); under torchrun, cuda is LOCAL_RANK's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not name.startswith("cuda"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(f"--device {name}: CUDA is not available on this machine", EXIT_NO_HARDWARE)
    if env.world > 1:
        return torch.device("cuda", env.local_rank)
    return torch.device(name)


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """A flag raised on any rank, on every rank: a stop request then stops all of them at the same step (DDP
    needs every rank in each step)."""
    if env.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def barrier(env: DistEnv) -> None:
    """Wait for every rank (rank 0 validates while the others wait)."""
    if env.world > 1:
        torch.distributed.barrier()


def leave(env: DistEnv) -> None:
    """Leave the process group init_distributed joined."""
    if env.world > 1:
        torch.distributed.destroy_process_group()
