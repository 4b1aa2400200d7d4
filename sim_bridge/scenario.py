"""The scenario contract: a typed view of ScenarioNet's scenario description.

On disk a scenario is one pickle holding a plain dict (the format MetaDrive's ``ScenarioEnv``
reads); a *dataset directory* holds scenario files plus ``dataset_summary.pkl`` (file name ->
metadata and summaries) and ``dataset_mapping.pkl`` (file name -> sub-folder, "" for flat).
This module is the only place that converts between that dict and the typed classes below.

Units and frames (for every source):
    world frame, right-handed, metres; heading in radians, counter-clockwise from +x;
    velocity in m/s in the world frame; one step = 0.1 s (10 Hz); ``length`` steps.

Einsum letters: a agent, t time, n point.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError, safe_load
from sim_bridge.source_layout import (ABSENT, FeatureSource, LightSource, RootSource, TrackSource, leaf_of,
                                      restore)

__all__ = [
    "ScenarioError", "AgentTracks", "MapFeature", "TrafficLight", "Scenario",
    "load_scenario", "load_scenario_dict", "save_scenario", "ScenarioDataset", "DatasetWriter",
    "SUMMARY_FILE", "MAPPING_FILE", "LANE_TYPES", "ROAD_LINE_TYPES", "ROAD_EDGE_TYPES",
]

SUMMARY_FILE = "dataset_summary.pkl"
MAPPING_FILE = "dataset_mapping.pkl"
STEP_SECONDS = 0.1

LANE_TYPES = frozenset({"LANE_SURFACE_STREET", "LANE_SURFACE_UNSTRUCTURE", "LANE_FREEWAY",
                        "LANE_BIKE_LANE", "LANE_UNKNOWN"})
ROAD_LINE_TYPES = frozenset({
    "UNKNOWN_LINE", "ROAD_LINE_BROKEN_SINGLE_WHITE", "ROAD_LINE_SOLID_SINGLE_WHITE",
    "ROAD_LINE_SOLID_DOUBLE_WHITE", "ROAD_LINE_BROKEN_SINGLE_YELLOW", "ROAD_LINE_BROKEN_DOUBLE_YELLOW",
    "ROAD_LINE_SOLID_SINGLE_YELLOW", "ROAD_LINE_SOLID_DOUBLE_YELLOW", "ROAD_LINE_PASSING_DOUBLE_YELLOW"})
# MetaDrive spells an unknown road line "UNKNOWN_LINE" and an unknown road edge "UNKNOWN".
ROAD_EDGE_TYPES = frozenset({"UNKNOWN", "ROAD_EDGE_BOUNDARY", "ROAD_EDGE_MEDIAN", "ROAD_EDGE_SIDEWALK",
                             "GUARDRAIL"})
_CORE_STATE_KEYS = ("position", "heading", "velocity", "valid", "length", "width", "height")


class ScenarioError(ValueError):
    """A scenario (file) breaks the contract. ``source`` names the file, ``field`` the part."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


@contextlib.contextmanager
def _field(src: str, where: str) -> Iterator[None]:
    """Turn any failure while reading field ``where`` into a ScenarioError naming the file and field:
    a malformed file yields our error, never a bare traceback from deep inside numpy."""
    try:
        yield
    except ScenarioError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        raise ScenarioError(src, where, f"malformed ({type(e).__name__}: {e})") from None


def _require(d: Mapping, key: str, src: str, where: str, kind: type | tuple = object):
    if not isinstance(d, Mapping):
        raise ScenarioError(src, where, f"expected a dict, got {type(d).__name__}")
    if key not in d:
        raise ScenarioError(src, f"{where}.{key}" if where else key, "missing required key")
    v = d[key]
    if not isinstance(v, kind):
        raise ScenarioError(src, f"{where}.{key}" if where else key,
                            f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def _array(v: Any, src: str, where: str, dtype=np.float64) -> np.ndarray:
    if np.iscomplexobj(v):
        raise ScenarioError(src, where, "complex values, expected a real numeric array")
    try:
        return np.asarray(v, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ScenarioError(src, where, f"not a numeric array ({e})") from None


def _per_step(v: Any, length: int, src: str, where: str, width: int | None,
              dtype=np.float64) -> np.ndarray:
    """Coerce a per-step state array to shape (length,) or (length, width)."""
    a = _array(v, src, where, dtype)
    if width is None and a.ndim == 2 and a.shape[1] == 1:  # ScenarioNet sometimes stores (T, 1)
        a = a[:, 0]
    want = (length,) if width is None else (length, width)
    if width is not None and a.ndim == 2 and a.shape[0] == length and a.shape[1] > width:
        a = a[:, :width]  # e.g. 3-D velocity -> planar
    if a.shape != want:
        raise ScenarioError(src, where, f"shape {a.shape} disagrees with scenario length {length} "
                                        f"(expected {want})")
    return a


@dataclass(frozen=True)
class AgentTracks:
    """All agents of a scenario, stacked. A agents, T steps.

    Attributes:
        ids: agent ids, length A (``str``).
        types: MetaDrive type names (VEHICLE, PEDESTRIAN, CYCLIST, ...), length A.
        position: float64 [A, T, 3], m, world frame; z is the box centre (0 where unknown).
        heading: float64 [A, T], rad, world frame.
        velocity: float64 [A, T, 2], m/s, world frame.
        size: float64 [A, T, 3], (length, width, height) in m.
        valid: bool [A, T], whether the agent is observed at that step.
        extra_state: per agent, other per-step arrays kept for round trips (throttle, steering, ...).
        metadata: per agent, the source's metadata dict (kept verbatim).
        sources: per agent, how its source dict stored it (None for agents made in code), so that
            ``Scenario.to_dict`` writes a loaded file back bit for bit.
    """

    ids: tuple[str, ...]
    types: tuple[str, ...]
    position: np.ndarray
    heading: np.ndarray
    velocity: np.ndarray
    size: np.ndarray
    valid: np.ndarray
    extra_state: tuple[dict, ...] = ()
    metadata: tuple[dict, ...] = ()
    sources: tuple[TrackSource | None, ...] = ()

    @property
    def num_agents(self) -> int:
        return len(self.ids)

    @property
    def xy(self) -> np.ndarray:
        """float64 [A, T, 2] planar position, m."""
        return self.position[..., :2]

    @property
    def speed(self) -> np.ndarray:
        """float64 [A, T] planar speed, m/s."""
        return np.linalg.norm(self.velocity, axis=-1)

    def index(self, agent_id: str) -> int:
        try:
            return self.ids.index(agent_id)
        except ValueError:
            raise KeyError(f"no agent with id {agent_id!r}") from None

    def validate(self, length: int, src: str = "<scenario>") -> None:
        a = len(self.ids)
        checks = {"types": (len(self.types), a), "position": (self.position.shape, (a, length, 3)),
                  "heading": (self.heading.shape, (a, length)), "velocity": (self.velocity.shape, (a, length, 2)),
                  "size": (self.size.shape, (a, length, 3)), "valid": (self.valid.shape, (a, length))}
        for name, (got, want) in checks.items():
            if got != want:
                raise ScenarioError(src, f"tracks.{name}", f"shape {got}, expected {want}")
        if self.valid.dtype != np.bool_:
            raise ScenarioError(src, "tracks.valid", f"dtype {self.valid.dtype}, expected bool")
        bad = ~np.isfinite(self.position).all(-1) & self.valid
        if bad.any():
            ai, ti = np.argwhere(bad)[0]
            raise ScenarioError(src, f"tracks[{self.ids[ai]!r}].state.position",
                                f"{int(bad.sum())} NaN/inf values at valid steps (first at step {ti})")
        bad = ~np.isfinite(self.heading) & self.valid
        if bad.any():
            ai, ti = np.argwhere(bad)[0]
            raise ScenarioError(src, f"tracks[{self.ids[ai]!r}].state.heading",
                                f"{int(bad.sum())} NaN/inf values at valid steps (first at step {ti})")


@dataclass(frozen=True)
class MapFeature:
    """One static map element.

    Attributes:
        type: MetaDrive type name (LANE_SURFACE_STREET, ROAD_LINE_*, ROAD_EDGE_*, CROSSWALK, ...).
        polyline: float64 [N, D] (D = 2 or 3) centre/line points in m, world frame, or None.
            For nuScenes lanes the third column is the lane yaw, as ScenarioNet writes it.
        polygon: float64 [M, D] outline in m, world frame, or None.
        extras: every other key of the source dict (neighbours, speed limits, widths, ...).
        source: how the source dict stored it (None when made in code).
    """

    type: str
    polyline: np.ndarray | None = None
    polygon: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    source: FeatureSource | None = None

    @property
    def is_lane(self) -> bool:
        return self.type in LANE_TYPES or self.type.startswith("LANE_")

    @property
    def speed_limit_kmh(self) -> float | None:
        v = self.extras.get("speed_limit_kmh")
        return float(v) if v is not None else None


@dataclass(frozen=True)
class TrafficLight:
    """A signal controlling one lane.

    Attributes:
        lane: id of the controlled lane (str).
        stop_point: float64 [3] in m, world frame, or None.
        states: per step LANE_STATE_* names, length T.
        extras: the other keys of the source dict (kept verbatim).
        source: how the source dict stored it (None when made in code).
    """

    lane: str
    stop_point: np.ndarray | None
    states: tuple[str, ...]
    extras: dict = field(default_factory=dict)
    source: LightSource | None = None


@dataclass(frozen=True)
class Scenario:
    """A driving scenario: map + agent tracks + traffic lights over ``length`` steps at 10 Hz.

    Attributes:
        id: scenario id.
        length: number of steps T.
        tracks: all agents (see :class:`AgentTracks`).
        map_features: static map by feature id.
        traffic_lights: dynamic map states by id.
        metadata: the source metadata dict; ``sdc_id`` names the ego agent, ``ts`` [T] seconds.
        version: format/version string of the writer.
        source: key order and raw id/version/length of the source dict (None when made in code).
    """

    id: str
    length: int
    tracks: AgentTracks
    map_features: dict[str, MapFeature]
    traffic_lights: dict[str, TrafficLight]
    metadata: dict
    version: str = "bevgen"
    source: RootSource | None = None

    # ---- derived -------------------------------------------------------------------------
    @property
    def sdc_id(self) -> str:
        return str(self.metadata["sdc_id"])

    @property
    def dataset(self) -> str:
        return str(self.metadata.get("dataset", "unknown"))

    @property
    def num_agents(self) -> int:
        return self.tracks.num_agents

    @property
    def ego_index(self) -> int:
        return self.tracks.index(self.sdc_id)

    def agent_counts(self) -> Counter:
        return Counter(self.tracks.types)

    def map_counts(self) -> Counter:
        return Counter(f.type for f in self.map_features.values())

    def map_category_counts(self) -> Counter:
        """Map features counted by category: lane, road_line, road_edge, crosswalk, other."""
        def cat(t: str) -> str:
            if t in LANE_TYPES or t.startswith("LANE_"):
                return "lane"
            if t in ROAD_LINE_TYPES:
                return "road_line"
            if t in ROAD_EDGE_TYPES:
                return "road_edge"
            return "crosswalk" if t == "CROSSWALK" else "other"
        return Counter(cat(f.type) for f in self.map_features.values())

    def validate(self, src: str = "<scenario>") -> "Scenario":
        """Check cross-field consistency; raise :class:`ScenarioError` naming the field."""
        if not isinstance(self.length, int) or self.length < 1:
            raise ScenarioError(src, "length", f"must be a positive int, got {self.length!r}")
        self.tracks.validate(self.length, src)
        if self.sdc_id not in self.tracks.ids:
            raise ScenarioError(src, "metadata.sdc_id", f"{self.sdc_id!r} is not a track id")
        for fid, f in self.map_features.items():
            where = f"map_features[{fid!r}]"
            for name, pts in (("polyline", f.polyline), ("polygon", f.polygon)):
                if pts is None:
                    continue
                if pts.ndim != 2 or pts.shape[1] not in (2, 3):
                    raise ScenarioError(src, f"{where}.{name}", f"shape {pts.shape}, expected [N, 2|3]")
                if not np.isfinite(pts).all():
                    raise ScenarioError(src, f"{where}.{name}", "contains NaN/inf")
            if f.is_lane and (f.polyline is None or len(f.polyline) < 2):
                n = 0 if f.polyline is None else len(f.polyline)
                raise ScenarioError(src, f"{where}.polyline", f"a lane needs at least 2 points, got {n} "
                                    "(repairable: --repair / repair=True drops such lanes)")
        for lid, tl in self.traffic_lights.items():
            if len(tl.states) != self.length:
                raise ScenarioError(src, f"dynamic_map_states[{lid!r}].state.object_state",
                                    f"{len(tl.states)} entries disagree with scenario length {self.length}")
        return self

    # ---- dict conversion (the only place that knows the ScenarioNet layout) -------------
    @classmethod
    def from_dict(cls, d: Mapping, src: str = "<scenario>", repair: bool = False) -> "Scenario":
        """Build and validate a Scenario from a ScenarioNet dict; errors name ``src`` and the field.

        Args:
            d: the ScenarioNet dict.
            src: name used in errors (usually the file path).
            repair: drop map features that cannot be used (lanes with fewer than 2 points) instead
                of raising; each repair is recorded in ``metadata["bevgen_repairs"]``. Real logs do
                contain such lanes (one of the shared Waymo scenes has a 1-point lane).

        Returns:
            The validated Scenario.
        """
        with _field(src, "<scenario>"):
            return cls._from_dict(d, src, repair)

    @classmethod
    def _from_dict(cls, d: Mapping, src: str, repair: bool) -> "Scenario":
        if not isinstance(d, Mapping):
            raise ScenarioError(src, "<root>", f"expected a scenario dict, got {type(d).__name__}")
        for key in ("id", "length", "tracks", "map_features", "dynamic_map_states", "metadata"):
            _require(d, key, src, "")
        length = d["length"]
        if isinstance(length, np.integer):
            length = int(length)
        if not isinstance(length, int) or length < 1:
            raise ScenarioError(src, "length", f"must be a positive int, got {length!r}")
        meta = _require(d, "metadata", src, "", Mapping)
        _require(meta, "sdc_id", src, "metadata")
        tracks = _tracks_from_dict(_require(d, "tracks", src, "", Mapping), length, src)
        map_features = {}
        for k, v in _require(d, "map_features", src, "", Mapping).items():
            with _field(src, f"map_features[{k!r}]"):
                map_features[str(k)] = _map_feature_from_dict(v, src, f"map_features[{k!r}]", k)
        meta = dict(meta)
        if repair:
            bad = [k for k, f in map_features.items() if f.is_lane and (f.polyline is None or len(f.polyline) < 2)]
            if bad:
                for k in bad:
                    del map_features[k]
                meta["bevgen_repairs"] = list(meta.get("bevgen_repairs", [])) + [
                    f"dropped {len(bad)} lane(s) with fewer than 2 points: {', '.join(map(repr, bad[:5]))}"]
        lights = {}
        for k, v in _require(d, "dynamic_map_states", src, "", Mapping).items():
            with _field(src, f"dynamic_map_states[{k!r}]"):
                lights[str(k)] = _light_from_dict(v, length, src, f"dynamic_map_states[{k!r}]", k)
        if "ts" in meta:
            ts = _array(meta["ts"], src, "metadata.ts")
            if ts.shape != (length,):
                raise ScenarioError(src, "metadata.ts", f"shape {ts.shape} disagrees with length {length}")
        root = RootSource(keys=tuple(d), values={k: v for k, v in d.items() if k not in _ROOT_PARSED})
        return cls(id=str(d["id"]), length=length, tracks=tracks, map_features=map_features,
                   traffic_lights=lights, metadata=meta, version=str(d.get("version", "bevgen")), source=root
                   ).validate(src)

    def to_dict(self) -> dict:
        """ScenarioNet dict (plain Python + numpy only), loadable by MetaDrive's ScenarioEnv.

        A scenario loaded with :meth:`from_dict` is written back exactly as it was read (dtypes, shapes,
        containers, key order; see :mod:`sim_bridge.source_layout`); agents, features and lights made in
        code are written as float32 arrays with the ScenarioNet keys.
        """
        tr = self.tracks
        tracks = {}
        for i, aid in enumerate(tr.ids):
            src = tr.sources[i] if tr.sources else None
            tracks[aid if src is None else src.key] = _track_to_dict(tr, i, self.length, src)
        map_features = {(fid if f.source is None else f.source.key): _feature_to_dict(f)
                        for fid, f in self.map_features.items()}
        lights = {(lid if tl.source is None else tl.source.key): _light_to_dict(tl)
                  for lid, tl in self.traffic_lights.items()}
        meta = dict(self.metadata)
        parts = {"id": self.id, "version": self.version, "length": self.length, "tracks": tracks,
                 "dynamic_map_states": lights, "map_features": map_features, "metadata": meta}
        if self.source is None:
            meta.setdefault("ts", np.arange(self.length, dtype=np.float64) * STEP_SECONDS)
            meta.setdefault("metadrive_processed", False)
            meta.setdefault("coordinate", "right-handed")
            meta.setdefault("dataset", "unknown")
            meta.setdefault("scenario_id", self.id)
            meta.setdefault("id", self.id)
            return parts
        for k, raw in self.source.values.items():  # the source's own objects (id/version/length if unchanged)
            if k not in parts or str(raw) == str(parts[k]):
                parts[k] = raw
        return {k: parts[k] for k in [*self.source.keys, *(k for k in parts if k not in self.source.keys)]
                if k in parts and (k in self.source.keys or k != "version")}


_ROOT_PARSED = ("tracks", "dynamic_map_states", "map_features", "metadata")


def _typed_state(tr: AgentTracks, i: int) -> dict[str, np.ndarray]:
    return {"position": tr.position[i], "heading": tr.heading[i], "velocity": tr.velocity[i], "valid": tr.valid[i],
            "length": tr.size[i, :, 0], "width": tr.size[i, :, 1], "height": tr.size[i, :, 2]}


def _track_to_dict(tr: AgentTracks, i: int, length: int, src: TrackSource | None) -> dict:
    typed = _typed_state(tr, i)
    extra = tr.extra_state[i] if tr.extra_state else {}
    meta_in = dict(tr.metadata[i]) if tr.metadata else {}
    if src is None:
        state = {k: (v.copy() if k == "valid" else v.astype(np.float32)) for k, v in typed.items()}
        state.update(extra)
        meta = {**meta_in}
        meta.setdefault("track_length", length)
        meta.setdefault("type", tr.types[i])
        meta.setdefault("object_id", tr.ids[i])
        return {"type": tr.types[i], "state": state, "metadata": meta}
    state = {}
    for k in src.state_keys:
        if k in _CORE_STATE_KEYS:
            state[k] = restore(typed[k], src.leaves[k])
        elif k in extra:
            state[k] = extra[k]
    for k in _CORE_STATE_KEYS:  # a field the source lacked is written once it holds something
        if k not in state and src.leaves[k] is ABSENT and np.any(typed[k]):
            state[k] = typed[k].astype(np.float32)
    state.update({k: v for k, v in extra.items() if k not in state})
    parts = {"type": tr.types[i], "state": state, "metadata": copy.copy(tr.metadata[i]) if tr.metadata else {},
             **src.other}
    return {k: parts[k] for k in src.keys if k in parts}


def _feature_to_dict(f: MapFeature) -> dict:
    m = {"type": f.type, **f.extras}
    for name, pts in (("polyline", f.polyline), ("polygon", f.polygon)):
        if pts is not None:
            m[name] = pts if f.source is None or name not in f.source.leaves else restore(pts, f.source.leaves[name])
    if f.source is None:
        return m
    return {k: m[k] for k in [*f.source.keys, *(k for k in m if k not in f.source.keys)] if k in m}


def _light_to_dict(tl: TrafficLight) -> dict:
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
        parts["stop_point"] = restore(tl.stop_point, src.stop_point)
    elif "stop_point" in src.keys:
        parts["stop_point"] = None
    return {k: parts[k] for k in [*src.keys, *(k for k in parts if k not in src.keys)] if k in parts}


_TRACK_KEYS = ("type", "state", "metadata")


def _tracks_from_dict(tracks: Mapping, length: int, src: str) -> AgentTracks:
    ids, types, extras, metas, sources = [], [], [], [], []
    pos, head, vel, size, valid = [], [], [], [], []
    for aid, t in tracks.items():
        where = f"tracks[{aid!r}]"
        with _field(src, where):
            typ = _require(t, "type", src, where)
            st = _require(t, "state", src, where, Mapping)
            for key in ("position", "heading", "valid"):
                _require(st, key, src, f"{where}.state")
            p = _array(st["position"], src, f"{where}.state.position")
            if p.ndim != 2 or p.shape[0] != length or p.shape[1] not in (2, 3):
                raise ScenarioError(src, f"{where}.state.position",
                                    f"shape {p.shape} disagrees with scenario length {length} (expected ({length}, 3))")
            if p.shape[1] == 2:
                p = np.concatenate([p, np.zeros((length, 1))], axis=1)
            typed = {"position": p,
                     "heading": _per_step(st["heading"], length, src, f"{where}.state.heading", None),
                     "valid": _per_step(st["valid"], length, src, f"{where}.state.valid", None).astype(bool),
                     "velocity": (_per_step(st["velocity"], length, src, f"{where}.state.velocity", 2)
                                  if "velocity" in st else np.zeros((length, 2)))}
            for k in ("length", "width", "height"):
                typed[k] = _per_step(st[k], length, src, f"{where}.state.{k}", None) if k in st else np.zeros(length)
            ids.append(str(aid))
            types.append(str(typ))
            pos.append(p)
            head.append(typed["heading"])
            valid.append(typed["valid"])
            vel.append(typed["velocity"])
            size.append(np.stack([typed["length"], typed["width"], typed["height"]], axis=-1))
            extras.append({k: v for k, v in st.items() if k not in _CORE_STATE_KEYS})
            metas.append(copy.copy(t.get("metadata", {})))
            sources.append(TrackSource(
                key=aid, keys=tuple(t), state_keys=tuple(st),
                other={k: v for k, v in t.items() if k not in _TRACK_KEYS},
                leaves={k: leaf_of(st.get(k), v) for k, v in typed.items()}))
    a = len(ids)
    return AgentTracks(
        ids=tuple(ids), types=tuple(types),
        position=np.stack(pos) if a else np.zeros((0, length, 3)),
        heading=np.stack(head) if a else np.zeros((0, length)),
        velocity=np.stack(vel) if a else np.zeros((0, length, 2)),
        size=np.stack(size) if a else np.zeros((0, length, 3)),
        valid=np.stack(valid) if a else np.zeros((0, length), bool),
        extra_state=tuple(extras), metadata=tuple(metas), sources=tuple(sources))


def _map_feature_from_dict(m: Mapping, src: str, where: str, fid: Any = None) -> MapFeature:
    typ = str(_require(m, "type", src, where))
    pts = {}
    for key in ("polyline", "polygon"):
        if key in m and m[key] is not None:
            a = _array(m[key], src, f"{where}.{key}")
            if a.ndim != 2 or a.shape[-1] not in (2, 3):
                if a.size == 0 and key == "polyline":
                    a = a.reshape(0, 2)
                else:
                    raise ScenarioError(src, f"{where}.{key}", f"shape {a.shape}, expected [N, 2|3] points")
            pts[key] = a
    extras = {k: v for k, v in m.items() if k not in ("type", "polyline", "polygon")}
    source = FeatureSource(key=fid, keys=tuple(m), leaves={k: leaf_of(m[k], v) for k, v in pts.items()})
    return MapFeature(type=typ, polyline=pts.get("polyline"), polygon=pts.get("polygon"), extras=extras, source=source)


def _light_from_dict(m: Mapping, length: int, src: str, where: str, key: Any = None) -> TrafficLight:
    st = _require(m, "state", src, where, Mapping)
    raw_states = _require(st, "object_state", src, f"{where}.state")
    states = tuple(str(s) for s in raw_states)
    stop = m.get("stop_point")
    stop_point = None if stop is None else _array(stop, src, f"{where}.stop_point")
    extras = {k: v for k, v in m.items() if k not in ("lane", "stop_point", "state")}
    source = LightSource(key=key, keys=tuple(m), state_keys=tuple(st),
                         state_other={k: v for k, v in st.items() if k != "object_state"},
                         stop_point=leaf_of(stop, stop_point) if stop is not None else ABSENT,
                         states_raw=raw_states, lane_raw=m.get("lane", ""))
    return TrafficLight(lane=str(m.get("lane", "")), stop_point=stop_point, states=states, extras=extras,
                        source=source)


# ---- files ---------------------------------------------------------------------------------
def load_scenario_dict(path: str | Path) -> dict:
    """Safely unpickle one scenario file (see :mod:`sim_bridge.safe_pickle`)."""
    d = safe_load(path)
    if not isinstance(d, dict):
        raise ScenarioError(str(path), "<root>", f"expected a scenario dict, got {type(d).__name__}")
    return d


def load_scenario(path: str | Path, repair: bool = False) -> Scenario:
    """Load and validate one scenario file (see ``Scenario.from_dict`` for ``repair``).

    Raises:
        ScenarioError, UnsafePickleError, CorruptFileError: with the file and field named.
    """
    return Scenario.from_dict(load_scenario_dict(path), src=str(path), repair=repair)


def _atomic_pickle(obj: Any, path: Path) -> None:
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_scenario(scenario: Scenario | Mapping, path: str | Path) -> Path:
    """Validate and write one scenario file atomically (temp file + rename). Returns the path."""
    path = Path(path)
    d = scenario.to_dict() if isinstance(scenario, Scenario) else dict(scenario)
    if not isinstance(scenario, Scenario):
        Scenario.from_dict(d, src=str(path))
    _atomic_pickle(d, path)
    return path


def summarize(d: Mapping) -> dict:
    """Summary entry for ``dataset_summary.pkl``: metadata + object and number summaries."""
    meta = {k: v for k, v in d["metadata"].items() if k not in ("object_summary", "number_summary")}
    objects = {}
    for aid, t in d["tracks"].items():
        st = t["state"]
        valid = np.asarray(st["valid"]).astype(bool)
        xy = np.asarray(st["position"])[valid][:, :2]
        run = _first_run_length(valid)
        objects[str(aid)] = {"type": t["type"], "object_id": str(aid), "track_length": int(len(valid)),
                             "moving_distance": float(np.linalg.norm(np.diff(xy, axis=0), axis=-1).sum()),
                             "valid_length": int(valid.sum()), "continuous_valid_length": int(run)}
    types = Counter(t["type"] for t in d["tracks"].values())
    light_states = Counter(s for tl in d["dynamic_map_states"].values() for s in tl["state"]["object_state"])
    numbers = {"num_objects": len(d["tracks"]), "object_types": set(types),
               "num_objects_each_type": dict(types),
               "num_moving_objects": sum(o["moving_distance"] > 1.0 for o in objects.values()),
               "num_traffic_lights": len(d["dynamic_map_states"]),
               "num_traffic_light_types": set(light_states), "num_traffic_light_each_step": dict(light_states),
               "num_map_features": len(d["map_features"])}
    return {**meta, "object_summary": objects, "number_summary": numbers}


def _first_run_length(valid: np.ndarray) -> int:
    """Length of the first run of consecutive True values in a bool [T] mask."""
    if not valid.any():
        return 0
    rest = valid[int(np.argmax(valid)):]
    return int(rest.size if rest.all() else np.argmin(rest))


# ---- dataset directories ------------------------------------------------------------------
class ScenarioDataset:
    """A dataset directory: scenario files indexed by ``dataset_summary.pkl``/``dataset_mapping.pkl``.

    Opening checks the index (safely unpickled) and that every file it names exists; a missing
    index is rebuilt from the ``*.pkl`` files present so that un-indexed folders still open.
    """

    def __init__(self, root: str | Path, repair: bool = False):
        self.root = Path(root)
        self.repair = repair
        if not self.root.is_dir():
            raise ScenarioError(str(self.root), "<dataset>", "not a directory")
        summary_path, mapping_path = self.root / SUMMARY_FILE, self.root / MAPPING_FILE
        if summary_path.exists():
            summary = safe_load(summary_path)
            if not isinstance(summary, dict):
                raise ScenarioError(str(summary_path), "<root>", "expected a dict of file name -> metadata")
        else:
            summary = {p.name: {} for p in sorted(self.root.glob("*.pkl"))
                       if p.name not in (SUMMARY_FILE, MAPPING_FILE)}
        mapping = safe_load(mapping_path) if mapping_path.exists() else {}
        if not isinstance(mapping, dict):
            raise ScenarioError(str(mapping_path), "<root>", "expected a dict of file name -> sub-folder")
        if not summary:
            raise ScenarioError(str(self.root), "<dataset>",
                                f"empty dataset directory: no scenario files and no entries in {SUMMARY_FILE}")
        self.summary: dict = summary
        self.mapping: dict = {k: str(mapping.get(k, "")) for k in summary}
        missing = [k for k in summary if not self.path_of(k).is_file()]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise ScenarioError(str(summary_path), "<summary>",
                                f"names {len(missing)} missing scenario file(s): {', '.join(missing[:3])}{more}")

    @property
    def names(self) -> list[str]:
        return list(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def path_of(self, name: str) -> Path:
        return self.root / self.mapping.get(name, "") / name

    def load(self, name: str) -> Scenario:
        return load_scenario(self.path_of(name), repair=self.repair)

    def __iter__(self) -> Iterator[Scenario]:
        for name in self.names:
            yield self.load(name)

    def iter_checked(self, names: list[str] | None = None) -> Iterator[tuple[str, Scenario | Exception]]:
        """Yield (file name, Scenario) or (file name, error) for every file (or ``names``): bad files never
        stop the loop."""
        for name in self.names if names is None else names:
            try:
                yield name, self.load(name)
            except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
                yield name, e


def write_index(root: str | Path, summaries: Mapping[str, dict], mapping: Mapping[str, str] | None = None) -> None:
    """Write ``dataset_summary.pkl`` and ``dataset_mapping.pkl`` atomically."""
    root = Path(root)
    _atomic_pickle(dict(summaries), root / SUMMARY_FILE)
    _atomic_pickle({k: (mapping or {}).get(k, "") for k in summaries}, root / MAPPING_FILE)


@dataclass
class ConversionReport:
    """What a conversion wrote and what it skipped, with the reason for each bad item."""

    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        return {"written": self.written, "reused": self.reused,
                "failed": [{"item": n, "error": e} for n, e in self.failed],
                "repaired": [{"item": n, "repair": r} for n, r in self.repaired]}


class DatasetWriter:
    """Write a dataset directory scenario by scenario; resumable and tolerant of bad items.

    Every scenario is validated, then written atomically; the index is rewritten atomically after
    each ``flush_every`` scenarios and on close, so a killed job leaves a loadable directory and a
    rerun (``resume=True``) keeps what is already there. A bad item is recorded with its reason in
    the report (and ``conversion_report.json``) and never stops the good ones.
    """

    def __init__(self, root: str | Path, resume: bool = True, flush_every: int = 16, repair: bool = False):
        self.root = Path(root)
        self.repair = repair
        self.root.mkdir(parents=True, exist_ok=True)
        self.report = ConversionReport()
        self.summaries: dict[str, dict] = {}
        self.flush_every = flush_every
        if resume and (self.root / SUMMARY_FILE).exists():
            try:
                old = safe_load(self.root / SUMMARY_FILE)
                self.summaries = {k: v for k, v in old.items() if (self.root / k).is_file()}
            except (UnsafePickleError, CorruptFileError):
                self.summaries = {}

    def has(self, filename: str) -> bool:
        return filename in self.summaries

    def reuse(self, filename: str) -> None:
        self.report.reused.append(filename)

    def add(self, filename: str, d: Scenario | Mapping) -> Path:
        """Validate ``d`` (a Scenario or a ScenarioNet dict) and write it as ``filename``; raises ScenarioError
        on a bad scenario."""
        path = self.root / filename
        if Path(filename).name != filename or not filename.endswith(".pkl") or filename in (SUMMARY_FILE, MAPPING_FILE):
            raise ScenarioError(filename, "<file name>", "must be a plain '*.pkl' file name")
        if isinstance(d, Scenario):
            d = d.validate(filename).to_dict()
        sc = Scenario.from_dict(d, src=filename, repair=self.repair)
        repairs = sc.metadata.get("bevgen_repairs", [])
        if repairs != d["metadata"].get("bevgen_repairs", []):  # drop what from_dict dropped
            d = {**d, "metadata": sc.metadata,
                 "map_features": {k: v for k, v in d["map_features"].items() if str(k) in sc.map_features}}
            self.report.repaired.append((filename, "; ".join(repairs)))
        _atomic_pickle(dict(d), path)
        self.summaries[filename] = summarize(d)
        self.report.written.append(filename)
        if len(self.report.written) % self.flush_every == 0:
            self.flush()
        return path

    def fail(self, item: str, error: BaseException | str) -> None:
        self.report.failed.append((item, str(error)))

    def add_or_fail(self, item: str, filename: str, d: Scenario | Mapping | BaseException) -> bool:
        """Write a good item, record a bad one (an exception or a dict failing validation)."""
        if isinstance(d, BaseException):
            self.fail(item, d)
            return False
        try:
            self.add(filename, d)
            return True
        except ScenarioError as e:
            self.fail(item, e)
            return False

    def flush(self) -> None:
        if self.summaries:
            write_index(self.root, self.summaries)

    def close(self) -> ConversionReport:
        import json

        self.flush()
        (self.root / "conversion_report.json").write_text(json.dumps(self.report.to_json(), indent=2))
        return self.report

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(a) + math.pi) % (2 * math.pi) - math.pi
