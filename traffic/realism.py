"""Sim-agent realism: a WOSAC-style meta-metric (Waymo Open Sim Agents Challenge, Montali et al. 2023; 2025
weights) over rollouts of every agent of a scene (``traffic.sim_agents`` makes them).

R rollouts of every simulated agent from the current frame; per agent and feature, the likelihood of the
logged future under a histogram of the rollouts; the meta-metric is the weighted mean of the per-feature
likelihoods. The drivable area and the units are those of :mod:`traffic.metrics` (world frame metres,
radians, 10 Hz). Definitions in :func:`realism_features` and :func:`sim_agent_realism`.

Letters: R rollout, A agent, F future step, K stop line.
"""

from __future__ import annotations

import numpy as np

from sim_bridge.geometry import boxes_overlap, wrap_angle
from sim_bridge.scenario import Scenario
from traffic.lanes import RED_STATES
from traffic.metrics import DT, on_road

__all__ = ["REALISM_WEIGHTS", "REALISM_BINS", "road_sdf", "realism_features", "sim_agent_realism"]

REALISM_WEIGHTS = {"linear_speed": 0.05, "linear_acceleration": 0.05, "angular_speed": 0.05,
                   "angular_acceleration": 0.05,                                           # kinematic 0.20
                   "distance_to_nearest_object": 0.10, "collision": 0.25, "time_to_collision": 0.10,  # 0.45
                   "distance_to_road_edge": 0.05, "offroad": 0.25, "traffic_light_violation": 0.05}  # 0.35
# (low, high, bins) of each continuous feature's histogram (WOSAC's configuration); values are clipped into range
REALISM_BINS = {"linear_speed": (0.0, 25.0, 10), "linear_acceleration": (-12.0, 12.0, 11),
                "angular_speed": (-0.628, 0.628, 11), "angular_acceleration": (-3.14, 3.14, 11),
                "distance_to_nearest_object": (-5.0, 40.0, 10), "time_to_collision": (0.0, 5.0, 10),
                "distance_to_road_edge": (-20.0, 40.0, 10)}
HIST_SMOOTHING, BERNOULLI_SMOOTHING = 0.1, 0.001  # additive pseudo-counts
TTC_MAX = 5.0  # s
SDF_CELL = 1.0  # m: resolution of the signed distance to the drivable area's edge


def road_sdf(scenario: Scenario, lo: np.ndarray, hi: np.ndarray, cell: float = SDF_CELL):
    """Signed distance (m) to the edge of the drivable area D (:func:`on_road`), positive off the road, on a grid
    of ``cell`` m over the box [lo, hi]; returns a lookup ``f(points [..., 2]) -> [...]`` (nearest cell)."""
    from scipy.ndimage import distance_transform_edt  # scipy comes with the `ml` extra: lazily, like torch

    lo = np.floor(np.asarray(lo) - 5.0)
    shape = np.ceil((np.asarray(hi) + 5.0 - lo) / cell).astype(int) + 1
    gx, gy = np.meshgrid(lo[0] + cell * np.arange(shape[0]), lo[1] + cell * np.arange(shape[1]), indexing="ij")
    inside = on_road(scenario, np.stack([gx.ravel(), gy.ravel()], -1)).reshape(shape)
    sdf = np.where(inside, -distance_transform_edt(inside), distance_transform_edt(~inside)) * cell

    def lookup(p: np.ndarray) -> np.ndarray:
        ij = np.clip(np.round((p - lo) / cell).astype(int), 0, shape - 1)
        return sdf[ij[..., 0], ij[..., 1]]
    return lookup


def _stop_lines(scenario: Scenario, half_width: float = 2.0):
    """Per traffic light: (a [K, 2], b [K, 2], red bool [K, T]) stop-line segments across the controlled lane's
    start (perpendicular to it, +-half_width), with the steps at which the light shows stop."""
    a, b, red = [], [], []
    for tl in scenario.traffic_lights.values():
        f = scenario.map_features.get(str(tl.lane))
        if f is None or f.polyline is None or len(f.polyline) < 2:
            continue
        p0, p1 = f.polyline[0, :2], f.polyline[1, :2]
        d = (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-9)
        n = np.array([-d[1], d[0]])
        a.append(p0 - half_width * n)
        b.append(p0 + half_width * n)
        st = [s in RED_STATES for s in tl.states][: scenario.length]
        red.append(np.pad(st, (0, scenario.length - len(st))).astype(bool))
    if not a:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, scenario.length), bool)
    return np.array(a), np.array(b), np.array(red)


def _crosses(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segments p->q [..., 2] cross segments a->b [K, 2] ([..., K]; proper intersection)."""
    cross = lambda u, v: u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]  # noqa: E731
    p, q = p[..., None, :], q[..., None, :]
    d1, d2 = cross(b - a, p - a), cross(b - a, q - a)
    d3, d4 = cross(q - p, a - p), cross(q - p, b - p)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def realism_features(scenario: Scenario, agents: np.ndarray, xy: np.ndarray, heading: np.ndarray,
                     current: int, sdf=None, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-step and per-agent realism features of trajectories of the agents ``agents`` [A] (track indices).

    Args:
        xy [R, A, F, 2], heading [R, A, F]: world poses at steps current+1 .. current+F (R rollouts; the log
            itself with R = 1); the logged frames current-2 .. current are prepended for the derivatives.
        valid [A, F]: steps at which each agent exists (default: all; the log's own validity for the log):
            absent agents are nobody's nearest object or collision partner, and absent steps never count as
            off-road or crossing.
    Returns:
        continuous features [R, A, F] (linear_speed m/s, linear_acceleration m/s^2, angular_speed rad/s,
        angular_acceleration rad/s^2, distance_to_nearest_object m: centre distance minus both agents'
        (length + width) / 4, time_to_collision s: to the nearest agent ahead overlapping the lane of travel
        laterally, capped at 5 s; distance_to_road_edge m: signed distance to the edge of D, vehicles only,
        NaN otherwise) and per-agent booleans [R, A] (collision: a box overlap at some step; offroad: a vehicle
        centre off D at some step; traffic_light_violation: a vehicle crossing a red light's stop line).
    """
    tr = scenario.tracks
    R, A, F = heading.shape
    hist_xy = np.broadcast_to(tr.xy[agents][:, current - 2: current + 1], (R, A, 3, 2))
    hist_h = np.broadcast_to(tr.heading[agents][:, current - 2: current + 1], (R, A, 3))
    p = np.concatenate([hist_xy, xy], 2)                                         # [R, A, F + 3, 2]
    h = np.concatenate([hist_h, heading], 2)
    speed = np.linalg.norm(np.diff(p, axis=2), axis=-1) / DT                     # [R, A, F + 2]
    yaw = wrap_angle(np.diff(h, axis=2)) / DT
    out = {"linear_speed": speed[..., 2:], "linear_acceleration": np.diff(speed, axis=2)[..., 1:] / DT,
           "angular_speed": yaw[..., 2:], "angular_acceleration": np.diff(yaw, axis=2)[..., 1:] / DT}
    size = tr.size[agents, current, :2]                                           # [A, 2]
    r_eff = size.sum(-1) / 4
    fx, fh = xy, heading
    rel = fx[:, None] - fx[:, :, None]                                            # [R, i, j, F, 2]: j - i
    dist = np.linalg.norm(rel, axis=-1) - r_eff[None, :, None, None] - r_eff[None, None, :, None]
    eye = np.eye(A, dtype=bool)[None, :, :, None]
    if valid is not None:  # an absent partner is no partner
        eye = eye | ~valid[None, None] | ~valid[None, :, None]
    out["distance_to_nearest_object"] = np.where(eye, np.inf, dist).min(2) if A > 1 else np.full((R, A, F), 40.0)
    # collisions (box overlap, broad phase on bounding circles)
    rad = np.linalg.norm(size, axis=-1) / 2
    near = (np.linalg.norm(rel, axis=-1) <= (rad[:, None] + rad[None])[None, :, :, None]) & ~eye
    r_, i, j, t = np.nonzero(near)
    ov = boxes_overlap(fx[r_, i, t], fh[r_, i, t], size[i], fx[r_, j, t], fh[r_, j, t], size[j])
    coll = np.zeros((R, A), bool)
    coll[r_[ov], i[ov]] = True
    out["collision"] = coll
    # time to collision with the nearest agent ahead in i's lane of travel
    c, s = np.cos(fh)[:, :, None], np.sin(fh)[:, :, None]                         # [R, i, 1, F]
    lon = rel[..., 0] * c + rel[..., 1] * s
    lat = -rel[..., 0] * s + rel[..., 1] * c
    v_i = out["linear_speed"]                                                     # [R, A, F]
    v_j_along = v_i[:, None] * np.cos(wrap_angle(fh[:, None] - fh[:, :, None]))   # [R, i, j, F]
    gap = lon - (size[:, 0][:, None] + size[:, 0][None])[None, :, :, None] / 2
    ahead = (lon > 0) & (np.abs(lat) < (size[:, 1][:, None] + size[:, 1][None])[None, :, :, None] / 2) & ~eye
    closing = v_i[:, :, None] - v_j_along
    ttc = np.where(ahead & (closing > 0), np.maximum(gap, 0) / np.maximum(closing, 1e-6), TTC_MAX)
    out["time_to_collision"] = np.clip(ttc.min(2), 0, TTC_MAX) if A > 1 else np.full((R, A, F), TTC_MAX)
    # map: vehicles only
    vehicle = np.asarray(tr.types)[agents] == "VEHICLE"
    if sdf is None:
        allp = np.concatenate([fx.reshape(-1, 2), tr.xy[agents][tr.valid[agents]]])
        sdf = road_sdf(scenario, allp.min(0), allp.max(0))
    d_edge = sdf(fx)                                                              # [R, A, F]
    out["distance_to_road_edge"] = np.where(vehicle[None, :, None], d_edge, np.nan)
    present = np.ones((A, F), bool) if valid is None else valid
    out["offroad"] = vehicle[None] & ((d_edge > 0) & present[None]).any(-1)
    a_, b_, red = _stop_lines(scenario)
    if len(a_):
        prev = np.concatenate([hist_xy[:, :, -1:], fx[:, :, :-1]], 2)
        steps = np.arange(current + 1, current + 1 + F).clip(max=scenario.length - 1)
        x = _crosses(prev, fx, a_, b_) & red[:, steps].T[None, None] & present[None, :, :, None]  # [R, A, F, K]
        out["traffic_light_violation"] = vehicle[None] & x.any((-1, -2))
    else:
        out["traffic_light_violation"] = np.zeros((R, A), bool)
    return out


def sim_agent_realism(scenario: Scenario, agents: np.ndarray, xy: np.ndarray, heading: np.ndarray,
                      current: int = 10, sim_valid: np.ndarray | None = None) -> dict:
    """WOSAC-style realism of R rollouts of the agents ``agents`` [A] (track indices, valid at ``current``).

    Per agent and continuous feature: a histogram (:data:`REALISM_BINS`, +0.1 per bin) of the rollouts' values
    pooled over the R rollouts and the steps at which the agent's log is valid; the likelihood of the logged
    future is exp(mean over those steps of log p(logged value's bin)). Per agent and boolean feature: p(logged
    value) under the rollouts' frequency (+0.001 smoothing). A feature's score is the mean over agents with a
    valid logged step (vehicles only for the map features); the meta-metric is the weighted sum
    (:data:`REALISM_WEIGHTS`, renormalised over the features a scene defines). minADE: per agent the smallest
    mean displacement over its valid logged steps among the rollouts, averaged over agents.

    Args:
        xy [R, A, F, 2], heading [R, A, F]: rollouts at steps current+1 .. current+F (world frame).
        sim_valid [A, F]: steps at which the rollouts' agents exist (default: always, as WOSAC requires of a
            simulation; the logged-future upper bound passes the log's own validity, so that an agent that
            leaves the log is not a ghost others collide with).
    Returns:
        {"meta_metric", "likelihoods": {feature: score}, "min_ade", "num_agents", "num_rollouts", "steps"}.
    """
    tr = scenario.tracks
    R, A, F = heading.shape
    if current < 2 or current + F > scenario.length - 1:
        raise ValueError(f"need 2 <= current and current + F <= length - 1, got current={current}, F={F}, "
                         f"length={scenario.length}")
    steps = np.arange(current + 1, current + 1 + F)
    log_xy, log_h = tr.xy[agents][:, steps], tr.heading[agents][:, steps]
    valid = tr.valid[agents][:, steps]                                            # [A, F]
    # a logged step's derivative needs the steps before it: speed 1, acceleration 2
    v_all = tr.valid[agents][:, current - 2:]
    ok1 = valid & v_all[:, 1:F + 1]
    ok2 = ok1 & v_all[:, :F]
    allp = np.concatenate([xy.reshape(-1, 2), log_xy[valid]])
    lookup = road_sdf(scenario, allp.min(0), allp.max(0))
    parts = [realism_features(scenario, agents, xy[r:r + 4], heading[r:r + 4], current, lookup, sim_valid)
             for r in range(0, R, 4)]  # the pairwise features take [r, A, A, F] blocks: 4 rollouts at a time
    sim = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    log = realism_features(scenario, agents, log_xy[None], log_h[None], current, lookup, valid)
    # the log's interactive features only count agents present in the log at that step
    masks = {"linear_speed": ok1, "angular_speed": ok1, "linear_acceleration": ok2, "angular_acceleration": ok2,
             "distance_to_nearest_object": valid, "time_to_collision": valid, "distance_to_road_edge": valid}
    scores = {}
    for k, (lo, hi, bins) in REALISM_BINS.items():
        m = masks[k] & np.isfinite(log[k][0])
        idx_sim = np.clip(((np.clip(np.nan_to_num(sim[k]), lo, hi) - lo) / (hi - lo) * bins).astype(int), 0, bins - 1)
        idx_log = np.clip(((np.clip(np.nan_to_num(log[k][0]), lo, hi) - lo) / (hi - lo) * bins).astype(int), 0,
                          bins - 1)
        counts = np.zeros((A, bins))
        w = np.broadcast_to(m[None], idx_sim.shape)
        np.add.at(counts, (np.broadcast_to(np.arange(A)[None, :, None], idx_sim.shape)[w], idx_sim[w]), 1.0)
        prob = (counts + HIST_SMOOTHING) / (counts.sum(1, keepdims=True) + HIST_SMOOTHING * bins)
        ll = np.log(np.take_along_axis(prob, idx_log, 1))                         # [A, F]
        n = m.sum(1)
        has = n > 0
        scores[k] = float(np.exp((ll * m).sum(1)[has] / n[has]).mean()) if has.any() else float("nan")
    vehicle = np.asarray(tr.types)[agents] == "VEHICLE"
    present = valid.any(1)
    for k in ("collision", "offroad", "traffic_light_violation"):
        counted = present & (vehicle if k != "collision" else True)
        p_true = (sim[k].sum(0) + BERNOULLI_SMOOTHING) / (R + 2 * BERNOULLI_SMOOTHING)
        lik = np.where(log[k][0], p_true, 1 - p_true)
        scores[k] = float(lik[counted].mean()) if counted.any() else float("nan")
    known = {k: w for k, w in REALISM_WEIGHTS.items() if np.isfinite(scores[k])}  # e.g. no vehicle: no map terms
    meta = sum(w * scores[k] for k, w in known.items()) / sum(known.values())
    disp = np.linalg.norm(xy - log_xy[None], axis=-1)                             # [R, A, F]
    ade = (disp * valid[None]).sum(-1) / np.maximum(valid.sum(-1), 1)[None]
    return {"meta_metric": float(meta), "likelihoods": scores, "min_ade": float(ade.min(0)[present].mean()),
            "num_agents": int(present.sum()), "num_rollouts": R, "steps": F}
