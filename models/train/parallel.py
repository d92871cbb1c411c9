"""Data-parallel training under `torchrun`: where this process sits, and the two collectives
the supernet trainer needs.

`torchrun --nproc_per_node=N` starts N copies of a command with `WORLD_SIZE`, `RANK` and
`LOCAL_RANK` set. `init_distributed` reads them, joins the process group (`nccl` for CUDA
devices, `gloo` on CPU) and picks the device: CUDA device LOCAL_RANK, or the CPU. Without
torchrun (WORLD_SIZE unset or 1) it is a plain single process and touches no network.

Gradients are all-reduced explicitly (`all_reduce_grads`) rather than through
DistributedDataParallel: a sandwich step runs several subnets of different sizes through
the same parameters with one backward each, and DDP's hooks fire once per backward and
expect every parameter to be used (or `find_unused_parameters`, with its extra pass). One
all-reduce of the summed gradients after the last backward is simpler and exact.

Tested here on CPU with gloo (2 processes). The nccl/CUDA path is written the same way but
has not run: this machine has no GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from bfnas.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the default is a single process on the CPU."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def shard(self, rows: int) -> slice:
        """This rank's rows of a global batch: contiguous, disjoint, in rank order (so the
        ranks' rows together are the batch a single process would read)."""
        if rows % self.world:
            raise InputError.bad_setting(
                "batch", f"{rows} does not split evenly over {self.world} processes"
            )
        per = rows // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in DEVICES:
        raise InputError.bad_setting(
            "device", f"unknown device {name!r} (known: {', '.join(DEVICES)})"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError.bad_setting("device", "cuda asked for, but torch sees no CUDA device here")
    if local_rank >= torch.cuda.device_count():
        raise InputError.bad_setting(
            "device",
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
            "CUDA devices: start at most that many processes per node",
        )
    return torch.device("cuda", local_rank)


def launched_world() -> int:
    """How many processes torchrun started (1 without torchrun), before joining them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun job this process belongs to, if any."""
    world = launched_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return Distributed(device=dev)
    import torch.distributed as dist

    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), dev)


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: nn.Module, ctx: Distributed) -> None:
    """Every rank starts from rank 0's weights (they load the same files, but a replica that
    differs by a bit would drift apart silently)."""
    if ctx.world <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def all_reduce_grads(params: list[nn.Parameter], ctx: Distributed) -> None:
    """Sum the gradients over ranks, in one flat buffer (one collective, not one per tensor).
    Each rank's loss is already scaled to its share of the global batch, so the sum is the
    gradient of the global batch's loss. All ranks ran the same subnets, so the same
    parameters hold gradients everywhere."""
    if ctx.world <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(values: list[float], ctx: Distributed) -> list[float]:
    if ctx.world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def all_equal(text: str, ctx: Distributed) -> bool:
    """Whether every rank holds the same `text` (e.g. a hash of its weights)."""
    if ctx.world <= 1:
        return True
    import torch.distributed as dist

    gathered: list[str | None] = [None] * ctx.world
    dist.all_gather_object(gathered, text)
    return len(set(gathered)) == 1
