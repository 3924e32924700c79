"""Several processes through torchrun / torch.distributed (NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node=N -m fewstep train RECIPE`` starts N processes; each reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment. The global batch is cut into ``world x
train.accumulate`` shards: shard k = rank x accumulate + m draws its data and its objective's
randomness from seeds (seed, k, step), so N processes and one process accumulating N shards take
the same steps (up to the order of floating-point sums). Rank 0 alone writes logs, checkpoints and
sample grids; the weights of every rank are compared at each log step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """This process's device: under torchrun with CUDA, ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``."""
        if self.world > 1 and torch.cuda.is_available() and requested in (None, "auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of a picklable object, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks (a copy)."""
        if self.world == 1:
            return value
        out = value.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.world

    def gather(self, value: float, device) -> list[float]:
        """One float from every rank, in rank order."""
        if self.world == 1:
            return [value]
        mine = torch.tensor([value], dtype=torch.float64, device=device)
        out = [torch.zeros_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(out, mine)
        return [float(t) for t in out]

    def gather_rows(self, x: torch.Tensor, device) -> torch.Tensor:
        """Every rank's tensor (equal shapes), concatenated in rank order along dim 0, on the CPU."""
        if self.world == 1:
            return x
        mine = x.to(device).contiguous()
        out = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(out, mine)
        return torch.cat(out).cpu()

    def shutdown(self) -> None:
        if self.initialised_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def from_env() -> Dist:
    """Join the process group torchrun describes in the environment (a single process otherwise).

    After an elastic restart (``torchrun --max-restarts``) the new workers meet in the store the agent kept,
    where the previous attempt's workers left their addresses: on torch 2.14 gloo's ranks read them and fail
    to connect ("Connection refused" to a dead worker's port). Each attempt's keys therefore live under their
    own prefix (``TORCHELASTIC_RESTART_COUNT``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = not torch.distributed.is_initialized()
    if here:
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
        backend = "nccl" if cuda else "gloo"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None:
            torch.distributed.init_process_group(backend)
        else:  # under torchrun: this attempt's own keys in its store
            store, rank, world = next(torch.distributed.rendezvous("env://"))
            torch.distributed.init_process_group(
                backend, store=torch.distributed.PrefixStore(f"fewstep/attempt_{attempt}", store), rank=rank,
                world_size=world)
    return Dist(rank, world, local, here)


def weights_checksum(net: torch.nn.Module) -> float:
    """A float64 sum over every parameter: equal on every rank while the ranks agree."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in net.parameters()))
