"""The scenario contract: typed view, round trips, safe loading and every bad input named in the issue."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError, safe_load, safe_loads
from sim_bridge.dataset import DatasetWriter, ScenarioDataset, merge_datasets, write_index
from sim_bridge.scenario import Scenario, ScenarioError, load_scenario, load_scenario_dict, save_scenario
from sim_bridge.sources.convert import iter_scenarionet_dir, write_items
from tests.conftest import write_straight_road_scenarios


# ---- typed view and round trip ------------------------------------------------------------------
def test_typed_view_of_synthetic_scenario(road_dict):
    sc = Scenario.from_dict(road_dict, src="road.pkl")
    assert sc.length == 50 and sc.num_agents == 4 and sc.sdc_id == "ego"
    tr = sc.tracks
    ego = tr.index("ego")
    assert tr.position.shape == (4, 50, 3) and tr.valid.dtype == bool
    np.testing.assert_allclose(tr.speed[ego], 10.0)
    np.testing.assert_allclose(np.diff(tr.xy[ego, :, 0]), 1.0)  # 10 m/s at 10 Hz
    assert tr.valid[tr.index("bike")].sum() == 40
    assert sc.map_features["lane_right"].is_lane and sc.map_features["lane_right"].speed_limit_kmh == 50.0
    assert sc.traffic_lights["lane_right"].states[0] == "LANE_STATE_GO"
    assert sc.map_category_counts() == {"lane": 2, "road_line": 1, "road_edge": 2, "crosswalk": 1}


def test_round_trip_through_file(tmp_path, road_dict):
    sc = Scenario.from_dict(road_dict)
    path = save_scenario(sc, tmp_path / "sd_road.pkl")
    back = load_scenario(path)
    for name in ("position", "heading", "velocity", "size", "valid"):
        np.testing.assert_allclose(getattr(back.tracks, name), getattr(sc.tracks, name), atol=1e-4)
    assert back.tracks.ids == sc.tracks.ids and back.tracks.types == sc.tracks.types
    np.testing.assert_array_equal(back.map_features["crosswalk"].polygon, sc.map_features["crosswalk"].polygon)
    assert back.map_features["lane_left"].extras["speed_limit_kmh"] == 50.0
    assert not list(tmp_path.glob("*.tmp")), "atomic write leaves no temp files"


def test_real_scenarios_load_and_round_trip(real_dir, tmp_path):
    ds = ScenarioDataset(real_dir, repair=True)
    assert len(ds) == 7
    for name in ds.names:
        sc = ds.load(name)
        assert sc.sdc_id in sc.tracks.ids and sc.length in (91, 191, 196, 201)
        again = Scenario.from_dict(sc.to_dict(), src=name)
        np.testing.assert_allclose(again.tracks.position, sc.tracks.position, atol=1e-3)
        assert again.map_counts() == sc.map_counts()


def test_every_real_scenario_round_trips_bit_identically(real_dir, tmp_path):
    """from_dict -> to_dict -> file -> load gives back the source dict exactly: dtypes, shapes, containers,
    key order (nuScenes pickles hold float64 (T, 1) sizes and float valid masks, Waymo ones float32)."""
    from sim_bridge.scenario_encoding import identical

    for p in sorted(real_dir.glob("sd_*.pkl")):
        d = load_scenario_dict(p)
        repair = "8a346109094cd5aa" in p.name  # holds a 1-point lane: only a repaired load validates
        sc = Scenario.from_dict(d, src=p.name, repair=repair)
        back = sc.to_dict()
        if repair:  # the repair is the only difference: the dropped lanes and the recorded repair
            d = {**d, "metadata": {**d["metadata"], "bevgen_repairs": sc.metadata["bevgen_repairs"]},
                 "map_features": {k: v for k, v in d["map_features"].items() if str(k) in sc.map_features}}
        assert identical(back, d), p.name
        again = load_scenario_dict(save_scenario(sc, tmp_path / p.name))
        assert identical(again, d), p.name


def test_procedural_and_synthetic_scenarios_round_trip_bit_identically(procedural_dir, road_dict):
    from sim_bridge.scenario_encoding import identical

    ds = ScenarioDataset(procedural_dir)
    dicts = [load_scenario_dict(ds.path_of(n)) for n in ds.names]
    for d in [*dicts, road_dict]:
        assert identical(Scenario.from_dict(d).to_dict(), d)


def test_edited_scenario_keeps_source_dtypes(real_dir):
    """An edit through the typed view is written in the source's own dtypes and shapes."""
    import dataclasses

    d = load_scenario_dict(real_dir / "sd_nuscenes_v1.0-mini_scene-0916.pkl")
    sc = Scenario.from_dict(d)
    moved = dataclasses.replace(sc.tracks, position=sc.tracks.position + 1.0)
    out = dataclasses.replace(sc, tracks=moved).to_dict()
    aid = next(iter(d["tracks"]))
    for key in ("position", "length", "valid"):
        src, new = d["tracks"][aid]["state"][key], out["tracks"][aid]["state"][key]
        assert new.dtype == src.dtype and new.shape == src.shape
    np.testing.assert_allclose(out["tracks"][aid]["state"]["position"], d["tracks"][aid]["state"]["position"] + 1.0)


# ---- safe loading ---------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "sd_evil.pkl"
    bad.write_bytes(pickle.dumps({"id": "x", "payload": _Evil(marker)}))
    with pytest.raises(UnsafePickleError) as e:
        load_scenario(bad)
    msg = str(e.value)
    assert str(bad) in msg and "system" in msg and "nothing from this file was executed" in msg
    assert not marker.exists(), "the os.system payload must not have run"


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",                 # builtins.eval via GLOBAL
    b"cbuiltins\ngetattr\n(cbuiltins\nint\nS'real'\ntR.",  # getattr gadget
    b"csubprocess\ncall\n(S'true'\ntR.",
])
def test_foreign_globals_refused(payload):
    with pytest.raises(UnsafePickleError, match="refused to load"):
        safe_loads(payload, "x.pkl")


def test_numpy_and_builtins_allowed_for_both_protocols():
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": {1, 2}, "t": (1, "x"), "f": np.float64(2.5)}
    for proto in (2, 4, 5):
        back = safe_loads(pickle.dumps(obj, protocol=proto))
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["s"] == {1, 2} and back["t"] == (1, "x") and back["f"] == 2.5


def test_truncated_file(tmp_path, road_dict):
    path = tmp_path / "sd_cut.pkl"
    data = pickle.dumps(road_dict)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"sd_cut\.pkl: file is truncated"):
        load_scenario(path)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty.pkl: file is empty"):
        safe_load(tmp_path / "empty.pkl")


# ---- malformed content: each names the file and the field -----------------------------------------
def _check(d, match):
    with pytest.raises(ScenarioError, match=match) as e:
        Scenario.from_dict(d, src="sd_bad.pkl")
    assert str(e.value).startswith("sd_bad.pkl: ")
    return e.value


def test_missing_keys(road_dict):
    del road_dict["tracks"]
    _check(road_dict, r"tracks: missing required key")


def test_missing_nested_key(road_dict):
    del road_dict["tracks"]["lead"]["state"]["heading"]
    err = _check(road_dict, r"tracks\['lead'\]\.state\.heading: missing required key")
    assert err.field == "tracks['lead'].state.heading"


def test_missing_sdc_id(road_dict):
    del road_dict["metadata"]["sdc_id"]
    _check(road_dict, r"metadata\.sdc_id: missing required key")


def test_array_length_disagrees_with_length(road_dict):
    road_dict["tracks"]["walker"]["state"]["position"] = road_dict["tracks"]["walker"]["state"]["position"][:-3]
    _check(road_dict, r"tracks\['walker'\]\.state\.position: shape \(47, 3\) disagrees with scenario length 50")


def test_velocity_length_disagrees(road_dict):
    road_dict["tracks"]["lead"]["state"]["velocity"] = np.zeros((51, 2))
    _check(road_dict, r"tracks\['lead'\]\.state\.velocity: shape \(51, 2\) disagrees with scenario length 50")


def test_nan_positions(road_dict):
    road_dict["tracks"]["lead"]["state"]["position"][7, 0] = np.nan
    road_dict["tracks"]["lead"]["state"]["position"][9, 1] = np.inf
    _check(road_dict, r"tracks\['lead'\]\.state\.position: 2 NaN/inf values at valid steps \(first at step 7\)")


def test_nan_at_invalid_step_is_ignored(road_dict):
    road_dict["tracks"]["bike"]["state"]["position"][3] = np.nan  # bike invalid before step 10
    Scenario.from_dict(road_dict)


def test_lane_with_fewer_than_two_points(road_dict):
    road_dict["map_features"]["lane_left"]["polyline"] = road_dict["map_features"]["lane_left"]["polyline"][:1]
    _check(road_dict, r"map_features\['lane_left'\]\.polyline: a lane needs at least 2 points, got 1")
    repaired = Scenario.from_dict(road_dict, repair=True)
    assert "lane_left" not in repaired.map_features and "lane_right" in repaired.map_features
    assert "dropped 1 lane" in repaired.metadata["bevgen_repairs"][0]


def test_non_numeric_array(road_dict):
    road_dict["tracks"]["lead"]["state"]["heading"] = ["north"] * 50
    _check(road_dict, r"tracks\['lead'\]\.state\.heading: not a numeric array")


def test_traffic_light_length(road_dict):
    road_dict["dynamic_map_states"]["lane_right"]["state"]["object_state"] = ["LANE_STATE_GO"] * 10
    _check(road_dict, r"dynamic_map_states\['lane_right'\]\.state\.object_state: 10 entries disagree")


def test_not_a_dict(tmp_path):
    path = tmp_path / "sd_list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ScenarioError, match=r"sd_list\.pkl: <root>: expected a scenario dict, got list"):
        load_scenario(path)


# ---- dataset directories --------------------------------------------------------------------------
def test_empty_dataset_directory(tmp_path):
    with pytest.raises(ScenarioError, match="empty dataset directory"):
        ScenarioDataset(tmp_path)


def test_summary_names_missing_files(tmp_path, road_dict):
    save_scenario(road_dict, tmp_path / "sd_a.pkl")
    write_index(tmp_path, {"sd_a.pkl": {}, "sd_gone.pkl": {}, "sd_also_gone.pkl": {}})
    with pytest.raises(ScenarioError, match=r"dataset_summary\.pkl: <summary>: names 2 missing scenario file\(s\): "
                                            r"sd_gone\.pkl, sd_also_gone\.pkl"):
        ScenarioDataset(tmp_path)


def test_malicious_summary_refused(tmp_path, road_dict):
    save_scenario(road_dict, tmp_path / "sd_a.pkl")
    marker = tmp_path / "pwned"
    (tmp_path / "dataset_summary.pkl").write_bytes(pickle.dumps({"sd_a.pkl": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="dataset_summary.pkl"):
        ScenarioDataset(tmp_path)
    assert not marker.exists()


def test_writer_keeps_good_items_and_reports_bad(tmp_path, road_dict_factory):
    bad_len = road_dict_factory()
    bad_len["tracks"]["lead"]["state"]["heading"] = np.zeros(3)
    items = [("good-1", road_dict_factory()), ("broken-record", ValueError("CRC mismatch")),
             ("bad-length", bad_len), ("good-2", road_dict_factory(ego_speed=5.0))]
    names = {"good-1": "sd_1.pkl", "bad-length": "sd_y.pkl", "good-2": "sd_2.pkl"}
    report = write_items(items, tmp_path, lambda n, d: names[n])
    assert report.written == ["sd_1.pkl", "sd_2.pkl"]
    assert [n for n, _ in report.failed] == ["broken-record", "bad-length"]
    assert "CRC mismatch" in report.failed[0][1] and "state.heading: shape (3,)" in report.failed[1][1]
    ds = ScenarioDataset(tmp_path)
    assert ds.names == ["sd_1.pkl", "sd_2.pkl"]
    np.testing.assert_allclose(ds.load("sd_2.pkl").tracks.speed[0], 5.0)
    import json

    on_disk = json.loads((tmp_path / "conversion_report.json").read_text())
    assert on_disk["written"] == ["sd_1.pkl", "sd_2.pkl"] and on_disk["reused"] == []
    assert [(f["item"], f["error"]) for f in on_disk["failed"]] == [tuple(f) for f in report.failed]


def test_writer_resumes(tmp_path, road_dict_factory):
    write_items([("a", road_dict_factory())], tmp_path, lambda n, d: "sd_a.pkl")
    report = write_items([("a", road_dict_factory()), ("b", road_dict_factory())], tmp_path,
                         lambda n, d: f"sd_{n}.pkl")
    assert report.reused == ["sd_a.pkl"] and report.written == ["sd_b.pkl"]
    assert ScenarioDataset(tmp_path).names == ["sd_a.pkl", "sd_b.pkl"]


def test_writer_refuses_path_traversal(tmp_path, road_dict):
    with DatasetWriter(tmp_path) as w:
        assert not w.add_or_fail("x", "../escape.pkl", road_dict)
    assert not (tmp_path.parent / "escape.pkl").exists()


def test_convert_directory_with_bad_files_keeps_good_ones(tmp_path, real_dir, road_dict):
    """Copy the real set, break two files, re-convert: every bad file reported, every good one kept."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(real_dir, src)
    names = ScenarioDataset(src).names
    (src / names[0]).write_bytes((src / names[0]).read_bytes()[:1000])          # truncated
    (src / names[1]).write_bytes(pickle.dumps({"x": _Evil(tmp_path / "pwned")}))  # malicious
    report = write_items(iter_scenarionet_dir(src), tmp_path / "out", lambda n, d: n)
    assert sorted(n for n, _ in report.failed) == sorted(names[:2])
    assert "truncated" in dict(report.failed)[names[0]] and "refused" in dict(report.failed)[names[1]]
    assert sorted(report.written) == sorted(names[2:])
    assert [n for n, _ in report.repaired] == ["sd_training.tfrecord-00000-of-01000_8a346109094cd5aa.pkl"]
    assert len(ScenarioDataset(tmp_path / "out")) == 5
    assert not (tmp_path / "pwned").exists()


def test_a_merged_scenario_index_survives_moving_its_folder(tmp_path):
    work = tmp_path / "work"
    a = write_straight_road_scenarios(work / "a", [(0.0, 8.0), (0.3, 6.0)])
    b = write_straight_road_scenarios(work / "b", [(0.1, 9.0)])            # road0.pkl again: indexed through a link
    before = ScenarioDataset(merge_datasets([a, b], work / "merged"))
    assert len(before) == 3 and any((work / "merged").iterdir())
    ids = [sc.id for sc in before]
    shutil.move(work, tmp_path / "moved")
    after = ScenarioDataset(tmp_path / "moved" / "merged")
    assert [sc.id for sc in after] == ids
    linked = after.names[-1]
    assert linked.startswith("sd_b__") and (tmp_path / "moved" / "merged" / linked).is_symlink()
    assert after.load(linked).tracks.speed[0, 0] == pytest.approx(9.0, abs=1e-6)
