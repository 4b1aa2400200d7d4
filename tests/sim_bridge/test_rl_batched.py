"""PPO on the batched simulator: `sim train --backend batched` trains, checkpoints and resumes; `sim eval`
runs its policy in both simulators (MetaDrive through the shared "scene" observation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bevgen.cli import app
from runkit.checkpoint import load_checkpoint
from sim_bridge.envs.factory import EnvConfig
from sim_bridge.rl.evaluate import METRIC_KEYS
from sim_bridge.rl.train import BatchedConfig, PPOConfig, PPOTrainConfig

TINY = ["--set", "ppo.n_steps=64", "--set", "ppo.batch_size=256", "--set", "ppo.n_epochs=2",
        "--set", "ppo.net_arch=[32, 32]", "--set", "checkpoint_every=512"]


def test_batched_backend_config_checks():
    with pytest.raises(ValueError, match="env.observation=scene"):
        PPOTrainConfig(backend="batched")
    with pytest.raises(ValueError, match="batched.num_scenes"):  # rollout = n_steps x scene slots
        PPOTrainConfig(backend="batched", env=EnvConfig(observation="scene"), batched=BatchedConfig(num_scenes=3),
                       ppo=PPOConfig(n_steps=10, batch_size=64))


@pytest.fixture(scope="module")
def batched_run(real_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ppo_batched") / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--backend", "batched",
                              "--slots", "8", "--steps", "1024", "--scenarios", "2"] + TINY)
    assert res.exit_code == 0, res.output
    assert "trained steps 0 -> 1024" in res.output.replace("\n", " ")
    res = runner.invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--resume",
                              "--steps", "1536"])
    assert res.exit_code == 0, res.output
    assert "trained steps 1024 -> 1536" in res.output.replace("\n", " ")
    return run


def test_sim_train_batched_checkpoints_and_resumes(batched_run):
    ckpt = load_checkpoint(batched_run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 1536 and ckpt["config"]["backend"] == "batched"
    assert ckpt["config"]["env"]["observation"] == "scene" and ckpt["config"]["batched"]["num_scenes"] == 8
    assert (batched_run / "checkpoints" / "step_000001024.pt").exists()
    assert list((batched_run / "tb").rglob("events.out.tfevents.*"))
    assert "backend: batched" in (batched_run / "config.yaml").read_text()  # the resume kept the run's settings


@pytest.mark.parametrize("backend", ["batched", pytest.param("metadrive", marks=pytest.mark.metadrive)])
def test_sim_eval_runs_the_batched_policy_in_both_simulators(batched_run, real_dir, tmp_path, backend):
    out = tmp_path / backend
    res = CliRunner().invoke(app, ["sim", "eval", "--policy", str(batched_run), "--data", str(real_dir),
                                   "--out", str(out), "--backend", backend, "--episodes", "2", "--no-reference",
                                   "--set", "horizon=40", "--set", "num_scenarios=2"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(m) and m["num_episodes"] == 2
    assert all(r["steps"] <= 40 for r in m["per_scenario"])
    assert m["config"]["env"]["observation"] == "scene"  # taken from the run, not the CLI default
    assert {r["scenario"] for r in m["per_scenario"]} == {"scene-0061", "scene-0103"}
