"""The live MetaDrive simulator state as a one-frame scenario in the contract.

:func:`snapshot` turns what a running ``MetaDriveEnv`` (procedural maps) or ``ScenarioEnv`` (log
replay) holds right now into a :class:`~sim_bridge.scenario.Scenario` of length 1, so everything that
reads the contract (BEV layouts, previews, traffic generation) works on a live episode.
:func:`route_polyline` gives the ego's navigation route for drawing.

Frame: MetaDrive's simulator frame, right-handed, metres, heading CCW from +x (in 0.4.3 its
vector and heading conversions to Panda3D are identities: no y flip). ``ScenarioEnv``
*centralizes* every scenario on load: all positions are shifted so
that the ego's first logged position is the origin, and the shift is recorded in
``metadata["old_origin_in_current_coordinate"]`` (= minus the ego's first logged xy in the file
frame). The map is therefore read from ``engine.data_manager.current_scenario`` (the shifted copy
the engine built its map from), never from the file, so agents and map share one frame. To go back
to the file frame: ``xy_file = xy_snapshot - metadata["old_origin_in_current_coordinate"]``.
Heights: ``position[..., 2]`` is the body origin height MetaDrive reports (``get_z()``, ~0.5 m
for cars, half the height for pedestrians and cones), as MetaDrive's own episode recorder writes it;
the physics world is flat, while logged map polylines may keep their real elevation.

Cost: the map is converted (and validated, with single-point lanes dropped) once per map and cached
on the map object, keyed by scenario file / seed; a snapshot then reads ~6 attributes per object.
Measured on a 2-core Xeon (MetaDrive 0.4.3): warm ~0.1 ms + ~5 us per object (0.17 ms for 18 cars
on a 2-block procedural map, 0.5-0.6 ms for 57-112 objects in Waymo / nuScenes replays), against
2.5-12 ms for ``env.step``. The first snapshot of a map adds the conversion: ~8 ms on a procedural
map (7 ms of it MetaDrive's ``get_map_features``), 4-5 ms for 586-634 logged map features. The
cached ``map_features`` dict is shared by all snapshots of one map: treat it as read-only.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from sim_bridge.scenario import AgentTracks, MapFeature, Scenario, TrafficLight

__all__ = ["snapshot", "route_polyline", "snapshot_map_features", "EGO_ID"]

EGO_ID = "ego"
# MetaDrive's traffic light object status -> the contract's LANE_STATE_* names.
_LIGHT_STATES = {"TRAFFIC_LIGHT_GREEN": "LANE_STATE_GO", "TRAFFIC_LIGHT_YELLOW": "LANE_STATE_CAUTION",
                 "TRAFFIC_LIGHT_RED": "LANE_STATE_STOP", "TRAFFIC_LIGHT_UNKNOWN": "LANE_STATE_UNKNOWN"}
# map object -> (map key, features, repairs); entries vanish with the map object.
_MAP_CACHE: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
_CLASSES: dict[str, type] = {}


def _classes() -> dict[str, type]:
    """MetaDrive classes used to sort engine objects (imported once, lazily)."""
    if not _CLASSES:
        from metadrive.component.static_object.base_static_object import BaseStaticObject
        from metadrive.component.static_object.traffic_object import TrafficBarrier, TrafficCone
        from metadrive.component.traffic_light.base_traffic_light import BaseTrafficLight
        from metadrive.component.traffic_participants.base_traffic_participant import BaseTrafficParticipant
        from metadrive.component.traffic_participants.cyclist import Cyclist, CyclistBoundingBox
        from metadrive.component.traffic_participants.pedestrian import Pedestrian, PedestrianBoundingBox
        from metadrive.component.vehicle.base_vehicle import BaseVehicle

        _CLASSES.update(vehicle=BaseVehicle, pedestrian=(Pedestrian, PedestrianBoundingBox),
                        cyclist=(Cyclist, CyclistBoundingBox), cone=TrafficCone, barrier=TrafficBarrier,
                        participant=BaseTrafficParticipant, static=BaseStaticObject, light=BaseTrafficLight)
    return _CLASSES


def _type_of(obj: Any, c: dict) -> str:
    if isinstance(obj, c["vehicle"]):
        return "VEHICLE"
    if isinstance(obj, c["pedestrian"]):
        return "PEDESTRIAN"
    if isinstance(obj, c["cyclist"]):
        return "CYCLIST"
    if isinstance(obj, c["cone"]):
        return "TRAFFIC_CONE"
    if isinstance(obj, c["barrier"]):
        return "TRAFFIC_BARRIER"
    return str(getattr(obj, "metadrive_type", None) or "OTHER")


def _size_of(obj: Any, c: dict) -> tuple[float, float, float]:
    """(length along heading, width, height) in m, as MetaDrive's top-down view draws the object."""
    height = float(getattr(obj, "HEIGHT", 0.0) or 0.0)
    radius = getattr(type(obj), "RADIUS", None)
    if radius is not None and not isinstance(obj, c["vehicle"]):  # cylinders: pedestrians, cones, warnings
        return 2.0 * radius, 2.0 * radius, height
    if isinstance(obj, c["barrier"]):  # its long side lies across its heading (MetaDrive's convention)
        return float(obj.WIDTH), float(obj.LENGTH), height
    return float(obj.LENGTH), float(obj.WIDTH), height


def _scenario_data(env) -> Any:
    """The scenario dict the engine replays (ScenarioEnv), or None for procedural maps."""
    dm = env.engine.managers.get("data_manager")
    return None if dm is None else dm.current_scenario


def _map_key(env) -> tuple:
    engine = env.engine
    dm = engine.managers.get("data_manager")
    if dm is None:
        return ("procedural", int(engine.global_random_seed))
    name = getattr(dm, "current_scenario_file_name", None) or dm.current_scenario_id
    return ("scenario", int(engine.global_random_seed), str(name))


def snapshot_map_features(env) -> tuple[dict[str, MapFeature], tuple[str, ...]]:
    """The current map in the contract, cached per map object and map key.

    Args:
        env: a reset MetaDrive env (``MetaDriveEnv`` or ``ScenarioEnv``).

    Returns:
        (features by id, repairs applied): lanes with fewer than 2 points are dropped and named in
        the repairs. The dict is shared by every call for the same map: do not mutate it.
    """
    cur = env.current_map
    key = _map_key(env)
    hit = _MAP_CACHE.get(cur)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    data = _scenario_data(env)
    raw = data["map_features"] if data is not None else cur.get_map_features()
    # The contract's own conversion validates the features (and drops unusable lanes) once per map.
    stub = {"id": "map", "length": 1, "map_features": raw, "dynamic_map_states": {}, "metadata": {"sdc_id": EGO_ID},
            "tracks": {EGO_ID: {"type": "VEHICLE", "state": {
                "position": np.zeros((1, 3)), "heading": np.zeros(1), "valid": np.ones(1, bool)}}}}
    sc = Scenario.from_dict(stub, src=f"metadrive map {key}", repair=True)
    entry = (key, sc.map_features, tuple(sc.metadata.get("bevgen_repairs", ())))
    _MAP_CACHE[cur] = entry
    return entry[1], entry[2]


def _original_ids(env) -> dict[str, str]:
    """MetaDrive object name -> id in the replayed log (ScenarioEnv traffic), else empty."""
    tm = env.engine.managers.get("traffic_manager")
    mapping = getattr(tm, "scenario_id_to_obj_id", None)
    return {str(v): str(k) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def snapshot(env, ego: Any = None) -> Scenario:
    """The current simulator state as a one-frame scenario (length 1), in the simulator frame.

    Args:
        env: a reset MetaDrive env (``MetaDriveEnv`` or ``ScenarioEnv``; any ``BaseEnv``).
        ego: the ego object; default ``env.agent`` (the single agent).

    Returns:
        A Scenario with ``length == 1``: the ego as track ``"ego"`` (VEHICLE, ``metadata["sdc_id"]``)
        first, then every vehicle, pedestrian, cyclist and static object the engine holds, ids as in
        the replayed log where known (ScenarioEnv) else MetaDrive's object names; position
        [A, 1, 3], heading [A, 1], velocity [A, 1, 2] (m/s), size [A, 1, 3] = (length, width,
        height); all valid; per-track metadata names the MetaDrive object and class, and the log's id
        (``original_id``, the logged SDC's for the ego) in replays. Map features: see
        :func:`snapshot_map_features`. Traffic lights: one per light object, keyed and laned by the
        controlled lane, with its current LANE_STATE_*.
        ``metadata`` adds ``episode_step``, ``map_key``, ``source`` (env class) and, for
        ScenarioEnv, ``source_scenario_id`` and ``old_origin_in_current_coordinate``.
    """
    c = _classes()
    engine = env.engine
    ego = env.agent if ego is None else ego
    original = _original_ids(env)
    agents, ids, lights = [ego], [EGO_ID], {}
    used = {EGO_ID}
    for name, obj in engine.get_objects().items():
        if obj is ego:
            continue
        if isinstance(obj, c["light"]):
            lane = original.get(str(name)) or str(getattr(getattr(obj, "lane", None), "index", name))
            x, y = obj.position
            lights[lane] = TrafficLight(
                lane=lane, stop_point=np.array([x, y, 0.0]),
                states=(_LIGHT_STATES.get(str(obj.status), "LANE_STATE_UNKNOWN"),),
                extras={"metadrive_status": str(obj.status), "metadrive_name": str(name)})
            continue
        if not isinstance(obj, (c["vehicle"], c["participant"], c["static"])):
            continue
        aid = original.get(str(name), str(name))
        if aid in used:
            aid = str(name)
        used.add(aid)
        agents.append(obj)
        ids.append(aid)

    a = len(agents)
    pos = np.empty((a, 1, 3))
    head = np.empty((a, 1))
    vel = np.empty((a, 1, 2))
    size = np.empty((a, 1, 3))
    types, metas = [], []
    for i, obj in enumerate(agents):
        x, y = obj.position
        pos[i, 0] = (x, y, obj.get_z())
        head[i, 0] = obj.heading_theta
        vel[i, 0] = obj.velocity
        size[i, 0] = _size_of(obj, c)
        types.append("VEHICLE" if i == 0 else _type_of(obj, c))
        metas.append({"metadrive_name": str(obj.name), "metadrive_class": type(obj).__name__})
        if str(obj.name) in original:
            metas[-1]["original_id"] = original[str(obj.name)]
    tracks = AgentTracks(ids=tuple(ids), types=tuple(types), position=pos, heading=head, velocity=vel,
                         size=size, valid=np.ones((a, 1), bool), extra_state=tuple({} for _ in range(a)),
                         metadata=tuple(metas))

    features, repairs = snapshot_map_features(env)
    key = _map_key(env)
    step = int(engine.episode_step)
    meta: dict[str, Any] = {"sdc_id": EGO_ID, "dataset": "metadrive_snapshot", "source": type(env).__name__,
                            "episode_step": step, "map_key": ":".join(map(str, key)), "coordinate": "right-handed",
                            "ts": np.array([0.1 * step])}
    data = _scenario_data(env)
    if data is not None:
        md = data["metadata"]
        metas[0]["original_id"] = str(md.get("sdc_id"))  # the logged ego, whose place the ego takes
        meta["source_scenario_id"] = str(md.get("scenario_id", md.get("id", key[-1])))
        if "old_origin_in_current_coordinate" in md:
            meta["old_origin_in_current_coordinate"] = np.array(md["old_origin_in_current_coordinate"], float)
    if repairs:
        meta["bevgen_repairs"] = list(repairs)
    sid = f"{type(env).__name__}-{key[1]}-step{step}"
    return Scenario(id=sid, length=1, tracks=tracks, map_features=features, traffic_lights=lights,
                    metadata=meta, version="bevgen-snapshot")


def _dedupe(points: np.ndarray) -> np.ndarray:
    """Drop consecutive duplicate points of float [N, 2]."""
    if len(points) < 2:
        return points
    keep = np.ones(len(points), bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6
    return points[keep]


def route_polyline(env, interval: float = 2.0, ego: Any = None) -> np.ndarray:
    """World-frame points of the ego's navigation route, for drawing.

    ScenarioEnv (``TrajectoryNavigation``): the logged ego trajectory the ego is asked to follow.
    Procedural maps (``NodeNetworkNavigation``): the centre lines of the route's roads between
    consecutive checkpoints, on the ego's current lane number (clamped to each road's lanes).
    Edge networks (``EdgeNetworkNavigation``): the centre lines of the route's lanes.

    Args:
        env: a reset MetaDrive env.
        interval: sampling step along each lane in m.
        ego: the ego object; default ``env.agent``.

    Returns:
        float64 [N, 2] (x, y) in m, simulator frame (the frame of :func:`snapshot`); [0, 2] when
        the ego has no route.
    """
    ego = env.agent if ego is None else ego
    nav = getattr(ego, "navigation", None)
    if nav is None:
        return np.zeros((0, 2))
    ref = getattr(nav, "reference_trajectory", None)
    if ref is not None:
        return _dedupe(np.asarray(ref.get_polyline(interval), float)[:, :2])
    ckpts = list(nav.checkpoints or [])
    network = nav.map.road_network
    pieces = []
    from metadrive.component.road_network.edge_road_network import EdgeRoadNetwork

    if isinstance(network, EdgeRoadNetwork):  # checkpoints are lane ids
        pieces = [network.get_lane(cp).get_polyline(interval) for cp in ckpts]
    else:
        cur = getattr(nav, "current_lane", None)
        k = int(cur.index[2]) if cur is not None and isinstance(cur.index, tuple) else 0
        for a, b in zip(ckpts[:-1], ckpts[1:]):
            lanes = network.graph.get(a, {}).get(b)
            if lanes:
                pieces.append(lanes[min(k, len(lanes) - 1)].get_polyline(interval))
    if not pieces:
        return np.zeros((0, 2))
    return _dedupe(np.concatenate([np.asarray(p, float)[:, :2] for p in pieces]))
