"""snapshot(): a live MetaDrive state as a one-frame contract scenario, procedural maps and log replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.metadrive

REAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-scenarios"
STEPS = 10
KNOWN_TYPES = {"VEHICLE", "PEDESTRIAN", "CYCLIST", "TRAFFIC_CONE", "TRAFFIC_BARRIER", "TRAFFIC_OBJECT", "OTHER"}


def _lane_distance(scenario, xy: np.ndarray) -> float:
    """Distance in m from xy [2] to the nearest lane centre line segment of the scenario's map."""
    best = np.inf
    for f in scenario.map_features.values():
        if not f.is_lane:
            continue
        p = f.polyline[:, :2]
        a, d = p[:-1], np.diff(p, axis=0)
        t = np.clip(((xy - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(a + t[:, None] * d - xy, axis=1).min()))
    return best


@pytest.fixture(scope="module", params=["procedural", "replay"])
def env(request):
    """A MetaDrive env after STEPS steps (one engine per process: each is closed before the next)."""
    from sim_bridge.envs.factory import EnvConfig, make_env

    if request.param == "procedural":
        cfg = EnvConfig(data="procedural", num_scenarios=1, procedural_map_blocks=2,
                        procedural_traffic_density=0.2, horizon=100)
    else:
        if not (REAL_DIR / "dataset_summary.pkl").exists():
            pytest.skip(f"shared real scenarios not found at {REAL_DIR} (expected ../shared beside the repo)")
        cfg = EnvConfig(data=str(REAL_DIR), num_scenarios=1)
    e = make_env(cfg)
    try:
        e.reset(seed=0)
        for _ in range(STEPS):
            e.step(np.array([0.0, 0.3]))
        yield e
    finally:
        e.close()


def test_snapshot_is_a_valid_one_frame_scenario_matching_the_engine(env):
    from metadrive.component.traffic_light.base_traffic_light import BaseTrafficLight
    from metadrive.component.vehicle.base_vehicle import BaseVehicle

    from sim_bridge.envs.snapshot import snapshot
    from sim_bridge.scenario import Scenario

    snap = snapshot(env).validate()
    assert snap.length == 1 and snap.sdc_id == "ego" and snap.ego_index == 0
    tr = snap.tracks
    assert tr.types[0] == "VEHICLE" and tr.valid.all()
    np.testing.assert_allclose(tr.position[0, 0, :2], env.agent.position, atol=1e-6)
    assert abs(tr.heading[0, 0] - env.agent.heading_theta) < 1e-6
    assert abs(np.linalg.norm(tr.velocity[0, 0]) - env.agent.speed) < 1e-3
    np.testing.assert_allclose(tr.size[0, 0, :2], [env.agent.LENGTH, env.agent.WIDTH])

    objects = list(env.engine.get_objects().values())
    engine_vehicles = sum(isinstance(o, BaseVehicle) for o in objects)
    assert tr.types.count("VEHICLE") == engine_vehicles
    assert snap.num_agents == sum(not isinstance(o, BaseTrafficLight) for o in objects)
    assert set(tr.types) <= KNOWN_TYPES
    assert len(set(tr.ids)) == len(tr.ids)
    assert (tr.size[..., :2] > 0).all()
    assert snap.map_category_counts()["lane"] > 0
    # The contract's dict form round-trips (what DatasetWriter / ScenarioEnv would read).
    again = Scenario.from_dict(snap.to_dict(), src="snapshot")
    assert again.tracks.ids == tr.ids and set(again.map_features) == set(snap.map_features)


def test_ego_sits_on_the_snapshot_map(env):
    from bevgen.layout import rasterize
    from sim_bridge.envs.snapshot import snapshot

    snap = snapshot(env)
    ego_xy = snap.tracks.position[0, 0, :2]
    assert _lane_distance(snap, ego_xy) < 2.5
    layout = rasterize(snap, 0)
    drivable = layout.channel("drivable_area")
    c = drivable.shape[0] // 2
    assert drivable[c - 1:c + 1, c - 1:c + 1].all()


def test_map_is_converted_once_per_map(env):
    from sim_bridge.envs.snapshot import snapshot

    first = snapshot(env)
    env.step(np.array([0.0, 0.3]))
    second = snapshot(env)
    assert second.map_features is first.map_features
    assert second.metadata["episode_step"] == first.metadata["episode_step"] + 1


def test_route_polyline_passes_by_the_ego(env):
    from sim_bridge.envs.snapshot import route_polyline

    route = route_polyline(env)
    assert route.ndim == 2 and route.shape[1] == 2 and len(route) >= 2 and np.isfinite(route).all()
    assert np.linalg.norm(route - np.asarray(env.agent.position), axis=1).min() < 5.0


def test_replay_frame_is_the_centralized_file_frame(env):
    """ScenarioEnv shifts each scenario so the ego starts at the origin; the snapshot keeps that frame."""
    from sim_bridge.envs.snapshot import snapshot
    from sim_bridge.dataset import ScenarioDataset

    snap = snapshot(env)
    if snap.metadata["source"] != "ScenarioEnv":
        pytest.skip("procedural maps are not shifted")
    origin = snap.metadata["old_origin_in_current_coordinate"]  # = -(ego's first logged xy in the file)
    ds = ScenarioDataset(REAL_DIR, repair=True)
    logged = ds.load(env.engine.data_manager.current_scenario_file_name)
    np.testing.assert_allclose(logged.tracks.position[logged.ego_index, 0, :2], -origin, atol=1e-6)
    fid, lane = next((k, f) for k, f in snap.map_features.items() if f.is_lane)
    np.testing.assert_allclose(lane.polyline[:, :2] - origin, logged.map_features[fid].polyline[:, :2], atol=1e-4)
    # Replayed traffic sits where the log puts it at this step, once shifted back (MetaDrive places
    # static objects once, at their first logged position, so logged jitter of cones is not followed).
    t, tr = snap.metadata["episode_step"], snap.tracks
    common = [i for i in tr.ids[1:] if i in logged.tracks.ids]
    assert len(common) == snap.num_agents - 1
    sim = np.array([tr.position[tr.index(i), 0, :2] for i in common]) - origin
    log = np.array([logged.tracks.position[logged.tracks.index(i), t, :2] for i in common])
    err = np.linalg.norm(sim - log, axis=1)
    moving = np.array([tr.types[tr.index(i)] in ("VEHICLE", "PEDESTRIAN", "CYCLIST") for i in common])
    assert err[moving].max() < 1e-3 and err.max() < 0.5
    assert tr.metadata[0]["original_id"] == logged.sdc_id
