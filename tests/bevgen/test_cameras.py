"""Tests for bevgen.cameras (numpy geometry of the multi-camera rig)."""

import json

import numpy as np
import pytest

from bevgen.cameras import (
    BOX_EDGES,
    NUSCENES_CAMERAS,
    CameraRig,
    clip_segments_to_image,
    draw_boxes,
    matrix_to_quaternion,
    nuscenes_calibration_from_rig,
    nuscenes_rig,
    project_boxes,
    project_points,
    quaternion_to_matrix,
    rig_from_nuscenes_calibration,
)
from sim_bridge.boxes import Boxes3D


def box_corners(packed: np.ndarray) -> np.ndarray:
    """float64 [N, 8, 3] corners of packed [N, 7] test boxes (x, y, z_centre, l, w, h, yaw)."""
    return Boxes3D.from_array(np.asarray(packed, np.float64)).corners()


FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_RIGHT, BACK, BACK_LEFT = range(6)


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return nuscenes_rig()


def _yaw_deg(vec: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(vec[..., 1], vec[..., 0]))


def _angle_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def test_nuscenes_rig_validates_and_has_the_nuscenes_layout(rig):
    assert rig.validate() is rig
    assert rig.names == NUSCENES_CAMERAS == (
        "CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT")
    assert rig.num_views == 6 and rig.image_size == (900, 1600)
    assert rig.K.shape == (6, 3, 3) and rig.T_cam_from_ego.shape == (6, 4, 4)
    assert rig.K.dtype == np.float64 and rig.T_cam_from_ego.dtype == np.float64
    # optical axes: yaw about 55, 0, -55, -110, 180, 110 degrees and nearly horizontal
    assert _angle_diff_deg(_yaw_deg(rig.optical_axes), [55, 0, -55, -110, 180, 110]).max() < 3.0
    assert np.abs(rig.optical_axes[:, 2]).max() < 0.03
    expected_centres = [(1.52, 0.49, 1.51), (1.70, 0.016, 1.51), (1.55, -0.49, 1.50),
                        (1.01, -0.48, 1.56), (0.03, 0.003, 1.58), (1.04, 0.48, 1.59)]
    np.testing.assert_allclose(rig.camera_centers, expected_centres, atol=0.01)
    focal = rig.K[:, 0, 0]
    np.testing.assert_allclose(np.delete(focal, BACK), 1266, rtol=0.01)
    assert focal[BACK] == pytest.approx(809.22, abs=0.01)
    np.testing.assert_allclose(rig.K[:, :2, 2], np.broadcast_to([800, 450], (6, 2)), atol=60)
    # exact published CAM_FRONT calibration values
    assert rig.K[FRONT, 0, 0] == 1266.417203046554
    np.testing.assert_allclose(rig.T_ego_from_cam[FRONT, :3, 3], [1.70079118954, 0.0159456324149, 1.51095763913],
                               atol=1e-12)
    with pytest.raises(ValueError):
        rig.K[0, 0, 0] = 1.0  # stored read-only (frozen rig)


def test_validate_reports_camera_and_field(rig):
    K = rig.K.copy()
    K[FRONT_RIGHT, 0, 0] = -5.0
    with pytest.raises(ValueError, match="CAM_FRONT_RIGHT.*K.*positive"):
        CameraRig(rig.names, K, rig.T_cam_from_ego, rig.image_size).validate()
    K = rig.K.copy()
    K[FRONT, 1, 0] = 3.0
    with pytest.raises(ValueError, match="CAM_FRONT'.*K.*upper-triangular"):
        CameraRig(rig.names, K, rig.T_cam_from_ego, rig.image_size).validate()
    T = rig.T_cam_from_ego.copy()
    T[BACK, 0, :3] *= -1.0  # orthonormal but a reflection
    with pytest.raises(ValueError, match="CAM_BACK'.*T_cam_from_ego.*det"):
        CameraRig(rig.names, rig.K, T, rig.image_size).validate()
    T = rig.T_cam_from_ego.copy()
    T[BACK_LEFT, :3, :3] *= 1.1
    with pytest.raises(ValueError, match="CAM_BACK_LEFT.*T_cam_from_ego.*orthonormal"):
        CameraRig(rig.names, rig.K, T, rig.image_size).validate()
    with pytest.raises(ValueError, match="K: expected shape"):
        CameraRig(rig.names, rig.K[:5], rig.T_cam_from_ego, rig.image_size).validate()


def test_transform_inverse_and_camera_centres(rig):
    eye = np.einsum("vij,vjk->vik", rig.T_ego_from_cam, rig.T_cam_from_ego)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(4), (6, 4, 4)), atol=1e-12)
    # the camera centre maps to the camera-frame origin
    R, t = rig.T_cam_from_ego[:, :3, :3], rig.T_cam_from_ego[:, :3, 3]
    centre_cam = np.einsum("vij,vj->vi", R, rig.camera_centers) + t
    np.testing.assert_allclose(centre_cam, 0.0, atol=1e-12)


def test_point_straight_ahead_hits_front_principal_point_only(rig):
    p = rig.camera_centers[FRONT] + 10.0 * rig.optical_axes[FRONT]
    uv, depth, inside = project_points(rig, p[None])
    np.testing.assert_allclose(uv[FRONT, 0], rig.K[FRONT, :2, 2], atol=1e-6)
    assert depth[FRONT, 0] == pytest.approx(10.0)
    assert inside[:, 0].tolist() == [False, True, False, False, False, False]
    assert depth[BACK, 0] < 0 and np.isnan(uv[BACK, 0]).all()
    # 10 m ahead along ego +x: the front camera is aligned with the car to well under a degree
    uv, _, inside = project_points(rig, (rig.camera_centers[FRONT] + [10.0, 0.0, 0.0])[None])
    assert np.abs(uv[FRONT, 0] - rig.K[FRONT, :2, 2]).max() < 15.0
    assert inside[:, 0].tolist() == [False, True, False, False, False, False]


def test_point_behind_hits_back_principal_point(rig):
    p = rig.camera_centers[BACK] + 10.0 * rig.optical_axes[BACK]
    uv, depth, inside = project_points(rig, p[None])
    np.testing.assert_allclose(uv[BACK, 0], rig.K[BACK, :2, 2], atol=1e-6)
    assert depth[BACK, 0] == pytest.approx(10.0)
    assert inside[:, 0].tolist() == [False, False, False, False, True, False]
    uv, _, _ = project_points(rig, np.array([[-10.0, 0.0, rig.camera_centers[BACK, 2]]]))
    assert np.abs(uv[BACK, 0] - rig.K[BACK, :2, 2]).max() < 15.0


def test_front_left_ground_point_in_overlap_and_consistent_with_rays(rig):
    p = np.array([20.0, 10.0, 0.0])
    uv, depth, inside = project_points(rig, p[None])
    assert inside[:, 0].tolist() == [True, True, False, False, False, False]
    stride = 4
    rays = rig.rays(stride=stride, dtype=np.float64)  # [V, 225, 400, 3]
    assert rays.shape == (6, 225, 400, 3)
    for v in (FRONT_LEFT, FRONT):
        direction = (p - rig.camera_centers[v]) / np.linalg.norm(p - rig.camera_centers[v])
        j, i = (uv[v, 0] // stride).astype(int)
        cos = float(rays[v, i, j] @ direction)
        cell_angle = stride / rig.K[v, 0, 0]  # angular size of one stride cell
        assert np.arccos(min(cos, 1.0)) < cell_angle
        # exact: a point along the ray of that cell projects onto the cell centre
        q = rig.camera_centers[v] + 13.7 * rays[v, i, j]
        uv_q, depth_q, _ = project_points(rig, q[None])
        np.testing.assert_allclose(uv_q[v, 0], [(j + 0.5) * stride, (i + 0.5) * stride], atol=1e-6)
        assert depth_q[v, 0] > 0


def test_rays_are_unit_consistent_with_projection_and_stride(rig):
    rays = rig.rays(stride=8, dtype=np.float64)  # [6, 112, 200, 3]
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-12)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 112, 50), rng.integers(0, 200, 50)
    pts = rig.camera_centers[:, None] + 5.0 * rays[:, i, j]  # [V, 50, 3]
    for v in range(6):
        uv, _, inside = project_points(rig, pts[v])
        np.testing.assert_allclose(uv[v], np.stack([(j + 0.5) * 8, (i + 0.5) * 8], -1), atol=1e-6)
        assert inside[v].all()
    # stride-s grid == rays of the rig resized by 1/s; float32 default agrees with float64
    np.testing.assert_allclose(rig.rays(stride=4), rig.resized((225, 400)).rays(), atol=1e-6)
    np.testing.assert_allclose(rig.rays(stride=8), rays, atol=1e-6)
    assert rig.rays(stride=8).dtype == np.float32


@pytest.mark.parametrize("new_hw", [(128, 224), (224, 400), (450, 1600)])
def test_resized_rig_scales_projections(rig, new_hw):
    small = nuscenes_rig(new_hw)
    np.testing.assert_allclose(small.K, rig.resized(new_hw).K, atol=1e-12)
    assert small.image_size == new_hw and small.validate() is small
    np.testing.assert_array_equal(small.T_cam_from_ego, rig.T_cam_from_ego)
    rng = np.random.default_rng(1)
    pts = rng.uniform([-30, -30, -1], [30, 30, 3], size=(200, 3))
    uv, depth, _ = project_points(rig, pts)
    uv_s, depth_s, _ = project_points(small, pts)
    scale = np.array([new_hw[1] / 1600, new_hw[0] / 900])
    np.testing.assert_allclose(uv_s, uv * scale, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(depth_s, depth)


def test_cropped_rig_shifts_projections(rig):
    crop = rig.cropped(top=100, left=200, new_hw=(500, 800))
    assert crop.image_size == (500, 800) and crop.validate() is crop
    rng = np.random.default_rng(2)
    pts = rng.uniform([-30, -30, -1], [30, 30, 3], size=(200, 3))
    uv, _, _ = project_points(rig, pts)
    uv_c, _, inside_c = project_points(crop, pts)
    np.testing.assert_allclose(uv_c, uv - [200, 100], atol=1e-9)
    expected = (uv[..., 0] >= 200) & (uv[..., 0] < 1000) & (uv[..., 1] >= 100) & (uv[..., 1] < 600)
    np.testing.assert_array_equal(inside_c, expected)


def test_to_dict_from_dict_json_round_trip(rig):
    d = json.loads(json.dumps(rig.to_dict()))
    assert isinstance(d["K"], list) and isinstance(d["image_size"], list)
    back = CameraRig.from_dict(d)
    assert back.names == rig.names and back.image_size == rig.image_size
    np.testing.assert_array_equal(back.K, rig.K)
    np.testing.assert_array_equal(back.T_cam_from_ego, rig.T_cam_from_ego)


def test_box_corners_axis_aligned_and_yawed():
    box = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, 0.0]])  # centre (1, 2, 0.5), l=4, w=2, h=1
    expected = np.array([[3, 3, 0], [-1, 3, 0], [-1, 1, 0], [3, 1, 0],
                         [3, 3, 1], [-1, 3, 1], [-1, 1, 1], [3, 1, 1]], dtype=float)
    np.testing.assert_allclose(box_corners(box)[0], expected, atol=1e-12)

    yawed = box.copy()
    yawed[0, 6] = np.pi / 2  # heading +y: the front-left corner moves to (1 - 1, 2 + 2)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected_yawed = (expected - [1, 2, 0.5]) @ rot.T + [1, 2, 0.5]
    corners = box_corners(yawed)[0]
    np.testing.assert_allclose(corners, expected_yawed, atol=1e-12)
    np.testing.assert_allclose(corners[0], [0.0, 4.0, 0.0], atol=1e-12)

    generic = np.array([[5.0, -3.0, 1.0, 4.5, 1.9, 1.6, 0.7]])
    c = box_corners(generic)[0]
    lengths = np.linalg.norm(c[BOX_EDGES[:, 0]] - c[BOX_EDGES[:, 1]], axis=-1)
    np.testing.assert_allclose(lengths, [4.5, 1.9, 4.5, 1.9] * 2 + [1.6] * 4, atol=1e-12)
    front_centre = c[[0, 3, 4, 7]].mean(axis=0)
    np.testing.assert_allclose(front_centre, [5 + 2.25 * np.cos(0.7), -3 + 2.25 * np.sin(0.7), 1.0], atol=1e-12)
    with pytest.raises(ValueError):
        box_corners(np.zeros((2, 6)))


def _sampled_box_2d(rig: CameraRig, box: np.ndarray, v: int, near: float, n: int = 41) -> np.ndarray:
    """Brute-force reference: bbox of densely sampled box-volume points in front of the near plane."""
    g = np.linspace(-0.5, 0.5, n)
    local = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    pts = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + box[:3]
    uv, depth, _ = project_points(rig, pts, near=near)
    uv = uv[v][depth[v] > near]
    H, W = rig.image_size
    lo, hi = uv.min(0), uv.max(0)
    return np.array([np.clip(lo[0], 0, W), np.clip(lo[1], 0, H), np.clip(hi[0], 0, W), np.clip(hi[1], 0, H)])


def test_project_boxes_in_front_matches_corner_extent(rig):
    box = np.array([[15.0, 1.0, 0.8, 4.5, 1.9, 1.6, 0.4]])
    proj = project_boxes(rig, Boxes3D.from_array(box))
    assert proj.corners_uv.shape == (6, 1, 8, 2) and proj.corner_depth.shape == (6, 1, 8)
    assert proj.boxes_2d.shape == (6, 1, 4) and proj.visible.shape == (6, 1)
    assert proj.visible[FRONT, 0] and not proj.visible[BACK, 0]
    assert np.isnan(proj.boxes_2d[BACK, 0]).all()
    uv = proj.corners_uv[FRONT, 0]
    np.testing.assert_allclose(proj.boxes_2d[FRONT, 0], [*uv.min(0), *uv.max(0)], atol=1e-9)
    np.testing.assert_allclose(proj.boxes_2d[FRONT, 0], _sampled_box_2d(rig, box[0], FRONT, 1e-2), atol=1e-6)
    corners_uv, _, _ = project_points(rig, box_corners(box)[0])
    np.testing.assert_allclose(proj.corners_uv[:, 0], corners_uv, atol=1e-9, equal_nan=True)


def test_project_boxes_straddling_near_plane_gives_finite_clipped_box(rig):
    # 12 m long truck passing close on the right: its rear part is behind CAM_FRONT's image plane
    box = np.array([[2.0, -3.0, 1.0, 12.0, 2.0, 2.0, 0.0]])
    near = 1e-2
    proj = project_boxes(rig, Boxes3D.from_array(box), near=near)
    depth = proj.corner_depth[FRONT, 0]
    assert (depth > near).sum() == 4 and (depth < 0).sum() == 4
    assert np.isnan(proj.corners_uv[FRONT, 0][depth < near]).all()
    assert proj.visible[FRONT, 0]
    b = proj.boxes_2d[FRONT, 0]
    assert np.isfinite(b).all()
    assert 0 <= b[0] < b[2] <= 1600 and 0 <= b[1] < b[3] <= 900
    # the clipped edges run off the right, top and bottom borders; the near end gives the left side
    uv_front = proj.corners_uv[FRONT, 0][depth > near]
    assert b[0] == pytest.approx(uv_front[:, 0].min())
    np.testing.assert_allclose(b[1:], [0.0, 1600.0, 900.0])
    assert b[1] < uv_front[:, 1].min() - 100 and b[3] > uv_front[:, 1].max() + 100
    # agrees with the brute-force reference (dense samples of the part in front of the near plane)
    np.testing.assert_allclose(b, _sampled_box_2d(rig, box[0], FRONT, near), atol=2.0)
    # naive projection of all corners (dividing by negative depth) mirrors the rear corners to the
    # left half of the image: the clipping is what keeps the 2D box on the right side
    T = rig.T_cam_from_ego[FRONT]
    cam = box_corners(box)[0] @ T[:3, :3].T + T[:3, 3]
    naive_u = (cam @ rig.K[FRONT].T)[:, 0] / cam[:, 2]
    assert naive_u.min() < b[0] - 500
    # a box completely behind CAM_FRONT is culled there and seen by CAM_BACK
    behind = project_boxes(rig, Boxes3D.from_array(np.array([[-10.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0]])))
    assert not behind.visible[FRONT, 0] and behind.visible[BACK, 0]
    assert not behind.edge_valid[FRONT, 0].any() and np.isnan(behind.boxes_2d[FRONT, 0]).all()


def test_project_boxes_takes_boxes3d_only(rig):
    with pytest.raises(ValueError, match="Boxes3D"):
        project_boxes(rig, np.array([[15.0, 1.0, 0.8, 4.5, 1.9, 1.6, 0.4]]))
    batched = Boxes3D.from_array(np.zeros((2, 3, 7)))
    with pytest.raises(ValueError, match="batch shape"):
        project_boxes(rig, batched)


def test_clip_segments_to_image():
    segs = np.array([[[-10.0, 5.0], [30.0, 5.0]],  # crosses the whole image
                     [[-5.0, -5.0], [-1.0, 30.0]],  # fully left of the image
                     [[2.0, 3.0], [4.0, 6.0]],  # inside
                     [[np.nan, 0.0], [1.0, 1.0]]])
    clipped, keep = clip_segments_to_image(segs, (10, 20))
    assert keep.tolist() == [True, False, True, False]
    np.testing.assert_allclose(clipped[0], [[0.0, 5.0], [20.0, 5.0]])
    np.testing.assert_allclose(clipped[2], segs[2])


def test_draw_boxes_draws_only_where_visible():
    rig = nuscenes_rig((225, 400))
    boxes = np.array([[15.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.3],  # ahead
                      [2.0, -2.0, 1.0, 6.0, 1.5, 1.5, 0.0]])  # straddles CAM_FRONT's near plane
    proj = project_boxes(rig, Boxes3D.from_array(boxes))
    images = np.zeros((6, 225, 400, 3), dtype=np.uint8)
    out = draw_boxes(images, proj, colors=[(0, 255, 0), (0, 0, 255)], thickness=1)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert images.max() == 0  # input untouched
    drawn = out.any(axis=-1)
    for v in range(6):
        assert drawn[v].any() == proj.visible[v].any()
    assert (out[..., 0] == 0).all()  # only the given colours' channels are used
    ys, xs = np.nonzero(out[FRONT, ..., 1])
    x0, y0, x1, y1 = proj.boxes_2d[FRONT, 0]
    assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2
    assert out[FRONT, ..., 2].any()  # straddling box drawn too
    with pytest.raises(ValueError):
        draw_boxes(images[:, :100], proj)


def test_quaternion_helpers_round_trip_and_match_pyquaternion():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(20, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", R, R), np.broadcast_to(np.eye(3), (20, 3, 3)), atol=1e-12)
    for qi, Ri in zip(q, R):
        back = matrix_to_quaternion(Ri)
        np.testing.assert_allclose(back, qi * np.sign(qi[0]), atol=1e-9)
    import pyquaternion  # a nuscenes-devkit dependency
    np.testing.assert_allclose(R[0], pyquaternion.Quaternion(q[0]).rotation_matrix, atol=1e-12)


def test_rig_from_nuscenes_calibration_reproduces_rig(rig):
    records = json.loads(json.dumps(nuscenes_calibration_from_rig(rig)))
    assert [r["channel"] for r in records] == list(rig.names)
    back = rig_from_nuscenes_calibration(records, rig.image_size)
    assert back.names == rig.names and back.image_size == rig.image_size
    np.testing.assert_allclose(back.K, rig.K, atol=1e-12)
    np.testing.assert_allclose(back.T_cam_from_ego, rig.T_cam_from_ego, atol=1e-12)
    for r in records:
        assert np.linalg.norm(r["rotation"]) == pytest.approx(1.0) and r["rotation"][0] >= 0
    # intrinsics given for 900x1600 are scaled to the requested image size
    small = rig_from_nuscenes_calibration(records, (224, 400))
    np.testing.assert_allclose(small.K, nuscenes_rig((224, 400)).K, atol=1e-12)
    assert small.image_size == (224, 400)
    # records of a rig stored at another size round-trip via calib_size
    rec_small = nuscenes_calibration_from_rig(small)
    again = rig_from_nuscenes_calibration(rec_small, (224, 400), calib_size=(224, 400))
    np.testing.assert_allclose(again.K, small.K, atol=1e-12)
    # per-sample calibration: a different record gives a different rig (nothing cached)
    shifted = [dict(r) for r in records]
    shifted[FRONT] = {**records[FRONT], "translation": [2.0, 0.1, 1.6]}
    for r in shifted:
        del r["channel"]
    other = rig_from_nuscenes_calibration(shifted, rig.image_size)
    assert other.names == tuple(f"cam{i}" for i in range(6))
    np.testing.assert_allclose(other.camera_centers[FRONT], [2.0, 0.1, 1.6], atol=1e-12)
    np.testing.assert_allclose(other.camera_centers[BACK], rig.camera_centers[BACK], atol=1e-12)
    bad = [dict(r) for r in records]
    bad[BACK] = {**records[BACK], "camera_intrinsic": [[-1.0, 0, 800], [0, 1.0, 450], [0, 0, 1]]}
    with pytest.raises(ValueError, match="CAM_BACK"):
        rig_from_nuscenes_calibration(bad, rig.image_size)
