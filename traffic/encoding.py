"""Vectorized scene encoding for traffic generation: a scenario frame -> padded arrays with masks.

The scene frame is the ego pose at ``t0``: x forward, y left, metres, radians. The map becomes short
vectors (polylines resampled every ``vector_length_m`` and cut into consecutive point pairs) around
the ego; agents valid at ``t0`` become feature rows; each vehicle is tied to its lane vector (the
placement target) and carries its future (the trajectory target). Everything is padded to fixed
shapes with masks so scenes batch.

Letters: b batch, m map vector, a agent, t future step.

Shapes (one scene; ``collate`` adds the leading b):
    map_feats   float32 [M, F_MAP]   see MAP_FEATURES
    map_pts     float32 [M, 2, 2]    start, end (scene frame, m)
    map_mask    bool    [M]
    lane_mask   bool    [M]          vector lies on a lane centre line (placement candidates)
    speed_limit float32 [M]          m/s, 0 where unknown
    agent_feats float32 [A, F_AGENT] see AGENT_FEATURES
    agent_state float32 [A, 7]       x, y, heading, vx, vy, length, width (scene frame)
    agent_hist  float32 [A, 2]       velocity change over the last second, v(t0) - v(t0 - 1 s) (scene frame, m/s;
                                     0 where the track has no state 1 s back)
    agent_type  int64   [A]          index into AGENT_TYPES
    agent_mask  bool    [A]          row 0 is the ego
    agent_index int64   [A]          track index of each row in the scenario, -1 for padding
    agent_lane  int64   [A]          lane vector index of each vehicle, -1 if none
    lane_offset float32 [A, 3]       (s in [0, 1] along the vector, lateral m (left +), heading - vector heading)
    future      float32 [A, T, 3]    x, y, heading at t0+1 .. t0+T (scene frame)
    future_mask bool    [A, T]
    origin      float64 [3]          world (x, y, yaw) of the scene frame

Cost: O(map points) resampling + O(A x M) lane assignment per scene, numpy-vectorized per feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from sim_bridge.scenario import LANE_TYPES, ROAD_EDGE_TYPES, ROAD_LINE_TYPES, Scenario
from sim_bridge.geometry import from_frame, rotate, to_frame, vectors_to_frame
from sim_bridge.geometry import wrap_angle as wrap
from traffic.lanes import resample_polylines

# torch is imported lazily (tensor collation only): encoding works on numpy without the `ml` extra.

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["EncodingConfig", "encode_scene", "collate", "to_world", "to_scene", "agent_feature_rows", "MAP_TYPES",
           "AGENT_TYPES", "MAP_FEATURES", "AGENT_FEATURES", "HIST_STEPS", "wrap", "point_to_segments",
           "transform_batch"]

MAP_TYPES = ("lane", "road_line", "road_edge", "crosswalk")
AGENT_TYPES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")
MAP_FEATURES = ("x0", "y0", "x1", "y1", "cos", "sin", "length", *[f"is_{t}" for t in MAP_TYPES], "speed_limit")
AGENT_FEATURES = ("x", "y", "cos", "sin", "vx", "vy", "length", "width", *[f"is_{t.lower()}" for t in AGENT_TYPES])
F_MAP, F_AGENT = len(MAP_FEATURES), len(AGENT_FEATURES)
HIST_STEPS = 10  # agent_hist looks this many steps (1 s at 10 Hz) back
MAX_PLAUSIBLE_LIMIT_MS = 60.0  # MetaDrive writes 1000 km/h for "no limit": treat as unknown


@dataclass(frozen=True)
class EncodingConfig:
    """Scene encoding geometry and padding."""

    range_m: float = 50.0
    """Keep map vectors and agents within this distance of the ego (square half-width)."""
    vector_length_m: float = 4.0
    """Map polylines are resampled at this spacing; each pair of consecutive points is a vector."""
    max_vectors: int = 512
    """Map vectors kept per scene (nearest to the ego first)."""
    max_agents: int = 64
    """Agents kept per scene (ego first, then nearest)."""
    future_steps: int = 90
    """Future steps per agent (10 Hz; 90 = 9 s)."""
    lane_assign_m: float = 3.0
    """A vehicle belongs to its nearest lane vector if within this lateral distance and heading difference < 90 deg."""

    def __post_init__(self):
        if self.range_m <= 0 or self.vector_length_m <= 0:
            raise ValueError("range_m and vector_length_m must be positive")
        if self.max_vectors < 1 or self.max_agents < 2 or self.future_steps < 1:
            raise ValueError("max_vectors >= 1, max_agents >= 2 (ego + one), future_steps >= 1")


def to_scene(xy: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """World [..., 2] -> scene frame [..., 2] for origin (x, y, yaw)."""
    return to_frame(np.asarray(xy, np.float64), origin)


def to_world(xy: np.ndarray, heading: np.ndarray | None, origin: np.ndarray):
    """Scene frame [..., 2] (and headings [...]) -> world frame."""
    w = from_frame(np.asarray(xy, np.float64), origin)
    return w if heading is None else (w, wrap(np.asarray(heading) + origin[2]))


def agent_feature_rows(state, types, range_m: float):
    """AGENT_FEATURES [..., F_AGENT] from agent_state rows [..., 7] and type indices [...].

    Works on numpy arrays and on torch tensors (used when placed vehicles join a batch)."""
    if isinstance(state, np.ndarray):
        cat, cos, sin, onehot = np.concatenate, np.cos, np.sin, np.eye(len(AGENT_TYPES), dtype=state.dtype)[types]
    else:
        import torch

        cat, cos, sin = torch.cat, torch.cos, torch.sin
        onehot = torch.nn.functional.one_hot(types.clamp(min=0), len(AGENT_TYPES)).to(state.dtype)
    return cat([state[..., 0:2] / range_m, cos(state[..., 2:3]), sin(state[..., 2:3]), state[..., 3:5] / 10.0,
                state[..., 5:6] / 5.0, state[..., 6:7] / 2.5, onehot], -1)


def _map_vectors(sc: Scenario, origin: np.ndarray, cfg: EncodingConfig):
    starts, ends, kinds, limits = [], [], [], []
    near = []  # (feature, kind, points in the scene frame), resampled together below
    for f in sc.map_features.values():
        if f.type in LANE_TYPES or f.is_lane:
            kind, pts = 0, f.polyline
        elif f.type in ROAD_LINE_TYPES:
            kind, pts = 1, f.polyline
        elif f.type in ROAD_EDGE_TYPES:
            kind, pts = 2, f.polyline if f.polyline is not None else f.polygon
        elif f.type == "CROSSWALK" and f.polygon is not None:
            kind, pts = 3, np.concatenate([f.polygon[:, :2], f.polygon[:1, :2]])
        else:
            continue
        if pts is None or len(pts) < 2:
            continue
        p = to_scene(pts[:, :2], origin)
        if np.abs(p).min(axis=0).max() > cfg.range_m + 200:  # whole feature far away (cheap reject)
            continue
        near.append((f, kind, p))
    for (f, kind, _), r in zip(near, resample_polylines([p for _, _, p in near], cfg.vector_length_m)):
        if len(r) < 2:
            continue
        limit = f.speed_limit_kmh or 0.0
        limit = limit / 3.6 if 0 < limit / 3.6 <= MAX_PLAUSIBLE_LIMIT_MS else 0.0
        starts.append(r[:-1])
        ends.append(r[1:])
        kinds.append(np.full(len(r) - 1, kind))
        limits.append(np.full(len(r) - 1, limit))
    if not starts:
        return (np.zeros((0, 2)),) * 2 + (np.zeros(0, int), np.zeros(0))
    a, b, k, lim = map(np.concatenate, (starts, ends, kinds, limits))
    mid = (a + b) / 2
    inside = np.abs(mid).max(axis=1) <= cfg.range_m
    a, b, k, lim, mid = a[inside], b[inside], k[inside], lim[inside], mid[inside]
    order = np.argsort(np.linalg.norm(mid, axis=1), kind="stable")[: cfg.max_vectors]
    return a[order], b[order], k[order], lim[order]


def point_to_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray):
    """For points [P, 2] and segments [M, 2]: (t [P, M] in [0, 1], signed lateral [P, M], distance [P, M])."""
    d = b - a
    L2 = np.maximum((d ** 2).sum(-1), 1e-9)
    rel = p[:, None, :] - a[None]
    t = np.clip((rel * d[None]).sum(-1) / L2, 0.0, 1.0)
    closest = a[None] + t[..., None] * d[None]
    lateral = (d[None, :, 0] * rel[..., 1] - d[None, :, 1] * rel[..., 0]) / np.sqrt(L2)[None]
    return t, lateral, np.linalg.norm(p[:, None, :] - closest, axis=-1)


class EncodedScene(TypedDict):
    """One encoded scenario frame: what the traffic models read (shapes and units in the module docstring)."""

    map_feats: np.ndarray
    map_pts: np.ndarray
    map_mask: np.ndarray
    lane_mask: np.ndarray
    speed_limit: np.ndarray
    agent_feats: np.ndarray
    agent_state: np.ndarray
    agent_hist: np.ndarray
    agent_type: np.ndarray
    agent_mask: np.ndarray
    agent_index: np.ndarray
    agent_lane: np.ndarray
    lane_offset: np.ndarray
    future: np.ndarray
    future_mask: np.ndarray
    origin: np.ndarray


class SceneBatch(TypedDict):
    """:class:`EncodedScene` s stacked by :func:`collate`: the same keys as torch tensors with a leading b."""

    map_feats: Tensor
    map_pts: Tensor
    map_mask: Tensor
    lane_mask: Tensor
    speed_limit: Tensor
    agent_feats: Tensor
    agent_state: Tensor
    agent_hist: Tensor
    agent_type: Tensor
    agent_mask: Tensor
    agent_index: Tensor
    agent_lane: Tensor
    lane_offset: Tensor
    future: Tensor
    future_mask: Tensor
    origin: Tensor


def encode_scene(sc: Scenario, t0: int = 0, cfg: EncodingConfig = EncodingConfig()) -> EncodedScene:
    """Encode frame ``t0`` of ``sc`` in the ego's frame (shapes in the module docstring)."""
    if not 0 <= t0 < sc.length:
        raise IndexError(f"{sc.id}: t0={t0} outside 0..{sc.length - 1}")
    tr, ego = sc.tracks, sc.ego_index
    if not tr.valid[ego, t0]:
        raise ValueError(f"{sc.id}: the ego is not valid at t0={t0}")
    origin = np.array([tr.position[ego, t0, 0], tr.position[ego, t0, 1], tr.heading[ego, t0]])
    M, A, T = cfg.max_vectors, cfg.max_agents, cfg.future_steps

    a, b, kind, limit = _map_vectors(sc, origin, cfg)
    m = len(a)
    d = b - a
    length = np.linalg.norm(d, axis=1)
    cos, sin = (d / np.maximum(length, 1e-9)[:, None]).T
    out = {
        "map_feats": np.zeros((M, F_MAP), np.float32), "map_pts": np.zeros((M, 2, 2), np.float32),
        "map_mask": np.zeros(M, bool), "lane_mask": np.zeros(M, bool), "speed_limit": np.zeros(M, np.float32)}
    R = cfg.range_m
    out["map_feats"][:m] = np.column_stack([a / R, b / R, cos, sin, length / cfg.vector_length_m,
                                            np.eye(len(MAP_TYPES))[kind], limit / 30.0])
    out["map_pts"][:m] = np.stack([a, b], 1)
    out["map_mask"][:m] = True
    out["lane_mask"][:m] = kind == 0
    out["speed_limit"][:m] = limit

    # agents valid at t0, known type, within range; ego first then nearest
    type_idx = np.array([AGENT_TYPES.index(t) if t in AGENT_TYPES else -1 for t in tr.types])
    xy = to_scene(tr.position[:, t0, :2], origin)
    cand = np.flatnonzero(tr.valid[:, t0] & (type_idx >= 0) & (np.abs(xy).max(axis=1) <= R))
    cand = cand[cand != ego]
    cand = np.concatenate([[ego], cand[np.argsort(np.linalg.norm(xy[cand], axis=1), kind="stable")]])[:A]
    n = len(cand)
    head = wrap(tr.heading[cand, t0] - origin[2])
    vel = vectors_to_frame(tr.velocity[cand, t0], origin[2])
    size = tr.size[cand, t0, :2]
    out["agent_state"] = np.zeros((A, 7), np.float32)
    out["agent_state"][:n] = np.column_stack([xy[cand], head, vel, size])
    out["agent_hist"] = np.zeros((A, 2), np.float32)
    if t0 >= HIST_STEPS:
        back = tr.valid[cand, t0 - HIST_STEPS]
        out["agent_hist"][:n] = np.where(back[:, None], vel - vectors_to_frame(tr.velocity[cand, t0 - HIST_STEPS],
                                                                               origin[2]), 0.0)
    out["agent_type"] = np.zeros(A, np.int64)
    out["agent_type"][:n] = type_idx[cand]
    out["agent_mask"] = np.zeros(A, bool)
    out["agent_mask"][:n] = True
    out["agent_index"] = np.full(A, -1, np.int64)
    out["agent_index"][:n] = cand
    out["agent_feats"] = np.zeros((A, F_AGENT), np.float32)
    out["agent_feats"][:n] = agent_feature_rows(out["agent_state"][:n], type_idx[cand], R)

    # lane assignment of vehicles: nearest lane vector with a compatible heading
    out["agent_lane"] = np.full(A, -1, np.int64)
    out["lane_offset"] = np.zeros((A, 3), np.float32)
    lanes = np.flatnonzero(out["lane_mask"][:m])
    if len(lanes) and n:
        t, lat, dist = point_to_segments(xy[cand], a[lanes], b[lanes])
        rel = wrap(head[:, None] - np.arctan2(sin[lanes], cos[lanes])[None])
        cost = np.where((np.abs(rel) < np.pi / 2) & (dist <= cfg.lane_assign_m), dist, np.inf)
        best = np.argmin(cost, axis=1)
        ok = np.isfinite(cost[np.arange(n), best]) & (type_idx[cand] == 0)
        rows = np.flatnonzero(ok)
        out["agent_lane"][rows] = lanes[best[rows]]
        out["lane_offset"][rows] = np.column_stack([t[rows, best[rows]], lat[rows, best[rows]], rel[rows, best[rows]]])

    # futures
    out["future"] = np.zeros((A, T, 3), np.float32)
    out["future_mask"] = np.zeros((A, T), bool)
    steps = np.arange(t0 + 1, min(t0 + 1 + T, sc.length))
    if len(steps):
        k = len(steps)
        out["future"][:n, :k, :2] = to_scene(tr.position[cand][:, steps, :2], origin)
        out["future"][:n, :k, 2] = wrap(tr.heading[cand][:, steps] - origin[2])
        out["future_mask"][:n, :k] = tr.valid[cand][:, steps]
    out["origin"] = origin
    return out


def collate(scenes: list[EncodedScene]) -> SceneBatch:
    """Stack encoded scenes into a :class:`SceneBatch` (torch tensors with a leading batch dimension)."""
    import torch

    return {k: torch.from_numpy(np.stack([s[k] for s in scenes])) for k in scenes[0]}


def transform_batch(batch: SceneBatch, angle: Tensor, mirror: Tensor) -> SceneBatch:
    """The same scenes seen in another scene frame: mirrored across the ego's x axis where ``mirror``, then
    rotated by ``angle`` about the ego (a symmetry of the driving task, for training-time augmentation).

    Every position, vector and heading of the batch moves with the frame (map vectors, agent states and features,
    history, futures); the lane offsets' lateral and heading terms change sign under a mirror. Padding stays zero.

    Args:
        batch: collated scenes; angle: float [b] radians; mirror: bool [b].
    Returns:
        a new batch (the input is not modified). Cost: O(b (M + A T)).
    """
    import torch

    s = 1.0 - 2.0 * mirror.to(angle.dtype)  # [b] +1 or -1

    def vec(x: Tensor) -> Tensor:  # [b, ..., 2] -> same: y scaled by s (the mirror), then rotated by the angle
        shape = (-1, *([1] * (x.dim() - 2)))
        return rotate(torch.stack([x[..., 0], x[..., 1] * s.view(shape)], -1), angle.view(shape))

    def head(h: Tensor, mask: Tensor) -> Tensor:
        sv = s.view(-1, *([1] * (h.dim() - 1)))
        return wrap(h * sv + angle.view_as(sv)) * mask

    out = dict(batch)
    mf = batch["map_feats"].clone()
    mf[..., 0:2], mf[..., 2:4], mf[..., 4:6] = vec(mf[..., 0:2]), vec(mf[..., 2:4]), vec(mf[..., 4:6])
    out["map_feats"], out["map_pts"] = mf, vec(batch["map_pts"])
    st = batch["agent_state"].clone()
    st[..., 0:2], st[..., 3:5] = vec(st[..., 0:2]), vec(st[..., 3:5])
    st[..., 2] = head(st[..., 2], batch["agent_mask"])
    out["agent_state"] = st
    af = batch["agent_feats"].clone()
    af[..., 0:2], af[..., 2:4], af[..., 4:6] = vec(af[..., 0:2]), vec(af[..., 2:4]), vec(af[..., 4:6])
    out["agent_feats"] = af
    out["agent_hist"] = vec(batch["agent_hist"])
    fut = batch["future"].clone()
    fut[..., 0:2] = vec(fut[..., 0:2])
    fut[..., 2] = head(fut[..., 2], batch["future_mask"])
    out["future"] = fut
    off = batch["lane_offset"].clone()
    off[..., 1:3] = off[..., 1:3] * s.view(-1, 1, 1)
    out["lane_offset"] = off
    return out
