"""RestartingSubprocVecEnv and make_vec_env on tiny procedural maps (spawned MetaDrive workers)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

pytestmark = pytest.mark.metadrive

CFG = dict(data="procedural", num_scenarios=2, procedural_map_blocks=1, procedural_traffic_density=0.0, horizon=50)


def _cfg():
    from sim_bridge.envs.factory import EnvConfig

    return EnvConfig(**CFG)


def _actions(vec):
    return np.stack([vec.action_space.sample() for _ in range(vec.num_envs)])


def _kill(vec, i):
    proc = vec.processes[i]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=10)
    assert not proc.is_alive()


@pytest.fixture(scope="module")
def vec2(tmp_path_factory):
    from sim_bridge.envs.vec import make_vec_env

    vec = make_vec_env(_cfg(), num_workers=2, seed=7, monitor_dir=str(tmp_path_factory.mktemp("monitor")))
    yield vec
    vec.close()


def test_two_workers_step_and_auto_reset(vec2):
    from sim_bridge.envs.vec import RestartingSubprocVecEnv

    assert isinstance(vec2, RestartingSubprocVecEnv)
    obs_dim = vec2.observation_space.shape[0]
    obs = vec2.reset()
    assert obs.shape == (2, obs_dim)
    episodes, dones = [], 0
    for _ in range(120):
        obs, rew, done, infos = vec2.step(_actions(vec2))
        assert obs.shape == (2, obs_dim) and rew.shape == (2,) and done.shape == (2,)
        dones += int(done.sum())
        episodes += [info["episode"] for info in infos if "episode" in info]
        for d, info in zip(done, infos):
            assert not d or "terminal_observation" in info
    assert dones >= 2 and len(episodes) == dones  # horizon 50: every worker ended episodes and went on
    assert all(ep["l"] <= 50 for ep in episodes)
    assert vec2.restarts == [0, 0]


def test_killed_worker_is_restarted_mid_run(vec2, caplog):
    vec2.step(_actions(vec2))
    old_pid = vec2.processes[1].pid
    _kill(vec2, 1)
    with caplog.at_level("WARNING", logger="sim_bridge.envs.vec"):
        obs, rew, done, infos = vec2.step(_actions(vec2))
    assert done[1] and rew[1] == 0.0
    assert infos[1]["worker_restarted"] and infos[1]["TimeLimit.truncated"]
    np.testing.assert_array_equal(infos[1]["terminal_observation"], obs[1])
    assert "worker_restarted" not in infos[0]
    assert vec2.restarts == [0, 1] and vec2.processes[1].pid != old_pid
    assert any("worker 1 died (exit code -9)" in r.getMessage() for r in caplog.records)
    for _ in range(50):
        obs, rew, done, infos = vec2.step(_actions(vec2))
        assert obs.shape == (2, vec2.observation_space.shape[0])
        assert not any(info.get("worker_restarted") for info in infos)
    assert vec2.restarts == [0, 1]
    assert vec2.get_attr("num_scenarios") == [1, 1]


def test_close_after_kill_does_not_hang(vec2):
    _kill(vec2, 0)
    vec2.step_async(_actions(vec2))  # close while waiting on a dead worker
    t = time.time()
    vec2.close()
    vec2.close()
    assert vec2.closed and time.time() - t < 15
    assert not any(p.is_alive() for p in vec2.processes)


def test_restart_in_reset_and_get_attr_then_cap_raises():
    from sim_bridge.envs.factory import env_fns
    from sim_bridge.envs.vec import RestartingSubprocVecEnv

    vec = RestartingSubprocVecEnv(env_fns(_cfg(), 1), max_restarts=2)
    try:
        vec.reset()
        _kill(vec, 0)
        assert vec.reset().shape == (1, vec.observation_space.shape[0])  # the fresh worker's reset obs
        assert vec.restarts == [1]
        _kill(vec, 0)
        assert vec.get_attr("num_scenarios") == [2]  # asked again of the restarted worker
        assert vec.restarts == [2]
        obs, rew, done, infos = vec.step(_actions(vec))  # the restart is reported at the next step
        assert done[0] and infos[0]["worker_restarted"] and rew[0] == 0.0
        _kill(vec, 0)
        with pytest.raises(RuntimeError, match=r"worker 0 died .*max_restarts=2"):
            vec.step(_actions(vec))
    finally:
        vec.close()
    assert vec.restarts == [2]


def test_one_worker_is_in_process_and_seeded():
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sim_bridge.envs.vec import make_vec_env

    vec = make_vec_env(_cfg(), num_workers=1, seed=3)
    try:
        assert isinstance(vec, DummyVecEnv) and isinstance(vec.envs[0], Monitor)
        obs = vec.reset()
        assert obs.shape == (1, vec.observation_space.shape[0])
        vec.seed(3)
        np.testing.assert_array_equal(vec.reset(), obs)  # same seed, same scenario draw, same start
    finally:
        vec.close()


def test_asking_for_more_scenarios_than_the_directory_holds_fails_before_any_worker(tmp_path, road_dict):
    """MetaDrive would assert inside every worker (and the restart loop would retry); we refuse up front."""
    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.envs.vec import make_vec_env
    from sim_bridge.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "one", resume=False) as w:
        w.add("road.pkl", road_dict)
    with pytest.raises(ValueError, match="only 1 scenarios"):
        make_vec_env(EnvConfig(data=str(tmp_path / "one"), num_scenarios=5), 2, seed=0)
    assert EnvConfig(data=str(tmp_path / "one")).total_scenarios() == 1  # 0 = all of them
