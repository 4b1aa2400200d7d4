"""Typed edits of a Scenario (sim_bridge.scenario_edit) and every source's output as a Scenario: added tracks
are written with the contract's keys and dtypes, everything untouched is written bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sim_bridge.dataset import DatasetWriter
from sim_bridge.scenario import Scenario, ScenarioError, load_scenario, load_scenario_dict
from sim_bridge.scenario_edit import Track
from sim_bridge.scenario_encoding import CORE_STATE_KEYS, identical

WAYMO = "sd_training.tfrecord-00000-of-01000_2a1e44d405a6833f.pkl"  # float32 states, bool valid
NUSC = "sd_nuscenes_v1.0-mini_scene-0916.pkl"                       # float64, (T, 1) sizes, float valid


def _without(d: dict, *ids: str) -> dict:
    return {**d, "tracks": {k: v for k, v in d["tracks"].items() if k not in ids}}


def _car(T: int, dtype=np.float32, y: float = 0.0) -> Track:
    xy = np.stack([np.linspace(0.0, 10.0, T), np.full(T, y)], -1)
    return Track.from_arrays("VEHICLE", xy, np.zeros(T), np.tile([10.0, 0.0], (T, 1)), length=4.5, width=1.9,
                             height=1.6, metadata={"type": "VEHICLE", "generated_by": "test"}, dtype=dtype)


def test_track_from_arrays_fills_the_state():
    t = _car(7)
    assert t.position.shape == (7, 3) and not t.position[:, 2].any() and t.valid.all() and t.valid.dtype == bool
    np.testing.assert_array_equal(t.size, np.tile([4.5, 1.9, 1.6], (7, 1)))
    assert t.dtype == "<f4" and t.num_steps == 7
    with pytest.raises(ScenarioError, match="state.velocity"):
        Track.from_arrays("VEHICLE", np.zeros((7, 3)), np.zeros(7), np.zeros((6, 2)))


@pytest.mark.parametrize("name", [WAYMO, NUSC])
def test_added_track_has_contract_dtypes_and_the_rest_stays_bit_identical(real_dir, tmp_path, name):
    d = load_scenario_dict(real_dir / name)
    sc = Scenario.from_dict(d, src=name)
    out = sc.with_tracks({"new_0": _car(sc.length), "new_1": _car(sc.length, np.float64, y=5.0)})
    assert out.tracks.ids[-2:] == ("new_0", "new_1") and out.num_agents == sc.num_agents + 2
    w = out.validate().to_dict()
    assert identical(_without(w, "new_0", "new_1"), d), "logged agents, map, lights and metadata untouched"
    assert identical(sc.to_dict(), d), "edits return a new Scenario; the source one is unchanged"
    T = sc.length
    for aid, dt in (("new_0", np.float32), ("new_1", np.float64)):
        t = w["tracks"][aid]
        assert list(t) == ["type", "state", "metadata"] and list(t["state"]) == list(CORE_STATE_KEYS)
        shapes = {"position": (T, 3), "heading": (T,), "velocity": (T, 2), "valid": (T,), "length": (T,),
                  "width": (T,), "height": (T,)}
        for k, v in t["state"].items():
            assert v.shape == shapes[k] and v.dtype == (bool if k == "valid" else dt), (aid, k)
        assert t["metadata"] == {"type": "VEHICLE", "generated_by": "test", "track_length": T, "object_id": aid}
    # the typed view holds what a reader of the written file gets (float32-rounded for new_0)
    back = load_scenario(DatasetWriter(tmp_path).add(name, out))
    np.testing.assert_array_equal(back.tracks.position, out.tracks.position)
    np.testing.assert_array_equal(back.tracks.size, out.tracks.size)


def test_extend_keeps_logged_steps_and_source_storage(real_dir):
    d = load_scenario_dict(real_dir / NUSC)
    sc = Scenario.from_dict(d)
    tr, T = sc.tracks, sc.length
    i = next(i for i in range(sc.num_agents) if tr.valid[i].sum() > 2 and not tr.valid[i, -1]
             and np.flatnonzero(tr.valid[i])[-1] < T - 5)
    aid, e = tr.ids[i], int(np.flatnonzero(tr.valid[i])[-1])
    xy = tr.xy[i, e] + np.arange(1, T - e)[:, None] * np.array([0.5, 0.0])
    out = sc.with_tracks({aid: sc.track(aid).extended(e + 1, xy, np.zeros(T - e - 1))})
    assert out.tracks.ids == tr.ids, "a replaced agent keeps its place"
    w = out.to_dict()
    assert identical(_without(w, aid), _without(d, aid))
    src, mine = d["tracks"][aid], w["tracks"][aid]
    assert list(mine) == list(src) and list(mine["state"]) == list(src["state"])
    logged = src["state"]["valid"].astype(bool)
    for k, v in src["state"].items():
        assert mine["state"][k].dtype == v.dtype and mine["state"][k].shape == v.shape, k
        np.testing.assert_array_equal(mine["state"][k][logged], v[logged])
    assert (mine["state"]["valid"][e + 1:] == 1.0).all() and mine["metadata"]["bevgen_extended_from"] == e + 1
    np.testing.assert_allclose(mine["state"]["velocity"][e + 2:], np.tile([5.0, 0.0], (T - e - 2, 1)))
    held = np.repeat(src["state"]["length"][e:e + 1], T - e - 1, 0)  # (T, 1) sizes: the last logged one held
    np.testing.assert_array_equal(mine["state"]["length"][e + 1:], held)
    again = Scenario.from_dict(w)
    for k in ("position", "heading", "velocity", "size", "valid"):
        np.testing.assert_array_equal(getattr(again.tracks, k), getattr(out.tracks, k))
    with pytest.raises(ValueError, match="extend from step"):
        sc.track(aid).extended(e + 1, xy[:-1], np.zeros(T - e - 2))


def test_keep_tracks_and_wrong_length(real_dir):
    d = load_scenario_dict(real_dir / WAYMO)
    sc = Scenario.from_dict(d)
    ego = sc.keep_tracks([sc.sdc_id])
    assert ego.tracks.ids == (sc.sdc_id,) and ego.tracks.position.shape == (1, sc.length, 3)
    w = ego.to_dict()
    assert identical(w["tracks"], {sc.sdc_id: d["tracks"][sc.sdc_id]})
    with pytest.raises(KeyError, match="nope"):
        sc.keep_tracks(["nope"])
    with pytest.raises(ScenarioError, match=r"tracks\['x'\]"):
        sc.with_tracks({"x": _car(sc.length - 1)})


def test_track_of_a_loaded_agent_reports_its_storage(real_dir):
    sc = load_scenario(real_dir / WAYMO)
    t = sc.track(sc.sdc_id)
    assert t.dtype == "<f4" and t.source is not None and t.type == "VEHICLE"
    np.testing.assert_array_equal(t.position, sc.tracks.position[sc.ego_index])
    assert load_scenario(real_dir / NUSC).track("ego").dtype == "<f8"


def test_writer_reports_repairs_made_when_reading(real_dir, tmp_path):
    name = "sd_training.tfrecord-00000-of-01000_8a346109094cd5aa.pkl"
    sc = load_scenario(real_dir / name, repair=True)
    assert sc.source.repairs and "fewer than 2 points" in sc.source.repairs[0]
    with DatasetWriter(tmp_path) as w:
        w.add(name, sc.with_tracks({"new": _car(sc.length)}))
    assert [n for n, _ in w.report.repaired] == [name]
    again = load_scenario(tmp_path / name)  # the repaired file validates without repair
    assert "new" in again.tracks.ids and again.source.repairs == ()


# ---- every source yields Scenarios that write their converter's dict bit for bit ----------------------
def _round_trips(sc: Scenario) -> None:
    assert isinstance(sc, Scenario)
    d = sc.to_dict()
    assert identical(Scenario.from_dict(d).to_dict(), d), sc.id


def test_waymo_source_scenarios_round_trip(tmp_path):
    pytest.importorskip("waymo_open_dataset")
    from test_waymo_source import make_scenario

    from sim_bridge.sources import waymo as W

    W.write_tfrecord(tmp_path / "w.tfrecord", [make_scenario(f"s{i}").SerializeToString() for i in range(2)])
    items = list(W.iter_waymo_scenarios([tmp_path / "w.tfrecord"]))
    assert [sc.id for _, sc in items] == ["s0", "s1"]
    for _, sc in items:
        _round_trips(sc)


# nuScenes: test_nuscenes_source.py reads every converted scene through the Scenarios its source yields
# (``_convert``) and round-trips them bit for bit (test_converter_output_round_trips_through_scenario_...).


@pytest.mark.metadrive
def test_procedural_source_scenarios_round_trip():
    from sim_bridge.sources.procedural import ProceduralConfig, iter_procedural_scenarios

    (seed, sc), = iter_procedural_scenarios(ProceduralConfig(num_scenarios=1, start_seed=3, steps=20, workers=1))
    assert seed == 3 and sc.id == "procedural_seed000003" and sc.sdc_id == "ego"
    _round_trips(sc)
    _round_trips(sc.with_tracks({"new": _car(sc.length)}))
