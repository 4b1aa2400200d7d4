"""Triangle meshes of a scenario's static scene (road surface, markings, crosswalks, buildings) and boxes.

All meshes live in a flat "render frame": world x, y minus a scenario origin (so float32 keeps
millimetres), z up with the ground at z = 0. Triangles are counter-clockwise seen from their visible
side (the renderer culls back faces). Built once per scenario; costs are O(map points) with shapely
and scipy doing the geometry (unions, buffers, Delaunay) in C.

Shape letters: p vertex, t triangle, n box / polyline point, f face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sim_bridge.boxes import Boxes3D

# shapely and scipy are imported lazily (triangulation only): heavy, scipy is the optional `ml` extra.

__all__ = ["Mesh", "box_meshes", "car_meshes", "triangulate", "line_quads", "crosswalk_stripes",
           "place_buildings", "split_tiles"]


@dataclass(frozen=True)
class Mesh:
    """An indexed triangle mesh.

    Attributes:
        vertices: float64 [P, 3] render-frame metres.
        triangles: int64 [T, 3] vertex indices, counter-clockwise seen from the visible side.
        normals: float64 [P, 3] unit per-vertex normals (faces do not share vertices where it matters).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray

    @staticmethod
    def empty() -> "Mesh":
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3)))

    @property
    def num_triangles(self) -> int:
        return len(self.triangles)

    @staticmethod
    def concat(meshes: Sequence["Mesh"]) -> "Mesh":
        meshes = [m for m in meshes if m.num_triangles]
        if not meshes:
            return Mesh.empty()
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(np.concatenate([m.vertices for m in meshes]),
                    np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                    np.concatenate([m.normals for m in meshes]))


def _flat(xy: np.ndarray, tri: np.ndarray, z: float) -> Mesh:
    """Horizontal mesh from 2D vertices [P, 2] and triangles [T, 3]; flips clockwise ones to face up."""
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = np.where((cross < 0)[:, None], tri[:, [0, 2, 1]], tri)
    verts = np.column_stack([xy, np.full(len(xy), z)])
    normals = np.tile([0.0, 0.0, 1.0], (len(xy), 1))
    return Mesh(verts, tri.astype(np.int64), normals)


# ---- boxes -------------------------------------------------------------------------------------
# Unit box corners (x, y, z in [-0.5, 0.5] x [-0.5, 0.5] x [0, 1]) of the 5 visible faces (no bottom),
# each CCW seen from outside: +x, -x, +y, -y, +z.
_FACES = np.array([
    [[.5, -.5, 0], [.5, .5, 0], [.5, .5, 1], [.5, -.5, 1]],
    [[-.5, .5, 0], [-.5, -.5, 0], [-.5, -.5, 1], [-.5, .5, 1]],
    [[.5, .5, 0], [-.5, .5, 0], [-.5, .5, 1], [.5, .5, 1]],
    [[-.5, -.5, 0], [.5, -.5, 0], [.5, -.5, 1], [-.5, -.5, 1]],
    [[-.5, -.5, 1], [.5, -.5, 1], [.5, .5, 1], [-.5, .5, 1]],
])  # [F=5, 4, 3]
_FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], np.float64)


def box_meshes(boxes: Boxes3D) -> Mesh:
    """Closed-looking boxes (bottom face omitted) as one mesh, vectorised over boxes.

    Args:
        boxes: one set of ``Boxes3D`` [N] (centre z; every box is meshed, ``valid`` is not applied).
    Returns:
        Mesh with 20 N vertices and 10 N triangles.
    """
    b = boxes.numpy().to(dtype=np.float64)
    n = len(b)
    base = np.column_stack([b.center[:, :2], b.bottom_z()])  # [N, 3] footprint centre on the bottom face
    local = _FACES[None] * b.size[:, None, None, :]  # [N, F, 4, 3]
    c, s = np.cos(b.yaw), np.sin(b.yaw)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    verts = np.einsum("nij,nfcj->nfci", rot, local) + base[:, None, None, :]
    normals = np.broadcast_to(np.einsum("nij,fj->nfi", rot, _FACE_NORMALS)[:, :, None], (n, 5, 4, 3))
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    tri = (np.arange(n * 5)[:, None, None] * 4 + quad[None]).reshape(-1, 3)
    return Mesh(verts.reshape(-1, 3), tri, normals.reshape(-1, 3).copy())


def _one_box(x: float, bottom: float, length: float, width: float, height: float) -> Boxes3D:
    """One unrotated box on the x axis whose bottom face is at height ``bottom`` (m)."""
    return Boxes3D.from_array(np.array([[x, 0, bottom + height / 2, length, width, height, 0]], np.float64))


def car_meshes(length: float, width: float, height: float) -> tuple[Mesh, Mesh]:
    """A simple car in its own frame (origin at the footprint centre on the ground, x forward).

    Returns (body, cabin): the body spans the full footprint from 12% to 60% of the height, the cabin
    (windows) 58% of the length set back slightly, 90% of the width, from 60% up to the full height.
    Both together fill the same bounding box as the agent's 3D box.
    """
    body = box_meshes(_one_box(0, 0.12 * height, length, width, 0.48 * height))
    cabin = box_meshes(_one_box(-0.08 * length, 0.6 * height, 0.58 * length, 0.9 * width, 0.4 * height))
    return body, cabin


# ---- flat geometry -----------------------------------------------------------------------------
def triangulate(geom, z: float, max_segment_m: float = 3.0) -> Mesh:
    """Triangulate a shapely (Multi)Polygon, holes included, as a horizontal mesh at height ``z``.

    Delaunay triangulation (scipy) of the densified boundary vertices, keeping triangles whose centroid
    lies inside the polygon. With boundary segments shorter than the narrowest part of the shape
    (roads are >= 3 m wide) Delaunay edges follow the boundary. O(P log P) for P boundary points.
    """
    import shapely
    from scipy.spatial import Delaunay

    if geom is None or geom.is_empty:
        return Mesh.empty()
    meshes = []
    # segmentize first: it can split a polygon; get_parts twice flattens collections of multi-parts
    for poly in shapely.get_parts(shapely.get_parts(shapely.segmentize(geom, max_segment_m))):
        if poly.geom_type != "Polygon" or poly.area < 1e-3:
            continue
        rings = [poly.exterior, *poly.interiors]
        xy = np.unique(np.concatenate([np.asarray(r.coords)[:-1, :2] for r in rings]), axis=0)
        if len(xy) < 3:
            continue
        try:
            tri = Delaunay(xy).simplices
        except Exception:  # degenerate (collinear) input: nothing to draw
            continue
        cen = xy[tri].mean(axis=1)
        shapely.prepare(poly)
        tri = tri[shapely.contains_xy(poly, cen[:, 0], cen[:, 1])]
        if len(tri):
            meshes.append(_flat(xy, tri, z))
    return Mesh.concat(meshes)


def _dash_segments(line: np.ndarray, on: float, off: float) -> np.ndarray:
    """Dash endpoints [D, 2, 2] along a polyline [P, 2] (dash every on + off metres, on metres long)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= on:
        return line[[0, -1]][None]
    starts = np.arange(0.0, s[-1] - 0.5 * on, on + off)
    ends = np.minimum(starts + on, s[-1])
    pts = np.stack([np.stack([np.interp(q, s, line[:, k]) for k in range(2)], -1) for q in (starts, ends)], 1)
    return pts


def line_quads(polylines: Sequence[np.ndarray], width: float, z: float,
               dash: tuple[float, float] | None = None, offset: float = 0.0) -> Mesh:
    """Thin horizontal quads along polylines (one quad per segment or dash), vectorised over segments.

    Args:
        polylines: list of [P_i, >=2] world-frame points (only x, y are used).
        width: quad width in metres.
        z: height of the quads.
        dash: (on, off) metres for broken lines; None for solid.
        offset: lateral shift to the left of the line direction (double lines), metres.
    Returns:
        Mesh with 4 vertices and 2 triangles per segment.
    """
    segs = []
    for line in polylines:
        line = np.asarray(line, np.float64)[:, :2]
        if len(line) < 2:
            continue
        if dash is None:
            segs.append(np.stack([line[:-1], line[1:]], 1))
        else:
            segs.append(_dash_segments(line, *dash))
    if not segs:
        return Mesh.empty()
    segs = np.concatenate(segs)  # [S, 2, 2]
    d = segs[:, 1] - segs[:, 0]
    length = np.linalg.norm(d, axis=1)
    segs, d, length = segs[length > 1e-6], d[length > 1e-6], length[length > 1e-6]
    left = np.stack([-d[:, 1], d[:, 0]], 1) / length[:, None]
    p0, p1 = segs[:, 0] + left * offset, segs[:, 1] + left * offset
    h = left * (0.5 * width)
    xy = np.stack([p0 - h, p1 - h, p1 + h, p0 + h], 1).reshape(-1, 2)  # CCW seen from above
    tri = (np.arange(len(segs))[:, None, None] * 4 + np.array([[0, 1, 2], [0, 2, 3]])[None]).reshape(-1, 3)
    return _flat(xy, tri, z)


def crosswalk_stripes(polygons: Sequence[np.ndarray], z: float, stripe_m: float = 0.6) -> Mesh:
    """Zebra stripes filling each crosswalk polygon's minimum rotated rectangle.

    Stripes run across the crosswalk's long side (along the direction of traffic), ``stripe_m`` wide
    with equal gaps. O(stripes).
    """
    import shapely

    quads = []
    for poly in polygons:
        poly = np.asarray(poly, np.float64)[:, :2]
        if len(poly) < 3:
            continue
        rect = np.asarray(shapely.minimum_rotated_rectangle(shapely.Polygon(poly)).exterior.coords)[:4]
        if len(rect) < 4:
            continue
        e1, e2 = rect[1] - rect[0], rect[3] - rect[0]
        long_, short = (e1, e2) if np.linalg.norm(e1) >= np.linalg.norm(e2) else (e2, e1)
        n = max(1, int(np.linalg.norm(long_) / (2 * stripe_m)))
        t0 = (np.arange(n) * 2 + 0.5) / (2 * n)
        t1 = t0 + 1.0 / (2 * n)
        base = rect[0]
        q = np.stack([base + t0[:, None] * long_, base + t1[:, None] * long_,
                      base + t1[:, None] * long_ + short, base + t0[:, None] * long_ + short], 1)
        quads.append(q)
    if not quads:
        return Mesh.empty()
    xy = np.concatenate(quads).reshape(-1, 2)
    tri = (np.arange(len(xy) // 4)[:, None, None] * 4 + np.array([[0, 1, 2], [0, 2, 3]])[None]).reshape(-1, 3)
    return _flat(xy, tri, z)


def place_buildings(drivable, rng: np.random.Generator, spacing_m: float, setback_m: float,
                    depth_m: tuple[float, float], height_m: tuple[float, float],
                    max_buildings: int = 400) -> Boxes3D:
    """Roadside buildings along the outline of the drivable area, deterministic given ``rng``.

    Candidates are spaced ``spacing_m`` along the outline of ``drivable`` grown by ``setback_m``, face
    the road, and extend away from it; candidates that touch any road (grown by setback - 0.5 m) or
    overlap an earlier candidate are dropped. O(outline length / spacing) with shapely's STRtree.

    Args:
        drivable: shapely (Multi)Polygon of the road surface, render frame.
        rng: random generator (seeded per scenario for determinism).
        spacing_m, setback_m: distance between buildings along the road; gap from road to facade.
        depth_m, height_m: (min, max) building depth and height in metres.
        max_buildings: cap on the number of buildings.
    Returns:
        ``Boxes3D`` [N] standing on z = 0 (length along the road, width = depth, centre z = height / 2).
    """
    import shapely

    if drivable is None or drivable.is_empty:
        return Boxes3D.empty(0, np.float64)
    outer = drivable.buffer(setback_m, quad_segs=2).simplify(0.5)
    lines = shapely.get_parts(outer.boundary)
    pts, tangents = [], []
    for line in lines:
        n = int(line.length // spacing_m)
        if n < 1:
            continue
        s = (np.arange(n) + 0.5) * spacing_m
        a = shapely.get_coordinates(shapely.line_interpolate_point(line, s - 0.5))
        b = shapely.get_coordinates(shapely.line_interpolate_point(line, s + 0.5))
        pts.append(shapely.get_coordinates(shapely.line_interpolate_point(line, s)))
        tangents.append(b - a)
    if not pts:
        return Boxes3D.empty(0, np.float64)
    p, t = np.concatenate(pts), np.concatenate(tangents)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    left = np.stack([-t[:, 1], t[:, 0]], 1)
    probe = p + left * 0.5
    shapely.prepare(outer)
    out = np.where(shapely.contains_xy(outer, probe[:, 0], probe[:, 1])[:, None], -left, left)
    n = len(p)
    width = spacing_m * rng.uniform(0.5, 0.9, n)
    depth = rng.uniform(*depth_m, n)
    height = rng.uniform(*height_m, n)
    centre = p + out * (depth[:, None] / 2 + 0.1)
    yaw = np.arctan2(t[:, 1], t[:, 0])
    boxes = Boxes3D(np.column_stack([centre, height / 2]), np.column_stack([width, depth, height]), yaw,
                    np.zeros(n, np.int64), np.ones(n, bool))
    corners = boxes.footprints()  # [N, 4, 2]
    foot = shapely.polygons(corners)
    keep = ~shapely.intersects(foot, drivable.buffer(max(setback_m - 0.5, 0.0), quad_segs=2))
    tree = shapely.STRtree(foot)
    i, j = tree.query(foot, predicate="intersects")
    clash = np.zeros(n, bool)
    pair = (i < j) & keep[i] & keep[j]
    clash[j[pair]] = True
    keep &= ~clash
    return boxes[np.flatnonzero(keep)[:max_buildings]]


def split_tiles(mesh: Mesh, tile_m: float, max_vertices: int = 60000) -> dict[tuple[int, int], Mesh]:
    """Split a mesh into square tiles by triangle centroid (unused vertices dropped), O(T log T).

    Returns:
        {(ix, iy): Mesh} with tile (ix, iy) covering [ix, ix+1) x [iy, iy+1) times ``tile_m``.
    """
    if mesh.num_triangles == 0:
        return {}
    cen = mesh.vertices[mesh.triangles].mean(axis=1)[:, :2]
    keys = np.floor(cen / tile_m).astype(np.int64)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    tiles = {}
    for k, key in enumerate(uniq):
        tri = mesh.triangles[order[bounds[k]:bounds[k + 1]]]
        used, local = np.unique(tri, return_inverse=True)
        if len(used) > max_vertices:
            raise ValueError(f"tile {tuple(key)} has {len(used)} vertices; lower tile_m")
        tiles[(int(key[0]), int(key[1]))] = Mesh(mesh.vertices[used], local.reshape(-1, 3), mesh.normals[used])
    return tiles
