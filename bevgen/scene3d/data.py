"""Training data for the scene generator: cameras of a ``bevgen.render`` frame dataset, each made square
by a centred crop + resize (K updated), with the boxes that camera sees.

Everything is decoded once and kept in memory (a 64x64 image per frame: ~12 kB; 10k frames = 120 MB).
Frames that fail to load (on any of the requested cameras) are reported and skipped whole, so no partial
frame gets in. Cost O(frames) to build, O(B) per batch.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bevgen.render.dataset import load_frame
from bevgen.scene3d.layout import LayoutBatch, SceneLayout, _one_camera, _require, layout_from_frame
from sim_bridge.boxes import Boxes3D

# torch is imported lazily (batching only): loading layouts works without the `ml` extra.

__all__ = ["Scene3DData", "load_scene3d_data"]


@dataclass(frozen=True, eq=False)
class Scene3DData:
    """M samples (frame, camera) at resolution R, N boxes each.

    Attributes:
        images: uint8 [M, R, R, 3] RGB.
        boxes: ``Boxes3D`` [M, N] (float32, ego frame; classes int64; valid bool: the boxes the camera sees).
        K: float32 [M, 3, 3] for R x R; T_cam_from_ego: float32 [M, 4, 4].
        windows: float32 [M, N, 4] projected 2D boxes (x0, y0, x1, y1) in pixels, 0 where invalid.
        names: M sample names ``<frame>:<camera>``; problems: "name: error" for skipped frames.
    """

    images: np.ndarray
    boxes: Boxes3D
    K: np.ndarray
    T_cam_from_ego: np.ndarray
    windows: np.ndarray
    names: tuple[str, ...]
    problems: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> np.ndarray:
        """int64 [M, N] box classes (``boxes.classes``)."""
        return self.boxes.classes

    @property
    def valid(self) -> np.ndarray:
        """bool [M, N] box mask (``boxes.valid``)."""
        return self.boxes.valid

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def validate(self) -> "Scene3DData":
        """Check that every field agrees with M, N and R; returns self. Raises ValueError otherwise."""
        _require(isinstance(self.boxes, Boxes3D) and len(self.boxes.batch_shape) == 1,
                 f"Scene3DData.boxes must be a Boxes3D [M, N], got {type(self.boxes).__name__}")
        M, N = *self.boxes.batch_shape, len(self.boxes)
        R = self.resolution
        _require(self.images.shape == (M, R, R, 3) and self.images.dtype == np.uint8,
                 f"Scene3DData.images must be uint8 [M={M}, R, R, 3], got {self.images.dtype} {self.images.shape}")
        _require(self.windows.shape == (M, N, 4),
                 f"Scene3DData.windows must be [M={M}, N={N}, 4], got {self.windows.shape}")
        _require(self.K.shape == (M, 3, 3), f"Scene3DData.K must be [M={M}, 3, 3], got {self.K.shape}")
        _require(self.T_cam_from_ego.shape == (M, 4, 4),
                 f"Scene3DData.T_cam_from_ego must be [M={M}, 4, 4], got {self.T_cam_from_ego.shape}")
        _require(len(self.names) == M, f"Scene3DData: {len(self.names)} names for M={M} samples")
        return self

    def layout(self, i: int) -> SceneLayout:
        """The SceneLayout of frame i."""
        camera = self.names[i].rsplit(":", 1)[-1]  # samples are named "<frame>:<camera>"
        return SceneLayout(self.boxes[i], _one_camera(self.K[i], self.T_cam_from_ego[i],
                                                      (self.resolution, self.resolution), camera))

    def layout_batch(self, idx: Sequence[int] | np.ndarray, device: Any = "cpu") -> LayoutBatch:
        """Inputs of ``Scene3DGenerator.forward`` for samples ``idx`` (B of them), windows included."""
        import torch

        idx = np.asarray(idx)
        K, T, win = (torch.as_tensor(getattr(self, k)[idx], device=device) for k in ("K", "T_cam_from_ego", "windows"))
        return LayoutBatch(self.boxes[idx].to(device), K, T, win)

    def image_batch(self, idx: Sequence[int] | np.ndarray, device: Any = "cpu"):
        """float32 [B, 3, R, R] in [-1, 1]."""
        import torch

        x = torch.as_tensor(self.images[np.asarray(idx)], device=device)
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_scene3d_data(root: str | Path, cameras: Sequence[str] = ("CAM_FRONT",), resolution: int = 64,
                      max_objects: int = 8,
                      class_filter: Sequence[int] = (0,), max_depth: float = 60.0,
                      names: Sequence[str] | None = None) -> Scene3DData:
    """Read ``root/index.json`` and ``root/frames/*.npz`` (``bevgen.render.dataset`` format).

    Args:
        root: dataset directory; cameras: view names in the index's rig (each frame gives one sample per
            camera; the generator is conditioned on the camera, so several views multiply the data);
        resolution: square side R.
        max_objects, class_filter, max_depth: box selection (``layout.select_boxes``).
        names: subset of frame names (default: all in the index).
    Returns:
        Scene3DData (validated). Raises ValueError when no frame could be read.
    """
    root = Path(root)
    index_path = root / "index.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{root}: no index.json (make one with `bevgen views dataset`)")
    index = json.loads(index_path.read_text())
    cams = index.get("rig", {}).get("names")
    if isinstance(cameras, str):
        cameras = (cameras,)
    missing = [c for c in cameras if cams is not None and c not in cams]
    if missing:
        raise ValueError(f"camera(s) {missing} not in the dataset's rig {cams}")
    rows, problems = [], []
    for name in (names if names is not None else index["frames"]):
        path = root / "frames" / (name if name.endswith(".npz") else f"{name}.npz")
        try:
            arrays = load_frame(path)
            frame_rows = []  # kept only when every camera of the frame succeeds (no partial frames)
            for cam in cameras:
                layout, image = layout_from_frame(arrays, cam, resolution, max_objects, class_filter, max_depth,
                                                  names=cams)
                frame_rows.append((f"{name}:{cam}", layout.validate(), image))
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as e:
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        rows.extend(frame_rows)
    if not rows:
        raise ValueError(f"{root}: no usable frames ({problems[:3]})")
    windows = np.stack([np.nan_to_num(lay.boxes_2d, nan=0.0) for _, lay, _ in rows]).astype(np.float32)
    boxes = Boxes3D.stack([lay.boxes.replace(valid=lay.visible) for _, lay, _ in rows])  # visible boxes only
    return Scene3DData(np.stack([im for _, _, im in rows]), boxes, np.stack([lay.K for _, lay, _ in rows]),
                       np.stack([lay.T_cam_from_ego for _, lay, _ in rows]),
                       windows, tuple(n for n, _, _ in rows), tuple(problems)).validate()
