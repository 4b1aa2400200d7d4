"""Synthetic renderer geometry (true K / T, metric depth, crops) and the paired dataset writer / reader."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from bevgen.cameras import CameraRig, nuscenes_rig, project_boxes
from bevgen.layout import BevConfig
from bevgen.render.dataset import (FrameDataset, load_frame, scenario_of, split_frames,
                                   write_synthetic_dataset)
from bevgen.render.scene import SEMANTIC_CLASSES, SceneRenderer, SynthConfig
from runkit.config import load_config
from sim_bridge.dataset import write_index
from sim_bridge.scenario import Scenario, save_scenario
from tests.conftest import REPO, make_straight_road_scenario

SEM = {n: i for i, n in enumerate(SEMANTIC_CLASSES)}
EGO_XY = np.array([100.0, 198.25])  # ego position at t = 0 in make_straight_road_scenario (yaw 0)


def _scenario_with_box(x: float, y: float, size=(2.0, 1.6, 1.8), yaw: float = 0.3, typ="PEDESTRIAN") -> Scenario:
    """Straight road whose 'walker' is replaced by a static box of ``size`` at ego-frame (x, y) (ego at t=0).
    Pedestrians are drawn as plain boxes, so the pixels must fill the projected 3D box exactly."""
    d = make_straight_road_scenario(length=5)
    st = d["tracks"]["walker"]["state"]
    st["position"][:] = [EGO_XY[0] + x, EGO_XY[1] + y, size[2] / 2]
    st["heading"][:] = yaw
    st["length"][:], st["width"][:], st["height"][:] = size
    d["tracks"]["walker"]["type"] = typ
    d["tracks"]["lead"]["state"]["valid"][:] = False  # keep the view of the box clear
    return Scenario.from_dict(d)


def _skewed_rig(hw=(128, 224)) -> CameraRig:
    """nuScenes rig with an off-centre principal point and fy != fx (tests the projection matrix)."""
    rig = nuscenes_rig(hw)
    K = rig.K.copy()
    K[:, 0, 2] += 17.0
    K[:, 1, 2] -= 9.0
    K[:, 1, 1] *= 0.8
    return CameraRig(rig.names, K, rig.T_cam_from_ego, hw)


@pytest.fixture(scope="module")
def road() -> Scenario:
    return Scenario.from_dict(make_straight_road_scenario(length=30))


@pytest.mark.parametrize("rig", [nuscenes_rig((128, 224)), _skewed_rig()], ids=["nuscenes", "skewed_K"])
def test_box_pixels_match_projection(rig):
    sc = _scenario_with_box(14.0, 2.5)
    with SceneRenderer(rig, SynthConfig(buildings=False)) as r:
        frame = r.render(sc, 0).validate()
    box = frame.layout.boxes.select(frame.layout.valid & (frame.layout.classes == 1))
    np.testing.assert_allclose(box.center[0, :2], [14.0, 2.5], atol=1e-4)
    proj = project_boxes(rig, box)
    v = rig.names.index("CAM_FRONT")
    assert proj.visible[v, 0]
    rows, cols = np.nonzero(frame.semantic[v] == SEM["pedestrian"])
    assert len(rows) > 100
    got = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)  # pixel-edge bbox
    # pixel-centre rule: < 0.5 px; the bottom edge touches the road surface, which may win its last row
    assert (np.abs(got - proj.boxes_2d[v, 0]) <= [0.6, 0.6, 0.6, 1.1]).all(), (got, proj.boxes_2d[v, 0])
    # nothing of the box leaks into a camera that cannot see it
    assert not (frame.semantic[rig.names.index("CAM_BACK")] == SEM["pedestrian"]).any()


def test_car_in_expected_camera_and_place(road):
    rig = nuscenes_rig((128, 224))
    with SceneRenderer(rig, SynthConfig(buildings=False)) as r:
        frame = r.render(road, 5)
    lay = frame.layout
    lead = lay.boxes.select(lay.valid & (lay.classes == 0))[:1]
    proj = project_boxes(rig, lead)
    v = rig.names.index("CAM_FRONT")
    rows, cols = np.nonzero(frame.semantic[v] == SEM["vehicle"])
    cx, cy = cols.mean() + 0.5, rows.mean() + 0.5
    x0, y0, x1, y1 = proj.boxes_2d[v, 0]
    assert x0 <= cx <= x1 and y0 <= cy <= y1
    assert abs(cx - (x0 + x1) / 2) < 2.0  # car shape is left-right symmetric
    for other in ("CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"):
        assert not (frame.semantic[rig.names.index(other)] == SEM["vehicle"]).any()


def test_ground_depth_matches_ray_plane_intersection(road):
    rig = _skewed_rig()
    with SceneRenderer(rig, SynthConfig(buildings=False, sidewalk_m=0.0)) as r:
        frame = r.render(road, 0)
    dirs = rig.rays().astype(np.float64)  # [V, H, W, 3] ego frame
    centres = rig.camera_centers  # [V, 3]
    t = -centres[:, None, None, 2] / np.where(dirs[..., 2] < 0, dirs[..., 2], np.nan)
    analytic = t * np.einsum("vhwi,vi->vhw", dirs, rig.optical_axes)
    mask = (frame.semantic == SEM["ground"]) & (analytic < 40)
    assert mask.sum() > 2000
    rel = np.abs(frame.depth[mask] - analytic[mask]) / analytic[mask]
    assert np.median(rel) < 1e-3 and rel.max() < 5e-3
    road_mask = frame.semantic == SEM["road"]  # road surface is 2 cm above the ground: slightly nearer
    assert (frame.depth[road_mask & (analytic < 40)] <= analytic[road_mask & (analytic < 40)] * 1.01).all()
    assert (frame.depth[frame.semantic == SEM["sky"]] == 0).all()
    assert (frame.semantic == SEM["sky"]).any() and (frame.depth > 0).any()


def test_crop_and_resize_keep_content(road):
    big = nuscenes_rig((128, 224)).resized((256, 448))
    top, left, hw = 70, 100, (128, 224)
    cfg = SynthConfig(buildings=False)
    with SceneRenderer(big, SynthConfig(image_size=(256, 448), buildings=False)) as r:
        full = r.render(road, 3)
    with SceneRenderer(big.cropped(top, left, hw), cfg) as r:
        crop = r.render(road, 3)
    ref = full.semantic[:, top:top + hw[0], left:left + hw[1]]
    assert (crop.semantic == ref).mean() > 0.995
    with SceneRenderer(big.resized(hw), cfg) as r:
        small = r.render(road, 3)
    assert (small.semantic == full.semantic[:, 1::2, 1::2]).mean() > 0.97  # pixel centres coincide


def test_render_is_deterministic_and_reuses_static_scene(road):
    rig = nuscenes_rig((64, 112))
    with SceneRenderer(rig, SynthConfig(image_size=(64, 112))) as r:
        a = r.render(road, 4)
        static = r.static
        r.render(road, 9)
        assert r.static is static  # same scenario object: map meshes built once
        b = r.render(road, 4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert (a.semantic == SEM["building"]).any() and (a.semantic == SEM["marking"]).any()


def test_scenarios_sharing_a_map_build_the_static_scene_once(road):
    """Snapshots of one drive (a new Scenario per step, one shared map dict, one map key) reuse the static
    scene, and each renders exactly as a fresh renderer would (the render frame depends on the map only)."""
    import dataclasses

    rig = nuscenes_rig((48, 80))
    cfg = SynthConfig(image_size=(48, 80))
    snaps = [dataclasses.replace(road, id=f"drive-step{t}", metadata={**road.metadata, "map_key": "road"})
             for t in (4, 9)]
    with SceneRenderer(rig, cfg) as r:
        r.render(snaps[0], 4)
        b = r.render(snaps[1], 9)
        assert r.static_builds == 1
        other_map = dataclasses.replace(snaps[1], map_features=dict(road.map_features))
        r.render(other_map, 9)
        assert r.static_builds == 2  # a different map object is rebuilt
    with SceneRenderer(rig, cfg) as fresh:
        ref = fresh.render(snaps[1], 9)
    np.testing.assert_array_equal(b.images, ref.images)
    np.testing.assert_array_equal(b.semantic, ref.semantic)
    np.testing.assert_array_equal(b.depth, ref.depth)


def test_config_yaml_loads_and_rejects_unknown_keys(tmp_path):
    cfg = load_config(SynthConfig, REPO / "configs" / "render" / "synthetic.yaml")
    assert cfg == SynthConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_rnage_m: 3\n")
    with pytest.raises(ValueError, match="max_range_m"):
        load_config(SynthConfig, bad)
    with pytest.raises(ValueError, match="image_size"):
        SceneRenderer(nuscenes_rig((64, 112)), SynthConfig())


# ---- dataset ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenarios")
    names = {}
    for i, yaw in enumerate((0.0, 1.0, -2.0)):
        d = copy.deepcopy(make_straight_road_scenario(length=40, ego_yaw=yaw))
        d["id"] = d["metadata"]["scenario_id"] = f"road{i}"
        save_scenario(d, root / f"sd_road{i}.pkl")
        names[f"sd_road{i}.pkl"] = {}
    (root / "sd_broken.pkl").write_bytes(b"not a pickle")
    names["sd_broken.pkl"] = {}
    write_index(root, names)
    return root


def test_write_resume_and_bad_scenario(scenario_dir, tmp_path):
    out = tmp_path / "synth"
    cfg = SynthConfig(image_size=(64, 112), bev=BevConfig(range_m=25.0))
    s = write_synthetic_dataset(scenario_dir, out, cfg, frames_per_scenario=2, frame_stride=10, workers=2,
                                progress=False)
    assert s["num_frames"] == 6 and s["written"] == 6 and s["scenarios_ok"] == 3
    assert list(s["failed"]) == ["sd_broken.pkl"]
    report = json.loads((out / "conversion_report.json").read_text())
    assert "sd_broken.pkl" in report["scenarios"]["sd_broken.pkl"]["error"], report["scenarios"]["sd_broken.pkl"]
    index = json.loads((out / "index.json").read_text())
    assert index["source"] == "synthetic" and len(index["frames"]) == 6
    assert index["bev"]["range_m"] == 25.0 and CameraRig.from_dict(index["rig"]).image_size == (64, 112)
    f = load_frame(out / "frames" / f"{index['frames'][0]}.npz")
    assert f["images"].shape == (6, 64, 112, 3) and f["bev"].shape == (8, 100, 100)
    assert f["depth"].dtype == np.float16 and f["scenario"] == scenario_of(index["frames"][0])
    assert f["camera_names"] == tuple(index["rig"]["names"])  # each frame names its views

    victim = out / "frames" / f"{index['frames'][1]}.npz"
    victim.unlink()
    s2 = write_synthetic_dataset(scenario_dir, out, cfg, frames_per_scenario=2, frame_stride=10, progress=False)
    assert s2["written"] == 1 and s2["kept"] == 5 and victim.exists()
    with pytest.raises(ValueError, match="different"):
        write_synthetic_dataset(scenario_dir, out, SynthConfig(image_size=(64, 112)), frames_per_scenario=2,
                                frame_stride=10, progress=False)


def test_a_scenario_with_an_unusable_lane_renders_with_repair_and_is_reported_without(real_dir, tmp_path):
    waymo = "sd_training.tfrecord-00000-of-01000_8a346109094cd5aa.pkl"  # holds a lane of one point
    cfg = SynthConfig(image_size=(32, 56), buildings=False)
    plain = write_synthetic_dataset(real_dir, tmp_path / "plain", cfg, frames_per_scenario=1, progress=False,
                                    scenarios=[waymo])
    assert plain["num_frames"] == 0 and "repair" in plain["failed"][waymo]
    fixed = write_synthetic_dataset(real_dir, tmp_path / "fixed", cfg, frames_per_scenario=1, progress=False,
                                    scenarios=[waymo], repair=True)
    assert fixed["num_frames"] == 1 and not fixed["failed"]


def test_frame_dataset_and_split(scenario_dir, tmp_path):
    import torch

    out = tmp_path / "synth"
    write_synthetic_dataset(scenario_dir, out, SynthConfig(image_size=(32, 56), buildings=False),
                            frames_per_scenario=3, frame_stride=5, progress=False, scenarios=["sd_road0.pkl",
                                                                                              "sd_road1.pkl"])
    ds = FrameDataset(out, with_depth=True)
    assert len(ds) == 6
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    expect = {"images": (torch.uint8, (4, 6, 3, 32, 56)), "bev": (torch.uint8, (4, 8, 200, 200)),
              "boxes": (torch.float32, (4, 64, 7)), "classes": (torch.int64, (4, 64)),
              "box_valid": (torch.bool, (4, 64)), "K": (torch.float32, (4, 6, 3, 3)),
              "T_cam_from_ego": (torch.float32, (4, 6, 4, 4)), "semantic": (torch.uint8, (4, 6, 32, 56)),
              "depth": (torch.float32, (4, 6, 32, 56))}
    for key, (dtype, shape) in expect.items():
        assert batch[key].dtype == dtype and tuple(batch[key].shape) == shape, key
    assert len(batch["name"]) == 4 and batch["box_valid"].any()
    assert torch.allclose(batch["K"][0], torch.tensor(ds.rig.K, dtype=torch.float32))

    names = [f"s{i}__{t:04d}" for i in range(10) for t in range(3)]
    train, held = split_frames(names, 0.3, seed=1)
    assert {scenario_of(n) for n in train}.isdisjoint(scenario_of(n) for n in held)
    assert len(held) == 9 and len(train) + len(held) == len(names)
    assert split_frames(names, 0.3, seed=1) == (train, held)
    assert split_frames(ds.names, 0.5)[1] and split_frames(ds.names, 0.5)[0]


def test_a_merged_frame_dataset_survives_moving_its_folder(scenario_dir, tmp_path):
    import shutil

    from bevgen.render.dataset import merge_datasets

    work = tmp_path / "work"
    write_synthetic_dataset(scenario_dir, work / "synth", SynthConfig(image_size=(32, 56), buildings=False),
                            frames_per_scenario=1, progress=False, scenarios=["sd_road0.pkl"])
    index = merge_datasets({"": work / "synth", "aug": work / "synth"}, work / "merged")
    before = FrameDataset(work / "merged", names=["aug-sd_road0__0010"])[0]
    shutil.move(work, tmp_path / "moved")                 # relative links: both ends moved together
    after = FrameDataset(tmp_path / "moved" / "merged")
    assert len(after) == len(index["frames"]) == 2 and "aug-sd_road0__0010" in after.names
    assert np.array_equal(after[after.names.index("aug-sd_road0__0010")]["images"], before["images"])
    kept = merge_datasets({"": tmp_path / "moved" / "synth", "aug": tmp_path / "moved" / "synth"}, tmp_path / "some",
                          keep=lambda name: False)  # a filter by source name: nothing kept, nothing linked
    assert kept["frames"] == [] and not any((tmp_path / "some" / "frames").iterdir())
