"""``Boxes3D``: THE 3-D box contract shared by layouts, cameras, the renderer and scene3d.

Frame and units: the frame of whoever holds the boxes (the ego frame for ``BevLayout`` and ``SceneLayout``);
metres and radians counter-clockwise from +x, as in :mod:`sim_bridge.geometry`. ``center`` z is the box
CENTRE (``bottom_z()`` gives the bottom face); length lies along the yaw, width along the box's left axis.

Fields are numpy arrays or torch tensors (all of one kind) with any leading batch shape ``...`` before the
box axis ``n``. The packed ``[..., 7]`` form ``(x, y, z_centre, length, width, height, yaw)`` of
:meth:`Boxes3D.as_array` is for tensor kernels inside one package and for file I/O; packages hand each other
``Boxes3D``. Maths (corners, footprints) lives in :mod:`sim_bridge.geometry`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sim_bridge import geometry

# torch is imported lazily (tensor Boxes3D only): the numpy side works without the `ml` extra.

__all__ = ["Boxes3D"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass(frozen=True, eq=False)
class Boxes3D:
    """Yawed 3-D boxes with a class and a validity mask each (padding rows have ``valid`` False).

    Attributes:
        center: float [..., n, 3] box centres (x, y, z), m; z is the box centre, not its bottom.
        size: float [..., n, 3] (length, width, height), m.
        yaw: float [..., n] heading, rad counter-clockwise from +x.
        classes: int [..., n] class index (``bevgen.layout.CLASS_NAMES`` for layouts).
        valid: bool [..., n]; False rows are padding and their other values mean nothing.
    """

    center: Any
    size: Any
    yaw: Any
    classes: Any
    valid: Any

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Boxes3D":
        """Check that the fields agree in shape, kind (numpy / torch) and dtype; raises ValueError."""
        c, s, y, k, v = self.center, self.size, self.yaw, self.classes, self.valid
        kinds = {_is_torch(a) for a in (c, s, y, k, v)}
        if len(kinds) != 1 or not all(hasattr(a, "shape") for a in (c, s, y, k, v)):
            raise ValueError("Boxes3D fields must all be numpy arrays or all torch tensors")
        if len(c.shape) < 2 or c.shape[-1] != 3:
            raise ValueError(f"Boxes3D.center must be [..., n, 3], got {tuple(c.shape)}")
        for name, a, want in (("size", s, c.shape), ("yaw", y, c.shape[:-1]), ("classes", k, c.shape[:-1]),
                              ("valid", v, c.shape[:-1])):
            if tuple(a.shape) != tuple(want):
                raise ValueError(f"Boxes3D.{name} must be {list(want)} to match center {list(c.shape)}, "
                                 f"got {list(a.shape)}")
        if str(v.dtype) not in ("bool", "torch.bool"):
            raise ValueError(f"Boxes3D.valid must be bool, got {v.dtype}")
        if _is_torch(k) and (k.dtype.is_floating_point or k.dtype.is_complex or str(k.dtype) == "torch.bool"):
            raise ValueError(f"Boxes3D.classes must be an integer dtype, got {k.dtype}")
        if not _is_torch(k) and not np.issubdtype(k.dtype, np.integer):
            raise ValueError(f"Boxes3D.classes must be an integer dtype, got {k.dtype}")
        return self

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_array(cls, arr7: Any, classes: Any = None, valid: Any = None) -> "Boxes3D":
        """From the packed form [..., n, 7] (x, y, z_centre, length, width, height, yaw).

        ``classes`` (int [..., n]) defaults to 0 and ``valid`` (bool [..., n]) to all True. The fields are views
        of ``arr7`` where the array library allows it (no copy).
        """
        if not _is_torch(arr7):
            arr7 = np.asarray(arr7)
        if len(arr7.shape) < 2 or arr7.shape[-1] != 7:
            raise ValueError(f"Boxes3D.from_array expects [..., n, 7] (x, y, z_centre, l, w, h, yaw), "
                             f"got {list(arr7.shape)}")
        lead = tuple(arr7.shape[:-1])
        if _is_torch(arr7):
            import torch

            classes = torch.zeros(lead, dtype=torch.int64, device=arr7.device) if classes is None else classes
            valid = torch.ones(lead, dtype=torch.bool, device=arr7.device) if valid is None else valid
        else:
            classes = np.zeros(lead, np.int64) if classes is None else np.asarray(classes)
            valid = np.ones(lead, bool) if valid is None else np.asarray(valid)
        return cls(arr7[..., 0:3], arr7[..., 3:6], arr7[..., 6], classes, valid)

    @classmethod
    def empty(cls, n: int, dtype: Any = np.float32) -> "Boxes3D":
        """``n`` padding boxes (numpy): zeros, class 0, ``valid`` False."""
        z = np.zeros((n, 3), dtype)
        return cls(z, z.copy(), np.zeros(n, dtype), np.zeros(n, np.int64), np.zeros(n, bool))

    @classmethod
    def concat(cls, items: Sequence["Boxes3D"]) -> "Boxes3D":
        """Join boxes along the box axis n (equal batch shapes)."""
        return cls._join(items, stack=False)

    @classmethod
    def stack(cls, items: Sequence["Boxes3D"]) -> "Boxes3D":
        """Stack equally shaped boxes along a new leading batch axis: [..., n] each -> [B, ..., n]."""
        return cls._join(items, stack=True)

    @classmethod
    def _join(cls, items: Sequence["Boxes3D"], stack: bool) -> "Boxes3D":
        if not items:
            raise ValueError("Boxes3D.concat/stack needs at least one Boxes3D")
        out = {}
        for f in dataclasses.fields(cls):
            parts = [getattr(b, f.name) for b in items]
            axis = 0 if stack else (-2 if f.name in ("center", "size") else -1)
            if _is_torch(parts[0]):
                import torch

                out[f.name] = torch.stack(parts, axis) if stack else torch.cat(parts, axis)
            else:
                out[f.name] = np.stack(parts, axis) if stack else np.concatenate(parts, axis)
        return cls(**out)

    # -- packed form and conversions ----------------------------------------------------------------------
    def as_array(self) -> Any:
        """Packed [..., n, 7] (x, y, z_centre, length, width, height, yaw) in the fields' dtype and kind."""
        parts = [self.center, self.size, self.yaw[..., None]]
        if _is_torch(self.center):
            import torch

            return torch.cat(parts, -1)
        return np.concatenate(parts, -1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(boxes)`` / ``np.savez(boxes=...)`` give the packed form, so files keep their format."""
        arr = self.numpy().as_array()
        return arr if dtype is None else arr.astype(dtype)

    def to(self, device: Any = None, dtype: Any = None) -> "Boxes3D":
        """Float fields cast to ``dtype``; with a ``device`` every field becomes a torch tensor on it."""
        if device is None and not _is_torch(self.center):
            return self if dtype is None else self.replace(
                center=self.center.astype(dtype), size=self.size.astype(dtype), yaw=self.yaw.astype(dtype))
        import torch

        def move(a: Any, floating: bool) -> Any:
            return torch.as_tensor(a, device=device, dtype=dtype if floating else None)

        return Boxes3D(move(self.center, True), move(self.size, True), move(self.yaw, True),
                       move(self.classes, False), move(self.valid, False))

    def numpy(self) -> "Boxes3D":
        """The same boxes as numpy arrays (torch tensors are detached and copied to the CPU)."""
        if not _is_torch(self.center):
            return self
        return Boxes3D(*(getattr(self, f.name).detach().cpu().numpy() for f in dataclasses.fields(self)))

    def replace(self, **fields: Any) -> "Boxes3D":
        """A copy with some fields replaced (validated)."""
        return dataclasses.replace(self, **fields)

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading shape ``...`` before the box axis."""
        return tuple(self.yaw.shape[:-1])

    def __len__(self) -> int:
        """Number of boxes n (the last axis), padding included."""
        return int(self.yaw.shape[-1])

    def __getitem__(self, index: Any) -> "Boxes3D":
        """Index the [..., n] axes of every field at once (a mask, slice or index array; an int picks a batch
        element and must leave the box axis)."""
        return Boxes3D(self.center[index], self.size[index], self.yaw[index], self.classes[index], self.valid[index])

    def select(self, mask: Any) -> "Boxes3D":
        """The boxes where ``mask`` (bool [n] or index array) holds, e.g. ``boxes.select(boxes.valid)``."""
        return self[mask]

    def bottom_z(self) -> Any:
        """[..., n] height of each box's bottom face, m (centre z minus half the height)."""
        return self.center[..., 2] - self.size[..., 2] / 2

    def corners(self) -> Any:
        """[..., n, 8, 3] corners in ``geometry.CORNER_SIGNS`` order (bottom face, then top face)."""
        return geometry.box_corners(self.as_array())

    def footprints(self) -> Any:
        """[..., n, 4, 2] ground-plane corners, counter-clockwise from front-left."""
        return geometry.box_footprints(self.center[..., :2], self.size[..., :2], self.yaw)
