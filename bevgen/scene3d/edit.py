"""Rendering and editing with a trained scene generator (inference only; no training code here).

Edits are pure functions on the frozen :class:`SceneLayout` and :class:`SceneLatents`: move, rotate,
add, delete an object; restyle one object (a new latent); move or orbit the camera. Each returns a
new layout (and latents where they change); :func:`render` turns a layout + latents into a
:class:`RenderOutput`. Because objects are rendered in their own box coordinates, an edit to one box
moves, turns or removes exactly that object and leaves the rest of the scene untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bevgen.rollout import save_animation
from bevgen.scene3d.layout import SceneLayout, _require, stack_layouts
from bevgen.scene3d.metrics import to_uint8
from sim_bridge.boxes import Boxes3D
from sim_bridge.geometry import wrap_angle

# torch and bevgen.scene3d.model (torch) are imported lazily: importing this module stays light.

__all__ = ["SceneLatents", "RenderOutput", "render", "move_object", "rotate_object", "add_object", "delete_object",
           "restyle_object", "move_camera", "orbit_camera", "orbit_frames", "move_frames", "save_gif"]


@dataclass(frozen=True, eq=False)
class SceneLatents:
    """Latents of one scene: z_obj float32 [N, z_dim] (row i styles box i), z_bg float32 [z_dim]."""

    z_obj: np.ndarray
    z_bg: np.ndarray

    def validate(self, layout: SceneLayout | None = None) -> "SceneLatents":
        """Check z_obj [N, D] / z_bg [D] (and N == layout.num_boxes if given); returns self. Raises ValueError."""
        _require(self.z_obj.ndim == 2 and self.z_bg.shape == self.z_obj.shape[1:],
                 f"SceneLatents: need z_obj [N, D] and z_bg [D], got {self.z_obj.shape} and {self.z_bg.shape}")
        if layout is not None:
            _require(self.z_obj.shape[0] == layout.num_boxes,
                     f"SceneLatents: one object latent per layout box, got {self.z_obj.shape[0]} latents "
                     f"for {layout.num_boxes} boxes")
        return self

    @classmethod
    def from_seed(cls, num_boxes: int, z_dim: int, seed: int = 0) -> "SceneLatents":
        """Standard-normal latents from a seed (same stream as ``model.sample_latents`` on CPU)."""
        import torch

        from bevgen.scene3d.model import sample_latents

        z_obj, z_bg = sample_latents(1, num_boxes, z_dim, torch.Generator().manual_seed(int(seed)))
        return cls(z_obj[0].numpy(), z_bg[0].numpy())


@dataclass(frozen=True, eq=False)
class RenderOutput:
    """One rendered view.

    Attributes:
        rgb: uint8 [H, W, 3]; alpha: float32 [H, W] object opacity upsampled (bilinear) from the render
        resolution; alpha_low: float32 [h, w] at the render resolution; instance_alpha: float32 [N, h, w];
        depth: float32 [h, w] metres along the ray; layout / latents: what was rendered.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    alpha_low: np.ndarray
    instance_alpha: np.ndarray
    depth: np.ndarray
    layout: SceneLayout
    latents: SceneLatents


def render(generator: Any, layout: SceneLayout, latents: SceneLatents | None = None, seed: int = 0,
           camera: tuple[np.ndarray, np.ndarray] | None = None) -> RenderOutput:
    """Render one layout (resized to the generator's square image size when needed).

    Args:
        generator: Scene3DGenerator (eval mode).
        layout: boxes + camera; latents: per-object and background latents (default: from ``seed``).
        camera: optional (K [3, 3] for ``layout.image_size``, T_cam_from_ego [4, 4]) replacing the layout's.
    Returns:
        RenderOutput. Deterministic (samples at bin midpoints). Cost: one generator forward at B = 1.
    """
    import torch
    import torch.nn.functional as F

    size = generator.cfg.image_size
    if camera is not None:
        layout = layout.replace(K=camera[0], T_cam_from_ego=camera[1])
    if tuple(layout.image_size) != (size, size):
        layout = layout.resized((size, size))
    latents = (latents or SceneLatents.from_seed(layout.num_boxes, generator.cfg.z_dim, seed)).validate(layout)
    dev = next(generator.parameters()).device
    with torch.no_grad():
        out = generator(stack_layouts([layout], dev), torch.as_tensor(latents.z_obj, device=dev)[None],
                        torch.as_tensor(latents.z_bg, device=dev)[None])
        alpha = F.interpolate(out.object_alpha[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return RenderOutput(to_uint8(out.rgb)[0], alpha[0, 0].cpu().numpy(), out.object_alpha[0].cpu().numpy(),
                        out.instance_alpha[0].cpu().numpy(), out.depth[0].cpu().numpy(), layout, latents)


def _check_index(layout: SceneLayout, index: int) -> None:
    if not 0 <= index < layout.num_boxes or not layout.valid[index]:
        raise IndexError(f"object {index} is not a valid box of this layout (valid: {np.flatnonzero(layout.valid)})")


def move_object(layout: SceneLayout, index: int, delta_xyz: Sequence[float]) -> SceneLayout:
    """Translate box ``index`` by ``delta_xyz`` (ego frame, m)."""
    _check_index(layout, index)
    center = layout.boxes.center.copy()
    center[index] += np.asarray(delta_xyz, np.float32)
    return layout.replace(boxes=layout.boxes.replace(center=center))


def rotate_object(layout: SceneLayout, index: int, delta_yaw: float) -> SceneLayout:
    """Turn box ``index`` about its vertical axis by ``delta_yaw`` radians (counter-clockwise from above)."""
    _check_index(layout, index)
    yaw = layout.boxes.yaw.copy()
    yaw[index] = wrap_angle(yaw[index] + delta_yaw)
    return layout.replace(boxes=layout.boxes.replace(yaw=yaw))


def delete_object(layout: SceneLayout, index: int) -> SceneLayout:
    """Remove box ``index`` (its row becomes padding; other indices are unchanged)."""
    _check_index(layout, index)
    valid = layout.valid.copy()
    valid[index] = False
    return layout.replace(valid=valid)


def add_object(layout: SceneLayout, latents: SceneLatents, box: Sequence[float], cls: int = 0,
               seed: int = 0) -> tuple[SceneLayout, SceneLatents, int]:
    """Insert a box (x, y, z_centre, l, w, h, yaw) into the first padding row (a new row if there is none),
    with a fresh latent drawn from ``seed``. Returns (layout, latents, index of the new box)."""
    new_box = Boxes3D.from_array(np.asarray(box, np.float32).reshape(1, 7), np.array([cls], np.int64))
    free = np.flatnonzero(~layout.valid)
    z_obj = latents.z_obj.copy()
    if len(free) == 0:
        boxes, index = Boxes3D.concat([layout.boxes, new_box]), layout.num_boxes
        z_obj = np.vstack([z_obj, np.zeros_like(z_obj[:1])])
    else:
        index = int(free[0])
        rows = {f: getattr(layout.boxes, f).copy() for f in ("center", "size", "yaw", "classes", "valid")}
        for f, arr in rows.items():
            arr[index] = getattr(new_box, f)[0]
        boxes = layout.boxes.replace(**rows)
    z_obj[index] = np.random.default_rng(seed).standard_normal(z_obj.shape[1]).astype(np.float32)
    new = layout.replace(boxes=boxes).validate()
    return new, SceneLatents(z_obj, latents.z_bg.copy()), index


def restyle_object(latents: SceneLatents, index: int, seed: int) -> SceneLatents:
    """A new appearance/shape for object ``index`` only (fresh latent from ``seed``)."""
    z_obj = latents.z_obj.copy()
    z_obj[index] = np.random.default_rng(seed).standard_normal(z_obj.shape[1]).astype(np.float32)
    return SceneLatents(z_obj, latents.z_bg.copy())


def _yaw_about(pivot: np.ndarray, angle: float) -> np.ndarray:
    """[4, 4] rotation by ``angle`` about the vertical axis through ``pivot`` (ego frame)."""
    c, s = np.cos(angle), np.sin(angle)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = pivot - T[:3, :3] @ pivot
    return T


def move_camera(layout: SceneLayout, translation: Sequence[float] = (0.0, 0.0, 0.0), yaw: float = 0.0) -> SceneLayout:
    """Move the camera by ``translation`` (ego frame, m) and turn it by ``yaw`` radians about its own
    vertical axis (positive: to the left). The boxes stay where they are."""
    T_ego_from_cam = np.linalg.inv(layout.T_cam_from_ego.astype(np.float64))
    centre = T_ego_from_cam[:3, 3].copy()
    moved = _yaw_about(centre, yaw) @ T_ego_from_cam
    moved[:3, 3] += np.asarray(translation, np.float64)
    return layout.replace(T_cam_from_ego=np.linalg.inv(moved))


def orbit_camera(layout: SceneLayout, angle: float, pivot: Sequence[float] | None = None) -> SceneLayout:
    """Orbit the camera by ``angle`` radians about a vertical axis through ``pivot`` (default: the ground
    point 15 m along the camera's viewing direction), keeping it looking at the same point."""
    T_ego_from_cam = np.linalg.inv(layout.T_cam_from_ego.astype(np.float64))
    if pivot is None:
        fwd = T_ego_from_cam[:3, 2].copy()
        fwd[2] = 0.0
        fwd /= max(np.linalg.norm(fwd), 1e-9)
        pivot = T_ego_from_cam[:3, 3] + 15.0 * fwd
        pivot[2] = 0.0
    moved = _yaw_about(np.asarray(pivot, np.float64), angle) @ T_ego_from_cam
    return layout.replace(T_cam_from_ego=np.linalg.inv(moved))


def orbit_frames(generator: Any, layout: SceneLayout, latents: SceneLatents, frames: int = 24,
                 max_angle: float = np.radians(30)) -> np.ndarray:
    """uint8 [T, H, W, 3]: the camera swinging -max_angle..+max_angle..-max_angle about the default pivot."""
    angles = max_angle * np.sin(np.linspace(0, 2 * np.pi, frames, endpoint=False))
    return np.stack([render(generator, orbit_camera(layout, a), latents).rgb for a in angles])


def move_frames(generator: Any, layout: SceneLayout, latents: SceneLatents, index: int,
                delta_xyz: Sequence[float] = (0.0, -4.0, 0.0), frames: int = 16) -> np.ndarray:
    """uint8 [T, H, W, 3]: object ``index`` sliding by ``delta_xyz`` and back."""
    steps = np.concatenate([np.linspace(0, 1, frames // 2), np.linspace(1, 0, frames - frames // 2)])
    d = np.asarray(delta_xyz, np.float32)
    return np.stack([render(generator, move_object(layout, index, s * d), latents).rgb for s in steps])


def save_gif(frames: np.ndarray, path: str | Path, fps: float = 8.0, scale: int = 1) -> Path:
    """Write uint8 [T, H, W, 3] frames as an animated GIF (optionally upscaled by ``scale``, nearest)."""

    if scale > 1:
        frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
    return save_animation(frames, path, fps)
