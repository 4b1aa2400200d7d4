"""Waymo Open Motion Dataset (WOMD) TFRecords -> Scenarios (ScenarioNet's layout), without TensorFlow.

A WOMD ``*.tfrecord*`` file is a sequence of TFRecord frames, each holding one serialized
``waymo_open_dataset.protos.scenario_pb2.Scenario``. This module reads the frames by hand
(:func:`iter_tfrecord`), parses each with the Waymo protos and converts it to the dict layout of
ScenarioNet's Waymo converter (:func:`waymo_scenario_to_dict`) -- the layout of the shared real
pickles ``sd_training.tfrecord-*_<scenario_id>.pkl`` and the one MetaDrive's ``ScenarioEnv`` reads.
:func:`iter_waymo_scenarios` converts many files into :class:`~sim_bridge.scenario.Scenario` objects and
reports every bad record or file as an item instead of stopping.

Units and frames: Waymo's world frame (``metadata["coordinate"] == "waymo"``), metres; headings
in radians, counter-clockwise from +x; velocities in m/s in the world frame; one step = 0.1 s
(10 Hz; ``metadata["ts"]`` holds the logged timestamps in seconds).

Deliberate choices where the Waymo proto leaves room (all documented at the code):
  * invalid agent steps are zeroed (Waymo fills them with -1), so ``valid`` is the only mask;
  * an UNKNOWN road line is named ``UNKNOWN_LINE`` (MetaDrive's name; ScenarioNet writes
    ``UNKNOWN``, which MetaDrive takes for a road edge); an UNKNOWN road edge is ``UNKNOWN``;
  * lane ``width`` [N, 2] (left, right half widths, m) is the distance from each centre-line point
    to the boundary polyline named by the lane's boundary segments, capped at
    :data:`MAX_LANE_HALF_WIDTH_M`; a side with no boundary takes the other side's value, and a
    lane with no boundaries at all keeps zeros (as in ScenarioNet's output);
  * summaries follow the shared real pickles (MetaDrive v0.3 layout): ``object_summary`` has one
    entry per track id plus a copy of the SDC's entry under the key ``"sdc"`` (first), and
    ``number_summary`` holds object / dynamic_object_states / map_features counts plus the sets
    ``object_types`` and ``dynamic_object_states_types`` (the latter includes ``None`` when some
    light has no state at some step). Note the sets: the pickles are not only dicts/lists.

The Waymo protos are imported inside the functions that need them, so importing this module is
cheap.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from sim_bridge.scenario import Scenario

# crc32c and waymo_open_dataset (optional `waymo` extra) are imported lazily, when files are read.

__all__ = ["TFRecordError", "iter_tfrecord", "write_tfrecord", "waymo_scenario_to_dict",
           "parse_scenario", "iter_waymo_scenarios", "scenario_filename"]

#: ``version`` written into every dict: the scenario-description layout the output follows.
SD_VERSION = "MetaDrive v0.3.0.1"
MPH_TO_KMH = 1.609344
#: Cap on a lane half width computed from its boundaries (m); larger means the boundary reference
#: does not describe that stretch of lane (e.g. a far-away road edge).
MAX_LANE_HALF_WIDTH_M = 10.0

AGENT_TYPES = {0: "UNSET", 1: "VEHICLE", 2: "PEDESTRIAN", 3: "CYCLIST", 4: "OTHER"}
LANE_TYPES = {0: "LANE_UNKNOWN", 1: "LANE_FREEWAY", 2: "LANE_SURFACE_STREET", 3: "LANE_BIKE_LANE"}
_LINE_NAMES = {1: "BROKEN_SINGLE_WHITE", 2: "SOLID_SINGLE_WHITE", 3: "SOLID_DOUBLE_WHITE",
               4: "BROKEN_SINGLE_YELLOW", 5: "BROKEN_DOUBLE_YELLOW", 6: "SOLID_SINGLE_YELLOW",
               7: "SOLID_DOUBLE_YELLOW", 8: "PASSING_DOUBLE_YELLOW"}
ROAD_LINE_TYPES = {0: "UNKNOWN_LINE", **{k: f"ROAD_LINE_{v}" for k, v in _LINE_NAMES.items()}}
#: ``boundary_type`` inside lane boundary dicts: ScenarioNet's names (UNKNOWN = not a painted line).
BOUNDARY_TYPES = {0: "UNKNOWN", **{k: f"ROAD_LINE_{v}" for k, v in _LINE_NAMES.items()}}
ROAD_EDGE_TYPES = {0: "UNKNOWN", 1: "ROAD_EDGE_BOUNDARY", 2: "ROAD_EDGE_MEDIAN"}
LANE_STATES = {0: "LANE_STATE_UNKNOWN", 1: "LANE_STATE_ARROW_STOP", 2: "LANE_STATE_ARROW_CAUTION",
               3: "LANE_STATE_ARROW_GO", 4: "LANE_STATE_STOP", 5: "LANE_STATE_CAUTION",
               6: "LANE_STATE_GO", 7: "LANE_STATE_FLASHING_STOP", 8: "LANE_STATE_FLASHING_CAUTION"}


# ---- TFRecord framing ----------------------------------------------------------------------
# Hand-written because TensorFlow is not installable here, and the `tfrecord` PyPI package
# (vahidk/tfrecord, tfrecord/reader.py at aa3a2e3) reads both CRC fields into a buffer but never
# checks them, so a corrupted record would reach the proto parser unnoticed. Frame layout:
#   uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A TFRecord frame is truncated or fails its CRC. Attributes: path, record_index, offset."""

    def __init__(self, path: Any, record_index: int, offset: int, problem: str):
        self.path, self.record_index, self.offset = str(path), record_index, offset
        super().__init__(f"{path}: record {record_index} at byte {offset}: {problem}")


def _masked_crc(data: bytes) -> int:
    import crc32c  # CRC-32C (Castagnoli)

    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _scan_records(path: str | Path) -> Iterator[tuple[int, int, bytes | TFRecordError]]:
    """Yield ``(index, offset, data)``, or ``(index, offset, TFRecordError)`` for a record whose
    data CRC fails (its length was verified, so the next frame is still found).

    Raises:
        OSError: the file cannot be opened.
        TFRecordError: framing is lost (truncation, length CRC mismatch, read error); nothing
            after it in the file can be trusted.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        index = offset = 0
        while True:
            try:
                header = f.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise TFRecordError(path, index, offset, f"truncated header ({len(header)} of 12 bytes)")
                (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
                if _masked_crc(header[:8]) != length_crc:
                    raise TFRecordError(path, index, offset, "length CRC mismatch (corrupt frame header)")
                if offset + 16 + length > size:
                    raise TFRecordError(path, index, offset, f"truncated record: needs {16 + length} bytes, "
                                                             f"{size - offset} left in the file")
                data, footer = f.read(length), f.read(4)
                if len(data) < length or len(footer) < 4:
                    raise TFRecordError(path, index, offset, "truncated record (short read)")
            except OSError as e:
                raise TFRecordError(path, index, offset, f"read failed: {e}") from e
            if _masked_crc(data) != struct.unpack("<I", footer)[0]:
                yield index, offset, TFRecordError(path, index, offset, "data CRC mismatch (corrupt record)")
            else:
                yield index, offset, data
            index, offset = index + 1, offset + 16 + length


def iter_tfrecord(path: str | Path) -> Iterator[bytes]:
    """Yield the payload of every record of an uncompressed TFRecord file, checking both CRCs.

    Args:
        path: the TFRecord file.

    Returns:
        An iterator of record payloads (bytes), in file order.

    Raises:
        TFRecordError: on a truncated record or a CRC mismatch; the message names the file, the
            record index and its byte offset. Records before it have already been yielded.
        OSError: the file cannot be opened.
    """
    for _, _, item in _scan_records(path):
        if isinstance(item, TFRecordError):
            raise item
        yield item


def write_tfrecord(path: str | Path, records: Iterable[bytes]) -> int:
    """Write ``records`` as an uncompressed TFRecord file (readable by TensorFlow).

    Args:
        path: destination file (overwritten).
        records: payloads, e.g. ``scenario.SerializeToString()``.

    Returns:
        The number of records written.
    """
    n = 0
    with open(path, "wb") as f:
        for data in records:
            data = bytes(data)
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", _masked_crc(header)) + data
                    + struct.pack("<I", _masked_crc(data)))
            n += 1
    return n


# ---- proto -> ScenarioNet dict -------------------------------------------------------------
def _enum(table: dict[int, str], value: int, where: str) -> str:
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{where}: unknown enum value {value}") from None


def _points(msg_points) -> np.ndarray:
    """Repeated MapPoint -> float32 [N, 3] (x, y, z) in m."""
    return np.array([(p.x, p.y, p.z) for p in msg_points], dtype=np.float32).reshape(-1, 3)


def _boundaries(segments, where: str) -> list[dict]:
    # ScenarioNet stores every field as str.
    return [{"lane_start_index": str(b.lane_start_index), "lane_end_index": str(b.lane_end_index),
             "boundary_type": _enum(BOUNDARY_TYPES, b.boundary_type, f"{where}[{i}].boundary_type"),
             "boundary_feature_id": str(b.boundary_feature_id)} for i, b in enumerate(segments)]


def _neighbors(neighbors, where: str) -> list[dict]:
    return [{"feature_id": str(n.feature_id), "self_start_index": str(n.self_start_index),
             "self_end_index": str(n.self_end_index), "neighbor_start_index": str(n.neighbor_start_index),
             "neighbor_end_index": str(n.neighbor_end_index),
             "boundaries": _boundaries(n.boundaries, f"{where}[{i}].boundaries")}
            for i, n in enumerate(neighbors)]


def _map_feature(f, where: str) -> dict | None:
    kind = f.WhichOneof("feature_data")
    if kind == "lane":
        ln = f.lane
        return {"speed_limit_mph": float(ln.speed_limit_mph),
                "speed_limit_kmh": float(ln.speed_limit_mph) * MPH_TO_KMH,
                "type": _enum(LANE_TYPES, ln.type, f"{where}.lane.type"),
                "polyline": _points(ln.polyline), "interpolating": bool(ln.interpolating),
                "entry_lanes": [int(x) for x in ln.entry_lanes], "exit_lanes": [int(x) for x in ln.exit_lanes],
                "left_boundaries": _boundaries(ln.left_boundaries, f"{where}.lane.left_boundaries"),
                "right_boundaries": _boundaries(ln.right_boundaries, f"{where}.lane.right_boundaries"),
                "left_neighbor": _neighbors(ln.left_neighbors, f"{where}.lane.left_neighbors"),
                "right_neighbor": _neighbors(ln.right_neighbors, f"{where}.lane.right_neighbors")}
    if kind == "road_line":
        return {"type": _enum(ROAD_LINE_TYPES, f.road_line.type, f"{where}.road_line.type"),
                "polyline": _points(f.road_line.polyline)}
    if kind == "road_edge":
        return {"type": _enum(ROAD_EDGE_TYPES, f.road_edge.type, f"{where}.road_edge.type"),
                "polyline": _points(f.road_edge.polyline)}
    if kind == "stop_sign":
        p = f.stop_sign.position
        return {"type": "STOP_SIGN", "lane": [int(x) for x in f.stop_sign.lane],
                "position": np.array([p.x, p.y, p.z], dtype=np.float32)}
    if kind in ("crosswalk", "speed_bump", "driveway"):
        return {"type": kind.upper(), "polygon": _points(getattr(f, kind).polygon)}
    return None  # no (or a newer, unknown) feature kind: nothing to convert


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Shortest 2D distance (m) from each of ``points`` [M, 2] to the polyline ``line`` [K, 2]."""
    if len(line) == 1:
        return np.linalg.norm(points - line[0], axis=1)
    a, ab = line[:-1], np.diff(line, axis=0)  # segments [K-1, 2]
    ab2 = np.maximum((ab * ab).sum(1), 1e-12)
    out = np.empty(len(points))
    for s in range(0, len(points), 256):  # bound memory to 256 x K
        p = points[s:s + 256, None, :] - a[None]  # [m, K-1, 2]
        t = np.clip((p * ab[None]).sum(-1) / ab2, 0.0, 1.0)
        out[s:s + 256] = np.linalg.norm(p - t[..., None] * ab[None], axis=-1).min(1)
    return out


def _half_width(center: np.ndarray, segments: list[dict], features: dict) -> np.ndarray:
    """Per centre-line point distance (m) to this side's boundaries; 0 where none applies."""
    n = len(center)
    out = np.zeros(n)
    for b in segments:
        feat = features.get(b["boundary_feature_id"])
        line = None if feat is None else feat.get("polyline")
        lo, hi = max(int(b["lane_start_index"]), 0), min(int(b["lane_end_index"]), n - 1)
        if line is None or len(line) == 0 or hi < lo:
            continue
        out[lo:hi + 1] = _distance_to_polyline(center[lo:hi + 1], line[:, :2].astype(np.float64))
    return np.minimum(out, MAX_LANE_HALF_WIDTH_M)


def _lane_width(lane: dict, features: dict) -> np.ndarray:
    """Lane ``width`` float32 [N, 2]: (left, right) half widths in m; see the module docstring."""
    center = lane["polyline"][:, :2].astype(np.float64)
    w = np.stack([_half_width(center, lane["left_boundaries"], features),
                  _half_width(center, lane["right_boundaries"], features)], axis=1)
    for side in (0, 1):
        missing = w[:, side] == 0
        w[missing, side] = w[missing, 1 - side]
    return w.astype(np.float32)


def _object_summary(track: dict, object_id: str) -> dict:
    valid = track["state"]["valid"]
    xy = track["state"]["position"][valid][:, :2].astype(np.float64)
    first_run = 0
    if valid.any():
        rest = valid[int(np.argmax(valid)):]
        first_run = int(np.argmin(rest)) if not rest.all() else len(rest)
    return {"type": track["type"], "object_id": object_id, "track_length": int(len(valid)),
            "distance": float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()),
            "valid_length": int(valid.sum()), "continuous_valid_length": first_run}


def parse_scenario(data: bytes):
    """Parse one record payload into a ``scenario_pb2.Scenario`` (raises ``DecodeError``)."""
    from waymo_open_dataset.protos import scenario_pb2

    proto = scenario_pb2.Scenario()
    proto.ParseFromString(data)
    return proto


def waymo_scenario_to_dict(proto, source_file: str) -> dict:
    """Convert one Waymo ``Scenario`` proto into a ScenarioNet scenario dict.

    Args:
        proto: a ``waymo_open_dataset.protos.scenario_pb2.Scenario``.
        source_file: name of the TFRecord it came from (e.g. ``training.tfrecord-00000-of-01000``),
            stored as ``metadata["source_file"]`` and used by :func:`scenario_filename`.

    Returns:
        A dict with keys id, version, length, tracks, dynamic_map_states, map_features, metadata,
        laid out like ScenarioNet's Waymo pickles: T = ``len(timestamps_seconds)`` steps at 10 Hz;
        per track ``state`` arrays position float32 [T, 3] (m, world frame), length/width/height
        [T] (m), heading [T] (rad), velocity [T, 2] (m/s), valid bool [T]; lanes/lines/edges with
        ``polyline`` float32 [N, 3] (m); crosswalks/speed bumps/driveways with ``polygon``; traffic
        lights keyed by controlled lane id with per-step LANE_STATE_* names (None when unlogged).

    Raises:
        ValueError: the proto is malformed; the message names the field (e.g. ``tracks``,
            ``sdc_track_index``, ``tracks[3].states``).
    """
    sid = proto.scenario_id
    if not sid:
        raise ValueError("scenario_id: empty")
    T = len(proto.timestamps_seconds)
    if T == 0:
        raise ValueError("timestamps_seconds: empty")
    if len(proto.tracks) == 0:
        raise ValueError("tracks: the scenario has no tracks")
    if not 0 <= proto.sdc_track_index < len(proto.tracks):
        raise ValueError(f"sdc_track_index: {proto.sdc_track_index} out of range for {len(proto.tracks)} tracks")
    if not 0 <= proto.current_time_index < T:
        raise ValueError(f"current_time_index: {proto.current_time_index} out of range for {T} steps")
    if len(proto.dynamic_map_states) > T:
        raise ValueError(f"dynamic_map_states: {len(proto.dynamic_map_states)} steps but {T} timestamps")

    tracks: dict[str, dict] = {}
    for i, tr in enumerate(proto.tracks):
        oid = str(tr.id)
        if oid in tracks:
            raise ValueError(f"tracks[{i}].id: duplicate track id {oid}")
        if len(tr.states) != T:
            raise ValueError(f"tracks[{i}].states: {len(tr.states)} states but {T} timestamps")
        typ = _enum(AGENT_TYPES, tr.object_type, f"tracks[{i}].object_type")
        raw = np.array([(s.center_x, s.center_y, s.center_z, s.length, s.width, s.height, s.heading,
                         s.velocity_x, s.velocity_y) for s in tr.states], dtype=np.float64).reshape(T, 9)
        valid = np.array([s.valid for s in tr.states], dtype=bool).reshape(T)
        raw[~valid] = 0.0  # Waymo writes -1 into invalid steps; keep `valid` the only mask
        raw = raw.astype(np.float32)
        tracks[oid] = {
            "type": typ,
            "state": {"position": raw[:, 0:3].copy(), "length": raw[:, 3].copy(), "width": raw[:, 4].copy(),
                      "height": raw[:, 5].copy(), "heading": raw[:, 6].copy(), "velocity": raw[:, 7:9].copy(),
                      "valid": valid},
            "metadata": {"track_length": T, "type": typ, "object_id": oid, "dataset": "waymo"}}
    track_ids = list(tracks)
    sdc_id = track_ids[proto.sdc_track_index]

    lights: dict[str, dict] = {}
    for t, step in enumerate(proto.dynamic_map_states):
        for j, ls in enumerate(step.lane_states):
            key = str(ls.lane)
            if key not in lights:
                lights[key] = {"type": "TRAFFIC_LIGHT", "state": {"object_state": [None] * T}, "lane": int(ls.lane),
                               "stop_point": np.zeros(3, dtype=np.float32),
                               "metadata": {"track_length": T, "type": "TRAFFIC_LIGHT", "object_id": key,
                                            "dataset": "waymo"}}
            light = lights[key]
            light["state"]["object_state"][t] = _enum(
                LANE_STATES, ls.state, f"dynamic_map_states[{t}].lane_states[{j}].state")
            sp = ls.stop_point  # the latest logged stop point wins, as in ScenarioNet
            light["stop_point"] = np.array([sp.x, sp.y, sp.z], dtype=np.float32)

    features: dict[str, dict] = {}
    for i, f in enumerate(proto.map_features):
        fid = str(f.id)
        if fid in features:
            raise ValueError(f"map_features[{i}].id: duplicate feature id {fid}")
        feat = _map_feature(f, f"map_features[{i}]")
        if feat is not None:
            features[fid] = feat
    for feat in features.values():
        if feat["type"].startswith("LANE_"):
            feat["width"] = _lane_width(feat, features)

    for x in proto.objects_of_interest:
        if str(x) not in tracks:
            raise ValueError(f"objects_of_interest: {x} is not a track id")
    to_predict = {}
    for k, rp in enumerate(proto.tracks_to_predict):
        if not 0 <= rp.track_index < len(track_ids):
            raise ValueError(f"tracks_to_predict[{k}].track_index: {rp.track_index} out of range")
        oid = track_ids[rp.track_index]
        to_predict[oid] = {"track_index": int(rp.track_index), "track_id": oid,
                           "difficulty": int(rp.difficulty), "object_type": tracks[oid]["type"]}

    # Summaries as in the shared real pickles: an extra copy of the SDC's entry first, keyed "sdc".
    object_summary = {"sdc": _object_summary(tracks[sdc_id], sdc_id)}
    object_summary.update({k: _object_summary(v, k) for k, v in tracks.items()})
    number_summary = {
        "object": len(tracks), "dynamic_object_states": len(lights), "map_features": len(features),
        "object_types": {v["type"] for v in tracks.values()},
        "dynamic_object_states_types": {s for v in lights.values() for s in v["state"]["object_state"]}}
    metadata = {
        "coordinate": "waymo", "ts": np.asarray(proto.timestamps_seconds, dtype=np.float32),
        "metadrive_processed": False, "sdc_id": sdc_id, "dataset": "waymo", "scenario_id": sid,
        "source_file": source_file, "track_length": T, "current_time_index": int(proto.current_time_index),
        "sdc_track_index": int(proto.sdc_track_index),
        "objects_of_interest": [str(x) for x in proto.objects_of_interest],
        "tracks_to_predict": to_predict, "object_summary": object_summary, "number_summary": number_summary}
    return {"id": sid, "version": SD_VERSION, "length": T, "tracks": tracks, "dynamic_map_states": lights,
            "map_features": features, "metadata": metadata}


def iter_waymo_scenarios(paths: Iterable[str | Path],
                         repair: bool = True) -> Iterator[tuple[str, Scenario | Exception]]:
    """Convert every record of every file; report failures as items and keep going.

    Args:
        paths: WOMD TFRecord files.
        repair: drop lanes with fewer than 2 points (real logs hold some; recorded in
            ``metadata["bevgen_repairs"]``) instead of reporting the record as bad.

    Returns:
        An iterator of ``(item, result)``: ``item`` is ``f"{file.name}#{record_index}"`` (just
        ``file.name`` when the file cannot be opened); ``result`` is the validated :class:`Scenario`
        (its ``to_dict()`` is :func:`waymo_scenario_to_dict`'s dict, bit for bit, unless repaired), or the
        exception for that item: :class:`TFRecordError` (truncation/CRC), a protobuf
        ``DecodeError``, ``ValueError`` (malformed scenario; ``ScenarioError`` when it breaks the contract)
        or ``OSError``. A record whose data CRC fails is skipped on its own; after a framing error
        (truncation, corrupt length) the rest of that file is skipped, and the next file is read.
    """
    for path in map(Path, paths):
        try:
            for index, _, item in _scan_records(path):
                name = f"{path.name}#{index}"
                if isinstance(item, Exception):
                    yield name, item
                    continue
                try:
                    result = Scenario.from_dict(waymo_scenario_to_dict(parse_scenario(item), path.name), src=name,
                                                repair=repair)
                except Exception as e:  # noqa: BLE001 -- reported per item, never lost
                    result = e
                yield name, result
        except TFRecordError as e:
            yield f"{path.name}#{e.record_index}", e
        except OSError as e:
            yield path.name, e


def scenario_filename(d: Scenario | Mapping) -> str:
    """ScenarioNet's file name for a converted scenario (a Scenario or its dict):
    ``sd_{source_file}_{scenario_id}.pkl``.

    Raises:
        ValueError: source_file or scenario_id is empty or contains a path separator.
    """
    md = d.metadata if isinstance(d, Scenario) else d["metadata"]
    parts = [str(md.get("source_file", "")), str(md.get("scenario_id", ""))]
    for field, value in zip(("metadata.source_file", "metadata.scenario_id"), parts):
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"{field}: {value!r} cannot be part of a file name")
    return f"sd_{parts[0]}_{parts[1]}.pkl"
