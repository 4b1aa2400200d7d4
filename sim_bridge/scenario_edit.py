"""Typed edits of a :class:`~sim_bridge.scenario.Scenario`: one agent as a :class:`Track`, and new Scenarios with
agents added, replaced (e.g. extended) or dropped. Nothing here edits a ScenarioNet dict.

Every edit returns a new Scenario (``dataclasses.replace``) and keeps everything it does not touch: written with
``to_dict``, the other agents, the map, the lights, the metadata and the key orders are the source's bit for bit.
An edited or added agent is *settled*: written the way it will be stored (a loaded agent like its source, keys,
dtypes and shapes; a new one with every ScenarioNet state key, floats in ``Track.dtype``, ``valid`` bool) and read
back, so its typed arrays hold exactly the values a reader of the written file gets. O(A x T) per edit.

Einsum letters: a agent, t time.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_bridge.scenario_encoding import STEP_SECONDS, ScenarioError, TrackSource, track_to_dict

# sim_bridge.scenario is imported lazily (in _settle): it imports this module at its top (cycle).

if TYPE_CHECKING:  # sim_bridge.scenario imports this module at its top: a cycle
    from sim_bridge.scenario import AgentTracks, Scenario

__all__ = ["Track", "track_of", "with_tracks", "keep_tracks"]

_ARRAYS = ("position", "heading", "velocity", "size", "valid")


@dataclass(frozen=True)
class Track:
    """One agent over T steps: the unit of typed edits (:meth:`Scenario.with_tracks`). Its id is its key there.

    Attributes:
        type: MetaDrive type name (VEHICLE, PEDESTRIAN, CYCLIST, ...).
        position: float64 [T, 3], m, world frame; z is the box centre.
        heading: float64 [T], rad, world frame.
        velocity: float64 [T, 2], m/s, world frame.
        size: float64 [T, 3], (length, width, height) in m.
        valid: bool [T].
        metadata: the track's metadata dict.
        extra_state: other per-step state entries (throttle, ...), written verbatim.
        dtype: numpy dtype string the float state arrays of a new track are written in ("<f4", ScenarioNet's);
            a loaded track reports its stored position's dtype (its own storage is kept when written).
        source: how the source dict stored the track (None when made in code).
    """

    type: str
    position: np.ndarray
    heading: np.ndarray
    velocity: np.ndarray
    size: np.ndarray
    valid: np.ndarray
    metadata: dict = field(default_factory=dict)
    extra_state: dict = field(default_factory=dict)
    dtype: str = "<f4"
    source: TrackSource | None = None

    @classmethod
    def from_arrays(cls, type: str, position: Any, heading: Any, velocity: Any = None, length: Any = 0.0,
                    width: Any = 0.0, height: Any = 0.0, valid: Any = None, metadata: Mapping | None = None,
                    dtype: Any = np.float32) -> "Track":
        """A new track from per-step arrays (T from ``heading``).

        Args:
            type: MetaDrive type name.
            position: [T, 3] or [T, 2] (z = 0), m, world frame.
            heading: [T], rad.
            velocity: [T, 2] m/s; None = zeros.
            length, width, height: [T] or scalars, m.
            valid: bool [T]; None = valid at every step.
            metadata: the track's metadata (copied).
            dtype: float dtype of the written state arrays (float32 as ScenarioNet, or a source's own).

        Returns:
            The validated Track (float64 arrays, ``valid`` bool).
        """
        heading = np.asarray(heading, np.float64).reshape(-1)
        T = len(heading)
        pos = np.asarray(position, np.float64)
        if pos.ndim == 2 and pos.shape[1] == 2:
            pos = np.concatenate([pos, np.zeros((len(pos), 1))], axis=1)
        vel = np.zeros((T, 2)) if velocity is None else np.asarray(velocity, np.float64)
        size = np.stack([np.broadcast_to(np.asarray(v, np.float64), (T,)) for v in (length, width, height)], -1)
        ok = np.ones(T, bool) if valid is None else np.asarray(valid).astype(bool)
        return cls(type=str(type), position=pos, heading=heading, velocity=vel, size=size, valid=ok,
                   metadata=dict(metadata or {}), dtype=np.dtype(dtype).str).validate(T)

    @property
    def num_steps(self) -> int:
        return len(self.valid)

    def validate(self, length: int | None = None, src: str = "<track>") -> "Track":
        """Check the shapes against each other (and the scenario ``length``); raise ScenarioError naming the field."""
        T = self.num_steps if length is None else length
        want = {"position": (T, 3), "heading": (T,), "velocity": (T, 2), "size": (T, 3), "valid": (T,)}
        for name, shape in want.items():
            got = np.shape(getattr(self, name))
            if got != shape:
                raise ScenarioError(src, f"state.{name}", f"shape {got}, expected {shape}")
        if np.asarray(self.valid).dtype != np.bool_:
            raise ScenarioError(src, "state.valid", f"dtype {np.asarray(self.valid).dtype}, expected bool")
        if np.dtype(self.dtype).kind != "f":
            raise ScenarioError(src, "dtype", f"{self.dtype!r} is not a float dtype")
        return self

    def extended(self, start: int, xy: np.ndarray, heading: np.ndarray) -> "Track":
        """The track continued from step ``start`` (usually its last valid step + 1) along given poses.

        Steps before ``start`` are unchanged; steps ``start..T-1`` take ``xy`` [S, 2] and ``heading`` [S]
        (world frame, S = T - start), are marked valid, hold z and size of step ``start - 1``, and get the
        velocity of the finite differences at 10 Hz (from the pose at ``start - 1``). The metadata records
        ``bevgen_extended_from = start``.
        """
        T, e = self.num_steps, start - 1
        xy, heading = np.asarray(xy, np.float64), np.asarray(heading, np.float64)
        if not 1 <= start < T or xy.shape != (T - start, 2) or heading.shape != (T - start,):
            raise ValueError(f"extend from step {start} of {T} needs xy [{T - start}, 2] and heading "
                             f"[{T - start}], got {xy.shape} and {heading.shape}")
        pos, head, vel, size, valid = (np.array(getattr(self, k), copy=True) for k in _ARRAYS)
        vel[start:] = np.diff(np.concatenate([pos[e:start, :2], xy]), axis=0) / STEP_SECONDS
        pos[start:, :2], pos[start:, 2] = xy, pos[e, 2]
        head[start:] = heading
        size[start:] = size[e]
        valid[start:] = True
        return dataclasses.replace(self, position=pos, heading=head, velocity=vel, size=size, valid=valid,
                                   metadata={**self.metadata, "bevgen_extended_from": start})


def _per_agent(values: tuple, n: int, default) -> list:
    """A per-agent column of AgentTracks (``()`` means "default for every agent")."""
    return list(values) if values else [default() for _ in range(n)]


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def track_of(sc: Scenario, agent_id: str) -> Track:
    """Agent ``agent_id`` of ``sc`` as a Track (its arrays are read-only views of the scenario's; edits copy)."""
    tr = sc.tracks
    i = tr.index(agent_id)
    src = tr.sources[i] if tr.sources else None
    dtype = "<f4"
    if src is not None:
        stored = np.asarray(src.state["position"])
        dtype = stored.dtype.str if stored.dtype.kind == "f" else "<f8"
    return Track(type=tr.types[i], **{k: _read_only(getattr(tr, k)[i]) for k in _ARRAYS},
                 metadata=copy.copy(tr.metadata[i]) if tr.metadata else {},
                 extra_state=dict(tr.extra_state[i]) if tr.extra_state else {}, dtype=dtype, source=src)


def _settle(aid: str, track: Track, length: int) -> AgentTracks:
    """``track`` as one-agent AgentTracks read back from the dict it is written as (see the module docstring)."""
    from sim_bridge.scenario import AgentTracks, _tracks_from_dict

    row = AgentTracks(ids=(aid,), types=(track.type,), **{k: np.asarray(getattr(track, k))[None] for k in _ARRAYS},
                      extra_state=(track.extra_state,), metadata=(track.metadata,), sources=(track.source,))
    d = track_to_dict(row, 0, length, track.source, dtype=track.dtype)
    key = aid if track.source is None else track.source.key
    return _tracks_from_dict({key: d}, length, f"<edited track {aid!r}>")


def with_tracks(sc: Scenario, tracks: Mapping[str, Track]) -> Scenario:
    """A new Scenario where each ``tracks`` entry (agent id -> Track) replaces the agent of that id in place, or
    is appended after the others (in the mapping's order). Every other agent stays bit-identical when written.

    Raises:
        ScenarioError: a track's shapes disagree with the scenario length.
    """
    tr, T = sc.tracks, sc.length
    n = tr.num_agents
    ids, types = list(tr.ids), list(tr.types)
    extra, meta = _per_agent(tr.extra_state, n, dict), _per_agent(tr.metadata, n, dict)
    sources = _per_agent(tr.sources, n, lambda: None)
    arrays = {k: getattr(tr, k) for k in _ARRAYS}
    replaced: dict[int, AgentTracks] = {}
    added: list[AgentTracks] = []
    for aid, track in tracks.items():
        aid = str(aid)
        row = _settle(aid, track.validate(T, f"{sc.id}: tracks[{aid!r}]"), T)
        if aid in tr.ids:
            i = tr.index(aid)
            replaced[i] = row
            types[i] = row.types[0]
        else:
            added.append(row)
            ids.append(aid)
            types.append(row.types[0])
        for col, j in ((extra, "extra_state"), (meta, "metadata"), (sources, "sources")):
            value = getattr(row, j)[0]
            if aid in tr.ids:
                col[tr.index(aid)] = value
            else:
                col.append(value)
    out = {}
    for k, a in arrays.items():
        if replaced:
            a = a.copy()
            for i, row in replaced.items():
                a[i] = getattr(row, k)[0]
        out[k] = np.concatenate([a, *(getattr(r, k) for r in added)]) if added else a
    new = dataclasses.replace(tr, ids=tuple(ids), types=tuple(types), extra_state=tuple(extra),
                              metadata=tuple(meta), sources=tuple(sources), **out)
    return dataclasses.replace(sc, tracks=new)


def keep_tracks(sc: Scenario, agent_ids: Iterable[str]) -> Scenario:
    """A new Scenario holding only the agents ``agent_ids`` (kept in the scenario's order; each must exist)."""
    tr = sc.tracks
    keep = {str(a) for a in agent_ids}
    for a in keep:
        tr.index(a)  # KeyError naming an unknown id
    rows = [i for i, a in enumerate(tr.ids) if a in keep]
    take = lambda col: tuple(col[i] for i in rows) if col else ()
    new = dataclasses.replace(tr, ids=take(tr.ids), types=take(tr.types), extra_state=take(tr.extra_state),
                              metadata=take(tr.metadata), sources=take(tr.sources),
                              **{k: getattr(tr, k)[rows] for k in _ARRAYS})
    return dataclasses.replace(sc, tracks=new)
