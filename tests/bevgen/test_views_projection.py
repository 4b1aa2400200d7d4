"""The aligned condition (bevgen.views.projection): the layout seen through each camera lands on the pixels where
the renderer draws the same scene, and the generator that uses it trains and loads."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_varied_road_scenario  # noqa: E402  # tests/conftest.py (on sys.path)

from bevgen.views.projection import (box_coverage, layout_projection, projection_channels,  # noqa: E402
                                     ray_box_hits)
from sim_bridge.boxes import Boxes3D  # noqa: E402
from tests.bevgen.test_views_model import _one_thread  # noqa: E402, F401  # autouse: one torch thread


def _boxes(frame: dict, shift_y: float = 0.0) -> Boxes3D:
    boxes = torch.tensor(frame["boxes"])[None].clone()
    boxes[..., 1] += shift_y
    return Boxes3D.from_array(boxes, torch.tensor(frame["classes"])[None], torch.tensor(frame["box_valid"])[None])


def _per_pixel(frame: dict, boxes: Boxes3D) -> torch.Tensor:
    """Projection at one ray per pixel: [v, H, W, c]."""
    H, W = frame["images"].shape[1:3]
    return layout_projection(torch.tensor(frame["bev"])[None], boxes, torch.tensor(frame["K"])[None],
                             torch.tensor(frame["T_cam_from_ego"])[None], (H, W), 1, 1, 50.0, 4)[0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_projected_layout_lands_where_the_renderer_draws_it():
    pytest.importorskip("pybullet")
    from bevgen.render.scene import SEMANTIC_CLASSES
    from bevgen.views.cli import render_ground_truth
    from sim_bridge.scenario import Scenario

    sem_id = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
    scores = []
    for seed in (0, 2):
        frame = render_ground_truth(Scenario.from_dict(make_varied_road_scenario(seed)), 5, (64, 112))
        C = frame["bev"].shape[0]
        sem = frame["semantic"]
        feats = _per_pixel(frame, _boxes(frame))
        car = (feats[..., C + 0] > 0.5).numpy()  # box hit, class vehicle
        drawn_car = sem == sem_id["vehicle"]
        road = (feats[..., 0] > 0.5).numpy()  # drivable-area channel at the ground point
        drawn_road = np.isin(sem, [sem_id["road"], sem_id["marking"], sem_id["crosswalk"]])
        sky = (feats[..., -1] > 0.5).numpy()
        moved = (_per_pixel(frame, _boxes(frame, shift_y=4.0))[..., C] > 0.5).numpy()
        drawn_sky = sem == sem_id["sky"]
        scores.append({"car": _iou(car, drawn_car), "moved_car": _iou(moved, drawn_car), "road": _iou(road, drawn_road),
                       # above the horizon the renderer adds buildings the layout does not hold: sky is a superset
                       "sky_recall": float((sky & drawn_sky).sum() / drawn_sky.sum()),
                       "sky_on_road_or_car": float((sky & (drawn_road | drawn_car)).sum() / sky.sum()),
                       "car_px": int(drawn_car.sum())})
    for s in scores:  # measured: car 0.83 / 0.79 (meshes are smaller than their boxes), 4 m aside 0.05 / 0.10,
        assert s["car_px"] > 500, scores  # road 0.88 / 0.90
        assert s["car"] > 0.65 and s["moved_car"] < 0.3 * s["car"], scores
        assert s["road"] > 0.75, scores
        assert s["sky_recall"] > 0.95 and s["sky_on_road_or_car"] < 0.02, scores


def test_ray_box_hit_distance_face_and_token_coverage():
    # camera at 1.5 m height looking along +x; a 4 x 2 x 1.5 m box at x = 10 (yawed 90 degrees: its side faces us)
    boxes = Boxes3D.from_array(torch.tensor([[[10.0, 0.0, 0.75, 4.0, 2.0, 1.5, math.pi / 2],
                                              [30.0, 0.0, 0.75, 4.0, 2.0, 1.5, 0.0]]]),
                               torch.tensor([[0, 0]]), torch.tensor([[True, False]]))
    origin = torch.tensor([[[0.0, 0.0, 1.0]]])
    rays = torch.nn.functional.normalize(torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]]]), dim=-1)
    t, idx, normal = ray_box_hits(origin, rays, boxes)
    # yawed by 90 degrees the box spans x in [9, 11]: hit at 9 m through its side (box-frame y face)
    assert t[0, 0, 0] == pytest.approx(9.0, abs=1e-4) and idx[0, 0, 0] == 0
    torch.testing.assert_close(normal[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert math.isinf(t[0, 0, 1]) and math.isinf(t[0, 0, 2])  # passes beside it; looks up; invalid box ignored
    # only valid boxes are tested (padding first in the batch, and a sample with none): same hits, and the index
    # still points into the boxes given
    arr = torch.tensor([[[30.0, 0.0, 0.75, 4.0, 2.0, 1.5, 0.0], [10.0, 0.0, 0.75, 4.0, 2.0, 1.5, math.pi / 2]]])
    padded = Boxes3D.from_array(arr.expand(2, -1, -1), torch.tensor([[0, 1], [0, 1]]),
                                torch.tensor([[False, True], [False, False]]))
    t2, idx2, normal2 = ray_box_hits(origin.expand(2, -1, -1), rays.expand(2, -1, -1, -1), padded)
    torch.testing.assert_close(t2[0], t[0])
    assert idx2[0, 0, 0] == 1 and torch.equal(normal2[0], normal[0]) and torch.isinf(t2[1]).all()
    # token level: the front camera's tokens covering the box read a box fraction, the sky tokens read none
    from bevgen.cameras import nuscenes_rig

    rig = nuscenes_rig((64, 112))
    K = torch.tensor(rig.K, dtype=torch.float32)[None]
    T = torch.tensor(rig.T_cam_from_ego, dtype=torch.float32)[None]
    feats = layout_projection(torch.zeros(1, 8, 64, 64), boxes, K, T, (8, 14), 8, 4, 50.0, 4)
    assert feats.shape == (1, 6, 8, 14, projection_channels(8, 4))
    cover = box_coverage(feats, 8, 4)[0]  # [v, h, w]
    front = rig.names.index("CAM_FRONT")
    assert cover[front].max() == 1.0 and cover[front, 0].max() == 0.0  # top row: sky above a 1.5 m box
    assert cover.sum() == pytest.approx(cover[front].sum() + cover[front - 1].sum() + cover[front + 1].sum())


def test_legacy_checkpoints_without_aligned_condition_still_load(tmp_path):
    """Checkpoints written before the aligned condition existed hold a config without the field: they load as the
    model without it (and train as before, unweighted)."""
    import dataclasses

    from bevgen.views.sample import build_models, load_views
    from runkit.checkpoint import save_checkpoint
    from runkit.config import to_dict
    from tests.bevgen.test_views_model import _tiny_config

    cfg = _tiny_config()
    legacy = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, aligned_condition=False,
                                                                    object_loss_weight=0.0))
    tok, gen = build_models(legacy)
    stored = to_dict(legacy)
    for name in ("aligned_condition", "object_loss_weight", "projection_subsamples"):
        del stored["generator"][name]
    for name, model in (("tokenizer", tok), ("generator", gen)):
        save_checkpoint(tmp_path / "checkpoints" / f"{name}.pt", model=model.state_dict(), optimizer={},
                        config=stored, step=1, best_metric=0.0)
    pipe = load_views(tmp_path)
    assert pipe.generator.aligned is None and not pipe.config.generator.aligned_condition
    assert build_models(cfg)[1].aligned is not None  # a new config gets it by default


def test_vehicle_iou_by_distance_scores_each_band_on_its_own():
    from bevgen.views.metrics import iou_by_distance

    S, range_m = 50, 50.0  # 2 m cells; row 0 = x +50 m, column 0 = y +50 m
    target = np.zeros((1, 2, S, S), bool)
    target[0, 1, 20, 25] = True  # x = +9 m: near
    target[0, 1, 14, 25] = True  # x = +21 m: mid
    target[0, 1, 2, 25] = True   # x = +45 m: far
    pred = target.copy()
    pred[0, 1, 2, 25] = False    # the far car missed
    pred[0, 1, 15, 25] = True    # a mid false positive
    out = iou_by_distance(pred, target, range_m)
    assert out["near"] == 1.0 and out["mid"] == 0.5 and out["far"] == 0.0, out
    assert np.isnan(iou_by_distance(pred, target, range_m, bands={"none": (80.0, 90.0)})["none"])
    assert all(np.isnan(v) for v in iou_by_distance(pred, target, range_m, channel=0).values())  # road: empty


def test_culled_ray_box_hits_equal_the_slab_test_of_every_pair():
    """ray_box_hits slab-tests only the pairs that pass a bounding-sphere test: its output is exactly that of the
    slab test run on every (ray, box) pair, nearest hit first, lowest box index on ties, padding never hit."""
    from bevgen.cameras import nuscenes_rig
    from bevgen.views.attention import token_rays
    from bevgen.views.projection import _slab
    from sim_bridge.geometry import vectors_to_frame

    g = torch.Generator().manual_seed(0)
    b, m = 2, 24
    arr = torch.cat([torch.rand(b, m, 2, generator=g) * 60 - 30, torch.rand(b, m, 1, generator=g) + 0.3,
                     torch.rand(b, m, 3, generator=g) * 4 + 0.5, torch.rand(b, m, 1, generator=g) * 6.3], -1)
    arr[0, 0] = torch.tensor([1.0, 0.0, 1.0, 5.0, 2.0, 2.0, 0.3])  # holds the front camera: hit at t = 0
    arr[0, 1] = arr[0, 0]  # an exact duplicate: the tie goes to box 0
    valid = torch.rand(b, m, generator=g) > 0.2
    valid[0, :2] = True
    valid[1, 5] = False
    boxes = Boxes3D.from_array(arr, torch.zeros(b, m, dtype=torch.long), valid)
    rig = nuscenes_rig((32, 56))
    K = torch.tensor(rig.K, dtype=torch.float32)[None].expand(b, -1, -1, -1)
    T = torch.tensor(rig.T_cam_from_ego, dtype=torch.float32)[None].expand(b, -1, -1, -1)
    rays, origins = token_rays(K, T, (32, 56), 1, 1)
    rays = rays.flatten(2, 3) * 1.7  # not unit: distances are in units of the ray's length
    t, idx, normal = ray_box_hits(origins, rays, boxes)
    # reference: every pair, broadcast [b, v, p, m]
    shape = (*rays.shape[:3], m)
    yaw = arr[..., 6][:, None, None].expand(shape)
    rel = (origins[:, :, None] - arr[..., :3][:, None])[:, :, None].expand(*shape, 3)  # [b, v, p, m, 3]
    o = torch.cat([vectors_to_frame(rel[..., :2], yaw), rel[..., 2:]], -1)
    hit, t_pair, axis = _slab(o, rays[:, :, :, None].expand(*shape, 3), yaw,
                              0.5 * arr[..., 3:6][:, None, None].expand(*shape, 3))
    hit &= valid[:, None, None]
    t_ref = torch.where(hit, t_pair, torch.full_like(t_pair, math.inf)).min(-1).values
    torch.testing.assert_close(t, t_ref, rtol=0, atol=0)
    assert torch.isfinite(t).float().mean() > 0.1  # the test means something: many rays hit
    first = hit & (torch.where(hit, t_pair, torch.full_like(t_pair, math.inf)) == t_ref[..., None])
    idx_ref = torch.where(first, torch.arange(m), torch.full_like(axis, m)).min(-1).values
    assert torch.equal(idx, torch.where(idx_ref == m, 0, idx_ref))
    assert not valid.gather(1, idx.flatten(1))[torch.isfinite(t).flatten(1)].logical_not().any()
    front = rig.names.index("CAM_FRONT")
    assert (t[0, front] == 0).all() and (idx[0, front] == 0).all()  # inside box 0 (and its twin, box 1)
    axis_ref = axis.gather(-1, idx[..., None])[..., 0]
    torch.testing.assert_close(normal, torch.nn.functional.one_hot(axis_ref, 3).float() * torch.isfinite(t)[..., None])
