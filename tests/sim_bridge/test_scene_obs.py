"""One observation for both simulators: MetaDrive's ScenarioEnv wrapped with the batched ``observe``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim_bridge.envs.factory import EnvConfig, RewardConfig


def test_scene_observation_refuses_procedural_maps():
    from sim_bridge.envs.factory import make_env

    with pytest.raises(ValueError, match="scenario directory"):  # before any engine starts
        make_env(EnvConfig(data="procedural", observation="scene"))


@pytest.mark.metadrive
def test_metadrive_scene_observation_equals_the_batched_one_on_logged_replays(real_dir):
    """Replaying each real scene's ego log: the wrapper's observation (MetaDrive's ego, the same ``observe``)
    equals the batched env's (ego_control="log") frame by frame."""
    from metadrive.policy.replay_policy import ReplayEgoCarPolicy

    from sim_bridge.batched.env import observe, reset, step
    from sim_bridge.batched.state import load_batched
    from sim_bridge.envs.factory import make_env
    from sim_bridge.envs.scene_obs import scene_env_config

    steps = 15
    no_done = RewardConfig(out_of_road_done=False, crash_vehicle_done=False, crash_object_done=False)
    env_cfg = EnvConfig(data=str(real_dir), horizon=steps + 5, reward=no_done, observation="scene")
    batch = load_batched(real_dir)
    cfg = scene_env_config(env_cfg, ego_control="log", end_with_log=False)
    st = reset(batch, torch.arange(batch.num_scenarios), cfg)
    ours = [observe(batch, st, cfg).numpy()]
    for _ in range(steps):
        st, *_ = step(batch, st, torch.zeros(batch.num_scenarios, 2), cfg)
        ours.append(observe(batch, st, cfg).numpy())
    ours = np.stack(ours, 1)  # [n, frames, d]
    env = make_env(env_cfg, agent_policy=ReplayEgoCarPolicy)
    worst = {}
    try:
        assert env.observation_space.shape == (ours.shape[-1],)
        for i in range(batch.num_scenarios):
            obs, _ = env.reset(seed=i)
            md = [obs]
            for _ in range(steps):
                obs, _, term, trunc, _ = env.step(np.zeros(2))
                md.append(obs)
                if term or trunc:  # arrival
                    break
            md = np.stack(md)
            diff = np.abs(md - ours[i, :len(md)])
            worst[batch.names[i]] = (len(md), float(diff.max()), int(np.unravel_index(diff.argmax(), diff.shape)[1]))
    finally:
        env.close()
    for name, (frames, err, col) in worst.items():
        assert err < 0.05, (name, frames, err, col, worst)
