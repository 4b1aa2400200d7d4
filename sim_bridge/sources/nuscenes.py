"""nuScenes -> Scenarios (ScenarioNet's layout, the format MetaDrive's ``ScenarioEnv`` reads).

Reads a nuScenes release through the devkit (``nuscenes.NuScenes`` for the tables,
``nuscenes.map_expansion.map_api.NuScenesMap`` for the vector map) and produces one
:class:`~sim_bridge.scenario.Scenario` per scene whose ``to_dict()`` has the structure of ScenarioNet's published
nuScenes pickles
(``sd_nuscenes_v1.0-mini_scene-XXXX.pkl``):

* ``tracks``: the ego (id ``"ego"``, from the ``ego_pose`` of the LIDAR_TOP keyframe sample_data)
  and every annotated instance whose category maps to VEHICLE, PEDESTRIAN, CYCLIST, TRAFFIC_CONE or
  TRAFFIC_BARRIER (``metadata.type`` keeps the nuScenes category name). The 2 Hz keyframes are
  resampled to 10 Hz: positions and box sizes linearly, headings along the shorter arc, velocities
  by finite differences. An instance is valid from its first to its last annotation, else zeros.
* ``map_features`` touching the ego path's bounding box grown by ``map_radius_m``: lanes (``LANE_SURFACE_STREET``,
  polyline ``(x, y, yaw)`` from the discretised arcline paths at 1 m, plus the lane polygon), lane
  connectors (same type, polyline and ``speed_limit_kmh``), road dividers
  (``ROAD_LINE_SOLID_SINGLE_YELLOW``), lane dividers (``ROAD_LINE_BROKEN_SINGLE_WHITE``), the
  drivable-area outline as ``boundary_N`` lines (``ROAD_LINE_SOLID_SINGLE_WHITE``) and pedestrian
  crossings (``CROSSWALK`` polygons).

Units and frames: nuScenes global (map) frame, right-handed, metres; headings in radians,
counter-clockwise from +x, wrapped to [-pi, pi); velocities in m/s; one step is 0.1 s (10 Hz),
keyframe ``k`` is step ``5 k`` (keyframes are taken as exactly 0.5 s apart, as ScenarioNet does;
their timestamps jitter by a few ms). All point arrays are float64 numpy arrays (the published pickles
store some polylines as lists of tuples; ``np.asarray`` of those gives the same shapes).

Deliberate differences from the published files: the ego box is stored as length 4.08 m,
width 1.73 m (the published files swap the two), the ego pose is not replaced by CAN-bus poses,
the drivable-area outline is clipped to the query box, and the last valid step of a track keeps the
velocity of the step before instead of 0.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from sim_bridge.geometry import wrap_angle
from sim_bridge.scenario import Scenario, ScenarioError

# nuscenes (optional devkit) and shapely are imported lazily, when a dataset is read.

__all__ = ["iter_nuscenes_scenarios", "scenario_filename", "track_type_for_category",
           "NuScenesConversionError", "EGO_ID"]

logger = logging.getLogger(__name__)

EGO_ID = "ego"
EGO_CATEGORY = "vehicle.car"
EGO_LENGTH_WIDTH_HEIGHT_M = (4.08, 1.73, 1.56)  # Renault Zoe, as in ScenarioNet
STEP_S = 0.1
SUBSTEPS = 5  # 10 Hz steps per 2 Hz keyframe interval
LANE_RESOLUTION_M = 1.0
CONNECTOR_SPEED_LIMIT_KMH = 100
REQUIRED_TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                   "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")

_VEHICLES = frozenset({"vehicle.car", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.truck",
                       "vehicle.construction", "vehicle.emergency.ambulance", "vehicle.emergency.police",
                       "vehicle.trailer", "vehicle.ego"})
_CYCLISTS = frozenset({"vehicle.bicycle", "vehicle.motorcycle"})


class NuScenesConversionError(ValueError):
    """A nuScenes release or one of its scenes cannot be converted; the message names the culprit."""


def track_type_for_category(category: str) -> str | None:
    """MetaDrive object type for a nuScenes category name, or None if the category is not kept.

    Args:
        category: nuScenes category name, e.g. ``"vehicle.car"`` or ``"human.pedestrian.adult"``.

    Returns:
        ``"VEHICLE"``, ``"PEDESTRIAN"``, ``"CYCLIST"``, ``"TRAFFIC_CONE"``, ``"TRAFFIC_BARRIER"``, or
        None for animals, debris, pushable/pullable objects, bicycle racks and static classes.
    """
    if category in _VEHICLES:
        return "VEHICLE"
    if category in _CYCLISTS:
        return "CYCLIST"
    if category.startswith("human.pedestrian."):
        return "PEDESTRIAN"
    if category == "movable_object.trafficcone":
        return "TRAFFIC_CONE"
    if category == "movable_object.barrier":
        return "TRAFFIC_BARRIER"
    return None


def scenario_filename(d: Scenario | Mapping) -> str:
    """File name ScenarioNet gives a converted nuScenes scenario.

    Args:
        d: a Scenario from :func:`iter_nuscenes_scenarios` (or the dict of a published nuScenes pickle);
            uses its version (``"nuscenes" + release``) and id (the scene name).

    Returns:
        ``"sd_nuscenes_{release}_{scene_name}.pkl"``, e.g. ``"sd_nuscenes_v1.0-mini_scene-0061.pkl"``.
    """
    version, sid = (d.version, d.id) if isinstance(d, Scenario) else (str(d["version"]), d["id"])
    if version.startswith("nuscenes"):
        version = version[len("nuscenes"):]
    return f"sd_nuscenes_{version}_{sid}.pkl"


def iter_nuscenes_scenarios(dataroot: Path, version: str, scenes: list[str] | None = None,
                            map_radius_m: float = 500.0,
                            repair: bool = True) -> Iterator[tuple[str, Scenario | Exception]]:
    """Convert nuScenes scenes one by one; a failing scene is reported and the next one converted.

    The release is checked and its tables loaded when this is called (errors raise here); the
    scenes are converted lazily as the iterator is consumed.

    Args:
        dataroot: nuScenes root holding ``<version>/*.json`` and ``maps/expansion/<location>.json``.
        version: release folder name, e.g. ``"v1.0-mini"`` or ``"v1.0-trainval"``.
        scenes: scene names (``"scene-0061"``) to convert in this order; None converts all scenes.
        map_radius_m: map features are kept if they touch the box spanned by the ego path grown by
            this many metres on every side (world frame).
        repair: drop lanes with fewer than 2 points (see ``Scenario.from_dict``) instead of reporting the scene.

    Returns:
        Iterator of ``(scene_name, Scenario)`` for converted (validated) scenes and
        ``(scene_name, exception)`` for scenes that could not be converted (unknown scene name,
        missing map expansion JSON, broken annotations, ...), in scene order.

    Raises:
        FileNotFoundError: ``dataroot``, the version folder or one of its tables is missing.
        NuScenesConversionError: the devkit cannot load the tables.
        ValueError: ``map_radius_m`` is not positive.
    """
    dataroot = Path(dataroot).expanduser()
    if not dataroot.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot not found: {dataroot}")
    table_root = dataroot / version
    if not table_root.is_dir():
        found = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and p.name.startswith("v"))
        raise FileNotFoundError(f"nuScenes version folder not found: {table_root} (expected the "
                                f"{version!r} JSON tables there; version folders present: {found or 'none'})")
    missing = [f"{t}.json" for t in REQUIRED_TABLES if not (table_root / f"{t}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"nuScenes tables missing in {table_root}: {', '.join(missing)}")
    if not map_radius_m > 0:
        raise ValueError(f"map_radius_m must be positive, got {map_radius_m!r}")

    from nuscenes import NuScenes

    try:
        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except Exception as e:  # the devkit mostly raises bare AssertionError/KeyError
        raise NuScenesConversionError(f"nuScenes devkit failed to load {version} from {dataroot}: "
                                      f"{type(e).__name__}: {e}") from e
    return _iter_scenes(nusc, dataroot, version, scenes, float(map_radius_m), repair)


def _iter_scenes(nusc, dataroot: Path, version: str, scenes: list[str] | None,
                 map_radius_m: float, repair: bool) -> Iterator[tuple[str, Scenario | Exception]]:
    by_name = {s["name"]: s for s in nusc.scene}
    names = list(by_name) if scenes is None else list(scenes)
    maps: dict[str, Any] = {}
    for name in names:
        scene = by_name.get(name)
        if scene is None:
            yield name, NuScenesConversionError(
                f"scene {name!r} not found in nuScenes {version} at {dataroot} ({len(by_name)} scenes)")
            continue
        try:
            d = _convert_scene(nusc, scene, dataroot, version, maps, map_radius_m)
            yield name, Scenario.from_dict(d, src=name, repair=repair)
        except (NuScenesConversionError, FileNotFoundError, ScenarioError) as e:
            yield name, e
        except Exception as e:  # anything else is reported with the scene named, never raised
            err = NuScenesConversionError(f"scene {name!r}: unexpected {type(e).__name__}: {e}")
            err.__cause__ = e
            yield name, err


# ---- tracks --------------------------------------------------------------------------------------
def _numbers(rec: dict, key: str, n: int, what: str) -> np.ndarray:
    """``rec[key]`` as n finite floats, or NuScenesConversionError naming ``what`` and the field."""
    v = rec.get(key)
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (n,) or not np.isfinite(a).all():
        raise NuScenesConversionError(f"{what}: field {key!r} must be {n} finite numbers, got {v!r}")
    return a


def _yaw(rec: dict, what: str) -> float:
    """Heading (rad, about +z, from +x) of a [w, x, y, z] quaternion: the rotated x axis's angle."""
    w, x, y, z = _numbers(rec, "rotation", 4, what)
    if w * w + x * x + y * y + z * z < 1e-12:
        raise NuScenesConversionError(f"{what}: field 'rotation' is a zero quaternion")
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _keyframes(nusc, scene: dict) -> list[dict]:
    """The scene's samples in time order, following ``next`` from ``first_sample_token``."""
    what = f"scene {scene['name']!r}"
    samples, token, seen = [], scene["first_sample_token"], set()
    while token:
        if token in seen:
            raise NuScenesConversionError(f"{what}: sample chain loops at sample {token}")
        seen.add(token)
        try:
            sample = nusc.get("sample", token)
        except KeyError:
            raise NuScenesConversionError(f"{what}: sample {token!r} is not in the sample table") from None
        if sample["scene_token"] != scene["token"]:
            raise NuScenesConversionError(f"{what}: sample {token} belongs to scene {sample['scene_token']}")
        samples.append(sample)
        token = sample["next"]
    if not samples or samples[-1]["token"] != scene["last_sample_token"]:
        raise NuScenesConversionError(f"{what}: sample chain does not end at last_sample_token "
                                      f"{scene['last_sample_token']}")
    return samples


def _interpolate(kf: np.ndarray, pos: np.ndarray, yaw: np.ndarray, lwh: np.ndarray, length: int) -> dict:
    """10 Hz state arrays from keyframe samples of one object.

    Args:
        kf: [K] keyframe indices (increasing) where the object is annotated.
        pos: [K, 3] box centres, m, world frame. yaw: [K] rad. lwh: [K, 3] length/width/height, m.
        length: number of 10 Hz steps of the scenario.

    Returns:
        ScenarioNet state dict (position [T,3], heading [T], velocity [T,2] m/s, valid [T],
        length/width/height [T,1]); zeros outside the first..last annotation span.
    """
    first, last = int(kf[0]) * SUBSTEPS, int(kf[-1]) * SUBSTEPS
    span = slice(first, last + 1)
    t = np.arange(first, last + 1) / SUBSTEPS  # in keyframe units
    kf = kf.astype(np.float64)
    position = np.zeros((length, 3))
    position[span] = np.stack([np.interp(t, kf, pos[:, i]) for i in range(3)], axis=-1)
    heading = np.zeros(length)
    heading[span] = wrap_angle(np.interp(t, kf, np.unwrap(yaw)))  # unwrap: shorter arc between keyframes
    sizes = np.zeros((length, 3))
    sizes[span] = np.stack([np.interp(t, kf, lwh[:, i]) for i in range(3)], axis=-1)
    velocity = np.zeros((length, 2))
    if last > first:
        v = np.diff(position[span, :2], axis=0) / STEP_S
        velocity[first:last] = v
        velocity[last] = v[-1]
    valid = np.zeros(length)
    valid[span] = 1.0
    return {"position": position, "heading": heading, "velocity": velocity, "valid": valid,
            "length": sizes[:, 0:1].copy(), "width": sizes[:, 1:2].copy(), "height": sizes[:, 2:3].copy()}


def _ego_keyframes(nusc, name: str, samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Ego [K, 3] positions (m) and [K] headings (rad) from each keyframe's LIDAR_TOP ego_pose."""
    pos, yaw = [], []
    for sample in samples:
        sd_token = sample["data"].get("LIDAR_TOP")
        if sd_token is None:
            raise NuScenesConversionError(f"scene {name!r}: keyframe sample {sample['token']} has no "
                                          "LIDAR_TOP sample_data (needed for the ego pose)")
        pose = nusc.get("ego_pose", nusc.get("sample_data", sd_token)["ego_pose_token"])
        what = f"scene {name!r}: ego_pose {pose['token']}"
        pos.append(_numbers(pose, "translation", 3, what))
        yaw.append(_yaw(pose, what))
    return np.array(pos), np.array(yaw)


def _annotated_objects(nusc, name: str, samples: list[dict]) -> dict[str, dict]:
    """Per kept instance (in order of first appearance): category and keyframe samples of its box."""
    objs: dict[str, dict] = {}
    for k, sample in enumerate(samples):
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            if track_type_for_category(ann["category_name"]) is None:
                continue
            what = f"scene {name!r}: sample_annotation {ann_token}"
            w, length, h = _numbers(ann, "size", 3, what)  # nuScenes box size is [width, length, height]
            o = objs.setdefault(ann["instance_token"], {"category": ann["category_name"], "kf": [], "pos": [],
                                                        "yaw": [], "lwh": []})
            if o["kf"] and o["kf"][-1] == k:
                raise NuScenesConversionError(f"{what}: instance {ann['instance_token']} is annotated "
                                              f"twice in sample {sample['token']}")
            o["kf"].append(k)
            o["pos"].append(_numbers(ann, "translation", 3, what))
            o["yaw"].append(_yaw(ann, what))
            o["lwh"].append((length, w, h))
    if EGO_ID in objs:
        raise NuScenesConversionError(f"scene {name!r}: an instance token equals the ego id {EGO_ID!r}")
    return objs


def _tracks(nusc, scene: dict, samples: list[dict], length: int) -> dict:
    """Ego + annotated objects as ScenarioNet tracks (ego first, then by first appearance)."""
    ego_pos, ego_yaw = _ego_keyframes(nusc, scene["name"], samples)
    ego_lwh = np.tile(EGO_LENGTH_WIDTH_HEIGHT_M, (len(samples), 1))
    # the contract's z is the box centre (annotations are centres, as in Waymo and MetaDrive); the nuScenes
    # ego pose sits on the ground under the rear axle, so lift it by half the ego's height
    ego_pos[:, 2] += ego_lwh[:, 2] / 2
    tracks = {EGO_ID: _track(EGO_ID, "VEHICLE", EGO_CATEGORY, length,
                             _interpolate(np.arange(len(samples)), ego_pos, ego_yaw, ego_lwh, length))}
    for inst, o in _annotated_objects(nusc, scene["name"], samples).items():
        state = _interpolate(np.array(o["kf"]), np.array(o["pos"]), np.array(o["yaw"]), np.array(o["lwh"]), length)
        tracks[inst] = _track(inst, track_type_for_category(o["category"]), o["category"], length, state)
    return tracks


def _track(obj_id: str, md_type: str, category: str, length: int, state: dict) -> dict:
    """One ScenarioNet track dict: MetaDrive type, 10 Hz state arrays, metadata naming the category."""
    return {"type": md_type, "state": state,
            "metadata": {"track_length": length, "type": category, "object_id": obj_id, "original_id": obj_id}}


# ---- map -----------------------------------------------------------------------------------------
def _map_api(dataroot: Path, location: str, log: dict, cache: dict):
    """NuScenesMap for ``location`` (cached), or FileNotFoundError naming the expected JSON path."""
    if location in cache:
        return cache[location]
    path = dataroot / "maps" / "expansion" / f"{location}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"nuScenes map expansion JSON for location {location!r} (log {log.get('logfile', log['token'])}) "
            f"not found: expected {path}. Unpack the nuScenes map expansion pack (v1.3) into "
            f"{dataroot / 'maps' / 'expansion'}.")
    from nuscenes.map_expansion.map_api import NuScenesMap

    try:
        cache[location] = NuScenesMap(dataroot=str(dataroot), map_name=location)
    except Exception as e:
        raise NuScenesConversionError(f"cannot load the map expansion {path}: {type(e).__name__}: {e}") from e
    return cache[location]


def _line_parts(geom) -> list[np.ndarray]:
    """[N, 2] coordinate arrays of the LineStrings in a shapely geometry (points etc. dropped)."""
    if geom.is_empty:
        return []
    if geom.geom_type in ("LineString", "LinearRing"):
        xy = np.asarray(geom.coords, dtype=np.float64)[:, :2]
        return [xy] if len(xy) >= 2 else []
    if hasattr(geom, "geoms"):
        return [xy for g in geom.geoms for xy in _line_parts(g)]
    return []


def _polygon_xy(polygon) -> np.ndarray:
    """Closed exterior ring of a shapely polygon as [N, 2] float64, m, world frame."""
    return np.asarray(polygon.exterior.coords, dtype=np.float64)[:, :2]


def _boundaries(map_api, tokens: list[str], patch: tuple) -> dict:
    """Outline of the union of the drivable areas, clipped to ``patch``, as ``boundary_N`` lines."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    areas = [map_api.extract_polygon(pt) for tok in tokens
             for pt in map_api.get("drivable_area", tok)["polygon_tokens"]]
    areas = [p if p.is_valid else p.buffer(0) for p in areas if not p.is_empty]
    if not areas:
        return {}
    outline = unary_union(areas).boundary.intersection(box(*patch))
    return {f"boundary_{i}": {"type": "ROAD_LINE_SOLID_SINGLE_WHITE", "polyline": xy}
            for i, xy in enumerate(_line_parts(outline))}


def _lane(map_api, layer: str, token: str) -> dict | None:
    """A lane or lane connector as LANE_SURFACE_STREET; polyline [N, 3] (x m, y m, yaw rad) at ~1 m."""
    from nuscenes.map_expansion.arcline_path_utils import discretize_lane

    pts = np.asarray(discretize_lane(map_api.arcline_path_3.get(token, []), resolution_meters=LANE_RESOLUTION_M),
                     dtype=np.float64).reshape(-1, 3)
    if len(pts):  # consecutive arcline paths share their end/start point: drop the repeats
        pts = pts[np.r_[True, np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1) > 1e-6]]
    if len(pts) < 2:
        logger.debug("nuScenes %s %s has no usable arcline path; skipped", layer, token)
        return None
    feature = {"type": "LANE_SURFACE_STREET", "polyline": pts}
    if layer == "lane":
        feature["polygon"] = _polygon_xy(map_api.extract_polygon(map_api.get(layer, token)["polygon_token"]))
    else:  # the published files give connectors no polygon but a nominal speed limit
        feature["speed_limit_kmh"] = CONNECTOR_SPEED_LIMIT_KMH
    return feature


def _map_features(map_api, ego_xy: np.ndarray, radius_m: float) -> dict:
    """ScenarioNet map features touching the ego path's bounding box grown by ``radius_m``.

    Args:
        map_api: a ``NuScenesMap``.
        ego_xy: [T, 2] ego positions, m, world frame.
        radius_m: margin around the ego path's bounding box, m.

    Returns:
        Feature id (map token, or ``boundary_N``) -> feature dict; see the module docstring.
    """
    lo, hi = ego_xy.min(axis=0) - radius_m, ego_xy.max(axis=0) + radius_m
    patch = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    layers = ["drivable_area", "lane", "lane_connector", "road_divider", "lane_divider", "ped_crossing"]
    records = map_api.get_records_in_patch(patch, layers, mode="intersect")
    out = _boundaries(map_api, records["drivable_area"], patch)
    for layer, line_type in (("lane_divider", "ROAD_LINE_BROKEN_SINGLE_WHITE"),
                             ("road_divider", "ROAD_LINE_SOLID_SINGLE_YELLOW")):
        for tok in records[layer]:
            xy = _line_parts(map_api.extract_line(map_api.get(layer, tok)["line_token"]))
            if xy:
                out[tok] = {"type": line_type, "polyline": xy[0]}
    for layer in ("lane", "lane_connector"):
        for tok in records[layer]:
            feature = _lane(map_api, layer, tok)
            if feature is not None:
                out[tok] = feature
    for tok in records["ped_crossing"]:
        polygon = map_api.extract_polygon(map_api.get("ped_crossing", tok)["polygon_token"])
        if not polygon.is_empty:
            out[tok] = {"type": "CROSSWALK", "polygon": _polygon_xy(polygon)}
    return out


# ---- scene ---------------------------------------------------------------------------------------
def _object_summary(obj_id: str, track: dict) -> dict:
    """MetaDrive's per-object summary: moving distance (m) over valid steps, valid step counts."""
    state = track["state"]
    valid = state["valid"] > 0.5
    xy = state["position"][valid, :2]
    idx = np.flatnonzero(valid)
    run = 0
    if len(idx):
        gaps = np.flatnonzero(~valid[idx[0]:])
        run = int(gaps[0]) if len(gaps) else len(valid) - int(idx[0])
    return {"type": track["type"], "object_id": obj_id, "track_length": int(len(valid)),
            "moving_distance": float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()),
            "valid_length": int(valid.sum()), "continuous_valid_length": run}


def _convert_scene(nusc, scene: dict, dataroot: Path, version: str, maps: dict, map_radius_m: float) -> dict:
    """One nuScenes scene as a ScenarioNet scenario dict (see the module docstring)."""
    name = scene["name"]
    log = nusc.get("log", scene["log_token"])
    samples = _keyframes(nusc, scene)
    length = (len(samples) - 1) * SUBSTEPS + 1
    tracks = _tracks(nusc, scene, samples, length)
    try:
        map_api = _map_api(dataroot, log["location"], log, maps)
    except (FileNotFoundError, NuScenesConversionError) as e:
        raise type(e)(f"scene {name!r}: {e}") from e
    map_features = _map_features(map_api, tracks[EGO_ID]["state"]["position"][:, :2], map_radius_m)

    types: dict[str, int] = {}
    for t in tracks.values():
        types[t["type"]] = types.get(t["type"], 0) + 1
    metadata = {
        "dataset": "nuscenes", "metadrive_processed": False, "map": log["location"],
        "date": log["date_captured"], "coordinate": "right-handed", "scenario_token": scene["token"],
        "id": name, "scenario_id": name, "sample_rate": STEP_S, "ts": np.arange(length) * STEP_S,
        "sdc_id": EGO_ID,
        "object_summary": {k: _object_summary(k, t) for k, t in tracks.items()},
        "number_summary": {"num_objects": len(tracks), "num_object_types": set(types),
                           "num_objects_each_type": types, "num_traffic_lights": 0,
                           "num_traffic_light_types": set(), "num_traffic_light_each_step": {},
                           "num_map_features": len(map_features)},
    }
    return {"id": name, "version": "nuscenes" + version, "length": length, "metadata": metadata,
            "tracks": tracks, "dynamic_map_states": {}, "map_features": map_features}
