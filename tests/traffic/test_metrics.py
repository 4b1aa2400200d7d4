"""Traffic metrics and baselines: the metrics separate real traffic from broken traffic, and can fail."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely

from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import Scenario
from traffic.baselines import (logged_on_lanes, mmd_references, procedural_reference, random_lane_traffic,
                               write_baseline_dataset)
from traffic.metrics import (box_overlaps, collision_counts, evaluate_traffic, kinematic_counts, mmd, on_road,
                             scene_attributes)

REAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-scenarios"


@pytest.fixture(scope="module")
def real() -> list[Scenario]:
    if not (REAL_DIR / "dataset_summary.pkl").exists():
        pytest.skip(f"shared real scenarios not found at {REAL_DIR} (expected ../shared beside the repo)")
    return list(ScenarioDataset(REAL_DIR, repair=True))


@pytest.fixture(scope="module")
def real_metrics(real) -> dict:
    return evaluate_traffic(real, real)


@pytest.fixture
def road(road_dict_factory) -> Scenario:
    return Scenario.from_dict(road_dict_factory(length=50))


def _edit(sc: Scenario, **fields) -> Scenario:
    """Replace non-ego rows of track arrays: fields maps name -> function(array [A-1, T, ...])."""
    tr, keep = sc.tracks, np.arange(sc.num_agents) != sc.ego_index
    new = {}
    for name, fn in fields.items():
        arr = getattr(tr, name).copy()
        arr[keep] = fn(arr[keep])
        new[name] = arr
    return replace(sc, tracks=replace(tr, **new)).validate()


def _scatter(sc: Scenario, n: int, steps: int, rng: np.random.Generator) -> Scenario:
    """n vehicles uniform in the 100 m square around the ego, random heading, 2-10 m/s, straight lines."""
    base = random_lane_traffic(sc, n, steps, rng)
    xy0 = base.tracks.xy[0, 0] + rng.uniform(-50, 50, (n, 2))
    h, speed = rng.uniform(-math.pi, math.pi, n), rng.uniform(2, 10, n)
    vel = speed[:, None] * np.stack([np.cos(h), np.sin(h)], -1)
    t = np.arange(steps) * 0.1
    return _edit(base, position=lambda p: np.concatenate([xy0[:, None] + vel[:, None] * t[None, :, None],
                                                          p[..., 2:]], -1),
                 heading=lambda _: np.repeat(h[:, None], steps, 1),
                 velocity=lambda _: np.repeat(vel[:, None], steps, 1))


# ---- MMD ---------------------------------------------------------------------------------------
def test_mmd_function_conventions():
    x = np.random.default_rng(0).normal(size=(30, 2))
    assert mmd(x, x, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert mmd(x, x + 20, 1.0) > 0.8  # near its maximum sqrt(mean k(x, x) + mean k(y, y))
    assert mmd(np.zeros((0, 2)), np.zeros((0, 2)), 1.0) == 0.0
    k_xx = np.exp(-((x[:, None] - x) ** 2).sum(-1) / 2).mean()
    assert mmd(np.zeros((0, 2)), x, 1.0) == pytest.approx(math.sqrt(k_xx))  # an empty set misses all of x


def test_mmd_shift_and_attribute_separation(road):
    ref = [random_lane_traffic(road, 20, 50, np.random.default_rng(s)) for s in range(3)]
    same = evaluate_traffic(ref, ref)
    assert same["pairing"] == "paired" and same["num_vehicles_t0"]["reference"] == 60
    assert max(same[f"mmd_{k}"] for k in ("position", "heading", "size", "speed")) < 1e-6
    # 20 m sideways (across the road); a wide range keeps the same vehicles in both sets
    shifted = evaluate_traffic([_edit(s, position=lambda p: p + [0, 20.0, 0]) for s in ref], ref, range_m=200)
    assert shifted["mmd_position"] > 0.5 and shifted["mmd_size"] < 1e-6 and shifted["mmd_speed"] < 1e-6
    resized = evaluate_traffic([_edit(s, size=lambda z: z * [1.5, 1.3, 1.0]) for s in ref], ref)
    assert resized["mmd_size"] > 0.3 and resized["mmd_position"] < 1e-6 and resized["mmd_heading"] < 1e-6
    wrapped = evaluate_traffic([_edit(s, heading=lambda h: h + 2 * math.pi) for s in ref], ref)
    assert wrapped["mmd_heading"] < 1e-6  # (cos, sin) embedding: 2 pi is no change


def test_scene_attributes_are_in_the_ego_frame(road_dict_factory):
    sc = Scenario.from_dict(road_dict_factory(ego_yaw=1.0))  # lead car 20 m ahead, same lane
    att = scene_attributes(sc, t0=0)
    assert att["position"].shape == (1, 2) and np.allclose(att["position"], [[20.0, 0.0]], atol=1e-6)
    assert np.allclose(att["heading"], [[1.0, 0.0]]) and np.allclose(att["speed"], [[8.0]])


def test_logged_on_lanes_moves_only_vehicles_off_the_lanes(road_dict_factory):
    sc = Scenario.from_dict(road_dict_factory(ego_yaw=0.3))  # lanes at v = -1.75 (ego, lead car) and +1.75
    yaw = lambda h: h + math.pi / 2  # noqa: E731 (parked across the road)
    c, s = math.cos(0.3), math.sin(0.3)
    left = lambda dv: lambda p: p + [-s * dv, c * dv, 0.0]  # noqa: E731 (dv metres to the road's left)
    near = _edit(sc, position=left(2.0), heading=yaw)   # v = 0.25: 1.5 m from a lane centre line
    att, moved = scene_attributes(near), logged_on_lanes(near)
    assert all(np.allclose(moved[k], att[k]) for k in att)  # within the 3 m bound: kept as logged
    far = _edit(sc, position=left(12.0), heading=yaw)   # v = 10.25: 8.5 m beyond the left lane
    att, moved = scene_attributes(far), logged_on_lanes(far)
    assert np.allclose(att["position"], [[20.0, 12.0]], atol=1e-6) and np.allclose(att["heading"], [[0.0, 1.0]])
    assert np.allclose(moved["position"], [[20.0, 3.5]], atol=1e-6)  # onto the left lane, in the ego frame
    assert np.allclose(np.abs(moved["heading"]), [[1.0, 0.0]], atol=1e-6)  # along that lane
    assert np.allclose(moved["size"], att["size"]) and np.allclose(moved["speed"], att["speed"])


# ---- collisions, off-road, kinematics on small cases ------------------------------------------
def test_box_overlaps_matches_shapely():
    rng = np.random.default_rng(1)
    xy, h = rng.uniform(-8, 8, (60, 2)), rng.uniform(-math.pi, math.pi, 60)
    size = np.stack([rng.uniform(1, 6, 60), rng.uniform(0.5, 2.5, 60)], -1)
    ov = box_overlaps(xy, h, size)
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) / 2
    polys = []
    for (x, y), a, (length, w) in zip(xy, h, size):
        c = local * [length, w]
        polys.append(shapely.Polygon(c @ [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]] + [x, y]))
    truth = shapely.intersects(np.array(polys)[:, None], np.array(polys)[None, :])
    assert (ov == truth).all() and ov.sum() > 60  # some true overlaps besides the diagonal


def test_collision_needs_a_vehicle(road):
    moved = _edit(road, position=lambda p: np.broadcast_to(p[:1, :1], p.shape).copy())  # all on one spot
    c = collision_counts(moved)
    assert c["agents"] == 3 and c["colliding"] == 3  # lead (vehicle) overlaps walker and bike
    only_people = replace(moved, tracks=replace(moved.tracks, types=("VEHICLE", "PEDESTRIAN", "PEDESTRIAN", "CYCLIST")))
    only_people = _edit(only_people, position=lambda p: p + [30.0, 30.0, 0])  # away from the ego
    assert collision_counts(only_people)["colliding"] == 0


def test_on_road_uses_centre_line_buffer(road):
    u = np.linspace(-50, 50, 11)
    ego_lane = np.stack([100 + u, np.full_like(u, 200 - 1.75)], -1)
    assert on_road(road, ego_lane).all()
    assert on_road(road, ego_lane + [0, -2.0]).all()  # 3.75 m right of the centre line: within 1.9 + 0.5 of the lane
    assert not on_road(road, ego_lane + [0, -5.0]).any() and not on_road(road, ego_lane + [0, 30.0]).any()


def test_kinematic_violation_detects_a_jump(road):
    sc = random_lane_traffic(road, 5, 40, np.random.default_rng(0))
    assert kinematic_counts(sc)["violations"] == 0
    jumped = _edit(sc, position=lambda p: p + (np.arange(40) >= 20)[None, :, None] * [3.0, 0, 0])
    assert kinematic_counts(jumped)["accel"] > 0


# ---- baselines ------------------------------------------------------------------------------------
def test_random_lane_traffic_contract(road, tmp_path):
    rng = np.random.default_rng(0)
    sc = random_lane_traffic(road, 12, 60, rng)  # longer than the 50-step log: the ego is padded
    sc.validate()
    tr = sc.tracks
    assert sc.length == 60 and sc.sdc_id == road.sdc_id and sc.dataset == "baseline_random"
    assert sc.agent_counts()["VEHICLE"] == 13 and sc.ego_index == 0
    e = road.ego_index
    assert np.allclose(tr.position[0, :50], road.tracks.position[e]) and not tr.valid[0, 50:].any()
    assert on_road(sc, tr.xy[1:, 0]).all()  # placed on lanes at t0
    assert (np.linalg.norm(tr.xy[1:, 0] - tr.xy[0, 0], axis=-1) <= 50).all()
    step = np.diff(tr.xy[1:], axis=1)  # [N, T-1, 2]: straight line at constant speed
    assert np.allclose(step, step[:, :1]) and np.allclose(np.linalg.norm(step[:, 0], axis=-1), 0.1 * tr.speed[1:, 0])
    assert np.allclose(tr.heading[1:], tr.heading[1:, :1]) and (tr.speed[1:, 0] <= 50 / 3.6 + 1e-9).all()
    out = write_baseline_dataset([sc], tmp_path / "base")
    ds = ScenarioDataset(out)
    assert ds.names == ["sd_baseline_straight_road.pkl"] and ds.load(ds.names[0]).num_agents == 13


# ---- real scenes ----------------------------------------------------------------------------------
def test_real_traffic_is_clean(real_metrics):
    r = real_metrics
    # measured on the 7 shared scenes: collision 0.030, offroad 0.025, kinematic 0.0007
    assert r["collision_rate"] < 0.05 and r["offroad_rate"] < 0.06 and r["kinematic_violation_rate"] < 0.01
    assert r["mmd_position"] == 0.0 and r["num_scenarios"] == 7 and r["num_vehicles_t0"]["reference"] > 50


def test_scattered_boxes_fail(real, real_metrics):
    rng = np.random.default_rng(0)
    r = evaluate_traffic([_scatter(sc, 150, 20, rng) for sc in real], real)
    assert r["offroad_rate"] > 0.4 and r["offroad_rate"] > 10 * real_metrics["offroad_rate"]
    assert r["collision_rate_t0"] > 0.3 and r["collision_rate"] > 10 * real_metrics["collision_rate"]


def test_random_lane_baseline_is_farther_than_real(real, real_metrics):
    rng = np.random.default_rng(0)
    gen = [random_lane_traffic(sc, 20, 91, rng) for sc in real]
    r = evaluate_traffic(gen, real)
    assert r["pairing"] == "paired" and r["num_vehicles_t0"]["generated"] == 140
    for k in ("position", "heading", "size", "speed"):
        assert r[f"mmd_{k}"] > real_metrics[f"mmd_{k}"] + 0.1, k
    assert all(on_road(sc, sc.tracks.xy[1:, 0]).all() for sc in gen)  # on real lanes at t0


def test_mmd_reference_points_on_real_scenes(real):
    rng = np.random.default_rng(0)
    counts = [len(scene_attributes(sc)["position"]) for sc in real]
    rand = evaluate_traffic([random_lane_traffic(sc, max(n, 1), 91, rng) for sc, n in zip(real, counts)], real)
    ref = mmd_references(real, draws=50)
    floor, lanes = ref["logged_resampled"], ref["logged_on_lanes"]
    for k in ("position", "heading", "size", "speed"):  # the floor: above 0 (finite samples), below random
        assert 0.02 < floor[f"mmd_{k}"] < rand[f"mmd_{k}"], k
    # moved onto lanes, real vehicles keep their sizes and speeds but not the car parks' positions and headings
    assert lanes["mmd_size"] == lanes["mmd_speed"] == 0.0
    assert lanes["mmd_heading"] > 0.1 and lanes["mmd_heading"] < rand["mmd_heading"]


@pytest.mark.metadrive
def test_procedural_reference(tmp_path, road):
    ds = procedural_reference(2, tmp_path / "pg", seed=0, steps=30)
    scenes = list(ds)
    assert len(scenes) == 2 and all(sc.length <= 32 and sc.sdc_id == "ego" for sc in scenes)
    r = evaluate_traffic(ds, [random_lane_traffic(road, 10, 30, np.random.default_rng(0))], t0=5)
    assert r["pairing"] == "pooled" and r["num_scenarios"] == 2
    assert r["offroad_rate_all"] < 0.05 and r["collision_rate"] < 0.05  # IDM traffic stays on lanes


# ---- sim-agent realism (WOSAC-style) ----------------------------------------------------------
def test_realism_ranks_logged_above_constant_velocity_above_random(real):
    """On real scenes the meta-metric orders the logged future > constant velocity > random controls, and a log
    shifted 3 m sideways (the same motion, off its lane) loses its map and interactive likelihoods."""
    from traffic.realism import REALISM_WEIGHTS, sim_agent_realism
    from traffic.sim_agents import logged_validity, rollouts

    scores = {m: [] for m in ("logged", "constant_velocity", "random", "shifted")}
    for sc in real[4:6]:  # one nuScenes and one Waymo scene
        for m in ("logged", "constant_velocity", "random"):
            agents, xy, h = rollouts(sc, m, n=8, steps=60)
            r = sim_agent_realism(sc, agents, xy, h, sim_valid=logged_validity(sc, agents, steps=60)
                                  if m == "logged" else None)
            scores[m].append(r["meta_metric"])
            assert set(r["likelihoods"]) == set(REALISM_WEIGHTS) and r["num_agents"] > 10
        agents, xy, h = rollouts(sc, "logged", n=8, steps=60)
        shift = 3.0 * np.stack([-np.sin(h), np.cos(h)], -1)
        scores["shifted"].append(sim_agent_realism(sc, agents, xy + shift, h,
                                                   sim_valid=logged_validity(sc, agents, steps=60))["meta_metric"])
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["logged"] > mean["constant_velocity"] + 0.02 > mean["random"] + 0.04, mean
    assert mean["shifted"] < mean["logged"] - 0.02, mean


def test_agent_count_distance_and_sample_diversity(real):
    """Two identical samples per scene: no diversity, counts matched; two random draws differ from each other,
    and half the vehicles count as a 0.5 count distance."""
    scenes = real[5:6]  # one Waymo scene (91 frames): the rates are computed for every agent and step
    same = evaluate_traffic(scenes + scenes, scenes)
    assert same["diversity_position"] == 0.0 and same["agent_count_distance"] == 0.0
    rng = np.random.default_rng(0)
    counts = [len(scene_attributes(sc)["speed"]) for sc in scenes]
    draws = [random_lane_traffic(sc, n, 20, rng) for _ in range(2) for sc, n in zip(scenes, counts)]
    r = evaluate_traffic(draws, scenes)
    assert r["diversity_position"] > 0.1 and math.isnan(evaluate_traffic(draws[:1], scenes)["diversity_position"])
    half = [random_lane_traffic(sc, n // 2, 20, rng) for sc, n in zip(scenes, counts)]
    assert abs(evaluate_traffic(half, scenes)["agent_count_distance"] - 0.5) < 0.05
