"""Multi-camera rig geometry: intrinsics/extrinsics, per-pixel rays, point and 3D-box projection.

Conventions
-----------
* Ego frame: x forward, y left, z up, metres; origin at the ego centre on the ground.
  Yaw is counter-clockwise about +z, measured from +x.
* Camera frame: OpenCV (x right, y down, z forward along the optical axis). No lens distortion.
* ``T_cam_from_ego[v]`` is a 4x4 rigid transform mapping homogeneous ego-frame points into camera
  ``v``'s frame: ``p_cam = T_cam_from_ego[v] @ [p_ego, 1]``. ``K[v]`` is the 3x3 pinhole intrinsic
  matrix in pixels for the rig's ``image_size`` = (H, W), shared by all views.
* Pixel coordinates (u, v) are continuous; the image covers ``[0, W] x [0, H]`` and the centre of
  pixel (row i, col j) is ``(j + 0.5, i + 0.5)``. With this convention resizing by (sx, sy) scales
  pixel coordinates, and the first two rows of K, exactly (as ``cv2.resize`` and
  ``torch.nn.functional.interpolate(align_corners=False)`` resample).
* Shape / einsum letters: v view, n box (or point), c corner, e edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sim_bridge import geometry
from sim_bridge.boxes import Boxes3D

# cv2 is imported lazily (draw_boxes only): a slow import that projection maths does not need.

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT")
NUSCENES_IMAGE_SIZE: tuple[int, int] = (900, 1600)
DEFAULT_NEAR = 1e-2  # metres; near plane used for "in front of the camera" and edge clipping

# nuScenes v1.0 calibrated_sensor values (camera->ego translation [m], rotation quaternion w,x,y,z,
# and (f, cx, cy) of camera_intrinsic for 1600x900) of the Singapore one-north "n015" logs that
# v1.0-mini shares (e.g. n015-2018-10-08-15-36-50+0800). The nuscenes-devkit repository ships no
# calibration tables (checked github:nutonomy/nuscenes-devkit @ d9de17a), so these were taken from
# several independent public code copies that quote the table digit-for-digit; they have not been
# checked against the v1.0 JSON itself. Calibration differs between logs: use
# rig_from_nuscenes_calibration with each sample's own records for real data.
_NUSCENES_CALIBRATION: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "CAM_FRONT_LEFT": ((1.52387798135, 0.494631336551, 1.50932822144),
                       (0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068),
                       (1272.5979470598488, 826.6154927353808, 479.75165386361925)),
    "CAM_FRONT": ((1.70079118954, 0.0159456324149, 1.51095763913),
                  (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755),
                  (1266.417203046554, 816.2670197447984, 491.50706579294757)),
    "CAM_FRONT_RIGHT": ((1.5508477543, -0.493404796419, 1.49574800619),
                        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485),
                        (1260.8474446004698, 807.968244525554, 495.3344268742088)),
    "CAM_BACK_RIGHT": ((1.0148780988, -0.480568219723, 1.56239545128),
                       (0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798),
                       (1259.5137405846733, 807.2529053838625, 501.19579884916527)),
    "CAM_BACK": ((0.0283260309358, 0.00345136761476, 1.57910346144),
                 (0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578),
                 (809.2209905677063, 829.2196003259838, 481.77842384512485)),
    "CAM_BACK_LEFT": ((1.03569100218, 0.484795032713, 1.59097014818),
                      (0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753),
                      (1256.7414812095406, 792.1125740759628, 492.7757465151356)),
}

# Corner order of Boxes3D.corners (sim_bridge.geometry.box_corners): bottom face (0-3) then top face (4-7), each
# counter-clockwise seen from above starting at front-left: front-left, rear-left, rear-right, front-right.
CORNER_SIGNS = geometry.CORNER_SIGNS
"""[8, 3] float64 signs of each box corner along (length, width, height), in ``Boxes3D.corners`` order."""
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]], dtype=np.int64)  # [12, 2] corner indices
BOX_EDGES.setflags(write=False)


def quaternion_to_matrix(q_wxyz: np.ndarray) -> np.ndarray:
    """[..., 4] quaternions (w, x, y, z; nuScenes/pyquaternion order, normalised here) -> [..., 3, 3] R."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]
    return np.stack(rows, axis=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [4] unit quaternion (w, x, y, z), w >= 0 (Bar-Itzhack; robust to noise)."""
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = np.asarray(R, dtype=np.float64)
    sym = np.array([[xx - yy - zz, yx + xy, zx + xz, zy - yz],
                    [yx + xy, yy - xx - zz, zy + yz, xz - zx],
                    [zx + xz, zy + yz, zz - xx - yy, yx - xy],
                    [zy - yz, xz - zx, yx - xy, xx + yy + zz]]) / 3.0
    x, y, z, w = np.linalg.eigh(sym)[1][:, -1]
    return np.array([w, x, y, z]) * (1.0 if w >= 0 else -1.0)


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms, batched: [..., 4, 4] -> [..., 4, 4]."""
    T = np.asarray(T, dtype=np.float64)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def scale_intrinsics(K, src_hw: Sequence[int], dst_hw: Sequence[int]):
    """THE rescale of intrinsics: K [..., 3, 3] (numpy or torch) for images of ``src_hw`` = (H, W) -> K for the
    same images resized to ``dst_hw`` = (h, w): rows 0 and 1 scaled by w / W and h / H, axes independent.
    ``CameraRig.resized``, ``SceneLayout.resized`` and the views batches (``resize_views``, ``fit_batch``) use it."""
    (H, W), (h, w) = src_hw, dst_hw
    if (int(H), int(W)) == (int(h), int(w)):
        return K
    factors = [w / W, h / H, 1.0]
    scale = np.asarray(factors, K.dtype) if isinstance(K, np.ndarray) else K.new_tensor(factors)
    return K * scale[:, None]


@dataclass(frozen=True, eq=False)
class CameraRig:
    """V pinhole cameras rigidly mounted on the ego vehicle (arrays are stored read-only).

    Attributes:
        names: V camera names.
        K: [V, 3, 3] float64 intrinsics in pixels for ``image_size``.
        T_cam_from_ego: [V, 4, 4] float64 rigid transforms ego -> camera (OpenCV camera frame).
        image_size: (H, W) in pixels, shared by all views.
    """

    names: tuple[str, ...]
    K: np.ndarray
    T_cam_from_ego: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        for field in ("K", "T_cam_from_ego"):
            arr = np.array(getattr(self, field), dtype=np.float64)  # private copy
            arr.setflags(write=False)
            object.__setattr__(self, field, arr)

    @property
    def num_views(self) -> int:
        return len(self.names)

    def validate(self, atol: float = 1e-6) -> CameraRig:
        """Check shapes and geometry; raise ValueError naming the camera and field. Returns self."""
        V = self.num_views
        if V == 0 or len(set(self.names)) != V:
            raise ValueError(f"names: need >= 1 unique camera names, got {self.names}")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size: expected positive (H, W), got {self.image_size}")
        for field, shape in (("K", (V, 3, 3)), ("T_cam_from_ego", (V, 4, 4))):
            if getattr(self, field).shape != shape:
                raise ValueError(f"{field}: expected shape {shape} for {V} cameras, "
                                 f"got {getattr(self, field).shape}")
        for name, K, T in zip(self.names, self.K, self.T_cam_from_ego):
            R = T[:3, :3]
            checks = (
                ("K", np.isfinite(K).all(), "non-finite values"),
                ("K", np.allclose(K[[1, 2, 2], [0, 0, 1]], 0, atol=atol) and abs(K[2, 2] - 1) <= atol,
                 "not upper-triangular with K[2,2] == 1"),
                ("K", K[0, 0] > 0 and K[1, 1] > 0, "focal lengths must be positive"),
                ("T_cam_from_ego", np.isfinite(T).all(), "non-finite values"),
                ("T_cam_from_ego", np.allclose(T[3], [0, 0, 0, 1], atol=atol), "last row != [0,0,0,1]"),
                ("T_cam_from_ego", np.allclose(R @ R.T, np.eye(3), atol=atol), "rotation not orthonormal"),
                ("T_cam_from_ego", np.linalg.det(R) > 0, "rotation has det -1 (reflection)"),
            )
            for field, ok, msg in checks:
                if not ok:
                    raise ValueError(f"camera {name!r}: {field}: {msg}")
        return self

    @property
    def T_ego_from_cam(self) -> np.ndarray:
        """[V, 4, 4] camera -> ego transforms."""
        return invert_rigid(self.T_cam_from_ego)

    @property
    def camera_centers(self) -> np.ndarray:
        """[V, 3] optical centres in the ego frame."""
        return self.T_ego_from_cam[:, :3, 3]

    @property
    def optical_axes(self) -> np.ndarray:
        """[V, 3] unit optical-axis (camera +z) directions in the ego frame."""
        return self.T_cam_from_ego[:, 2, :3].copy()

    def resized(self, new_hw: Sequence[int]) -> CameraRig:
        """Rig for images resized from ``image_size`` to ``new_hw`` = (H', W'), axes scaled independently."""
        hw = (int(new_hw[0]), int(new_hw[1]))
        return CameraRig(self.names, scale_intrinsics(self.K, self.image_size, hw), self.T_cam_from_ego, hw)

    def cropped(self, top: int, left: int, new_hw: Sequence[int]) -> CameraRig:
        """Rig for the crop ``image[top:top+H', left:left+W']`` (negative offsets mean padding)."""
        shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
        return CameraRig(self.names, shift @ self.K, self.T_cam_from_ego, tuple(new_hw))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of plain lists / ints / strings."""
        return {"names": list(self.names), "K": self.K.tolist(),
                "T_cam_from_ego": self.T_cam_from_ego.tolist(), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CameraRig:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["names"]), np.asarray(d["K"]), np.asarray(d["T_cam_from_ego"]),
                   tuple(d["image_size"]))

    def rays(self, stride: int = 1, dtype: Any = np.float32) -> np.ndarray:
        """Unit viewing directions in the ego frame through pixel (or stride-cell) centres.

        Cell (i, j) of a stride-s grid is centred at ``((j + 0.5) s, (i + 0.5) s)`` in pixels, so for
        H, W divisible by s this equals ``self.resized((H // s, W // s)).rays()``.

        Args:
            stride: grid stride in pixels; output has H' = H // stride, W' = W // stride.
            dtype: output dtype (float32 default: ~6x900x1600x3x4 bytes = 100 MB at stride 1).
        Returns:
            [V, H', W', 3] unit directions; origins are ``camera_centers``.
        """
        s = int(stride)
        if s < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        (H, W), V = self.image_size, self.num_views
        h, w = H // s, W // s
        pix = np.ones((h, w, 3), dtype=dtype)
        pix[..., 0] = ((np.arange(w) + 0.5) * s)[None, :]
        pix[..., 1] = ((np.arange(h) + 0.5) * s)[:, None]
        # pixel -> ego direction, M = R_ego_from_cam K^-1; einsum 'vij,hwj->vhwi' done as one batched
        # matmul, then normalised in place (memory-bound: ~0.1-0.3 s at stride 1, ms at stride >= 8).
        M = np.einsum("vij,vjk->vik", self.T_ego_from_cam[:, :3, :3], np.linalg.inv(self.K))
        dirs = np.empty((V, h * w, 3), dtype=dtype)
        np.matmul(pix.reshape(1, h * w, 3), np.swapaxes(M, 1, 2).astype(dtype), out=dirs)
        norm = np.sqrt(np.einsum("vpi,vpi->vp", dirs, dirs))
        np.divide(dirs, norm[..., None], out=dirs)
        return dirs.reshape(V, h, w, 3)


def rig_from_nuscenes_calibration(records: Sequence[Mapping[str, Any]],
                                  image_size: Sequence[int] = NUSCENES_IMAGE_SIZE,
                                  names: Sequence[str] | None = None,
                                  calib_size: Sequence[int] = NUSCENES_IMAGE_SIZE) -> CameraRig:
    """Build a (per-sample) rig from nuScenes ``calibrated_sensor`` records.

    Args:
        records: V dicts with ``translation`` [3] (camera -> ego, metres), ``rotation`` [4] (w, x, y, z;
            rotates camera-frame vectors into the ego frame) and ``camera_intrinsic`` [3][3].
        image_size: (H, W) of the images the rig is for; K is scaled from ``calib_size``.
        names: camera names; default each record's ``channel`` key, else ``cam{i}``.
        calib_size: (H, W) that ``camera_intrinsic`` refers to (nuScenes: 900x1600).
    Returns:
        Validated CameraRig with V views in record order.
    """
    if len(records) == 0:
        raise ValueError("records: need at least one calibrated_sensor record")
    T_ego_from_cam = np.tile(np.eye(4), (len(records), 1, 1))
    T_ego_from_cam[:, :3, :3] = quaternion_to_matrix(np.array([r["rotation"] for r in records]))
    T_ego_from_cam[:, :3, 3] = np.array([r["translation"] for r in records], dtype=np.float64)
    K = np.array([r["camera_intrinsic"] for r in records], dtype=np.float64)
    if names is None:
        names = [r.get("channel", f"cam{i}") for i, r in enumerate(records)]
    rig = CameraRig(tuple(names), K, invert_rigid(T_ego_from_cam), tuple(calib_size)).validate()
    return rig if rig.image_size == tuple(image_size) else rig.resized(image_size)


def nuscenes_calibration_from_rig(rig: CameraRig) -> list[dict[str, Any]]:
    """Inverse of :func:`rig_from_nuscenes_calibration` (with ``calib_size=rig.image_size``): V
    calibrated_sensor-style dicts (translation, rotation w,x,y,z, camera_intrinsic) plus ``channel``."""
    T = rig.T_ego_from_cam
    return [{"channel": name, "translation": T[v, :3, 3].tolist(),
             "rotation": matrix_to_quaternion(T[v, :3, :3]).tolist(), "camera_intrinsic": rig.K[v].tolist()}
            for v, name in enumerate(rig.names)]


def nuscenes_rig(image_size: Sequence[int] = NUSCENES_IMAGE_SIZE) -> CameraRig:
    """Default nuScenes 6-camera rig (order ``NUSCENES_CAMERAS``), resized from 900x1600 to ``image_size``."""
    records = [{"translation": t, "rotation": q, "camera_intrinsic": [[f, 0, cx], [0, f, cy], [0, 0, 1]]}
               for t, q, (f, cx, cy) in (_NUSCENES_CALIBRATION[n] for n in NUSCENES_CAMERAS)]
    return rig_from_nuscenes_calibration(records, image_size, names=NUSCENES_CAMERAS)


def _corners64(boxes: Boxes3D) -> np.ndarray:
    """float64 [N, 8, 3] corners of one frame's boxes (any dtype), in ``CORNER_SIGNS`` order."""
    if not isinstance(boxes, Boxes3D) or boxes.batch_shape != ():
        raise ValueError(f"boxes: expected one frame's Boxes3D [N], got {type(boxes).__name__}"
                         + (f" with batch shape {boxes.batch_shape}" if isinstance(boxes, Boxes3D) else ""))
    return boxes.numpy().to(dtype=np.float64).corners()


def _ego_to_cam(rig: CameraRig, pts: np.ndarray) -> np.ndarray:
    """[..., 3] ego points -> [V, ..., 3] camera-frame points."""
    T = rig.T_cam_from_ego
    t = T[:, :3, 3].reshape((rig.num_views,) + (1,) * (pts.ndim - 1) + (3,))
    return np.einsum("vij,...j->v...i", T[:, :3, :3], pts) + t


def _cam_to_pixels(K: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """[V, ..., 3] camera points (z > 0) -> [V, ..., 2] pixels."""
    uvw = np.einsum("vij,v...j->v...i", K, cam)
    return uvw[..., :2] / uvw[..., 2:3]


def project_points(rig: CameraRig, pts_ego: np.ndarray, near: float = DEFAULT_NEAR
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project ego-frame points into every view.

    Args:
        rig: camera rig.
        pts_ego: [N, 3] points in the ego frame.
        near: points with depth <= near count as behind the camera.
    Returns:
        uv [V, N, 2] pixels (NaN where depth <= near), depth [V, N] camera-z in metres (negative behind),
        in_image [V, N] bool: in front and inside ``[0, W) x [0, H)``.
    """
    cam = _ego_to_cam(rig, np.asarray(pts_ego, dtype=np.float64).reshape(-1, 3))
    depth = cam[..., 2]
    front = depth > near
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.where(front[..., None], _cam_to_pixels(rig.K, cam), np.nan)
    H, W = rig.image_size
    in_image = front & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    return uv, depth, in_image


@dataclass(frozen=True, eq=False)
class ProjectedBoxes:
    """3D boxes projected into V views (see :func:`project_boxes`)."""

    corners_uv: np.ndarray  # [V, N, 8, 2] pixels, NaN for corners with depth <= near
    corner_depth: np.ndarray  # [V, N, 8] camera-z in metres
    visible: np.ndarray  # [V, N] bool: partly in front of the near plane and overlapping the image
    boxes_2d: np.ndarray  # [V, N, 4] (x0, y0, x1, y1) clipped to the image; NaN where not visible
    edges_uv: np.ndarray  # [V, N, 12, 2, 2] near-plane-clipped edge endpoints (BOX_EDGES order), NaN if culled
    edge_valid: np.ndarray  # [V, N, 12] bool: edge has a part in front of the near plane
    image_size: tuple[int, int]  # (H, W)


def project_boxes(rig: CameraRig, boxes: Boxes3D, near: float = DEFAULT_NEAR) -> ProjectedBoxes:
    """Project 3D boxes, clipping their 12 edges against the near plane z = near (all vectorised).

    ``boxes_2d`` is the bounding rectangle of the projection of the part of the box in front of the
    near plane (the projected endpoints of the clipped edges), intersected with ``[0, W] x [0, H]``.
    When that projection pokes out of the image diagonally the rectangle can be slightly looser
    than the bounding rectangle of the projection's intersection with the image.

    Args:
        rig: camera rig.
        boxes: one frame's ``Boxes3D`` [N] in the ego frame (all N are projected; ``valid`` is not applied).
        near: near-plane depth in metres.
    Returns:
        ProjectedBoxes with the shapes listed on the class.
    """
    cam = _ego_to_cam(rig, _corners64(boxes))  # [V, N, 8, 3]
    V, N = cam.shape[:2]
    depth = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        corners_uv = np.where((depth > near)[..., None], _cam_to_pixels(rig.K, cam), np.nan)
    p0, p1 = cam[..., BOX_EDGES[:, 0], :], cam[..., BOX_EDGES[:, 1], :]  # [V, N, 12, 3]
    behind0, behind1 = p0[..., 2] < near, p1[..., 2] < near
    edge_valid = ~(behind0 & behind1)
    dz = p1[..., 2] - p0[..., 2]
    t = (near - p0[..., 2]) / np.where(dz == 0, 1.0, dz)
    hit = p0 + t[..., None] * (p1 - p0)  # intersection with z = near (used only where one end is behind)
    ends = np.stack([np.where((behind0 & edge_valid)[..., None], hit, p0),
                     np.where((behind1 & edge_valid)[..., None], hit, p1)], axis=-2)  # [V, N, 12, 2, 3]
    ends[~edge_valid] = (0.0, 0.0, 1.0)  # placeholder, masked below
    edges_uv = _cam_to_pixels(rig.K, ends)
    edges_uv[~edge_valid] = np.nan
    ok = np.repeat(edge_valid, 2, axis=-1)[..., None]  # [V, N, 24, 1]
    pts = edges_uv.reshape(V, N, 24, 2)
    lo = np.where(ok, pts, np.inf).min(axis=2)
    hi = np.where(ok, pts, -np.inf).max(axis=2)
    H, W = rig.image_size
    x0, x1 = np.clip(lo[..., 0], 0, W), np.clip(hi[..., 0], 0, W)
    y0, y1 = np.clip(lo[..., 1], 0, H), np.clip(hi[..., 1], 0, H)
    visible = edge_valid.any(axis=-1) & (x1 > x0) & (y1 > y0)
    boxes_2d = np.where(visible[..., None], np.stack([x0, y0, x1, y1], axis=-1), np.nan)
    return ProjectedBoxes(corners_uv, depth, visible, boxes_2d, edges_uv, edge_valid, rig.image_size)


def clip_segments_to_image(segments: np.ndarray, image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Liang-Barsky clipping of 2D segments to ``[0, W] x [0, H]``, vectorised.

    Args:
        segments: [..., 2, 2] endpoints (u, v); NaN segments are rejected.
        image_size: (H, W).
    Returns:
        clipped [..., 2, 2] and keep [...] bool (False: segment misses the image or is NaN).
    """
    H, W = image_size
    p, d = segments[..., 0, :], segments[..., 1, :] - segments[..., 0, :]
    t0, t1 = np.zeros(p.shape[:-1]), np.ones(p.shape[:-1])
    keep = np.isfinite(segments).all(axis=(-1, -2))
    with np.errstate(divide="ignore", invalid="ignore"):
        for den, num in ((-d[..., 0], p[..., 0]), (d[..., 0], W - p[..., 0]),
                         (-d[..., 1], p[..., 1]), (d[..., 1], H - p[..., 1])):  # den * t <= num
            r = num / den
            t0 = np.where(den < 0, np.maximum(t0, r), t0)
            t1 = np.where(den > 0, np.minimum(t1, r), t1)
            keep &= ~((den == 0) & (num < 0))
    keep &= t0 <= t1
    clipped = np.stack([p + t0[..., None] * d, p + t1[..., None] * d], axis=-2)
    return clipped, keep


_PALETTE = np.array([[255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255],
                     [0, 220, 220], [255, 128, 0], [160, 160, 160]], dtype=np.int64)


def draw_boxes(images: np.ndarray, projected: ProjectedBoxes, colors: Any = None,
               thickness: int = 2) -> np.ndarray:
    """Draw box wireframes (near-plane and image clipped) on a copy of the images, for previews.

    Args:
        images: [V, H, W, 3] uint8, with (H, W) == ``projected.image_size``.
        projected: output of :func:`project_boxes`.
        colors: None (palette by box index), one (c0, c1, c2) colour, or [N, 3] per box, in the
            images' channel order.
        thickness: line thickness in pixels.
    Returns:
        [V, H, W, 3] uint8 new array with the wireframes drawn; the front face (corners 0, 3, 4, 7)
        gets a cross so the heading is visible.
    """
    import cv2

    out = np.array(images, dtype=np.uint8, copy=True)
    V, N = projected.visible.shape
    if out.shape != (V, *projected.image_size, 3):
        raise ValueError(f"images: expected shape {(V, *projected.image_size, 3)}, got {out.shape}")
    if colors is None:
        colors = _PALETTE[np.arange(N) % len(_PALETTE)]
    colors = np.broadcast_to(np.asarray(colors, dtype=np.int64), (N, 3))
    cross = projected.corners_uv[:, :, [[0, 7], [3, 4]]]  # [V, N, 2, 2, 2] front-face diagonals
    segs, keep = clip_segments_to_image(np.concatenate([projected.edges_uv, cross], axis=2),
                                        projected.image_size)
    segs = np.where(keep[..., None, None], segs, 0.5)
    fixed = np.round((segs - 0.5) * 16).astype(np.int32)  # cv2 pixel centres are integers; 4-bit subpixel
    for v in range(V):
        for n in np.flatnonzero(projected.visible[v]):
            lines = list(fixed[v, n][keep[v, n]])
            if lines:
                cv2.polylines(out[v], lines, False, tuple(int(c) for c in colors[n]), thickness,
                              cv2.LINE_AA, shift=4)
    return out

