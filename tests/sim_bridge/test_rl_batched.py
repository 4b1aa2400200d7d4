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
from sim_bridge.rl.warmstart import WarmStartConfig

TINY = ["--set", "ppo.n_steps=64", "--set", "ppo.batch_size=256", "--set", "ppo.n_epochs=2",
        "--set", "ppo.net_arch=[32, 32]", "--set", "checkpoint_every=512"]


def test_batched_backend_config_checks():
    with pytest.raises(ValueError, match="env.observation=scene"):
        PPOTrainConfig(backend="batched")
    with pytest.raises(ValueError, match="batched.num_scenes"):  # rollout = n_steps x scene slots
        PPOTrainConfig(backend="batched", env=EnvConfig(observation="scene"), batched=BatchedConfig(num_scenes=3),
                       ppo=PPOConfig(n_steps=10, batch_size=64))
    # a bad observation layout is refused with the field named, before anything trains
    res = CliRunner().invoke(app, ["sim", "train", "--train", "procedural", "--out", "/nonexistent/run",
                                   "--backend", "batched", "--set", "env.scene_obs.agents=0"])
    assert res.exit_code == 2 and "scene_obs" in res.output, res.output


@pytest.fixture(scope="module")
def batched_run(real_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ppo_batched") / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--backend", "batched",
                              "--slots", "8", "--steps", "1024", "--scenarios", "2",
                              "--set", "env.scene_obs.agents=4", "--set", "env.scene_obs.route_points=5"] + TINY)
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
    # the observation layout is a config field: 6 ego values + 7 x 4 agents + 2 x 5 route points + 2 x 8 edge points
    assert ckpt["config"]["env"]["scene_obs"] == {"agents": 4, "route_points": 5, "route_spacing_m": 2.0,
                                                  "edge_points": 8, "range_m": 50.0}
    first = next(v for k, v in ckpt["model"].items() if k.endswith("weight") and v.dim() == 2)
    assert first.shape[1] == 6 + 28 + 10 + 16
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
    assert m["config"]["env"]["scene_obs"]["agents"] == 4 and m["config"]["env"]["scene_obs"]["route_points"] == 5
    assert {r["scenario"] for r in m["per_scenario"]} == {"scene-0061", "scene-0103"}


def test_sim_train_on_several_directories(real_dir, tmp_path):
    """Several --train folders are indexed together (no copy): a name two folders share stays apart under its
    folder's prefix, the run trains on all of them, and MetaDrive's ScenarioEnv reads the merged index."""
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.rl.experiment import split_real

    _, test_dir, test_names = split_real(real_dir, tmp_path, 2)  # copies of two real scenes: same file names
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--train", str(test_dir), "--out",
                                   str(run), "--backend", "batched", "--slots", "4", "--steps", "256"] + TINY)
    assert res.exit_code == 0, res.output
    merged = ScenarioDataset(run / "train_data")
    real = ScenarioDataset(real_dir)
    assert len(merged) == len(real) + 2
    assert set(real.names) <= set(merged.names)
    copies = {f"sd_real_test__{n[3:]}" for n in ScenarioDataset(test_dir).names}
    assert copies <= set(merged.names)
    assert all(merged.load(n).id for n in copies)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["config"]["env"]["data"] == str(run / "train_data")
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--train", "procedural", "--out",
                                   str(tmp_path / "bad")])
    assert res.exit_code != 0 and "bevgen scenarios procedural" in res.output


@pytest.mark.metadrive
def test_metadrive_reads_a_merged_index(real_dir, tmp_path):
    from sim_bridge.dataset import ScenarioDataset, merge_datasets
    from sim_bridge.envs.factory import make_env
    from sim_bridge.rl.experiment import split_real

    _, test_dir, _ = split_real(real_dir, tmp_path, 1)
    merged = ScenarioDataset(merge_datasets([real_dir, test_dir], tmp_path / "merged"))
    last = len(merged) - 1  # the prefixed copy, read through its link
    assert merged.names[last].startswith("sd_real_test__")
    env = make_env(EnvConfig(data=str(merged.root), horizon=5))
    try:
        env.reset(seed=last)
        summary = env.unwrapped.engine.data_manager.current_scenario_summary
        assert summary["id"] == merged.summary[merged.names[last]]["id"]
    finally:
        env.close()


def test_traffic_curriculum_keeps_a_share_of_the_logged_agents(real_dir):
    from sim_bridge.batched.env import BatchedEnvConfig, BatchedVecEnv
    from sim_bridge.batched.state import load_batched
    from sim_bridge.rl.train import CurriculumConfig

    batch = load_batched(real_dir)
    counts = {}
    for frac in (1.0, 0.5, 0.0):
        env = BatchedVecEnv(batch, 64, BatchedEnvConfig())
        env.set_attr("traffic_fraction", frac)
        env.reset()
        counts[frac] = float(env.state.others.sum())
    assert counts[0.0] == 0 and 0.35 * counts[1.0] < counts[0.5] < 0.65 * counts[1.0], counts
    ramp = CurriculumConfig(traffic_start=0.2, steps=1000)
    assert ramp.fraction(0) == 0.2 and abs(ramp.fraction(500) - 0.6) < 1e-9 and ramp.fraction(5000) == 1.0
    assert CurriculumConfig().fraction(0) == 1.0 and not CurriculumConfig().active
    with pytest.raises(ValueError, match="backend=batched"):
        PPOTrainConfig(curriculum=ramp)


def test_action_noise_schedule():
    ppo = PPOConfig(final_std=0.04, std_anneal_fraction=0.5)
    assert ppo.std_cap(499, 1000) is None and ppo.std_cap(500, 1000) == 1.0
    assert ppo.std_cap(750, 1000) == pytest.approx(0.2) and ppo.std_cap(1000, 1000) == pytest.approx(0.04)
    assert PPOConfig().std_cap(1000, 1000) is None  # off by default
    with pytest.raises(ValueError, match="final_std"):
        PPOConfig(final_std=1.5)


def test_warm_start_curriculum_and_noise_annealing_run_and_resume(real_dir, tmp_path):
    """All three are config fields of a run: the clone happens once (not again on --resume), the traffic share
    follows the step counter across the resume, and the saved policy's action std ends at ppo.final_std."""
    run = tmp_path / "run"
    extra = TINY + ["--set", "warm_start.demonstrations=log", "--set", "warm_start.steps=20",
                    "--set", "curriculum.traffic_start=0.2", "--set", "curriculum.steps=1024",
                    "--set", "ppo.final_std=0.1", "--set", "ppo.std_anneal_fraction=0.75"]
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--backend", "batched",
                                   "--slots", "4", "--steps", "512", "--scenarios", "3"] + extra)
    assert res.exit_code == 0, res.output
    stats = json.loads((run / "warm_start.json").read_text())
    assert stats["steps"] == 20 and stats["rows"] > 100
    first = (run / "warm_start.json").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--resume",
                                   "--steps", "1024"])
    assert res.exit_code == 0, res.output
    assert (run / "warm_start.json").stat().st_mtime_ns == first
    cfg = load_checkpoint(run / "checkpoints" / "latest.pt")["config"]
    assert cfg["warm_start"]["demonstrations"] == "log" and cfg["curriculum"]["traffic_start"] == 0.2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fracs = []
    for events in sorted((run / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "charts/traffic_fraction" in acc.Tags()["scalars"]:
            fracs += [(e.step, e.value) for e in acc.Scalars("charts/traffic_fraction")]
    fracs.sort()
    assert fracs and fracs[0][1] < 0.5 and all(b[1] >= a[1] for a, b in zip(fracs, fracs[1:]))
    assert any(step > 512 for step, _ in fracs)  # the resumed part continues the ramp
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert float(saved["model"]["log_std"].exp().max()) <= 0.1 + 1e-6
    assert saved["config"]["ppo"]["final_std"] == 0.1


def test_sac_trains_resumes_and_evaluates(real_dir, tmp_path):
    """algorithm=sac: the same run directory, checkpoints (every optimizer and the entropy coefficient) and
    --resume; the saved actor drives `sim eval`."""
    run = tmp_path / "sac"
    sac = ["--set", "algorithm=sac", "--set", "sac.learning_starts=128", "--set", "sac.gradient_steps=2",
           "--set", "sac.batch_size=64", "--set", "sac.net_arch=[32, 32]", "--set", "sac.buffer_size=4096",
           "--set", "checkpoint_every=256"]
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--backend", "batched",
                                   "--slots", "8", "--steps", "512", "--scenarios", "2"] + sac)
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["config"]["algorithm"] == "sac" and set(ckpt["optimizer"]) == {"actor", "critic", "ent_coef"}
    assert ckpt["n_updates"] > 0 and ckpt["log_ent_coef"].numel() == 1
    res = CliRunner().invoke(app, ["sim", "train", "--train", str(real_dir), "--out", str(run), "--resume",
                                   "--steps", "768"])
    assert res.exit_code == 0, res.output
    assert "trained steps 512 -> 768" in res.output.replace("\n", " ")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["sim", "eval", "--policy", str(run), "--data", str(real_dir), "--out", str(out),
                                   "--backend", "batched", "--episodes", "2", "--no-reference",
                                   "--set", "num_scenarios=2"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["num_episodes"] == 2
    with pytest.raises(ValueError, match="algorithm=ppo"):
        PPOTrainConfig(algorithm="sac", env=EnvConfig(observation="scene"),
                       warm_start=WarmStartConfig(demonstrations="log"))


@pytest.mark.metadrive
def test_sim_rollout_drives_a_batched_policy_in_metadrive(batched_run, real_dir, tmp_path):
    """The rollout reads the run's observation ("scene") from its checkpoint and draws MetaDrive's ego."""
    res = CliRunner().invoke(app, ["sim", "rollout", "--policy", str(batched_run), "--data", str(real_dir),
                                   "--scenario", "1", "--steps", "12", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "rollout.json").read_text())
    assert 1 <= summary["steps"] <= 12 and (tmp_path / "rollout.gif").stat().st_size > 1000


@pytest.mark.metadrive
def test_init_policy_starts_a_metadrive_run_from_a_batched_one(batched_run, real_dir, tmp_path):
    """A policy trained on the batched backend starts a MetaDrive run (fine-tuning in the reference simulator):
    the fresh learner holds its weights exactly; a run whose network does not fit is refused with the reason."""
    import torch

    from runkit.config import load_config
    from sim_bridge.rl.train import _init_policy, _model, make_train_env

    src = load_checkpoint(batched_run / "checkpoints" / "latest.pt")
    sets = ["backend=metadrive", f"env.data={real_dir}", "env.observation=scene", "env.scene_obs.agents=4",
            "env.scene_obs.route_points=5", "ppo.net_arch=[32, 32]", f"init_policy={batched_run}",
            "ppo.n_steps=64", "ppo.batch_size=64"]
    cfg = load_config(PPOTrainConfig, None, sets)
    env = make_train_env(cfg)
    try:
        model = _model(cfg, env, None)
        _init_policy(model, cfg)
        for k, v in model.policy.state_dict().items():
            assert torch.equal(v, src["model"][k]), k
        wide = load_config(PPOTrainConfig, None, sets[:-3] + ["ppo.net_arch=[64, 64]", f"init_policy={batched_run}"])
        with pytest.raises(ValueError, match="does not fit"):
            _init_policy(_model(wide, env, None), wide)
    finally:
        env.close()
