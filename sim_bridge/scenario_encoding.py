"""Reading and writing the ScenarioNet dict: field checks with named errors, and how a source dict stored
each field, so that ``Scenario.to_dict`` writes back what ``from_dict`` read.

:class:`ScenarioError` and the ``require``/``as_array``/``per_step``/``field_errors`` helpers turn any malformed
field into an error naming the file and the field. The encoders (``track_to_dict``, ``feature_to_dict``,
``light_to_dict``) write the typed parts of :mod:`sim_bridge.scenario` back as dicts.

The typed view normalises storage: every per-step array becomes float64 (``valid`` bool), ``(T, 1)``
columns become ``(T,)``, planar positions gain a zero z, polylines stored as lists of points become one
``[N, D]`` array. Real files differ in all of these (nuScenes pickles hold float64 ``(T, 1)`` sizes and
float ``valid`` masks, Waymo ones float32, some polylines are Python lists of arrays). A :class:`Leaf`
records, for one normalised field, the container, dtype and shape quirks of the source, so the typed
array can be encoded back exactly; key orders are recorded where dicts are rebuilt.

Loading only keeps references to the source arrays; the leaves are worked out when writing
(:func:`encode_like`). A field whose source these rules cannot reproduce (a 3-D velocity whose z column
the typed view drops, tuples of Python numbers) is written as the source object itself while the typed
values still equal it, and re-encoded in the source's dtype once they changed. O(size of the field).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # annotations only: sim_bridge.scenario imports this module
    from sim_bridge.scenario import AgentTracks, MapFeature, TrafficLight

__all__ = ["ScenarioError", "Leaf", "leaf_of", "encode_like", "identical", "ABSENT", "TrackSource", "FeatureSource",
           "LightSource", "RootSource", "track_to_dict", "feature_to_dict", "light_to_dict", "CORE_STATE_KEYS",
           "ROOT_PARSED", "STEP_SECONDS"]

STEP_SECONDS = 0.1
CORE_STATE_KEYS = ("position", "heading", "velocity", "valid", "length", "width", "height")
"""The per-step state arrays the typed view parses; every other state key is kept verbatim."""
ROOT_PARSED = ("tracks", "dynamic_map_states", "map_features", "metadata")
"""Top-level keys of a scenario dict parsed into typed parts; the others are kept verbatim."""


class ScenarioError(ValueError):
    """A scenario (file) breaks the contract. ``source`` names the file, ``field`` the part."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


@contextlib.contextmanager
def field_errors(src: str, where: str) -> Iterator[None]:
    """Turn any failure while reading field ``where`` into a ScenarioError naming the file and field:
    a malformed file yields our error, never a bare traceback from deep inside numpy."""
    try:
        yield
    except ScenarioError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        raise ScenarioError(src, where, f"malformed ({type(e).__name__}: {e})") from None


def require(d: Mapping, key: str, src: str, where: str, kind: type | tuple = object):
    if not isinstance(d, Mapping):
        raise ScenarioError(src, where, f"expected a dict, got {type(d).__name__}")
    if key not in d:
        raise ScenarioError(src, f"{where}.{key}" if where else key, "missing required key")
    v = d[key]
    if not isinstance(v, kind):
        raise ScenarioError(src, f"{where}.{key}" if where else key,
                            f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def as_array(v: Any, src: str, where: str, dtype=np.float64) -> np.ndarray:
    if isinstance(v, np.ndarray) and v.dtype.kind == "c":  # (a list of complex numbers fails the conversion)
        raise ScenarioError(src, where, "complex values, expected a real numeric array")
    try:
        return np.asarray(v, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ScenarioError(src, where, f"not a numeric array ({e})") from None


def per_step(v: Any, length: int, src: str, where: str, width: int | None,
              dtype=np.float64) -> np.ndarray:
    """Coerce a per-step state array to shape (length,) or (length, width)."""
    a = as_array(v, src, where, dtype)
    if width is None and a.ndim == 2 and a.shape[1] == 1:  # ScenarioNet sometimes stores (T, 1)
        a = a[:, 0]
    want = (length,) if width is None else (length, width)
    if width is not None and a.ndim == 2 and a.shape[0] == length and a.shape[1] > width:
        a = a[:, :width]  # e.g. 3-D velocity -> planar
    if a.shape != want:
        raise ScenarioError(src, where, f"shape {a.shape} disagrees with scenario length {length} "
                                        f"(expected {want})")
    return a






class Leaf(NamedTuple):
    """Storage of one normalised field in its source dict (a tuple: a scenario has thousands of them).

    Attributes:
        kind: "nd" (a numpy array), "list_nd" (a list of numpy rows), "list_py" (a list of Python
            numbers or of lists of them) or "absent" (the key was missing; the typed field is a default).
        dtype: numpy dtype string of the array or of the rows ("nd", "list_nd").
        trailing_one: the source had an extra trailing axis of length 1 (``(T, 1)`` for ``(T,)``).
        cols: number of columns of the source where the typed view changed it (2-D positions), else None.
        exact: these rules reproduce the source from unchanged typed values.
    """

    kind: str
    dtype: str = "<f8"
    trailing_one: bool = False
    cols: int | None = None
    exact: bool = True


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


def encode_like(source: Any, typed: np.ndarray) -> Any:
    """``typed`` written the way ``source`` stored it (container, dtype, shape quirks); with unchanged values
    this is ``source`` bit for bit. Called when writing, so loading pays nothing for it; O(size)."""
    leaf = leaf_of(source, typed)
    out = _encode(typed, leaf)
    if leaf.exact:
        return out
    # the layout rules cannot reproduce this source (a 3-D velocity, tuples of Python numbers): keep the
    # source itself when the values it holds are still the typed ones
    a, b = np.asarray(source), np.asarray(out)
    if a.ndim == b.ndim == 2 and a.shape[1] > b.shape[1]:
        a = a[:, :b.shape[1]]
    try:
        same = a.shape == b.shape and bool(np.array_equal(a.astype(np.float64), b.astype(np.float64), equal_nan=True))
    except (TypeError, ValueError):
        same = False
    if not same and isinstance(source, np.ndarray) and source.ndim == b.ndim == 2 and source.shape[1] > b.shape[1] \
            and source.shape[0] == b.shape[0]:  # changed planar values of a 3-D velocity: the source's z stays
        merged = source.copy()
        merged[:, :b.shape[1]] = out
        return merged
    return source if same else out


_LEAVES: dict[tuple, Leaf] = {}


def _leaf(kind: str, dtype: str, trailing_one: bool, cols: int | None) -> Leaf:
    """The shared Leaf of a storage layout (a handful of distinct ones across all files)."""
    key = (kind, dtype, trailing_one, cols)
    leaf = _LEAVES.get(key)
    if leaf is None:
        leaf = _LEAVES[key] = Leaf(kind, dtype, trailing_one, cols)
    return leaf


def leaf_of(source: Any, typed: np.ndarray) -> Leaf:
    """Record how ``source`` stored ``typed``; O(size). ``source`` None means the key was absent."""
    if source is None:
        return ABSENT
    t = typed if isinstance(typed, np.ndarray) else np.asarray(typed)
    if isinstance(source, np.ndarray):
        cols = source.shape[1] if source.ndim == 2 == t.ndim and source.shape[1] != t.shape[1] else None
        leaf = _leaf("nd", source.dtype.str, source.ndim == t.ndim + 1 and source.shape[-1:] == (1,), cols)
        # float -> float64 -> float is exact, and so is dropping the z column a 2-D position gained;
        # otherwise (a float valid mask, ints) one vectorised comparison decides
        exact = source.dtype.kind == "f" and t.dtype == np.float64 and (cols is None or cols < t.shape[1])
        if not exact:
            back = _encode(t, leaf)
            exact = back.shape == source.shape and bool(
                np.array_equal(back, source, equal_nan=source.dtype.kind == "f"))
        if exact:
            return leaf
    elif isinstance(source, list) and source and isinstance(source[0], np.ndarray):
        first = source[0]
        dt, shape = first.dtype, first.shape
        cols = len(first) if first.ndim == 1 and t.ndim == 2 and len(first) != t.shape[1] else None
        leaf = _leaf("list_nd", dt.str, False, cols)
        # one pass: every row an array of the first row's dtype and shape (float rows restore exactly)
        same = all(type(r) is np.ndarray and r.dtype == dt and r.shape == shape for r in source)
        exact = same and dt.kind == "f" and t.dtype == np.float64 and (cols is None or cols < t.shape[1])
    elif isinstance(source, list):
        first = source[0] if source else None
        cols = len(first) if isinstance(first, (list, tuple)) and t.ndim == 2 and len(first) != t.shape[1] else None
        return Leaf("list_py", cols=cols, exact=False)  # Python numbers: compared by value by encode_like
    else:
        return Leaf("nd", exact=False)
    if exact or identical(_encode(t, leaf), source):
        return leaf
    return leaf._replace(exact=False)


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
    """One track dict of the source: its key in ``tracks``, its key order, its state's key order, the source
    state dict itself (read again only when writing, by :func:`encode_like`); ``other`` holds keys besides
    type/state/metadata, verbatim."""

    key: Any
    keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    state: Mapping
    other: dict


@dataclass(frozen=True)
class FeatureSource:
    """One map feature dict: its key in ``map_features``, key order and its source polyline / polygon."""

    key: Any
    keys: tuple[str, ...]
    points: dict


@dataclass(frozen=True)
class LightSource:
    """One dynamic map state dict: its key in ``dynamic_map_states``, key order, state key order and the
    state's other keys, the source's stop point, state sequence and lane value."""

    key: Any
    keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    state_other: dict
    stop_point: Any
    states_raw: Any
    lane_raw: Any


@dataclass(frozen=True)
class RootSource:
    """The scenario dict itself: key order, the source values of id, version and length, and any other
    top-level keys (verbatim); ``repairs`` lists what reading it repaired (``from_dict(repair=True)``), so that
    a writer can report it."""

    keys: tuple[str, ...]
    values: dict
    repairs: tuple[str, ...] = ()


def typed_state(tr: AgentTracks, i: int) -> dict[str, np.ndarray]:
    return {"position": tr.position[i], "heading": tr.heading[i], "velocity": tr.velocity[i], "valid": tr.valid[i],
            "length": tr.size[i, :, 0], "width": tr.size[i, :, 1], "height": tr.size[i, :, 2]}


def track_to_dict(tr: AgentTracks, i: int, length: int, src: TrackSource | None, dtype: Any = np.float32) -> dict:
    """Agent ``i`` of ``tr`` as a ScenarioNet track dict: as its source stored it (``src``), or, for an agent made
    in code (``src`` None), with every core state key, the float ones in ``dtype`` and ``valid`` bool [T]."""
    typed = typed_state(tr, i)
    extra = tr.extra_state[i] if tr.extra_state else {}
    meta_in = dict(tr.metadata[i]) if tr.metadata else {}
    if src is None:
        state = {k: (v.astype(bool) if k == "valid" else v.astype(dtype)) for k, v in typed.items()}
        state.update(extra)
        meta = {**meta_in}
        meta.setdefault("track_length", length)
        meta.setdefault("type", tr.types[i])
        meta.setdefault("object_id", tr.ids[i])
        return {"type": tr.types[i], "state": state, "metadata": meta}
    state = {}
    for k in src.state_keys:
        if k in CORE_STATE_KEYS:
            state[k] = encode_like(src.state[k], typed[k])
        elif k in extra:
            state[k] = extra[k]
    for k in CORE_STATE_KEYS:  # a field the source lacked is written once it holds something
        if k not in state and k not in src.state and np.any(typed[k]):
            state[k] = typed[k].astype(np.float32)
    state.update({k: v for k, v in extra.items() if k not in state})
    parts = {"type": tr.types[i], "state": state, "metadata": copy.copy(tr.metadata[i]) if tr.metadata else {},
             **src.other}
    return {k: parts[k] for k in src.keys if k in parts}


def feature_to_dict(f: MapFeature) -> dict:
    m = {"type": f.type, **f.extras}
    for name, pts in (("polyline", f.polyline), ("polygon", f.polygon)):
        if pts is not None:
            src = None if f.source is None else f.source.points.get(name)
            m[name] = pts if src is None else encode_like(src, pts)
    if f.source is None:
        return m
    return {k: m[k] for k in [*f.source.keys, *(k for k in m if k not in f.source.keys)] if k in m}


def light_to_dict(tl: TrafficLight) -> dict:
    src = tl.source
    if src is None:
        out = {**tl.extras, "type": tl.extras.get("type", "TRAFFIC_LIGHT"), "lane": tl.lane,
               "state": {"object_state": list(tl.states)}}
        if tl.stop_point is not None:
            out["stop_point"] = tl.stop_point
        return out
    states = src.states_raw if src.states_raw is not None and tuple(map(str, src.states_raw)) == tl.states \
        else list(tl.states)
    state = {k: (states if k == "object_state" else src.state_other[k]) for k in src.state_keys}
    parts = {**tl.extras, "state": state,
             "lane": src.lane_raw if str(src.lane_raw) == tl.lane else tl.lane}
    if tl.stop_point is not None:
        parts["stop_point"] = tl.stop_point if src.stop_point is None else encode_like(src.stop_point, tl.stop_point)
    elif "stop_point" in src.keys:
        parts["stop_point"] = None
    return {k: parts[k] for k in [*src.keys, *(k for k in parts if k not in src.keys)] if k in parts}
