"""Seeds of the global generators and of a training loop's explicit random streams."""

from __future__ import annotations

import random

import numpy as np

# torch is imported lazily (optional `ml` extra): importing runkit stays light.

__all__ = ["seed_everything", "stream_seed"]


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python's and numpy's global generators with ``seed + rank`` and torch's with ``seed``
    (the same initial weights on every rank)."""
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

    return int(np.random.SeedSequence([seed, rank, start_step]).generate_state(1, np.uint64)[0]) >> 1
