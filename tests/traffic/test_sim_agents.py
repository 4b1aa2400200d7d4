"""Sim-agent rollouts (traffic.sim_agents): what the 1 s of history says about each agent, and the drivable
rollouts made from predicted paths."""

from __future__ import annotations

import numpy as np
import pytest

from sim_bridge.scenario import Scenario
from tests.conftest import make_straight_road_scenario
from traffic.encoding import EncodingConfig
from traffic.sim_agents import (history_state, keyframe_phase, keyframe_resample, lane_rollouts, rollouts,
                                sim_agents, track_noise)

SIGMA = 0.02  # m: tracking noise of the parked car


def _scene() -> tuple[Scenario, dict[str, int]]:
    """The straight two-lane road (tests.conftest) plus a car parked beside it whose track jitters by SIGMA m and
    whose logged velocity is noise (0.2 m/s): standing, though a constant-velocity rollout would drive it off."""
    d = make_straight_road_scenario(length=100, origin=(0.0, 0.0))
    rng = np.random.default_rng(0)
    parked = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d["tracks"]["lead"].items()}
    st = {k: np.array(v, dtype=float if k != "valid" else bool) for k, v in d["tracks"]["lead"]["state"].items()}
    st["position"][:, 0], st["position"][:, 1] = 30.0, -6.0
    st["position"][:, :2] += rng.normal(0, SIGMA, (100, 2))
    st["velocity"] = np.tile([0.2, 0.0], (100, 1))
    parked["state"] = st
    d["tracks"]["parked"] = parked
    sc = Scenario.from_dict(d)
    return sc, {k: list(sc.tracks.ids).index(k) for k in ("ego", "lead", "walker", "parked")}


def test_history_says_who_stands_and_how_noisy_the_track_is():
    sc, ix = _scene()
    agents = np.array([ix["ego"], ix["lead"], ix["walker"], ix["parked"]])
    vel, still = history_state(sc, agents, current=10)
    assert still.tolist() == [False, False, True, True]
    assert np.allclose(vel[1], [8.0, 0.0], atol=1e-6) and np.abs(vel[3]).max() < 0.2
    s_xy, s_h = track_noise(sc, agents, current=10)
    assert s_xy[0] < 1e-6 and s_xy[1] < 1e-6 and s_h.max() < 1e-6     # smooth tracks: no noise
    assert 0.5 * SIGMA < s_xy[3] < 1.6 * SIGMA, s_xy[3]                 # 9 second differences: a rough estimate


def test_lane_rollouts_hold_standing_agents_and_start_from_the_logged_pose():
    sc, ix = _scene()
    agents, xy, h = rollouts(sc, "constant_velocity", n=2, steps=60, enc=EncodingConfig())
    assert set(agents) == set(sim_agents(sc, 10, EncodingConfig())) and ix["parked"] in agents
    lxy, lh = lane_rollouts(sc, agents, xy, h, current=10, steps=60, n=2)
    tr = sc.tracks
    p, w = list(agents).index(ix["parked"]), list(agents).index(ix["walker"])
    for k in (p, w):  # standing: held exactly where the log has it now (constant velocity drifts the car 1.2 m)
        assert np.abs(lxy[:, k] - tr.xy[agents[k], 10]).max() == 0.0
    assert np.abs(xy[:, p, -1] - tr.xy[agents[p], 10]).max() > 1.0
    lead = list(agents).index(ix["lead"])
    first = np.linalg.norm(lxy[:, lead, 0] - tr.xy[agents[lead], 10], axis=-1)
    assert np.abs(first - 0.8).max() < 0.05, first                     # 8 m/s: 0.8 m in the first step
    assert np.abs(lxy[:, lead, :, 1] + 1.75).max() < 0.05              # on its lane's centre line


def test_model_rollouts_carry_each_tracks_own_noise():
    """The model's rollouts (an untrained trajectory model is enough here) hold the parked car where it stands
    and add its history's tracking noise x TRACK_NOISE_SCALE; a smooth track gets none."""
    pytest.importorskip("torch")
    from traffic.model.trajectory import TrajectoryModel
    from traffic.sim_agents import TRACK_NOISE_SCALE

    sc, ix = _scene()
    agents, xy, h = rollouts(sc, "model", n=16, steps=40, models=(None, TrajectoryModel().eval()))
    p, w = list(agents).index(ix["parked"]), list(agents).index(ix["walker"])
    s_xy, _ = track_noise(sc, agents, current=10)
    dev = xy[:, p] - sc.tracks.xy[ix["parked"], 10]
    assert np.abs(dev.mean((0, 1))).max() < 0.005
    assert abs(dev.std() / (TRACK_NOISE_SCALE * s_xy[p]) - 1) < 0.1, (dev.std(), s_xy[p])
    assert np.abs(xy[:, w] - sc.tracks.xy[ix["walker"], 10]).max() == 0.0


def _with_lead_track(xy: np.ndarray) -> Scenario:
    """The straight-road scene with the lead car's positions replaced by ``xy`` [100, 2]."""
    d = make_straight_road_scenario(length=100, origin=(0.0, 0.0))
    d["tracks"]["lead"]["state"]["position"] = np.c_[xy, np.zeros(len(xy))]
    return Scenario.from_dict(d)


def test_keyframe_logs_are_recognised_and_rollouts_observed_the_same_way():
    """A track made of keyframes every 5 steps (phase 2) joined by straight lines, as nuScenes' 2 Hz annotations
    interpolated to 10 Hz: the phase is found; a tracked 10 Hz log (noise at every step) and smooth motion have
    none. Resampled rollouts keep the keyframe poses, are straight between them and start at the current pose."""
    rng = np.random.default_rng(0)
    steps = np.arange(100)
    keys = steps[steps % 5 == 2]
    kx = np.cumsum(rng.uniform(3.0, 5.0, len(keys)))                       # speed changes at every keyframe
    x = np.interp(steps, keys, kx)
    x[:2] = kx[0] - (2 - steps[:2]) * (kx[1] - kx[0]) / 5
    lane_y = np.full(100, -1.75)
    assert keyframe_phase(_with_lead_track(np.c_[x, lane_y]), current=10) == 2
    assert keyframe_phase(_with_lead_track(np.c_[x + rng.normal(0, 0.05, 100), lane_y]), current=10) is None
    assert keyframe_phase(_with_lead_track(np.c_[8.0 * 0.1 * steps, lane_y]), current=10) is None

    R, A, F, current = 3, 2, 23, 10
    t = np.arange(1, F + 1) * 0.1
    xy = np.stack([np.stack([t ** 2 * (r + 1), np.sin(t) * (a + 1)], -1)
                   for r in range(R) for a in range(A)]).reshape(R, A, F, 2)
    h = np.broadcast_to(np.pi - 0.05 + 0.02 * np.arange(1, F + 1), (R, A, F)).copy()  # crosses +-pi
    start_xy, start_h = np.zeros((A, 2)), np.full(A, np.pi - 0.05)
    oxy, oh = keyframe_resample(xy, h, start_xy, start_h, current, phase=2)
    future = np.arange(current + 1, current + 1 + F)
    kept = (future - 2) % 5 == 0                                               # steps 12, 17, 22, 27, 32
    assert np.allclose(oxy[:, :, kept], xy[:, :, kept]) and np.allclose(oxy[:, :, -1], xy[:, :, -1])
    full = np.concatenate([np.broadcast_to(start_xy[None, :, None], (R, A, 1, 2)), oxy], 2)
    bend = np.abs(full[:, :, 2:] - 2 * full[:, :, 1:-1] + full[:, :, :-2]).max((0, 1, 3))  # at future[:-1]
    assert bend[~kept[:-1]].max() < 1e-9 and bend[kept[:-1]].min() > 1e-4
    assert np.abs(np.angle(np.exp(1j * (oh - h)))).max() < 1e-9                # headings straight already, wrapped
