"""One training process per device under torchrun: who this process is, and the few collective steps.

`torchrun --nproc_per_node=N -m minicastling train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set. Each takes its share of every batch of the same shuffled order, DistributedDataParallel
averages the gradients, and rank 0 alone prints and writes files. NCCL on CUDA, gloo on the CPU.
Without torchrun everything here is a no-op for a single process.
"""

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This process's contiguous part of `count` items (a batch or a test split)."""
        return slice(self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over all processes of a tensor (in place); the tensor itself for one process."""
        if self.world_size > 1:
            dist.all_reduce(value)
        return value

    def wait_for_all(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def start(device: str = "auto") -> tuple:
    """This process and its device; under torchrun, also join the process group."""
    from .runtime import pick_device

    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Process(), pick_device(device)
    process = Process(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", process.local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return process, chosen


def stop(process: Process) -> None:
    if process.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, process: Process, device: torch.device) -> torch.nn.Module:
    """The model as each process steps it: DistributedDataParallel when there are several, with
    SyncBatchNorm on CUDA (torch has none on the CPU: there each process keeps its own batch statistics,
    and DDP hands rank 0's running statistics to all)."""
    if process.world_size == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
