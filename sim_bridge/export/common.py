"""What every exporter returns, and the id renumbering that integer-keyed formats need."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ExportResult", "integer_ids", "count_note", "file_stem"]


@dataclass
class ExportResult:
    """The files one scenario was exported to, and what the format could not hold.

    Attributes:
        format: exporter name (``waymo``, ``openscenario``).
        files: written paths.
        dropped: human-readable notes on what was lost, e.g. ``"3 TRAFFIC_CONE agents typed OTHER"``.
        id_maps: original id -> id in the export, per kind (``tracks``, ``map_features``,
            ``entities``); empty where the ids were kept as they are.
    """

    format: str
    files: list[Path] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    id_maps: dict[str, dict[str, int | str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": self.format, "files": [str(p) for p in self.files], "dropped": self.dropped,
                "renamed_ids": {k: len(v) for k, v in self.id_maps.items()}}


def integer_ids(ids: list[str], bits: int) -> tuple[dict[str, int], bool]:
    """Map string ids to integers for a format with ``bits``-bit signed integer ids.

    Ids that are all decimal integers in range and unique are kept (Waymo-sourced scenarios keep
    their ids); otherwise every id is renumbered 0..n-1 in order, so references stay unambiguous.

    Returns:
        (id -> int, whether the ids were renumbered).
    """
    hi = 2 ** (bits - 1) - 1
    try:
        as_int = [int(s) for s in ids]
        if all(str(v) == s and 0 <= v <= hi for v, s in zip(as_int, ids)) and len(set(as_int)) == len(ids):
            return dict(zip(ids, as_int)), False
    except ValueError:
        pass
    return {s: i for i, s in enumerate(ids)}, True


def count_note(counts: Counter, what: str) -> list[str]:
    """One note per counted kind: ``"{n} {kind} {what}"``, most frequent first."""
    return [f"{n} {k} {what}" for k, n in counts.most_common()]


def file_stem(name: str) -> str:
    """A scenario file name without its directory and ``.pkl`` suffix (the stem of every export)."""
    return Path(name).name.removesuffix(".pkl")
