"""Shared fixtures: a synthetic straight-road scenario, the shared real scenarios, a procedural set."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from sim_bridge.sources.real import REAL_DIR

REPO = Path(__file__).resolve().parents[1]


def make_straight_road_scenario(length: int = 50, ego_speed: float = 10.0, ego_yaw: float = 0.0,
                                origin=(100.0, 200.0)) -> dict:
    """A ScenarioNet dict: two-lane road along ``ego_yaw`` through ``origin``, 10 Hz.

    Road frame (u along the road, v to the left): lanes at v = -1.75 (ego's) and +1.75, a broken
    centre line at v = 0, road edges at v = +-3.5, a crosswalk across u in [30, 34]. Agents: the
    ego starts at u = 0 in the right lane at ``ego_speed``; a lead car 20 m ahead at 8 m/s; a
    pedestrian standing on the crosswalk at v = +1; a cyclist appearing at step 10.
    """
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    ox, oy = origin

    def world(u, v):
        u, v = np.asarray(u, float), np.asarray(v, float)
        return np.stack([ox + c * u - s * v, oy + s * u + c * v], -1)

    t = np.arange(length) * 0.1
    u_line = np.linspace(-100, 150, 126)

    def track(u, v, yaw, speed, size, typ, valid=None):
        u = np.broadcast_to(np.asarray(u, float), (length,))
        xy = world(u, np.full(length, v))
        pos = np.concatenate([xy, np.full((length, 1), size[2] / 2)], 1)
        vel = np.stack([np.full(length, speed * np.cos(ego_yaw + yaw)),
                        np.full(length, speed * np.sin(ego_yaw + yaw))], 1)
        valid = np.ones(length, bool) if valid is None else valid
        return {"type": typ, "state": {
            "position": pos * valid[:, None], "heading": np.full(length, ego_yaw + yaw) * valid,
            "velocity": vel * valid[:, None], "valid": valid,
            "length": np.full(length, size[0]) * valid, "width": np.full(length, size[1]) * valid,
            "height": np.full(length, size[2]) * valid},
            "metadata": {"type": typ, "track_length": length}}

    cyc_valid = np.arange(length) >= 10
    tracks = {
        "ego": track(ego_speed * t, -1.75, 0.0, ego_speed, (4.5, 1.9, 1.6), "VEHICLE"),
        "lead": track(20 + 8 * t, -1.75, 0.0, 8.0, (4.8, 2.0, 1.7), "VEHICLE"),
        "walker": track(32.0, 1.0, np.pi / 2, 0.0, (0.6, 0.6, 1.8), "PEDESTRIAN"),
        "bike": track(-10 + 5 * t, 1.75, 0.0, 5.0, (1.8, 0.6, 1.7), "CYCLIST", valid=cyc_valid),
    }
    crosswalk = world(np.array([30, 34, 34, 30]), np.array([-3.5, -3.5, 3.5, 3.5]))
    map_features = {
        "lane_right": {"type": "LANE_SURFACE_STREET", "polyline": world(u_line, np.full_like(u_line, -1.75)),
                       "speed_limit_kmh": 50.0, "entry_lanes": [], "exit_lanes": []},
        "lane_left": {"type": "LANE_SURFACE_STREET", "polyline": world(u_line[::-1], np.full_like(u_line, 1.75)),
                      "speed_limit_kmh": 50.0, "entry_lanes": [], "exit_lanes": []},
        "centre": {"type": "ROAD_LINE_BROKEN_SINGLE_YELLOW", "polyline": world(u_line, np.zeros_like(u_line))},
        "edge_right": {"type": "ROAD_EDGE_BOUNDARY", "polyline": world(u_line, np.full_like(u_line, -3.5))},
        "edge_left": {"type": "ROAD_EDGE_BOUNDARY", "polyline": world(u_line, np.full_like(u_line, 3.5))},
        "crosswalk": {"type": "CROSSWALK", "polygon": crosswalk},
    }
    lights = {"lane_right": {"type": "TRAFFIC_LIGHT", "lane": "lane_right",
                             "stop_point": np.array([*world(29.0, -1.75), 0.0]),
                             "state": {"object_state": ["LANE_STATE_GO"] * length}}}
    return {"id": "straight_road", "version": "test", "length": length, "tracks": tracks,
            "dynamic_map_states": lights, "map_features": map_features,
            "metadata": {"sdc_id": "ego", "dataset": "synthetic", "scenario_id": "straight_road",
                         "ts": t, "coordinate": "right-handed", "metadrive_processed": False}}


def write_straight_road_scenarios(out: Path, specs: list[tuple[float, float]], length: int = 30) -> Path:
    """A scenario directory of straight-road scenarios ``road<i>.pkl``, one per (ego yaw, ego speed) in specs."""
    from sim_bridge.dataset import DatasetWriter

    with DatasetWriter(out, resume=False) as w:
        for i, (yaw, speed) in enumerate(specs):
            d = make_straight_road_scenario(length=length, ego_speed=speed, ego_yaw=yaw)
            d["id"] = d["metadata"]["scenario_id"] = f"road{i}"
            w.add(f"road{i}.pkl", d)
    return out


def make_varied_road_scenario(seed: int, length: int = 30) -> dict:
    """The straight-road scenario with the ego turned / shifted against the road and 2-5 other cars
    (id ``road<seed>``): varied, meaningful layouts for camera tests."""
    rng = np.random.RandomState(seed)
    d = make_straight_road_scenario(length=length)
    d["id"] = d["metadata"]["scenario_id"] = f"road{seed:02d}"
    ego = d["tracks"]["ego"]["state"]
    ego["heading"] = ego["heading"] + rng.uniform(-0.5, 0.5)
    ego["position"][:, 1] += rng.uniform(-1.5, 3.5)
    lead = d["tracks"].pop("lead")
    for k in range(rng.randint(2, 6)):
        car = copy.deepcopy(lead)
        u, v = rng.uniform(-25, 40), rng.choice([-1.75, 1.75])
        car["state"]["position"][:, 0] = 100.0 + u + rng.uniform(0, 6) * np.arange(length) * 0.1
        car["state"]["position"][:, 1] = 200.0 + v
        d["tracks"][f"car{k}"] = car
    return d


@pytest.fixture
def road_dict() -> dict:
    return make_straight_road_scenario()


@pytest.fixture
def road_dict_factory():
    return lambda **kw: copy.deepcopy(make_straight_road_scenario(**kw))


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not (REAL_DIR / "dataset_summary.pkl").exists():
        pytest.skip(f"shared real scenarios not found at {REAL_DIR} (expected ../shared beside the repo)")
    return REAL_DIR


@pytest.fixture(scope="session")
def procedural_dir(tmp_path_factory) -> Path:
    """Two short procedural scenarios (MetaDrive PG + IDM), generated once per test session."""
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    out = tmp_path_factory.mktemp("procedural")
    report = generate_procedural(ProceduralConfig(num_scenarios=2, steps=60, workers=1), out, resume=False)
    assert report.ok, report.failed
    return out
