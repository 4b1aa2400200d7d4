"""Symbolic links that survive moving the folder that holds both ends.

A merged dataset points at its sources' files through links instead of copies. An absolute link breaks as soon as
the work folder that holds source and merge is moved or mounted elsewhere (a cluster's scratch, a container);
a link relative to its own folder keeps working as long as both ends move together.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["relative_symlink"]


def relative_symlink(link: str | Path, target: str | Path) -> Path:
    """Make ``link`` a symbolic link to ``target`` by a path relative to the link's folder; returns ``link``.

    An existing link with that relative path is kept (idempotent); any other link at ``link`` (absolute, dangling
    or pointing elsewhere) is replaced. A file or folder at ``link`` that is not a link is never overwritten:
    FileExistsError."""
    link = Path(link)
    rel = os.path.relpath(Path(target).resolve(), link.parent.resolve())
    if link.is_symlink():
        if os.readlink(link) == rel:
            return link
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a symbolic link; not replacing it")
    link.symlink_to(rel)
    return link
