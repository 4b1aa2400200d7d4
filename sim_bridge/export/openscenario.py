"""Scenario -> OpenSCENARIO 1.0 (.xosc) + OpenDRIVE 1.7 (.xodr), written with ``scenariogeneration``.

Road network (``<stem>.xodr``): :mod:`sim_bridge.export.opendrive`, one road per lane with junctions
where lane connectivity branches.

Scenario (``<stem>.xosc``): every agent is an entity: the ego (``metadata.sdc_id``) is named
``ego``; the others keep their id (made XML-safe, prefixed ``agent_`` when it starts with a digit).
Vehicles and cyclists are ``Vehicle`` (car/bicycle), pedestrians ``Pedestrian``, anything else
(cones, barriers) ``MiscObject``; each has one bounding box (median size over valid steps, m). The
Init teleports each entity to its first valid pose; one event per entity starts at t = 0 with a
``FollowTrajectoryAction``: a ``Polyline`` through every valid step (``WorldPosition`` x, y in m,
h in rad; time in s, absolute timing, following mode ``position``). The storyboard stops at the
last step's time. OpenSCENARIO 1.0 has no visibility action, so an agent that appears late waits at
its first pose and one that leaves stays at its last; heights (z) are not written (flat roads).

``scenariogeneration`` is imported inside the functions that use it: it is an optional extra
(``bevgen[export]``) and slow to import.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sim_bridge.export.common import ExportResult, count_note, file_stem
from sim_bridge.export.opendrive import build_opendrive
from sim_bridge.scenario import STEP_SECONDS, Scenario

# scenariogeneration (optional `export` extra) is imported lazily, when a file is built.

__all__ = ["build_openscenario", "export_openscenario", "read_xosc_trajectories"]

_DEFAULT_SIZE = {"VEHICLE": (4.5, 2.0, 1.6), "CYCLIST": (1.8, 0.6, 1.7), "PEDESTRIAN": (0.6, 0.6, 1.8)}


# ---- OpenSCENARIO -------------------------------------------------------------------------------
def _entity_names(sc: Scenario) -> dict[str, str]:
    """Agent id -> unique XML-safe entity name; the ego is ``ego``."""
    names, used = {}, {"ego"}
    for aid in sc.tracks.ids:
        if aid == sc.sdc_id:
            names[aid] = "ego"
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", aid)
        base = f"agent_{base}" if not base or not base[0].isalpha() else base
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[aid] = name
    return names


def _size(sc: Scenario, i: int) -> tuple[float, float, float]:
    """(length, width, height) in m: median over valid steps, type default where unknown."""
    v = sc.tracks.valid[i]
    med = np.median(sc.tracks.size[i][v], axis=0) if v.any() else np.zeros(3)
    default = _DEFAULT_SIZE.get(sc.tracks.types[i], (1.0, 1.0, 1.0))
    return tuple(float(m) if m > 0.05 else d for m, d in zip(med, default))


def _entity(xosc, name: str, typ: str, size: tuple[float, float, float]):
    length, width, height = size
    box = xosc.BoundingBox(width, length, height, 0.0, 0.0, height / 2)
    if typ == "PEDESTRIAN":
        return xosc.Pedestrian(name, 75.0, xosc.PedestrianCategory.pedestrian, box, model="pedestrian")
    if typ in ("VEHICLE", "CYCLIST"):
        cat = xosc.VehicleCategory.bicycle if typ == "CYCLIST" else (
            xosc.VehicleCategory.truck if length > 7.5 else xosc.VehicleCategory.car)
        wheel = min(0.7, height / 2)
        front = xosc.Axle(0.5, wheel, width * 0.8, length * 0.3, wheel / 2)
        rear = xosc.Axle(0.0, wheel, width * 0.8, -length * 0.3, wheel / 2)
        return xosc.Vehicle(name, cat, box, front, rear, 70.0, 10.0, 10.0)
    return xosc.MiscObject(name, 10.0, xosc.MiscObjectCategory.obstacle, box)


def _trajectory(xosc, sc: Scenario, i: int, name: str):
    """Polyline through every valid step of agent ``i``: time s, x/y m, h rad (world frame)."""
    tr = sc.tracks
    steps = np.flatnonzero(tr.valid[i])
    times = steps * STEP_SECONDS
    if len(steps) == 1:  # a Polyline needs two vertices: hold the only pose for one step
        steps, times = np.r_[steps, steps], np.r_[times, times + STEP_SECONDS]
    pos = [xosc.WorldPosition(float(x), float(y), h=float(h))
           for (x, y), h in zip(tr.xy[i, steps].tolist(), tr.heading[i, steps].tolist())]
    traj = xosc.Trajectory(f"{name}_trajectory", False)
    traj.add_shape(xosc.Polyline([round(float(t), 6) for t in times], pos))
    return traj


def build_openscenario(sc: Scenario, xodr_file: str, name: str) -> tuple[Any, dict[str, str]]:
    """OpenSCENARIO 1.0 replay of every agent of ``sc`` on the road network ``xodr_file``.

    Args:
        sc: the scenario.
        xodr_file: the OpenDRIVE path as written into ``RoadNetwork/LogicFile`` (relative to the .xosc).
        name: scenario description in the file header.

    Returns:
        (``scenariogeneration.xosc.Scenario``, agent id -> entity name).
    """
    from scenariogeneration import xosc  # optional extra, slow import: imported on use

    names = _entity_names(sc)
    entities, init = xosc.Entities(), xosc.Init()
    act = xosc.Act("replay", xosc.ValueTrigger("replay_start", 0, xosc.ConditionEdge.none,
                                               xosc.SimulationTimeCondition(0, xosc.Rule.greaterThan)))
    tr = sc.tracks
    for i, aid in enumerate(tr.ids):
        if not tr.valid[i].any():
            continue
        ent = names[aid]
        entities.add_scenario_object(ent, _entity(xosc, ent, tr.types[i], _size(sc, i)))
        first = int(np.argmax(tr.valid[i]))
        init.add_init_action(ent, xosc.TeleportAction(xosc.WorldPosition(
            float(tr.xy[i, first, 0]), float(tr.xy[i, first, 1]), h=float(tr.heading[i, first]))))
        action = xosc.FollowTrajectoryAction(_trajectory(xosc, sc, i, ent), xosc.FollowingMode.position,
                                             xosc.ReferenceContext.absolute, 1, 0)
        event = xosc.Event(f"{ent}_follow", xosc.Priority.overwrite)
        event.add_action(f"{ent}_follow_trajectory", action)
        event.add_trigger(xosc.ValueTrigger(f"{ent}_start", 0, xosc.ConditionEdge.none,
                                            xosc.SimulationTimeCondition(0, xosc.Rule.greaterThan)))
        man = xosc.Maneuver(f"{ent}_maneuver")
        man.add_event(event)
        group = xosc.ManeuverGroup(f"{ent}_group")
        group.add_actor(ent)
        group.add_maneuver(man)
        act.add_maneuver_group(group)
    story = xosc.Story("replay_story")
    story.add_act(act)
    end = xosc.ValueTrigger("end", 0, xosc.ConditionEdge.none,
                            xosc.SimulationTimeCondition((sc.length - 1) * STEP_SECONDS, xosc.Rule.greaterThan), "stop")
    board = xosc.StoryBoard(init, end)
    board.add_story(story)
    scenario = xosc.Scenario(name, "bevgen", xosc.ParameterDeclarations(), entities, board,
                             xosc.RoadNetwork(roadfile=xodr_file), xosc.Catalog(), osc_minor_version=0)
    return scenario, {aid: names[aid] for i, aid in enumerate(tr.ids) if tr.valid[i].any()}


def _write(element: ET.Element, path: Path) -> None:
    """Indented UTF-8 XML with declaration (ElementTree's indent: ~10x faster than a minidom round trip)."""
    tree = ET.ElementTree(element)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def export_openscenario(sc: Scenario, out_dir: str | Path, stem: str | None = None) -> ExportResult:
    """Write ``out_dir/<stem>.xodr`` and ``out_dir/<stem>.xosc`` (which names the .xodr relatively).

    Returns:
        The :class:`ExportResult`; ``id_maps["entities"]`` maps agent ids to entity names and
        ``id_maps["roads"]`` lane feature ids to their road ids in driving order (one, or two for a
        lane cut in two at a junction).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(stem or sc.id)
    odr, roads, notes = build_opendrive(sc, stem)
    xodr_path, xosc_path = out / f"{stem}.xodr", out / f"{stem}.xosc"
    _write(odr.get_element(), xodr_path)
    scenario, names = build_openscenario(sc, xodr_path.name, f"{sc.id} ({sc.dataset}), exported by bevgen")
    _write(scenario.get_element(), xosc_path)
    other = Counter(f.type for f in sc.map_features.values() if not f.is_lane)
    notes.update({f"{t} map features (not in the road network)": n for t, n in other.items()})
    notes["agents never valid"] += int((~sc.tracks.valid.any(1)).sum())
    if sc.traffic_lights:
        notes["traffic lights"] += len(sc.traffic_lights)
    return ExportResult("openscenario", files=[xodr_path, xosc_path], dropped=count_note(+notes, "dropped"),
                        id_maps={"entities": names, "roads": roads})


def read_xosc_trajectories(path: str | Path) -> dict[str, np.ndarray]:
    """Read back the trajectories of an exported .xosc (plain XML, no scenariogeneration).

    Returns:
        entity name -> float64 [N, 4] vertices (time s, x m, y m, heading rad).
    """
    root = ET.parse(path).getroot()
    out = {}
    for group in root.iter("ManeuverGroup"):
        actor = group.find("Actors/EntityRef").get("entityRef")
        rows = [(float(v.get("time")), float(p.get("x")), float(p.get("y")), float(p.get("h", 0)))
                for v in group.iter("Vertex") for p in v.iter("WorldPosition")]
        out[actor] = np.array(rows, np.float64).reshape(-1, 4)
    return out
