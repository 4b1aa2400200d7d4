"""record_rollout / draw_route / save_animation: BEV animations of a live MetaDrive episode."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bevgen.layout import BevRasterizer
from bevgen.preview import colorize
from bevgen.rollout import MissingEncoderError, ROUTE_COLOR, draw_route, save_animation
from sim_bridge.scenario import Scenario

STEPS = 30
CYAN = np.array(ROUTE_COLOR, np.uint8)


def _cyan(img: np.ndarray) -> np.ndarray:
    return (img == CYAN).all(-1)


@pytest.fixture(scope="module")
def rollout():
    from bevgen.rollout import record_rollout
    from sim_bridge.envs.factory import EnvConfig, make_env

    env = make_env(EnvConfig(data="procedural", num_scenarios=1, procedural_map_blocks=2,
                             procedural_traffic_density=0.2, horizon=100))
    try:
        yield record_rollout(env, lambda obs: np.array([0.0, 0.5]), STEPS, seed=0)
    finally:
        env.close()


@pytest.mark.metadrive
def test_rollout_has_one_frame_per_step_and_the_ego_moves(rollout):
    res = rollout
    assert res.steps == STEPS and not (res.terminated or res.truncated)
    assert res.frames.dtype == np.uint8 and res.frames.shape[0] == STEPS and res.frames.shape[-1] == 3
    np.testing.assert_array_equal(res.frame_steps, np.arange(1, STEPS + 1))
    assert len(res.infos) == STEPS and np.isfinite(res.total_reward)
    assert np.linalg.norm(res.ego_poses[-1, :2] - res.ego_poses[0, :2]) > 2.0
    # The map slides under the ego: the raster part (below the title bar, left of the legend) changes.
    body = res.frames[:, 22:, :400]
    assert (body[0] != body[-1]).any(-1).mean() > 0.01


@pytest.mark.metadrive
def test_rollout_frames_show_route_ego_and_traffic(rollout):
    body = rollout.frames[:, 22:, :400]
    assert all(_cyan(f).sum() > 50 for f in body)
    assert rollout.route.shape[1] == 2 and len(rollout.route) >= 2
    ego = (body == np.array([250, 220, 40], np.uint8)).all(-1)
    assert ego[:, 190:210, 190:210].any(axis=(1, 2)).all()  # the ego is drawn at the centre


@pytest.mark.metadrive
def test_gif_has_every_frame(rollout, tmp_path):
    from PIL import Image

    path = save_animation(rollout.frames, tmp_path / "rollout.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == STEPS
        assert im.size == (rollout.frames.shape[2], rollout.frames.shape[1])


def test_draw_route_follows_the_world_geometry(road_dict):
    """A route along the ego's lane is drawn straight up through the raster centre; a far one is not drawn."""
    sc = Scenario.from_dict(road_dict)
    layout = BevRasterizer(sc)(0)  # ego at u=0 in the right lane, heading along +x (road yaw 0)
    ego = sc.tracks.position[sc.ego_index, 0, :2]
    route = ego + np.stack([np.linspace(-20, 40, 31), np.zeros(31)], -1)
    for scale in (1, 2):
        img = draw_route(colorize(layout, scale), layout, route, scale)
        ys, xs = np.nonzero(_cyan(img))
        size = layout.config.size * scale
        assert len(xs) > 0 and np.abs(xs - (size / 2 - 0.5)).max() <= scale  # the centre column
        assert ys.min() <= (size / 2 - 40 / 0.5 * scale) + scale  # reaches 40 m ahead (up)
        assert ys.max() >= (size / 2 + 20 / 0.5 * scale) - scale - 1  # and 20 m behind
    far = ego + np.array([[500.0, 500.0], [600.0, 500.0]])
    assert not _cyan(draw_route(colorize(layout), layout, far)).any()


def test_save_animation_refuses_bad_input(tmp_path):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown animation format"):
        save_animation(frames, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="no frames"):
        save_animation([], tmp_path / "a.gif")


def test_save_animation_mp4_falls_back_to_opencv(tmp_path, monkeypatch):
    """Without imageio-ffmpeg the MP4 goes through OpenCV (odd sides padded even); with neither: a clear error."""
    import bevgen.rollout as ro

    frames = np.random.default_rng(0).integers(0, 255, (4, 15, 21, 3), dtype=np.uint8)
    monkeypatch.setattr(ro, "_write_mp4_imageio", lambda *a: False)
    if importlib.util.find_spec("cv2") is not None:
        import cv2

        path = save_animation(frames, tmp_path / "a.mp4", fps=5)
        cap = cv2.VideoCapture(str(path))
        try:
            assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
            assert (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))) == (16, 22)
        finally:
            cap.release()
    monkeypatch.setattr(ro, "_write_mp4_opencv", lambda *a: False)
    with pytest.raises(MissingEncoderError, match=r"\.gif"):
        save_animation(frames, tmp_path / "b.mp4")
