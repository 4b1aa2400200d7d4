"""Longitudinal motion along routes (:mod:`traffic.lanes`): IDM gap keeping, red lights, crossing traffic.

Each follower moves along its route with IDM-style gap keeping (Treiber et al. 2000) to whatever stands in its
corridor ahead (replayed agents, the ego, other followers, a red light's stop line, the end of the route) and
gives way to crossing traffic that reaches the crossing first; acceleration is bounded to [-``max_brake``,
``max_accel``], and the lateral offset from the route and the heading difference decay with the distance
travelled (a car only moves sideways, or turns, by driving).

Cost: :func:`follow_routes` is O(T x (N x (N + A)) x W) for N followers, A other agents and W corridor points
per follower (pairs beyond the look-ahead are culled first), vectorised over followers and agents per step;
the crossing rule is O(P) on the same pair list.

Letters: n follower, a other agent, r route point, t step, w window point, k stop line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_bridge.envs.factory import IDMConfig
from sim_bridge.geometry import boxes_overlap, wrap_angle
from traffic.lanes import DT, Routes

__all__ = ["FollowConfig", "follow_routes"]


@dataclass(frozen=True)
class FollowConfig(IDMConfig):
    """Longitudinal control along a route: the IDM terms of the batched simulator's traffic
    (:class:`sim_bridge.envs.factory.IDMConfig`: a, b, braking bound, headway, jam gap, look-ahead, corridor
    margin; here the corridor follows the route) plus the lateral bound."""

    max_lateral: float = 0.5
    """m: bound on the offset from the lane centre."""
    lateral_decay_m: float = 15.0
    """m travelled over which the start's offset from the lane centre decays (by 1/e)."""
    heading_decay_m: float = 5.0
    """m travelled over which the start's heading difference from the lane decays (by 1/e)."""
    yield_horizon_s: float = 4.0
    """s: crossing traffic. Where a follower's heading line crosses a moving body's (at more than 30 degrees)
    ahead of both, and the body gets there first within this horizon, the follower stops short of the
    crossing if it can at max_brake; 0 turns it off."""


def _yield_at_crossings(cfg: FollowConfig, pi, pj, rel, d2, ok, xy, h, v, size, ob_h, ob_v, ob_len, ob_hw, look,
                        gap, lead_v) -> None:
    """Lower ``gap`` (and ``lead_v`` to 0) of followers that must give way at a crossing, in place.

    Straight-line extrapolation of follower i (its heading) and body j (its heading, moving faster than 1
    m/s): the lines cross at a_i m ahead of i and b_j m ahead of j. i gives way when j reaches the crossing
    first (b_j / v_j < a_i / max(v_i, 2 m/s)), within yield_horizon_s, j's rear has not yet cleared it, and i
    can still stop short of it at max_brake; the crossing is then a standing obstacle beyond half j's width.
    Arrival times are the same figures from both sides, so of two followers one gives way.
    """
    c = np.flatnonzero(ok & (d2 <= look[pi] ** 2) & (ob_v[pj] > 1.0))
    if not len(c):
        return
    fi, oj = pi[c], pj[c]
    ci, si, cj, sj = np.cos(h[fi]), np.sin(h[fi]), np.cos(ob_h[oj]), np.sin(ob_h[oj])
    den = ci * sj - si * cj                                                    # sin of the heading difference
    r = rel[c]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (r[:, 0] * sj - r[:, 1] * cj) / den                                # i's distance to the crossing
        b = (r[:, 0] * si - r[:, 1] * ci) / den                                # j's
    t_j = b / ob_v[oj]
    room = a - size[fi, 0] / 2 - ob_hw[oj] - cfg.corridor_margin_m
    give = (np.abs(den) > 0.5) & (a > 0) & (b > -ob_len[oj]) & (t_j < cfg.yield_horizon_s) \
        & (t_j < a / np.maximum(v[fi], 2.0)) & (room > v[fi] ** 2 / (2 * cfg.max_brake))
    if give.any():
        np.minimum.at(gap, fi[give], room[give])
        at = give & (room <= gap[fi])
        lead_v[fi[at]] = 0.0


def follow_routes(routes: Routes, speed0: np.ndarray, lateral0: np.ndarray, size: np.ndarray,
                  desired_speed: np.ndarray, others_xy: np.ndarray, others_h: np.ndarray, others_size: np.ndarray,
                  others_valid: np.ndarray, others_speed: np.ndarray | None = None,
                  red: np.ndarray | None = None, stops: tuple[np.ndarray, np.ndarray] | None = None,
                  cfg: FollowConfig = FollowConfig(), group: np.ndarray | None = None,
                  others_group: np.ndarray | None = None, heading0: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drive N followers along their routes for T steps (step 0 = the start pose), keeping gaps.

    Several scenes go in one call (their followers and agents concatenated, ``group`` / ``others_group``
    naming each one's scene): bodies only interact within a scene, and the per-step numpy work is shared.

    Each step, per follower: the leader is the nearest agent ahead whose centre lies in the corridor (the
    route widened by both half widths) within the look-ahead: replayed agents at that step, other
    followers at their previous pose, a red light's stop line (``red`` [K_lights, T] with ``stops`` from the
    routes' controlled lanes), the end of the route, or a crossing where crossing traffic arrives first
    (:func:`_yield_at_crossings`). Acceleration = min(desired, IDM interaction) clipped to [-max_brake,
    max_accel], with desired = (desired_speed - v) / 1 s.

    Args:
        routes: from :func:`traffic.lanes.build_routes` or :func:`traffic.lanes.path_routes`; speed0 [N] m/s;
        lateral0 [N] m, the start's offset from the lane centre (callers placing new vehicles clip it to
        ``cfg.max_lateral``), decaying over lateral_decay_m;
        size [N, 2] (length, width); desired_speed [N, T] m/s; others_* [A, T, ...] agents that do not react
        (world); others_speed [A, T] (default: from positions); group [N], others_group [A] int scene
        indices (default: one scene); heading0 [N] the start heading (default: the lane's), whose difference
        from the lane's decays over heading_decay_m.
    Returns:
        xy [N, T, 2], heading [N, T], speed [N, T], hit bool [N]: whether the follower's box overlaps another
        agent's (or a higher-priority follower's, i.e. one of lower index) at some step.
    """
    n, T = len(speed0), desired_speed.shape[1]
    xy_out, h_out, v_out = np.zeros((n, T, 2)), np.zeros((n, T)), np.zeros((n, T))
    hit = np.zeros(n, bool)
    if n == 0:
        return xy_out, h_out, v_out, hit
    a_cnt = len(others_xy)
    if others_speed is None:
        others_speed = np.zeros(others_valid.shape)
        if others_xy.shape[1] > 1:
            others_speed[:, 1:] = np.linalg.norm(np.diff(others_xy, axis=1), axis=-1) / DT
            others_speed[:, 0] = others_speed[:, 1]
    lat0 = np.asarray(lateral0, np.float64)
    dh0 = np.zeros(n) if heading0 is None else wrap_angle(heading0 - routes.heading[:, 0])
    s, v = np.zeros(n), np.maximum(speed0, 0.0)
    half_w, rad = size[:, 1] / 2, np.sqrt((size ** 2).sum(-1)) / 2
    o_rad = np.sqrt((others_size ** 2).sum(-1)) / 2                                        # [a, T]
    stride = max(int(round(4.0 / routes.ds)), 1)  # corridor window points 4 m apart, refined on their segments
    rows = np.arange(n)
    group = np.zeros(n, int) if group is None else np.asarray(group)
    others_group = np.zeros(a_cnt, int) if others_group is None else np.asarray(others_group)
    # the (follower, body) pairs that can interact: same scene, not itself; bodies = replayed agents then
    # followers. Fixed for the whole rollout, so every step works on flat pair lists: O(sum over scenes of
    # n_s (a_s + n_s)) instead of the full [n, a + n] block of a multi-scene batch.
    pi, pj = np.nonzero(group[:, None] == np.concatenate([others_group, group])[None])
    keep = pj != a_cnt + pi
    pi, pj = pi[keep], pj[keep]
    prio = (pj < a_cnt) | (pj - a_cnt < pi)  # collisions count against replayed agents and higher-priority followers
    n_r = routes.xy.shape[1]
    rxy, rh = routes.xy.reshape(-1, 2), routes.heading.reshape(-1)
    stop_s, stop_light = stops if stops is not None else (np.full((n, 1), np.inf), np.full((n, 1), -1))
    for t in range(T):
        lat = lat0 * np.exp(-s / cfg.lateral_decay_m)
        xy, h = routes.pose(s, lat)
        h = wrap_angle(h + dh0 * np.exp(-s / cfg.heading_decay_m))
        xy_out[:, t], h_out[:, t], v_out[:, t] = xy, h, v
        # every body at this step: replayed agents, then the followers
        ob_xy = np.concatenate([others_xy[:, t], xy])
        ob_h = np.concatenate([others_h[:, t], h])
        ob_len = np.concatenate([others_size[:, t, 0], size[:, 0]])
        ob_hw = np.concatenate([others_size[:, t, 1], size[:, 1]]) / 2
        ob_rad = np.concatenate([o_rad[:, t], rad])
        ob_ok = np.concatenate([others_valid[:, t], np.ones(n, bool)])
        rel = ob_xy[pj] - xy[pi]                                                           # [P, 2]
        d2 = (rel ** 2).sum(-1)
        ok = ob_ok[pj]
        # collisions: with replayed agents, and with followers of lower index (they have priority)
        near = np.flatnonzero(ok & prio & (d2 <= (rad[pi] + ob_rad[pj]) ** 2))
        if len(near):
            i, j = pi[near], pj[near]
            ov = boxes_overlap(xy[i], h[i], size[i], ob_xy[j], ob_h[j], np.stack([ob_len[j], 2 * ob_hw[j]], -1))
            hit[i[ov]] = True
        if t == T - 1:
            break
        # leaders: bodies near and not behind, projected on each follower's route ahead
        ob_v = np.concatenate([others_speed[:, t], v])
        look = cfg.lookahead_m + 3.0 * v                                                   # [n]
        # a cone ahead (lateral <= 4 m + 0.7 x longitudinal) holds every point a route reaches without a U-turn
        lon = rel[:, 0] * np.cos(h)[pi] + rel[:, 1] * np.sin(h)[pi]
        lat_ = np.abs(rel[:, 1] * np.cos(h)[pi] - rel[:, 0] * np.sin(h)[pi])
        c = np.flatnonzero(ok & (d2 <= (look[pi] + 5.0) ** 2) & (lon > -5.0) & (lat_ <= 4.0 + 0.7 * np.maximum(lon, 0)))
        gap = np.full(n, np.inf)
        lead_v = np.zeros(n)
        if len(c):
            fi, oj = pi[c], pj[c]
            p_ = np.arange(len(fi))
            # the route's arc length to a point is at least the straight distance (less 3 m of slack) and, in
            # the cone, at most 1.6x it: search that stretch only
            d = np.sqrt(d2[c])
            base = np.floor(s[fi] / routes.ds).astype(int) + stride * np.floor(np.maximum(d - 3.0, 0) / (
                stride * routes.ds)).astype(int)
            w_win = int(np.ceil((0.6 * d.max() + 8.0) / (stride * routes.ds))) + 2
            widx = np.minimum(base[:, None] + stride * np.arange(w_win)[None], n_r - 1)        # [P, W]
            flat = fi[:, None] * n_r + widx
            q = ob_xy[oj]
            wd = ((rxy[flat] - q[:, None]) ** 2).sum(-1)                                      # [P, W]
            k = np.argmin(wd, 1)
            # refine on the two coarse segments around the nearest coarse point
            a_i, b_i = widx[p_, np.maximum(k - 1, 0)], widx[p_, np.minimum(k + 1, w_win - 1)]
            a_pt, b_pt = rxy[fi * n_r + a_i], rxy[fi * n_r + b_i]
            ab = b_pt - a_pt
            u = np.clip(((q - a_pt) * ab).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-9), 0, 1)
            dist = np.sqrt(((a_pt + u[:, None] * ab - q) ** 2).sum(-1))
            r_ob = a_i + u * (b_i - a_i)
            s_ob = r_ob * routes.ds
            rel_h = np.abs(wrap_angle(ob_h[oj] - rh[fi * n_r + np.round(r_ob).astype(int)]))
            aligned = (rel_h < np.pi / 4) | (rel_h > 3 * np.pi / 4)
            inside = (dist <= half_w[fi] + np.where(aligned, ob_hw[oj], ob_rad[oj]) + cfg.corridor_margin_m) \
                & (s_ob > s[fi]) & (s_ob - s[fi] <= look[fi]) & (s_ob < routes.length[fi] + 1e-6)
            g = s_ob - s[fi] - size[fi, 0] / 2 - np.where(aligned, ob_len[oj] / 2, ob_rad[oj])
            g = np.where(inside, g, np.inf)
            np.minimum.at(gap, fi, g)
            is_lead = inside & (g <= gap[fi])
            lead_v[fi[is_lead]] = np.maximum(ob_v[oj[is_lead]] * np.cos(rel_h[is_lead]), 0.0)
        if cfg.yield_horizon_s > 0:  # crossing traffic: O(P) over the same pairs
            _yield_at_crossings(cfg, pi, pj, rel, d2, ok, xy, h, v, size, ob_h, ob_v, ob_len, ob_hw, look, gap, lead_v)
        # the end of the mapped route and red lights are standing obstacles
        end_gap = routes.length - s - size[:, 0] / 2
        use = end_gap < gap
        gap, lead_v = np.where(use, end_gap, gap), np.where(use, 0.0, lead_v)
        if red is not None:
            is_red = np.where(stop_light >= 0, red[np.maximum(stop_light, 0), min(t + 1, red.shape[1] - 1)], False)
            sg = np.where(is_red & (stop_s - s[:, None] > size[:, :1] / 2), stop_s - s[:, None] - size[:, :1] / 2,
                          np.inf).min(1)
            use = sg < gap
            gap, lead_v = np.where(use, sg, gap), np.where(use, 0.0, lead_v)
        # the curvature cap here and 1 s ahead (the speed follows its target with a 1 s time constant)
        last_r = routes.speed_cap.shape[1] - 1
        f0 = np.clip(s / routes.ds, 0, last_r).astype(int)
        f1 = np.clip((s + v * 1.0) / routes.ds, 0, last_r).astype(int)
        cap = np.minimum(routes.speed_cap[rows, f0], routes.speed_cap[rows, f1])
        want = (np.minimum(np.maximum(desired_speed[:, t + 1], 0.0), cap) - v) / 1.0
        s_star = cfg.min_gap_m + np.maximum(0.0, v * cfg.headway_s
                                            + v * (v - lead_v) / (2 * np.sqrt(cfg.max_accel * cfg.comfort_brake)))
        inter = cfg.max_accel * (1 - (s_star / np.maximum(gap, 0.1)) ** 2)
        acc = np.clip(np.minimum(want, np.where(np.isfinite(gap), inter, np.inf)), -cfg.max_brake, cfg.max_accel)
        v_new = np.maximum(v + acc * DT, 0.0)
        s = np.minimum(s + (v + v_new) / 2 * DT, np.maximum(routes.length - size[:, 0] / 2, s))
        v = v_new
    return xy_out, h_out, v_out, hit
