"""One process or torchrun: rank, world size and device of this process."""

from __future__ import annotations

import os
from typing import Any

# torch is imported lazily (optional `ml` extra): importing runkit stays light.

__all__ = ["setup_distributed", "finish_distributed"]


def setup_distributed(device_pref: str) -> tuple[int, int, Any]:
    """(rank, world size, torch.device) of this process; joins the process group under torchrun.

    Args:
        device_pref: "auto" (cuda if available), "cuda" or "cpu".
    Returns:
        rank and world size from the RANK / WORLD_SIZE environment (0 and 1 without torchrun), and the
        device (``cuda:LOCAL_RANK`` when CUDA is used, which also becomes the current CUDA device).
    """
    import torch
    import torch.distributed as dist

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def finish_distributed() -> None:
    """Leave the process group at the end of a torchrun run (no-op in one process).

    Every rank waits at a barrier for the others (rank 0 writes the last checkpoint and summaries after the final
    step), then the group is destroyed. Without it a rank that finished first exited while gloo's threads still
    served its peer, and the C++ runtime aborted it ("terminate called without an active exception", SIGABRT),
    failing the whole torchrun job after training had succeeded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
