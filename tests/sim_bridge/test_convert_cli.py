"""`bevgen scenarios convert waymo|nuscenes` end to end: files in, dataset dir out, replayed in MetaDrive."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bevgen.cli import app
from nuscenes_fixture import write_nuscenes_fixture
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.sources import waymo as W
from test_waymo_source import _real_to_proto, make_scenario

runner = CliRunner()
pytestmark = pytest.mark.metadrive


def _replay_all(data_dir) -> list[int]:
    """Reset every scenario of ``data_dir`` in MetaDrive's ScenarioEnv and step through its frames."""
    from metadrive.policy.replay_policy import ReplayEgoCarPolicy

    from sim_bridge.envs.metadrive import make_scenario_env

    n = len(ScenarioDataset(data_dir))
    env = make_scenario_env(data_dir, num_scenarios=n, agent_policy=ReplayEgoCarPolicy, reactive_traffic=False)
    steps = []
    try:
        for seed in range(n):
            env.reset(seed=seed)
            length = env.engine.data_manager.current_scenario_length
            for _ in range(length - 1):
                env.step([0.0, 0.0])
            steps.append(env.engine.episode_step)
    finally:
        env.close()
    return steps


def test_convert_waymo_command_and_replay(real_dir, tmp_path):
    """Real Waymo scenes rebuilt as protos + a synthetic one -> TFRecord -> CLI -> MetaDrive."""
    from sim_bridge.scenario import load_scenario_dict

    ds = ScenarioDataset(real_dir)
    protos = [_real_to_proto(load_scenario_dict(ds.path_of(n))) for n in ds.names if "tfrecord" in n]
    protos.append(make_scenario("synthetic01"))
    rec = tmp_path / "training.tfrecord-00000-of-00001"
    W.write_tfrecord(rec, [p.SerializeToString() for p in protos])
    out = tmp_path / "waymo"
    res = runner.invoke(app, ["scenarios", "convert", "waymo", str(rec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "repaired" in res.output, "the real 1-point lane is dropped and reported"
    conv = ScenarioDataset(out)
    assert len(conv) == 3 and all(n.startswith("sd_training.tfrecord-00000-of-00001_") for n in conv.names)
    steps = _replay_all(out)
    assert steps == [sc.length - 1 for sc in conv]


def test_convert_nuscenes_command_and_replay(tmp_path):
    root = write_nuscenes_fixture(tmp_path / "nusc", "v1.0-mini")
    out = tmp_path / "out"
    res = runner.invoke(app, ["scenarios", "convert", "nuscenes", "--dataroot", str(root), "--version", "v1.0-mini",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    conv = ScenarioDataset(out)
    assert len(conv) == 2 and "version: v1.0-mini" in (out / "bevgen_run.yaml").read_text()
    for sc in conv:
        ego = sc.tracks.speed[sc.ego_index]
        assert np.median(ego) == pytest.approx(10.0, rel=0.05)  # the fixture's ego drives at 10 m/s
    assert _replay_all(out) == [sc.length - 1 for sc in conv]


def test_convert_nuscenes_bad_dataroot_is_clear(tmp_path):
    res = runner.invoke(app, ["scenarios", "convert", "nuscenes", "--dataroot", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "nope" in res.output
