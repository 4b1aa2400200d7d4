"""Training plumbing shared by the trainers (traffic, views, bevseg, scene3d) and the checkpoint exporter.

* :func:`save_checkpoint` / :func:`load_checkpoint`: atomic writes (tmp file + ``os.replace``, so an
  interrupted save never leaves a truncated checkpoint) and ``weights_only=True`` reads.
* :func:`setup_distributed`: rank, world size and device under torchrun (or a single process).
* :func:`seed_everything` and :func:`stream_seed`: the seeds of the global generators and of the
  explicit ``torch.Generator`` / numpy streams of a training loop.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

__all__ = ["save_checkpoint", "load_checkpoint", "setup_distributed", "seed_everything", "stream_seed"]


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Write ``state`` (e.g. model, optimizer, config, step, best_metric) to ``path`` atomically.

    Args:
        path: checkpoint file; its directory is created.
        **state: the checkpoint dict's entries (tensors, state dicts, plain Python values).
    Returns:
        ``path``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: Any = "cpu", hint: str = "") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Args:
        path: checkpoint file, or a run directory (its ``checkpoints/latest.pt``).
        device: ``map_location`` of its tensors.
        hint: appended to the not-found message (e.g. how to make one).
    Returns:
        the checkpoint dict.
    Raises:
        FileNotFoundError: with the path, when the file does not exist.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file" + (f" ({hint})" if hint else ""))
    return torch.load(path, map_location=device, weights_only=True)


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


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python's and numpy's global generators with ``seed + rank`` and torch's with ``seed``
    (the same initial weights on every rank)."""
    import numpy as np
    import torch

    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)


def stream_seed(seed: int, rank: int = 0, start_step: int = 0) -> int:
    """Seed of a training loop's random stream (batch draws, masks, latents) for ``rank`` starting at
    ``start_step``.

    A fresh run (``start_step == 0``) gets ``seed * 1000 + rank``; a resumed run gets a seed mixed
    from (seed, rank, start_step) by numpy's ``SeedSequence``, so it continues with fresh draws
    instead of replaying those of steps 0, 1, ... again.
    """
    if start_step == 0:
        return seed * 1000 + rank
    import numpy as np

    return int(np.random.SeedSequence([seed, rank, start_step]).generate_state(1, np.uint64)[0]) >> 1
