"""Figures of generated camera views: frame batches for the pipeline, the BEV-beside-views figure, panoramas.

Library code (the demo, the drive video, the CLI) imports these from here, never from the CLI module.
Every six-view grid is :func:`bevgen.render.dataset.view_mosaic` (front row FL F FR, back row BL B BR).
torch and OpenCV are imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from bevgen.cameras import NUSCENES_CAMERAS
from bevgen.layout import BevConfig, BevLayout, Boxes3D
from bevgen.preview import colorize
from bevgen.render.dataset import view_mosaic

# cv2 and torch are imported lazily: figures of numpy arrays work without the `ml` extra.

__all__ = ["frame_batch", "bev_image", "views_figure", "panorama", "pipe_names", "sample_grid", "view_mosaic"]

COND_KEYS = ("bev", "boxes", "classes", "box_valid", "K", "T_cam_from_ego")


def frame_batch(arrays: dict) -> dict:
    """One frame's arrays (``bevgen.render.dataset`` keys) -> a batch of one for a views pipeline.

    Args:
        arrays: numpy arrays of one frame: bev, boxes, classes, box_valid, K, T_cam_from_ego and optionally
            images uint8 [V, H, W, 3].
    Returns:
        dict of torch tensors with a leading batch axis of 1; images uint8 [1, V, 3, H, W].
    """
    import torch

    batch = {k: torch.from_numpy(np.ascontiguousarray(arrays[k]))[None] for k in COND_KEYS}
    if "images" in arrays:  # a condition-only frame (no rendering) has none; K then refers to the model's size
        batch["images"] = torch.from_numpy(np.ascontiguousarray(arrays["images"].transpose(0, 3, 1, 2)))[None]
    return batch


def bev_image(arrays: dict, range_m: float = 50.0) -> np.ndarray:
    """uint8 [S, S, 3] colourised BEV of one frame's stored raster and boxes (no re-rasterization).

    Args:
        arrays: one frame's arrays (``bev`` [C, S, S], ``boxes``, ``classes``, ``box_valid``, ``ego_pose``).
        range_m: the raster's half extent (its channels are the default ones).
    """

    cfg = BevConfig(range_m=range_m)
    boxes = Boxes3D.from_array(arrays["boxes"], arrays["classes"], arrays["box_valid"])  # file form -> typed
    lay = BevLayout(arrays["bev"], cfg.channels, boxes, ("",) * len(boxes), np.asarray(arrays["ego_pose"]), cfg)
    return colorize(lay)


def views_figure(bev_rgb: np.ndarray, generated: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """BEV beside the six views as a 2x3 camera grid (:func:`view_mosaic`), the ground truth below.

    Args:
        bev_rgb: uint8 [S, S, 3] colourised BEV. generated / truth: uint8 [V=6, H, W, 3] in rig order.
    Returns:
        uint8 [H', W', 3].
    """
    import cv2

    panels = [view_mosaic(generated, gap=2)] + ([view_mosaic(truth, gap=2)] if truth is not None else [])
    right = np.concatenate([p for g in panels for p in (g, np.full((4, g.shape[1], 3), 255, np.uint8))][:-1], 0)
    side = right.shape[0]
    bev = cv2.resize(bev_rgb, (side, side), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([bev, np.full((side, 4, 3), 255, np.uint8), right], 1)


def panorama(views: np.ndarray) -> np.ndarray:
    """Six views [6, H, W, 3] in rig order (FL F FR BR B BL) stitched left to right, starting at the
    back-left camera -> [H, 6 W, 3]."""
    order = [5, 0, 1, 2, 3, 4]
    return np.concatenate([views[i] for i in order], 1)


def pipe_names(arrays: dict) -> list[str]:
    """Camera names of a frame's views (nuScenes order, as many as the frame has K matrices)."""

    return list(NUSCENES_CAMERAS[: arrays["K"].shape[0]])


def sample_grid(frames: list[list]) -> np.ndarray:
    """Training preview: per frame [real, reconstruction, generated] uint8 [v, 3, H, W] (tensors or arrays)
    -> one uint8 [3, H', W'] image: per frame a strip of six-view mosaics (real | reconstruction |
    generated), frames top to bottom, 4-pixel white separators."""

    def join(parts: list, axis: int) -> np.ndarray:
        shape = list(parts[0].shape)
        shape[axis] = 4
        sep = np.full(shape, 255, np.uint8)
        return np.concatenate([x for part in parts for x in (part, sep)][:-1], axis)

    def hwc(x) -> np.ndarray:
        return np.asarray(x.cpu() if hasattr(x, "cpu") else x).transpose(0, 2, 3, 1)

    strips = [join([view_mosaic(hwc(p), gap=2) for p in f], 1) for f in frames]
    return np.ascontiguousarray(join(strips, 0).transpose(2, 0, 1))
