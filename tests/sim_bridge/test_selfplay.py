"""Self-play in the batched simulator: the policy drives every moving vehicle of a scene, each vehicle an
agent that sees the others move; PPO learns from all of them with the waiting slots masked out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim_bridge.batched.env import BatchedEnvConfig, reset
from sim_bridge.batched.selfplay import SelfPlayVecEnv, scene_rows, self_play_step
from sim_bridge.batched.state import AGENT_VEHICLE, SelfPlayConfig, load_batched, stack_scenarios
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import Scenario
from tests.conftest import make_straight_road_scenario
from tests.sim_bridge.test_warmstart import _route_completion

CFG = BatchedEnvConfig(ego_size="logged", end_with_log=False, horizon=200)


@pytest.fixture(scope="module")
def real_self_play(real_dir):
    return load_batched(real_dir, self_play=SelfPlayConfig())


def test_self_play_rows_share_the_scene_logs(real_dir, real_self_play):
    sp, ego = real_self_play, load_batched(real_dir)
    ds = ScenarioDataset(real_dir, repair=True)
    rows = scene_rows(sp)
    assert sp.num_scenes == 7 and sp.frames.shape[0] == 7 and sp.num_scenarios == int((rows >= 0).sum()) > 14
    assert 2 <= rows.shape[1] <= 8  # every scene drives its ego and at least one other vehicle
    for g, name in enumerate(ego.names):
        sc = ds.load(name)
        first = int(rows[g, 0])
        if float(ego.route_length[g]) >= 10.0:  # a moving logged ego comes first, with the usual route
            assert sp.names[first] == name
            torch.testing.assert_close(sp.route[first, :int(sp.route_count[first])],
                                       ego.route[g, :int(ego.route_count[g])])
        else:  # a parked one replays its log
            assert name not in sp.names and int(sp.ego[first]) != int(ego.ego[g])
        for r in rows[g][rows[g] >= 0].tolist():
            assert int(sp.scene[r]) == g
            a = int(sp.ego[r])
            assert int(sp.agent_type[g, a]) == AGENT_VEHICLE and bool(sp.frame_valid[g, 0, a])
            path = sp.xy[g, a][sp.valid[g, a]]
            # the row's route is its vehicle's logged path, at least min_route_m long
            torch.testing.assert_close(sp.route[r, 0], path[0])
            torch.testing.assert_close(sp.route[r, int(sp.route_count[r]) - 1], path[-1], atol=1.0, rtol=0)
            assert float(sp.route_length[r]) >= 10.0 - 1.0
        assert len(rows[g][rows[g] >= 0]) <= sc.num_agents
    # the logs are stored once per scene: rows cost only their routes
    per_scene = sp.frames[0].numel() * 4
    assert sp.nbytes < 2 * ego.nbytes + sp.num_scenarios * per_scene / 10


def _two_cars() -> tuple:
    """The straight road: the ego at 10 m/s with a car logged 20 m ahead at 8 m/s, both driven."""
    batch = stack_scenarios([Scenario.from_dict(make_straight_road_scenario(length=120))],
                            self_play=SelfPlayConfig(max_agents=4))
    rows = scene_rows(batch)[0]
    assert int((rows >= 0).sum()) == 2  # the pedestrian and the cyclist replay
    state = reset(batch, rows, CFG)
    return batch, state


def test_driven_vehicles_see_each_other_and_crash_together():
    batch, st = _two_cars()
    driven = alive = torch.ones(2, dtype=torch.bool)
    ego_a, lead_a = (int(a) for a in st.ego_index)
    action = torch.tensor([[0.0, 0.3], [0.0, -1.0]])  # the ego drives on, the lead car brakes to a stop
    for t in range(1, 100):
        st, reward, term, trunc, info = self_play_step(batch, st, action, driven, alive, 2, CFG)
        # each sees the other where it is simulated, not where the log has it
        torch.testing.assert_close(st.agents[0, lead_a, :2], st.ego_xy[1])
        torch.testing.assert_close(st.agents[1, ego_a, :2], st.ego_xy[0])
        assert float(batch.frames[0, t, lead_a, 0]) - float(st.ego_xy[1, 0]) > 0.0 or t < 3
        if bool(term.any()):
            break
    assert bool(info["crash_vehicle"].all()) and bool(term.all())  # the rear-end hits both
    assert float(st.ego_speed[1]) < 0.5 and t < 60  # the lead car had stopped; the log would be 8 m/s on


def test_a_finished_vehicle_leaves_the_scene():
    batch, st = _two_cars()
    driven, alive = torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool)
    lead_a = int(st.ego_index[1])
    action = torch.tensor([[0.0, 0.0], [-1.0, 0.3]])  # the lead car steers off the right edge
    gone = None
    for t in range(1, 80):
        st, reward, term, trunc, info = self_play_step(batch, st, action, driven, alive, 2, CFG)
        assert float(reward[~alive].abs().sum()) == 0.0 and not bool(term[~alive].any())
        if gone is None and bool(term[1]):
            assert bool(info["out_of_road"][1]) and not bool(term[0])
            gone = t
        elif gone is not None:
            assert not bool(st.others[0, lead_a])  # removed, though its log is still on the road
            assert bool(batch.frame_valid[0, t, lead_a])
        alive = alive & ~(term | trunc)
    assert gone is not None and bool(alive[0])


def test_self_play_vecenv_masks_waiting_slots(real_self_play):
    env = SelfPlayVecEnv(real_self_play, 7, BatchedEnvConfig(horizon=60))
    env.seed(0)
    obs = env.reset()
    p = env.per_scene
    assert env.num_envs == 7 * p and obs.shape == (7 * p, env.observation_space.shape[0])
    rows = scene_rows(real_self_play)
    driven = (rows >= 0).reshape(-1).numpy()
    assert np.array_equal(env.alive.numpy(), driven) and not obs[~driven].any() and obs[driven].any(axis=1).all()
    rng = np.random.default_rng(0)
    finished, restarts = 0, 0
    for _ in range(130):
        before = env.alive.clone()
        obs, reward, done, infos = env.step(rng.uniform(-1, 1, (env.num_envs, 2)).astype(np.float32))
        assert np.array_equal(env.acted_active, before.numpy())
        assert not done[~before.numpy()].any() and not reward[~before.numpy()].any()
        for i in np.flatnonzero(done):
            info = infos[i]
            assert info["episode"]["l"] == info["episode_length"] >= 1 and "terminal_observation" in info
            finished += 1
        alive = env.alive.numpy()
        assert not obs[~alive].any() and obs[alive].any(axis=1).all()
        restarts += int((alive & ~before.numpy()).sum() > 0)
    assert finished >= 7 * 2 and restarts >= 2  # every scene ended by the horizon at least twice


def test_masked_buffer_trains_on_the_active_samples_only(real_self_play):
    from stable_baselines3 import PPO

    from sim_bridge.rl.masked import MaskedRolloutBuffer

    env = SelfPlayVecEnv(real_self_play, 7, BatchedEnvConfig(horizon=40))
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, policy_kwargs=dict(net_arch=[16]),
                rollout_buffer_class=MaskedRolloutBuffer, seed=0, device="cpu")
    seen = []
    model.rollout_buffer.active_source = lambda: seen.append(env.acted_active.copy()) or env.acted_active
    model.learn(32 * env.num_envs)
    buf = model.rollout_buffer
    assert np.array_equal(buf.active, np.stack(seen))
    assert 0 < buf.active_samples < buf.active.size  # some slots waited
    got = sum(len(s.observations) for s in buf.get(64))
    assert got == buf.active_samples
    for s in buf.get(64):  # an active slot never observes the all-zero waiting observation
        assert bool(s.observations.abs().sum(-1).gt(0).all())


def test_self_play_config_checks():
    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.rl.train import BatchedConfig, PPOTrainConfig

    scene = EnvConfig(observation="scene")
    with pytest.raises(ValueError, match="algorithm=ppo"):
        PPOTrainConfig(backend="batched", env=scene, algorithm="sac", batched=BatchedConfig(self_play=True))
    with pytest.raises(ValueError, match="reactive_traffic"):
        PPOTrainConfig(backend="batched", env=EnvConfig(observation="scene", reactive_traffic=True),
                       batched=BatchedConfig(self_play=True))
    with pytest.raises(ValueError, match="max_agents"):
        PPOTrainConfig(backend="batched", env=scene, batched=BatchedConfig(self_play=True, self_play_agents=0))


@pytest.mark.parametrize("budget", [100_000])
def test_self_play_ppo_learns_and_drives_held_out_scenes(real_dir, tmp_path, budget):
    """PPO trained by self-play on the 4 real training scenes (34 driven vehicles), then put in the ego's
    seat of the 3 held-out scenes (batched simulator, the episode rules of evaluation) against a random and a
    coasting policy, and driving all their vehicles against random; the run checkpoints and resumes like any
    other. Measured: training route completion 0.13 -> 0.26; held-out 0.66 vs random 0.04, coasting 0.33."""
    import json

    from typer.testing import CliRunner

    from bevgen.cli import app
    from runkit.checkpoint import load_checkpoint
    from sim_bridge.rl.experiment import split_real
    from sim_bridge.rl.train import read_episodes

    train_dir, test_dir, _ = split_real(real_dir, tmp_path / "split", held_out=3)
    run, runner = tmp_path / "run", CliRunner()
    tiny = ["--set", "ppo.n_steps=32", "--set", "ppo.batch_size=256", "--set", "ppo.net_arch=[64, 64]",
            "--set", "ppo.learning_rate=0.001", "--set", f"checkpoint_every={budget // 2}"]
    res = runner.invoke(app, ["sim", "train", "--train", str(train_dir), "--out", str(run), "--backend", "batched",
                              "--self-play", "--slots", "16", "--steps", str(budget // 2)] + tiny)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sim", "train", "--train", str(train_dir), "--out", str(run), "--resume",
                              "--steps", str(budget)])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["config"]["batched"]["self_play"] and ckpt["step"] >= budget
    eps = read_episodes(run)
    first, last = eps[:60], eps[-60:]
    rc = [sum(e["route_completion"] for e in part) / len(part) for part in (first, last)]
    assert rc[1] > rc[0] + 0.1, rc  # the vehicles learn to drive their routes
    got = {}
    for policy in (str(run), "random"):
        out = tmp_path / f"eval_{len(got)}"
        res = runner.invoke(app, ["sim", "eval", "--policy", policy, "--data", str(test_dir), "--out", str(out),
                                  "--backend", "batched", "--no-reference"])
        assert res.exit_code == 0, res.output
        got[policy] = json.loads((out / "metrics.json").read_text())["route_completion"]
    assert got[str(run)] > got["random"] + 0.15, got
    # the untrained policy's mean action barely touches the pedals: it coasts (0.33 here; lr 0 gave 0.35)
    coast = _route_completion(None, test_dir, "coast")
    assert got[str(run)] > coast + 0.15, (got, coast)
    # and with every moving vehicle of the held-out scenes driven by it at once: one row per vehicle
    out = tmp_path / "eval_self_play"
    res = runner.invoke(app, ["sim", "eval", "--policy", str(run), "--data", str(test_dir), "--out", str(out),
                              "--backend", "batched", "--self-play"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    driven = int((scene_rows(load_batched(test_dir, self_play=SelfPlayConfig())) >= 0).sum())
    assert m["num_episodes"] == driven > 3 and any("#" in r["scenario"] for r in m["per_scenario"])
    assert m["route_completion"] > m["reference"]["random"]["route_completion"] + 0.15, m
