"""Boxes3D: packed round trip, numpy/torch agreement, selection and joining, shape validation."""

from __future__ import annotations

import numpy as np
import pytest

from sim_bridge import geometry
from sim_bridge.boxes import Boxes3D


def _packed(n: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(0, 10, (n, 3)), rng.uniform(0.5, 5, (n, 3)),
                            rng.uniform(-np.pi, np.pi, n)]).astype(np.float32)


def test_round_trip_and_defaults():
    arr = _packed()
    b = Boxes3D.from_array(arr)
    assert len(b) == 5 and b.batch_shape == () and b.valid.all() and b.classes.dtype == np.int64
    np.testing.assert_array_equal(b.as_array(), arr)
    assert b.as_array().dtype == np.float32 and np.asarray(b).dtype == np.float32
    np.testing.assert_array_equal(b.bottom_z(), arr[:, 2] - arr[:, 5] / 2)
    np.testing.assert_array_equal(b.corners(), geometry.box_corners(arr))
    np.testing.assert_array_equal(b.footprints(), b.corners()[:, :4, :2])
    batched = Boxes3D.from_array(np.stack([arr, arr[::-1]]))
    assert batched.batch_shape == (2,) and len(batched) == 5 and batched.corners().shape == (2, 5, 8, 3)


def test_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    arr = _packed(7, 1).astype(np.float64)
    b = Boxes3D.from_array(arr, classes=np.arange(7), valid=np.arange(7) % 2 == 0)
    t = b.to("cpu")
    assert isinstance(t.center, torch.Tensor) and t.valid.dtype == torch.bool and t.classes.dtype == torch.int64
    np.testing.assert_allclose(t.corners().numpy(), b.corners(), atol=1e-12)
    np.testing.assert_allclose(t.footprints().numpy(), b.footprints(), atol=1e-12)
    back = t.numpy()
    np.testing.assert_array_equal(back.as_array(), arr)
    np.testing.assert_array_equal(back.valid, b.valid)
    assert t.to(dtype=torch.float32).center.dtype == torch.float32
    assert Boxes3D.from_array(torch.tensor(arr)).valid.all()


def test_select_index_concat_stack_empty():
    arr = _packed(6, 2)
    b = Boxes3D.from_array(arr, classes=np.arange(6), valid=np.array([1, 0, 1, 1, 0, 0], bool))
    v = b.select(b.valid)
    assert len(v) == 3 and (v.classes == [0, 2, 3]).all()
    np.testing.assert_array_equal(b[1:3].as_array(), arr[1:3])
    both = Boxes3D.concat([v, Boxes3D.empty(2)])
    assert len(both) == 5 and both.valid.sum() == 3 and both.as_array().dtype == np.float32
    st = Boxes3D.stack([b, b])
    assert st.batch_shape == (2,) and len(st[1]) == 6
    np.testing.assert_array_equal(st[1].as_array(), arr)
    e = Boxes3D.empty(0)
    assert len(e) == 0 and e.corners().shape == (0, 8, 3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[..., n, 7\]"):
        Boxes3D.from_array(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="center"):
        Boxes3D(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3), np.zeros(3, int), np.ones(3, bool))
    with pytest.raises(ValueError, match="yaw"):
        Boxes3D(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(4), np.zeros(3, int), np.ones(3, bool))
    with pytest.raises(ValueError, match="valid must be bool"):
        Boxes3D.from_array(np.zeros((3, 7)), valid=np.ones(3))
    with pytest.raises(ValueError, match="classes"):
        Boxes3D.from_array(np.zeros((3, 7)), classes=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="integer"):
        Boxes3D.from_array(np.zeros((3, 7)), classes=np.zeros(3))
