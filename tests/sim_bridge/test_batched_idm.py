"""IDM traffic in the batched simulator: logged vehicles yield to the ego instead of driving through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim_bridge.batched.env import BatchedEnvConfig, IDMConfig, reset, step
from sim_bridge.batched.state import stack_scenarios
from sim_bridge.scenario import Scenario
from tests.conftest import make_straight_road_scenario


def _tailgated(length: int = 80) -> Scenario:
    """The straight road with a car logged 30 m behind the ego at 14 m/s in the ego's lane (the ego's log runs
    at 10 m/s: the car closes in on it)."""
    d = make_straight_road_scenario(length=length)
    tail = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
            for k, v in d["tracks"]["lead"]["state"].items()}
    t = np.arange(length) * 0.1
    tail["position"] = tail["position"].copy()
    tail["position"][:, 0] = 100.0 - 30.0 + 14.0 * t
    tail["velocity"] = tail["velocity"].copy()
    tail["velocity"][:, 0] = 14.0
    d["tracks"]["tail"] = {"type": "VEHICLE", "state": tail, "metadata": {"type": "VEHICLE", "track_length": length}}
    del d["tracks"]["lead"]
    return Scenario.from_dict(d)


def _drive(traffic: str, brake_steps: int = 80):
    batch = stack_scenarios([_tailgated()])
    cfg = BatchedEnvConfig(traffic=traffic)
    st = reset(batch, torch.tensor([0]), cfg)
    tail = int(np.flatnonzero(batch.agent_type[0].numpy() == 1)[-1])  # the last vehicle row (the ego is first)
    xs, crash, taus = [], [], []
    for _ in range(brake_steps):
        st, _, term, trunc, info = step(batch, st, torch.tensor([[0.0, -1.0]]), cfg)  # the ego brakes to a stop
        xs.append(float(st.agents[0, tail, 0]))
        taus.append(float(st.agent_tau[0, tail]))
        crash.append(bool(info["crash_vehicle"][0]))
        if bool(term[0] | trunc[0]):
            break
    return np.array(xs), np.array(crash), np.array(taus), float(st.ego_xy[0, 0])


def test_replayed_traffic_runs_into_a_braking_ego():
    _, crash, _, _ = _drive("log")
    assert crash.any()


def test_idm_traffic_yields_to_the_ego_within_the_braking_bound():
    xs, crash, taus, ego_x = _drive("idm")
    assert not crash.any()
    v = np.diff(xs) / 0.1
    acc = np.diff(v) / 0.1
    assert acc.min() >= -IDMConfig().max_brake - 0.2 and acc.min() < -2.0   # it braked, within the bound
    assert v[-1] < 0.5 and taus[-1] < len(taus) - 10                      # it waits, behind its log
    gap = ego_x - xs[-1] - (4.515 + 4.8) / 2
    assert 0.5 < gap < 6.0, gap


def test_idm_traffic_replays_exactly_when_nothing_is_in_the_way():
    """The ego slowing down behind a car blocks nobody: IDM traffic is the log, bit for bit."""
    batch = stack_scenarios([Scenario.from_dict(make_straight_road_scenario(length=60))])
    out = {}
    for traffic in ("log", "idm"):
        cfg = BatchedEnvConfig(traffic=traffic)
        st = reset(batch, torch.tensor([0]), cfg)
        rows = []
        for _ in range(40):
            st, *_ = step(batch, st, torch.tensor([[0.0, -0.3]]), cfg)
            rows.append(st.agents.clone())
        out[traffic] = torch.stack(rows)
    idx = [i for i in range(batch.frames.shape[2]) if i != int(batch.ego[0])]
    assert torch.equal(out["idm"][:, :, idx], out["log"][:, :, idx])


@pytest.mark.parametrize("num", [1, 64])
def test_idm_step_batches_over_scenes(num):
    batch = stack_scenarios([_tailgated()])
    cfg = BatchedEnvConfig(traffic="idm")
    st = reset(batch, torch.zeros(num, dtype=torch.long), cfg)
    st, r, term, trunc, info = step(batch, st, torch.zeros(num, 2), cfg)
    assert st.agent_tau.shape == (num, batch.frames.shape[2]) and torch.isfinite(st.agents).all()


def test_gymnasium_vector_env_matches_the_sb3_vec_env():
    """The Gymnasium VectorEnv runs the same episodes as the SB3 VecEnv and reports ends the Gymnasium way."""
    from sim_bridge.batched.env import BatchedVecEnv
    from sim_bridge.batched.gym_vector import BatchedGymVectorEnv

    batch = stack_scenarios([_tailgated(), Scenario.from_dict(make_straight_road_scenario(length=40))])
    cfg = BatchedEnvConfig(horizon=30)
    gym_env, sb3 = BatchedGymVectorEnv(batch, 4, cfg, seed=1), BatchedVecEnv(batch, 4, cfg, seed=1)
    obs, info = gym_env.reset(seed=1)
    sb3.seed(1)
    assert gym_env.observation_space.contains(obs) and np.array_equal(obs, sb3.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(45):
        act = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
        o1, r1, term, trunc, info = gym_env.step(act)
        o2, r2, done, infos = sb3.step(act)
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(term | trunc, done)
        if done.any():
            ended += int(done.sum())
            for i in np.flatnonzero(done):
                assert info["_final_obs"][i] and np.array_equal(info["final_obs"][i], infos[i]["terminal_observation"])
                assert 0.0 <= info["final_info"][i]["route_completion"] <= 1.5
            assert trunc[done].tolist() == [infos[i]["TimeLimit.truncated"] for i in np.flatnonzero(done)]
    assert ended >= 4


def test_reactive_traffic_means_idm_in_both_backends():
    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.envs.scene_obs import scene_env_config

    assert scene_env_config(EnvConfig(reactive_traffic=True)).traffic == "idm"
    assert scene_env_config(EnvConfig()).traffic == "log"
