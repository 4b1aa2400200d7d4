"""Synthetic multi-camera renderer: a scenario frame -> RGB, metric depth and semantics for every camera.

The scene is rasterised by pybullet's CPU TinyRenderer (one ``p.DIRECT`` client per renderer) with each
camera's TRUE pinhole intrinsics and extrinsics, so images are pixel-consistent with
:func:`bevgen.cameras.project_points` and with the frame's BEV layout.

Frames
------
* Render frame: world x, y minus an origin fixed by the MAP (the centre of its bounding box, rounded to
  1 m; the ego's first position when there is no map), float32-friendly, z = height above the EGO's
  ground at the rendered frame (the map is drawn flat at z = 0, as the BEV raster is). Agent boxes use
  the layout's convention: bottom at ``agent_z - ego_z``.
* Camera: ``T_cam_from_ego`` (OpenCV) composed with ego-from-render (the ego pose of frame t); OpenGL's
  eye frame flips y and z. Projection is built from K exactly, principal point and fx != fy included.

Cost
----
Static geometry (road surface, sidewalks, lines, crosswalks, buildings) is built ONCE per map
(O(map points), ~0.1-1 s) and split into square tiles, one pybullet body per (tile, material). Scenarios
that share one ``map_features`` dict object and building seed (the one-frame snapshots of a drive,
:func:`sim_bridge.envs.snapshot.snapshot`) reuse it; as the origin depends on the map only, a frame
renders the same whatever was rendered before. Per frame
only the tiles within ``max_range_m`` are switched on (alpha 1) and the agent bodies (created lazily,
one or two per agent) are moved: O(agents in range) pybullet calls. Each camera then costs
O(pixels covered by each triangle's screen bounding box), about 5 ms of CPU at 128x224 with buildings
(TinyRenderer shades ~100 ns per covered pixel). The ground plane itself is not rasterised: pixels no
triangle covers get the analytic ray / ground-plane intersection (colour, depth and class).

Shape letters: v view, h/w pixel rows/cols, a agent.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bevgen.cameras import CameraRig
from bevgen.layout import BevConfig, BevLayout, BevRasterizer, agent_class_ids
from bevgen.render.meshes import (Mesh, box_meshes, car_meshes, crosswalk_stripes, line_quads,
                                  place_buildings, split_tiles, triangulate)
from sim_bridge.boxes import Boxes3D
from sim_bridge.scenario import ROAD_EDGE_TYPES, ROAD_LINE_TYPES, Scenario

# pybullet (optional `render` extra) and shapely are imported lazily, when a renderer is built.

__all__ = ["SEMANTIC_CLASSES", "SynthConfig", "SynthFrame", "SceneRenderer", "opengl_projection",
           "opengl_view", "sky_colors"]

SEMANTIC_CLASSES: tuple[str, ...] = ("sky", "ground", "road", "marking", "crosswalk", "vehicle",
                                     "pedestrian", "cyclist", "building")
_SEM = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
# layout class id (vehicle, pedestrian, cyclist, static_object) -> semantic class; static objects
# (cones, barriers) are drawn as small orange boxes and labelled as static structures ("building").
_AGENT_SEMANTIC = np.array([_SEM["vehicle"], _SEM["pedestrian"], _SEM["cyclist"], _SEM["building"]])

# Materials, RGB in [0, 1].
_GROUND_RGB = np.array([98, 110, 82], np.uint8)  # flat ground as TinyRenderer would shade it
_SIDEWALK = (0.63, 0.62, 0.59)
_ROAD = (0.31, 0.31, 0.33)
_WHITE = (0.93, 0.93, 0.90)
_YELLOW = (0.92, 0.76, 0.18)
_KERB = (0.78, 0.78, 0.76)
_BUILDINGS = ((0.80, 0.72, 0.60), (0.62, 0.36, 0.30), (0.55, 0.56, 0.60), (0.72, 0.78, 0.84),
              (0.85, 0.82, 0.74), (0.45, 0.42, 0.40))
_CARS = ((0.92, 0.92, 0.92), (0.70, 0.72, 0.75), (0.12, 0.12, 0.14), (0.35, 0.36, 0.40),
         (0.72, 0.10, 0.10), (0.12, 0.24, 0.60), (0.15, 0.38, 0.22), (0.78, 0.70, 0.52))
_GLASS = (0.12, 0.16, 0.22)
_CLASS_COLORS = ((0.70, 0.10, 0.10), (0.86, 0.30, 0.22), (0.58, 0.22, 0.72), (0.98, 0.50, 0.08))
_SKY_TOP, _SKY_HORIZON = np.array([95, 150, 215]), np.array([200, 220, 240])
# TinyRenderer samples pixel (row i, col j) at the integer screen point (j, H - 1 - i) instead of the
# pixel centre, i.e. at (u, v) = (j, i + 1) in the K convention of bevgen.cameras (centre of pixel (i, j)
# is (j + 0.5, i + 0.5)). Shifting the principal point by (-0.5, +0.5) px makes every sample land on
# its pixel centre (checked against analytic ground-plane depth to 1e-4 relative).
_TINY_PIXEL_SHIFT = np.array([[0.0, 0.0, -0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
_HIDDEN = (0.0, 0.0, -1.0e4)  # where unused agent bodies wait (outside every frustum)


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic scene and rendering settings."""

    image_size: tuple[int, int] = (128, 224)
    """(H, W) of the rendered images; the camera rig must have this size."""
    bev: BevConfig = field(default_factory=BevConfig)
    """BEV raster paired with every rendered frame (range, resolution, channels, max boxes)."""
    max_range_m: float = 60.0
    """Map tiles farther than this from the ego are not drawn (the ground plane always is). Agents are
    drawn up to max(max_range_m, the BEV layout's reach), so every box of the layout is rendered."""
    buildings: bool = True
    """Place roadside buildings (deterministic from the map and the scenario id)."""
    building_spacing_m: float = 16.0
    """Distance between building centres along the road outline."""
    building_setback_m: float = 6.0
    """Gap between the road surface and the building facades (a sidewalk fills part of it)."""
    building_height_m: tuple[float, float] = (4.0, 16.0)
    """(min, max) building height."""
    sidewalk_m: float = 3.0
    """Width of the sidewalk band drawn around the drivable area (0 disables it)."""
    line_width_m: float = 0.15
    """Width of painted road lines."""
    dash_m: tuple[float, float] = (3.0, 6.0)
    """(painted, gap) lengths of broken lines."""
    agent_color_variation: bool = True
    """Vary vehicle colours per agent (deterministic from the agent id); False: one colour per class."""
    tile_m: float = 40.0
    """Static geometry is split into square tiles of this size for range culling."""
    near_m: float = 0.1
    """Near clipping plane of every camera, metres."""
    far_m: float = 400.0
    """Far clipping plane; beyond it (and where nothing is drawn) the pixel is sky."""
    ground_extent_m: float = 300.0
    """The ground plane z = 0 is drawn out to this distance along each optical axis (then sky)."""
    supersample: int = 1
    """Render at this integer multiple of image_size and box-filter RGB down (anti-aliasing; costs s^2)."""
    seed: int = 0
    """Extra seed mixed into the per-scenario building layout."""

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (H, W) with both >= 8, got {self.image_size}")
        if not 0 < self.near_m < self.far_m:
            raise ValueError(f"need 0 < near_m < far_m, got {self.near_m}, {self.far_m}")
        if self.max_range_m <= 0 or self.tile_m <= 0:
            raise ValueError("max_range_m and tile_m must be positive")
        if self.supersample < 1:
            raise ValueError("supersample must be >= 1")
        if self.building_height_m[0] > self.building_height_m[1]:
            raise ValueError("building_height_m must be (min, max) with min <= max")


@dataclass(frozen=True, eq=False)
class SynthFrame:
    """One rendered multi-camera frame and its BEV layout.

    Attributes:
        images: uint8 [V, H, W, 3] RGB.
        depth: float32 [V, H, W] metres along each optical axis (camera z); 0 where sky.
        semantic: uint8 [V, H, W] indices into SEMANTIC_CLASSES.
        layout: the frame's BevLayout (raster, boxes in the ego frame, ego pose).
        rig: the CameraRig the images were rendered with.
    """

    images: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    layout: BevLayout
    rig: CameraRig

    def validate(self) -> "SynthFrame":
        V, (H, W) = self.rig.num_views, self.rig.image_size
        for name, arr, shape, dtype in (("images", self.images, (V, H, W, 3), np.uint8),
                                        ("depth", self.depth, (V, H, W), np.float32),
                                        ("semantic", self.semantic, (V, H, W), np.uint8)):
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(f"{name}: expected {dtype.__name__} {shape}, got {arr.dtype} {arr.shape}")
        if self.semantic.max(initial=0) >= len(SEMANTIC_CLASSES):
            raise ValueError("semantic: class index out of range")
        if not np.isfinite(self.depth).all() or (self.depth < 0).any():
            raise ValueError("depth: expected finite values >= 0")
        self.layout.validate()
        return self


def opengl_projection(K: np.ndarray, image_size: Sequence[int], near: float, far: float) -> np.ndarray:
    """OpenGL projection [4, 4] (row-major) equivalent to pinhole K for an image of (H, W) pixels.

    Maps eye coordinates (x right, y up, looking down -z) to clip space so that NDC x = 2u/W - 1 and
    NDC y = 1 - 2v/H for the pixel (u, v) = K-projection; depth is the standard OpenGL mapping.
    """
    H, W = image_size
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    return np.array([[2 * fx / W, -2 * skew / W, 1 - 2 * cx / W, 0],
                     [0, 2 * fy / H, 2 * cy / H - 1, 0],
                     [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                     [0, 0, -1, 0]])


_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_view(T_cam_from_ego: np.ndarray, ego_pose_render: Sequence[float]) -> np.ndarray:
    """View matrices [V, 4, 4] (row-major): render frame -> OpenGL eye frame of each camera.

    Args:
        T_cam_from_ego: [V, 4, 4] OpenCV camera from ego.
        ego_pose_render: (x, y, yaw) of the ego in the render frame (its ground point at z = 0).
    """
    x, y, yaw = ego_pose_render
    c, s = np.cos(yaw), np.sin(yaw)
    ego_from_render = np.array([[c, s, 0, -(c * x + s * y)], [-s, c, 0, s * x - c * y],
                                [0, 0, 1, 0], [0, 0, 0, 1]])
    return _GL_FROM_CV @ np.asarray(T_cam_from_ego) @ ego_from_render


def sky_colors(height: int) -> np.ndarray:
    """uint8 [H, 3] vertical sky gradient (deep blue at the top row, pale towards the bottom)."""
    a = np.linspace(0.0, 1.0, height)[:, None] ** 0.7
    return np.round(_SKY_TOP * (1 - a) + _SKY_HORIZON * a).astype(np.uint8)


def _color_of(key: str, palette: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    return palette[zlib.crc32(key.encode()) % len(palette)]


def _building_seed(scenario: Scenario) -> str:
    """What seeds the building placement: the map key of simulator snapshots (one per map, not per
    step, so buildings stay put along a drive), else the scenario id."""
    return str(scenario.metadata.get("map_key") or scenario.id)


def _render_origin(scenario: Scenario) -> np.ndarray:
    """float64 [2] world xy of the render frame's origin: centre of the map's bounding box (rounded to
    1 m), or the ego's first valid position when the map is empty. Depends on the map only, so every
    scenario sharing a map shares the render frame."""
    pts = [np.asarray(a)[:, :2] for f in scenario.map_features.values() for a in (f.polyline, f.polygon)
           if a is not None and len(a)]
    if pts:
        xy = np.concatenate(pts)
        return np.round((xy.min(0) + xy.max(0)) / 2).astype(np.float64)
    tr = scenario.tracks
    return tr.position[scenario.ego_index, tr.valid[scenario.ego_index].argmax(), :2].astype(np.float64)


class _StaticScene:
    """Per-map static meshes grouped as {(semantic, rgb): Mesh} in the render frame."""

    def __init__(self, scenario: Scenario, origin: np.ndarray, cfg: SynthConfig):
        import shapely

        feats = list(scenario.map_features.values())
        lanes = [f for f in feats if f.is_lane]
        parts = [shapely.Polygon(f.polygon[:, :2] - origin) for f in lanes
                 if f.polygon is not None and len(f.polygon) >= 3]
        parts = [p if p.is_valid else p.buffer(0) for p in parts]
        bare = [f.polyline[:, :2] - origin for f in lanes
                if f.polygon is None and f.polyline is not None and len(f.polyline) >= 2]
        lines = [shapely.LineString(b) for b in bare]
        parts += list(shapely.buffer(lines, cfg.bev.lane_width_m / 2, cap_style="flat")) if lines else []
        drivable = shapely.union_all(parts).simplify(0.1) if parts else None
        groups: dict[tuple[int, tuple[float, ...]], list[Mesh]] = {}

        def add(sem: str, rgb, mesh: Mesh) -> None:
            groups.setdefault((_SEM[sem], tuple(rgb)), []).append(mesh)

        if drivable is not None and not drivable.is_empty:
            add("road", _ROAD, triangulate(drivable, 0.02))
            if cfg.sidewalk_m > 0:
                add("ground", _SIDEWALK, triangulate(drivable.buffer(cfg.sidewalk_m, quad_segs=2)
                                                     .difference(drivable).simplify(0.1), 0.01))
        for f in feats:
            if f.type in ROAD_LINE_TYPES and f.polyline is not None:
                rgb = _YELLOW if "YELLOW" in f.type else _WHITE
                dash = cfg.dash_m if "BROKEN" in f.type else None
                offsets = (-0.12, 0.12) if "DOUBLE" in f.type else (0.0,)
                line = [f.polyline - np.r_[origin, 0][: f.polyline.shape[1]]]
                for off in offsets:
                    add("marking", rgb, line_quads(line, cfg.line_width_m, 0.035, dash, off))
            elif f.type in ROAD_EDGE_TYPES:
                pts = f.polyline if f.polyline is not None else f.polygon
                if pts is not None:
                    add("marking", _KERB, line_quads([pts[:, :2] - origin], 0.25, 0.03))
        crosswalks = [f.polygon[:, :2] - origin for f in feats if f.type == "CROSSWALK" and f.polygon is not None]
        add("crosswalk", _WHITE, crosswalk_stripes(crosswalks, 0.04))
        self.buildings = Boxes3D.empty(0, np.float64)
        if cfg.buildings and drivable is not None:
            rng = np.random.default_rng([zlib.crc32(_building_seed(scenario).encode()), cfg.seed])
            self.buildings = place_buildings(drivable, rng, cfg.building_spacing_m, cfg.building_setback_m,
                                             (8.0, 16.0), cfg.building_height_m)
            color = rng.integers(len(_BUILDINGS), size=len(self.buildings))
            for k, rgb in enumerate(_BUILDINGS):
                add("building", rgb, box_meshes(self.buildings[color == k]))
        self.groups = {key: Mesh.concat(ms) for key, ms in groups.items()}
        self.groups = {k: m for k, m in self.groups.items() if m.num_triangles}

    @property
    def num_triangles(self) -> int:
        return sum(m.num_triangles for m in self.groups.values())


class SceneRenderer:
    """Render scenario frames with a camera rig (one pybullet DIRECT client, CPU TinyRenderer).

    Reuses the static scene while successive calls render scenarios of the same map (the same
    ``map_features`` dict object and building seed, e.g. the snapshots of one drive); a new map resets
    the pybullet world. ``static_builds`` counts the static scenes built. Not thread-safe; use one
    renderer per process.

    Args:
        rig: cameras (true K and T_cam_from_ego); images are rendered at ``rig.image_size``.
        config: SynthConfig; its image_size must equal ``rig.image_size``.
    """

    def __init__(self, rig: CameraRig, config: SynthConfig | None = None):
        import pybullet as p

        self.rig = rig.validate()
        self.config = cfg = config or SynthConfig(image_size=rig.image_size)
        if tuple(cfg.image_size) != tuple(rig.image_size):
            raise ValueError(f"config.image_size {tuple(cfg.image_size)} != rig.image_size {rig.image_size}; "
                             "resize the rig (rig.resized) or change the config")
        self._p = p
        self._cid = p.connect(p.DIRECT)
        s = cfg.supersample
        self._render_hw = (rig.image_size[0] * s, rig.image_size[1] * s)
        render_rig = rig.resized(self._render_hw) if s > 1 else rig
        self._proj = [opengl_projection(K + _TINY_PIXEL_SHIFT, self._render_hw, cfg.near_m, cfg.far_m)
                      .T.ravel().tolist() for K in render_rig.K]
        self._sky = sky_colors(self._render_hw[0])
        # The ground plane is not rasterised (a full-screen plane costs ~2 ms a camera in TinyRenderer):
        # pixels nothing else covers get the analytic ray / plane z = 0 intersection instead, which is
        # exactly what a rendered plane would give (same pixel centres, same depth along the axis).
        dirs = render_rig.rays().astype(np.float64)  # [V, H, W, 3] ego frame
        height = render_rig.camera_centers[:, 2][:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = np.where(dirs[..., 2] < 0, -height / dirs[..., 2], np.inf)
            depth = hit * np.einsum("vhwi,vi->vhw", dirs, render_rig.optical_axes)
        self._ground_depth = np.where(depth <= min(cfg.ground_extent_m, cfg.far_m), depth, 0.0).astype(np.float32)
        self._scenario: Scenario | None = None
        self._static_key: tuple | None = None  # (map_features dict, building seed) of the built scene
        self.static_builds = 0

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._cid is not None and self._p.isConnected(self._cid):
            self._p.disconnect(self._cid)
        self._cid = None

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- scene construction -------------------------------------------------------------------
    def _body(self, mesh: Mesh, rgb, semantic: int, visible: bool = True) -> int:
        p = self._p
        vs = p.createVisualShape(p.GEOM_MESH, vertices=mesh.vertices.tolist(),
                                 indices=mesh.triangles.ravel().tolist(), normals=mesh.normals.tolist(),
                                 rgbaColor=[*rgb, 1.0 if visible else 0.0], physicsClientId=self._cid)
        body = p.createMultiBody(0, -1, vs, physicsClientId=self._cid)
        if body + 1 >= len(self._lut):
            self._lut = np.concatenate([self._lut, np.zeros(body + 64 - len(self._lut), np.uint8)])
        self._lut[body + 1] = semantic
        return body

    def _load(self, scenario: Scenario) -> None:
        """Switch to ``scenario``: reuse the static scene when its map is the one built, else build it."""
        key = (scenario.map_features, _building_seed(scenario))
        cached = self._static_key
        if cached is not None and cached[0] is key[0] and cached[1] == key[1]:
            self._bev = self._bev.with_scenario(scenario)  # shares the flattened map too
        else:
            self._build_static(scenario)
            self._static_key = key
        self._scenario = scenario
        self._classes = agent_class_ids(scenario.tracks.types)

    def _build_static(self, scenario: Scenario) -> None:
        """Build the static scene of ``scenario``'s map (O(map points)) in a fresh pybullet world."""
        p, cfg = self._p, self.config
        p.resetSimulation(physicsClientId=self._cid)
        self.static_builds += 1
        self._lut = np.zeros(256, np.uint8)  # body id + 1 -> semantic class; index 0 (no body) = sky
        self._bev = BevRasterizer(scenario, cfg.bev)
        self._origin = _render_origin(scenario)
        self.static = _StaticScene(scenario, self._origin, cfg)
        self._tiles = []  # (centre xy, body, rgb, visible)
        for (sem, rgb), mesh in self.static.groups.items():
            for (ix, iy), tile in split_tiles(mesh, cfg.tile_m).items():
                centre = (np.array([ix, iy]) + 0.5) * cfg.tile_m
                self._tiles.append([centre, self._body(tile, rgb, sem, visible=False), rgb, False])
        self._tile_centres = np.array([t[0] for t in self._tiles]).reshape(-1, 2)
        # agent track id -> ((class, l, w, h), bodies): keyed by id, so snapshots of one drive move
        # the bodies of the agents they share instead of creating new ones
        self._agents: dict[str, tuple[tuple[float, ...], list[int]]] = {}
        self._shown: set[str] = set()

    def _agent_bodies(self, a: int, size: np.ndarray) -> list[int]:
        """Bodies of agent ``a`` (index into the current scenario) for box size (l, w, h), (re)built when
        its class changes or its size changes by > 5 cm."""
        cls = int(self._classes[a])
        agent_id = self._scenario.tracks.ids[a]
        key = (cls, *np.round(size, 2))
        cached = self._agents.get(agent_id)
        if cached is not None and cached[0][0] == cls and np.allclose(cached[0][1:], key[1:], atol=0.05):
            return cached[1]
        if cached is not None:
            for b in cached[1]:
                self._p.removeBody(b, physicsClientId=self._cid)
        sem = int(_AGENT_SEMANTIC[cls])
        if cls == 0:
            rgb = _color_of(agent_id, _CARS) if self.config.agent_color_variation else _CLASS_COLORS[0]
            body, cabin = car_meshes(*size)
            bodies = [self._body(body, rgb, sem), self._body(cabin, _GLASS, sem)]
        else:
            on_ground = Boxes3D.from_array(np.array([[0, 0, size[2] / 2, *size, 0]], np.float64))
            bodies = [self._body(box_meshes(on_ground), _CLASS_COLORS[cls], sem)]
        self._agents[agent_id] = (key, bodies)
        return bodies

    def _update(self, t: int) -> tuple[BevLayout, np.ndarray]:
        """Place frame ``t``: layout, tile visibility, ground and agents. Returns (layout, ego pose in the
        render frame). O(tiles + agents in range) pybullet calls."""
        p, cfg, cid = self._p, self.config, self._cid
        layout = self._bev(t)
        sc, tr = self._scenario, self._scenario.tracks
        ego = sc.ego_index
        pose = np.array([*(layout.ego_pose[:2] - self._origin), layout.ego_pose[2]])
        reach = cfg.max_range_m + cfg.tile_m * np.sqrt(0.5)
        want = np.linalg.norm(self._tile_centres - pose[:2], axis=1) <= reach
        for k in np.flatnonzero(want != np.array([t[3] for t in self._tiles], bool)):
            tile = self._tiles[k]
            tile[3] = bool(want[k])
            p.changeVisualShape(tile[1], -1, rgbaColor=[*tile[2], float(tile[3])], physicsClientId=cid)

        xy = tr.position[:, t, :2] - self._origin
        reach = max(cfg.max_range_m, np.sqrt(2) * cfg.bev.range_m + 10.0)  # covers every layout box
        near = tr.valid[:, t] & (np.linalg.norm(xy - pose[:2], axis=1) <= reach)
        near[ego] = False
        show = np.flatnonzero(near)
        # body base = box bottom above the ego's ground; track z is the box centre (as in Boxes3D.center)
        z = (tr.position[show, t, 2] - tr.size[show, t, 2] / 2) - (tr.position[ego, t, 2] - tr.size[ego, t, 2] / 2)
        yaw = tr.heading[show, t]
        quat = np.stack([np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2), np.cos(yaw / 2)], 1)
        for a, za, q in zip(show, z, quat):  # one pybullet call per visible agent body
            for b in self._agent_bodies(int(a), tr.size[a, t]):
                p.resetBasePositionAndOrientation(b, [xy[a, 0], xy[a, 1], za], q.tolist(), physicsClientId=cid)
        shown = {tr.ids[a] for a in show}
        for agent_id in self._shown - shown:
            for b in self._agents[agent_id][1]:
                p.resetBasePositionAndOrientation(b, _HIDDEN, [0, 0, 0, 1], physicsClientId=cid)
        self._shown = shown
        return layout, pose

    # ---- rendering ------------------------------------------------------------------------------
    def render(self, scenario: Scenario, t: int) -> SynthFrame:
        """Render frame ``t`` of ``scenario`` from every camera of the rig.

        Args:
            scenario: the scenario (static geometry is cached while scenarios of the same map object are
                passed; see the class docstring).
            t: frame index, 0 <= t < scenario.length; the ego must be valid at t.
        Returns:
            SynthFrame (images [V,H,W,3] u8, depth [V,H,W] f32 metres, semantic [V,H,W] u8, layout, rig).
        """
        if scenario is not self._scenario:
            self._load(scenario)
        if not scenario.tracks.valid[scenario.ego_index, t]:
            raise ValueError(f"scenario {scenario.id!r}: ego is not valid at frame {t}")
        layout, pose = self._update(t)
        views = opengl_view(self.rig.T_cam_from_ego, pose)
        H, W = self._render_hw
        V = self.rig.num_views
        rgb = np.empty((V, H, W, 3), np.uint8)
        zbuf = np.empty((V, H, W), np.float32)
        seg = np.empty((V, H, W), np.int32)
        for v in range(V):
            out = self._p.getCameraImage(
                W, H, viewMatrix=views[v].T.ravel().tolist(), projectionMatrix=self._proj[v],
                lightDirection=[0.35, 0.25, 1.0], lightColor=[1, 1, 1], shadow=0, lightAmbientCoeff=0.62,
                lightDiffuseCoeff=0.38, lightSpecularCoeff=0.02, renderer=self._p.ER_TINY_RENDERER,
                physicsClientId=self._cid)
            rgb[v] = np.asarray(out[2]).reshape(H, W, 4)[..., :3]
            zbuf[v] = np.asarray(out[3]).reshape(H, W)
            seg[v] = np.asarray(out[4]).reshape(H, W)
        return self._finish(rgb, zbuf, seg, layout)

    def _finish(self, rgb: np.ndarray, zbuf: np.ndarray, seg: np.ndarray, layout: BevLayout) -> SynthFrame:
        """Depth buffer -> metric depth, body ids -> semantics, sky fill and supersample reduction."""
        cfg, s = self.config, self.config.supersample
        n, f = cfg.near_m, cfg.far_m
        empty = seg < 0
        ground = empty & (self._ground_depth > 0)
        sky = empty & ~ground
        depth = np.float32(f * n) / (np.float32(f) - np.float32(f - n) * zbuf)  # float32: ~1e-4 relative
        depth[empty] = self._ground_depth[empty]
        semantic = self._lut[np.clip(seg, -1, len(self._lut) - 2) + 1]
        semantic[ground] = _SEM["ground"]
        images = np.where(sky[..., None], self._sky[None, :, None, :], rgb)
        images[ground] = _GROUND_RGB
        if s > 1:
            V, H, W = seg.shape
            images = images.reshape(V, H // s, s, W // s, s, 3).mean(axis=(2, 4)).round().astype(np.uint8)
            c = s // 2  # centre sample of each block for the non-averageable channels
            depth, semantic = depth[:, c::s, c::s], semantic[:, c::s, c::s]
        return SynthFrame(np.ascontiguousarray(images, np.uint8), np.ascontiguousarray(depth),
                          np.ascontiguousarray(semantic, np.uint8), layout, self.rig)
