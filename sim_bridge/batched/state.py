"""Tensor forms of a scenario set and of a running batch of scenes.

:class:`BatchedScenarios` is a scenario directory loaded ONCE (through ``ScenarioDataset`` and the
safe loader of :mod:`sim_bridge.scenario`) into padded tensors; :class:`SimState` is the state of ``b`` scenes being
simulated, each playing one row of the loaded set (``SimState.scenario``), so many scene slots can
share one loaded scenario and an auto-reset only changes an index.

Rows and logs: a row of :class:`BatchedScenarios` is one controlled vehicle of one logged scene (its route,
its size); the scene's logs and map index are stored once and shared by its rows (``scene`` maps a row
to its log). Loaded as usual each scene has one row, its logged ego; loaded for self-play
(:class:`SelfPlayConfig`) it has one row per vehicle the policy drives.

Frame: per scenario the contract's world frame shifted so that the ego's first valid position is
the origin (float32 keeps mm resolution; Waymo coordinates reach 10^4 m); ``origin`` holds the shift
(``xy_world = xy + origin``). Metres, radians CCW from +x, m/s, 10 Hz steps.

Einsum letters:
    n  row (a scene and its controlled vehicle)  l  logged scene     b  scene slot being simulated
    a  agent (padded, ``agent_mask``)       t  time step (padded, ``length``)
    s  boundary segment (slot 0: a far-away sentinel that pads every cell list)
    g  grid cell (flattened, row-major over ``grid_shape``)   k  segment slot of a cell
    r  route point                          c  xy (2) / box (5: x, y, yaw, length, width)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import shapely
import torch
from torch import Tensor

from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import ROAD_EDGE_TYPES, Scenario

__all__ = ["BatchedScenarios", "SimState", "MapConfig", "SelfPlayConfig", "load_batched", "stack_scenarios",
           "self_play_agents",
           "AGENT_PAD", "AGENT_VEHICLE", "AGENT_HUMAN", "AGENT_OBJECT", "F_YAW", "F_COS", "F_SIN"]

AGENT_PAD, AGENT_VEHICLE, AGENT_HUMAN, AGENT_OBJECT = 0, 1, 2, 3
F_X, F_Y, F_YAW, F_LEN, F_WID, F_COS, F_SIN, F_VX, F_VY = range(9)  # channels of BatchedScenarios.frames
_TYPE_CODES = {"VEHICLE": AGENT_VEHICLE, "PEDESTRIAN": AGENT_HUMAN, "CYCLIST": AGENT_HUMAN}
_FAR = 1e6  # m: where the sentinel segment lies


@dataclass(frozen=True)
class MapConfig:
    """How boundary segments are chosen and indexed."""

    boundary_types: tuple[str, ...] = tuple(sorted(ROAD_EDGE_TYPES))
    """Map feature types whose polylines the ego must not cross (road edges)."""
    fallback_types: tuple[str, ...] = ("ROAD_LINE_SOLID_SINGLE_WHITE",)
    """Used when a map has no ``boundary_types`` feature: ScenarioNet's nuScenes maps carry no road
    edges, and the drivable-area outline comes through as solid white lines."""
    cell: float = 10.0
    """Grid cell size in m; boundary polylines are cut into pieces no longer than this."""
    reach: float = 3.5
    """m: a segment is listed in every cell within this distance of its bounding box, so that the
    ego box (half diagonal <= reach) is tested against every segment it can touch."""
    margin: float = 60.0
    """m around the ego's route covered by the grid; beyond it the ego counts as off the map."""
    simplify: float = 0.05
    """m: polyline simplification tolerance (Douglas-Peucker) before indexing."""


@dataclass(frozen=True)
class SelfPlayConfig:
    """Which logged vehicles a self-play episode drives: the vehicles present at the first step whose
    logged route is at least ``min_route_m`` long, the ego first, then the nearest to the ego, up to
    ``max_agents`` (a scene where none qualifies drives its ego alone). The rest (parked vehicles, late
    arrivals, pedestrians, cyclists) replay their logs."""

    max_agents: int = 8
    min_route_m: float = 10.0

    def __post_init__(self):
        if self.max_agents < 1 or self.min_route_m < 0:
            raise ValueError(f"self-play: max_agents must be >= 1 and min_route_m >= 0, got {self}")


@dataclass(frozen=True)
class BatchedScenarios:
    """A scenario set as padded tensors (read-only; shared by every scene slot).

    Tensors marked [l, ...] are per logged scene, [n, ...] per row (a controlled vehicle of a scene; one
    row per scene, its ego, unless loaded for self-play). Memory per scene (float32 unless noted):
    41 * A * T bytes of logs (``frames``, ``frame_valid``, ``path_s``) + 24 * G * K of map index
    (``grid_segments`` + int64 ``grid``) + 16 * S (segments), and 12 * R per row (route). The 7 shared
    real scenes pad to A=225, T=201, G=440, K=34, S=527, R=102: 1.7 MB of logs and 0.36 MB of map index
    each, 15.6 MB for the set (``nbytes``); scenes share it, a scene slot
    in flight costs only its :class:`SimState` (~8 KB, ~16 KB with IDM traffic).

    Attributes:
        names: per row, the scenario file name (self-play rows of vehicles other than the ego add
            ``#<agent index>``), length n.
        scene: int64 [n], the logged scene of each row (index into the [l, ...] tensors).
        origin: float64 [l, 2], world xy of this frame's origin (the logged ego's first valid xy).
        length: int64 [l], logged steps T_l.
        frames: [l, t, a, 9] per step and agent (x, y, yaw, length, width, cos yaw, sin yaw, vx, vy)
            in m, rad, m/s; time-major so one step of a scene is one contiguous read. Properties give
            the [l, a, t, ...] views ``xy``, ``heading``, ``size``, ``velocity``, ``valid``.
        frame_valid: bool [l, t, a].
        path_s: [l, t, a] arc length (m) along each agent's logged path at each step: the distance between
            consecutive valid steps, accumulated (flat over invalid steps). IDM traffic moves along it.
        Agents never within ``MapConfig.margin`` of a controlled vehicle's route are dropped at load.
        agent_type: int64 [l, a], AGENT_* codes (AGENT_PAD for padding).
        agent_mask: bool [l, a], a real agent.
        ego: int64 [n], the controlled vehicle's agent index (the logged ego unless self-play).
        ego_size: [n, 2] (length, width) m as logged at its first valid step (nuScenes stores the
            ego's swapped; the longer side is taken as the length, as MetaDrive does).
        segments: [l, s, 2, 2] boundary segments (start, end) x (x, y); slot 0 is the sentinel.
        grid: int64 [l, g, k] segment indices near each cell (0 = the sentinel).
        grid_segments: [l, g, k, 2, 2] those segments' coordinates (``segments`` gathered once at load,
            so a step reads one contiguous row per scene).
        grid_origin: [l, 2] m, corner of cell 0; grid_shape: int64 [l, 2] cells along (x, y).
        route: [n, r, 2] the controlled vehicle's route: its logged valid path, cut into >1 m pieces the way
            MetaDrive's PointLane does; padded by repeating the last point.
        route_s: [n, r] arc length at each route point, m; route_count: int64 [n] real points.
        route_length: [n] m.
        cell: grid cell size, m.
    """

    names: tuple[str, ...]
    scene: Tensor
    origin: Tensor
    length: Tensor
    frames: Tensor
    frame_valid: Tensor
    path_s: Tensor
    agent_type: Tensor
    agent_mask: Tensor
    ego: Tensor
    ego_size: Tensor
    segments: Tensor
    grid: Tensor
    grid_segments: Tensor
    grid_origin: Tensor
    grid_shape: Tensor
    route: Tensor
    route_s: Tensor
    route_count: Tensor
    route_length: Tensor
    cell: float

    @property
    def num_scenarios(self) -> int:
        """Rows n (scenes, or their controlled vehicles when loaded for self-play)."""
        return len(self.names)

    @property
    def num_scenes(self) -> int:
        """Logged scenes l."""
        return int(self.frames.shape[0])

    # logs as [l, a, t, ...] views of the time-major ``frames``
    @property
    def xy(self) -> Tensor:
        """[l, a, t, 2] m."""
        return self.frames[..., 0:2].transpose(1, 2)

    @property
    def heading(self) -> Tensor:
        """[l, a, t] rad."""
        return self.frames[..., F_YAW].transpose(1, 2)

    @property
    def size(self) -> Tensor:
        """[l, a, t, 2] (length, width) m."""
        return self.frames[..., 3:5].transpose(1, 2)

    @property
    def velocity(self) -> Tensor:
        """[l, a, t, 2] m/s."""
        return self.frames[..., 7:9].transpose(1, 2)

    @property
    def valid(self) -> Tensor:
        """bool [l, a, t]."""
        return self.frame_valid.transpose(1, 2)

    @property
    def device(self) -> torch.device:
        return self.xy.device

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self._tensors().values())

    def _tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}

    def to(self, device: str | torch.device) -> "BatchedScenarios":
        return BatchedScenarios(**{**{f.name: getattr(self, f.name) for f in fields(self)},
                                   **{k: v.to(device) for k, v in self._tensors().items()}})

    def validate(self) -> "BatchedScenarios":
        n, (ll, a, t) = len(self.names), self.valid.shape
        s, g, k, r = self.segments.shape[1], self.grid.shape[1], self.grid.shape[2], self.route.shape[1]
        want = {"scene": (n,), "origin": (ll, 2), "length": (ll,), "frames": (ll, t, a, 9), "path_s": (ll, t, a),
                "agent_type": (ll, a), "agent_mask": (ll, a),
                "ego": (n,), "ego_size": (n, 2), "segments": (ll, s, 2, 2), "grid": (ll, g, k),
                "grid_segments": (ll, g, k, 2, 2),
                "grid_origin": (ll, 2), "grid_shape": (ll, 2), "route": (n, r, 2), "route_s": (n, r),
                "route_count": (n,), "route_length": (n,)}
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            assert got == shape, f"BatchedScenarios.{name}: shape {got}, expected {shape}"
        assert self.valid.dtype == torch.bool and self.agent_mask.dtype == torch.bool
        assert int(self.grid.max()) < s and bool(((self.scene >= 0) & (self.scene < ll)).all())
        assert bool((self.grid_shape.prod(-1) <= g).all()) and bool((self.route_count >= 2).all())
        return self


@dataclass(frozen=True)
class SimState:
    """``b`` scenes in flight. Every field is a tensor with leading dim b.

    Attributes:
        scenario: int64 [b], row of :class:`BatchedScenarios` each slot plays.
        t: int64 [b], log step the scene is at (0 after reset).
        ego_xy: [b, 2] m, the ego's box centre; ego_yaw: [b] rad; ego_speed: [b] m/s (>= 0);
        ego_steer: [b] rad, front wheel angle; ego_yaw_rate: [b] rad/s (the bicycle's lagged yaw rate).
        agents: [b, a, 9] logged state of every agent now (``BatchedScenarios.frames`` channels; the
            ego's slot holds its log, not the simulated ego); others: bool [b, a], agents present
            now, the ego excluded; kept: bool [b, a], agents this episode plays at all (a traffic
            curriculum drops some at the reset; all True otherwise). ``boxes`` gives [b, a, 5] (x, y,
            yaw, length, width) with the simulated ego in its slot (``ego_size`` [b, 2] its length and width).
        near: int64 [b, m], indices of the agents with the nearest centres, nearest first (padding
            and absent agents sort last).
        agent_tau: [b, a] the (fractional) log step each agent's pose is taken from: t when replaying; IDM
            traffic (``BatchedEnvConfig.traffic``) lets a vehicle fall behind its log (tau < t) and catch up;
            agent_speed: [b, a] m/s along its logged path.
        route_index: int64 [b], route segment the ego was last projected on.
        progress: [b] m along the route (MetaDrive's "longitude"); lateral: [b] m, signed, left +.
        done: bool [b], the episode ended at the last step (the slot waits for a reset).
    """

    scenario: Tensor
    t: Tensor
    ego_xy: Tensor
    ego_yaw: Tensor
    ego_speed: Tensor
    ego_steer: Tensor
    ego_yaw_rate: Tensor
    ego_size: Tensor
    ego_index: Tensor
    agents: Tensor
    others: Tensor
    kept: Tensor
    near: Tensor
    agent_tau: Tensor
    agent_speed: Tensor
    route_index: Tensor
    progress: Tensor
    lateral: Tensor
    done: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.scenario.shape[0])

    @property
    def ego_box(self) -> Tensor:
        """[b, 5] the simulated ego's box."""
        return torch.cat([self.ego_xy, self.ego_yaw[:, None], self.ego_size], -1)

    @property
    def boxes(self) -> Tensor:
        """[b, a, 5] every agent's box now, the simulated ego in its slot."""
        is_ego = torch.arange(self.agents.shape[1], device=self.agents.device) == self.ego_index[:, None]
        return torch.where(is_ego[..., None], self.ego_box[:, None], self.agents[..., :5])

    def replace_where(self, mask: Tensor, new: "SimState") -> "SimState":
        """Fields of ``new`` for slots where mask [b] holds (``new`` covers those slots only, in order)."""
        idx = mask.nonzero().squeeze(-1)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name).clone()
            v[idx] = getattr(new, f.name)
            out[f.name] = v
        return SimState(**out)

    def validate(self, batch: BatchedScenarios) -> "SimState":
        b, a = self.scenario.shape[0], batch.valid.shape[1]
        for f in fields(self):
            v = getattr(self, f.name)
            assert v.shape[0] == b, f"SimState.{f.name}: leading dim {v.shape[0]}, expected {b}"
        assert self.agents.shape == (b, a, 9) and self.others.shape == (b, a) and self.ego_xy.shape == (b, 2)
        return self


# ---- loading ---------------------------------------------------------------------------------------
def load_batched(root: str | Path, names: Sequence[str] | None = None, map_cfg: MapConfig = MapConfig(),
                 device: str | torch.device = "cpu", repair: bool = True,
                 self_play: SelfPlayConfig | None = None) -> BatchedScenarios:
    """Load a dataset directory (or the named files of it) into one :class:`BatchedScenarios`: one row per
    scene (its logged ego), or with ``self_play`` one row per vehicle :func:`self_play_agents` picks."""
    ds = ScenarioDataset(root, repair=repair)
    names = list(names) if names is not None else ds.names
    return stack_scenarios([ds.load(nm) for nm in names], names, map_cfg, device, self_play)


def self_play_agents(sc: Scenario, cfg: SelfPlayConfig) -> list[int]:
    """Track indices a self-play episode of ``sc`` drives (:class:`SelfPlayConfig`), the ego first if it is driven."""
    tr, e = sc.tracks, sc.ego_index
    vehicle = np.array([t == "VEHICLE" for t in tr.types])
    cand = np.nonzero(vehicle & tr.valid[:, 0])[0]
    # route length as the reward measures it (logged jitter of a parked car adds up to no route)
    moving = [i for i in cand if _route(tr.xy[i][tr.valid[i]], 0.0)[1][-1] >= cfg.min_route_m]
    others = np.array([i for i in moving if i != e], np.int64)
    dist = np.linalg.norm(tr.xy[others, 0] - tr.xy[e, int(np.argmax(tr.valid[e]))], axis=-1)
    first = [e] if e in moving or not len(others) else []
    return first + [int(i) for i in others[np.argsort(dist, kind="stable")][:cfg.max_agents - len(first)]]


def stack_scenarios(scenarios: Sequence[Scenario], names: Sequence[str] | None = None,
                    map_cfg: MapConfig = MapConfig(), device: str | torch.device = "cpu",
                    self_play: SelfPlayConfig | None = None) -> BatchedScenarios:
    """Pad and stack contract scenarios (validated) into tensors on ``device`` (rows as :func:`load_batched`)."""
    if not scenarios:
        raise ValueError("stack_scenarios: no scenarios")
    names = tuple(names) if names is not None else tuple(sc.id for sc in scenarios)
    per = [_scenario_arrays(sc, map_cfg, None if self_play is None else self_play_agents(sc, self_play))
           for sc in scenarios]
    rows = [(i, row) for i, p in enumerate(per) for row in p["rows"]]
    ll = len(per)
    t, a = (max(p["frames"].shape[d] for p in per) for d in (0, 1))
    s = max(len(p["segments"]) for p in per)
    g = max(p["grid"].shape[0] for p in per)
    k = max(p["grid"].shape[1] for p in per)
    r = max(len(row["route"]) for _, row in rows)

    def pad(items: Sequence[np.ndarray], shape: tuple, dtype, fill=0) -> np.ndarray:
        out = np.full((len(items), *shape), fill, dtype)
        for i, v in enumerate(items):
            out[(i, *tuple(slice(0, d) for d in v.shape))] = v
        return out

    def logs(key: str, shape: tuple, dtype, fill=0) -> np.ndarray:
        return pad([p[key] for p in per], shape, dtype, fill)

    route = pad([row["route"] for _, row in rows], (r, 2), np.float32)
    route_s = pad([row["route_s"] for _, row in rows], (r,), np.float32)
    for i, (_, row) in enumerate(rows):  # pad the route by repeating its end (zero-length tail segments)
        m = len(row["route"])
        route[i, m:], route_s[i, m:] = row["route"][-1], row["route_s"][-1]
    row_names = tuple(names[i] if row["logged_ego"] else f"{names[i]}#{row['ego']}" for i, row in rows)
    tens = dict(
        scene=np.array([i for i, _ in rows], np.int64),
        origin=torch.tensor(np.stack([p["origin"] for p in per]), dtype=torch.float64),
        length=torch.tensor([p["frames"].shape[0] for p in per]),
        frames=logs("frames", (t, a, 9), np.float32), frame_valid=logs("frame_valid", (t, a), bool),
        agent_type=logs("agent_type", (a,), np.int64),
        agent_mask=logs("agent_mask", (a,), bool), ego=np.array([row["ego"] for _, row in rows]),
        ego_size=np.stack([row["ego_size"] for _, row in rows]).astype(np.float32),
        segments=logs("segments", (s, 2, 2), np.float32, _FAR), grid=logs("grid", (g, k), np.int64),
        grid_origin=np.stack([p["grid_origin"] for p in per]).astype(np.float32),
        grid_shape=np.stack([p["grid_shape"] for p in per]), route=route, route_s=route_s,
        route_count=np.array([len(row["route"]) for _, row in rows]),
        route_length=np.array([row["route_s"][-1] for _, row in rows], np.float32))
    tens["grid_segments"] = tens["segments"][np.arange(ll)[:, None, None], tens["grid"]]
    fr, fv = tens["frames"], tens["frame_valid"]
    step = np.where(fv[:, 1:] & fv[:, :-1], np.linalg.norm(fr[:, 1:, :, :2] - fr[:, :-1, :, :2], axis=-1), 0.0)
    tens["path_s"] = np.concatenate([np.zeros((ll, 1, a), np.float32), np.cumsum(step, 1, dtype=np.float32)], 1)
    tens = {kk: torch.as_tensor(v).to(device) for kk, v in tens.items()}
    return BatchedScenarios(names=row_names, cell=map_cfg.cell, **tens).validate()


def _scenario_arrays(sc: Scenario, cfg: MapConfig, controlled: Sequence[int] | None = None) -> dict:
    """One scene's padded-to-itself arrays (numpy, float64 until stacking) and its rows: one per
    ``controlled`` track index (default: the logged ego), each with its agent index, size and route."""
    tr, e = sc.tracks, sc.ego_index
    first = int(np.argmax(tr.valid[e]))
    origin = tr.xy[e, first].copy()
    xy = np.where(tr.valid[..., None], tr.xy - origin, 0.0)
    controlled = [e] if controlled is None else list(controlled)
    routes = [_route(xy[c][tr.valid[c]], tr.heading[c, int(np.argmax(tr.valid[c]))]) for c in controlled]
    covered = np.concatenate([rt for rt, _ in routes])  # every controlled route lies inside the map index
    segments, grid, grid_origin, grid_shape = _boundary_grid(sc, origin, covered, cfg)
    lo, hi = covered.min(0) - cfg.margin, covered.max(0) + cfg.margin
    near = (tr.valid & ((xy >= lo) & (xy <= hi)).all(-1)).any(-1)
    near[controlled] = True
    keep = np.nonzero(near)[0]
    xy, valid = xy[keep], tr.valid[keep]
    yaw = np.where(valid, tr.heading[keep], 0.0)
    frames = np.concatenate([xy, yaw[..., None], tr.size[keep, :, :2] * valid[..., None], np.cos(yaw)[..., None],
                             np.sin(yaw)[..., None], np.where(valid[..., None], tr.velocity[keep], 0.0)], -1)
    types = np.array([_TYPE_CODES.get(tr.types[i], AGENT_OBJECT) for i in keep], np.int64)
    rows = []
    for c, (route, route_s) in zip(controlled, routes):
        # (longer, shorter): nuScenes swaps the ego's
        lw = np.sort(tr.size[c, int(np.argmax(tr.valid[c])), :2])[::-1].copy()
        rows.append(dict(ego=int(np.searchsorted(keep, c)), ego_size=lw, route=route, route_s=route_s,
                         logged_ego=c == e))
    return dict(origin=origin, frames=frames.transpose(1, 0, 2), frame_valid=valid.T, agent_type=types,
                agent_mask=np.ones(len(keep), bool), segments=segments, grid=grid, grid_origin=grid_origin,
                grid_shape=grid_shape, rows=rows)


def _route(path: np.ndarray, yaw0: float) -> tuple[np.ndarray, np.ndarray]:
    """Route points [r, 2] and arc length [r] from a logged path [p, 2].

    Like MetaDrive's PointLane: walk the path and start a new segment at the first point more than
    1 m from the current start (or at the last point), dropping zero-length pieces. A path shorter
    than that (a parked ego) gets a 1 mm stub along its heading so projections stay defined.
    """
    keep = [0]
    i = 0
    while i < len(path) - 1:
        d = np.linalg.norm(path[i + 1:] - path[i], axis=-1)
        far = np.nonzero(d > 1.0)[0]
        j = i + 1 + (int(far[0]) if len(far) else len(d) - 1)
        if np.linalg.norm(path[j] - path[i]) > 1e-6:
            keep.append(j)
        i = j
    pts = path[keep]
    if len(pts) < 2:
        pts = np.stack([path[0], path[0] + 1e-3 * np.array([np.cos(yaw0), np.sin(yaw0)])])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=-1))])
    return pts, s


def _boundary_grid(sc: Scenario, origin: np.ndarray, route: np.ndarray, cfg: MapConfig):
    """Boundary segments [s, 2, 2] (slot 0 the sentinel) and a cell -> segments index [g, k]."""
    feats = [f for f in sc.map_features.values() if f.polyline is not None and len(f.polyline) >= 2]
    lines = [f.polyline[:, :2] - origin for f in feats if f.type in cfg.boundary_types]
    if not lines:
        lines = [f.polyline[:, :2] - origin for f in feats if f.type in cfg.fallback_types]
    lo = route.min(0) - cfg.margin
    shape = np.ceil((route.max(0) + cfg.margin - lo) / cfg.cell).astype(np.int64)
    seg = np.zeros((0, 2, 2))
    if lines:
        simple = shapely.simplify(np.array([shapely.LineString(ln) for ln in lines]), cfg.simplify)
        seg = np.concatenate([_cut(np.asarray(shapely.get_coordinates(ls)), cfg.cell) for ls in simple])
    seg_lo, seg_hi = seg.min(1) - cfg.reach, seg.max(1) + cfg.reach
    inside = ((seg_hi > lo) & (seg_lo < lo + shape * cfg.cell)).all(-1)
    seg, seg_lo, seg_hi = seg[inside], seg_lo[inside], seg_hi[inside]
    c0 = np.floor((seg_lo - lo) / cfg.cell).astype(np.int64)
    c1 = np.floor((seg_hi - lo) / cfg.cell).astype(np.int64)
    span = int((c1 - c0).max()) + 1 if len(seg) else 1
    off = np.stack(np.meshgrid(np.arange(span), np.arange(span), indexing="ij"), -1).reshape(-1, 2)
    cells = c0[:, None, :] + off[None]  # [s, span^2, 2]
    ok = (cells <= c1[:, None]).all(-1) & (cells >= 0).all(-1) & (cells < shape).all(-1)
    seg_id = np.broadcast_to(np.arange(len(seg))[:, None] + 1, ok.shape)[ok]
    flat = cells[ok][:, 0] * shape[1] + cells[ok][:, 1]
    order = np.lexsort((seg_id, flat))
    flat, seg_id = flat[order], seg_id[order]
    g = int(shape.prod())
    counts = np.bincount(flat, minlength=g)
    rank = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    grid = np.zeros((g, max(int(counts.max(initial=0)), 1)), np.int64)
    grid[flat, rank] = seg_id
    segments = np.concatenate([np.full((1, 2, 2), _FAR), seg])
    return segments, grid, lo, shape


def _cut(pts: np.ndarray, step: float) -> np.ndarray:
    """Segments [m, 2, 2] of a polyline [p, 2], each no longer than ``step``."""
    a, b = pts[:-1], pts[1:]
    pieces = np.maximum(np.ceil(np.linalg.norm(b - a, axis=-1) / step), 1).astype(np.int64)
    seg_of = np.repeat(np.arange(len(a)), pieces)
    j = np.arange(len(seg_of)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    f0, f1 = (j / pieces[seg_of])[:, None], ((j + 1) / pieces[seg_of])[:, None]
    d = (b - a)[seg_of]
    return np.stack([a[seg_of] + f0 * d, a[seg_of] + f1 * d], 1)
