"""``make checkpoints-hires`` (``bevgen.pretrained.build_hires``): the 128x224 recipe runs ``hires.yaml`` on the
shipped models' frames, resumes an interrupted run, and exports weights without optimizer state where
``shipped("views_hires")`` finds them. ``make checkpoints`` (``build``): the views decoder's segments, in order, and
the real-layout frames they train on."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_build_hires_trains_hires_config_resumes_and_exports_slim_weights(tmp_path, monkeypatch):
    from bevgen import pretrained
    from runkit.checkpoint import load_checkpoint, save_checkpoint

    work, out, calls = tmp_path / "work", tmp_path / "ship", []
    monkeypatch.setattr(pretrained, "write_training_frames", lambda w: w / "camera_data")

    def fake_train(cmd):  # what `bevgen views train` leaves: both stages with optimizer state
        calls.append(cmd)
        run = work / "views_hires"
        for name in ("tokenizer", "generator"):
            save_checkpoint(run / "checkpoints" / f"{name}.pt", model={"w": torch.ones(3)},
                            optimizer={"state": {}}, config={"image_size": [128, 224]}, step=7, best_metric=1.5)
        (run / "config.yaml").write_text("data:\n  image_size: [128, 224]\n")
        return 0

    monkeypatch.setattr(pretrained.subprocess, "call", fake_train)
    assert pretrained.shipped("views_hires", out) is None
    summary = pretrained.build_hires(work, out)
    cmd = calls[0]
    assert cmd[cmd.index("-c") + 1].endswith("configs/views/hires.yaml") and "--resume" not in cmd
    assert cmd[cmd.index("--data") + 1] == str(work / "camera_data")
    ship = pretrained.shipped("views_hires", out)
    assert ship == out / "views_hires" and (ship / "config.yaml").exists()
    ck = load_checkpoint(ship / "checkpoints" / "generator.pt")
    assert "optimizer" not in ck and ck["step"] == 7 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert set(summary["files"]) == {"views_hires/checkpoints/generator.pt", "views_hires/checkpoints/tokenizer.pt"}
    pretrained.build_hires(work, out)  # a second call continues the run in work
    assert "--resume" in calls[1]


def test_build_hires_reports_a_failed_training(tmp_path, monkeypatch):
    from bevgen import pretrained

    monkeypatch.setattr(pretrained, "write_training_frames", lambda w: w / "camera_data")
    monkeypatch.setattr(pretrained.subprocess, "call", lambda cmd: 1)
    with pytest.raises(RuntimeError, match="training failed"):
        pretrained.build_hires(tmp_path / "work", tmp_path / "ship")
    assert pretrained.shipped("views_hires", tmp_path / "ship") is None


def test_real_layout_frames_join_the_procedural_frames_without_the_selection_scene(tmp_path):
    """The arms of the views decoder's real-layout segment train on the procedural frames plus the real training
    scenes rendered, never on the 3 scenes held out for evaluation nor on the scene kept for selection; the
    shipped refit adds the selection scene, still never a held-out one; without real scenarios it is skipped
    (None)."""
    import json

    from conftest import REAL_DIR, make_varied_road_scenario

    from bevgen import pretrained
    from bevgen.render.dataset import FrameDataset, write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.scenario import Scenario, save_scenario

    assert pretrained.real_layout_frames(tmp_path, tmp_path / "no_real") is None
    if not (REAL_DIR / "dataset_summary.pkl").exists():
        pytest.skip(f"shared real scenarios not found at {REAL_DIR} (expected ../shared beside the repo)")
    save_scenario(Scenario.from_dict(make_varied_road_scenario(0)), tmp_path / "scenarios" / "road00.pkl")
    write_synthetic_dataset(tmp_path / "scenarios", tmp_path / "camera_data", SynthConfig(), frames_per_scenario=2,
                            frame_stride=8, first_frame=0, progress=False)
    mixed = pretrained.real_layout_frames(tmp_path, REAL_DIR)
    frames = json.loads((mixed / "index.json").read_text())["frames"]
    scenes = {f.split("__")[0] for f in frames}
    held_out = {p.stem for p in (tmp_path / "real_split" / "real_test").glob("sd_*.pkl")}
    assert len(held_out) == 3 and not scenes & {f"real-{s}" for s in held_out}
    assert f"real-{pretrained.REAL_SELECTION_SCENE}" not in scenes
    assert "road00" in scenes and len([s for s in scenes if s.startswith("real-")]) == 3
    assert len(FrameDataset(mixed, names=frames[:1])) == 1  # the links resolve
    refit = pretrained.real_layout_frames(tmp_path, REAL_DIR, selection_scene=True)
    assert refit != mixed and json.loads((mixed / "index.json").read_text())["frames"] == frames  # both kept
    refit_scenes = {f.split("__")[0] for f in json.loads((refit / "index.json").read_text())["frames"]}
    assert refit_scenes == scenes | {f"real-{pretrained.REAL_SELECTION_SCENE}"}
    tripled = pretrained.real_layout_frames(tmp_path, REAL_DIR, selection_scene=True, repeat=3)  # the edge segment
    tripled_frames = json.loads((tripled / "index.json").read_text())["frames"]
    refit_frames = json.loads((refit / "index.json").read_text())["frames"]
    real_frames = [f for f in refit_frames if f.startswith("real-")]
    assert tripled.name == "camera_data_real_all_x3" and len(tripled_frames) == len(refit_frames) + 2 * len(real_frames)
    assert {f.split("-", 1)[1] for f in tripled_frames if f.startswith("real3-")} == {f[5:] for f in real_frames}
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        pretrained.real_layout_frames(tmp_path, REAL_DIR, repeat=0)


@pytest.mark.parametrize("real", [True, False])
def test_build_runs_the_decoder_segments_in_order_and_ships_the_last(tmp_path, monkeypatch, real):
    """``make checkpoints``' views decoder: two procedural segments, then (where real scenarios exist) the real-layout
    refit and the edge-weighted segment on the real frames taken ``VIEWS_DECODER_EDGE_REAL_REPEAT`` times, each from
    the one before; the last one is exported. Without real scenarios the procedural decoder ships, with a message."""
    from bevgen import pretrained

    work, out, tunes, mixes, exported = tmp_path / "work", tmp_path / "ship", [], [], []
    monkeypatch.setattr(pretrained, "write_training_frames", lambda w: w / "camera_data")
    monkeypatch.setattr(pretrained.subprocess, "call", lambda cmd, env=None: 0)

    def fake_mix(w, real_dir, selection_scene=False, repeat=1):
        mixes.append((selection_scene, repeat))
        return w / f"mixed_x{repeat}" if real else None

    def fake_tune(run, data, dest, steps, threads, train_decoder, edge_weight=0.0):
        tunes.append((Path(run).name, Path(data).name, Path(dest).name, steps, train_decoder, edge_weight))

    monkeypatch.setattr(pretrained, "real_layout_frames", fake_mix)
    monkeypatch.setattr(pretrained, "tune_decoder", fake_tune)
    monkeypatch.setattr(pretrained, "export_views", lambda run, dest: exported.append((run.name, dest.name)))
    monkeypatch.setattr(pretrained, "export_scene3d", lambda run, dest: None)
    out.mkdir()
    pretrained.build(work, out, parallel=False, real_dir=tmp_path)
    procedural = [("views", "camera_data", "views_layout", pretrained.VIEWS_DECODER_STEPS, False, 0.0),
                  ("views_layout", "camera_data", "views_layout_more", pretrained.VIEWS_DECODER_MORE_STEPS, False, 0.0)]
    if not real:
        assert tunes == procedural and exported == [("views_layout_more", "views_tiny")]
        return
    assert tunes == procedural + [
        ("views_layout_base", "mixed_x1", "views_layout_real", pretrained.VIEWS_DECODER_REAL_STEPS, False, 0.0),
        ("views_layout_real", f"mixed_x{pretrained.VIEWS_DECODER_EDGE_REAL_REPEAT}", "views_layout_edges",
         pretrained.VIEWS_DECODER_EDGE_STEPS, False, pretrained.VIEWS_DECODER_EDGE_WEIGHT)]
    assert mixes == [(True, 1), (True, pretrained.VIEWS_DECODER_EDGE_REAL_REPEAT)]
    assert exported == [("views_layout_more", "views_layout_base"), ("views_layout_edges", "views_tiny")]
