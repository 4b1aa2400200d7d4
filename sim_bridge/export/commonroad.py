"""Scenario -> CommonRoad XML (``<stem>.xml``), written and read with ``commonroad-io``.

Lanelet network: one lanelet per lane of the scenario. Its centre vertices are the lane centre line
simplified like the OpenDRIVE export (Douglas-Peucker, 5 cm); the left and right bounds are offset
by half the lane width (:func:`sim_bridge.export.opendrive.lane_width`) along the vertex
normals. Successors/predecessors are the lane's exit/entry lanes (splits and merges included,
since CommonRoad allows several); left/right neighbours are not written (CommonRoad requires
adjacent lanelets to share a bound, which logged lanes do not). Speed limits, road lines, edges,
crosswalks and traffic lights are not written.

Obstacles: every agent valid at least once becomes a ``DynamicObstacle`` (the ego too: the planning
problem set is left empty). Types: vehicles ``CAR`` (``TRUCK`` above 7.5 m), cyclists ``BICYCLE``,
pedestrians ``PEDESTRIAN``, anything else ``UNKNOWN``; one ``Rectangle`` shape (median length and
width over valid steps). The initial state is the first valid step; the ``TrajectoryPrediction``
holds every later step up to the last valid one (position m, orientation rad, speed m/s,
``time_step`` = 0.1 s steps, the scenario's ``dt``). CommonRoad trajectories have no gaps:
invalid steps between the first and last valid one are filled by linear interpolation (counted in
``dropped``). Obstacle ids are 1..n in track order after the lanelets' ids; the mapping is in
``ExportResult.id_maps``. ``commonroad-io`` writes 4 decimals (0.1 mm).
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from sim_bridge.export.common import ExportResult, count_note, file_stem
from sim_bridge.export.opendrive import lane_centres, lane_width
from sim_bridge.export.openscenario import _DEFAULT_SIZE
from sim_bridge.scenario import STEP_SECONDS, Scenario

# commonroad (optional `export` extra) is imported lazily, when a file is built or read.

__all__ = ["export_commonroad", "read_commonroad"]


def _import():
    try:
        import commonroad  # noqa: F401
    except ImportError as e:
        raise ImportError("the CommonRoad export needs commonroad-io: pip install 'bevgen[export]'") from e


def _bounds(center: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) bounds [M, 2] offset by width / 2 along the vertex normals of ``center``."""
    seg = np.diff(center, axis=0)
    seg /= np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-9)
    tan = np.vstack([seg[:1], seg[:-1] + seg[1:], seg[-1:]])
    tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-tan[:, 1], tan[:, 0]], 1)
    return center + normal * width / 2, center - normal * width / 2


def _links(f, key: str, ids: dict[str, int]) -> list[int]:
    out = []
    for x in f.extras.get(key) or ():
        ref = str(x["feature_id"] if isinstance(x, dict) else x)
        if ref in ids and ids[ref] not in out:
            out.append(ids[ref])
    return out


def _obstacle_type(ObstacleType, typ: str, length: float):
    if typ == "VEHICLE":
        return ObstacleType.TRUCK if length > 7.5 else ObstacleType.CAR
    return {"CYCLIST": ObstacleType.BICYCLE, "PEDESTRIAN": ObstacleType.PEDESTRIAN}.get(typ, ObstacleType.UNKNOWN)


def build_commonroad(sc: Scenario, notes: Counter):
    """(commonroad ``Scenario``, lane id -> lanelet id, agent id -> obstacle id)."""
    from commonroad.geometry.shape import Rectangle
    from commonroad.prediction.prediction import TrajectoryPrediction
    from commonroad.scenario.lanelet import Lanelet
    from commonroad.scenario.obstacle import DynamicObstacle, ObstacleType
    from commonroad.scenario.scenario import Scenario as CRScenario
    from commonroad.scenario.scenario import ScenarioID
    from commonroad.scenario.trajectory import State, Trajectory

    cr = CRScenario(STEP_SECONDS, ScenarioID(country_id="ZAM", map_name="bevgen", map_id=1))
    lanes = lane_centres(sc, notes)
    lane_ids = {fid: i + 1 for i, fid in enumerate(lanes)}
    for fid, center in lanes.items():
        f = sc.map_features[fid]
        left, right = _bounds(center, lane_width(f))
        cr.add_objects(Lanelet(left, center, right, lane_ids[fid], predecessor=_links(f, "entry_lanes", lane_ids),
                               successor=_links(f, "exit_lanes", lane_ids)))
    tr, obstacle_ids, next_id = sc.tracks, {}, len(lane_ids) + 1
    speed = np.linalg.norm(tr.velocity, axis=-1)
    for i, aid in enumerate(tr.ids):
        steps = np.flatnonzero(tr.valid[i])
        if not len(steps):
            notes["agents never valid"] += 1
            continue
        span = np.arange(steps[0], steps[-1] + 1)
        notes["filled"] += len(span) - len(steps)
        x, y = (np.interp(span, steps, tr.xy[i, steps, k]) for k in (0, 1))
        head = np.interp(span, steps, np.unwrap(tr.heading[i, steps]))
        v = np.interp(span, steps, speed[i, steps])
        med = np.median(tr.size[i][tr.valid[i]], axis=0)
        default = _DEFAULT_SIZE.get(tr.types[i], (1.0, 1.0, 1.0))
        length, width = (float(m) if m > 0.05 else d for m, d in zip(med[:2], default[:2]))
        shape = Rectangle(length, width)
        states = [State(position=np.array([x[k], y[k]]), orientation=float(head[k]), velocity=float(v[k]),
                      time_step=int(span[k])) for k in range(len(span))]
        init = states[0]
        init.yaw_rate, init.slip_angle = 0.0, 0.0  # required by CommonRoad's initial states
        pred = TrajectoryPrediction(Trajectory(int(span[1]), states[1:]), shape) if len(states) > 1 else None
        cr.add_objects(DynamicObstacle(next_id, _obstacle_type(ObstacleType, tr.types[i], length), shape, init, pred))
        obstacle_ids[aid], next_id = next_id, next_id + 1
    return cr, lane_ids, obstacle_ids


def export_commonroad(sc: Scenario, out_dir: str | Path, stem: str | None = None) -> ExportResult:
    """Write ``out_dir/<stem>.xml`` (CommonRoad 2020a format, as commonroad-io 2022.1 writes it).

    Returns:
        The :class:`ExportResult`; ``id_maps["lanelets"]`` maps lane feature ids and
        ``id_maps["obstacles"]`` agent ids to CommonRoad ids.
    """
    _import()

    from commonroad.common.file_writer import CommonRoadFileWriter, OverwriteExistingFile
    from commonroad.planning.planning_problem import PlanningProblemSet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{file_stem(stem or sc.id)}.xml"
    notes: Counter = Counter()
    cr, lanes, obstacles = build_commonroad(sc, notes)
    with warnings.catch_warnings():  # "Lanelet N has no lanelet type! Default lanelet type is used!"
        warnings.simplefilter("ignore", UserWarning)
        CommonRoadFileWriter(cr, PlanningProblemSet(), "bevgen", "bevgen", f"{sc.dataset}: {sc.id}", set()) \
            .write_to_file(str(path), OverwriteExistingFile.ALWAYS)
    other = Counter(f.type for f in sc.map_features.values() if not f.is_lane)
    notes.update({f"{t} map features (not in the lanelet network)": n for t, n in other.items()})
    if sc.traffic_lights:
        notes["traffic lights"] += len(sc.traffic_lights)
    filled = notes.pop("filled", 0)
    dropped = count_note(+notes, "dropped") + ([f"{filled} invalid steps inside tracks filled by linear "
                                                "interpolation"] if filled else [])
    return ExportResult("commonroad", files=[path], dropped=dropped,
                        id_maps={"lanelets": lanes, "obstacles": obstacles})


def read_commonroad(path: str | Path):
    """(commonroad ``Scenario``, ``PlanningProblemSet``) read back with commonroad-io."""
    _import()
    from commonroad.common.file_reader import CommonRoadFileReader

    return CommonRoadFileReader(str(path)).open()
