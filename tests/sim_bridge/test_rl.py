"""PPO in MetaDrive: it learns, it survives a kill, and evaluation reports the field's metrics."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bevgen.cli import app
from sim_bridge.envs.factory import EnvConfig
from runkit.checkpoint import load_checkpoint
from sim_bridge.rl.evaluate import METRIC_KEYS, EvalConfig, evaluate
from sim_bridge.rl.train import PPOConfig, PPOTrainConfig, train

pytestmark = pytest.mark.metadrive
EASY = EnvConfig(data="procedural", num_scenarios=20, procedural_map_blocks=2, procedural_traffic_density=0.0,
                 horizon=250)
SMALL_PPO = PPOConfig(n_steps=512, batch_size=128, n_epochs=10, net_arch=(64, 64))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ppo") / "run"
    train(PPOTrainConfig(env=EASY, ppo=SMALL_PPO, total_steps=4096, checkpoint_every=1024), run, progress_bar=False)
    return run


def test_ppo_beats_random_policy_on_held_out_maps(trained_run):
    with open(trained_run / "episodes.csv") as f:
        rewards = [float(r["reward"]) for r in csv.DictReader(f)]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]), "training reward rises"
    # scored on 10 maps it never trained on (seeds 1000-1009; training used 0-19), greedy, against random actions
    held_out = replace(EASY, start_index=1000, num_scenarios=10)
    random_rows = evaluate("random", "procedural", EvalConfig(episodes=10, reference=False), held_out)["per_scenario"]
    random_rc = float(np.mean([r["route_completion"] for r in random_rows]))
    greedy = evaluate(str(trained_run), "procedural", EvalConfig(episodes=10, reference=False), held_out)
    assert greedy["route_completion"] > 2 * random_rc + 0.05, (greedy["route_completion"], random_rc)
    assert greedy["episode_reward"] > 2 * float(np.mean([r["episode_reward"] for r in random_rows])) + 3
    # run directory contents: resolved config, TensorBoard events, checkpoints loadable with weights_only
    assert "total_steps: 4096" in (trained_run / "config.yaml").read_text()
    assert list((trained_run / "tb").rglob("events.out.tfevents.*"))
    ckpt = load_checkpoint(trained_run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 4096 and set(ckpt) == {"model", "optimizer", "config", "step", "n_updates", "best_metric"}


def test_kill_and_resume_continues_step_counter(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bevgen.cli", "sim", "train", "--train", "procedural", "--out", str(run),
           "--steps", "2048", "--set", "env.num_scenarios=5", "--set", "env.procedural_map_blocks=1",
           "--set", "checkpoint_every=512", "--set", "ppo.n_steps=256", "--set", "ppo.batch_size=64",
           "--set", "ppo.net_arch=[32, 32]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latest = run / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and load_checkpoint(latest)["step"] >= 1024:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = load_checkpoint(latest)["step"]
    assert 1024 <= killed_at < 2048, "killed mid-run, after at least two checkpoints"
    res = CliRunner().invoke(app, ["sim", "train", "--train", "procedural", "--out", str(run), "--resume"])
    assert res.exit_code == 0, res.output
    assert f"trained steps {killed_at} -> 2048" in res.output.replace("\n", " ")
    assert load_checkpoint(latest)["step"] == 2048
    with open(run / "episodes.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] > killed_at, "the episode log continues from the checkpoint"
    # the resumed run kept the original settings (from config.yaml), not the CLI defaults
    assert "num_scenarios: 5" in (run / "config.yaml").read_text()


def test_resume_without_checkpoint_and_overwrite_are_refused(tmp_path):
    res = CliRunner().invoke(app, ["sim", "train", "--train", "procedural", "--out", str(tmp_path / "r"), "--resume"])
    assert res.exit_code == 2 and "no checkpoints/latest.pt" in res.output


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory, procedural_dir) -> Path:
    """A short PPO run on exported procedural scenarios replayed in ScenarioEnv (same observation as real)."""
    run = tmp_path_factory.mktemp("ppo_scen") / "run"
    train(PPOTrainConfig(env=EnvConfig(data=str(procedural_dir), horizon=200), ppo=SMALL_PPO, total_steps=1024,
                         checkpoint_every=1024), run, progress_bar=False)
    return run


def test_sim_eval_on_real_scenarios(scenario_run, real_dir, tmp_path):
    runner = CliRunner()
    for policy in (str(scenario_run), "random"):
        out = tmp_path / Path(policy).name
        res = runner.invoke(app, ["sim", "eval", "--policy", policy, "--data", str(real_dir), "--out", str(out),
                                  "--set", "horizon=300"] + (["--no-reference", "--episodes", "3"] if policy == "random"
                                                             else []))
        assert res.exit_code == 0, res.output
        m = json.loads((out / "metrics.json").read_text())
        episodes = 3 if policy == "random" else 7
        assert set(METRIC_KEYS) <= set(m) and m["num_episodes"] == episodes and len(m["per_scenario"]) == episodes
        rows = m["per_scenario"]
        # the summary rates are the means of the per-episode outcomes, and each success is defined as documented
        for key, col in (("success_rate", "success"), ("route_completion", "route_completion"),
                         ("crash_rate", "crash"), ("out_of_road_rate", "out_of_road")):
            assert m[key] == pytest.approx(np.mean([float(r[col]) for r in rows]), abs=1e-4), key
        for r in rows:
            assert r["success"] == (r["route_completion"] > 0.95 and not r["crash"] and not r["out_of_road"]), r
            assert r["steps"] <= 300, r  # --set horizon=300
        if policy != "random":
            assert {r["scenario"] for r in m["per_scenario"]} >= {"scene-0061", "2a1e44d405a6833f"}
            ref = m["reference"]
            assert set(ref) == {"random", "idm"} and ref["idm"]["route_completion"] > ref["random"]["route_completion"]
            assert "| reference: idm |" in (out / "metrics.md").read_text()


def test_eval_rejects_unknown_policy(tmp_path, real_dir):
    res = CliRunner().invoke(app, ["sim", "eval", "--policy", str(tmp_path / "nothing"), "--data", str(real_dir),
                                   "--out", str(tmp_path / "o"), "--no-reference"])
    assert res.exit_code == 2 and "not 'random', 'idm' or a training run" in res.output


def test_eval_explains_observation_mismatch(trained_run, real_dir, tmp_path):
    """A MetaDriveEnv (procedural maps) policy cannot drive replayed scenarios: say why, clearly."""
    res = CliRunner().invoke(app, ["sim", "eval", "--policy", str(trained_run), "--data", str(real_dir),
                                   "--out", str(tmp_path / "o"), "--no-reference", "--episodes", "1"])
    assert res.exit_code == 2 and "observe navigation differently" in " ".join(res.output.split())


def test_rollout_command_writes_animation(scenario_run, real_dir, tmp_path):
    from PIL import Image

    res = CliRunner().invoke(app, ["sim", "rollout", "--policy", "idm", "--data", str(real_dir), "--scenario", "5",
                                   "--out", str(tmp_path / "idm"), "--steps", "40"])
    assert res.exit_code == 0, res.output
    gif = Image.open(tmp_path / "idm" / "rollout.gif")
    assert gif.n_frames >= 20 and gif.width > 300
    summary = json.loads((tmp_path / "idm" / "rollout.json").read_text())
    assert summary["steps"] >= 20 and summary["route_completion"] > 0.1, "IDM drives along its route"
    res = CliRunner().invoke(app, ["sim", "rollout", "--policy", str(scenario_run), "--data", str(real_dir),
                                   "--out", str(tmp_path / "ppo"), "--steps", "10"])
    assert res.exit_code == 0, res.output
    assert 1 <= json.loads((tmp_path / "ppo" / "rollout.json").read_text())["steps"] <= 10  # --steps caps it
    assert Image.open(tmp_path / "ppo" / "rollout.gif").width == gif.width


def test_ray_backend_matches_local_processes(procedural_dir, monkeypatch):
    """The distributed path: the same shards as Ray tasks (a local Ray instance here) give the same rows."""
    import ray
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env = EnvConfig(data=str(procedural_dir), horizon=100)
    local = evaluate("idm", str(procedural_dir), EvalConfig(workers=2, backend="process", reference=False), env)
    try:
        dist = evaluate("idm", str(procedural_dir), EvalConfig(workers=2, backend="ray", reference=False), env)
    finally:
        ray.shutdown()
    key = lambda r: r["scenario"]
    assert sorted(local["per_scenario"], key=key) == sorted(dist["per_scenario"], key=key)
    assert local["num_episodes"] == dist["num_episodes"] == 2


def test_interval_is_the_student_t_interval_of_the_mean():
    from sim_bridge.rl.experiment import interval

    s = interval([0.2, 0.4, 0.6])  # sd 0.2, t(0.975, 2) = 4.3027
    assert s["n"] == 3 and s["mean"] == 0.4 and abs(s["high"] - (0.4 + 4.3027 * 0.2 / 3 ** 0.5)) < 1e-3
    assert abs((s["mean"] - s["low"]) - (s["high"] - s["mean"])) < 1e-4
    assert interval([0.7]) == {"mean": 0.7, "low": 0.7, "high": 0.7, "n": 1}


def test_experiment_command_smoke(real_dir, tmp_path):
    """Tiny budget: the plumbing (split, arms, seeds, held-out eval, intervals, JSON + plot) works end to end."""
    out = tmp_path / "exp"
    res = CliRunner().invoke(app, [
        "sim", "experiment", "--real", str(real_dir), "--out", str(out), "--budget", "256", "--held-out", "2",
        "--envs", "1", "--seeds", "2", "--backend", "batched", "--set", "train.batched.num_scenes=2",
        "--set", "procedural_scenarios=2", "--set", "train.ppo.n_steps=128",
        "--set", "train.ppo.batch_size=64", "--set", "train.ppo.net_arch=[32, 32]",
        "--set", "train.env.horizon=60", "--set", "train.checkpoint_every=256"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"procedural", "real"} and "augmented" in results["skipped"]
    assert results["seeds"] == [0, 1] and "95% interval" in res.output
    assert len(results["held_out"]) == 2 and len({n.split("_")[1] for n in results["held_out"]}) == 2, \
        "held-out scenes mix datasets"
    held_out = set(results["held_out"])
    train_names = {p.name for p in (out / "real_train").glob("sd_*.pkl")}
    assert train_names and not (train_names & held_out), "no held-out scene is trained on"
    for arm in results["arms"].values():
        assert [r["seed"] for r in arm["runs"]] == [0, 1]
        assert all(r["held_out"]["num_episodes"] == 2 and r["curve"] for r in arm["runs"])
        rc = [r["held_out"]["route_completion"] for r in arm["runs"]]
        s = arm["summary"]["route_completion"]
        assert s["n"] == 2 and abs(s["mean"] - np.mean(rc)) < 1e-3 and s["low"] <= s["mean"] <= s["high"]
    assert set(results["reference"]) == {"random", "idm"}
    from PIL import Image

    assert Image.open(out / "experiment.png").width > 800
