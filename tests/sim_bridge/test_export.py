"""Tests for sim_bridge.export (Waymo TFRecord, OpenSCENARIO + OpenDRIVE) and `bevgen scenarios export`.

Round trips go through our own readers: the Waymo export is read back by sim_bridge.sources.waymo,
the .xosc by plain xml.etree. The ASAM checkers run where installed (bevgen[export]).
"""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim_bridge.export import EXPORTERS, get_exporter, register_exporter
from sim_bridge.export.waymo import export_waymo, read_waymo_export, round_trip_errors, scenario_to_proto
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import STEP_SECONDS, Scenario, save_scenario
from sim_bridge.sources.waymo import TFRecordError, iter_tfrecord
from tests.conftest import make_straight_road_scenario, make_varied_road_scenario

pytest.importorskip("waymo_open_dataset.protos.scenario_pb2", reason="Waymo protos: installed by `make install`")
REAL_NUSCENES = "sd_nuscenes_v1.0-mini_scene-0916.pkl"
REAL_WAYMO = "sd_training.tfrecord-00000-of-01000_2a1e44d405a6833f.pkl"
F32 = dict(position_m=2e-4, heading_rad=1e-6, velocity_mps=1e-5, size_m=1e-5, map_points_m=2e-4, speed_limit_kmh=1e-6)


def _synthetic() -> list[Scenario]:
    return [Scenario.from_dict(make_straight_road_scenario()), Scenario.from_dict(make_varied_road_scenario(3))]


def _assert_round_trip(sc: Scenario, out: Path) -> dict:
    res = export_waymo(sc, out, sc.id)
    back, err = _assert_waymo_file(sc, res.files[0], res.id_maps)
    return {"result": res, "restored": back, "errors": err}


def _assert_waymo_file(sc: Scenario, record: Path, id_maps: dict) -> tuple[Scenario, dict]:
    """Read ``record`` back and check it against ``sc`` (float32 tolerances, nothing missing)."""
    (back,) = read_waymo_export(record)
    err = round_trip_errors(sc, back, id_maps)
    for key, tol in F32.items():
        assert err[key] <= tol, (sc.id, key, err[key])
    for key in ("missing_tracks", "valid", "types", "missing_features", "lane_links", "light_states"):
        assert err[key] == 0, (sc.id, key, err)
    tmap = id_maps.get("tracks", {})
    assert back.sdc_id == str(tmap.get(sc.sdc_id, sc.sdc_id))
    assert back.length == sc.length and back.id == sc.id
    want_ts = np.asarray(sc.metadata.get("ts", np.arange(sc.length) * STEP_SECONDS))
    np.testing.assert_allclose(back.metadata["ts"], want_ts, atol=1e-6)
    return back, err


# ---- Waymo --------------------------------------------------------------------------------------
def test_waymo_round_trip_synthetic_renumbers_ids_and_keeps_lights(tmp_path):
    for sc in _synthetic():
        r = _assert_round_trip(sc, tmp_path)
        res, back = r["result"], r["restored"]
        # string ids ("ego", "lane_right") are renumbered, and the mapping is written beside the record
        assert set(res.id_maps) == {"tracks", "map_features"}
        assert json.loads(res.files[1].read_text())["tracks"]["ego"] == res.id_maps["tracks"]["ego"]
        lane = str(res.id_maps["map_features"]["lane_right"])
        assert back.traffic_lights[lane].states == sc.traffic_lights["lane_right"].states
        assert back.map_features[lane].speed_limit_kmh == pytest.approx(50.0)
        assert back.metadata["current_time_index"] == 10
        # no tracks_to_predict in the source: nearest road users with a future, never the ego
        chosen = {back.tracks.ids[v["track_index"]] for v in back.metadata["tracks_to_predict"].values()}
        assert chosen and str(res.id_maps["tracks"]["ego"]) not in chosen
        crosswalk = back.map_features[str(res.id_maps["map_features"]["crosswalk"])]
        np.testing.assert_allclose(crosswalk.polygon[:, :2], sc.map_features["crosswalk"].polygon, atol=1e-9)


def test_waymo_records_are_framed_with_masked_crc32c(tmp_path):
    import crc32c

    res = export_waymo(_synthetic()[0], tmp_path, "s")
    raw = res.files[0].read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    crc = crc32c.crc32c(raw[12:12 + n])
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert struct.unpack("<I", raw[12 + n:16 + n])[0] == masked and len(raw) == 16 + n
    flipped = bytearray(raw)
    flipped[40] ^= 0xFF
    (tmp_path / "bad.tfrecord").write_bytes(bytes(flipped))
    with pytest.raises(TFRecordError, match="CRC"):
        list(iter_tfrecord(tmp_path / "bad.tfrecord"))


def test_waymo_round_trip_real_scenarios(real_dir, tmp_path):
    ds = ScenarioDataset(real_dir, repair=True)
    assert len(ds) == 7
    for name in ds.names:
        sc = ds.load(name)
        r = _assert_round_trip(sc, tmp_path)
        back, res = r["restored"], r["result"]
        if sc.dataset == "waymo":  # Waymo ids and prediction metadata survive unchanged, exactly
            assert not res.id_maps and r["errors"]["position_m"] == 0.0
            assert back.metadata["tracks_to_predict"].keys() == sc.metadata["tracks_to_predict"].keys()
            assert back.metadata["objects_of_interest"] == sc.metadata["objects_of_interest"]
            assert back.metadata["current_time_index"] == sc.metadata["current_time_index"]
            assert back.map_counts() == sc.map_counts() and len(back.traffic_lights) == len(sc.traffic_lights)
        else:  # nuScenes: cones and barriers become OTHER, lane polygons and the yaw column are dropped
            assert "nuScenes lane yaw columns (written as z = 0) dropped or changed" in " ".join(res.dropped)
            others = sum(t not in ("VEHICLE", "PEDESTRIAN", "CYCLIST") for t in sc.tracks.types)
            assert back.agent_counts().get("OTHER", 0) == others


@pytest.mark.metadrive
def test_waymo_and_openscenario_on_procedural(procedural_dir, tmp_path):
    from sim_bridge.export.asam_qc import check_file, checkers_available
    from sim_bridge.export.openscenario import export_openscenario

    ds = ScenarioDataset(procedural_dir)
    for name in ds.names:
        sc = ds.load(name)
        _assert_round_trip(sc, tmp_path)
        res = export_openscenario(sc, tmp_path, name)
        _assert_vertices(sc, res)
        assert "<successor" in res.files[0].read_text()  # lane continuations become road links
        if checkers_available() is None:  # MetaDrive's intersections branch: junctions must pass too
            for path in res.files:
                rep = check_file(path)
                assert rep.errors == 0 and rep.warnings == 0, (path.name, rep.issues[:5])


def test_proto_fields_for_other_simulators():
    sc = _synthetic()[0]
    proto, res = scenario_to_proto(sc)
    assert proto.sdc_track_index == sc.ego_index and proto.current_time_index == 10
    assert len(proto.dynamic_map_states) == sc.length
    walker = proto.tracks[sc.tracks.index("walker")]
    assert walker.object_type == 2 and len(walker.states) == sc.length
    bike = proto.tracks[sc.tracks.index("bike")]
    assert not bike.states[0].valid and bike.states[0].center_x == -1  # WOMD's filler
    lanes = [f for f in proto.map_features if f.WhichOneof("feature_data") == "lane"]
    assert {f.lane.type for f in lanes} == {2} and all(len(f.lane.polyline) == 126 for f in lanes)


# ---- OpenSCENARIO / OpenDRIVE ---------------------------------------------------------------------
def _xosc_vertices(path: Path) -> dict[str, np.ndarray]:
    """entity -> [N, 3] (time, x, y), read with plain ElementTree."""
    root = ET.parse(path).getroot()
    assert root.find("FileHeader").get("revMinor") == "0"
    out = {}
    for group in root.iter("ManeuverGroup"):
        actor = group.find("Actors/EntityRef").get("entityRef")
        out[actor] = np.array([(float(v.get("time")), float(v.find("Position/WorldPosition").get("x")),
                                float(v.find("Position/WorldPosition").get("y")))
                               for v in group.iter("Vertex")])
    return out


def _assert_vertices(sc: Scenario, res) -> None:
    _assert_xosc(sc, res.id_maps["entities"], res.files[1])


def _assert_xosc(sc: Scenario, names: dict[str, str], xosc: Path) -> None:
    """Every valid step of every agent of ``sc`` is a vertex (time, x, y) of its entity in ``xosc``."""
    assert names[sc.sdc_id] == "ego"
    got = _xosc_vertices(xosc)
    assert set(got) == set(names.values())
    for i, aid in enumerate(sc.tracks.ids):
        steps = np.flatnonzero(sc.tracks.valid[i])
        if not len(steps):
            continue
        v = got[names[aid]]
        assert len(v) == max(len(steps), 2)
        np.testing.assert_allclose(v[:len(steps), 0], steps * STEP_SECONDS, atol=1e-6)
        assert np.abs(v[:len(steps), 1:] - sc.tracks.xy[i, steps]).max() < 0.1


def test_openscenario_recovers_every_vertex_and_road_per_lane(tmp_path):
    from sim_bridge.export.openscenario import export_openscenario

    sc = _synthetic()[0]
    res = export_openscenario(sc, tmp_path, "straight")
    _assert_vertices(sc, res)
    xodr = ET.parse(res.files[0]).getroot()
    roads = xodr.findall("road")
    assert len(roads) == 2 and {r.get("name") for r in roads} == {"lane_right", "lane_left"}
    width = float(roads[0].find("lanes/laneSection/right/lane/width").get("a"))
    assert width == pytest.approx(3.5)
    xosc = ET.parse(res.files[1]).getroot()
    assert xosc.find("RoadNetwork/LogicFile").get("filepath") == "straight.xodr"
    assert xosc.find("FileHeader").get("description").startswith("straight_road")
    kinds = {o.get("name"): o[0].tag for o in xosc.iter("ScenarioObject")}
    assert kinds == {"ego": "Vehicle", "lead": "Vehicle", "walker": "Pedestrian", "bike": "Vehicle"}


def test_openscenario_real_scenarios(real_dir, tmp_path):
    from sim_bridge.export.openscenario import export_openscenario

    ds = ScenarioDataset(real_dir, repair=True)
    for name in (REAL_NUSCENES, REAL_WAYMO):
        sc = ds.load(name)
        res = export_openscenario(sc, tmp_path, name)
        _assert_vertices(sc, res)
        n_lanes = sum(f.is_lane for f in sc.map_features.values())
        roads = ET.parse(res.files[0]).getroot().findall("road")
        assert len({r.get("name") for r in roads}) == len(res.id_maps["roads"]) == n_lanes  # every lane is a road
        assert len(roads) == sum(len(ids) for ids in res.id_maps["roads"].values())  # (two for a lane cut in two)


def _road_link(road: ET.Element, tag: str) -> tuple | None:
    el = road.find(f"link/{tag}")
    return None if el is None else (el.get("elementType"), int(el.get("elementId")), el.get("contactPoint"))


def _xodr_link(roads: dict, connections: dict, p: int, q: int) -> str | None:
    """How road ``p``'s end leads to road ``q``'s start in an .xodr: "road" (successor/predecessor),
    "junction" (p incoming to the junction of connecting road q, with a connection) or None."""
    rp, rq = roads[p], roads[q]
    if _road_link(rp, "successor") == ("road", q, "start"):
        pred = _road_link(rq, "predecessor")
        # regular -> regular, or a connecting road -> the road it leads to (whose predecessor is the junction)
        assert pred in (("road", p, "end"), ("junction", int(rp.get("junction")), None)), (p, q, pred)
        return "road"
    if rq.get("junction") != "-1" and _road_link(rp, "successor") == ("junction", int(rq.get("junction")), None):
        assert _road_link(rq, "predecessor") == ("road", p, "end") and rp.get("junction") == "-1"
        conn = connections.get((p, q))
        assert conn is not None and conn.get("contactPoint") == "start", (p, q)
        assert [(ll.get("from"), ll.get("to")) for ll in conn.findall("laneLink")] == [("-1", "-1")]
        return "junction"
    return None


def test_opendrive_junctions_carry_every_lane_link(real_dir, tmp_path):
    """Waymo lanes branch (one lane with several exits, several entries into one): those links go
    through OpenDRIVE junctions; every exit/entry link between lanes is a road link or a junction
    connection, each road of a lane leads to the next one, and the ASAM checker finds no error."""
    from sim_bridge.export.openscenario import export_openscenario

    check_file = _checker()
    ds = ScenarioDataset(real_dir, repair=True)
    for name in (REAL_WAYMO, "sd_training.tfrecord-00000-of-01000_8a346109094cd5aa.pkl"):
        sc = ds.load(name)
        res = export_openscenario(sc, tmp_path, name)
        root = ET.parse(res.files[0]).getroot()
        roads = {int(r.get("id")): r for r in root.findall("road")}
        junctions = root.findall("junction")
        assert junctions
        connections = {(int(c.get("incomingRoad")), int(c.get("connectingRoad"))): c
                       for j in junctions for c in j.findall("connection")}
        assert len(connections) == sum(len(j.findall("connection")) for j in junctions)
        in_junction = {i for i, r in roads.items() if r.get("junction") != "-1"}
        assert sorted(c[1] for c in connections) == sorted(in_junction)  # one connection per connecting road
        for j in junctions:  # connecting roads belong to the junction, incoming roads link to it
            jid = int(j.get("id"))
            for c in j.findall("connection"):
                incoming, connecting = roads[int(c.get("incomingRoad"))], roads[int(c.get("connectingRoad"))]
                assert connecting.get("junction") == j.get("id") and incoming.get("junction") == "-1"
                tag = "successor" if c.get("contactPoint") == "start" else "predecessor"
                assert _road_link(incoming, tag) == ("junction", jid, None)
        lane_roads = res.id_maps["roads"]
        pairs = set()
        for fid in lane_roads:
            f = sc.map_features[fid]
            pairs |= {(fid, str(x)) for x in f.extras.get("exit_lanes") or () if str(x) in lane_roads}
            pairs |= {(str(x), fid) for x in f.extras.get("entry_lanes") or () if str(x) in lane_roads}
        pairs = {(a, b) for a, b in pairs if a != b}
        kinds = {(a, b): _xodr_link(roads, connections, lane_roads[a][-1], lane_roads[b][0]) for a, b in pairs}
        assert None not in kinds.values(), [k for k, v in kinds.items() if v is None][:5]
        counts = {k: list(kinds.values()).count(k) for k in ("road", "junction")}
        assert counts["junction"] >= 30 and counts["road"] >= 30, counts
        for fid, ids in lane_roads.items():  # a lane cut in two: the halves are linked
            assert all(_xodr_link(roads, connections, p, q) for p, q in zip(ids, ids[1:])), fid
        rep = check_file(res.files[0])
        assert rep.errors == 0 and rep.warnings == 0, (name, rep.issues[:5])


def _checker():
    from sim_bridge.export.asam_qc import checkers_available, check_file

    why = checkers_available()
    if why:
        pytest.skip(why)
    return check_file


def test_asam_checkers_report_no_errors(real_dir, tmp_path):
    from sim_bridge.export.openscenario import export_openscenario

    check_file = _checker()
    scenarios = [_synthetic()[0], ScenarioDataset(real_dir, repair=True).load(REAL_WAYMO)]
    for sc in scenarios:
        res = export_openscenario(sc, tmp_path, sc.id)
        for path in res.files:
            rep = check_file(path)
            assert rep.errors == 0 and rep.warnings == 0, (path.name, rep.issues[:5])
            assert not any("schema" in n for n in rep.not_run), rep.not_run  # the schema check did run


def test_asam_checker_catches_a_broken_file(tmp_path):
    from sim_bridge.export.openscenario import export_openscenario

    check_file = _checker()
    res = export_openscenario(_synthetic()[0], tmp_path, "s")
    text = res.files[1].read_text().replace("<Storyboard>", "<Storyboard><Bogus/>")
    bad = tmp_path / "broken.xosc"
    bad.write_text(text)
    assert check_file(bad).errors >= 1
    xodr = res.files[0].read_text().replace('a="3.5"', 'a="oops"', 1)
    (tmp_path / "broken.xodr").write_text(xodr)
    assert check_file(tmp_path / "broken.xodr").errors >= 1


def test_registry_rejects_duplicates_and_unknown_names():
    assert set(EXPORTERS) >= {"waymo", "openscenario", "commonroad"}
    with pytest.raises(ValueError, match="already registered"):
        register_exporter("waymo", export_waymo)
    with pytest.raises(KeyError, match="known: commonroad, openscenario, waymo"):
        get_exporter("carla")


# ---- CommonRoad ---------------------------------------------------------------------------------
def test_commonroad_read_back_by_commonroad_io(real_dir, tmp_path):
    """commonroad-io reads the .xml back: one lanelet per lane (links kept), one obstacle per agent,
    every valid step at its time step (4 written decimals), gaps filled by interpolation."""
    pytest.importorskip("commonroad", reason="commonroad-io: bevgen[export]")
    from sim_bridge.export.commonroad import export_commonroad, read_commonroad

    for sc in (_synthetic()[0], ScenarioDataset(real_dir, repair=True).load(REAL_WAYMO)):
        res = export_commonroad(sc, tmp_path, sc.id)
        cr, problems = read_commonroad(res.files[0])
        assert cr.dt == pytest.approx(STEP_SECONDS) and not problems.planning_problem_dict
        lanelets, obstacles = res.id_maps["lanelets"], res.id_maps["obstacles"]
        assert len(cr.lanelet_network.lanelets) == len(lanelets) == sum(f.is_lane for f in sc.map_features.values())
        for fid, lid in lanelets.items():
            want = {lanelets[str(x)] for x in sc.map_features[fid].extras.get("exit_lanes") or () if str(x) in lanelets}
            assert set(cr.lanelet_network.find_lanelet_by_id(lid).successor) == want
        assert len(cr.dynamic_obstacles) == len(obstacles) == int(sc.tracks.valid.any(1).sum())
        for aid, oid in obstacles.items():
            i, ob = sc.tracks.index(aid), cr.obstacle_by_id(oid)
            states = [ob.initial_state] + (ob.prediction.trajectory.state_list if ob.prediction else [])
            got = {s.time_step: s.position for s in states}
            steps = np.flatnonzero(sc.tracks.valid[i])
            assert sorted(got) == list(range(steps[0], steps[-1] + 1))
            err = max(np.abs(got[t] - sc.tracks.xy[i, t]).max() for t in steps)
            assert err < 2e-4, (aid, err)
            want = {"VEHICLE": ("CAR", "TRUCK"), "PEDESTRIAN": ("PEDESTRIAN",), "CYCLIST": ("BICYCLE",)}
            assert ob.obstacle_type.name in want.get(sc.tracks.types[i], ("UNKNOWN",))
        assert any("traffic lights dropped" in d for d in res.dropped)


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_reports_bad_file_and_exports_good_ones(tmp_path):
    from bevgen.export_cli import register

    data = tmp_path / "data"
    save_scenario(make_straight_road_scenario(), data / "a.pkl")
    save_scenario(make_varied_road_scenario(1), data / "b.pkl")
    (data / "corrupt.pkl").write_bytes(b"\x80\x04not a pickle")
    unsafe = data / "unsafe.pkl"
    unsafe.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")  # would call os.system under pickle.load
    invalid = make_straight_road_scenario()
    del invalid["metadata"]["sdc_id"]
    (data / "invalid.pkl").write_bytes(__import__("pickle").dumps(invalid))
    app, scenarios = typer.Typer(), typer.Typer()
    app.add_typer(scenarios, name="scenarios")
    register(scenarios)
    out = tmp_path / "out"
    files = [str(data / n) for n in ("a.pkl", "corrupt.pkl", "unsafe.pkl", "invalid.pkl", "b.pkl")]
    r = CliRunner().invoke(app, ["scenarios", "export", *files, "--format", "waymo", "--format", "openscenario",
                                 "--out", str(out)])
    assert r.exit_code == 1, r.output
    report = json.loads((out / "export_report.json").read_text())
    assert sorted(Path(f["file"]).name for f in report["failed"]) == ["corrupt.pkl", "invalid.pkl", "unsafe.pkl"]
    assert "sdc_id" in next(f["error"] for f in report["failed"] if f["file"].endswith("invalid.pkl"))
    assert [e["scenario"] for e in report["exported"]] == ["straight_road", "road01"]
    for stem in ("a", "b"):
        assert read_waymo_export(out / "waymo" / f"{stem}.tfrecord")[0].num_agents >= 4
        assert (out / "openscenario" / f"{stem}.xosc").is_file() and (out / "openscenario" / f"{stem}.xodr").is_file()
    flat = "".join(r.output.split())  # rich wraps long paths at the console width
    assert "corrupt.pkl" in flat and "unsafe.pkl" in flat
    r = CliRunner().invoke(app, ["scenarios", "export", files[0], "--format", "carla", "--out", str(out)])
    assert r.exit_code == 2 and "unknown --format carla" in r.output
    r = CliRunner().invoke(app, ["scenarios", "export", files[0], "-f", "waymo", "--out", str(tmp_path / "ok")])
    assert r.exit_code == 0, r.output


# ---- the traffic model's augmented output -------------------------------------------------------
def test_cli_exports_traffic_augmented_scenarios(real_dir, tmp_path):
    """A tiny traffic model (3 steps) inserts vehicles into one real nuScenes and one real Waymo scene;
    `bevgen scenarios export` writes both formats and every inserted vehicle survives each."""
    pytest.importorskip("torch")
    import shutil

    from bevgen.export_cli import register
    from sim_bridge.export.openscenario import _entity_names
    from traffic.generate import GenerateConfig, augment
    from traffic.train import TrafficTrainConfig, train

    src = tmp_path / "real"
    src.mkdir()
    for name in (REAL_NUSCENES, REAL_WAYMO):
        shutil.copy(Path(real_dir) / name, src / name)
    run = tmp_path / "run"
    train(TrafficTrainConfig(data=(str(src),), steps=3, batch_size=2, start_frames=(0,), checkpoint_every=3,
                             seed=0, device="cpu"), run, progress=False)
    report, stats = augment(src, run, tmp_path / "aug", GenerateConfig(density=1.5, batch_size=2))
    assert not report.failed and stats["placed"] > 0, stats

    app, scenarios = typer.Typer(), typer.Typer()
    app.add_typer(scenarios, name="scenarios")
    register(scenarios)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["scenarios", "export", str(tmp_path / "aug"), "-f", "waymo", "-f", "openscenario",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    exported = json.loads((out / "export_report.json").read_text())["exported"]
    assert len(exported) == 2

    ds, inserted = ScenarioDataset(tmp_path / "aug"), 0
    for name in ds.names:
        sc = ds.load(name)
        new = [aid for aid in sc.tracks.ids if aid.startswith("bevgen_vehicle_")]
        inserted += len(new)
        stem = name.removesuffix(".pkl")
        # Waymo: the augmented ids are not integers, so every track is renumbered and the map written beside
        ids = out / "waymo" / f"{stem}.ids.json"
        assert ids.is_file() or not new
        id_maps = json.loads(ids.read_text()) if ids.is_file() else {}
        back, _ = _assert_waymo_file(sc, out / "waymo" / f"{stem}.tfrecord", id_maps)
        for aid in new:
            i, j = sc.tracks.index(aid), back.tracks.index(str(id_maps["tracks"][aid]))
            assert back.tracks.types[j] == "VEHICLE"
            np.testing.assert_array_equal(back.tracks.valid[j], sc.tracks.valid[i])
        # OpenSCENARIO: every vertex of every agent, inserted vehicles included, as Vehicle entities
        names = _entity_names(sc)
        xosc = out / "openscenario" / f"{stem}.xosc"
        _assert_xosc(sc, names, xosc)
        kinds = {o.get("name"): o[0].tag for o in ET.parse(xosc).getroot().iter("ScenarioObject")}
        assert all(kinds[names[aid]] == "Vehicle" for aid in new)
    assert inserted == stats["placed"]

    from sim_bridge.export.asam_qc import check_file, checkers_available

    if checkers_available() is None:  # the inserted vehicles only change the .xosc; the maps are checked above
        for name in ds.names:
            rep = check_file(out / "openscenario" / f"{name.removesuffix('.pkl')}.xosc")
            assert rep.errors == 0 and rep.warnings == 0, (name, rep.issues[:5])
