"""TrafficGen-style models on the shared real scenes: training reduces the losses, placements sit on
lanes without overlaps, trajectories obey the kinematic bounds, sampling is batched and seeded."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("einops")

from shapely.geometry import Polygon  # noqa: E402

from traffic.model import TINY, PlacementModel, TrajectoryModel, obb_overlap  # noqa: E402
from traffic.model.placement import LENGTH_RANGE, WIDTH_RANGE  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-scenarios"
pytestmark = pytest.mark.skipif(not REAL_DIR.exists(), reason=f"real scenarios not found at {REAL_DIR}")
STEPS = 30


def _wrap(a):
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Intra-op threads fight over the cores when `make test` runs two xdist workers (4x slower on 2
    cores); one thread per worker keeps this module near 13 s. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch():
    """The 7 real scenes encoded at t0 = 0 and t0 = 10: 14 scenes (nearest 256 map vectors, for speed)."""
    from sim_bridge.dataset import ScenarioDataset
    from traffic.encoding import EncodingConfig, collate, encode_scene

    ds = ScenarioDataset(REAL_DIR, repair=True)
    scenes = [ds.load(n) for n in ds.names]
    cfg = EncodingConfig(max_vectors=256)
    return collate([encode_scene(sc, t0, cfg) for t0 in (0, 10) for sc in scenes])


def _train(model, loss_fn):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    curve = []
    for _ in range(STEPS):
        loss = loss_fn()["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return model.eval(), curve


@pytest.fixture(scope="module")
def placement(batch):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = PlacementModel(TINY)
    return _train(model, lambda: model.loss(batch, generator=g))


@pytest.fixture(scope="module")
def trajectory(batch):
    torch.manual_seed(0)
    model = TrajectoryModel(TINY)
    return _train(model, lambda: model.loss(batch))


def _first(batch, n=7):
    return {k: v[:n] for k, v in batch.items()}


def _mean(xs):
    return sum(xs) / len(xs)


def test_placement_loss_decreases(placement, batch):
    _, curve = placement
    assert all(math.isfinite(c) for c in curve)
    assert _mean(curve[-5:]) < 0.8 * _mean(curve[:5]), curve
    parts = placement[0].loss(batch, generator=torch.Generator().manual_seed(1))
    assert set(parts) == {"total", "occupancy", "attributes"}


def test_trajectory_loss_decreases(trajectory, batch):
    _, curve = trajectory
    assert all(math.isfinite(c) for c in curve)
    assert _mean(curve[-5:]) < 0.9 * _mean(curve[:5]), curve
    assert set(trajectory[0].loss(batch)) == {"total", "regression", "classification"}


def _box_polygon(row):
    x, y, h, _, _, length, width = row.tolist()
    c, s = math.cos(h), math.sin(h)
    return Polygon([(x + c * u - s * v, y + s * u + c * v)
                    for u, v in ((length / 2, width / 2), (-length / 2, width / 2),
                                 (-length / 2, -width / 2), (length / 2, -width / 2))])


def test_placements_lie_on_lanes_without_overlaps(placement, batch):
    model, _ = placement
    b = _first(batch)
    ego_only = torch.zeros_like(b["agent_mask"])
    ego_only[:, 0] = True
    out = model.sample(b, 24, generator=torch.Generator().manual_seed(0), context=ego_only)
    state, valid, lane = out.agent_state, out.valid, out.lane
    assert state.shape == (7, 24, 7) and valid.shape == lane.shape == (7, 24)
    assert valid.sum() >= 0.8 * valid.numel()

    on_lane, total = 0, 0
    for i in range(7):
        rows = state[i, valid[i]]
        pts = b["map_pts"][i, b["lane_mask"][i]]  # [L, 2, 2]
        a, d = pts[:, 0], pts[:, 1] - pts[:, 0]
        rel = rows[:, None, :2] - a[None]
        t = ((rel * d).sum(-1) / (d * d).sum(-1).clamp(min=1e-9)).clamp(0, 1)
        dist = (rel - t[..., None] * d).norm(dim=-1)  # [P, L]
        dh = _wrap(rows[:, None, 2] - torch.atan2(d[:, 1], d[:, 0])[None]).abs()
        on_lane += int(((dist <= 2.5) & (dh <= 0.5)).any(1).sum())
        total += len(rows)
        # no overlaps among the placed boxes and the ego (independent check with shapely)
        boxes = [_box_polygon(r) for r in torch.cat([b["agent_state"][i, :1], rows])]
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                assert not boxes[j].intersects(boxes[k]), (i, j, k)
        assert lane[i, valid[i]].unique().numel() == int(valid[i].sum())  # one vehicle per lane vector
        assert bool(b["lane_mask"][i, lane[i, valid[i]]].all())
    assert on_lane > 0.9 * total, (on_lane, total)
    placed = state[valid]
    assert placed[:, 5].min() >= LENGTH_RANGE[0] and placed[:, 5].max() <= LENGTH_RANGE[1]
    assert placed[:, 6].min() >= WIDTH_RANGE[0] and placed[:, 6].max() <= WIDTH_RANGE[1]
    assert placed[:, 3:5].norm(dim=-1).max() <= 28.0  # speed limits here are <= 100 km/h


def test_obb_overlap_matches_geometry():
    a = torch.tensor([0.0, 0.0, 0.0, 4.0, 2.0])
    cases = {(3.0, 0.0, 0.0): True, (4.5, 0.0, 0.0): False, (0.0, 2.5, 0.0): False,
             (3.5, 2.3, math.pi / 4): True, (4.0, 0.0, math.pi / 2): False}
    for (x, y, h), want in cases.items():
        b = torch.tensor([x, y, h, 4.0, 2.0])
        assert bool(obb_overlap(a, b)) == want == bool(obb_overlap(b, a)), (x, y, h)
    assert bool(obb_overlap(a, torch.tensor([4.2, 0.0, 0.0, 4.0, 2.0]), margin=0.3))


def _check_kinematics(start, traj, cfg, eps):
    """start [b, a, 7] agent_state, traj [b, a, ..., h, 3] -> asserts the bounds by finite differences."""
    extra = traj.dim() - 4
    start = start.reshape(*start.shape[:2], *[1] * extra, 7).expand(*traj.shape[:-2], 7)
    xy = torch.cat([start[..., None, :2], traj[..., :2]], -2)
    heading = torch.cat([start[..., None, 2], traj[..., 2]], -1)
    step = xy.diff(dim=-2)
    speed = torch.cat([start[..., None, 3:5].norm(dim=-1), step.norm(dim=-1) / cfg.dt], -1)
    accel = speed.diff(dim=-1) / cfg.dt
    yaw_rate = _wrap(heading.diff(dim=-1)) / cfg.dt
    assert accel.abs().max() <= cfg.max_accel + eps
    assert yaw_rate.abs().max() <= cfg.max_yaw_rate + eps
    moving = speed[..., 1:] > 1.0
    assert moving.any()
    motion = torch.atan2(step[..., 1], step[..., 0])
    assert _wrap(motion - heading[..., 1:])[moving].abs().max() <= eps


def test_trajectories_respect_kinematic_bounds(trajectory, batch):
    model, _ = trajectory
    cfg = model.cfg
    b = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    m64 = copy.deepcopy(model).double()  # float64 makes the finite-difference check exact to 1e-6
    traj, logits = m64(b)
    mask = b["agent_mask"]
    assert traj.shape == (14, 64, cfg.modes, cfg.horizon, 3) and logits.shape == (14, 64, cfg.modes)
    _check_kinematics(b["agent_state"][mask][None], traj[mask][None], cfg, eps=1e-6)

    roll = m64.rollout(b, steps=90)
    assert roll.shape == (14, 64, 90, 3) and bool(roll.isfinite().all())
    _check_kinematics(b["agent_state"][mask][None], roll[mask][None], cfg, eps=1e-6)

    roll32 = model.rollout(_first(batch), steps=90, generator=torch.Generator().manual_seed(0), sample_modes=True)
    assert roll32.shape == (7, 64, 90, 3) and roll32.dtype == torch.float32 and bool(roll32.isfinite().all())
    assert bool((roll32[~batch["agent_mask"][:7]] == 0).all())


def test_sample_handles_per_scene_counts(placement, batch):
    model, _ = placement
    b = _first(batch)
    num_new = torch.tensor([0, 3, 1, 5, 2, 4, 6])
    out = model.sample(b, num_new, generator=torch.Generator().manual_seed(3))
    assert out.agent_state.shape == (7, 6, 7)
    counts = out.valid.sum(1)
    assert bool((counts <= num_new).all()) and counts[0] == 0 and counts.sum() >= 0.8 * num_new.sum()
    beyond = torch.arange(6)[None] >= num_new[:, None]
    assert not bool(out.valid[beyond].any()) and bool((out.lane[beyond] == -1).all())
    # new vehicles keep clear of every existing agent too
    for i in range(7):
        new = out.agent_state[i, out.valid[i]]
        old = b["agent_state"][i, b["agent_mask"][i]]
        assert not bool(obb_overlap(new[:, None], old[None]).any())


def test_seeded_sampling_is_reproducible(placement, trajectory, batch):
    model, _ = placement
    b = _first(batch)
    run = lambda seed: model.sample(b, 4, generator=torch.Generator(device="cpu").manual_seed(seed))  # noqa: E731
    a, again, other = run(11), run(11), run(12)
    for k in ("agent_state", "valid", "lane"):
        assert torch.equal(getattr(a, k), getattr(again, k)), k
    assert not torch.equal(a.agent_state, other.agent_state)
    losses = [model.loss(b, generator=torch.Generator().manual_seed(5))["total"].item() for _ in range(2)]
    assert losses[0] == losses[1]
    traj = trajectory[0]
    r = [traj.rollout(b, 40, generator=torch.Generator().manual_seed(2), sample_modes=True) for _ in range(2)]
    assert torch.equal(r[0], r[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_models_follow_the_input_device(placement, trajectory, batch):
    dev = torch.device("cuda")
    b = {k: v.to(dev) for k, v in _first(batch).items()}
    pm, tm = copy.deepcopy(placement[0]).to(dev), copy.deepcopy(trajectory[0]).to(dev)
    out = pm.sample(b, 3, generator=torch.Generator(device=dev).manual_seed(0))
    assert out.agent_state.device.type == "cuda" and bool(out.valid.any())
    assert pm.loss(b, generator=torch.Generator(device=dev).manual_seed(0))["total"].isfinite()
    roll = tm.rollout(b, 30, generator=torch.Generator(device=dev).manual_seed(0), sample_modes=True)
    assert roll.device.type == "cuda" and bool(roll.isfinite().all())


def test_hidden_agents_change_no_placement_prediction(placement, batch):
    """``sample`` gives the encoder only the context agents (a placement step then costs M + C + n tokens,
    not M + A + N): agents outside the context are masked keys, so leaving their rows out changes nothing."""
    model, _ = placement
    b = _first(batch)
    ctx = b["agent_mask"].clone()
    ctx[:, 1:] = False  # the ego alone, as `traffic generate` places from
    with torch.no_grad():
        full = model(b, b["agent_state"], b["agent_type"], ctx)
        ego = model(b, b["agent_state"][:, :1], b["agent_type"][:, :1], ctx[:, :1])
    for k in full:
        torch.testing.assert_close(full[k], ego[k], atol=1e-4, rtol=1e-4)


def test_agent_hist_is_the_velocity_change_over_the_last_second():
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.geometry import vectors_to_frame
    from traffic.encoding import HIST_STEPS, EncodingConfig, encode_scene

    ds = ScenarioDataset(REAL_DIR, repair=True)
    sc = ds.load(ds.names[0])
    cfg = EncodingConfig(max_vectors=64)
    e0, e = encode_scene(sc, 0, cfg), encode_scene(sc, 15, cfg)
    assert not e0["agent_hist"].any()  # no second of history at the first frame
    rows = e["agent_index"][e["agent_mask"]]
    tr = sc.tracks
    want = vectors_to_frame(tr.velocity[rows, 15] - tr.velocity[rows, 15 - HIST_STEPS], e["origin"][2])
    back = tr.valid[rows, 15 - HIST_STEPS]
    assert back.any()
    assert abs(e["agent_hist"][:len(rows)][back] - want[back]).max() < 1e-4
    assert not e["agent_hist"][:len(rows)][~back].any() and not e["agent_hist"][len(rows):].any()


def test_trajectory_model_learns_from_the_history(batch):
    """Futures that depend on the last second only (each agent keeps accelerating as it did: +-2 m/s^2 along its
    heading, same present state) are learnt with the history input and not without it."""
    b = _first(batch)
    g = torch.Generator().manual_seed(0)
    accel = 2.0 * torch.sign(torch.rand(b["agent_mask"].shape, generator=g) - 0.5)           # [b, a]
    st = b["agent_state"]
    heading, speed = st[..., 2], st[..., 3:5].norm(dim=-1)
    t = 0.1 * torch.arange(1, TINY.horizon + 1)
    s = (speed[..., None] * t + 0.5 * accel[..., None] * t ** 2).clamp(min=0)                 # [b, a, h]
    future = torch.stack([st[..., 0:1] + s * heading.cos()[..., None], st[..., 1:2] + s * heading.sin()[..., None],
                          heading[..., None].expand_as(s)], -1)
    direction = torch.stack([heading.cos(), heading.sin()], -1)
    synth = dict(b, future=future, future_mask=b["agent_mask"][..., None].expand_as(s).clone(),
                 agent_hist=accel[..., None] * direction)
    final = {}
    for name, hist in (("with", synth["agent_hist"]), ("without", torch.zeros_like(synth["agent_hist"]))):
        torch.manual_seed(0)
        model = TrajectoryModel(TINY)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        data = dict(synth, agent_hist=hist)
        for _ in range(120):
            loss = model.loss(data)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # the error of the most likely mode (picking the branch is what history tells)
            traj, logits = model(data)
            top = traj.gather(2, logits.argmax(-1)[..., None, None, None].expand(-1, -1, 1, *traj.shape[3:]))[:, :, 0]
            err = (top[..., :2] - future[..., :2]).norm(dim=-1).mean(-1)
        final[name] = err[b["agent_mask"]].mean().item()
    assert final["with"] < 0.5 * final["without"], final


def test_cosine_schedule_warms_up_decays_to_its_floor_and_resumes_mid_schedule():
    from traffic.train import TrafficTrainConfig, lr_factor

    cos, const = TrafficTrainConfig(steps=200, schedule="cosine"), TrafficTrainConfig(steps=200, schedule="constant")
    f = np.array([lr_factor(cos, s) for s in range(200)])
    assert f[0] == pytest.approx(0.05) and int(np.argmax(f)) == 19 and f[19] > 0.95 and f[-1] == pytest.approx(0.05)
    assert np.all(np.diff(f[19:]) <= 1e-12)  # decays after the warm-up
    assert [lr_factor(const, s) for s in (0, 19, 199)] == [0.05, 1.0, 1.0]
    # a resumed run's scheduler continues from the saved step (train() offsets its LambdaLR by the start step)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cos, 120 + s))
    assert opt.param_groups[0]["lr"] == pytest.approx(f[120])
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(f[121])
    with pytest.raises(ValueError, match="schedule"):
        TrafficTrainConfig(schedule="linear")


def test_a_rotated_or_mirrored_batch_is_the_same_scene_in_another_frame(batch):
    """transform_batch (the training's symmetry augmentation) moves every geometric field with the frame: each
    vehicle keeps its lateral offset (sign flipped by a mirror) and heading to its lane vector, futures keep
    their heading along their motion, and a mirror applied twice or a rotation undone gives the batch back."""
    from traffic.encoding import point_to_segments, transform_batch

    b = _first(batch, 4)
    angle, mirror = torch.tensor([0.7, -2.0, 3.0, 0.0]), torch.tensor([True, False, True, False])
    t = transform_batch(b, angle, mirror)
    sign = 1.0 - 2.0 * mirror.float()
    for i in range(4):
        lane = b["agent_lane"][i]
        rows = (lane >= 0).nonzero().flatten().numpy()
        assert len(rows)
        pts, st = t["map_pts"][i].numpy(), t["agent_state"][i].numpy()
        _, lat, _ = point_to_segments(st[rows, :2], pts[lane[rows], 0], pts[lane[rows], 1])
        lat = lat[np.arange(len(rows)), np.arange(len(rows))]
        assert np.abs(lat - sign[i].item() * b["lane_offset"][i, rows, 1].numpy()).max() < 1e-3
        vec_heading = torch.atan2(t["map_feats"][i, lane[rows], 5], t["map_feats"][i, lane[rows], 4])
        rel = _wrap(t["agent_state"][i, rows, 2] - vec_heading - t["lane_offset"][i, rows, 2])
        assert rel.abs().max() < 1e-4
        assert torch.allclose(t["map_pts"][i].flatten(-2) / 50.0, t["map_feats"][i, :, :4], atol=1e-5)
    f, fm = t["future"], t["future_mask"]
    step = f[:, :, 1:, :2] - f[:, :, :-1, :2]
    moving = fm[:, :, 1:] & fm[:, :, :-1] & (step.norm(dim=-1) > 0.3)
    assert moving.sum() > 50
    assert _wrap(torch.atan2(step[..., 1], step[..., 0]) - f[:, :, 1:, 2])[moving].abs().median() < 0.05
    back = transform_batch(t, torch.where(mirror, angle, -angle), mirror)  # a mirror is its own inverse
    m = b["agent_mask"]
    cols = [0, 1, 3, 4, 5, 6]
    assert torch.allclose(back["agent_state"][m][:, cols], b["agent_state"][m][:, cols], atol=1e-4)
    assert _wrap(back["agent_state"][m][:, 2] - b["agent_state"][m][:, 2]).abs().max() < 1e-4
    assert torch.allclose(back["map_pts"], b["map_pts"], atol=1e-3)
    assert torch.allclose(back["future"][..., :2], b["future"][..., :2], atol=1e-3)
    assert torch.allclose(back["lane_offset"], b["lane_offset"])
