"""The plain module inside the wrappers that training puts around a backbone (torch.compile, DDP)."""
from __future__ import annotations

from torch import nn

__all__ = ["unwrap", "unwrap_ddp"]


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside torch.compile's and DistributedDataParallel's wrappers."""
    while True:
        inner = getattr(net, "_orig_mod", None)
        if inner is None:  # (not `or`: an empty nn.Sequential is falsy)
            inner = getattr(net, "module", None)
        if not isinstance(inner, nn.Module):
            return net
        net = inner


def unwrap_ddp(net: nn.Module) -> nn.Module:
    """The DistributedDataParallel wrapper inside a torch.compile one (for ``no_sync``)."""
    return getattr(net, "_orig_mod", net)
