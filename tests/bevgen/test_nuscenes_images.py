"""nuScenes keyframe images + BEV layouts written in the paired dataset format (synthetic release)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes")

from bevgen.cameras import CameraRig, project_points  # noqa: E402
from bevgen.render.dataset import FrameDataset, load_frame  # noqa: E402
from bevgen.render.nuscenes_images import cover_crop, write_nuscenes_image_dataset  # noqa: E402
from tests.sim_bridge.nuscenes_fixture import AGENTS, MARKERS, SCENES, write_nuscenes_fixture  # noqa: E402

VERSION = "v1.0-mini"
SIZE = (56, 112)  # fixture images are 90x160: resized to 63x112, then 7 rows cut from the top
AGENT_Z = {a[0]: a[6] for a in AGENTS}  # fixture box-centre heights (ego ground at z = 0)
AGENT_LENGTH = {a[0]: a[5][1] for a in AGENTS}


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_nuscenes_fixture(tmp_path_factory.mktemp("nuscenes"), VERSION)


@pytest.fixture(scope="module")
def written(fixture_root, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("nus_images")
    return out, write_nuscenes_image_dataset(fixture_root, VERSION, out, image_size=SIZE, progress=False)


def test_cover_crop_plans():
    assert cover_crop((900, 1600), (128, 224)) == ((128, 228), 0, 2)
    assert cover_crop((900, 1600), (224, 400)) == ((225, 400), 1, 0)
    assert cover_crop((90, 160), SIZE) == ((63, 112), 7, 0)


def test_writes_every_keyframe_in_dataset_format(written):
    out, summary = written
    n_keyframes = sum(s["keyframes"] for s in SCENES)
    assert summary["failed"] == {} and summary["num_frames"] == summary["written"] == n_keyframes
    index = json.loads((out / "index.json").read_text())
    assert index["source"] == "nuscenes" and index["config"]["depth_available"] is False
    assert sorted(int(n.rsplit("__", 1)[1]) for n in index["frames"] if "scene-0002" in n) == [0, 5, 10, 15, 20, 25]
    f = load_frame(out / "frames" / f"{index['frames'][0]}.npz")
    assert f["images"].shape == (6, *SIZE, 3) and f["images"].dtype == np.uint8
    assert f["K"].shape == (6, 3, 3) and f["bev"].shape == (8, 200, 200) and f["box_valid"].sum() >= 4
    assert f["camera_names"] == tuple(index["rig"]["names"])
    item = FrameDataset(out)[0]
    assert tuple(item["images"].shape) == (6, 3, *SIZE)


def _marker_centroid(image: np.ndarray, rgb) -> np.ndarray | None:
    """Centroid (u, v) in pixel coordinates of the pixels close to a saturated marker colour."""
    diff = np.abs(image.astype(int) - np.array(rgb)).max(-1)
    rows, cols = np.nonzero(diff < 110)
    return None if len(rows) < 4 else np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def test_markers_land_where_boxes_project(written):
    """The fixture paints a disc at each marked agent's true box centre in every camera; after
    resize + crop, the frame's own K / T must project the agent there (to JPEG / resampling error)."""
    out, _ = written
    checked = 0
    for name in json.loads((out / "index.json").read_text())["frames"]:
        f = load_frame(out / "frames" / f"{name}.npz")
        rig = CameraRig(tuple(f"c{v}" for v in range(6)), f["K"], f["T_cam_from_ego"], SIZE)
        boxes = f["boxes"][f["box_valid"]]
        for key, rgb in MARKERS.items():
            match = np.flatnonzero(np.isclose(boxes[:, 3], AGENT_LENGTH[key]))
            if len(match) == 0:
                continue
            assert boxes[match[0], 2] == pytest.approx(AGENT_Z[key], abs=1e-3), "box-centre height above ground"
            centre = boxes[match[0], None, :3].astype(np.float64)
            uv, _, _ = project_points(rig, centre)
            for v in range(6):
                u_, v_ = uv[v, 0]
                inside = np.isfinite(u_) and 4 <= u_ <= SIZE[1] - 4 and 4 <= v_ <= SIZE[0] - 4
                got = _marker_centroid(f["images"][v], rgb)
                if inside and got is not None:
                    np.testing.assert_allclose(got, uv[v, 0], atol=0.6, err_msg=f"{name} view {v} {key}")
                    checked += 1
                elif got is not None:  # a marker must never show up where its agent does not project
                    assert not np.isfinite(u_) or not (-4 <= u_ <= SIZE[1] + 4 and -4 <= v_ <= SIZE[0] + 4), \
                        f"{name} view {v}: {key} marker at {got}, projection {uv[v, 0]}"
    assert checked >= 12  # the lead car in front, the truck behind / beside, in both scenes


def test_resume_and_bad_sample(fixture_root, tmp_path):
    root = tmp_path / "ns"
    shutil.copytree(fixture_root, root)
    out = tmp_path / "out"
    broken = sorted((root / "samples" / "CAM_BACK").glob("scene-0001__*.jpg"))[2]
    broken.unlink()
    s = write_nuscenes_image_dataset(root, VERSION, out, image_size=SIZE, scenes=["scene-0001", "scene-9999"],
                                     progress=False)
    assert s["written"] == SCENES[0]["keyframes"] - 1
    assert set(s["failed"]) == {"scene-9999", "sd_nuscenes_v1.0-mini_scene-0001__0010"}
    assert "FileNotFoundError" in s["failed"]["sd_nuscenes_v1.0-mini_scene-0001__0010"]
    again = write_nuscenes_image_dataset(root, VERSION, out, image_size=SIZE, scenes=["scene-0001"], progress=False)
    assert again["written"] == 0 and again["kept"] == SCENES[0]["keyframes"] - 1
    with pytest.raises(ValueError, match="different"):
        write_nuscenes_image_dataset(root, VERSION, out, image_size=(64, 112), scenes=["scene-0001"], progress=False)
