"""Frame maths in one place: angle wrapping, 2-D frame transforms, box corners and oriented-box overlap.

Conventions (every source and package): right-handed frames, metres, radians counter-clockwise from +x.
A pose is ``(x, y, yaw)``; a point's coordinates in the frame of a pose are its offset from the pose,
rotated by ``-yaw`` (x forward, y left). A 3-D box is ``(x, y, z, length, width, height, yaw)`` with z
the box *centre*; length lies along the yaw, width along the box's left axis.

Every function uses only elementwise arithmetic, ``cos``/``sin``/``abs`` and ``stack`` of the input's own
array namespace, so it takes numpy arrays and torch tensors alike (any leading batch shape, any device)
and costs O(number of elements).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# torch is imported lazily (only for torch inputs): the numpy side works without the `ml` extra.

__all__ = ["wrap_angle", "rotate", "to_frame", "from_frame", "vectors_to_frame", "box_corners", "box_footprints",
           "boxes_overlap", "CORNER_SIGNS"]

# Corner order of box_corners: bottom face (0-3) then top face (4-7), each counter-clockwise from above
# starting front-left: front-left, rear-left, rear-right, front-right.
CORNER_SIGNS = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
                         [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], np.float64)


def _xp(x: Any):
    """The array namespace of ``x``: torch for tensors (imported only when one is passed), else numpy."""
    if type(x).__module__.startswith("torch"):
        import torch  # torch is optional (the ml extra); only a tensor argument needs it

        return torch
    return np


def _const(like: Any, values: np.ndarray):
    xp = _xp(like)
    if xp is np:
        return values
    return xp.as_tensor(values, dtype=like.dtype, device=like.device)


def wrap_angle(a: Any) -> Any:
    """Radians wrapped to [-pi, pi); floats, numpy arrays or torch tensors, any shape."""
    if isinstance(a, (list, tuple)):
        a = np.asarray(a, np.float64)
    return (a + math.pi) % (2 * math.pi) - math.pi


def rotate(xy: Any, yaw: Any) -> Any:
    """Rotate 2-D vectors counter-clockwise by ``yaw``: xy [..., 2], yaw broadcastable to [...] -> [..., 2]."""
    xp = _xp(xy)
    c, s = xp.cos(yaw), xp.sin(yaw)
    return xp.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], -1)


def vectors_to_frame(v: Any, yaw: Any) -> Any:
    """Vectors (velocities, offsets) [..., 2] expressed in a frame rotated by ``yaw``: rotation by -yaw."""
    xp = _xp(v)
    c, s = xp.cos(yaw), xp.sin(yaw)
    return xp.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def to_frame(xy: Any, pose: Any) -> Any:
    """World points [..., 2] -> the frame of one ``pose`` [3] (x, y, yaw): offset, then rotation by -yaw."""
    return vectors_to_frame(xy - pose[:2], pose[2])


def from_frame(xy: Any, pose: Any) -> Any:
    """Points [..., 2] in the frame of one ``pose`` [3] (x, y, yaw) -> world points [..., 2]."""
    return rotate(xy, pose[2]) + pose[:2]


def box_corners(boxes: Any) -> Any:
    """Corners of yawed 3-D boxes: [..., 7] (x, y, z centre, length, width, height, yaw) -> [..., 8, 3].

    Order: ``CORNER_SIGNS`` (bottom face then top face, each counter-clockwise from front-left).
    """
    xp = _xp(boxes)
    local = 0.5 * boxes[..., None, 3:6] * _const(boxes, CORNER_SIGNS)        # [..., 8, 3]
    yaw = boxes[..., 6:7]                                                     # [..., 1]
    planar = rotate(local[..., :2], yaw) + boxes[..., None, :2]
    return xp.stack([planar[..., 0], planar[..., 1], local[..., 2] + boxes[..., None, 2]], -1)


def box_footprints(xy: Any, size: Any, yaw: Any) -> Any:
    """Footprint corners of oriented 2-D boxes, counter-clockwise from front-left.

    Args:
        xy: [..., 2] centres; size: [..., 2] (length, width); yaw: [...].
    Returns:
        [..., 4, 2] corners.
    """
    local = 0.5 * size[..., None, :] * _const(size, CORNER_SIGNS[:4, :2])   # [..., 4, 2]
    return rotate(local, yaw[..., None]) + xy[..., None, :]


def boxes_overlap(xy_i: Any, h_i: Any, size_i: Any, xy_j: Any, h_j: Any, size_j: Any,
                  cos_sin_j: Any = None) -> Any:
    """Whether oriented boxes i and j overlap (separating-axis test; touching counts as overlap).

    Args:
        xy_*: [..., 2] centres; h_*: [...] headings; size_*: [..., 2] (length, width); all broadcastable.
        cos_sin_j: optional [..., 2] precomputed (cos, sin) of ``h_j`` (a simulator keeps them per agent).
    Returns:
        bool [...].
    """
    xp = _xp(xy_i)
    ci, si = xp.cos(h_i), xp.sin(h_i)
    cj, sj = (xp.cos(h_j), xp.sin(h_j)) if cos_sin_j is None else (cos_sin_j[..., 0], cos_sin_j[..., 1])
    hli, hwi, hlj, hwj = size_i[..., 0] / 2, size_i[..., 1] / 2, size_j[..., 0] / 2, size_j[..., 1] / 2
    dx, dy = xy_j[..., 0] - xy_i[..., 0], xy_j[..., 1] - xy_i[..., 1]
    cr = xp.abs(ci * cj + si * sj)                                   # |cos(h_j - h_i)|
    sr = xp.abs(ci * sj - si * cj)                                   # |sin(h_j - h_i)|
    sep = xp.abs(dx * ci + dy * si) > hli + hlj * cr + hwj * sr      # axis u_i
    sep |= xp.abs(-dx * si + dy * ci) > hwi + hlj * sr + hwj * cr    # axis v_i
    sep |= xp.abs(dx * cj + dy * sj) > hlj + hli * cr + hwi * sr     # axis u_j
    sep |= xp.abs(-dx * sj + dy * cj) > hwj + hli * sr + hwi * cr    # axis v_j
    return ~sep
