"""The one geometry module: numpy and torch give the same answers, transforms invert, boxes agree with shapely."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from sim_bridge.geometry import (box_corners, box_footprints, boxes_overlap, from_frame, rotate, to_frame,
                                 vectors_to_frame, wrap_angle)

torch = pytest.importorskip("torch")


def test_wrap_angle_range_and_types():
    a = np.linspace(-20, 20, 4001)
    w = wrap_angle(a)
    assert w.min() >= -math.pi and w.max() < math.pi
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-12)
    assert wrap_angle(3 * math.pi) == pytest.approx(-math.pi)
    np.testing.assert_allclose(wrap_angle(torch.tensor(a)).numpy(), w, atol=1e-12)
    np.testing.assert_allclose(wrap_angle([7.0, -7.0]), wrap_angle(np.array([7.0, -7.0])))


def test_frames_invert_and_match_hand_rotation():
    rng = np.random.default_rng(0)
    pose = np.array([10.0, -4.0, 0.7])
    xy = rng.normal(size=(5, 7, 2)) * 30
    local = to_frame(xy, pose)
    np.testing.assert_allclose(from_frame(local, pose), xy, atol=1e-9)
    # a point 2 m straight ahead of the pose is at (2, 0) in its frame
    ahead = pose[:2] + 2 * np.array([math.cos(pose[2]), math.sin(pose[2])])
    np.testing.assert_allclose(to_frame(ahead, pose), [2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(vectors_to_frame(rotate(xy, 0.3), 0.3), xy, atol=1e-9)
    t = to_frame(torch.tensor(xy), torch.tensor(pose)).numpy()
    np.testing.assert_allclose(t, local, atol=1e-9)


def test_box_corners_numpy_torch_and_footprint():
    boxes = np.array([[1.0, 2.0, 0.8, 4.0, 2.0, 1.6, 0.5], [-3.0, 0.0, 1.0, 2.0, 1.0, 2.0, -2.0]])
    c = box_corners(boxes)
    assert c.shape == (2, 8, 3)
    np.testing.assert_allclose(c.mean(1), boxes[:, :3], atol=1e-12)
    np.testing.assert_allclose(c[:, :4, 2], (boxes[:, 2] - boxes[:, 5] / 2)[:, None].repeat(4, 1))
    np.testing.assert_allclose(box_corners(torch.tensor(boxes)).numpy(), c, atol=1e-12)
    fp = box_footprints(boxes[:, :2], boxes[:, 3:5], boxes[:, 6])
    np.testing.assert_allclose(fp, c[:, :4, :2], atol=1e-12)
    assert Polygon(fp[0]).area == pytest.approx(8.0) and Polygon(fp[0]).exterior.is_ccw


def test_boxes_overlap_agrees_with_shapely():
    rng = np.random.default_rng(1)
    n = 3000
    xy_i, xy_j = rng.uniform(-3, 3, (n, 2)), rng.uniform(-3, 3, (n, 2))
    h_i, h_j = rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n)
    s_i, s_j = rng.uniform(0.5, 5, (n, 2)), rng.uniform(0.5, 5, (n, 2))
    got = boxes_overlap(xy_i, h_i, s_i, xy_j, h_j, s_j)
    pi, pj = box_footprints(xy_i, s_i, h_i), box_footprints(xy_j, s_j, h_j)
    want = np.array([Polygon(a).intersects(Polygon(b)) for a, b in zip(pi, pj)])
    assert 0.2 < want.mean() < 0.8 and (got == want).mean() > 0.999
    tg = boxes_overlap(*(torch.tensor(x) for x in (xy_i, h_i, s_i, xy_j, h_j, s_j))).numpy()
    np.testing.assert_array_equal(tg, got)
