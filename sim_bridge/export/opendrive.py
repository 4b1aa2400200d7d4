"""Scenario -> OpenDRIVE 1.7 road network (``<stem>.xodr``), built with ``scenariogeneration``.

Road network (``<stem>.xodr``): one OpenDRIVE road per lane of the scenario. Its reference line is
the lane centre line, simplified (Douglas-Peucker, :data:`SIMPLIFY_M`) and fitted piecewise with
cubic Hermite ``paramPoly3`` geometries through the kept vertices (continuous heading); it carries
one right driving lane (``biking`` for bike lanes), shifted left by half its width (``laneOffset``)
so that the lane is centred on the centre line. Width: the lane's own ``width`` (Waymo half
widths), else twice the median distance from the centre line to the lane polygon, else
:data:`DEFAULT_LANE_WIDTH_M`; constant, except that it ramps linearly to the shared width at a link.
Lane links come from ``exit_lanes``/``entry_lanes`` (kept where the lanes meet within
:data:`LINK_GAP_M`). A continuation that is unique both ways is a road successor/predecessor link
(lane -1 to -1). Where connectivity branches (a lane with several exits, or several entries into one
lane) the branches become connecting roads of an OpenDRIVE junction (see :func:`_pieces`); a lane
that is a branch at one end and branches itself at the other is cut into two roads.
The roads are flat (no elevation); road lines, edges, crosswalks and lights are not exported.

``scenariogeneration`` is imported inside the functions that use it: it is an optional extra
(``bevgen[export]``) and slow to import.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim_bridge.scenario import MapFeature, Scenario
# the point-to-polyline distance the Waymo reader uses for lane widths (one implementation)
from sim_bridge.sources.waymo import _distance_to_polyline as distance_to_polyline

# scenariogeneration (optional `export` extra) is imported lazily, when a file is built.

__all__ = ["build_opendrive", "lane_centres", "simplify_polyline", "lane_width", "SIMPLIFY_M", "DEFAULT_LANE_WIDTH_M",
           "LINK_GAP_M"]

SIMPLIFY_M = 0.05          # max distance of a dropped centre-line point from the simplified line (m)
DEFAULT_LANE_WIDTH_M = 3.5
LINK_GAP_M = 0.5           # largest gap between linked roads' ends (m)
MIN_SEGMENT_M = 1e-3       # centre-line points closer than this are merged
_GL_X, _GL_W = np.polynomial.legendre.leggauss(24)
_GL_P, _GL_W = (_GL_X + 1) / 2, _GL_W / 2    # nodes and weights on [0, 1], for paramPoly3 arc lengths


# ---- geometry -----------------------------------------------------------------------------------
def simplify_polyline(pts: np.ndarray, tol: float = SIMPLIFY_M) -> np.ndarray:
    """Douglas-Peucker simplification keeping both ends.

    Args:
        pts: float64 [N, 2] points (m), N >= 2, consecutive duplicates removed.
        tol: largest allowed distance (m) of a removed point from the kept chain.

    Returns:
        float64 [M, 2], 2 <= M <= N, a subsequence of ``pts``.
    """
    keep = np.zeros(len(pts), bool)
    keep[[0, -1]] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = pts[i], pts[j]
        ab = b - a
        rel = pts[i + 1:j] - a
        n = float(np.hypot(*ab))
        d = (np.abs(ab[0] * rel[:, 1] - ab[1] * rel[:, 0]) / n) if n > 1e-9 else np.hypot(rel[:, 0], rel[:, 1])
        k = int(np.argmax(d))
        if d[k] > tol:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return pts[keep]


def _clean(polyline: np.ndarray) -> np.ndarray:
    """float64 [N, 2] centre line without consecutive points closer than MIN_SEGMENT_M."""
    pts = np.asarray(polyline, np.float64)[:, :2]
    keep = np.r_[True, np.hypot(*np.diff(pts, axis=0).T) > MIN_SEGMENT_M]
    return pts[keep]


def lane_width(f: MapFeature) -> float:
    """A lane's width in m (see the module docstring for the order of sources)."""
    w = f.extras.get("width")
    if w is not None:
        w = np.asarray(w, np.float64)
        if w.ndim == 2 and w.shape[1] == 2:  # Waymo: (left, right) half widths per point
            total = w.sum(1)
            total = total[total > 0.5]
            if total.size:
                return float(np.clip(np.median(total), 1.0, 8.0))
        elif w.size == 1 and 0.5 < float(w) < 20:
            return float(w)
    if f.polygon is not None and len(f.polygon) >= 3 and f.polyline is not None:
        ring = np.asarray(f.polygon, np.float64)[:, :2]
        ring = np.vstack([ring, ring[:1]])
        d = distance_to_polyline(np.asarray(f.polyline, np.float64)[:, :2], ring)
        if np.median(d) > 0.25:
            return float(np.clip(2 * np.median(d), 1.0, 8.0))
    return DEFAULT_LANE_WIDTH_M


# ---- OpenDRIVE ----------------------------------------------------------------------------------
@dataclass
class _LanePlan:
    """One lane's road before it is built: simplified centre line, end tangents and widths."""

    pts: np.ndarray                 # float64 [M, 2] simplified centre line (m)
    width: tuple[float, float]      # lane width at start and end (m); linear in between
    tangents: list = field(default_factory=lambda: [None, None])  # unit [2] at start/end; None = own


def _vertex_tangents(pts: np.ndarray, start: np.ndarray | None, end: np.ndarray | None) -> np.ndarray:
    """float64 [M, 2] unit tangents: central differences inside, the given (or own) ones at the ends."""
    d = np.diff(pts, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t = np.vstack([d[:1], d[:-1] + d[1:], d[-1:]])
    if start is not None:
        t[0] = start
    if end is not None:
        t[-1] = end
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def _planview(xodr, plan: _LanePlan):
    """Chain of paramPoly3 (normalized range) cubic Hermite pieces through the simplified centre line.

    Each piece starts at vertex k with the vertex tangent as heading; in that local frame
    u(p) = L p + c_u p^2 + d_u p^3 and v(p) = c_v p^2 + d_v p^3 (p in [0, 1], L the chord), so the
    heading is continuous along the road and across linked roads (they share the contact tangent).
    """
    pts = plan.pts
    tan = _vertex_tangents(pts, *plan.tangents)
    pv, s = xodr.PlanView(), 0.0
    for k in range(len(pts) - 1):
        hdg = float(np.arctan2(tan[k, 1], tan[k, 0]))
        c, sn = np.cos(hdg), np.sin(hdg)
        rot = np.array([[c, sn], [-sn, c]])                   # world -> local
        chord = float(np.linalg.norm(pts[k + 1] - pts[k]))
        x1, y1 = rot @ (pts[k + 1] - pts[k])
        mx, my = chord * (rot @ tan[k + 1])
        cu, du, cv, dv = 3 * x1 - 2 * chord - mx, -2 * x1 + chord + mx, 3 * y1 - my, -2 * y1 + my
        du_dp = chord + 2 * cu * _GL_P + 3 * du * _GL_P ** 2
        dv_dp = 2 * cv * _GL_P + 3 * dv * _GL_P ** 2
        length = float(np.sum(_GL_W * np.hypot(du_dp, dv_dp)))  # Gauss-Legendre: exact to ~1e-9 m here
        geom = xodr.ParamPoly3(0.0, chord, cu, du, 0.0, 0.0, cv, dv, prange="normalized", length=length)
        pv.add_fixed_geometry(geom, float(pts[k, 0]), float(pts[k, 1]), hdg, s=s)
        s += geom.length
    return pv, s


def _road(xodr, road_id: int, fid: str, f: MapFeature, plan: _LanePlan, junction: int = -1):
    pv, length = _planview(xodr, plan)
    w0, slope = plan.width[0], (plan.width[1] - plan.width[0]) / length
    centre = xodr.Lane(a=0)
    centre.add_roadmark(xodr.RoadMark(xodr.RoadMarkType.none))
    lane_type = xodr.LaneType.biking if f.type == "LANE_BIKE_LANE" else xodr.LaneType.driving
    right = xodr.Lane(lane_type=lane_type, a=w0, b=slope)
    right.add_roadmark(xodr.RoadMark(xodr.RoadMarkType.none))
    section = xodr.LaneSection(0, centre)
    section.add_right_lane(right)
    lanes = xodr.Lanes()
    lanes.add_lanesection(section)
    lanes.add_laneoffset(xodr.LaneOffset(0, a=w0 / 2, b=slope / 2))  # centre the lane on the centre line
    road = xodr.Road(road_id, pv, lanes, road_type=junction, name=str(fid))
    return road, right


def lane_centres(sc: Scenario, notes: Counter) -> dict[str, np.ndarray]:
    """Simplified centre line [N, 2|3] of every usable lane (shorter than 1 mm: counted in ``notes``, skipped)."""
    out = {}
    for fid, f in sc.map_features.items():
        if not f.is_lane or f.polyline is None:
            continue
        pts = _clean(f.polyline)
        if len(pts) < 2:
            notes["lanes shorter than 1 mm"] += 1
            continue
        out[fid] = simplify_polyline(pts)
    return out


def _plans(sc: Scenario, notes: Counter) -> dict[str, _LanePlan]:
    plans = {}
    for fid, centre in lane_centres(sc, notes).items():
        w = lane_width(sc.map_features[fid])
        plans[fid] = _LanePlan(centre, (w, w))
    return plans


def _lane_links(sc: Scenario, plans: dict[str, _LanePlan], notes: Counter) -> list[tuple[str, str]]:
    """Lane links (a, b), b continuing a, from ``exit_lanes`` and ``entry_lanes`` between exported lanes.

    A link is kept when b's start lies within LINK_GAP_M of a's end (and within a quarter of either
    lane's chord, so that moving an end onto the other never folds a short lane): MetaDrive lists every
    lane of the next road as an exit, only the one that meets is a continuation. Sorted, deterministic.
    """
    links: set[tuple[str, str]] = set()
    for fid in plans:
        f = sc.map_features[fid]
        links.update((fid, str(x)) for x in f.extras.get("exit_lanes") or ())
        links.update((str(x), fid) for x in f.extras.get("entry_lanes") or ())
    kept = []
    for a, b in sorted(links):
        if a == b or a not in plans or b not in plans:
            continue
        pa, pb = plans[a].pts, plans[b].pts
        gap = float(np.hypot(*(pa[-1] - pb[0])))
        chord = min(float(np.hypot(*(pa[-1] - pa[0]))), float(np.hypot(*(pb[-1] - pb[0]))))
        if gap <= LINK_GAP_M and gap <= chord / 4:
            kept.append((a, b))
        else:
            notes["listed exit/entry lanes that do not start at the lane end (not linked)"] += 1
    return kept


@dataclass
class _Piece:
    """One OpenDRIVE road: a whole lane or one half of a lane split in two (see :func:`_pieces`)."""

    fid: str
    plan: _LanePlan
    connector: bool                  # a connecting road inside a junction
    road_id: int = 0
    junction: int = -1
    succ: list = field(default_factory=list)   # pieces it links to at its end
    pred: list = field(default_factory=list)   # pieces linking to its start


def _split(plan: _LanePlan) -> tuple[_LanePlan, _LanePlan]:
    """The two halves (by polyline length) of a lane, sharing the cut point, its tangent and width."""
    pts = plan.pts
    seg = np.hypot(*np.diff(pts, axis=0).T)
    cum = np.r_[0.0, np.cumsum(seg)]
    half = cum[-1] / 2
    k = int(np.clip(np.searchsorted(cum, half) - 1, 0, len(seg) - 1))  # segment holding the midpoint
    u = (half - cum[k]) / seg[k]
    d = (pts[k + 1] - pts[k]) / seg[k]
    if len(pts) > 2 and (u * seg[k] < 10 * MIN_SEGMENT_M or (1 - u) * seg[k] < 10 * MIN_SEGMENT_M):
        j = k if u * seg[k] < 10 * MIN_SEGMENT_M else k + 1          # cut at a vertex near the midpoint
        j = int(np.clip(j, 1, len(pts) - 2))
        cut, head, tail = pts[j], pts[:j + 1].copy(), pts[j:].copy()
        t = (pts[j] - pts[j - 1]) / np.linalg.norm(pts[j] - pts[j - 1]) + \
            (pts[j + 1] - pts[j]) / np.linalg.norm(pts[j + 1] - pts[j])
        t /= np.linalg.norm(t)
    else:
        cut = pts[k] + u * (pts[k + 1] - pts[k])
        head, tail, t = np.vstack([pts[:k + 1], cut]), np.vstack([cut, pts[k + 1:]]), d
    w = (plan.width[0] + plan.width[1]) / 2
    return (_LanePlan(head, (plan.width[0], w), [plan.tangents[0], t.copy()]),
            _LanePlan(tail, (w, plan.width[1]), [t.copy(), plan.tangents[1]]))


def _pieces(plans: dict[str, _LanePlan], links: list[tuple[str, str]], notes: Counter) -> dict[str, list[_Piece]]:
    """Lane id -> its roads (1, or 2 for a split lane), linked piece to piece and tagged regular/connector.

    OpenDRIVE allows a road one successor and one predecessor element. Where lane connectivity branches,
    the branches are connecting roads of a junction: the exits of a lane with several exits, and the
    entries of a lane with several entries; a connecting road links only to roads outside junctions.
    Each lane end is therefore forced "regular" (it branches), forced "connector" (it is one branch of
    a neighbour that branches) or free. A lane with a forced connector end is a connecting road, unless
    its other end is forced regular: then it is cut in two halves, a connecting road and a regular road
    linked end to start. Two connecting roads linked by a one-to-one link are separated the same way
    (the first one is cut). A link that both splits and merges (a with several exits, b with several
    entries) would need a synthetic road; it is not written (counted in the notes).
    """
    n_out, n_in = Counter(a for a, _ in links), Counter(b for _, b in links)
    start: dict[str, str] = {}
    end: dict[str, str] = {}
    kept = []
    for a, b in links:
        if n_out[a] > 1 and n_in[b] > 1:
            notes["lane links that both split and merge (not written)"] += 1
            continue
        kept.append((a, b))
        if n_out[a] > 1:
            end[a], start[b] = "R", "C"
        elif n_in[b] > 1:
            end[a], start[b] = "C", "R"
    kind = {}
    for fid in plans:
        s, e = start.get(fid), end.get(fid)
        kind[fid] = ("split" if "R" in (s, e) else "C") if "C" in (s, e) else "R"
    for a, b in kept:  # one-to-one link between two connecting roads: cut the first one
        if kind[a] == "C" and kind[b] == "C" and n_out[a] == 1 and n_in[b] == 1:
            kind[a], end[a] = "split", "R"
    out: dict[str, list[_Piece]] = {}
    uncut: set[str] = set()
    for fid, plan in plans.items():
        if kind[fid] != "split":
            out[fid] = [_Piece(fid, plan, kind[fid] == "C")]
            continue
        if len(plan.pts) == 2 and np.hypot(*(plan.pts[1] - plan.pts[0])) < 20 * MIN_SEGMENT_M:
            out[fid] = [_Piece(fid, plan, False)]  # too short to cut (< 2 cm): left unlinked
            uncut.add(fid)
            continue
        head, tail = _split(plan)
        head_c = start.get(fid) == "C"
        out[fid] = [_Piece(fid, head, head_c), _Piece(fid, tail, not head_c)]
        out[fid][0].succ.append(out[fid][1])
        out[fid][1].pred.append(out[fid][0])
    for a, b in kept:
        p, q = out[a][-1], out[b][0]
        if p.connector and q.connector or a in uncut or b in uncut:
            notes["lane links at lanes too short for a junction (not written)"] += 1
            continue
        p.succ.append(q)
        q.pred.append(p)
    for ps in out.values():
        for p in ps:
            p.connector = p.connector and bool(p.pred or p.succ)  # unlinked after all: not in a junction
    return out


def _own_tangent(pts: np.ndarray, at_end: bool) -> np.ndarray:
    d = pts[-1] - pts[-2] if at_end else pts[1] - pts[0]
    return d / np.linalg.norm(d)


def _snap(pieces: list[_Piece]) -> None:
    """Make linked road ends meet exactly: position, tangent and width (lane borders within 1 cm).

    Regular to regular: the successor's start moves onto the predecessor's end, both take the mean
    tangent and width. A connecting road's ends move onto the regular roads they link to and take
    their tangent and width (a regular end may carry several connecting roads).
    """
    for p in pieces:
        for q in p.succ:
            if p.connector or q.connector or p.fid == q.fid:
                continue
            pa, pb = p.plan, q.plan
            pb.pts[0] = pa.pts[-1]
            shared = _own_tangent(pa.pts, True) + _own_tangent(pb.pts, False)
            pa.tangents[1] = pb.tangents[0] = shared / np.linalg.norm(shared)
            w = (pa.width[1] + pb.width[0]) / 2
            pa.width, pb.width = (pa.width[0], w), (w, pb.width[1])
    for c in pieces:
        if not c.connector:
            continue
        plan = c.plan
        if c.pred and c.pred[0].fid != c.fid:
            r = c.pred[0].plan
            plan.pts[0] = r.pts[-1]
            plan.tangents[0] = r.tangents[1] if r.tangents[1] is not None else _own_tangent(r.pts, True)
            plan.width = (r.width[1], plan.width[1])
        if c.succ and c.succ[0].fid != c.fid:
            r = c.succ[0].plan
            plan.pts[-1] = r.pts[0]
            plan.tangents[1] = r.tangents[0] if r.tangents[0] is not None else _own_tangent(r.pts, False)
            plan.width = (plan.width[0], r.width[0])


def _junction_groups(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Connecting roads grouped into junctions: those that share a regular road end are together."""
    parent = {id(c): id(c) for c in pieces if c.connector}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in pieces:
        if r.connector:
            continue
        for side in (r.succ, r.pred):
            cs = [c for c in side if c.connector]
            for c in cs[1:]:
                parent[find(id(c))] = find(id(cs[0]))
    groups: dict[int, list[_Piece]] = {}
    for c in pieces:
        if c.connector:
            groups.setdefault(find(id(c)), []).append(c)
    return list(groups.values())


def build_opendrive(sc: Scenario, name: str) -> tuple[Any, dict[str, list[int]], Counter]:
    """OpenDRIVE road network of a scenario's lanes: roads, lane links and junctions.

    One road per lane (two for a lane cut at a junction, see :func:`_pieces`). One-to-one lane links
    are road successor/predecessor links; branching ones go through junctions: the incoming road's
    successor is the junction, each connecting road (``junction="<id>"``) links to its incoming
    road (predecessor, contact point end) and to the road it leads to (successor, whose predecessor
    is the junction), and the junction holds exactly one ``<connection>`` with ``<laneLink from="-1"
    to="-1">`` per connecting road: ``incomingRoad`` its predecessor with ``contactPoint="start"``, or,
    for a lane that starts inside the junction (no entry), the road it leads to with
    ``contactPoint="end"``. Linked ends share position, tangent and width (:func:`_snap`).

    Args:
        sc: the scenario.
        name: the network's name (header).

    Returns:
        (``scenariogeneration.xodr.OpenDrive``, lane feature id -> its road ids in driving order,
        notes on what was dropped).
    """
    from scenariogeneration import xodr  # optional extra, slow import: imported on use

    notes: Counter = Counter()
    plans = _plans(sc, notes)
    lanes_pieces = _pieces(plans, _lane_links(sc, plans, notes), notes)
    pieces = [p for ps in lanes_pieces.values() for p in ps]
    for i, p in enumerate(pieces):
        p.road_id = i + 1
    _snap(pieces)
    junctions = []
    for k, group in enumerate(_junction_groups(pieces)):
        junction = xodr.Junction(f"junction_{k + 1}", len(pieces) + k + 1)
        for c in group:
            c.junction = junction.id
        junctions.append(junction)
    by_id = {j.id: j for j in junctions}
    odr = xodr.OpenDrive(name, revMajor="1", revMinor="7")
    roads, lanes = {}, {}
    for p in pieces:
        f = sc.map_features[p.fid]
        roads[p.road_id], lanes[p.road_id] = _road(xodr, p.road_id, p.fid, f, p.plan, p.junction)
        kmh = f.speed_limit_kmh
        if kmh is not None and 0 < kmh < 500:  # MetaDrive writes 1000 km/h for "no limit"
            roads[p.road_id].add_type(xodr.RoadType.town, speed=float(kmh), speed_unit="km/h")
    for p in pieces:
        road, lane = roads[p.road_id], lanes[p.road_id]
        if p.succ:
            q = p.succ[0]
            if q.connector and not p.connector:  # regular -> junction (one or several connecting roads)
                road.add_successor(xodr.ElementType.junction, q.junction)
            else:
                road.add_successor(xodr.ElementType.road, q.road_id, xodr.ContactPoint.start)
                lane.add_link("successor", -1)
        if p.pred:
            q = p.pred[0]
            if q.connector and not p.connector:
                road.add_predecessor(xodr.ElementType.junction, q.junction)
            else:
                road.add_predecessor(xodr.ElementType.road, q.road_id, xodr.ContactPoint.end)
                lane.add_link("predecessor", -1)
        if p.connector:  # exactly one connection per connecting road (OpenDRIVE 1.7)
            if p.pred:  # from its incoming road, along the connecting road
                connection = xodr.Connection(p.pred[0].road_id, p.road_id, xodr.ContactPoint.start)
            else:  # a lane that starts in the junction: named from the road it leads to, against its direction
                connection = xodr.Connection(p.succ[0].road_id, p.road_id, xodr.ContactPoint.end)
            connection.add_lanelink(-1, -1)
            by_id[p.junction].add_connection(connection)
    for road in roads.values():
        odr.add_road(road)
    for junction in junctions:
        odr.add_junction(junction)
    return odr, {fid: [p.road_id for p in ps] for fid, ps in lanes_pieces.items()}, notes
