"""Checkpoints: ``{model, optimizer, config, step, best_metric}`` dicts written atomically with
``torch.save`` and read back with ``torch.load(weights_only=True)`` (tensors and plain data only, so
loading someone else's checkpoint cannot execute code). Callers load state dicts with ``strict=True``.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runkit.atomic import atomic_write

# torch is imported lazily (optional `ml` extra): importing runkit stays light.

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Write ``state`` (e.g. model, optimizer, config, step, best_metric) to ``path`` atomically.

    Args:
        path: checkpoint file; its directory is created.
        **state: the checkpoint dict's entries (tensors, state dicts, plain Python values).
    Returns:
        ``path``.
    """
    import torch

    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


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
