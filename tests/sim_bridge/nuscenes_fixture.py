"""A tiny synthetic nuScenes release (tables + map expansion) for converter tests.

``write_nuscenes_fixture(root)`` writes what ``NuScenes(version, dataroot=root)`` and
``NuScenesMap(dataroot=root, map_name=...)`` need to load: the 13 JSON tables under
``root/<version>/``, a small placeholder PNG per map record (the devkit only checks that the
semantic-prior mask file exists), one map-expansion JSON per location under
``root/maps/expansion/`` and small camera JPEGs (below); LIDAR_TOP files are not written.

Geometry (each scene in its own local road frame, placed in the world by ``origin`` and ``theta``):
a straight road along local +x from x=-60 m to x=160 m with two eastbound lanes (centre lines
y=-1.75 and y=+1.75, lane width 3.5 m) and one westbound lane (y=+5.25, two arcline paths). The
right eastbound lane is split by a 10 m lane connector at x=60..70. A lane divider runs at y=0, a
road divider at y=3.5, the drivable area / road segment covers y=-3.5..7, a pedestrian crossing
spans x=100..104, and one far-away lane sits at x=1500..1600. Keyframes are 0.5 s apart; the ego
drives the right eastbound lane at 10 m/s with a +-0.01 rad heading wobble (scene-0002 faces -x,
so its heading crosses +-pi). Objects: a lead car, a truck in the left lane, a bus appearing at
keyframe 3 in the westbound lane (heading wobbling around pi), a pedestrian on the crossing that
disappears after keyframe 4, a bicycle appearing at keyframe 1, a static cone and barrier, and
debris (a category the converter drops).

Cameras: six keyframe camera sample_data per sample (nuScenes channel names, FRONT_LEFT ... BACK_LEFT
at yaws 55, 0, -55, -110, 180, 110 deg), each with its own calibrated_sensor (intrinsics for
``CAMERA_IMAGE_SIZE``, off-centre principal points) and sharing the LIDAR_TOP ego_pose. Every image
is a small JPEG: sky over grey ground with a filled disc (``MARKERS`` colour, radius ``MARKER_RADIUS_PX``)
at the exact pinhole projection of the box centre of the agents in ``MARKERS`` wherever visible.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

__all__ = ["write_nuscenes_fixture", "SCENES", "AGENTS", "LANE_WIDTH_M", "KEYFRAME_US", "CAMERAS",
           "CAMERA_IMAGE_SIZE", "MARKERS", "MARKER_RADIUS_PX"]

KEYFRAME_US = 500_000  # 2 Hz keyframes, microseconds
LANE_WIDTH_M = 3.5
SCENES = (
    {"name": "scene-0001", "location": "singapore-onenorth", "origin": (300.0, 600.0), "theta": 0.0,
     "keyframes": 8, "date": "2018-07-24", "t0_us": 1532402927647951},
    {"name": "scene-0002", "location": "boston-seaport", "origin": (2500.0, 1200.0), "theta": math.pi,
     "keyframes": 6, "date": "2018-08-01", "t0_us": 1533151603547590},
)
# key, category, first keyframe, last keyframe (None: to the end), pose(t s, k) -> (x, y, yaw) local,
# size [width, length, height] m (nuScenes order), box-centre z m.
AGENTS = (
    ("car-lead", "vehicle.car", 0, None, lambda t, k: (20.0 + 8.0 * t, -1.75, 0.0), (1.9, 4.6, 1.6), 0.8),
    ("truck-left", "vehicle.truck", 0, None, lambda t, k: (-10.0 + 12.0 * t, 1.75, 0.0), (2.5, 8.0, 3.2), 1.6),
    ("bus-late", "vehicle.bus.rigid", 3, None,
     lambda t, k: (120.0 - 9.0 * t, 5.25, math.pi + 0.02 * (-1) ** k), (2.9, 11.5, 3.4), 1.7),
    ("ped", "human.pedestrian.adult", 0, 4, lambda t, k: (102.0, -5.0 + 1.2 * t, math.pi / 2),
     (0.6, 0.7, 1.75), 0.9),
    ("bike", "vehicle.bicycle", 1, None, lambda t, k: (5.0 + 5.0 * t, -3.0, 0.0), (0.6, 1.8, 1.4), 0.7),
    ("cone", "movable_object.trafficcone", 0, None, lambda t, k: (40.0, -3.8, 0.3), (0.4, 0.4, 0.7), 0.35),
    ("barrier", "movable_object.barrier", 0, None, lambda t, k: (45.0, -3.9, 1.2), (2.0, 0.5, 1.0), 0.5),
    ("debris", "movable_object.debris", 0, None, lambda t, k: (30.0, -3.6, 0.0), (0.3, 0.3, 0.2), 0.1),
)
# channel, yaw about +z (deg, 0 = forward), mounting translation (m, ego frame), (fx, fy, cx, cy) px
CAMERAS = (
    ("CAM_FRONT_LEFT", 55.0, (1.5, 0.5, 1.5), (100.0, 100.0, 81.0, 46.0)),
    ("CAM_FRONT", 0.0, (1.7, 0.0, 1.5), (110.0, 110.0, 84.0, 43.0)),
    ("CAM_FRONT_RIGHT", -55.0, (1.5, -0.5, 1.5), (100.0, 100.0, 78.0, 45.5)),
    ("CAM_BACK_RIGHT", -110.0, (1.0, -0.5, 1.55), (100.0, 100.0, 80.0, 45.0)),
    ("CAM_BACK", 180.0, (0.0, 0.0, 1.6), (64.0, 64.0, 80.0, 45.0)),
    ("CAM_BACK_LEFT", 110.0, (1.0, 0.5, 1.55), (100.0, 100.0, 80.0, 45.0)),
)
CAMERA_IMAGE_SIZE = (90, 160)  # (H, W) of the fixture's camera images
MARKERS = {"car-lead": (255, 0, 0), "truck-left": (0, 0, 255)}  # agent key -> RGB disc at its box centre
MARKER_RADIUS_PX = 4
CATEGORIES = ("vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "vehicle.bicycle", "human.pedestrian.adult",
              "movable_object.trafficcone", "movable_object.barrier", "movable_object.debris", "animal")


def _tok(*parts: object) -> str:
    """Deterministic 32-hex token (nuScenes table style)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _uuid(*parts: object) -> str:
    """Deterministic UUID-style token (map expansion style)."""
    h = _tok("map", *parts)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _quat(yaw: float) -> list[float]:
    """[w, x, y, z] quaternion of a rotation by ``yaw`` rad about +z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _qmul(a: list[float], b: list[float]) -> list[float]:
    """Hamilton product a * b of [w, x, y, z] quaternions."""
    (aw, ax, ay, az), (bw, bx, by, bz) = a, b
    return [aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw]


# camera (OpenCV: x right, y down, z forward) -> ego (x forward, y left, z up) for a forward camera
_CAM_TO_EGO_FORWARD = [0.5, -0.5, 0.5, -0.5]


def _camera_image(ego: tuple[float, float, float], agents: list[tuple[tuple[float, float, float], tuple]],
                  cam: tuple):
    """PIL image of one camera: sky / ground halves and a disc at each visible agent's projected centre.

    Args:
        ego: (x, y, yaw) of the ego in the world (ground at z = 0).
        agents: [((x, y, z) world box centre, rgb)].
        cam: one CAMERAS entry.
    """
    import numpy as np
    from PIL import Image

    _, cam_yaw, (tx, ty, tz), (fx, fy, cx, cy) = cam
    H, W = CAMERA_IMAGE_SIZE
    img = np.full((H, W, 3), (90, 90, 92), np.uint8)
    img[: H // 2] = (140, 180, 225)
    pu, pv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)  # pixel centres
    ex, ey, eyaw = ego
    yaw = math.radians(cam_yaw)
    for (x, y, z), rgb in agents:
        dx, dy = x - ex, y - ey  # world -> ego -> camera mount (rotations about +z only)
        px, py = math.cos(eyaw) * dx + math.sin(eyaw) * dy - tx, -math.sin(eyaw) * dx + math.cos(eyaw) * dy - ty
        fwd, left, up = math.cos(yaw) * px + math.sin(yaw) * py, -math.sin(yaw) * px + math.cos(yaw) * py, z - tz
        if fwd < 1.0:
            continue
        u, v = fx * -left / fwd + cx, fy * -up / fwd + cy  # OpenCV camera: x = -left, y = -up, z = fwd
        r = MARKER_RADIUS_PX
        if r <= u <= W - r and r <= v <= H - r:
            img[(pu - u) ** 2 + (pv - v) ** 2 <= r * r] = rgb
    return Image.fromarray(img)


class _Frame:
    """Local road frame -> world frame: p_world = origin + R(theta) p_local."""

    def __init__(self, origin: tuple[float, float], theta: float):
        self.ox, self.oy, self.c, self.s, self.theta = *origin, math.cos(theta), math.sin(theta), theta

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return self.ox + self.c * x - self.s * y, self.oy + self.s * x + self.c * y

    def yaw(self, yaw: float) -> float:
        return math.atan2(math.sin(yaw + self.theta), math.cos(yaw + self.theta))


def _write_map(path: Path, location: str, frame: _Frame) -> None:
    """One map-expansion JSON (version 1.3) with the road layout described in the module docstring."""
    m = {k: [] for k in ("node", "line", "polygon", "drivable_area", "road_segment", "road_block", "lane",
                         "ped_crossing", "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider",
                         "traffic_light", "lane_connector")}
    m.update(version="1.3", canvas_edge=[4000.0, 4000.0], arcline_path_3={}, connectivity={})

    def nodes(name: str, pts) -> list[str]:
        toks = []
        for i, (x, y) in enumerate(pts):
            wx, wy = frame.xy(x, y)
            toks.append(_uuid(location, name, "node", i))
            m["node"].append({"token": toks[-1], "x": wx, "y": wy})
        return toks

    def polygon(name: str, x0: float, x1: float, y0: float, y1: float) -> str:
        tok = _uuid(location, name, "polygon")
        m["polygon"].append({"token": tok, "holes": [],
                             "exterior_node_tokens": nodes(name, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])})
        return tok

    def line(name: str, pts) -> str:
        tok = _uuid(location, name, "line")
        m["line"].append({"token": tok, "node_tokens": nodes(name, pts)})
        return tok

    area = _uuid(location, "drivable_area")
    segment = _uuid(location, "road_segment")
    m["drivable_area"].append({"token": area, "polygon_tokens": [polygon("area", -60, 160, -3.5, 7.0)]})
    m["road_segment"].append({"token": segment, "polygon_token": polygon("segment", -60, 160, -3.5, 7.0),
                              "is_intersection": False, "drivable_area_token": area})
    m["ped_crossing"].append({"token": _uuid(location, "ped_crossing"), "road_segment_token": segment,
                              "polygon_token": polygon("crossing", 100, 104, -3.5, 7.0)})
    m["road_divider"].append({"token": _uuid(location, "road_divider"), "road_segment_token": segment,
                              "line_token": line("road_divider", [(-60, 3.5), (50, 3.5), (160, 3.5)])})
    divider_nodes = [(-60, 0.0), (50, 0.0), (160, 0.0)]
    m["lane_divider"].append({"token": _uuid(location, "lane_divider"),
                              "line_token": line("lane_divider", divider_nodes),
                              "lane_divider_segments": [{"node_token": n, "segment_type": "SINGLE_DASHED_WHITE"}
                                                        for n in m["line"][-1]["node_tokens"]]})
    # name, layer, x of the arcline path break points (travel order; decreasing x = westbound), centre y.
    # w1 is made of two arcline paths, as long real lanes are.
    lanes = (("e1a", "lane", (-60, 60), -1.75), ("c1", "lane_connector", (60, 70), -1.75),
             ("e1b", "lane", (70, 160), -1.75), ("e2", "lane", (-60, 160), 1.75),
             ("w1", "lane", (160, 50, -60), 5.25), ("far", "lane", (1500, 1600), -1.75))
    links = {"e1a": ([], ["c1"]), "c1": (["e1a"], ["e1b"]), "e1b": (["c1"], [])}
    for name, layer, xs, yc in lanes:
        tok = _uuid(location, "lane", name)
        rec = {"token": tok, "polygon_token": polygon(name, min(xs), max(xs), yc - LANE_WIDTH_M / 2,
                                                      yc + LANE_WIDTH_M / 2)}
        if layer == "lane":
            rec.update(lane_type="CAR", from_edge_line_token="", to_edge_line_token="",
                       left_lane_divider_segments=[], right_lane_divider_segments=[])
        m[layer].append(rec)
        yaw = frame.yaw(0.0 if xs[-1] > xs[0] else math.pi)
        m["arcline_path_3"][tok] = [
            {"start_pose": [*frame.xy(xa, yc), yaw], "end_pose": [*frame.xy(xb, yc), yaw], "shape": "LSL",
             "radius": 999.0, "segment_length": [0.0, float(abs(xb - xa)), 0.0]} for xa, xb in zip(xs, xs[1:])]
        incoming, outgoing = links.get(name, ([], []))
        m["connectivity"][tok] = {"incoming": [_uuid(location, "lane", n) for n in incoming],
                                  "outgoing": [_uuid(location, "lane", n) for n in outgoing]}
    path.write_text(json.dumps(m))


def write_nuscenes_fixture(root: Path, version: str = "v1.0-mini") -> Path:
    """Write the synthetic nuScenes release described in the module docstring.

    Args:
        root: dataroot to create (tables go to ``root/version``, maps to ``root/maps``).
        version: release folder name.

    Returns:
        ``root`` (as a Path), ready for ``NuScenes(version, dataroot=str(root))``.
    """
    from PIL import Image

    root = Path(root)
    (root / version).mkdir(parents=True, exist_ok=True)
    (root / "maps" / "expansion").mkdir(parents=True, exist_ok=True)
    t: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                           "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                           "sample_data", "sample_annotation", "map")}
    t["category"] = [{"token": _tok("category", c), "name": c, "description": f"fixture {c}"} for c in CATEGORIES]
    t["attribute"] = [{"token": _tok("attribute", a), "name": a, "description": a}
                      for a in ("vehicle.moving", "pedestrian.moving", "cycle.with_rider")]
    t["visibility"] = [{"token": str(i), "level": lvl, "description": f"visibility {lvl}"}
                       for i, lvl in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1)]
    lidar = _tok("sensor", "LIDAR_TOP")
    t["sensor"] = [{"token": lidar, "channel": "LIDAR_TOP", "modality": "lidar"}]
    calib = _tok("calibrated_sensor", "LIDAR_TOP")
    t["calibrated_sensor"] = [{"token": calib, "sensor_token": lidar, "translation": [0.943, 0.0, 1.84],
                               "rotation": _quat(-math.pi / 2), "camera_intrinsic": []}]
    for channel, cam_yaw, trans, (fx, fy, cx, cy) in CAMERAS:
        t["sensor"].append({"token": _tok("sensor", channel), "channel": channel, "modality": "camera"})
        t["calibrated_sensor"].append({
            "token": _tok("calibrated_sensor", channel), "sensor_token": _tok("sensor", channel),
            "translation": list(trans), "rotation": _qmul(_quat(math.radians(cam_yaw)), _CAM_TO_EGO_FORWARD),
            "camera_intrinsic": [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]})
    png = Image.new("L", (8, 8))
    for sc in SCENES:
        name, frame, n_kf = sc["name"], _Frame(sc["origin"], sc["theta"]), sc["keyframes"]
        log, scene = _tok("log", name), _tok("scene", name)
        map_tok = _tok("map", sc["location"])
        png.save(root / "maps" / f"{map_tok}.png")
        t["map"].append({"token": map_tok, "category": "semantic_prior", "filename": f"maps/{map_tok}.png",
                         "log_tokens": [log]})
        t["log"].append({"token": log, "logfile": f"fixture-{name}", "vehicle": "n015",
                         "date_captured": sc["date"], "location": sc["location"]})
        samples = [_tok("sample", name, k) for k in range(n_kf)]
        t["scene"].append({"token": scene, "log_token": log, "nbr_samples": n_kf, "name": name,
                           "description": "synthetic straight road", "first_sample_token": samples[0],
                           "last_sample_token": samples[-1]})
        for k, s in enumerate(samples):
            ts = sc["t0_us"] + k * KEYFRAME_US
            prev, nxt = (samples[k - 1] if k else ""), (samples[k + 1] if k + 1 < n_kf else "")
            t["sample"].append({"token": s, "timestamp": ts, "prev": prev, "next": nxt, "scene_token": scene})
            pose = _tok("ego_pose", name, k)
            x, y = frame.xy(10.0 * 0.5 * k, -1.75)
            t["ego_pose"].append({"token": pose, "timestamp": ts, "rotation": _quat(frame.yaw(0.01 * (-1) ** k)),
                                  "translation": [x, y, 0.0]})
            sd = _tok("sample_data", name, k)
            t["sample_data"].append({
                "token": sd, "sample_token": s, "ego_pose_token": pose, "calibrated_sensor_token": calib,
                "timestamp": ts, "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
                "filename": f"samples/LIDAR_TOP/{name}__LIDAR_TOP__{ts}.pcd.bin",
                "prev": _tok("sample_data", name, k - 1) if k else "",
                "next": _tok("sample_data", name, k + 1) if k + 1 < n_kf else ""})
            ego = (x, y, frame.yaw(0.01 * (-1) ** k))
            markers = []
            for key, _, k0, k1, pose_fn, _, z in AGENTS:
                if key in MARKERS and k0 <= k and (k1 is None or k <= k1):
                    markers.append(((*frame.xy(*pose_fn(0.5 * k, k)[:2]), z), MARKERS[key]))
            for cam in CAMERAS:
                channel = cam[0]
                filename = f"samples/{channel}/{name}__{channel}__{ts}.jpg"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                _camera_image(ego, markers, cam).save(root / filename, quality=95)
                t["sample_data"].append({
                    "token": _tok("sample_data", name, k, channel), "sample_token": s, "ego_pose_token": pose,
                    "calibrated_sensor_token": _tok("calibrated_sensor", channel), "timestamp": ts,
                    "fileformat": "jpg", "is_key_frame": True, "height": CAMERA_IMAGE_SIZE[0],
                    "width": CAMERA_IMAGE_SIZE[1], "filename": filename,
                    "prev": _tok("sample_data", name, k - 1, channel) if k else "",
                    "next": _tok("sample_data", name, k + 1, channel) if k + 1 < n_kf else ""})
        for key, category, k0, k1, pose_fn, size, z in AGENTS:
            inst = _tok("instance", name, key)
            kfs = list(range(k0, n_kf if k1 is None else min(k1 + 1, n_kf)))
            anns = [_tok("sample_annotation", name, key, k) for k in kfs]
            t["instance"].append({"token": inst, "category_token": _tok("category", category),
                                  "nbr_annotations": len(anns), "first_annotation_token": anns[0],
                                  "last_annotation_token": anns[-1]})
            for i, k in enumerate(kfs):
                lx, ly, lyaw = pose_fn(0.5 * k, k)
                x, y = frame.xy(lx, ly)
                t["sample_annotation"].append({
                    "token": anns[i], "sample_token": samples[k], "instance_token": inst,
                    "visibility_token": "4", "attribute_tokens": [], "translation": [x, y, z],
                    "size": list(size), "rotation": _quat(frame.yaw(lyaw)),
                    "prev": anns[i - 1] if i else "", "next": anns[i + 1] if i + 1 < len(anns) else "",
                    "num_lidar_pts": 25, "num_radar_pts": 0})
        _write_map(root / "maps" / "expansion" / f"{sc['location']}.json", sc["location"], frame)
    for name, records in t.items():
        (root / version / f"{name}.json").write_text(json.dumps(records, indent=0))
    return root
