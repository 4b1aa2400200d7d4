"""How a scenario dict stored each field, so that ``Scenario.to_dict`` writes back what ``from_dict`` read.

The typed view normalises storage: every per-step array becomes float64 (``valid`` bool), ``(T, 1)``
columns become ``(T,)``, planar positions gain a zero z, polylines stored as lists of points become one
``[N, D]`` array. Real files differ in all of these (nuScenes pickles hold float64 ``(T, 1)`` sizes and
float ``valid`` masks, Waymo ones float32, some polylines are Python lists of arrays). A :class:`Leaf`
records, for one normalised field, the container, dtype and shape quirks of the source, so the typed
array can be encoded back exactly; key orders are recorded where dicts are rebuilt.

A field whose source cannot be reproduced from its typed array by these rules (for example a 3-D
velocity whose z column the typed view drops) keeps a reference to the source object; it is written
back verbatim as long as the typed array is the one parsed from it (the identity is checked), and
re-encoded with the recorded dtype otherwise. Building a leaf is O(size of the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Leaf", "leaf_of", "restore", "identical", "ABSENT", "TrackSource", "FeatureSource", "LightSource",
           "RootSource"]


@dataclass(frozen=True)
class Leaf:
    """Storage of one normalised field in its source dict.

    Attributes:
        kind: "nd" (a numpy array), "list_nd" (a list of numpy rows), "list_py" (a list of Python
            numbers or of lists of them) or "absent" (the key was missing; the typed field is a default).
        dtype: numpy dtype string of the array or of the rows ("nd", "list_nd").
        trailing_one: the source had an extra trailing axis of length 1 (``(T, 1)`` for ``(T,)``).
        cols: number of columns of the source where the typed view changed it (2-D positions), else None.
        raw: the source object, kept only when the rules above cannot reproduce it.
        typed: the typed array parsed from ``raw`` (identity marks it unchanged).
    """

    kind: str
    dtype: str = "<f8"
    trailing_one: bool = False
    cols: int | None = None
    raw: Any = None
    typed: Any = None


ABSENT = Leaf("absent")


def _encode(typed: np.ndarray, leaf: Leaf) -> Any:
    if leaf.kind == "absent":
        return None
    a = np.asarray(typed)
    if leaf.cols is not None and a.ndim == 2 and a.shape[1] > leaf.cols:
        a = a[:, :leaf.cols]
    if leaf.trailing_one:
        a = a[..., None]
    if leaf.kind == "nd":
        return a.astype(leaf.dtype, copy=True)
    if leaf.kind == "list_nd":
        return [row.astype(leaf.dtype, copy=True) for row in a]
    return a.tolist()


def restore(typed: np.ndarray, leaf: Leaf) -> Any:
    """The source encoding of ``typed`` (or the source object itself when ``typed`` is unchanged)."""
    if leaf.raw is not None and typed is leaf.typed:
        return leaf.raw
    return _encode(typed, leaf)


def leaf_of(source: Any, typed: np.ndarray) -> Leaf:
    """Record how ``source`` stored ``typed``; O(size). ``source`` None means the key was absent."""
    if source is None:
        return ABSENT
    t = np.asarray(typed)
    if isinstance(source, np.ndarray):
        cols = source.shape[1] if source.ndim == 2 == t.ndim and source.shape[1] != t.shape[1] else None
        leaf = Leaf("nd", source.dtype.str, trailing_one=source.ndim == t.ndim + 1 and source.shape[-1:] == (1,),
                    cols=cols)
        # float -> float64 -> float is exact, and so is dropping the z column a 2-D position gained
        exact = source.dtype.kind == "f" and t.dtype == np.float64 and (cols is None or cols < t.shape[1])
    elif isinstance(source, list) and source and all(isinstance(r, np.ndarray) for r in source):
        first = source[0]
        cols = len(first) if first.ndim == 1 and t.ndim == 2 and len(first) != t.shape[1] else None
        leaf = Leaf("list_nd", first.dtype.str, cols=cols)
        exact = (first.dtype.kind == "f" and t.dtype == np.float64 and (cols is None or cols < t.shape[1])
                 and all(r.dtype == first.dtype and r.shape == first.shape for r in source))
    elif isinstance(source, list):
        first = source[0] if source else None
        cols = len(first) if isinstance(first, (list, tuple)) and t.ndim == 2 and len(first) != t.shape[1] else None
        leaf, exact = Leaf("list_py", cols=cols), False
    else:
        return Leaf("nd", raw=source, typed=typed)
    if exact or identical(_encode(t, leaf), source):
        return leaf
    return Leaf(leaf.kind, leaf.dtype, leaf.trailing_one, leaf.cols, raw=source, typed=typed)


def identical(a: Any, b: Any) -> bool:
    """Strict equality of two plain-data trees: same types, key order, dtypes, shapes and values (NaN == NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (a != a and b != b))
    return a == b


@dataclass(frozen=True)
class TrackSource:
    """One track dict of the source: its key in ``tracks``, its key order, its state's key order and a Leaf
    per core state array (position, heading, velocity, valid, length, width, height); ``other`` holds keys
    besides type/state/metadata, verbatim."""

    key: Any
    keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    leaves: dict
    other: dict


@dataclass(frozen=True)
class FeatureSource:
    """One map feature dict: its key in ``map_features``, key order and the Leaf of its polyline / polygon."""

    key: Any
    keys: tuple[str, ...]
    leaves: dict


@dataclass(frozen=True)
class LightSource:
    """One dynamic map state dict: its key in ``dynamic_map_states``, key order, state key order and the
    state's other keys, the Leaf of its stop point, the source's state sequence and lane value."""

    key: Any
    keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    state_other: dict
    stop_point: Leaf
    states_raw: Any
    lane_raw: Any


@dataclass(frozen=True)
class RootSource:
    """The scenario dict itself: key order, the source values of id, version and length, and any other
    top-level keys (verbatim)."""

    keys: tuple[str, ...]
    values: dict
