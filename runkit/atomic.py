"""Atomic file writes: write a temp file next to the target, then rename it over the target.

``os.replace`` is atomic on POSIX and Windows when both paths are on one file system, so a reader (or a
resumed run) sees either the old file or the complete new one, never a truncated file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp path in ``path``'s directory, then rename ``tmp`` to ``path``.

    Args:
        path: the file to create or replace; its directory is created.
        write: writes the whole file at the path it is given (``lambda p: torch.save(state, p)``). The
            temp path keeps ``path``'s suffix, so writers that pick a format by extension still work.
    Returns:
        ``path``. On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path.write_text`` made atomic (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))
