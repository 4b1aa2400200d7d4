"""Real paired data: nuScenes keyframe camera images + BEV layouts, in the synthetic dataset's format.

For every keyframe sample of every scene: the six camera images (``NUSCENES_CAMERAS`` order) are read
through nuscenes-devkit, resized so that they cover the target size (aspect kept) and cropped -- rows
from the TOP (mostly sky), columns symmetrically -- with ``CameraRig.resized`` / ``CameraRig.cropped``
updating K exactly as the pixels move. The BEV raster and boxes come from the scene converted by
:mod:`sim_bridge.sources.nuscenes` (10 Hz resampling: keyframe ``k`` is frame ``5 k``).

Geometry: each camera's extrinsics come from that sample's own ``calibrated_sensor`` record and are
expressed relative to the ego pose of the LAYOUT frame (the LIDAR_TOP keyframe pose the scenario uses):
``T_cam_from_ego = T_cam_from_egocam @ T_egocam_from_world @ T_world_from_ego``, where ``egocam`` is the
ego pose at the camera's own timestamp (nuScenes cameras fire up to ~50 ms apart; at 10 m/s that is
0.5 m). The layout ego frame is planar (x, y, yaw of the scenario, z of the ground under the ego: its box-centre z
minus half its height).

Depth and semantics are unknown for real images: they are stored as zeros, and ``index.json`` says
so (``config.depth_available`` / ``config.semantic_available`` = false).

Cost: O(samples x 6 x image decode + resize); the tables and the conversion are loaded once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from bevgen.cameras import NUSCENES_CAMERAS, CameraRig, quaternion_to_matrix, rig_from_nuscenes_calibration
from bevgen.layout import BevConfig, BevRasterizer
from bevgen.render.dataset import (_atomic_json, _frame_ok, check_resumable, frame_name, write_frame,
                                   write_index)
from runkit.config import to_dict
from sim_bridge.sources.nuscenes import iter_nuscenes_scenarios, scenario_filename

# cv2 and nuscenes (optional devkit) are imported lazily, in the functions that use them.

__all__ = ["write_nuscenes_image_dataset", "cover_crop", "planar_pose_matrix", "KEYFRAME_STRIDE"]

KEYFRAME_STRIDE = 5  # scenario frames (10 Hz) per nuScenes keyframe (2 Hz); see sim_bridge.sources.nuscenes


def cover_crop(src_hw: Sequence[int], dst_hw: Sequence[int]) -> tuple[tuple[int, int], int, int]:
    """Resize-then-crop plan mapping an image of ``src_hw`` onto ``dst_hw`` without distortion.

    The image is scaled by s = max(H/h, W/w) (so it covers the target, aspect kept), then ``top`` rows
    are cut from the top and the columns are cut symmetrically.

    Returns:
        (resized_hw, top, left): size after resizing, and the crop offsets in the resized image.
    """
    (h, w), (H, W) = src_hw, dst_hw
    s = max(H / h, W / w)
    rh, rw = max(H, int(round(h * s))), max(W, int(round(w * s)))
    return (rh, rw), rh - H, (rw - W) // 2


def planar_pose_matrix(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """[4, 4] world-from-body transform of a pose with only a yaw rotation (about +z)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, z], [0, 0, 0, 1]], np.float64)


def _pose_matrix(record: dict) -> np.ndarray:
    """[4, 4] world-from-body transform of a nuScenes ego_pose record (translation + w,x,y,z rotation)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(np.asarray(record["rotation"], np.float64))
    T[:3, 3] = record["translation"]
    return T


def _sample_views(nusc, dataroot: Path, sample: dict, T_world_from_ego: np.ndarray,
                  image_size: Sequence[int]) -> tuple[np.ndarray, CameraRig]:
    """Images uint8 [6, H, W, 3] RGB and the matching CameraRig for one keyframe sample."""
    import cv2

    records, images, T_cam_from_ego = [], [], []
    for channel in NUSCENES_CAMERAS:
        token = sample["data"].get(channel)
        if token is None:
            raise KeyError(f"sample {sample['token']} has no {channel} sample_data")
        sd = nusc.get("sample_data", token)
        path = dataroot / sd["filename"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read camera image {path}")
        images.append(img[..., ::-1])
        calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        records.append({**calib, "channel": channel})
        T_egocam_from_world = np.linalg.inv(_pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"])))
        T_cam_from_ego.append(T_egocam_from_world @ T_world_from_ego)
    hw = images[0].shape[:2]
    if any(im.shape[:2] != hw for im in images):
        raise ValueError(f"sample {sample['token']}: camera images differ in size")
    base = rig_from_nuscenes_calibration(records, image_size=hw, names=NUSCENES_CAMERAS, calib_size=hw)
    rig = CameraRig(base.names, base.K, np.einsum("vij,vjk->vik", base.T_cam_from_ego, np.array(T_cam_from_ego)),
                    hw).validate(atol=1e-5)
    resized_hw, top, left = cover_crop(hw, image_size)
    out = np.stack([cv2.resize(np.ascontiguousarray(im), resized_hw[::-1], interpolation=cv2.INTER_AREA)
                    [top:top + image_size[0], left:left + image_size[1]] for im in images])
    return out, rig.resized(resized_hw).cropped(top, left, image_size)


def _keyframe_samples(nusc, scene: dict) -> list[dict]:
    samples, token = [], scene["first_sample_token"]
    while token:
        samples.append(nusc.get("sample", token))
        token = samples[-1]["next"]
    return samples


def write_nuscenes_image_dataset(dataroot: str | Path, version: str, out_dir: str | Path,
                                 image_size: Sequence[int] = (128, 224), bev: BevConfig | None = None,
                                 scenes: Sequence[str] | None = None, map_radius_m: float = 200.0,
                                 resume: bool = True, progress: bool = True) -> dict:
    """Write nuScenes keyframes as paired image / BEV frames (format of :mod:`bevgen.render.dataset`).

    Args:
        dataroot: nuScenes root (``<version>/*.json`` tables, ``samples/CAM_*`` images, ``maps/expansion``).
        version: release folder, e.g. ``"v1.0-mini"``.
        out_dir: output dataset directory.
        image_size: (H, W) of the stored images (resize to cover + top / centre crop).
        bev: BevConfig of the paired raster and boxes (default BevConfig()).
        scenes: scene names to convert (default all).
        map_radius_m: map margin around the ego path used by the scene conversion.
        resume: keep complete frame files already in ``out_dir`` (the index must match the settings).
        progress: tqdm progress bar over samples.
    Returns:
        Summary dict: num_frames, written, kept, failed {scene or frame: error}, seconds, out_dir (also
        saved with per-scene detail in ``conversion_report.json``).
    """
    from nuscenes import NuScenes

    dataroot, out_dir = Path(dataroot), Path(out_dir)
    image_size, bev = tuple(int(s) for s in image_size), bev or BevConfig()
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    cfg = {"version": version, "image_size": list(image_size), "map_radius_m": map_radius_m,
           "keyframe_stride": KEYFRAME_STRIDE, "depth_available": False, "semantic_available": False,
           "bev": to_dict(bev)}
    if resume:  # per-sample rigs differ by design: only the settings must match
        check_resumable(out_dir, None, "nuscenes", cfg)
    t0 = time.perf_counter()
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    by_name = {s["name"]: s for s in nusc.scene}
    names = list(by_name) if scenes is None else list(scenes)
    failed: dict[str, str] = {}
    frames, written, first_rig, per_scene = [], 0, None, {}
    converted = iter_nuscenes_scenarios(dataroot, version, scenes=names, map_radius_m=map_radius_m)
    bar = tqdm(total=sum(by_name[n]["nbr_samples"] for n in names if n in by_name), desc="nuScenes samples",
               unit="sample", disable=not progress)
    for scene_name, scenario in converted:
        if isinstance(scenario, Exception):
            failed[scene_name] = f"{type(scenario).__name__}: {scenario}"
            continue
        try:
            stem = scenario_filename(scenario).removesuffix(".pkl")
            raster = BevRasterizer(scenario, bev)
            samples = _keyframe_samples(nusc, by_name[scene_name])
        except Exception as e:  # a bad scene is reported and skipped
            failed[scene_name] = f"{type(e).__name__}: {e}"
            continue
        counts = per_scene.setdefault(scene_name, {"written": 0, "kept": 0, "failed": 0})
        for k, sample in enumerate(samples):
            bar.update(1)
            t = KEYFRAME_STRIDE * k
            name = frame_name(stem, t)
            path = out_dir / "frames" / f"{name}.npz"
            try:
                if resume and path.exists() and _frame_ok(path):
                    frames.append(name)
                    counts["kept"] += 1
                    continue
                layout = raster(t)
                ego = scenario.tracks.position[scenario.ego_index, t]
                ground = ego[2] - scenario.tracks.size[scenario.ego_index, t, 2] / 2  # track z is the box centre
                T_world_from_ego = planar_pose_matrix(ego[0], ego[1], ground, layout.ego_pose[2])
                images, rig = _sample_views(nusc, dataroot, sample, T_world_from_ego, image_size)
                first_rig = first_rig or rig
                V, (H, W) = rig.num_views, image_size
                write_frame(path, {
                    "images": images, "depth": np.zeros((V, H, W), np.float16),
                    "semantic": np.zeros((V, H, W), np.uint8), "bev": layout.raster,
                    **layout.box_arrays(), "K": rig.K.astype(np.float32),
                    "T_cam_from_ego": rig.T_cam_from_ego.astype(np.float32), "camera_names": np.array(rig.names),
                    "ego_pose": np.asarray(layout.ego_pose, np.float64), "scenario": np.array(stem),
                    "frame": np.array(t, np.int64)})
                frames.append(name)
                written += 1
                counts["written"] += 1
            except Exception as e:  # a bad sample (missing image, broken record) is reported and skipped
                failed[name], counts["failed"] = f"{type(e).__name__}: {e}", counts["failed"] + 1
    bar.close()
    seconds = time.perf_counter() - t0
    summary = {"out_dir": str(out_dir), "num_frames": len(frames), "written": written,
               "kept": len(frames) - written, "failed": failed, "seconds": round(seconds, 3)}
    if first_rig is None and frames:  # everything was kept: take the nominal rig from the old index

        first_rig = CameraRig.from_dict(json.loads((out_dir / "index.json").read_text())["rig"])
    if first_rig is not None:
        write_index(out_dir, frames, first_rig, bev, "nuscenes", cfg)
    _atomic_json({**summary, "dataroot": str(dataroot), "scenes": per_scene}, out_dir / "conversion_report.json")
    return summary
