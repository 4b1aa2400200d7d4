"""TrafficGen end to end: train the tiny model, generate and augment scenarios, replay them in MetaDrive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import Scenario, load_scenario_dict
from traffic.generate import GenerateConfig, augment, generate
from traffic.train import TrafficTrainConfig, load_models, train

pytestmark = pytest.mark.metadrive


@pytest.fixture(scope="module")
def real_split(tmp_path_factory, real_dir) -> tuple[Path, Path]:
    """The benchmark's split of the real scenes: 4 to train on, 3 held out (nuScenes 0916 and 0655, one Waymo)."""
    from sim_bridge.rl.experiment import split_real

    train_dir, test_dir, _ = split_real(real_dir, tmp_path_factory.mktemp("split"), held_out=3)
    return train_dir, test_dir


@pytest.fixture(scope="module")
def traffic_run(tmp_path_factory, procedural_dir, real_split) -> tuple[Path, dict]:
    """The tiny models after 40 steps on the procedural scenes and the 4 real training scenes, at a constant
    learning rate (a cosine decay over 40 steps, half of them warm-up, leaves the placement model half-trained:
    size + speed MMD 0.91 against random's 1.02)."""
    run = tmp_path_factory.mktemp("traffic") / "run"
    cfg = TrafficTrainConfig(data=(str(procedural_dir), str(real_split[0])), steps=40, batch_size=6,
                             start_frames=(0, 20), checkpoint_every=20, seed=0, schedule="constant")
    summary = train(cfg, run, progress=False)
    return run, summary


def _subset(real_dir: Path, names: list[str], out: Path) -> Path:
    """A dataset directory holding byte-identical copies of some real scenes."""
    import shutil

    from sim_bridge.dataset import write_index

    out.mkdir()
    ds = ScenarioDataset(real_dir)
    for name in names:
        shutil.copy(ds.path_of(name), out / name)
    write_index(out, {n: ds.summary[n] for n in names})
    return out


def test_training_loss_falls_and_run_is_complete(traffic_run):
    run, summary = traffic_run
    losses = [h["total"] for h in summary["history"]]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), (losses[:8], losses[-8:])
    assert summary["samples"] > 10 and not summary["problems"]
    assert "steps: 40" in (run / "config.yaml").read_text() and list((run / "tb").glob("events.*"))
    placement, trajectory, cfg = load_models(run)  # strict, weights_only
    assert cfg.steps == 40


def test_resume_continues(traffic_run, tmp_path):
    """A resumed run goes on from its step; its last steps see the scenes in random frames (symmetry)."""
    run, _ = traffic_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = TrafficTrainConfig(**{**load_models(copy)[2].__dict__, "steps": 44, "symmetry": "rotate_mirror"})
    summary = train(cfg, copy, resume=True, progress=False)
    assert summary["start_step"] == 40 and summary["final_step"] == 44 and len(summary["history"]) == 4
    assert all(np.isfinite(h["total"]) for h in summary["history"])
    assert "symmetry: rotate_mirror" in (copy / "config.yaml").read_text()
    with pytest.raises(ValueError, match="symmetry"):
        TrafficTrainConfig(symmetry="flip")


def test_generate_keeps_sizes_limits_and_replays(traffic_run, real_dir, tmp_path):
    run, _ = traffic_run
    out = tmp_path / "gen"
    report, stats = generate(real_dir, run, out, GenerateConfig(num_vehicles=12, batch_size=4))
    assert not report.failed and len(report.written) == 7
    assert stats["requested"] == 7 * 12, stats
    ds = ScenarioDataset(out)
    counts = []
    for name in ds.names:
        raw, src = load_scenario_dict(ds.path_of(name)), load_scenario_dict(Path(real_dir) / name)
        gen = {k: t for k, t in raw["tracks"].items() if k.startswith("bevgen_vehicle_")}
        counts.append(len(gen))
        assert len(gen) == raw["metadata"]["bevgen_traffic"]["generated_vehicles"] <= 12, name
        assert set(raw["tracks"]) == set(gen) | {str(src["metadata"]["sdc_id"])}, "only the ego is kept"
        for t in gen.values():
            assert t["type"] == "VEHICLE"
            L, W = t["state"]["length"], t["state"]["width"]
            assert (2.5 - 1e-4 <= L[0] <= 12 + 1e-4 and 1.4 - 1e-4 <= W[0] <= 3 + 1e-4
                    and np.all(L == L[0]) and np.all(W == W[0]))
        # real speed limits and the whole map carried over untouched
        for fid, f in src["map_features"].items():
            if fid in raw["map_features"] and "speed_limit_kmh" in f:
                assert raw["map_features"][fid]["speed_limit_kmh"] == f["speed_limit_kmh"]
        assert raw["metadata"]["bevgen_traffic"]["mode"] == "generate"
    # the asked-for 12 vehicles per scene are written (oversampling covers the dropped ones)
    assert sum(counts) == stats["placed"] >= 0.9 * stats["requested"], (counts, stats)
    # generated vehicles drive along the lane graph: on the road surface at every step (even with this 40-step
    # model), without kinematic jumps or spins, and into nobody
    from traffic.metrics import collision_hits, kinematic_counts, on_road

    steps = on = kin = kin_bad = 0
    for sc in ds:
        new = np.array([i.startswith("bevgen_vehicle_") for i in sc.tracks.ids])
        pts = sc.tracks.xy[new][sc.tracks.valid[new]]
        steps += len(pts)
        on += int(on_road(sc, pts).sum())
        k = kinematic_counts(sc)  # non-ego vehicles: here only generated ones
        kin, kin_bad = kin + k["steps"], kin_bad + k["violations"]
        assert not collision_hits(sc)[new].any(), sc.id
    assert steps and on / steps >= 0.99 and kin_bad / kin <= 0.01, (on, steps, kin_bad, kin)
    from sim_bridge.envs.factory import EnvConfig, make_env

    env = make_env(EnvConfig(data=str(out)))
    try:
        for seed in range(len(ds)):
            env.reset(seed=seed)
            n_objects = len(env.engine.traffic_manager.spawned_objects)
            for _ in range(20):
                env.step([0.0, 0.3])
            assert n_objects >= 1
    finally:
        env.close()


def test_generated_traffic_beats_random_on_lanes_on_held_out_scenes(traffic_run, real_split, tmp_path):
    """On the 3 real scenes the model never saw, 12 generated vehicles per scene against 12 random-on-lanes ones
    (uniform on lane centre lines, speed uniform up to the limit, straight constant-velocity motion), both
    scored against the logged traffic. Measured (seed 0): off-road 0.0 vs 0.35, collisions 0.0 vs 0.78, size +
    speed MMD 0.81 vs 1.02. Each broken generator fails here: motion that ignores the lane graph (off-road 0.31),
    placement that ignores the lanes (19 of 36 placed; size + speed MMD 0.98), random weights (0.98)."""
    from traffic.baselines import random_lane_traffic
    from traffic.metrics import evaluate_traffic

    run, _ = traffic_run
    test_dir = real_split[1]
    report, stats = generate(test_dir, run, tmp_path / "gen", GenerateConfig(num_vehicles=12, batch_size=4))
    assert not report.failed and stats["placed"] >= 0.9 * stats["requested"] == 0.9 * 36, stats
    ref = list(ScenarioDataset(test_dir))
    rng = np.random.default_rng(0)
    model = evaluate_traffic(ScenarioDataset(tmp_path / "gen"), ref)
    rand = evaluate_traffic([random_lane_traffic(sc, 12, sc.length, rng) for sc in ref], ref)
    assert model["offroad_rate"] <= 0.02 and rand["offroad_rate"] >= model["offroad_rate"] + 0.1, (model, rand)
    assert model["collision_rate"] <= 0.02 and rand["collision_rate"] >= model["collision_rate"] + 0.2
    learned = lambda m: m["mmd_size"] + m["mmd_speed"]  # noqa: E731  (what the placement model samples)
    assert learned(model) <= learned(rand) - 0.12, (learned(model), learned(rand))


def _five_real(real_dir: Path, out: Path) -> Path:
    """Four nuScenes scenes and one Waymo scene (the two densest real scenes take 3/4 of augment's time)."""
    names = [n for n in ScenarioDataset(real_dir).names if n.endswith(("0061.pkl", "0103.pkl", "0553.pkl",
                                                                          "0916.pkl", "8a346109094cd5aa.pkl"))]
    assert len(names) == 5, names
    return _subset(real_dir, names, out)


def test_augment_doubles_traffic_and_keeps_logged_agents(traffic_run, real_dir, tmp_path):
    run, _ = traffic_run
    data = _five_real(real_dir, tmp_path / "subset")
    out = tmp_path / "aug"
    report, stats = augment(data, run, out, GenerateConfig(density=2.0, batch_size=4))
    assert not report.failed
    ds = ScenarioDataset(out)
    range_m = load_models(run)[2].encoding.range_m
    added_total, wanted_total = 0, 0
    for name in ds.names:
        raw, src = load_scenario_dict(ds.path_of(name)), load_scenario_dict(data / name)
        # density 2: as many new vehicles as were logged near the ego at frame 0 (at least one)
        log = Scenario.from_dict(src, repair=True)
        tr, ego = log.tracks, log.ego_index
        near = np.abs(tr.xy[:, 0] - tr.xy[ego, 0]).max(-1) <= range_m
        logged_near = int(sum(t == "VEHICLE" and v and n for t, v, n in zip(tr.types, tr.valid[:, 0], near))) - 1
        wanted = max(logged_near, 1)
        for aid, t in src["tracks"].items():  # every logged agent bit-identical
            mine = raw["tracks"][aid]
            assert mine["type"] == t["type"]
            for k, v in t["state"].items():
                assert np.array_equal(np.asarray(mine["state"][k]), np.asarray(v)) and \
                    np.asarray(mine["state"][k]).dtype == np.asarray(v).dtype, (name, aid, k)
        added = sum(k.startswith("bevgen_vehicle_") for k in raw["tracks"])
        assert added == raw["metadata"]["bevgen_traffic"]["generated_vehicles"] <= wanted, (name, added, wanted)
        added_total += added
        wanted_total += wanted
    # the vehicle count near the ego (nearly) doubles: inserted vehicles drive the lane graph and keep their gaps,
    # but replayed traffic cannot brake for them, and vehicles a logged car would still run into are dropped. With
    # this 40-step model and two refill rounds 64 of the 65 asked for are placed on these five scenes (measured);
    # the bar is 90%. The benchmark's model places 116 of 137 on all seven.
    assert stats["requested"] == wanted_total and stats["placed"] == added_total, (stats, wanted_total)
    assert added_total >= 0.9 * wanted_total and added_total > 10, (added_total, wanted_total)
    from traffic.metrics import collision_hits

    for sc in ds:  # inserted vehicles wait rather than drive into anybody; ones still hit were dropped
        new = np.array([i.startswith("bevgen_vehicle_") for i in sc.tracks.ids])
        assert not collision_hits(sc)[new].any(), sc.id


def test_torchrun_ddp_two_ranks_on_cpu(procedural_dir, tmp_path):
    """Multi-process data parallel through torchrun (gloo on CPU; nccl on GPUs with the same code)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "traffic.train", "--data", str(procedural_dir), "--out", str(run), "--set", "steps=6",
           "--set", "batch_size=2", "--set", "checkpoint_every=3", "--set", "start_frames=[0]", "--set", "device=cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    placement, trajectory, cfg = load_models(run)
    assert cfg.steps == 6
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["final_step"] == 6 and summary["samples"] >= 1  # rank 0's shard


def test_augment_extend_continues_short_tracks(traffic_run, real_dir, tmp_path):
    run, _ = traffic_run
    out = tmp_path / "ext"
    data = _five_real(real_dir, tmp_path / "subset")
    report, stats = augment(data, run, out, GenerateConfig(density=1.0, batch_size=4, extend=True))
    assert not report.failed and stats.get("extended", 0) > 0
    checked = 0
    for name in ScenarioDataset(out).names:
        raw, src = load_scenario_dict(Path(out) / name), load_scenario_dict(data / name)
        for aid, t in src["tracks"].items():
            mine = raw["tracks"][aid]["state"]
            logged = np.asarray(t["state"]["valid"]).astype(bool).reshape(-1)
            for k, v in t["state"].items():  # logged steps unchanged
                a, b = np.asarray(mine[k]), np.asarray(v)
                assert a.dtype == b.dtype and np.array_equal(a[logged], b[logged]), (aid, k)
            start = raw["tracks"][aid].get("metadata", {}).get("bevgen_extended_from")
            if start is not None:
                checked += 1
                valid = np.asarray(mine["valid"]).astype(bool).reshape(-1)
                assert valid[start:].all() and not logged[start:].any()
                step = np.linalg.norm(np.diff(np.asarray(mine["position"])[start - 1:, :2], axis=0), axis=1)
                assert step.max() < 3.5, "continuations move continuously from the last logged pose (< 35 m/s)"
    assert checked == stats["extended"]


def test_traffic_eval_writes_the_realism_metric(traffic_run, real_dir, tmp_path):
    """`bevgen traffic eval --ckpt --generated`: the realism meta-metric of the model and the baselines, with
    definitions, and the MMDs with their reference points."""
    from typer.testing import CliRunner

    from bevgen.cli import app

    run, _ = traffic_run
    ref = _subset(real_dir, ScenarioDataset(real_dir).names[5:6], tmp_path / "ref")  # one Waymo scene (9.1 s)
    res = CliRunner().invoke(app, ["traffic", "eval", "--reference", str(ref), "--ckpt", str(run), "--rollouts", "4",
                                   "--generated", str(ref), "--out", str(tmp_path / "eval")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    r = m["realism"]
    assert set(r) == {"model", "constant_velocity", "random", "logged"} and "weights" in m["realism_definitions"]
    assert r["logged"]["meta_metric"] > r["random"]["meta_metric"] and r["logged"]["min_ade"] == 0.0
    assert all(len(v["per_scene"]) == 1 for v in r.values()) and "meta-metric" in res.output
    # the log against itself scores 0; the reference points say what an MMD can reach on these scenes
    refs = m["mmd_references"]
    assert m["mmd_position"] == 0.0 and set(refs) == set(m["mmd_references_definitions"])
    assert 0.0 < refs["logged_resampled"]["mean"] < 0.5 and "logged_on_lanes" in res.output


def test_a_checkpoint_from_before_the_history_input_is_refused_with_a_clear_error(traffic_run, tmp_path):
    import shutil

    from runkit.checkpoint import load_checkpoint, save_checkpoint

    run, _ = traffic_run
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    path = old / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(path)
    for key in [k for k in ckpt["model"]["trajectory"] if k.startswith("encoder.hist_embed.")]:
        del ckpt["model"]["trajectory"][key]
    save_checkpoint(path, **ckpt)
    with pytest.raises(ValueError, match="agent_hist.*retrain"):
        load_models(old)
    load_models(run)  # the untouched run still loads


def test_generate_command_resumes_only_with_its_own_settings(traffic_run, real_dir, tmp_path):
    """`bevgen traffic generate` into a folder that holds a run: the same settings resume it (its scenes kept and
    counted as kept); other settings, or a checkpoint that does not load, are refused with the run's record and
    scenes untouched."""
    from typer.testing import CliRunner

    from bevgen.cli import app

    run, _ = traffic_run
    data = _subset(real_dir, ["sd_nuscenes_v1.0-mini_scene-0061.pkl", "sd_nuscenes_v1.0-mini_scene-0103.pkl"],
                   tmp_path / "data")
    out, runner = tmp_path / "gen", CliRunner()
    args = ["traffic", "generate", "--data", str(data), "--ckpt", str(run), "--out", str(out), "-n", "4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    record = (out / "bevgen_run.yaml").read_text()
    files = {p.name: p.read_bytes() for p in out.glob("sd_*.pkl")}
    assert len(files) == 2 and "num_vehicles: 4" in record
    res = runner.invoke(app, args)  # the same command again: nothing to do, both scenes kept
    assert res.exit_code == 0 and "wrote 0, kept 2" in " ".join(res.output.split()), res.output
    for bad, why in ((args[:-1] + ["8"], "num_vehicles"),
                     (args[:4] + ["--ckpt", str(tmp_path / "no_run")] + args[6:], "ckpt")):
        res = runner.invoke(app, bad)
        assert res.exit_code == 2 and why in " ".join(res.output.split()), res.output
        assert "Traceback" not in res.output
    assert (out / "bevgen_run.yaml").read_text() == record
    assert {p.name: p.read_bytes() for p in out.glob("sd_*.pkl")} == files
    fresh = ["traffic", "generate", "--data", str(data), "--ckpt", str(tmp_path / "no_run"), "--out",
             str(tmp_path / "g2")]
    res = runner.invoke(app, fresh)
    assert res.exit_code == 2 and not (tmp_path / "g2").exists(), res.output  # a bad checkpoint writes nothing
