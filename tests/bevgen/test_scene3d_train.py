"""Scene generator training, checkpoint / resume, and the `bevgen scene3d` commands on rendered frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("pybullet")

from bevgen.scene3d.train import Scene3DTrainConfig, build_modules, load_scene3d, train_scene3d  # noqa: E402
from runkit.config import load_config  # noqa: E402
from tests.conftest import make_straight_road_scenario  # noqa: E402

TINY = ["model.image_size=32", "model.render_size=16", "model.z_dim=16", "model.w_dim=16", "model.feature_dim=8",
        "model.object_hidden=32", "model.background_hidden=32", "model.bev_plane_size=16",
        "model.upsampler_channels=16", "model.background_samples=8", "model.object_samples=4", "crop_size=8",
        "d_channels=8", "d_max_channels=32", "batch_size=4", "r1_every=2", "sample_every=2", "checkpoint_every=2",
        "data.cameras=[CAM_FRONT, CAM_BACK]"]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """Six rendered frames (32x56, 6 cameras) of the straight-road scenario: a lead car ahead, a cyclist behind."""
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.dataset import DatasetWriter

    root = tmp_path_factory.mktemp("scene3d")
    with DatasetWriter(root / "scenarios") as w:
        w.add("sd_straight_road.pkl", make_straight_road_scenario())
    write_synthetic_dataset(root / "scenarios", root / "frames", SynthConfig(image_size=(32, 56)),
                            frames_per_scenario=6, frame_stride=6, progress=False)
    return root / "frames"


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_frame_failing_on_one_camera_is_skipped_whole(frames_dir, tmp_path):
    """A frame whose second camera is broken yields no sample at all (no partial frames) and is reported."""
    import shutil

    from bevgen.render.dataset import load_frame, write_frame
    from bevgen.scene3d.data import load_scene3d_data

    root = tmp_path / "frames"
    shutil.copytree(frames_dir, root)
    index = json.loads((root / "index.json").read_text())
    bad = index["frames"][0]
    arrays = load_frame(root / "frames" / f"{bad}.npz")
    arrays["T_cam_from_ego"][index["rig"]["names"].index("CAM_BACK"), :3, :3] *= 2.0  # not a rotation
    write_frame(root / "frames" / f"{bad}.npz", arrays)
    data = load_scene3d_data(root, cameras=("CAM_FRONT", "CAM_BACK"), resolution=32)
    assert len(data) == 2 * (len(index["frames"]) - 1)
    assert not any(n.startswith(f"{bad}:") for n in data.names)
    assert len(data.problems) == 1 and data.problems[0].startswith(f"{bad}: ") and "orthonormal" in data.problems[0]


def test_tiny_training_updates_generator_and_both_discriminators(frames_dir, tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(Scene3DTrainConfig, None, TINY + ["steps=3"])
    torch.manual_seed(cfg.seed)
    g0, d0, o0 = (_params(m) for m in build_modules(cfg))  # the initial weights train_scene3d starts from
    summary = train_scene3d(cfg, frames_dir, tmp_path / "run", progress=False)
    assert summary["final_step"] == 3 and summary["frames"] == 12 and not summary["problems"]
    for row in summary["history"]:
        assert all(np.isfinite(v) for v in row.values()), row
    assert any(r["g_object"] > 0 for r in summary["history"])  # object crops reached the object D
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 3 and set(ckpt["model"]) == {"generator", "generator_ema", "scene_d", "object_d"}
    for name, before in (("generator", g0), ("scene_d", d0), ("object_d", o0)):
        after = list(ckpt["model"][name].values())
        changed = sum(not torch.equal(a, b) for a, b in zip(after, before))
        assert changed >= len(before) // 2, f"{name}: only {changed}/{len(before)} tensors changed"
    from PIL import Image

    assert min(Image.open(tmp_path / "run" / "samples" / "step_000003.png").size) >= 32  # a sample grid
    # resume continues the step counter; a second plain run into the same directory is refused
    cfg4 = load_config(Scene3DTrainConfig, None, TINY + ["steps=4"])
    assert train_scene3d(cfg4, frames_dir, tmp_path / "run", resume=True, progress=False)["start_step"] == 3
    with pytest.raises(FileExistsError):
        train_scene3d(cfg4, frames_dir, tmp_path / "run", progress=False)
    gen = load_scene3d(tmp_path / "run")
    assert not gen.training and gen.cfg.image_size == 32


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_cli_render_edits_and_eval(frames_dir, tmp_path):
    from typer.testing import CliRunner

    from bevgen.scene3d.cli import app

    torch.set_num_threads(1)
    train_scene3d(load_config(Scene3DTrainConfig, None, TINY + ["steps=1"]), frames_dir, tmp_path / "run",
                  progress=False)
    frame = sorted((frames_dir / "frames").glob("*.npz"))[0]
    runner = CliRunner()
    res = runner.invoke(app, ["render", "--ckpt", str(tmp_path / "run"), "--layout", str(frame), "--out",
                              str(tmp_path / "r"), "--move", "0:0,1.5,0", "--rotate", "0:30", "--restyle", "0:7",
                              "--add", "15,4,0.8,4.5,1.9,1.6,0", "--camera-move", "0,0,0,5", "--gif"])
    assert res.exit_code == 0, res.output
    from PIL import Image

    r = tmp_path / "r"
    before, after = (np.asarray(Image.open(r / f"{n}.png")) for n in ("render", "edited"))
    assert before.shape == after.shape == (32, 32, 3) and not np.array_equal(before, after)  # the edits show
    assert np.asarray(Image.open(r / "render_alpha.png")).shape == (32, 32)
    for f in ("orbit.gif", "move.gif"):
        with Image.open(r / f) as im:
            assert im.n_frames > 1 and im.size == (64, 64), f  # animations at scale 2
    # the edited layout holds exactly the requested edits: object 0 moved 1.5 m left and turned 30 degrees,
    # one vehicle added, the camera moved 5 degrees
    orig, edited = (json.loads((r / f).read_text()) for f in ("layout.json", "layout_edited.json"))
    assert len(orig["boxes"]) == 1 and len(edited["boxes"]) == 2
    box0 = np.array(orig["boxes"][0])
    expected = box0 + [0.0, 1.5, 0.0, 0.0, 0.0, 0.0, np.radians(30)]
    expected[6] = (expected[6] + np.pi) % (2 * np.pi) - np.pi
    got = np.array(edited["boxes"])
    moved = np.abs(got - expected).max(1) < 1e-4
    added = np.abs(got - [15.0, 4.0, 0.8, 4.5, 1.9, 1.6, 0.0]).max(1) < 1e-4
    assert moved.sum() == 1 and added.sum() == 1, (got, expected)
    assert not np.allclose(edited["T_cam_from_ego"], orig["T_cam_from_ego"], atol=1e-3)
    bad = runner.invoke(app, ["render", "--ckpt", str(tmp_path / "run"), "--layout", str(frame), "--out",
                              str(tmp_path / "r2"), "--delete", "5"])
    assert bad.exit_code == 2 and "not a valid box" in bad.output
    assert not (tmp_path / "r2").exists()  # a refused edit writes nothing
    text = tmp_path / "text.npz"
    text.write_text("not a frame")
    for args, why in ((["--layout", str(frame), "--camera", "CAM_NOPE"], "its cameras are"),
                      (["--layout", str(text)], "not a frame file")):
        bad = runner.invoke(app, ["render", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "r3"), *args])
        assert bad.exit_code == 2 and why in " ".join(bad.output.split()), bad.output
    assert yaml.safe_load((r / "bevgen_run.yaml").read_text())["config"]["move"] == ["0:0,1.5,0"]
    res = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "run"), "--data", str(frames_dir), "--out",
                              str(tmp_path / "e"), "-n", "8", "--batch", "4"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["resolution"] == 32 and m["num_samples"] == 8 and m["fid_extractor"] == "bevgen-randconv-v1"
    assert np.isfinite([m["fid"], m["kid"], m["object_fid"]]).all() and m["fid"] > 0  # renders are not the images
    assert m["images_per_second"] > 1.0
    # box_alpha_iou is the mean per-render IoU of the object opacity with the projected boxes: recomputed here
    # from the same checkpoint, layouts and latent seed; a render without object opacity would score 0
    from bevgen.scene3d.data import load_scene3d_data
    from bevgen.scene3d.metrics import render_layouts

    gen = load_scene3d(tmp_path / "run")
    dc = gen.train_config.data
    data = load_scene3d_data(frames_dir, dc.cameras, 32, dc.max_objects, dc.class_filter, dc.max_depth_m)
    _, ious, _ = render_layouts(gen, data, np.arange(8) % len(data), 4, 0)
    assert m["box_alpha_iou"] == pytest.approx(float(np.nanmean(ious)), rel=1e-5)
    assert m["box_alpha_iou"] > 0.05, m
