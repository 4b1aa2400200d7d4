"""Scene generator geometry: slab intersection, composition, edits, crops, layouts, box-alpha IoU."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bevgen.cameras import nuscenes_rig, project_boxes, project_points  # noqa: E402
from bevgen.scene3d import edit as E  # noqa: E402
from bevgen.scene3d.discriminators import crop_objects  # noqa: E402
from bevgen.scene3d.layout import SceneLayout, layout_from_frame, layout_from_scenario, stack_layouts  # noqa: E402
from bevgen.scene3d.metrics import box_alpha_iou  # noqa: E402
from bevgen.scene3d.model import Scene3DGenerator, Scene3DModelConfig, sample_latents  # noqa: E402
from bevgen.scene3d.samplers import camera_rays, ray_box_intersect  # noqa: E402
from sim_bridge.boxes import Boxes3D  # noqa: E402
from sim_bridge.scenario import Scenario  # noqa: E402
from tests.conftest import make_straight_road_scenario  # noqa: E402

SMALL = dict(image_size=32, render_size=16, z_dim=16, w_dim=16, object_hidden=32, background_hidden=32,
             bev_plane_size=16, upsampler_channels=16, feature_dim=8)


@pytest.fixture(scope="module")
def road_layout() -> SceneLayout:
    """CAM_FRONT of the straight-road scenario at frame 0: the lead car 20 m ahead in the ego's lane."""
    lay = layout_from_scenario(Scenario.from_dict(make_straight_road_scenario()), 0, resolution=32, max_objects=4)
    assert lay.valid.sum() == 1
    return lay.validate()


def _generator(**kw) -> Scene3DGenerator:
    torch.manual_seed(0)
    return Scene3DGenerator(Scene3DModelConfig(**{**SMALL, **kw})).eval()


def test_ray_box_intersection_matches_analytic():
    o = torch.tensor([[0.0, 0.0, 1.0]])
    box = Boxes3D.from_array(torch.tensor([[[10.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]]]))
    yawed = Boxes3D.from_array(torch.tensor([[[6.0, 6.0, 1.0, 4.0, 2.0, 2.0, np.pi / 4]]]))
    s = np.sqrt(0.5)
    k = 1.0 / np.hypot(1.0, 0.15)
    dirs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [k, 0.15 * k, 0.0]]], dtype=torch.float32)
    tn, tf, hit = ray_box_intersect(o, dirs, box)
    assert hit[0, :, 0].tolist() == [True, False, False]  # y = 0.15 * 8 = 1.2 > w / 2: miss
    assert tn[0, 0, 0] == pytest.approx(8.0) and tf[0, 0, 0] == pytest.approx(12.0)
    # yawed box: ray along its heading through its centre (distance 6 sqrt 2) spans its length
    d45 = torch.tensor([[[s, s, 0.0], [s, -s, 0.0]]], dtype=torch.float32)
    tn, tf, hit = ray_box_intersect(o, d45, yawed)
    assert hit[0, 0, 0] and not hit[0, 1, 0]
    assert tn[0, 0, 0] == pytest.approx(6 * np.sqrt(2) - 2, abs=1e-5)
    assert tf[0, 0, 0] == pytest.approx(6 * np.sqrt(2) + 2, abs=1e-5)
    # origin inside the box: entry clamped to near
    tn, tf, hit = ray_box_intersect(torch.tensor([[10.0, 0.0, 1.0]]), dirs[:, :1], box, near=0.1)
    assert hit.all() and tn[0, 0, 0] == pytest.approx(0.1) and tf[0, 0, 0] == pytest.approx(2.0)


def test_ray_box_intersection_matches_dense_marching():
    """Random rays against a yawed, raised box: entry / exit agree with brute-force point-in-box marching."""
    g = torch.Generator().manual_seed(0)
    box = torch.tensor([[[12.0, -3.0, 1.2, 4.5, 1.9, 1.6, 0.7]]])
    o = torch.tensor([[0.0, 0.0, 1.5]])
    target = box[0, :, :3] + (torch.rand(200, 3, generator=g) - 0.5) * torch.tensor([7.0, 4.0, 3.0])
    dirs = (target - o)[None]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    tn, tf, hit = ray_box_intersect(o, dirs, Boxes3D.from_array(box))
    t = torch.arange(0, 25, 2e-3)
    pts = o[0] + t[None, :, None] * dirs[0, :, None, :] - box[0, 0, :3]
    c, s = np.cos(0.7), np.sin(0.7)
    lx, ly = c * pts[..., 0] + s * pts[..., 1], -s * pts[..., 0] + c * pts[..., 1]
    inside = (lx.abs() <= 2.25) & (ly.abs() <= 0.95) & (pts[..., 2].abs() <= 0.8)  # [rays, T]
    ref_hit = inside.any(1)
    assert 30 < int(ref_hit.sum()) < 200 and (hit[0, :, 0] == ref_hit).float().mean() > 0.98
    both = ref_hit & hit[0, :, 0]
    first = t[inside.float().argmax(1)]
    last = t[len(t) - 1 - inside.flip(1).float().argmax(1)]
    assert torch.allclose(tn[0, both, 0], first[both], atol=5e-3)
    assert torch.allclose(tf[0, both, 0], last[both], atol=5e-3)


@pytest.mark.parametrize("field", ["mlp", "triplane"])
def test_composition_equals_background_render_where_the_box_is_empty(road_layout, field):
    gen = _generator(object_field=field, triplane_size=16)
    z = sample_latents(1, road_layout.num_boxes, 16, torch.Generator().manual_seed(1))
    empty = road_layout.replace(valid=np.zeros_like(road_layout.valid))
    with torch.no_grad():
        with_obj = gen(stack_layouts([road_layout]), *z).features
        bg_only = gen(stack_layouts([empty]), *z).features
    lay = stack_layouts([road_layout])
    assert isinstance(lay.boxes, Boxes3D) and lay.boxes.batch_shape == (1,)
    assert lay.boxes.center.dtype == torch.float32 and lay.boxes.valid.dtype == torch.bool
    o, d = camera_rays(lay.K, lay.T_cam_from_ego, 32, 16)
    hit = ray_box_intersect(o, d, lay.boxes)[2].any(-1).reshape(16, 16)
    assert 2 < int(hit.sum()) < 100
    diff = (with_obj - bg_only).abs().amax(1)[0]  # [16, 16]
    assert diff[~hit].max() < 1e-6  # rays missing the box: the background render, exactly
    assert diff[hit].max() > 1e-3  # rays through it see the object
    # an object field with no density leaves the background render everywhere
    with torch.no_grad():
        gen.object_field.density.bias.fill_(-60.0)
        transparent = gen(stack_layouts([road_layout]), *z).features
    assert (transparent - bg_only).abs().max() < 1e-5


def test_move_edit_moves_opacity_by_the_projected_displacement(road_layout):
    gen = _generator(object_density_bias=3.0)  # opaque objects from the start
    lat = E.SceneLatents.from_seed(road_layout.num_boxes, 16, 0)
    i = int(np.flatnonzero(road_layout.valid)[0])
    delta = np.array([0.0, 1.5, 0.0])  # 1.5 m to the left at ~20 m
    moved = E.move_object(road_layout, i, delta)
    a0, a1 = E.render(gen, road_layout, lat), E.render(gen, moved, lat)

    def centroid(alpha):  # opacity-weighted centre in image pixels (alpha [H, W] at 32 x 32)
        ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]] + 0.5
        return np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()

    shift = centroid(a1.alpha) - centroid(a0.alpha)
    centre = road_layout.boxes.center[i]
    uv, _, _ = project_points(road_layout.camera, np.stack([centre, centre + delta]))
    expected = uv[0, 1] - uv[0, 0]
    assert expected[0] < -2.0  # moving left moves it left in the image by a few pixels
    assert np.allclose(shift, expected, atol=0.6), (shift, expected)
    assert a0.alpha.sum() == pytest.approx(a1.alpha.sum(), rel=0.15)
    # delete removes its opacity; restyle changes only pixels whose rays cross the box
    assert E.render(gen, E.delete_object(road_layout, i), lat).alpha.max() < 1e-6
    r2 = E.render(gen, road_layout, E.restyle_object(lat, i, seed=5))
    changed = np.abs(r2.rgb.astype(int) - a0.rgb.astype(int)).max(-1) > 0
    box = road_layout.boxes_2d[i]
    assert changed.any()
    ys, xs = np.nonzero(changed)
    assert xs.min() >= box[0] - 3 and xs.max() <= box[2] + 3 and ys.min() >= box[1] - 3 and ys.max() <= box[3] + 3


def test_add_and_rotate_objects_and_move_camera(road_layout):
    gen = _generator(object_density_bias=3.0)
    lat = E.SceneLatents.from_seed(road_layout.num_boxes, 16, 0)
    added, lat2, j = E.add_object(road_layout, lat, (15.0, 4.0, 0.8, 4.5, 1.9, 1.6, 0.0), seed=3)
    assert added.valid.sum() == 2 and lat2.z_obj.shape == lat.z_obj.shape
    out = E.render(gen, added, lat2)
    assert out.instance_alpha[j].sum() > 1.0
    rot = E.rotate_object(road_layout, int(np.flatnonzero(road_layout.valid)[0]), np.pi / 2)
    assert not np.allclose(E.render(gen, rot, lat).alpha, E.render(gen, road_layout, lat).alpha)
    # orbiting by 0 is the identity; turning the camera left moves the car right in the image
    assert np.allclose(E.orbit_camera(road_layout, 0.0).T_cam_from_ego, road_layout.T_cam_from_ego, atol=1e-5)
    turned = E.move_camera(road_layout, yaw=np.radians(10))
    b0, b1 = road_layout.boxes_2d[road_layout.valid][0], turned.boxes_2d[turned.valid][0]
    assert b1[0] > b0[0] + 2
    frames = E.orbit_frames(gen, road_layout, lat, frames=4)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8


def test_crop_objects_is_roi_align():
    img = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    win = torch.tensor([[[8.0, 4.0, 24.0, 20.0], [0.0, 0.0, 8.0, 8.0]], [[16.0, 16.0, 32.0, 32.0], [0, 0, 1, 1]]])
    valid = torch.tensor([[True, True], [True, False]])
    crops, idx = crop_objects(img, win, valid, 16)
    assert crops.shape == (3, 3, 16, 16) and idx.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert torch.allclose(crops[0], img[0, :, 4:20, 8:24])
    assert torch.allclose(crops[2], img[1, :, 16:32, 16:32])


def test_box_alpha_iou_can_fail():
    win = torch.tensor([[[8.0, 8.0, 24.0, 16.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    perfect = torch.zeros(1, 32, 32)
    perfect[0, 8:16, 8:24] = 1.0
    assert box_alpha_iou(perfect, win, valid, 32) == pytest.approx(1.0)
    assert box_alpha_iou(torch.roll(perfect, 8, 2), win, valid, 32) == pytest.approx(1 / 3)
    assert box_alpha_iou(torch.zeros(1, 32, 32), win, valid, 32) == 0.0
    assert np.isnan(box_alpha_iou(perfect, win, ~valid, 32))


def test_layout_roundtrip_and_square_crop_geometry(tmp_path, road_layout):
    path = road_layout.save_json(tmp_path / "layout.json")
    back = SceneLayout.from_dict(json.loads(path.read_text()))
    assert np.allclose(back.boxes.select(back.valid).as_array(), road_layout.boxes.select(road_layout.valid).as_array())
    assert back.num_boxes == road_layout.num_boxes
    # a frame's square crop + resize keeps every projected box where the full image had it
    rig = nuscenes_rig((64, 112))
    frame = {"images": np.zeros((6, 64, 112, 3), np.uint8), "boxes": road_layout.boxes.as_array(),
             "classes": road_layout.classes, "box_valid": road_layout.valid, "K": rig.K,
             "T_cam_from_ego": rig.T_cam_from_ego}
    lay, img = layout_from_frame(frame, "CAM_FRONT", 32)
    full = project_boxes(rig, road_layout.boxes).corners_uv[1, road_layout.valid]  # view 1 = CAM_FRONT
    crop = project_boxes(lay.camera, lay.boxes).corners_uv[0, lay.valid]
    assert img.shape == (32, 32, 3) and lay.valid.sum() == 1
    assert np.allclose((full - [24.0, 0.0]) * 0.5, crop, atol=1e-4)  # crop left 24 px, scale 32 / 64


def test_validate_raises_value_error_that_survives_python_O(road_layout):
    """Contract checks raise ValueError (``assert`` would vanish under ``python -O``)."""
    import dataclasses

    with pytest.raises(ValueError, match="classes must be int64"):
        bad = road_layout.boxes.replace(classes=road_layout.classes.astype(np.int32))
        dataclasses.replace(road_layout, boxes=bad).validate()
    with pytest.raises(ValueError, match="must be one layout's numpy Boxes3D"):
        dataclasses.replace(road_layout, boxes=road_layout.boxes.as_array()).validate()
    bad_T = road_layout.T_cam_from_ego.copy()
    bad_T[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="orthonormal"):
        road_layout.replace(T_cam_from_ego=bad_T).validate()
    lat = E.SceneLatents.from_seed(road_layout.num_boxes + 1, 16)
    lat.validate()
    with pytest.raises(ValueError, match="one object latent per layout box"):
        lat.validate(road_layout)
    with pytest.raises(ValueError, match="z_bg"):
        E.SceneLatents(lat.z_obj, lat.z_bg[:3]).validate()


def test_bilinear_gather_matches_grid_sample():
    import torch.nn.functional as F

    from bevgen.scene3d.fields import bilinear_gather

    g = torch.Generator().manual_seed(0)
    planes = torch.randn(3, 5, 8, 8, generator=g)
    uv = torch.rand(50, 2, generator=g) * 2.2 - 1.1  # some points beyond the border (clamped)
    inst = torch.randint(3, (50,), generator=g)
    ref = F.grid_sample(planes[inst], uv[:, None, None, :], padding_mode="border", align_corners=False)[:, :, 0, 0]
    assert torch.allclose(bilinear_gather(planes, inst, uv), ref, atol=1e-5)
