"""Lane-relative motion (traffic.lanes, traffic.follow): routes along connected lanes, bounded offsets, IDM
yielding, red lights, crossing traffic."""

from __future__ import annotations

import numpy as np
import pytest

from sim_bridge.scenario import Scenario
from tests.conftest import make_straight_road_scenario
from traffic.follow import FollowConfig, follow_routes
from traffic.lanes import LaneGraph, build_routes, route_stops
from traffic.encoding import point_to_segments

R_TURN = 20.0


def _junction(length: int = 200, red_steps: int = 0) -> Scenario:
    """Lane A runs east 60 m to a junction at (60, 0); lane B turns left on a 20 m radius, lane C continues east.
    No ``exit_lanes``: the links must come from the geometry. A light on C shows stop for ``red_steps``."""
    d = make_straight_road_scenario(length=length, origin=(0.0, 0.0))
    a = np.stack([np.linspace(0, 60, 31), np.zeros(31)], -1)
    th = np.linspace(-np.pi / 2, 0, 25)
    b = np.stack([60 + R_TURN * np.cos(th), R_TURN + R_TURN * np.sin(th)], -1)
    c = np.stack([np.linspace(60, 140, 41), np.zeros(41)], -1)
    lane = lambda p: {"type": "LANE_SURFACE_STREET", "polyline": p, "speed_limit_kmh": 50.0}  # noqa: E731
    d["map_features"] = {"A": lane(a), "B": lane(b), "C": lane(c)}
    states = ["LANE_STATE_STOP"] * red_steps + ["LANE_STATE_GO"] * (length - red_steps)
    d["dynamic_map_states"] = {"C": {"type": "TRAFFIC_LIGHT", "lane": "C", "stop_point": np.array([60.0, 0.0, 0.0]),
                                     "state": {"object_state": states}}}
    d["tracks"] = {"ego": d["tracks"]["ego"]}  # the ego drives the right lane of the original road, far away
    d["tracks"]["ego"]["state"]["position"][:, 1] -= 200.0
    return Scenario.from_dict(d)


def _no_others(T: int):
    return np.zeros((0, T, 2)), np.zeros((0, T)), np.zeros((0, T, 2)), np.zeros((0, T), bool)


def test_links_come_from_geometry_and_routes_follow_the_guide():
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    a, b, c = (g.ids.index(k) for k in "ABC")
    assert sorted(g.succ[a]) == sorted([b, c]) and not g.succ[b] and not g.succ[c]
    th = np.linspace(-1.5, 0, 30)
    turn_guide = np.stack([60 + R_TURN * np.cos(th), R_TURN + R_TURN * np.sin(th)], -1)
    straight_guide = np.stack([np.linspace(40, 120, 40), np.zeros(40)], -1)
    r = build_routes(g, np.array([a, a]), np.array([10.0, 10.0]), 100.0, guides=[turn_guide, straight_guide])
    assert r.lanes[0] == [a, b] and r.lanes[1] == [a, c]
    assert r.xy[0, -1, 1] > 15 and abs(r.xy[1, -1, 1]) < 1e-6


def test_rollouts_stay_within_the_lateral_bound_of_a_lane():
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    rng = np.random.default_rng(0)
    n, T, cfg = 8, 260, FollowConfig()
    s0 = rng.uniform(0, 30, n)
    lat0 = rng.uniform(-1, 1, n) * cfg.max_lateral
    r = build_routes(g, np.full(n, g.ids.index("A")), s0, 200.0, guides=[None] * n, rng=rng)  # random branches
    xy, h, v, hit = follow_routes(r, np.full(n, 8.0), lat0, np.tile([4.5, 1.9], (n, 1)), np.full((n, T), 12.0),
                                  *_no_others(T), cfg=cfg, group=np.arange(n))  # each alone on the map
    dist = point_to_segments(xy.reshape(-1, 2), g.seg_a, g.seg_b)[2].min(1)
    assert dist.max() <= cfg.max_lateral + 0.05, dist.max()   # box smoothing on a 20 m radius: a few cm
    assert not hit.any() and v.max() <= 12.0 + 1e-6
    # they drive to the end of the mapped lanes and stop there, keeping IDM's jam gap to it
    room = r.length - 4.5 / 2
    travelled = np.linalg.norm(np.diff(xy, axis=1), axis=-1).sum(1)
    assert ((travelled <= room) & (travelled >= room - cfg.min_gap_m - 1.5)).all(), (travelled, room)
    assert (v[:, -1] < 0.05).all()
    assert {tuple(x) for x in r.lanes} == {(0, 1), (0, 2)}     # both branches taken by somebody
    # the turn's speed cap keeps the lateral acceleration within 3 m/s^2 (+ the cap's interpolation)
    curv = np.abs(np.diff(np.unwrap(h, axis=1), axis=1)) / 0.1          # yaw rate
    assert (curv * v[:, 1:]).max() <= 3.0 * 1.25


def test_yielding_to_a_stopped_car_decelerates_within_the_bound():
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    cfg, T = FollowConfig(), 200
    r = build_routes(g, np.array([g.ids.index("A")]), np.array([0.0]), 150.0,
                     guides=[np.stack([np.linspace(0, 130, 60), np.zeros(60)], -1)])
    stopped = np.broadcast_to(np.array([90.0, 0.0]), (1, T, 2)).copy()
    xy, h, v, hit = follow_routes(r, np.array([15.0]), np.zeros(1), np.array([[4.5, 1.9]]), np.full((1, T), 15.0),
                                  stopped, np.zeros((1, T)), np.full((1, T, 2), [4.5, 1.9]), np.ones((1, T), bool),
                                  cfg=cfg)
    acc = np.diff(v[0]) / 0.1
    assert not hit[0] and v[0, -1] < 0.05
    assert acc.min() >= -cfg.max_brake - 1e-9          # never a dead stop: braking is bounded
    assert acc.min() < -1.0                            # but it did brake
    gap = 90.0 - xy[0, -1, 0] - 4.5
    assert cfg.min_gap_m * 0.5 <= gap <= cfg.min_gap_m + 4.0, gap


def test_red_light_holds_the_stop_line_then_releases():
    red_steps, T = 120, 200
    sc = _junction(length=T, red_steps=red_steps)
    g = LaneGraph.from_scenario(sc)
    r = build_routes(g, np.array([g.ids.index("A")]), np.array([10.0]), 150.0,
                     guides=[np.stack([np.linspace(10, 130, 60), np.zeros(60)], -1)])
    stops, red = route_stops(r, g, sc)
    xy, h, v, hit = follow_routes(r, np.array([10.0]), np.zeros(1), np.array([[4.5, 1.9]]), np.full((1, T), 12.0),
                                  *_no_others(T), red=red, stops=stops)
    front = xy[0, :, 0] + 4.5 / 2
    assert front[:red_steps].max() <= 60.0 and v[0, red_steps - 1] < 0.1
    assert front[-1] > 70.0 and np.diff(v[0]).min() / 0.1 >= -FollowConfig().max_brake - 1e-9


@pytest.mark.parametrize("keep", [False, True])
def test_followers_do_not_run_into_replayed_traffic_or_each_other(keep):
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    n, T = 4, 150
    r = build_routes(g, np.full(n, g.ids.index("A")), np.array([30.0, 20.0, 10.0, 0.0]), 150.0,
                     guides=[np.stack([np.linspace(0, 130, 60), np.zeros(60)], -1)] * n)
    desired = np.tile(np.linspace(4.0, 14.0, T), (n, 1))
    desired[0] = 3.0  # a slow leader: everyone behind must queue
    others = _no_others(T)
    if keep:  # a replayed car crawling ahead of them all
        car = np.stack([60 + np.arange(T) * 0.1, np.zeros(T)], -1)[None]
        others = (car, np.zeros((1, T)), np.full((1, T, 2), [4.5, 1.9]), np.ones((1, T), bool))
    xy, h, v, hit = follow_routes(r, np.full(n, 5.0), np.zeros(n), np.tile([4.5, 1.9], (n, 1)), desired, *others)
    assert not hit.any()
    order = np.argsort(-xy[:, :, 0], axis=0)
    assert (order == np.arange(n)[:, None]).all()  # nobody overtakes inside one lane


def test_resampling_all_polylines_at_once_matches_one_at_a_time():
    """``resample_polylines`` (one pass over a whole map) gives what interpolating each polyline alone gives:
    points equally spaced along it, at most ``step`` apart, ends kept, repeated points dropped."""
    from traffic.lanes import resample_polylines

    def alone(pts: np.ndarray, step: float) -> np.ndarray:
        d = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        pts = pts[np.r_[True, d > 1e-6]]
        if len(pts) < 2:
            return pts
        s = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        q = np.linspace(0.0, s[-1], max(int(np.ceil(s[-1] / step)), 1) + 1)
        return np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], -1)

    rng = np.random.default_rng(0)
    lines = [np.cumsum(rng.normal(size=(int(rng.integers(2, 30)), 2)) * rng.uniform(0.05, 10), 0) for _ in range(200)]
    lines[3] = np.repeat(lines[3][:1], 4, 0)                         # one point, repeated
    lines[4] = np.r_[lines[4], lines[4][-1:], lines[4][-1:]]          # a repeated end
    lines[5] = np.array([[1.0, 2.0]])                                 # a single point
    lines[6] = np.array([[0.0, 0.0], [0.3, 0.0]])                     # shorter than a step
    for step in (0.7, 4.0):
        got = resample_polylines(lines, step)
        assert len(got) == len(lines)
        for ln, g in zip(lines, got):
            want = alone(ln, step)
            assert g.shape == want.shape
            np.testing.assert_allclose(g, want, atol=1e-9)
            if len(g) > 1:
                assert np.linalg.norm(np.diff(g, axis=0), axis=1).max() <= step + 1e-9


def test_routes_start_at_the_start_pose():
    """A route begins where its follower stands: the position smoothing keeps a straight start in place (edge
    padding had pulled every start ~0.55 m forward, a jump at a rollout's first step from its logged pose)."""
    from traffic.lanes import path_routes

    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    r = build_routes(g, np.array([g.ids.index("A")] * 2), np.array([0.0, 25.0]), 80.0)
    xy, _ = r.pose(np.zeros(2), np.array([0.0, 0.3]))
    assert np.abs(xy - [[0.0, 0.0], [25.0, 0.3]]).max() < 0.01, xy
    p = path_routes([np.array([[3.0, 4.0], [13.0, 4.0], [13.0, 14.0]])])
    assert np.abs(p.pose(np.zeros(1))[0] - [3.0, 4.0]).max() < 0.01 and not p.lanes[0]
    assert abs(p.length[0] - 20.0) < 0.5


def test_a_follower_off_the_lanes_keeps_its_path_and_brakes_for_what_stands_on_it():
    """Vehicles off the mapped lanes (a car park, an unmapped road) follow a free path (path_routes) with the
    same bounded gap keeping as lane followers."""
    from traffic.lanes import path_routes

    T = 150
    path = np.stack([np.linspace(0, 120, 121), np.full(121, 50.0)], -1)     # 50 m north of every lane
    r = path_routes([path])
    stopped = np.broadcast_to(np.array([70.0, 50.0]), (1, T, 2)).copy()
    xy, h, v, hit = follow_routes(r, np.array([10.0]), np.zeros(1), np.array([[4.5, 1.9]]), np.full((1, T), 10.0),
                                  stopped, np.zeros((1, T)), np.full((1, T, 2), [4.5, 1.9]), np.ones((1, T), bool))
    assert not hit[0] and v[0, -1] < 0.05 and np.abs(xy[0, :, 1] - 50.0).max() < 1e-6
    assert np.diff(v[0]).min() / 0.1 >= -FollowConfig().max_brake - 1e-9
    assert 70.0 - 4.5 - FollowConfig().min_gap_m - 2.0 <= xy[0, -1, 0] <= 70.0 - 4.5


def test_crossing_traffic_that_arrives_first_gets_the_right_of_way():
    """A car crossing the junction from the south reaches the crossing 0.5 s before the follower would: the
    follower gives way (bounded braking), then goes on; without the rule the two collide."""
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    T = 120
    r = build_routes(g, np.array([g.ids.index("A")]), np.array([25.0]), 110.0,
                     guides=[np.stack([np.linspace(25, 130, 60), np.zeros(60)], -1)])
    t = np.arange(T) * 0.1
    crossing = (np.stack([np.full(T, 60.0), -30.0 + 10.0 * t], -1)[None], np.full((1, T), np.pi / 2),
                np.full((1, T, 2), [4.5, 1.9]), np.ones((1, T), bool))
    run = lambda cfg: follow_routes(r, np.array([10.0]), np.zeros(1), np.array([[4.5, 1.9]]),  # noqa: E731
                                    np.full((1, T), 10.0), *crossing, cfg=cfg)
    xy, h, v, hit = run(FollowConfig())
    assert not hit[0] and v[0].min() < 8.0 and xy[0, -1, 0] > 70.0
    assert np.diff(v[0]).min() / 0.1 >= -FollowConfig().max_brake - 1e-9
    assert run(FollowConfig(yield_horizon_s=0.0))[3][0]


def test_routes_go_on_past_the_end_of_the_mapped_lanes_along_the_guide_only():
    """Lane C ends at x = 140 (no successor). A guide that drives on into an unmapped car park north-east of the
    lane end extends the route there with beyond_lanes; a guide that stops before the end, one that ends far
    from it, and beyond_lanes=False keep the route at the lane end."""
    sc = _junction()
    g = LaneGraph.from_scenario(sc)
    c = g.ids.index("C")
    on = np.stack([np.linspace(100, 140, 41), np.zeros(41)], -1)
    park = np.stack([np.linspace(141, 150, 10), np.linspace(1, 10, 10)], -1)
    into_park = np.concatenate([on, park])
    stops_short = on[:30]
    far_away = np.concatenate([on[:10], np.array([[120.0, 30.0], [130.0, 40.0]])])
    guides = [into_park, stops_short, far_away]
    r = build_routes(g, np.full(3, c), np.full(3, 30.0), 200.0, guides=guides, beyond_lanes=True)
    end = r.xy[:, -1]
    assert np.abs(end[0] - [150.0, 10.0]).max() < 1.0, end[0]
    assert abs(r.length[0] - (50.0 + 10 * np.sqrt(2))) < 1.5, r.length[0]  # from x = 90 on C
    for i in (1, 2):
        assert np.abs(end[i] - [140.0, 0.0]).max() < 0.5, (i, end[i])
    plain = build_routes(g, np.array([c]), np.array([30.0]), 200.0, guides=[into_park])
    assert np.abs(plain.xy[0, -1] - [140.0, 0.0]).max() < 0.5
