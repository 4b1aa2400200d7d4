"""The scenario contract: a typed view of ScenarioNet's scenario description.

On disk a scenario is one pickle holding a plain dict (the format MetaDrive's ``ScenarioEnv``
reads); a *dataset directory* holds scenario files plus ``dataset_summary.pkl`` (file name ->
metadata and summaries) and ``dataset_mapping.pkl`` (file name -> sub-folder, "" for flat).
This module and :mod:`sim_bridge.scenario_encoding` are the only places that convert between that dict
and the typed classes below; typed edits (add, extend, drop agents) are :mod:`sim_bridge.scenario_edit`;
dataset directories are :mod:`sim_bridge.dataset`.

Units and frames (for every source):
    world frame, right-handed, metres; heading in radians, counter-clockwise from +x;
    velocity in m/s in the world frame; one step = 0.1 s (10 Hz); ``length`` steps.

Einsum letters: a agent, t time, n point.
"""

from __future__ import annotations

import copy
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runkit.atomic import atomic_write
from sim_bridge.safe_pickle import safe_load
from sim_bridge.scenario_encoding import (CORE_STATE_KEYS, ROOT_PARSED, STEP_SECONDS, FeatureSource,
                                         LightSource, RootSource, ScenarioError, TrackSource, as_array,
                                         feature_to_dict, field_errors, light_to_dict, per_step, require,
                                         track_to_dict)
from sim_bridge.scenario_edit import keep_tracks, track_of, with_tracks

__all__ = [
    "ScenarioError", "AgentTracks", "MapFeature", "TrafficLight", "Scenario",
    "load_scenario", "load_scenario_dict", "save_scenario", "atomic_pickle", "STEP_SECONDS",
    "SUMMARY_FILE", "MAPPING_FILE", "LANE_TYPES", "ROAD_LINE_TYPES", "ROAD_EDGE_TYPES",
]

SUMMARY_FILE = "dataset_summary.pkl"
MAPPING_FILE = "dataset_mapping.pkl"

LANE_TYPES = frozenset({"LANE_SURFACE_STREET", "LANE_SURFACE_UNSTRUCTURE", "LANE_FREEWAY",
                        "LANE_BIKE_LANE", "LANE_UNKNOWN"})
ROAD_LINE_TYPES = frozenset({
    "UNKNOWN_LINE", "ROAD_LINE_BROKEN_SINGLE_WHITE", "ROAD_LINE_SOLID_SINGLE_WHITE",
    "ROAD_LINE_SOLID_DOUBLE_WHITE", "ROAD_LINE_BROKEN_SINGLE_YELLOW", "ROAD_LINE_BROKEN_DOUBLE_YELLOW",
    "ROAD_LINE_SOLID_SINGLE_YELLOW", "ROAD_LINE_SOLID_DOUBLE_YELLOW", "ROAD_LINE_PASSING_DOUBLE_YELLOW"})
# MetaDrive spells an unknown road line "UNKNOWN_LINE" and an unknown road edge "UNKNOWN".
ROAD_EDGE_TYPES = frozenset({"UNKNOWN", "ROAD_EDGE_BOUNDARY", "ROAD_EDGE_MEDIAN", "ROAD_EDGE_SIDEWALK",
                             "GUARDRAIL"})


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

    # ---- typed edits (sim_bridge.scenario_edit): new Scenarios, untouched parts written bit for bit ----
    def track(self, agent_id: str):
        """One agent as a :class:`~sim_bridge.scenario_edit.Track` (arrays [T, ...], its storage kept)."""
        return track_of(self, agent_id)

    def with_tracks(self, tracks: Mapping) -> "Scenario":
        """A new Scenario with ``tracks`` (agent id -> Track) replacing agents of the same id or appended."""
        return with_tracks(self, tracks)

    def keep_tracks(self, agent_ids) -> "Scenario":
        """A new Scenario holding only the agents ``agent_ids`` (in this scenario's order)."""
        return keep_tracks(self, agent_ids)

    # ---- dict conversion (the only place that knows the ScenarioNet layout) -------------
    @classmethod
    def from_dict(cls, d: Mapping, src: str = "<scenario>", repair: bool = False) -> "Scenario":
        """Build and validate a Scenario from a ScenarioNet dict; errors name ``src`` and the field.

        Args:
            d: the ScenarioNet dict (a Scenario is validated and returned as it is).
            src: name used in errors (usually the file path).
            repair: drop map features that cannot be used (lanes with fewer than 2 points) instead
                of raising; each repair is recorded in ``metadata["bevgen_repairs"]``. Real logs do
                contain such lanes (one of the shared Waymo scenes has a 1-point lane).

        Returns:
            The validated Scenario.
        """
        with field_errors(src, "<scenario>"):
            return cls._from_dict(d, src, repair)

    @classmethod
    def _from_dict(cls, d: Mapping, src: str, repair: bool) -> "Scenario":
        if not isinstance(d, Mapping):
            raise ScenarioError(src, "<root>", f"expected a scenario dict, got {type(d).__name__}")
        for key in ("id", "length", "tracks", "map_features", "dynamic_map_states", "metadata"):
            require(d, key, src, "")
        length = d["length"]
        if isinstance(length, np.integer):
            length = int(length)
        if not isinstance(length, int) or length < 1:
            raise ScenarioError(src, "length", f"must be a positive int, got {length!r}")
        meta = require(d, "metadata", src, "", Mapping)
        require(meta, "sdc_id", src, "metadata")
        tracks = _tracks_from_dict(require(d, "tracks", src, "", Mapping), length, src)
        map_features = {}
        for k, v in require(d, "map_features", src, "", Mapping).items():
            with field_errors(src, f"map_features[{k!r}]"):
                map_features[str(k)] = _map_feature_from_dict(v, src, f"map_features[{k!r}]", k)
        meta, repairs = dict(meta), ()
        if repair:
            bad = [k for k, f in map_features.items() if f.is_lane and (f.polyline is None or len(f.polyline) < 2)]
            if bad:
                for k in bad:
                    del map_features[k]
                repairs = (f"dropped {len(bad)} lane(s) with fewer than 2 points: {', '.join(map(repr, bad[:5]))}",)
                meta["bevgen_repairs"] = list(meta.get("bevgen_repairs", [])) + list(repairs)
        lights = {}
        for k, v in require(d, "dynamic_map_states", src, "", Mapping).items():
            with field_errors(src, f"dynamic_map_states[{k!r}]"):
                lights[str(k)] = _light_from_dict(v, length, src, f"dynamic_map_states[{k!r}]", k)
        if "ts" in meta:
            ts = as_array(meta["ts"], src, "metadata.ts")
            if ts.shape != (length,):
                raise ScenarioError(src, "metadata.ts", f"shape {ts.shape} disagrees with length {length}")
        root = RootSource(keys=tuple(d), values={k: v for k, v in d.items() if k not in ROOT_PARSED}, repairs=repairs)
        return cls(id=str(d["id"]), length=length, tracks=tracks, map_features=map_features,
                   traffic_lights=lights, metadata=meta, version=str(d.get("version", "bevgen")), source=root
                   ).validate(src)

    def to_dict(self) -> dict:
        """ScenarioNet dict (plain Python + numpy only), loadable by MetaDrive's ScenarioEnv.

        A scenario loaded with :meth:`from_dict` is written back exactly as it was read (dtypes, shapes,
        containers, key order; see :mod:`sim_bridge.scenario_encoding`); agents, features and lights made in
        code are written as float32 arrays with the ScenarioNet keys.
        """
        tr = self.tracks
        tracks = {}
        for i, aid in enumerate(tr.ids):
            src = tr.sources[i] if tr.sources else None
            tracks[aid if src is None else src.key] = track_to_dict(tr, i, self.length, src)
        map_features = {(fid if f.source is None else f.source.key): feature_to_dict(f)
                        for fid, f in self.map_features.items()}
        lights = {(lid if tl.source is None else tl.source.key): light_to_dict(tl)
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


_TRACK_KEYS = ("type", "state", "metadata")


def _tracks_from_dict(tracks: Mapping, length: int, src: str) -> AgentTracks:
    ids, types, extras, metas, sources = [], [], [], [], []
    pos, head, vel, size, valid = [], [], [], [], []
    for aid, t in tracks.items():
        where = f"tracks[{aid!r}]"
        with field_errors(src, where):
            typ = require(t, "type", src, where)
            st = require(t, "state", src, where, Mapping)
            for key in ("position", "heading", "valid"):
                require(st, key, src, f"{where}.state")
            p = as_array(st["position"], src, f"{where}.state.position")
            if p.ndim != 2 or p.shape[0] != length or p.shape[1] not in (2, 3):
                raise ScenarioError(src, f"{where}.state.position",
                                    f"shape {p.shape} disagrees with scenario length {length} (expected ({length}, 3))")
            if p.shape[1] == 2:
                p = np.concatenate([p, np.zeros((length, 1))], axis=1)
            typed = {"position": p,
                     "heading": per_step(st["heading"], length, src, f"{where}.state.heading", None),
                     "valid": per_step(st["valid"], length, src, f"{where}.state.valid", None).astype(bool),
                     "velocity": (per_step(st["velocity"], length, src, f"{where}.state.velocity", 2)
                                  if "velocity" in st else np.zeros((length, 2)))}
            for k in ("length", "width", "height"):
                typed[k] = per_step(st[k], length, src, f"{where}.state.{k}", None) if k in st else np.zeros(length)
            ids.append(str(aid))
            types.append(str(typ))
            pos.append(p)
            head.append(typed["heading"])
            valid.append(typed["valid"])
            vel.append(typed["velocity"])
            size.append(np.stack([typed["length"], typed["width"], typed["height"]], axis=-1))
            extras.append({k: v for k, v in st.items() if k not in CORE_STATE_KEYS})
            metas.append(copy.copy(t.get("metadata", {})))
            sources.append(TrackSource(
                key=aid, keys=tuple(t), state_keys=tuple(st),
                other={k: v for k, v in t.items() if k not in _TRACK_KEYS},
                state=st))
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
    typ = str(require(m, "type", src, where))
    pts = {}
    for key in ("polyline", "polygon"):
        if key in m and m[key] is not None:
            a = as_array(m[key], src, f"{where}.{key}")
            if a.ndim != 2 or a.shape[-1] not in (2, 3):
                if a.size == 0 and key == "polyline":
                    a = a.reshape(0, 2)
                else:
                    raise ScenarioError(src, f"{where}.{key}", f"shape {a.shape}, expected [N, 2|3] points")
            pts[key] = a
    extras = {k: v for k, v in m.items() if k not in ("type", "polyline", "polygon")}
    source = FeatureSource(key=fid, keys=tuple(m), points={k: m[k] for k in pts})
    return MapFeature(type=typ, polyline=pts.get("polyline"), polygon=pts.get("polygon"), extras=extras, source=source)


def _light_from_dict(m: Mapping, length: int, src: str, where: str, key: Any = None) -> TrafficLight:
    st = require(m, "state", src, where, Mapping)
    raw_states = require(st, "object_state", src, f"{where}.state")
    states = tuple(str(s) for s in raw_states)
    stop = m.get("stop_point")
    stop_point = None if stop is None else as_array(stop, src, f"{where}.stop_point")
    extras = {k: v for k, v in m.items() if k not in ("lane", "stop_point", "state")}
    source = LightSource(key=key, keys=tuple(m), state_keys=tuple(st),
                         state_other={k: v for k, v in st.items() if k != "object_state"},
                         stop_point=stop,
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


def atomic_pickle(obj: Any, path: Path) -> None:
    """Pickle ``obj`` to ``path`` through a temp file and a rename: a killed job never leaves half a file."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)

    atomic_write(path, write)


def save_scenario(scenario: Scenario | Mapping, path: str | Path) -> Path:
    """Validate and write one scenario file atomically (temp file + rename). Returns the path."""
    path = Path(path)
    d = scenario.to_dict() if isinstance(scenario, Scenario) else dict(scenario)
    if not isinstance(scenario, Scenario):
        Scenario.from_dict(d, src=str(path))
    atomic_pickle(d, path)
    return path
