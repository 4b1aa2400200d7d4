"""`bevgen views dataset | train | sample | eval` end to end on straight-road scenarios, with a test-sized model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from bevgen.cli import app
from sim_bridge.dataset import DatasetWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_straight_road_scenario  # noqa: E402

runner = CliRunner()

# a test-sized views model (32x56 views, 4x7 tokens per view) as the --config of `views train`
TINY = {
    "data": {"image_size": [32, 56], "heldout_fraction": 0.34},
    "tokenizer": {"downsample": 8, "channels": 8, "channel_mult": [1, 2, 2], "codebook_size": 64, "code_dim": 16,
                  "dead_code_steps": 10},
    "generator": {"d_model": 32, "layers": 1, "heads": 2, "cond_layers": 1, "mlp_ratio": 2.0, "bev_grid": 8,
                  "bev_channels": 8, "fourier_freqs": 4},
    "train": {"tokenizer_steps": 12, "generator_steps": 12, "tokenizer_batch": 2, "generator_batch": 4,
              "warmup_steps": 2, "checkpoint_every": 6, "sample_every": 0, "sample_steps": 4, "device": "cpu",
              "threads": 1},
}


# each command's help names its subcommands / options together with their explanations
HELP = {
    "views": [("dataset", "Write a paired dataset: six camera images"),
              ("train", "Train the VQ tokenizer and the cross-view masked-token transformer"),
              ("sample", "Generate the six camera views of one BEV frame"),
              ("eval", "Score generated views: BEV IoU")],
    "views dataset": [("--out", "Output dataset directory (frames/*.npz + index.json)."),
                      ("--scenarios", "Scenario directory to render synthetic camera frames from."),
                      ("--nuscenes", "nuScenes dataroot (real images) instead."),
                      ("--frames-per-scenario", "Frames rendered per scenario."),
                      ("--frame-stride", "Steps between rendered frames"),
                      ("--workers", "Renderer processes (one pybullet client each).")],
    "views train": [("--data", "Frame dataset directory from `bevgen views dataset`."),
                    ("--out", "Run directory (config, checkpoints/, tb/, samples/)."),
                    ("--stage", "tokenizer | generator | all"),
                    ("--resume", "Continue from the run directory's checkpoints")],
    "views sample": [("--ckpt", "Run directory of `bevgen views train`"),
                     ("--scenario", "Scenario file (.pkl) to take the BEV layout from."),
                     ("--frame", "Frame index in the scenario."),
                     ("--mode", "parallel (MaskGIT) | autoregressive (token by token)."),
                     ("--guidance", "Classifier-free guidance weight."),
                     ("--truth", "Also render the synthetic ground truth")],
    "views eval": [("--ckpt", "Views model: a `bevgen views train` run directory"),
                   ("--frames", "Frames scored: heldout"),
                   ("--bevseg", "Trained BEV segmentation checkpoint"),
                   ("--bevseg-steps", "Steps when training the BEV segmentation network."),
                   ("--fid-weights", "pytorch-fid Inception weights file"),
                   ("--num", "Frames to score (0 = all selected).")],
    "scene3d": [("train", "Train the generator"), ("render", "Render a layout, apply edits"),
                ("eval", "FID, KID, object-crop FID, box-alpha IoU and images/s")],
    "scene3d train": [("--data", "Frame dataset directory (`bevgen views dataset`)."),
                      ("--steps", "Optimizer steps"),
                      ("--resume", "Continue the run in --out from its latest checkpoint.")],
    "scene3d render": [("--layout", "Layout: .json (SceneLayout), frame .npz or scenario .pkl."),
                       ("--move", "I:dx,dy,dz move object I"), ("--rotate", "I:degrees turn object I"),
                       ("--add", "x,y,z,l,w,h,yaw_deg add a vehicle."), ("--delete", "I delete object I."),
                       ("--restyle", "I:SEED new latent for object I."),
                       ("--camera-move", "dx,dy,dz,yaw_deg move/turn the camera."),
                       ("--orbit", "Orbit the camera by DEG about a point 15 m ahead."),
                       ("--gif", "Also write orbit.gif and move.gif")],
}


@pytest.mark.parametrize("cmd", sorted(HELP))
def test_help(cmd):
    import re

    res = runner.invoke(app, cmd.split() + ["--help"], env={"COLUMNS": "200"}, prog_name="bevgen")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.replace("│", " ").split())  # table borders dropped, wrapped cells joined
    assert text.startswith(f"Usage: bevgen {cmd} "), text[:200]
    for name, explanation in HELP[cmd]:
        # the explanation in the same table row as its option or subcommand (after short flag, type, ...)
        row = re.escape(name) + r"(?: \S+){0,5} " + re.escape(explanation)  # short flag, type, range
        assert re.search(row, text), (cmd, name, explanation, text)


def test_views_commands_end_to_end(tmp_path):
    with DatasetWriter(tmp_path / "scenarios", resume=False) as w:
        for i, (yaw, speed) in enumerate([(0.0, 10.0), (0.8, 6.0), (-1.0, 12.0)]):
            d = make_straight_road_scenario(length=30, ego_speed=speed, ego_yaw=yaw)
            d["id"] = d["metadata"]["scenario_id"] = f"road{i}"
            w.add(f"road{i}.pkl", d)
    data, run = tmp_path / "data", tmp_path / "run"

    res = runner.invoke(app, ["views", "dataset", "--scenarios", str(tmp_path / "scenarios"), "--out", str(data),
                              "-n", "3", "--frame-stride", "6", "--first-frame", "0", "-j", "1",
                              "--set", "image_size=[32, 56]"])
    assert res.exit_code == 0, res.output
    assert len(list((data / "frames").glob("*.npz"))) == 9
    run_cfg = yaml.safe_load((data / "bevgen_run.yaml").read_text())["config"]
    assert run_cfg["synth"]["image_size"] == [32, 56] and run_cfg["frame_stride"] == 6

    cfg = tmp_path / "views.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = runner.invoke(app, ["views", "train", "--data", str(data), "--out", str(run), "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    import torch

    assert torch.load(run / "checkpoints" / "generator.pt", weights_only=True)["step"] == 12
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) + len(split["heldout"]) == 9 and len(split["heldout"]) == 3  # one scenario held out
    # --resume without -c continues with the run's own config.yaml (finished stages: nothing left to do, and the
    # summary keeps the record of their training)
    trained = json.loads((run / "train_summary.json").read_text())
    res = runner.invoke(app, ["views", "train", "--data", str(data), "--out", str(run), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    resumed = json.loads((run / "train_summary.json").read_text())
    assert resumed["generator"] == trained["generator"] and resumed["generator"]["first_loss"] is not None
    assert resumed["tokenizer"] == trained["tokenizer"]
    res = runner.invoke(app, ["views", "train", "--data", str(data), "--out", str(run), "--resume",
                              "--set", "generator.layers=2"])
    assert res.exit_code == 2 and "generator.layers" in " ".join(res.output.split())

    out = tmp_path / "sample"
    res = runner.invoke(app, ["views", "sample", "--ckpt", str(run), "--scenario",
                              str(tmp_path / "scenarios" / "road1.pkl"), "--frame", "12", "--out", str(out)])
    assert res.exit_code == 0, res.output
    views = sorted(out.glob("view_CAM_*.png"))
    assert len(views) == 6 and all(np.asarray(Image.open(p)).shape == (32, 56, 3) for p in views)
    assert Image.open(out / "panorama.png").size == (6 * 56, 32)
    assert Image.open(out / "bev_views.png").size[0] > 3 * 56
    assert json.loads((out / "sample.json").read_text())["frame"] == 12
    record = yaml.safe_load((out / "bevgen_run.yaml").read_text())  # every option, defaults included
    assert record["command"] == "views sample" and record["config"]["ckpt"] == str(run), record
    assert {"steps", "guidance", "temperature", "seed", "mode"} <= set(record["config"]), record

    res = runner.invoke(app, ["views", "sample", "--ckpt", str(run), "--scenario",
                              str(tmp_path / "scenarios" / "road1.pkl"), "--frame", "99", "--out", str(out)])
    assert res.exit_code == 2 and "out of range" in " ".join(res.output.split())

    res = runner.invoke(app, ["views", "eval", "--ckpt", str(run), "--data", str(data), "--out",
                              str(tmp_path / "eval"), "--bevseg-steps", "6"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("road_iou", "road_iou_oracle", "seam_consistency", "seam_consistency_oracle", "fid"):
        assert np.isfinite(metrics[key]), (key, metrics)
    assert metrics["num_samples"] == 3 * 6 and metrics["fid_extractor"] == "bevgen-randconv-v1"
    assert metrics["fid"] > 0  # a 12-step model does not reproduce the ground truth
    # every share of the oracle comes with its interval over the frames, and the per-frame sums behind it
    assert set(metrics["shares_ci90"]) == {"road_iou", "vehicle_iou", "seam_consistency"}
    lo, hi = metrics["shares_ci90"]["seam_consistency"]
    assert lo - 1e-4 <= metrics["shares"]["seam_consistency"] <= hi + 1e-4, metrics["shares_ci90"]
    for key in ("road_iou", "vehicle_iou"):  # a 6-step bevseg network may read no road in the truth: no share then
        assert (metrics["shares"][key] is None) == (not metrics[f"{key}_oracle"]), metrics
        assert (metrics["shares_ci90"][key] is None) == (metrics["shares"][key] is None), metrics
    assert len(json.loads((tmp_path / "eval" / "per_frame.json").read_text())["names"]) == 3
    record = yaml.safe_load((tmp_path / "eval" / "bevgen_run.yaml").read_text())
    assert record["command"] == "views eval" and record["config"]["bevseg_steps"] == 6, record
    seg_nets = list((tmp_path / "eval").glob("bevseg_*"))  # the network it trained, kept for these frames only
    assert len(seg_nets) == 1 and (seg_nets[0] / "checkpoints" / "latest.pt").exists(), seg_nets
    res = runner.invoke(app, ["views", "eval", "--ckpt", str(run), "--data", str(data), "--out",
                              str(tmp_path / "recon"), "--bevseg", str(seg_nets[0]),
                              "--mode", "reconstruct"])
    assert res.exit_code == 0, res.output
    recon = json.loads((tmp_path / "recon" / "metrics.json").read_text())
    assert recon["mode"] == "reconstruct" and recon["num_samples"] == metrics["num_samples"]
    assert recon["psnr"] > metrics["psnr"], (recon["psnr"], metrics["psnr"])  # a round trip (12 tokenizer steps)

    other = tmp_path / "other_data"  # a dataset without the run's held-out frames
    other.mkdir()
    (other / "index.json").write_text(json.dumps({"frames": []}))
    res = runner.invoke(app, ["views", "eval", "--ckpt", str(run), "--data", str(other), "--out", str(tmp_path / "e2"),
                              "--frames", "heldout"])
    assert res.exit_code == 2 and "held-out frames" in " ".join(res.output.split())

    # a checkpoint without its run directory (as shipped): every frame of --data is scored as held out
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(run / "checkpoints", bare)
    res = runner.invoke(app, ["views", "eval", "--ckpt", str(bare), "--data", str(data), "--out", str(tmp_path / "e3"),
                              "--bevseg", str(seg_nets[0]), "--num", "2", "--unconditional"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "e3" / "metrics.json").read_text())
    assert metrics["frames"] == "all" and metrics["num_samples"] == 2 * 6, metrics
    assert metrics["unconditional"] is True  # the null-layout floor
    assert {"vehicle_iou_near", "vehicle_iou_mid_oracle", "vehicle_iou_far"} <= set(metrics)
    assert {"road_iou_near", "road_iou_mid", "road_iou_far_oracle"} <= set(metrics)  # where the road is lost


def test_eval_keeps_one_bevseg_network_per_training_frames(tmp_path):
    """`views eval` caches the segmentation network it trains under OUT by what it was trained on: another
    dataset, another frame list or another step count gets its own network, never one trained on other frames."""
    from bevgen.views.cli import _bevseg_cache

    a, b = tmp_path / "a", tmp_path / "b"
    for d, frames in ((a, ["f1", "f2"]), (b, ["f1", "f2", "f3"])):
        d.mkdir()
        (d / "index.json").write_text(json.dumps({"frames": frames}))
    out = tmp_path / "out"
    key = _bevseg_cache(out, a, None, 600)
    assert key.parent == out and key.name.startswith("bevseg_") and key == _bevseg_cache(out, a, None, 600)
    others = {_bevseg_cache(out, b, None, 600), _bevseg_cache(out, a, ["f1"], 600), _bevseg_cache(out, a, None, 60)}
    assert len(others) == 3 and key not in others
    (a / "index.json").write_text(json.dumps({"frames": ["f1", "f2", "f9"]}))  # the same folder, rewritten
    assert _bevseg_cache(out, a, None, 600) != key


def test_bad_numbers_and_modes_are_refused_before_anything_runs(tmp_path):
    """Counts and steps out of range are usage errors with the option named (exit 2), not tracebacks or
    silently different runs; nothing is written."""
    cases = [["views", "sample", "--ckpt", str(tmp_path), "--scenario", str(tmp_path / "x.pkl"), "--out",
              str(tmp_path / "o1"), "--mode", "bogus"],
             ["views", "sample", "--ckpt", str(tmp_path), "--scenario", str(tmp_path / "x.pkl"), "--out",
              str(tmp_path / "o2"), "--steps", "-3"],
             ["views", "eval", "--ckpt", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o3"),
              "--num", "-1"],
             ["views", "tune-decoder", "--ckpt", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o4"),
              "--steps", "-2"],
             ["traffic", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o5"), "--steps", "0"],
             ["traffic", "eval", "--reference", str(tmp_path), "--out", str(tmp_path / "o6"), "--rollouts", "-2"],
             ["sim", "eval", "--policy", "idm", "--data", str(tmp_path), "--out", str(tmp_path / "o7"),
              "--episodes", "-1"],
             ["scenarios", "bev", str(tmp_path), "--out", str(tmp_path / "o8"), "--limit", "-2"]]
    for args in cases:
        res = runner.invoke(app, args)
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and ("Invalid value" in text or "must be" in text), (args, res.output)
        assert "Traceback" not in res.output
    assert not any(tmp_path.glob("o*")), list(tmp_path.glob("o*"))


def test_a_run_of_another_kind_or_a_missing_device_is_named(tmp_path):
    """`sim rollout` given a run that is not a driving policy (a traffic run's checkpoint holds no env config) and
    `scene3d render --device cuda` on a machine without CUDA: one-line errors saying so, nothing written."""
    import torch

    other = tmp_path / "traffic_run" / "checkpoints"
    other.mkdir(parents=True)
    torch.save({"config": {"preset": "tiny"}, "model": {}}, other / "latest.pt")
    res = runner.invoke(app, ["sim", "rollout", "--policy", str(other.parent), "--data", str(tmp_path), "--out",
                              str(tmp_path / "o1")])
    assert res.exit_code == 2 and "not a driving-policy run" in " ".join(res.output.split()), res.output
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["scene3d", "render", "--ckpt", str(tmp_path), "--layout", str(tmp_path / "x.json"),
                                  "--out", str(tmp_path / "o2"), "--device", "cuda"])
        assert res.exit_code == 2 and "no CUDA GPU" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["scene3d", "render", "--ckpt", str(tmp_path), "--layout", str(tmp_path / "x.json"),
                              "--out", str(tmp_path / "o3"), "--device", "tpu"])
    assert res.exit_code == 2 and "cpu or cuda" in " ".join(res.output.split()), res.output
    assert not any(tmp_path.glob("o*"))


def test_views_train_rejects_a_folder_that_is_not_a_dataset(tmp_path):
    res = runner.invoke(app, ["views", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "not a views dataset" in " ".join(res.output.split())


def test_sample_without_truth_needs_no_renderer(tmp_path, real_dir):
    """`views sample --no-truth` conditions on the layout and rig alone: pybullet is never imported."""
    import subprocess
    import sys

    ckpt = Path(__file__).resolve().parents[2] / "checkpoints" / "views_tiny"
    scen = real_dir / "sd_nuscenes_v1.0-mini_scene-0916.pkl"
    code = ("import sys; sys.modules['pybullet'] = None; from bevgen.cli import main; "
            f"sys.argv = ['bevgen', 'views', 'sample', '--ckpt', {str(ckpt)!r}, '--scenario', {str(scen)!r}, "
            f"'--frame', '20', '--out', {str(tmp_path)!r}, '--no-truth', '--steps', '2']; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    views = sorted(tmp_path.glob("view_CAM_*.png"))
    assert len(views) == 6 and all(np.asarray(Image.open(p)).shape == (64, 112, 3) for p in views)  # views_tiny
    assert Image.open(tmp_path / "bev_views.png").size[0] > 3 * 112
    assert not (tmp_path / "panorama_truth.png").exists()
