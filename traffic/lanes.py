"""The lane graph of a scenario and routes along it; :mod:`traffic.follow` drives vehicles along the routes.

Generated vehicles do not integrate free controls in the plane (which drifts off the road, and which
the old yield check could only stop dead). Instead each vehicle gets

* a **route**: a sequence of connected lanes from the lane it was placed on, chosen at every branch to
  follow the trajectory model's predicted path (the model decides turn/straight and the speed profile);
* **longitudinal motion** along the route with IDM-style gap keeping (Treiber et al. 2000) to whatever
  stands in its corridor ahead (logged agents, the ego, other generated vehicles, a red light's stop
  line, the end of the mapped lanes, crossing traffic), acceleration bounded to [-``max_brake``, ``max_accel``]
  (:func:`traffic.follow.follow_routes`);
* a **bounded lateral offset** from the lane centre that decays over ``lateral_decay_m`` of travel (a car only
  moves sideways, or turns, by driving: a standing one keeps its pose).

So a rollout stays on the lane surfaces by construction: its centre is never farther than
``max_lateral`` from a lane centre line.

Connectivity: the maps' own ``exit_lanes`` links (Waymo, MetaDrive) plus geometric ones (a lane whose
start lies within ``link_m`` of another's end with a heading change under 60 degrees), because
nuScenes scenarios carry no lane links. Lanes are resampled every ``ds`` m.

Costs: building the graph is O(L^2) endpoint distances for L lanes (L <= 500 here: 0.25M) plus
O(points); a route is a walk over its few lanes.

Letters: n follower, r route point, k stop line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_bridge.geometry import wrap_angle
from sim_bridge.scenario import Scenario

__all__ = ["LaneGraph", "Routes", "build_routes", "path_routes", "route_stops", "resample_polylines", "RED_STATES"]

DT = 0.1
RED_STATES = frozenset({"LANE_STATE_STOP", "LANE_STATE_ARROW_STOP", "LANE_STATE_FLASHING_STOP"})


def resample_polylines(lines: list[np.ndarray], step: float) -> list[np.ndarray]:
    """Each polyline [n_i, 2] resampled to points equally spaced along it, at most ``step`` m apart (ends
    kept, repeated points dropped first; a polyline of fewer than 2 distinct points comes back as those).

    One pass over all points of all polylines (a map has thousands): arc lengths by one cumulative sum,
    query points by one ``searchsorted`` on (polyline, arc length) keys. O(P + Q) for P input and Q output
    points, where resampling each polyline alone spent ~0.15 ms of numpy call overhead per polyline.
    """
    if not lines:
        return []
    pts = np.concatenate([np.asarray(ln, np.float64)[:, :2] for ln in lines])
    line = np.repeat(np.arange(len(lines)), [len(ln) for ln in lines])
    first = np.r_[True, line[1:] != line[:-1]]
    step_len = np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)]
    keep = first | (step_len > 1e-6)
    pts, line, first = pts[keep], line[keep], first[keep]
    seg = np.where(first, 0.0, np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)])
    cs = np.cumsum(seg)
    start = np.flatnonzero(first)
    count = np.diff(np.r_[start, len(pts)])
    s = cs - np.repeat(cs[start], count)                                   # arc length within each polyline
    total = s[start + count - 1]
    n_out = np.where(count >= 2, np.maximum(np.ceil(total / step), 1).astype(np.int64) + 1, count)
    q_line = np.repeat(np.arange(len(start)), n_out)
    k = np.arange(len(q_line)) - np.repeat(np.cumsum(n_out) - n_out, n_out)
    q = total[q_line] * k / np.maximum(n_out[q_line] - 1, 1)
    span = float(total.max()) + 1.0
    idx = np.searchsorted(s + line * span, q + q_line * span, side="right") - 1
    lo, hi = start[q_line], start[q_line] + np.maximum(count[q_line] - 2, 0)
    idx = np.clip(idx, lo, hi)
    nxt = np.minimum(idx + 1, start[q_line] + count[q_line] - 1)
    f = np.clip((q - s[idx]) / np.maximum(s[nxt] - s[idx], 1e-12), 0.0, 1.0)
    out = pts[idx] + f[:, None] * (pts[nxt] - pts[idx])
    return np.split(out, np.cumsum(n_out)[:-1])


@dataclass
class LaneGraph:
    """Vehicle lanes of one scenario, resampled, with successor links.

    Attributes:
        ids: lane feature ids [L]; pts: per lane float [n_l, 2] points every ~ds m (world);
        succ: per lane the indices of its successors; limit: float [L] speed limit m/s (0 = unknown);
        seg_a, seg_b: float [S, 2] all lane segments; seg_lane: int [S]; seg_s: float [S] arc length of
        each segment's start along its lane.
    """

    ids: list[str]
    pts: list[np.ndarray]
    succ: list[list[int]]
    limit: np.ndarray
    seg_a: np.ndarray
    seg_b: np.ndarray
    seg_lane: np.ndarray
    seg_s: np.ndarray

    @classmethod
    def from_scenario(cls, sc: Scenario, ds: float = 1.0, link_m: float = 1.5) -> "LaneGraph":
        feats = [(k, f) for k, f in sc.map_features.items()
                 if f.is_lane and f.type != "LANE_BIKE_LANE" and f.polyline is not None and len(f.polyline) >= 2]
        ids, pts, limit = [], [], []
        lines = resample_polylines([f.polyline[:, :2] for _, f in feats], ds)  # nuScenes: third column is yaw
        for (k, f), p in zip(feats, lines):
            if len(p) >= 2:
                ids.append(str(k))
                pts.append(p)
                lim = f.speed_limit_kmh or 0.0
                limit.append(lim / 3.6 if 0 < lim / 3.6 <= 60 else 0.0)
        index = {k: i for i, k in enumerate(ids)}
        n = len(ids)
        succ: list[list[int]] = [[] for _ in range(n)]
        if n:
            start = np.stack([p[0] for p in pts])
            end = np.stack([p[-1] for p in pts])
            h_start = np.array([np.arctan2(*(p[1] - p[0])[::-1]) for p in pts])
            h_end = np.array([np.arctan2(*(p[-1] - p[-2])[::-1]) for p in pts])
            near = np.linalg.norm(end[:, None] - start[None], axis=-1) <= link_m            # [L, L]
            near &= np.abs(wrap_angle(h_start[None] - h_end[:, None])) < np.pi / 3
            np.fill_diagonal(near, False)
            for i, j in zip(*np.nonzero(near)):
                succ[i].append(int(j))
            for (k, f) in feats:
                if str(k) in index:
                    for e in f.extras.get("exit_lanes", None) or ():
                        j = index.get(str(e))
                        if j is not None and j not in succ[index[str(k)]] and j != index[str(k)]:
                            succ[index[str(k)]].append(j)
        a = np.concatenate([p[:-1] for p in pts]) if n else np.zeros((0, 2))
        b = np.concatenate([p[1:] for p in pts]) if n else np.zeros((0, 2))
        lane = np.concatenate([np.full(len(p) - 1, i) for i, p in enumerate(pts)]) if n else np.zeros(0, int)
        s0 = np.concatenate([np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])[:-1]
                             for p in pts]) if n else np.zeros(0)
        return cls(ids, pts, succ, np.asarray(limit, np.float64), a, b, lane, s0)

    def snap(self, xy: np.ndarray, heading: np.ndarray, max_dist: float = 3.0,
             max_angle: float = np.pi / 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest lane of each pose with a compatible heading.

        Args:
            xy [N, 2] world m, heading [N] rad.
        Returns:
            lane int [N] (-1 where no lane lies within max_dist with |heading difference| < max_angle),
            s [N] arc length along that lane (m), lateral [N] signed offset (left +, m).
        """
        n = len(xy)
        lane, s, lat = np.full(n, -1), np.zeros(n), np.zeros(n)
        if n == 0 or len(self.seg_a) == 0:
            return lane, s, lat
        d = self.seg_b - self.seg_a
        L = np.maximum(np.linalg.norm(d, axis=-1), 1e-9)
        seg_h = np.arctan2(d[:, 1], d[:, 0])
        step = max(1, 2_000_000 // len(self.seg_a))
        for c in range(0, n, step):  # [n, S] blocks
            p = xy[c:c + step]
            rel = p[:, None] - self.seg_a[None]
            u = np.clip((rel * d[None]).sum(-1) / L ** 2, 0, 1)
            dist = np.linalg.norm(rel - u[..., None] * d[None], axis=-1)
            ok = np.abs(wrap_angle(heading[c:c + step, None] - seg_h[None])) < max_angle
            cost = np.where(ok & (dist <= max_dist), dist, np.inf)
            best = np.argmin(cost, 1)
            r = np.arange(len(p))
            found = np.isfinite(cost[r, best])
            lane[c:c + step] = np.where(found, self.seg_lane[best], -1)
            s[c:c + step] = self.seg_s[best] + u[r, best] * L[best]
            lat[c:c + step] = (d[best, 0] * rel[r, best, 1] - d[best, 1] * rel[r, best, 0]) / L[best]
        return lane, s, lat


@dataclass
class Routes:
    """Padded routes of N followers, resampled every ``ds`` m from each follower's start.

    Attributes:
        xy: float [N, R, 2] route points (world), padded by repeating the end; heading: [N, R] smoothed
        tangent; length: [N] m; lanes: per follower the lane indices it passes; lane_s: per follower the
        route arc length at which each of those lanes starts (m, may be negative for the first).
    """

    xy: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    lanes: list[list[int]]
    lane_s: list[list[float]]
    ds: float
    speed_cap: np.ndarray
    """[N, R] m/s: sqrt(max_lateral_accel / curvature), lowered so that the next caps are reachable braking at
    comfort_brake (a backward pass)."""

    @staticmethod
    def concat(parts: list["Routes"]) -> "Routes":
        """The routes of several scenes as one (padded to the longest; same ds)."""
        r = max(p.xy.shape[1] for p in parts)
        pad = lambda x: np.concatenate([x, np.repeat(x[:, -1:], r - x.shape[1], 1)], 1)  # noqa: E731
        return Routes(np.concatenate([pad(p.xy) for p in parts]), np.concatenate([pad(p.heading) for p in parts]),
                      np.concatenate([p.length for p in parts]), sum((p.lanes for p in parts), []),
                      sum((p.lane_s for p in parts), []), parts[0].ds,
                      np.concatenate([pad(p.speed_cap) for p in parts]))

    def pose(self, s: np.ndarray, lateral: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World (xy [N, 2], heading [N]) at arc length s [N] (clipped to the route) and lateral offset [N]."""
        n, r = self.heading.shape
        f = np.clip(s / self.ds, 0, r - 1)
        i0 = np.minimum(np.floor(f).astype(int), r - 2) if r > 1 else np.zeros(n, int)
        w = (f - i0)[:, None] if r > 1 else np.zeros((n, 1))
        rows = np.arange(n)
        i1 = np.minimum(i0 + 1, r - 1)
        xy = self.xy[rows, i0] * (1 - w) + self.xy[rows, i1] * w
        h = self.heading[rows, i0] + wrap_angle(self.heading[rows, i1] - self.heading[rows, i0]) * w[:, 0]
        if lateral is not None:
            xy = xy + lateral[:, None] * np.stack([-np.sin(h), np.cos(h)], -1)
        return xy, wrap_angle(h)


def _route_points(graph: LaneGraph, lane: int, s: float, length: float, guide: np.ndarray | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[int], list[float]]:
    """Walk the graph from (lane, s) for ``length`` m; at each branch take the successor nearest the guide
    path [G, 2] beyond the branch point (a random one when the guide ends before it)."""
    pts, lanes, starts = [graph.pts[lane]], [lane], [-s]
    covered = _polyline_length(graph.pts[lane]) - s
    visited = {lane}
    while covered < length and len(lanes) < 32:
        cands = [c for c in graph.succ[lanes[-1]] if c not in visited]
        if not cands:
            break
        nxt = cands[0]
        if len(cands) > 1:
            end = pts[-1][-1]
            ahead = None
            if guide is not None and len(guide):
                k = int(np.argmin(np.linalg.norm(guide - end, axis=-1)))
                ahead = guide[k + 1: k + 31]
                if len(ahead) and np.linalg.norm(ahead[-1] - end) < 2.0:
                    ahead = None  # the guide stops at the branch: no preference
            if ahead is None or not len(ahead):
                nxt = cands[int(rng.integers(len(cands)))]
            else:
                score = [np.min(np.linalg.norm(ahead[:, None] - graph.pts[c][None], axis=-1), 1).mean() for c in cands]
                nxt = cands[int(np.argmin(score))]
        starts.append(starts[-1] + _polyline_length(pts[-1]))
        pts.append(graph.pts[nxt])
        lanes.append(nxt)
        visited.add(nxt)
        covered += _polyline_length(graph.pts[nxt])
    return np.concatenate([pts[0]] + [p[1:] if np.allclose(p[0], q[-1]) else p for p, q in zip(pts[1:], pts)]), \
        lanes, starts


def _beyond_lane_end(p: np.ndarray, guide: np.ndarray, join_m: float = 3.0) -> np.ndarray:
    """Route points p [P, 2] that end with the mapped lanes, continued by the guide path [G, 2] past its point
    nearest the lanes' end, where that point lies within ``join_m`` of it and the guide goes on beyond it."""
    k = int(np.argmin(np.linalg.norm(guide - p[-1], axis=-1)))
    tail = guide[k + 1:]
    if np.linalg.norm(guide[k] - p[-1]) > join_m or not len(tail):
        return p
    direction = p[-1] - p[-2] if len(p) > 1 else tail[-1] - p[-1]
    if np.dot(tail[-1] - p[-1], direction) <= 0.5:  # the guide stops at (or turns back before) the lanes' end
        return p
    return np.concatenate([p, tail])


def _polyline_length(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def build_routes(graph: LaneGraph, lane: np.ndarray, s: np.ndarray, length: float,
                 guides: list[np.ndarray | None] | None = None, rng: np.random.Generator | None = None,
                 ds: float = 0.5, smooth_m: float = 2.0, max_lateral_accel: float = 3.0,
                 comfort_brake: float = 2.0, beyond_lanes: bool = False) -> Routes:
    """Routes of ``length`` m (or to the end of the mapped lanes) from (lane [N], s [N]), resampled every ds
    from the start pose; points and tangent headings box-smoothed over +-smooth_m so that lane joints do not spin
    a car, with a curvature speed cap (lateral acceleration at most max_lateral_accel m/s^2).

    ``beyond_lanes``: where the mapped lanes end (no successor: a driveway, a car park, the map's edge) and the
    guide path goes on from there, the route goes on along the guide (:func:`_beyond_lane_end`)."""
    rng = rng or np.random.default_rng(0)
    guides = guides or [None] * len(lane)
    xs, lanes, lane_s = [], [], []
    for i in range(len(lane)):
        p, ls, st = _route_points(graph, int(lane[i]), float(s[i]), length, guides[i], rng)
        if beyond_lanes and guides[i] is not None and not graph.succ[ls[-1]]:
            p = _beyond_lane_end(p, np.asarray(guides[i], np.float64))
        xs.append(_arc_points(p, float(s[i]), ds))
        lanes.append(ls)
        lane_s.append(st)
    return _routes(xs, lanes, lane_s, ds, smooth_m, max_lateral_accel, comfort_brake)


def path_routes(paths: list[np.ndarray], ds: float = 0.5, smooth_m: float = 2.0, max_lateral_accel: float = 3.0,
                comfort_brake: float = 2.0) -> Routes:
    """Routes along free paths (polylines [P_i, 2] from each follower's start, e.g. an agent off the mapped lanes
    keeping its heading), resampled and smoothed as :func:`build_routes` does; they pass no lanes."""
    xs = [_arc_points(np.asarray(p, np.float64)[:, :2], 0.0, ds) for p in paths]
    return _routes(xs, [[] for _ in xs], [[] for _ in xs], ds, smooth_m, max_lateral_accel, comfort_brake)


def _arc_points(p: np.ndarray, s0: float, ds: float) -> np.ndarray:
    """Points of polyline p [P, 2] every ds m of arc length from s0 to its end (at least two)."""
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    q = np.minimum(np.arange(s0, max(cum[-1], s0 + ds) + 1e-9, ds), cum[-1])
    return np.stack([np.interp(q, cum, p[:, 0]), np.interp(q, cum, p[:, 1])], -1)


def _routes(xs: list[np.ndarray], lanes: list[list[int]], lane_s: list[list[float]], ds: float, smooth_m: float,
            max_lateral_accel: float, comfort_brake: float) -> Routes:
    """Routes from resampled points ``xs`` (each [R_i, 2], ``ds`` apart): padded, tangents and positions
    box-smoothed over +-smooth_m, with the curvature speed cap."""
    r = max((len(x) for x in xs), default=1)
    n = len(xs)
    xy = np.zeros((n, max(r, 2), 2))
    length_m = np.zeros(n)
    for i, x in enumerate(xs):
        xy[i, :len(x)] = x
        xy[i, len(x):] = x[-1]
        length_m[i] = (len(x) - 1) * ds
    # tangent from central differences, box-smoothed on the unit circle; padding keeps the last heading
    d = np.gradient(xy, axis=1) if xy.shape[1] > 1 else np.zeros_like(xy)
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    u = np.where(norm > 1e-9, d / np.maximum(norm, 1e-9), np.nan)
    for i, x in enumerate(xs):  # padded tail and zero-length steps take the last real direction
        last = max(len(x) - 1, 1)
        seg = u[i, :last + 1]
        good = np.isfinite(seg[:, 0])
        if not good.any():
            u[i] = [1.0, 0.0]
            continue
        idx = np.maximum.accumulate(np.where(good, np.arange(len(seg)), 0))
        first = np.argmax(good)
        idx[:first] = first
        u[i, :last + 1] = seg[idx]
        u[i, last + 1:] = seg[idx[-1]]
    k = max(int(round(smooth_m / ds)), 0)
    if k:
        box = lambda x, **pad: (lambda c: (c[:, 2 * k + 1:] - c[:, :-2 * k - 1]) / (2 * k + 1))(  # noqa: E731
            np.cumsum(np.pad(x, ((0, 0), (k + 1, k), (0, 0)), **pad), axis=1))
        u = box(u, mode="edge")
        # positions too: a polyline kink would otherwise turn the velocity within one step. Padded by odd
        # reflection about the first point, which a straight start keeps in place: edge padding pulled the
        # start ~k*ds/2 forward, a jump at a rollout's first step from its logged pose
        xy = np.where(np.arange(xy.shape[1])[None, :, None] < np.maximum(length_m / ds, 1)[:, None, None],
                      box(xy, mode="reflect", reflect_type="odd"), xy)
    heading = np.arctan2(u[..., 1], u[..., 0])
    curv = np.zeros_like(heading)
    curv[:, 1:] = np.abs(wrap_angle(np.diff(heading, axis=1))) / ds
    cap = np.sqrt(max_lateral_accel / np.maximum(curv, 1e-4))
    for r in range(cap.shape[1] - 2, -1, -1):  # O(R) passes vectorised over routes
        cap[:, r] = np.minimum(cap[:, r], np.sqrt(cap[:, r + 1] ** 2 + 2 * comfort_brake * ds))
    return Routes(xy, heading, length_m, lanes, lane_s, ds, cap)


def route_stops(routes: Routes, graph: LaneGraph, sc: Scenario) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The signals on each route: ((stop_s [N, K] route arc length where a controlled lane starts, padded with
    inf; light [N, K] index into ``red``, -1 for padding), red bool [K_lights, T] (stop states per step))."""
    lights = list(sc.traffic_lights.values())
    light_lane = {str(tl.lane): i for i, tl in enumerate(lights)}
    red = np.zeros((max(len(lights), 1), sc.length), bool)
    for i, tl in enumerate(lights):
        st = [x in RED_STATES for x in tl.states][: sc.length]
        red[i, :len(st)] = st
    rows = []
    for lanes, starts in zip(routes.lanes, routes.lane_s):
        rows.append([(st, light_lane[graph.ids[ln]]) for ln, st in zip(lanes, starts)
                     if graph.ids[ln] in light_lane and st > 0])
    k = max((len(r) for r in rows), default=0)
    s = np.full((len(rows), max(k, 1)), np.inf)
    idx = np.full((len(rows), max(k, 1)), -1)
    for i, r in enumerate(rows):
        for j, (st, li) in enumerate(r):
            s[i, j], idx[i, j] = st, li
    return (s, idx), red
