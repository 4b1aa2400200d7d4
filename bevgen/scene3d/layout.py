"""Scene layouts for the 3D-aware generator: boxes in the ego frame plus one pinhole camera.

A :class:`SceneLayout` is what the generator is driven by and what edits change: per box its centre,
size, yaw, class and a validity flag (padded to N), and the camera intrinsics ``K`` and extrinsics
``T_cam_from_ego`` ("world" -> camera, the world being the ego frame of the frame it came from).
Derived quantities (corners, projected 2D boxes, visibility) are properties computed with
``bevgen.cameras``.

Frames: ego x forward, y left, z up, metres, origin on the ground under the ego centre; boxes are a
``sim_bridge.boxes.Boxes3D`` (centre z). Camera frame OpenCV (x right, y down, z forward).

Builders (numpy only, no torch): from a synthetic/nuScenes frame ``.npz`` of ``bevgen.render``'s
on-disk format (one camera, cropped to a centred square and resized, with K updated), from a
scenario frame (``BevRasterizer``), and from JSON. Cost: O(N) per layout (N boxes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bevgen.cameras import NUSCENES_CAMERAS, CameraRig, nuscenes_rig, project_boxes
from bevgen.layout import BevConfig, BevRasterizer
from bevgen.render.dataset import load_frame
from sim_bridge.boxes import Boxes3D
from sim_bridge.scenario import load_scenario

# cv2 and torch are imported lazily: layouts are usable without the `ml` extra.

__all__ = ["SceneLayout", "square_camera", "select_boxes", "layout_from_frame", "layout_from_scenario",
           "load_layout", "stack_layouts", "LayoutBatch", "DEFAULT_CAMERA"]

DEFAULT_CAMERA = "CAM_FRONT"


def _require(ok: bool, message: str) -> None:
    """Contract check that survives ``python -O`` (unlike ``assert``): raise ValueError(message) unless ok."""
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True, eq=False)
class SceneLayout:
    """One camera's view of a box layout.

    Attributes:
        boxes: ``Boxes3D`` [N], float32, ego frame, m / rad; classes int64 index into
            ``bevgen.layout.CLASS_NAMES``; valid False on padded rows (their boxes are ignored everywhere).
        camera: a one-view ``CameraRig`` (its name, K, T_cam_from_ego and image size); ``K`` (float32
            [3, 3]), ``T_cam_from_ego`` (float32 [4, 4]) and ``image_size`` (H, W) read it.
    """

    boxes: Boxes3D
    camera: CameraRig

    @property
    def K(self) -> np.ndarray:
        """float32 [3, 3] intrinsics in pixels of ``image_size``."""
        return self.camera.K[0].astype(np.float32)

    @property
    def T_cam_from_ego(self) -> np.ndarray:
        """float32 [4, 4] rigid transform ego -> OpenCV camera frame."""
        return self.camera.T_cam_from_ego[0].astype(np.float32)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.camera.image_size)

    def validate(self) -> "SceneLayout":
        """Check shapes, dtypes and a rigid camera transform; returns self. Raises ValueError otherwise."""
        b = self.boxes
        _require(isinstance(b, Boxes3D) and b.batch_shape == () and isinstance(b.center, np.ndarray),
                 f"SceneLayout.boxes must be one layout's numpy Boxes3D [N], got {type(b).__name__}")
        _require(b.center.dtype == np.float32 and b.size.dtype == np.float32 and b.yaw.dtype == np.float32,
                 f"SceneLayout.boxes must be float32, got {b.center.dtype}")
        _require(b.classes.dtype == np.int64, f"SceneLayout.boxes.classes must be int64, got {b.classes.dtype}")
        _require(isinstance(self.camera, CameraRig) and self.camera.num_views == 1,
                 f"SceneLayout.camera must be a one-view CameraRig, got {self.camera!r:.80}")
        _require(np.isfinite(b.select(b.valid).as_array()).all(), "SceneLayout: valid boxes must be finite")
        _require((b.size[b.valid] > 0).all(),
                 "SceneLayout: valid boxes need positive sizes (length, width, height)")
        R = self.T_cam_from_ego[:3, :3].astype(np.float64)
        _require(np.allclose(R @ R.T, np.eye(3), atol=1e-4), "SceneLayout: T_cam_from_ego rotation is not orthonormal")
        _require(len(self.image_size) == 2 and min(self.image_size) > 0,
                 f"SceneLayout.image_size must be (H, W) > 0, got {self.image_size}")
        return self

    @property
    def num_boxes(self) -> int:
        """N, padding included."""
        return len(self.boxes)

    @property
    def classes(self) -> np.ndarray:
        """int64 [N] box classes (``boxes.classes``)."""
        return self.boxes.classes

    @property
    def valid(self) -> np.ndarray:
        """bool [N] box mask (``boxes.valid``)."""
        return self.boxes.valid

    @property
    def corners(self) -> np.ndarray:
        """float64 [N, 8, 3] box corners in the ego frame (``Boxes3D.corners`` order)."""
        return self.boxes.to(dtype=np.float64).corners()

    @property
    def boxes_2d(self) -> np.ndarray:
        """float64 [N, 4] (x0, y0, x1, y1) projected, image-clipped 2D boxes; NaN where invisible or invalid."""
        b = project_boxes(self.camera, self.boxes).boxes_2d[0]
        return np.where(self.valid[:, None], b, np.nan)

    @property
    def visible(self) -> np.ndarray:
        """bool [N]: valid and overlapping the image."""
        return self.valid & project_boxes(self.camera, self.boxes).visible[0]

    @property
    def camera_center(self) -> np.ndarray:
        """float64 [3] camera centre in the ego frame."""
        T = self.T_cam_from_ego.astype(np.float64)
        return -T[:3, :3].T @ T[:3, 3]

    def replace(self, **changes: Any) -> "SceneLayout":
        """A copy with fields replaced (dtypes normalised); ``classes`` / ``valid`` replace those of the boxes,
        ``K`` / ``T_cam_from_ego`` / ``image_size`` those of the camera."""
        box_changes = {k: changes.pop(k) for k in ("classes", "valid") if k in changes}
        if box_changes:
            changes["boxes"] = changes.get("boxes", self.boxes).replace(**box_changes)
        cam_changes = {k: changes.pop(k) for k in ("K", "T_cam_from_ego", "image_size") if k in changes}
        if cam_changes:
            cam = changes.get("camera", self.camera)
            changes["camera"] = _one_camera(cam_changes.get("K", cam.K[0]),
                                            cam_changes.get("T_cam_from_ego", cam.T_cam_from_ego[0]),
                                            cam_changes.get("image_size", cam.image_size), cam.names[0])
        return _normalised(dataclasses.replace(self, **changes))

    def resized(self, size: Sequence[int]) -> "SceneLayout":
        """The same camera for images resized to ``size`` = (H', W') (``CameraRig.resized``)."""
        return self.replace(camera=self.camera.resized(size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (only valid boxes are written)."""
        kept = self.boxes.select(self.valid)
        return {"boxes": kept.as_array().tolist(), "classes": kept.classes.tolist(), "K": self.K.tolist(),
                "T_cam_from_ego": self.T_cam_from_ego.tolist(), "image_size": list(self.image_size),
                "camera": self.camera.names[0], "max_boxes": self.num_boxes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SceneLayout":
        """Inverse of :meth:`to_dict`; ``max_boxes`` (default: number of boxes) sets the padding."""
        boxes = np.asarray(d.get("boxes", []), dtype=np.float32).reshape(-1, 7)  # the JSON's packed rows
        n = max(int(d.get("max_boxes", len(boxes))), len(boxes))
        classes = np.asarray(d.get("classes", [0] * len(boxes)), dtype=np.int64).reshape(-1)
        if len(classes) != len(boxes):
            raise ValueError(f"layout: {len(boxes)} boxes but {len(classes)} classes")
        camera = _one_camera(d["K"], d["T_cam_from_ego"], d["image_size"], str(d.get("camera", "cam")))
        return _padded(Boxes3D.from_array(boxes, classes), n, camera).validate()

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _one_camera(K: Any, T: Any, image_size: Sequence[int], name: str = "cam") -> CameraRig:
    """A one-view rig; K and T are kept at float32 precision (what layouts store and the generator reads)."""
    return CameraRig((name,), np.asarray(K, np.float32)[None].astype(np.float64),
                     np.asarray(T, np.float32)[None].astype(np.float64), (int(image_size[0]), int(image_size[1])))


def _normalised(layout: SceneLayout) -> SceneLayout:
    b, cam = layout.boxes, layout.camera
    boxes = Boxes3D(*(np.array(a, np.float32) for a in (b.center, b.size, b.yaw)), np.asarray(b.classes, np.int64),
                    np.asarray(b.valid, bool))
    return SceneLayout(boxes, _one_camera(cam.K[0], cam.T_cam_from_ego[0], cam.image_size, cam.names[0]))


def _padded(boxes: Boxes3D, n: int, camera: CameraRig) -> SceneLayout:
    """Pad k <= n boxes (all taken as valid) to n rows (valid=False on the padding)."""
    k, n = len(boxes), max(n, 1)  # at least one (padding) row keeps batched shapes non-empty
    pad = Boxes3D.empty(n - k)
    pad.size[:] = 1.0  # harmless sizes on padding rows
    out = Boxes3D.concat([boxes.to(dtype=np.float32).replace(valid=np.ones(k, bool)), pad])
    return _normalised(SceneLayout(out, camera))


def square_camera(rig: CameraRig, camera: str | int, resolution: int) -> tuple[CameraRig, tuple]:
    """Geometry of a centred square crop of one view, resized to ``resolution``.

    Args:
        rig: the dataset's rig at its image size (H, W).
        camera: view name or index.
        resolution: output side R in pixels.
    Returns:
        (the view as a one-view rig for the R x R image, crop (top, left, side) in source pixels).
    """
    if isinstance(camera, str) and camera not in rig.names:
        raise ValueError(f"camera {camera!r}: not in this rig; its cameras are {', '.join(rig.names)}")
    v = rig.names.index(camera) if isinstance(camera, str) else int(camera)
    if not 0 <= v < len(rig.names):
        raise ValueError(f"camera {v}: this rig has cameras 0..{len(rig.names) - 1} ({', '.join(rig.names)})")
    H, W = rig.image_size
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    sq = rig.cropped(top, left, (side, side)).resized((resolution, resolution))
    return CameraRig((sq.names[v],), sq.K[v:v + 1], sq.T_cam_from_ego[v:v + 1], sq.image_size), (top, left, side)


def select_boxes(boxes: Boxes3D, camera: CameraRig, max_objects: int, class_filter: Sequence[int] = (0,),
                 max_depth: float = 60.0) -> SceneLayout:
    """Keep boxes of ``class_filter`` seen by the camera, nearest first, padded to ``max_objects``.

    A box is kept when it is valid, its projection overlaps the image and its centre depth lies in
    (0.5, max_depth] m. Cost O(N) with N input boxes (one frame's ``Boxes3D``, ego frame).
    """
    boxes = boxes.numpy().to(dtype=np.float32)
    classes, valid = np.asarray(boxes.classes, np.int64), np.asarray(boxes.valid, bool)
    rig = camera
    vis = project_boxes(rig, boxes).visible[0] if len(boxes) else np.zeros(0, bool)
    depth = (boxes.center.astype(np.float64) @ rig.T_cam_from_ego[0, :3, :3].T + rig.T_cam_from_ego[0, :3, 3])[:, 2]
    keep = valid & vis & np.isin(classes, list(class_filter)) & (depth > 0.5) & (depth <= max_depth)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(depth[idx], kind="stable")][:max_objects]
    return _padded(boxes[idx].replace(classes=classes[idx]), max_objects, rig)


def _square_image(image: np.ndarray, crop: tuple, resolution: int) -> np.ndarray:
    import cv2

    top, left, side = crop
    sq = image[top:top + side, left:left + side]
    return cv2.resize(sq, (resolution, resolution), interpolation=cv2.INTER_AREA)


def layout_from_frame(frame: str | Path | Mapping[str, np.ndarray], camera: str | int = DEFAULT_CAMERA,
                      resolution: int = 64, max_objects: int = 8, class_filter: Sequence[int] = (0,),
                      max_depth: float = 60.0, names: Sequence[str] | None = None,
                      with_image: bool = True) -> tuple[SceneLayout, np.ndarray | None]:
    """Layout (and square image) of one camera of a ``bevgen.render`` frame.

    Args:
        frame: ``frames/<scenario>__<t>.npz`` path or its loaded arrays (``bevgen.render.dataset`` format:
            images [V,H,W,3] u8, boxes / classes / box_valid, K [V,3,3], T_cam_from_ego [V,4,4]).
        camera: view name (needs ``names``, else the nuScenes order is assumed) or index.
        resolution: square output side R.
        max_objects, class_filter, max_depth: see :func:`select_boxes`.
        names: camera names of the frame's views (default: the frame file's ``camera_names``).
        with_image: also return the cropped, resized image uint8 [R, R, 3].
    Returns:
        (SceneLayout with image_size (R, R), image or None).
    """

    f = load_frame(frame) if isinstance(frame, (str, Path)) else frame  # load_frame closes the file
    V, H, W = f["images"].shape[:3] if "images" in f else (len(f["K"]), *f["image_size"])
    if names is None:  # the frame's own names; frames from before they were stored: the nuScenes order
        names = f.get("camera_names") or (NUSCENES_CAMERAS[:V] if V == 6 else [f"cam{i}" for i in range(V)])
    names = tuple(names)
    rig = CameraRig(names, np.asarray(f["K"], np.float64), np.asarray(f["T_cam_from_ego"], np.float64), (H, W))
    view, crop = square_camera(rig, camera, resolution)
    boxes = Boxes3D.from_array(np.asarray(f["boxes"]).reshape(-1, 7), np.asarray(f["classes"], np.int64),
                               np.asarray(f["box_valid"], bool))  # the frame file's packed form -> typed
    layout = select_boxes(boxes, view, max_objects, class_filter, max_depth)
    v = rig.names.index(camera) if isinstance(camera, str) else int(camera)
    image = _square_image(np.asarray(f["images"][v]), crop, resolution) if with_image else None
    return layout, image


def layout_from_scenario(scenario: Any, t: int, camera: str | int = DEFAULT_CAMERA, resolution: int = 64,
                         max_objects: int = 8, class_filter: Sequence[int] = (0,), max_depth: float = 60.0,
                         rig: CameraRig | None = None) -> SceneLayout:
    """Layout of frame ``t`` of a ``sim_bridge.scenario.Scenario`` seen by one camera of ``rig``
    (default: the nuScenes rig at 900x1600), cropped square and resized to ``resolution``."""

    bev = BevRasterizer(scenario, BevConfig(max_boxes=64))(int(t))
    rig = rig or nuscenes_rig()
    view, _ = square_camera(rig, camera, resolution)
    return select_boxes(bev.boxes, view, max_objects, class_filter, max_depth)


def load_layout(path: str | Path, frame: int = 0, camera: str | int = DEFAULT_CAMERA, resolution: int = 64,
                max_objects: int = 8, class_filter: Sequence[int] = (0,)) -> SceneLayout:
    """Layout from a file: ``.json`` (:meth:`SceneLayout.to_dict`), a frame ``.npz`` of ``bevgen.render``
    (camera names from the sibling ``index.json`` when present) or a scenario ``.pkl`` (frame ``frame``).
    JSON layouts are resized to ``resolution`` (square) when their image size differs."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            layout = SceneLayout.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a layout JSON (SceneLayout.to_dict): {e}") from e
        return layout if layout.image_size == (resolution, resolution) else layout.resized((resolution, resolution))
    if path.suffix == ".npz":
        names = None
        index = path.parent.parent / "index.json"
        if index.exists():
            names = json.loads(index.read_text()).get("rig", {}).get("names")
        try:
            frame_arrays = load_frame(path)
        except (OSError, ValueError, KeyError, EOFError) as e:  # not an npz, pickled data refused, a key missing
            raise ValueError(f"{path}: not a frame file of `bevgen views dataset`: {e}") from e
        return layout_from_frame(frame_arrays, camera, resolution, max_objects, class_filter, names=names,
                                 with_image=False)[0]

    return layout_from_scenario(load_scenario(path, repair=True), frame, camera, resolution, max_objects,
                                class_filter)


@dataclass(frozen=True)
class LayoutBatch:
    """What ``Scene3DGenerator.forward`` renders: B layouts as tensors.

    Attributes:
        boxes: torch ``Boxes3D`` [B, N] (ego frame; float32, int64 classes, bool valid).
        K: float32 [B, 3, 3] for image_size x image_size images; T_cam_from_ego: float32 [B, 4, 4].
        windows: float32 [B, N, 4] projected box windows (x0, y0, x1, y1 px) where known (datasets), else None.
    """

    boxes: Boxes3D
    K: Any
    T_cam_from_ego: Any
    windows: Any = None

    def __len__(self) -> int:
        return int(self.K.shape[0])

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


def stack_layouts(layouts: Sequence[SceneLayout], device: Any = "cpu") -> LayoutBatch:
    """Batch layouts (same N) for the generator (imports torch lazily: layouts are usable without it)."""
    import torch

    if len({(lay.num_boxes, tuple(lay.image_size)) for lay in layouts}) != 1:
        raise ValueError("stack_layouts: layouts need the same number of boxes and image size")
    K, T = (torch.as_tensor(np.stack([getattr(lay, k) for lay in layouts]), device=device)
            for k in ("K", "T_cam_from_ego"))
    return LayoutBatch(Boxes3D.stack([lay.boxes for lay in layouts]).to(device), K, T)
