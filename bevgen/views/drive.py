"""Six generated camera views of a simulated drive, frame by frame, with a temporal-consistency figure.

Input: the one-frame scenarios of a recorded episode (``bevgen.rollout.record_rollout(...,
keep_snapshots=True).snapshots``). Per frame: BEV raster -> the views pipeline -> six generated images,
and the synthetic renderer's six ground-truth images of the same frame. The video frame is the BEV beside
the generated 2x3 camera grid, with the ground truth below.

Temporal consistency (:func:`temporal_change`): between consecutive frames, the mean absolute change
(0-255 levels) over pixels of a static semantic class (sky, ground, road, marking, crosswalk, building) in
both ground-truth frames. The ground truth's own figure is the change that ego motion explains; a generator
that re-draws the scene independently every frame exceeds it. With ``still_levels`` the mask keeps only
pixels whose ground-truth colour changed by less than that (flicker: ground truth ~0 there by
construction). Cost: O(frames x views x H x W).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bevgen.cameras import nuscenes_rig
from bevgen.layout import BevConfig
from bevgen.preview import colorize
from bevgen.render.dataset import frame_arrays
from bevgen.render.scene import SEMANTIC_CLASSES, SceneRenderer, SynthConfig
from bevgen.views.figures import COND_KEYS, views_figure

# torch is imported lazily (generation only): optional `ml` extra.

__all__ = ["DriveViews", "generate_drive_views", "temporal_change", "STATIC_CLASSES"]

STATIC_CLASSES = ("sky", "ground", "road", "marking", "crosswalk", "building")


@dataclass
class DriveViews:
    """Generated and ground-truth views of a drive.

    Attributes:
        generated: uint8 [F, V, H, W, 3]; truth: uint8 [F, V, H, W, 3]; semantic: uint8 [F, V, H, W]
        (ground truth classes, ``bevgen.render.scene.SEMANTIC_CLASSES``); bev: uint8 [F, S, S, 3]
        colourised rasters; frames: uint8 [F, H', W', 3] video frames; seconds_per_frame: generation time.
    """

    generated: np.ndarray
    truth: np.ndarray
    semantic: np.ndarray
    bev: np.ndarray
    frames: np.ndarray
    seconds_per_frame: float


def temporal_change(images: np.ndarray, truth: np.ndarray, semantic: np.ndarray,
                    still_levels: float | None = None) -> float:
    """Mean |I_{k+1} - I_k| (0-255) over ground-truth-static pixels of consecutive frames.

    Args:
        images: uint8 [F, V, H, W, 3] frames to score (generated, or ``truth`` itself for the reference).
        truth: uint8 [F, V, H, W, 3] ground-truth renders; semantic: uint8 [F, V, H, W] their classes.
        still_levels: if given, keep only pixels whose ground-truth colour changes by less than this (mean of RGB).
    Returns:
        the mean change, or nan when fewer than two frames or no still pixel.
    """

    if len(images) < 2:
        return float("nan")
    static_ids = np.array([SEMANTIC_CLASSES.index(c) for c in STATIC_CLASSES])
    static = np.isin(semantic, static_ids)
    mask = static[1:] & static[:-1]
    if still_levels is not None:
        mask &= np.abs(np.diff(truth.astype(np.int16), axis=0)).mean(-1) < still_levels
    if not mask.any():
        return float("nan")
    change = np.abs(np.diff(images.astype(np.int16), axis=0)).mean(-1)
    return float(change[mask].mean())


def generate_drive_views(snapshots: Sequence, generate: Callable, image_size: Sequence[int],
                         bev_range_m: float = 50.0, batch_size: int = 4, seed: int = 0,
                         progress: Callable | None = None) -> DriveViews:
    """Render ground truth and generate the six views of every snapshot of a drive.

    Args:
        snapshots: one-frame Scenarios (frame 0 of each is drawn), e.g. ``RolloutResult.snapshots``.
        generate: ``generate(batch, seed) -> uint8 [b, V, 3, H, W]`` (a views pipeline call).
        image_size: (H, W) the ground truth is rendered at (the pipeline's image size).
        bev_range_m: BEV half extent (the model's). batch_size: frames per generate call.
        seed: the same seed for every frame, so only the layout changes between frames.
        progress: optional ``progress(iterable) -> iterable`` wrapper (e.g. tqdm).
    Returns:
        :class:`DriveViews`.
    """

    import torch

    cfg = SynthConfig(image_size=tuple(image_size), bev=BevConfig(range_m=bev_range_m))
    arrays, bevs = [], []
    with SceneRenderer(nuscenes_rig(cfg.image_size), cfg) as renderer:
        for snap in snapshots:
            frame = renderer.render(snap, 0)  # its layout is the BEV the generator sees
            bevs.append(colorize(frame.layout))
            arrays.append(frame_arrays(frame, snap.id))
    generated, seconds = [], 0.0
    chunks = range(0, len(arrays), batch_size)
    for i in (progress(chunks) if progress else chunks):
        chunk = arrays[i:i + batch_size]
        batch = {k: torch.from_numpy(np.stack([a[k] for a in chunk])) for k in COND_KEYS}
        t0 = time.perf_counter()
        out = generate(batch, seed)
        seconds += time.perf_counter() - t0
        generated.append(out.permute(0, 1, 3, 4, 2).cpu().numpy())
    gen = np.concatenate(generated)
    truth = np.stack([a["images"] for a in arrays])
    frames = np.stack([views_figure(b, g, t) for b, g, t in zip(bevs, gen, truth)])
    return DriveViews(generated=gen, truth=truth, semantic=np.stack([a["semantic"] for a in arrays]),
                      bev=np.stack(bevs), frames=frames, seconds_per_frame=seconds / max(len(arrays), 1))
