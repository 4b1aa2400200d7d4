"""BEV rasterizer: geometry of the raster and of the boxes, on known synthetic scenes and real frames."""

from __future__ import annotations

import numpy as np
import pytest

from bevgen.layout import CLASS_NAMES, BevConfig, BevRasterizer, rasterize
from bevgen.preview import preview_image, save_preview
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import Scenario


def _pixel(cfg: BevConfig, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel containing ego-frame point (x, y)."""
    return int((cfg.range_m - x) // cfg.resolution_m), int((cfg.range_m - y) // cfg.resolution_m)


@pytest.mark.parametrize("ego_yaw", [0.0, np.pi / 2, -2.5])
def test_raster_is_ego_centric_whatever_the_world_heading(road_dict_factory, ego_yaw):
    sc = Scenario.from_dict(road_dict_factory(ego_yaw=ego_yaw))
    cfg = BevConfig()
    lay = rasterize(sc, 0, cfg).validate()
    assert lay.raster.shape == (8, 200, 200) and lay.raster.dtype == np.uint8
    veh, ped, cyc = lay.channel("vehicle"), lay.channel("pedestrian"), lay.channel("cyclist")
    # lead car: 20 m ahead in the ego lane -> straight up from the centre
    r, c = _pixel(cfg, 20.0, 0.0)
    assert veh[r, c] == 1 and veh[_pixel(cfg, -20.0, 0.0)] == 0
    # pedestrian on the crosswalk: 32 m ahead, 2.75 m to the left (1.0 - (-1.75))
    assert ped[_pixel(cfg, 32.0, 2.75)] == 1 and ped.sum() < 8
    # the cyclist is not valid at step 0
    assert cyc.sum() == 0
    # lane centre lines at y = 0 (ego lane) and y = 3.5; the yellow centre line at y = 1.75
    row = _pixel(cfg, 10.0, 0.0)[0]
    cols = np.flatnonzero(lay.channel("lane_centerline")[row])
    assert set(cols) & {_pixel(cfg, 10, 0.0)[1]} and set(cols) & {_pixel(cfg, 10, 3.5)[1]}
    assert lay.channel("road_line")[row, _pixel(cfg, 10, 1.75)[1]] == 1
    # road edges at y = -1.75 and y = 5.25; drivable area in between, not outside
    edges = np.flatnonzero(lay.channel("road_edge")[row])
    assert abs(edges.min() - _pixel(cfg, 10, 5.25)[1]) <= 1 and abs(edges.max() - _pixel(cfg, 10, -1.75)[1]) <= 1
    drv = lay.channel("drivable_area")
    assert drv[row, _pixel(cfg, 10, 1.75)[1]] == 1 and drv[row, _pixel(cfg, 10, 12.0)[1]] == 0
    assert lay.channel("crosswalk")[_pixel(cfg, 32.0, 0.0)] == 1


def test_boxes_in_ego_frame(road_dict_factory):
    sc = Scenario.from_dict(road_dict_factory(ego_yaw=1.0))
    lay = BevRasterizer(sc)(20)  # ego at 20 m, lead at 20 + 16 = 36 m -> 16 m ahead; bike valid now
    ids = [i for i, v in zip(lay.agent_ids, lay.valid) if v]
    assert ids == ["walker", "lead", "bike"], "nearest first: walker 12 m, lead 16 m, bike 25 m; no ego"
    packed = lay.boxes.as_array()  # [N, 7] (x, y, z_centre, l, w, h, yaw)
    lead = packed[1]
    np.testing.assert_allclose(lead[[0, 1, 3, 4, 5, 6]], [16.0, 0.0, 4.8, 2.0, 1.7, 0.0], atol=1e-4)
    assert lead[2] == pytest.approx(1.7 / 2, abs=1e-4)  # box-centre height above the ego's ground (flat road)
    walker = packed[ids.index("walker")]
    np.testing.assert_allclose(walker[[0, 1, 6]], [12.0, 2.75, np.pi / 2], atol=1e-4)
    assert CLASS_NAMES[lay.classes[ids.index("bike")]] == "cyclist"
    assert not lay.valid[3:].any() and packed.shape == (64, 7) and packed.dtype == np.float32
    assert lay.boxes.bottom_z()[1] == pytest.approx(0.0, abs=1e-4)  # the lead stands on the ego's ground
    files = lay.box_arrays()  # the frame-file form: packed float32 boxes, int64 classes, bool box_valid
    assert [(k, v.dtype, v.shape) for k, v in files.items()] == [
        ("boxes", np.float32, (64, 7)), ("classes", np.int64, (64,)), ("box_valid", np.bool_, (64,))]
    np.testing.assert_array_equal(files["boxes"], packed)


def test_out_of_range_agents_are_dropped(road_dict_factory):
    d = road_dict_factory()
    d["tracks"]["lead"]["state"]["position"][:, 0] += 500.0
    lay = rasterize(Scenario.from_dict(d), 0)
    veh = lay.channel("vehicle")
    assert "lead" not in lay.agent_ids
    assert veh[:90].sum() == 0 and veh[90:110, 95:105].sum() > 0, "only the ego's own box remains"


def test_channel_config_changes_raster(road_dict):
    cfg = BevConfig(range_m=20.0, resolution_m=0.25, channels=("vehicle", "ego", "lane_centerline"))
    lay = rasterize(Scenario.from_dict(road_dict), 0, cfg)
    assert lay.raster.shape == (3, 160, 160)
    ego = lay.channel("ego")
    assert ego[80, 80] == 1 and 4.5 * 1.9 / 0.25**2 * 0.8 < ego.sum() < 4.5 * 1.9 / 0.25**2 * 1.3
    assert lay.channel("vehicle")[80, 80] == 0, "the ego is drawn only in its own channel"
    with pytest.raises(IndexError, match="frame 50 outside scenario 'straight_road' of length 50"):
        BevRasterizer(Scenario.from_dict(road_dict), cfg)(50)


def test_real_frames(real_dir, tmp_path):
    ds = ScenarioDataset(real_dir, repair=True)
    for name in ds.names:
        sc = ds.load(name)
        r = BevRasterizer(sc)
        lay = r(sc.length // 2)
        drivable = lay.channel("drivable_area")
        assert drivable[95:105, 95:105].mean() > 0.5, f"{name}: the ego stands on drivable area"
        assert 0.05 < drivable.mean() < 0.9 and lay.channel("lane_centerline").sum() > 100
        assert lay.valid.sum() >= 1
        # every kept box is a real agent at that frame, within range, expressed in the ego frame
        t, ego = sc.length // 2, sc.ego_index
        for aid, box in zip(lay.agent_ids, lay.boxes.as_array()):
            if not aid:
                continue
            i = sc.tracks.index(aid)
            d = np.linalg.norm(sc.tracks.xy[i, t] - sc.tracks.xy[ego, t])
            assert np.hypot(box[0], box[1]) == pytest.approx(d, abs=1e-3)
    out = save_preview(lay, tmp_path / "p.png", title=name)
    from PIL import Image

    im = np.asarray(Image.open(out))
    assert im.shape[0] > 400 and im.shape[1] > 400 + 150  # 2x raster + legend column
    assert len(np.unique(im.reshape(-1, 3), axis=0)) > 8


def test_preview_colours_follow_channels(road_dict):
    lay = rasterize(Scenario.from_dict(road_dict), 0)
    img = preview_image(lay, scale=1, legend=False)
    r, c = _pixel(lay.config, 20.0, 0.0)
    assert tuple(img[r, c]) == (60, 200, 90)  # vehicle colour


def test_with_scenario_reuses_the_map_only_when_shared(road_dict_factory):
    """Successive snapshots share one map object: the flattened map is reused, the agents are not."""
    from dataclasses import replace

    a = Scenario.from_dict(road_dict_factory())
    moved = road_dict_factory()
    moved["tracks"]["lead"]["state"]["position"][:, 0] -= 10.0  # lead 10 m closer
    b = replace(Scenario.from_dict(moved), map_features=a.map_features)
    ra = BevRasterizer(a)
    rb = ra.with_scenario(b)
    assert rb._layers is ra._layers
    np.testing.assert_array_equal(rb(0).raster, BevRasterizer(b)(0).raster)
    assert not np.array_equal(rb(0).channel("vehicle"), ra(0).channel("vehicle"))
    other = Scenario.from_dict(road_dict_factory(ego_yaw=1.0))
    assert ra.with_scenario(other)._layers is not ra._layers
