"""Scenario -> Waymo Open Motion ``Scenario`` proto, one TFRecord file per scenario.

The inverse of :mod:`sim_bridge.sources.waymo` (which reads the files back; the TFRecord framing and
its masked CRC-32C are that module's :func:`~sim_bridge.sources.waymo.write_tfrecord`). Units are
the contract's: metres, radians, m/s, world frame, 10 Hz; ``timestamps_seconds`` is
``metadata["ts"]`` (or ``0.1 * step``).

Kept: every track (id, type, per-step box centre, size, heading, planar velocity, validity), lanes
(centre line, type, speed limit, interpolating flag, entry/exit lanes, left/right neighbours,
boundary segments), road lines, road edges, crosswalks, speed bumps, driveways, stop signs,
per-step traffic-light states with stop points, ``sdc_track_index``, ``current_time_index``,
``objects_of_interest`` and ``tracks_to_predict``.

Dropped or changed (each export lists what applied in ``ExportResult.dropped``):
  * ids: Waymo ids are integers. Decimal ids (Waymo-sourced scenarios) are kept; any other id set
    (nuScenes tokens, MetaDrive lane names, ``ego``) is renumbered 0..n-1 in file order and the
    mapping written beside the record as ``<stem>.ids.json``.
  * agent types other than VEHICLE/PEDESTRIAN/CYCLIST (nuScenes TRAFFIC_CONE, TRAFFIC_BARRIER, ...)
    become TYPE_OTHER; per-step ``extra_state`` (throttle, steering, ...) and per-agent metadata;
    invalid steps are written as -1 like WOMD (the reader zeroes them again).
  * lane polygons and lane ``width`` (Waymo derives width from boundary segments, which only
    Waymo-sourced lanes have); LANE_SURFACE_UNSTRUCTURE becomes TYPE_UNDEFINED (LANE_UNKNOWN);
    ROAD_EDGE_SIDEWALK and GUARDRAIL become TYPE_ROAD_EDGE_BOUNDARY; feature types with no Waymo
    counterpart are left out. nuScenes lane polylines carry the lane yaw as third column
    (ScenarioNet's layout); it is not a height, so z is written as 0.
  * scenario metadata other than the fields above (dataset name, map name, ...); the reader names
    the dataset ``waymo``.

When the source has no ``tracks_to_predict``, up to :data:`DEFAULT_PREDICT` road users valid at
``current_time_index`` and later, nearest to the ego first, are chosen (difficulty unset);
``current_time_index`` defaults to 10 (WOMD's 1.1 s of history), capped at ``length - 1``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sim_bridge.export.common import ExportResult, count_note, file_stem, integer_ids
from sim_bridge.geometry import wrap_angle
from sim_bridge.scenario import STEP_SECONDS, MapFeature, Scenario
from sim_bridge.sources import waymo as source

# waymo_open_dataset (optional `waymo` extra) is imported lazily, when a proto is built.

__all__ = ["scenario_to_proto", "export_waymo", "read_waymo_export", "round_trip_errors", "DEFAULT_PREDICT"]

DEFAULT_PREDICT = 8
DEFAULT_CURRENT_INDEX = 10
_rev = lambda table: {v: k for k, v in table.items()}  # noqa: E731 -- name -> enum value
AGENT_CODES = _rev(source.AGENT_TYPES)
LANE_CODES = _rev(source.LANE_TYPES)
LINE_CODES = {**_rev(source.ROAD_LINE_TYPES), "UNKNOWN": 0}
EDGE_CODES = {**_rev(source.ROAD_EDGE_TYPES), "ROAD_EDGE_SIDEWALK": 1, "GUARDRAIL": 1}
BOUNDARY_CODES = {**_rev(source.BOUNDARY_TYPES), "UNKNOWN_LINE": 0}
STATE_CODES = _rev(source.LANE_STATES)
POLYGON_KINDS = {"CROSSWALK": "crosswalk", "SPEED_BUMP": "speed_bump", "DRIVEWAY": "driveway"}


class _Ids:
    """Integer ids for tracks (int32) and map features (int64), plus notes on what was dropped."""

    def __init__(self, sc: Scenario):
        self.tracks, self.tracks_renamed = integer_ids(list(sc.tracks.ids), 32)
        self.features, self.features_renamed = integer_ids(list(sc.map_features), 64)
        self.dangling = 0  # references to features that are not in the map

    def feature(self, ref: Any) -> int | None:
        """Map a lane/line reference (str or int) to the exported id; None when unknown."""
        key = str(ref)
        if key in self.features:
            return self.features[key]
        if not self.features_renamed and key.isdigit():
            return int(key)  # WOMD links to lanes outside the map crop: keep them as logged
        self.dangling += 1
        return None


def _fill_points(msg, pts: np.ndarray | None, zero_z: bool = False) -> None:
    """Append float64 [N, 2|3] points (m) to a repeated MapPoint field; z = 0 if absent or ``zero_z``."""
    if pts is None:
        return
    for p in np.asarray(pts, dtype=np.float64).tolist():
        msg.add(x=p[0], y=p[1], z=0.0 if (zero_z or len(p) < 3) else p[2])


def _add_tracks(proto, sc: Scenario, ids: _Ids, notes: Counter) -> None:
    tr = sc.tracks
    for i, aid in enumerate(tr.ids):
        code = AGENT_CODES.get(tr.types[i])
        if code is None:
            code = AGENT_CODES["OTHER"]
            notes[f"{tr.types[i]} agents typed OTHER"] += 1
        track = proto.tracks.add(id=ids.tracks[aid], object_type=code)
        rows = np.concatenate([tr.position[i], tr.size[i], tr.heading[i][:, None], tr.velocity[i]], axis=1)
        for ok, r in zip(tr.valid[i].tolist(), rows.tolist()):
            if ok:
                track.states.add(center_x=r[0], center_y=r[1], center_z=r[2], length=r[3], width=r[4],
                                 height=r[5], heading=r[6], velocity_x=r[7], velocity_y=r[8], valid=True)
            else:  # WOMD writes -1 into invalid steps
                track.states.add(center_x=-1, center_y=-1, center_z=-1, length=-1, width=-1, height=-1,
                                 heading=-1, velocity_x=-1, velocity_y=-1, valid=False)


def _add_boundaries(msg, segments: Any, ids: _Ids) -> None:
    for b in segments or ():
        fid = ids.feature(b["boundary_feature_id"])
        if fid is not None:
            msg.add(lane_start_index=int(b["lane_start_index"]), lane_end_index=int(b["lane_end_index"]),
                    boundary_feature_id=fid, boundary_type=BOUNDARY_CODES.get(str(b["boundary_type"]), 0))


def _add_neighbors(msg, neighbors: Any, n_self: int, sc: Scenario, ids: _Ids) -> None:
    """Neighbours as Waymo dicts (kept verbatim) or plain lane ids (MetaDrive: whole-lane overlap)."""
    for nb in neighbors or ():
        ref = nb["feature_id"] if isinstance(nb, dict) else nb
        fid = ids.feature(ref)
        if fid is None:
            continue
        if isinstance(nb, dict):
            n = msg.add(feature_id=fid, self_start_index=int(nb["self_start_index"]),
                        self_end_index=int(nb["self_end_index"]), neighbor_start_index=int(nb["neighbor_start_index"]),
                        neighbor_end_index=int(nb["neighbor_end_index"]))
            _add_boundaries(n.boundaries, nb.get("boundaries"), ids)
        else:
            other = sc.map_features[str(ref)].polyline
            msg.add(feature_id=fid, self_start_index=0, self_end_index=n_self - 1,
                    neighbor_start_index=0, neighbor_end_index=len(other) - 1)


def _add_lane(msg, f: MapFeature, sc: Scenario, ids: _Ids, notes: Counter) -> None:
    ex = f.extras
    if f.type not in LANE_CODES:
        notes[f"{f.type} lanes typed LANE_UNKNOWN"] += 1
    mph = ex.get("speed_limit_mph")
    if mph is None and ex.get("speed_limit_kmh") is not None:
        mph = float(ex["speed_limit_kmh"]) / source.MPH_TO_KMH
    msg.type = LANE_CODES.get(f.type, 0)
    msg.speed_limit_mph = float(mph or 0.0)
    msg.interpolating = bool(ex.get("interpolating", False))
    _fill_points(msg.polyline, f.polyline, zero_z=_lane_z_is_yaw(sc))
    for name in ("entry_lanes", "exit_lanes"):
        getattr(msg, name).extend(x for x in map(ids.feature, ex.get(name) or ()) if x is not None)
    _add_boundaries(msg.left_boundaries, ex.get("left_boundaries"), ids)
    _add_boundaries(msg.right_boundaries, ex.get("right_boundaries"), ids)
    _add_neighbors(msg.left_neighbors, ex.get("left_neighbor"), len(f.polyline), sc, ids)
    _add_neighbors(msg.right_neighbors, ex.get("right_neighbor"), len(f.polyline), sc, ids)
    if f.polygon is not None:
        notes["lane polygons"] += 1
    if "width" in ex and not ex.get("left_boundaries") and not ex.get("right_boundaries"):
        notes["lane widths without boundary segments"] += 1


def _lane_z_is_yaw(sc: Scenario) -> bool:
    """ScenarioNet's nuScenes converter stores the lane yaw (rad) as the polyline's third column."""
    return sc.dataset.lower().startswith("nuscenes")


def _add_map(proto, sc: Scenario, ids: _Ids, notes: Counter) -> None:
    for fid, f in sc.map_features.items():
        t = f.type
        if f.is_lane:
            _add_lane(proto.map_features.add(id=ids.features[fid]).lane, f, sc, ids, notes)
        elif t in LINE_CODES and t not in EDGE_CODES:
            m = proto.map_features.add(id=ids.features[fid]).road_line
            m.type = LINE_CODES[t]
            _fill_points(m.polyline, f.polyline)
        elif t in EDGE_CODES:
            if t not in source.ROAD_EDGE_TYPES.values():
                notes[f"{t} road edges typed ROAD_EDGE_BOUNDARY"] += 1
            m = proto.map_features.add(id=ids.features[fid]).road_edge
            m.type = EDGE_CODES[t]
            _fill_points(m.polyline, f.polyline)
        elif t in POLYGON_KINDS and f.polygon is not None:
            _fill_points(getattr(proto.map_features.add(id=ids.features[fid]), POLYGON_KINDS[t]).polygon, f.polygon)
        elif t == "STOP_SIGN" and "position" in f.extras:
            m = proto.map_features.add(id=ids.features[fid]).stop_sign
            m.lane.extend(x for x in map(ids.feature, f.extras.get("lane") or ()) if x is not None)
            x, y, z = (list(np.asarray(f.extras["position"], float).ravel()) + [0.0, 0.0, 0.0])[:3]
            m.position.x, m.position.y, m.position.z = x, y, z
        else:
            notes[f"{t} map features (no Waymo counterpart)"] += 1


def _add_lights(proto, sc: Scenario, ids: _Ids, notes: Counter) -> None:
    lights = []  # (lane id, stop point [3], per-step state codes or None)
    for key, tl in sc.traffic_lights.items():
        lane = ids.feature(tl.lane) if tl.lane else ids.feature(key)
        if lane is None:
            notes["traffic lights on unknown lanes"] += 1
            continue
        stop = np.zeros(3) if tl.stop_point is None else np.resize(np.asarray(tl.stop_point, float), 3)
        lights.append((lane, stop.tolist(), [STATE_CODES.get(s) for s in tl.states]))
        notes["traffic-light steps with unknown state names"] += sum(
            s not in STATE_CODES and s not in ("None", "") for s in tl.states)
    for t in range(sc.length):
        step = proto.dynamic_map_states.add()
        for lane, stop, codes in lights:
            if codes[t] is not None:  # "None": the light was not logged at this step
                ls = step.lane_states.add(lane=lane, state=codes[t])
                ls.stop_point.x, ls.stop_point.y, ls.stop_point.z = stop


def _prediction_targets(sc: Scenario, current: int) -> list[tuple[int, int]]:
    """(track index, difficulty) pairs: the source's, else the nearest road users with a future."""
    given = sc.metadata.get("tracks_to_predict")
    if isinstance(given, dict) and given:
        return [(sc.tracks.index(str(oid)), int(v.get("difficulty", 0)) if isinstance(v, dict) else 0)
                for oid, v in given.items() if str(oid) in sc.tracks.ids]
    tr, ego = sc.tracks, sc.ego_index
    cand = [i for i in range(tr.num_agents)
            if i != ego and tr.types[i] in ("VEHICLE", "PEDESTRIAN", "CYCLIST")
            and tr.valid[i, current] and tr.valid[i, current + 1:].any()]
    dist = {i: float(np.linalg.norm(tr.xy[i, current] - tr.xy[ego, current])) for i in cand}
    return [(i, 0) for i in sorted(cand, key=dist.get)[:DEFAULT_PREDICT]]


def scenario_to_proto(sc: Scenario) -> tuple[Any, ExportResult]:
    """Build one ``waymo_open_dataset.protos.scenario_pb2.Scenario`` from a scenario.

    Args:
        sc: a validated scenario (T steps at 10 Hz, A agents).

    Returns:
        (proto, result): the proto and an :class:`ExportResult` (no files yet) with the dropped
        notes and, where ids were renumbered, ``id_maps["tracks"|"map_features"]``.
    """
    from waymo_open_dataset.protos import scenario_pb2  # heavy optional dependency: imported on use

    ids = _Ids(sc)
    notes: Counter = Counter()
    proto = scenario_pb2.Scenario(scenario_id=sc.id)
    ts = np.asarray(sc.metadata.get("ts", np.arange(sc.length) * STEP_SECONDS), dtype=np.float64)
    proto.timestamps_seconds.extend(ts.tolist())
    current = min(int(sc.metadata.get("current_time_index", DEFAULT_CURRENT_INDEX)), sc.length - 1)
    proto.current_time_index = current
    proto.sdc_track_index = sc.ego_index
    _add_tracks(proto, sc, ids, notes)
    _add_map(proto, sc, ids, notes)
    _add_lights(proto, sc, ids, notes)
    proto.objects_of_interest.extend(ids.tracks[str(o)] for o in sc.metadata.get("objects_of_interest", ())
                                     if str(o) in ids.tracks)
    for index, difficulty in _prediction_targets(sc, current):
        proto.tracks_to_predict.add(track_index=index, difficulty=difficulty)
    if _lane_z_is_yaw(sc):
        notes["nuScenes lane yaw columns (written as z = 0)"] += 1
    if sc.tracks.extra_state and any(sc.tracks.extra_state):
        notes["agents' extra per-step state (throttle, steering, ...)"] += sum(map(bool, sc.tracks.extra_state))
    if ids.dangling:
        notes["references to map features not in the map"] += ids.dangling
    result = ExportResult("waymo", dropped=count_note(+notes, "dropped or changed"))
    if ids.tracks_renamed:
        result.id_maps["tracks"] = dict(ids.tracks)
    if ids.features_renamed:
        result.id_maps["map_features"] = dict(ids.features)
    return proto, result


def export_waymo(sc: Scenario, out_dir: str | Path, stem: str | None = None) -> ExportResult:
    """Write ``out_dir/<stem>.tfrecord`` (one record) and, if ids were renumbered, ``<stem>.ids.json``.

    Args:
        sc: the scenario.
        out_dir: destination folder (created).
        stem: file stem; default the scenario id.

    Returns:
        The :class:`ExportResult` with the written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(stem or sc.id)
    proto, result = scenario_to_proto(sc)
    path = out / f"{stem}.tfrecord"
    source.write_tfrecord(path, [proto.SerializeToString()])
    result.files.append(path)
    if result.id_maps:
        ids_path = out / f"{stem}.ids.json"
        ids_path.write_text(json.dumps(result.id_maps, indent=1))
        result.files.append(ids_path)
    return result


def read_waymo_export(path: str | Path) -> list[Scenario]:
    """Read an exported TFRecord back through our Waymo converter (CRCs checked).

    Returns:
        One validated :class:`Scenario` per record.
    """
    path = Path(path)
    return [Scenario.from_dict(source.waymo_scenario_to_dict(source.parse_scenario(data), path.name), src=str(path))
            for data in source.iter_tfrecord(path)]


def round_trip_errors(original: Scenario, restored: Scenario, id_maps: dict | None = None) -> dict[str, float]:
    """Largest differences between a scenario and its exported-then-read copy.

    Args:
        original: the exported scenario.
        restored: what :func:`read_waymo_export` returned.
        id_maps: ``ExportResult.id_maps`` (original id -> exported integer id).

    Returns:
        Maximum absolute errors over valid steps / kept features: ``position_m``, ``heading_rad``
        (wrapped), ``velocity_mps``, ``size_m``, ``map_points_m``, ``speed_limit_kmh``; mismatch
        counts ``valid``, ``types``, ``lane_links``, ``light_states``; ``missing_tracks`` and
        ``missing_features``.
    """
    id_maps = id_maps or {}
    tmap, fmap = id_maps.get("tracks", {}), id_maps.get("map_features", {})
    a, b = original.tracks, restored.tracks
    idx = [b.ids.index(str(tmap.get(i, i))) if str(tmap.get(i, i)) in b.ids else -1 for i in a.ids]
    keep = np.array([j >= 0 for j in idx])
    j = np.array([max(k, 0) for k in idx])
    v = a.valid[keep]
    err = {"missing_tracks": int((~keep).sum()), "valid": int((a.valid[keep] != b.valid[j[keep]]).sum()),
           "types": sum(AGENT_CODES.get(t, 4) != AGENT_CODES.get(u, 4)
                        for t, u in zip(np.array(a.types)[keep], np.array(b.types)[j[keep]]))}
    d = lambda x, y: float(np.abs(x - y)[v].max()) if v.any() else 0.0  # noqa: E731
    err["position_m"] = d(a.position[keep], b.position[j[keep]])
    err["heading_rad"] = d(np.asarray(wrap_angle(a.heading[keep] - b.heading[j[keep]])), 0.0)
    err["velocity_mps"] = d(a.velocity[keep], b.velocity[j[keep]])
    err["size_m"] = d(a.size[keep], b.size[j[keep]])
    err.update(_map_errors(original, restored, fmap))
    return err


def _map_errors(original: Scenario, restored: Scenario, fmap: dict) -> dict[str, float]:
    ref = lambda x: str(fmap.get(str(x), x))  # noqa: E731 -- original feature id -> restored key
    pts_err = speed_err = 0.0
    missing = links = 0
    z_is_yaw = _lane_z_is_yaw(original)
    for fid, f in original.map_features.items():
        g = restored.map_features.get(ref(fid))
        if g is None:
            missing += 1
            continue
        for p, q in ((f.polyline, g.polyline), (f.polygon, g.polygon)):
            if p is not None and q is not None and len(p):
                cols = 2 if (p.shape[1] == 2 or (f.is_lane and z_is_yaw)) else 3
                pts_err = max(pts_err, float(np.abs(p[:, :cols] - q[:, :cols]).max()))
        if f.is_lane:
            kmh = f.extras.get("speed_limit_kmh")
            if kmh is not None:
                speed_err = max(speed_err, abs(float(kmh) - float(g.extras["speed_limit_kmh"])))
            for name in ("entry_lanes", "exit_lanes", "left_neighbor", "right_neighbor"):
                want = {ref(x["feature_id"] if isinstance(x, dict) else x) for x in f.extras.get(name) or ()}
                got = {str(x["feature_id"] if isinstance(x, dict) else x) for x in g.extras.get(name) or ()}
                links += len(want ^ got)
    states = 0
    for tl in original.traffic_lights.values():
        got = restored.traffic_lights.get(ref(tl.lane))
        states += len(tl.states) if got is None else sum(s != u for s, u in zip(tl.states, got.states))
    return {"map_points_m": pts_err, "speed_limit_kmh": speed_err, "missing_features": missing,
            "lane_links": links, "light_states": states}
