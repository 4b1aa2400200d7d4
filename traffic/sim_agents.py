"""Sim-agent rollouts for the realism meta-metric (:func:`traffic.realism.sim_agent_realism`).

From ``current`` (1 s of logged history: frames 0..10) every agent the traffic models encode (valid at the
current frame, a vehicle, pedestrian or cyclist, within ``EncodingConfig.range_m`` of the ego, the ego first;
at most ``max_agents``) is rolled out for ``steps`` (8 s) ``rollouts`` times by one of:

* ``model``: the trajectory model (modes sampled per agent and rollout), made drivable by
  :func:`lane_rollouts`: vehicles on a lane drive along the lane graph with IDM gap keeping
  (:mod:`traffic.lanes`, :mod:`traffic.follow`: the same machinery as generation), wanting the model's speed
  and taking the model's branch at junctions; moving vehicles off the lanes follow the model's path with the
  same gap keeping; pedestrians and cyclists keep their velocity over the last 0.5 s of history; whatever
  stood still over the 1 s of history (and is not on a lane) stays put. Then the rollouts are observed the
  way the log observes motion: in a log whose tracks are annotation keyframes joined by straight lines
  (nuScenes: 2 Hz annotations interpolated to 10 Hz; :func:`keyframe_phase`) only the poses at the keyframe
  steps are kept and joined the same way (:func:`keyframe_resample`), and each agent's tracking noise,
  estimated from its own history (:func:`track_noise`), is added: the logged kinematics carry both;
* ``constant_velocity``: each agent keeps its current velocity and heading (deterministic);
* ``random``: controls drawn uniformly every step (acceleration in [-4, 4] m/s^2, yaw rate in [-0.5, 0.5]
  rad/s) and integrated from the current state;
* ``logged``: the logged future itself, every rollout identical (the upper bound; an agent exists where its
  log does, :func:`logged_validity`; its pose is held where the log has none).

Letters: r rollout, a agent, f future step.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from sim_bridge.geometry import wrap_angle
from sim_bridge.scenario import Scenario
from traffic.encoding import EncodingConfig, collate, encode_scene, to_world
from traffic.follow import follow_routes
from traffic.lanes import LaneGraph, Routes, build_routes, path_routes, route_stops
from traffic.metrics import DT
from traffic.realism import sim_agent_realism
from traffic.train import load_models

__all__ = ["ROLLOUT_METHODS", "sim_agents", "rollouts", "lane_rollouts", "history_state", "track_noise",
           "keyframe_phase", "keyframe_resample", "logged_validity", "evaluate_realism"]

ROLLOUT_METHODS = ("model", "constant_velocity", "random", "logged")
TRACK_NOISE_SCALE = 1.5  # x the history's noise estimate (:func:`track_noise`); chosen on the training scenes
BEYOND_LANES = True  # where the mapped lanes end, a vehicle goes on along its predicted path (driveways, car parks)
ON_LANE_M = 1.5  # m: a vehicle this close to a lane centre (heading within 60 degrees) drives along the lane graph
KEYFRAME_PERIOD = 5  # steps between annotation keyframes of an interpolated log (nuScenes: 2 Hz in a 10 Hz log)


def sim_agents(sc: Scenario, current: int, enc: EncodingConfig) -> np.ndarray:
    """Track indices of the simulated agents: the rows :func:`encode_scene` keeps at ``current``."""
    e = encode_scene(sc, current, enc)
    return e["agent_index"][e["agent_mask"]]


def _logged(sc: Scenario, agents: np.ndarray, current: int, steps: int, n: int):
    tr = sc.tracks
    idx = np.arange(current + 1, current + 1 + steps)
    xy, h = tr.xy[agents][:, idx].copy(), tr.heading[agents][:, idx].copy()
    for a in range(len(agents)):  # an agent whose log ends (or pauses) holds its last valid pose
        v = tr.valid[agents[a]]
        last = current
        for k, t in enumerate(idx):
            if v[t]:
                last = t
            else:
                xy[a, k], h[a, k] = tr.xy[agents[a], last], tr.heading[agents[a], last]
    return np.repeat(xy[None], n, 0), np.repeat(h[None], n, 0)


def _constant_velocity(sc: Scenario, agents: np.ndarray, current: int, steps: int, n: int):
    tr = sc.tracks
    t = DT * np.arange(1, steps + 1)
    xy = tr.xy[agents, current][:, None] + tr.velocity[agents, current][:, None] * t[None, :, None]
    h = np.repeat(tr.heading[agents, current][:, None], steps, 1)
    return np.repeat(xy[None], n, 0), np.repeat(h[None], n, 0)


def _random(sc: Scenario, agents: np.ndarray, current: int, steps: int, n: int, rng: np.random.Generator):
    tr = sc.tracks
    acc = rng.uniform(-4, 4, (n, len(agents), steps))
    yaw = rng.uniform(-0.5, 0.5, (n, len(agents), steps))
    v = np.maximum(tr.speed[agents, current][None, :, None] + np.cumsum(acc * DT, -1), 0.0)
    h = tr.heading[agents, current][None, :, None] + np.cumsum(yaw * DT, -1)
    step = v[..., None] * DT * np.stack([np.cos(h), np.sin(h)], -1)
    return tr.xy[agents, current][None, :, None] + np.cumsum(step, 2), h


def _model(sc: Scenario, current: int, steps: int, n: int, models, enc: EncodingConfig, seed: int,
           lanes: bool = True, device: str = "cpu"):
    import torch

    _, trajectory = models
    e = encode_scene(sc, current, enc)
    agents = e["agent_index"][e["agent_mask"]]
    a = len(agents)
    batch = {k: v.to(device) for k, v in collate([e] * n).items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        traj = trajectory.rollout(batch, steps=steps, generator=gen, sample_modes=True)[:, :a].cpu().numpy()
    xy, h = to_world(traj[..., :2], traj[..., 2], e["origin"])                   # [n, a, f, 2], [n, a, f]
    if lanes:
        xy, h = lane_rollouts(sc, agents, xy, h, current, steps, n, seed)
    phase = keyframe_phase(sc, current)
    if phase is not None:  # the log holds keyframes joined by straight lines: observe the rollouts the same way
        xy, h = keyframe_resample(xy, h, sc.tracks.xy[agents, current], sc.tracks.heading[agents, current], current,
                                  phase)
    # each agent's tracking noise, as its history shows it (the log's kinematics carry it)
    s_xy, s_h = track_noise(sc, agents, current)
    rng = np.random.default_rng(seed)
    xy = xy + TRACK_NOISE_SCALE * s_xy[None, :, None, None] * rng.standard_normal(xy.shape)
    h = h + TRACK_NOISE_SCALE * s_h[None, :, None] * rng.standard_normal(h.shape)
    return agents, xy, h


def lane_rollouts(sc: Scenario, agents: np.ndarray, xy: np.ndarray, h: np.ndarray, current: int, steps: int, n: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Predicted paths (xy [n, A, steps, 2], h [n, A, steps] of the agents ``agents``) made drivable; returns
    the new (xy, h).

    Vehicles on a lane drive along the lane graph (branches and wanted speed from their path); moving vehicles
    off the lanes drive along their path; both keep IDM gaps to everyone (:func:`traffic.follow.follow_routes`:
    leaders, red lights, crossing traffic). Agents off the lanes that stood still over the last second
    (:func:`history_state`) stay put; moving pedestrians and cyclists keep their velocity over the last half
    second. Cost: one :func:`~traffic.follow.follow_routes` call for all n rollouts (groups), O(steps x n x D x
    (D + O)) for D driven and O other agents per rollout."""
    xy, h = xy.copy(), h.copy()
    tr = sc.tracks
    graph = LaneGraph.from_scenario(sc)
    vehicle = np.asarray(tr.types)[agents] == "VEHICLE"
    lane, s, lat = graph.snap(tr.xy[agents, current], tr.heading[agents, current])
    on_lane = vehicle & (lane >= 0) & (np.abs(lat) <= ON_LANE_M)
    follow, rest = np.flatnonzero(on_lane), np.flatnonzero(~on_lane)
    # the traffic model is a vehicle model (as TrafficGen): pedestrians and cyclists keep their velocity (over
    # the last half second of history); whatever stood still over the history and is not on a lane stays put
    vel, still = history_state(sc, agents, current)
    walk = rest[~vehicle[rest] | still[rest]]
    t = DT * np.arange(1, steps + 1)
    xy[:, walk] = (tr.xy[agents[walk], current][:, None] + np.where(still[walk, None, None], 0.0, vel[walk, None])
                   * t[None, :, None])[None]
    h[:, walk] = tr.heading[agents[walk], current][None, :, None]
    # moving vehicles off the lanes keep to their predicted path, with the same gap keeping (pedestrians kept to
    # their line with a walker's gap keeping scored lower: groups of pedestrians overlap in the logs)
    free = rest[vehicle[rest] & ~still[rest]]
    rest = np.setdiff1d(rest, free)
    drive = np.concatenate([follow, free])
    if not len(drive):
        return xy, h
    rng = np.random.default_rng(seed)
    T = steps + 1
    speed0 = tr.speed[agents, current]
    size = tr.size[agents, current, :2]
    start = tr.xy[agents, current]
    limit = np.r_[graph.limit[lane[follow]], np.zeros(len(free))]  # m/s; 0: none known (and off the lanes)
    parts, desired = [], []
    for r in range(n):  # one route per (rollout, vehicle): the rollout's sampled path picks the branches
        path = np.concatenate([start[drive][:, None], xy[r, drive]], 1)
        spd = np.concatenate([speed0[drive, None], np.linalg.norm(np.diff(path, axis=1), axis=-1) / DT], 1)
        desired.append(np.where(limit[:, None] > 0, np.minimum(spd, 1.1 * limit[:, None] + 0.5), spd))
        routes_r = []
        if len(follow):
            routes_r.append(build_routes(graph, lane[follow], s[follow],
                                         float(min(desired[-1][:len(follow)].sum(1).max() * DT + 30, 400)),
                                         guides=list(path[:len(follow)]), rng=rng, beyond_lanes=BEYOND_LANES))
        if len(free):  # the path, then 30 m on along its last direction (the end of a route is a standing obstacle)
            fp = path[len(follow):]
            d = fp[:, -1] - fp[:, -2]
            d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
            routes_r.append(path_routes(list(np.concatenate([fp, fp[:, -1:] + 30.0 * d[:, None]], 1))))
        parts.append(Routes.concat(routes_r))
    routes = Routes.concat(parts)
    (stop_s, stop_light), red = route_stops(routes, graph, sc)
    red = red[:, current:current + T]
    red = np.pad(red, ((0, 0), (0, T - red.shape[1])), mode="edge") if red.shape[1] else np.zeros((len(red), T), bool)
    o_xy = np.concatenate([tr.xy[agents[rest], current][None, :, None].repeat(n, 0), xy[:, rest]], 2)  # [n, o, T, 2]
    o_h = np.concatenate([tr.heading[agents[rest], current][None, :, None].repeat(n, 0), h[:, rest]], 2)
    lat0 = np.r_[lat[follow], np.zeros(len(free))]
    fxy, fh, _, _ = follow_routes(
        routes, np.tile(speed0[drive], n), np.tile(lat0, n), np.tile(size[drive], (n, 1)),
        np.concatenate(desired), o_xy.reshape(-1, T, 2), o_h.reshape(-1, T),
        np.broadcast_to(size[rest][None, :, None], (n, len(rest), T, 2)).reshape(-1, T, 2),
        np.ones((n * len(rest), T), bool), red=red, stops=(stop_s, stop_light),
        group=np.repeat(np.arange(n), len(drive)), others_group=np.repeat(np.arange(n), len(rest)),
        heading0=np.tile(tr.heading[agents[drive], current], n))
    xy[:, drive] = fxy.reshape(n, len(drive), T, 2)[:, :, 1:]
    h[:, drive] = fh.reshape(n, len(drive), T)[:, :, 1:]
    return xy, h


def history_state(sc: Scenario, agents: np.ndarray, current: int, window: int = 5, still_mps: float = 0.3):
    """From the logged history up to ``current``: (velocity [A, 2] m/s, the mean over the last ``window`` steps
    (the current velocity where the history has gaps), still [A] bool: moved less than ``still_mps`` x its
    duration over the last second and slower than 2 x ``still_mps`` now, i.e. standing with tracking noise)."""
    tr = sc.tracks
    lo, lo1 = max(current - window, 0), max(current - 10, 0)
    ok = tr.valid[agents, lo] & tr.valid[agents, current]
    vel = np.where(ok[:, None], (tr.xy[agents, current] - tr.xy[agents, lo]) / (DT * max(current - lo, 1)),
                   tr.velocity[agents, current])
    ok1 = tr.valid[agents, lo1] & tr.valid[agents, current]
    moved = np.linalg.norm(tr.xy[agents, current] - tr.xy[agents, lo1], axis=-1)
    still = ok1 & (moved < still_mps * DT * max(current - lo1, 1)) & (tr.speed[agents, current] < 2 * still_mps)
    return vel, still


def track_noise(sc: Scenario, agents: np.ndarray, current: int) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's tracking noise over its logged history: (position sigma [A] m, heading sigma [A] rad), robust
    (median absolute deviation) estimates from second differences, which cancel smooth motion (for i.i.d. noise
    of sigma a second difference has sigma x sqrt(6)); 0 where fewer than 3 of them are valid."""
    tr = sc.tracks
    xy, hd, v = tr.xy[agents, :current + 1], tr.heading[agents, :current + 1], tr.valid[agents, :current + 1]
    ok = v[:, 2:] & v[:, 1:-1] & v[:, :-2]
    d_xy = np.abs(xy[:, 2:] - 2 * xy[:, 1:-1] + xy[:, :-2]).reshape(len(agents), -1)
    d_h = np.abs(wrap_angle(hd[:, 2:] - 2 * hd[:, 1:-1] + hd[:, :-2]))
    mad = lambda d, m: np.nanmedian(np.where(m, d, np.nan), 1) / (0.6745 * np.sqrt(6))  # noqa: E731
    enough = ok.sum(1) >= 3
    with warnings.catch_warnings():  # all-NaN rows (too little history) come back NaN, set to 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        s_xy = np.where(enough, mad(d_xy, np.repeat(ok, 2, 1)), 0.0)
        s_h = np.where(enough, mad(d_h, ok), 0.0)
    return np.nan_to_num(s_xy), np.nan_to_num(s_h)


def keyframe_phase(sc: Scenario, current: int, period: int = KEYFRAME_PERIOD, dominance: float = 0.4) -> int | None:
    """The step phase (mod ``period``) of a log's annotation keyframes when its tracks are keyframes joined by
    straight lines, else None.

    nuScenes annotates every 0.5 s and its converted scenarios interpolate linearly to 10 Hz, so every track
    bends only at the keyframe steps: the position second differences over the history up to ``current``
    concentrate on one residue mod ``period``. That residue is returned when it holds at least ``dominance``
    of their sum (1 / ``period`` without such a pattern; tracked 10 Hz logs such as Waymo's spread evenly).
    O(N current) for N tracks."""
    tr = sc.tracks
    v, xy = tr.valid[:, :current + 1], tr.xy[:, :current + 1]
    ok = v[:, 2:] & v[:, 1:-1] & v[:, :-2]
    bend = np.linalg.norm(xy[:, 2:] - 2 * xy[:, 1:-1] + xy[:, :-2], axis=-1) * ok      # at steps 1 .. current - 1
    per = np.bincount(np.arange(1, current) % period, weights=bend.sum(0), minlength=period)
    if per.sum() <= 0:
        return None
    r = int(per.argmax())
    return r if per[r] >= dominance * per.sum() else None


def keyframe_resample(xy: np.ndarray, h: np.ndarray, start_xy: np.ndarray, start_h: np.ndarray, current: int,
                      phase: int, period: int = KEYFRAME_PERIOD) -> tuple[np.ndarray, np.ndarray]:
    """Rollouts (xy [R, A, F, 2], h [R, A, F] at steps current+1 ..) as a keyframe log records them: the poses at
    the keyframe steps (step = ``phase`` mod ``period``) kept, joined by straight lines from the current pose
    (start_xy [A, 2], start_h [A]; heading unwrapped along the rollout), the steps after the last keyframe
    joined to the horizon's last pose. O(R A F)."""
    F = h.shape[-1]
    i = np.arange(F + 1)                                                    # 0: the current pose
    knots = np.unique(np.r_[0, np.flatnonzero((current + i - phase) % period == 0), F])
    k = np.clip(np.searchsorted(knots, i, side="right"), 1, len(knots) - 1)
    lo, hi = knots[k - 1], knots[k]                                         # the knots around each step
    w = (i - lo) / (hi - lo)
    P = np.concatenate([np.broadcast_to(start_xy[None, :, None], xy.shape[:2] + (1, 2)), xy], 2)
    H = np.unwrap(np.concatenate([np.broadcast_to(start_h[None, :, None], h.shape[:2] + (1,)), h], 2), axis=2)
    out_xy = P[:, :, lo] * (1 - w)[:, None] + P[:, :, hi] * w[:, None]
    out_h = H[:, :, lo] * (1 - w) + H[:, :, hi] * w
    return out_xy[:, :, 1:], wrap_angle(out_h[:, :, 1:])


def logged_validity(sc: Scenario, agents: np.ndarray, current: int = 10, steps: int = 80) -> np.ndarray:
    """bool [A, steps]: where the ``logged`` rollouts' agents exist (the log's own validity)."""
    return sc.tracks.valid[agents][:, current + 1: current + 1 + steps]


def rollouts(sc: Scenario, method: str, current: int = 10, steps: int = 80, n: int = 32, models=None,
             enc: EncodingConfig = EncodingConfig(), seed: int = 0, lanes: bool = True):
    """(agents [A] track indices, xy [n, A, steps, 2], heading [n, A, steps]) for one scene by ``method``."""
    if method not in ROLLOUT_METHODS:
        raise ValueError(f"method must be one of {ROLLOUT_METHODS}, got {method!r}")
    enc = EncodingConfig(**{**enc.__dict__, "future_steps": max(enc.future_steps, 1)})
    if method == "model":
        if models is None:
            raise ValueError("method='model' needs models=(placement, trajectory)")
        return _model(sc, current, steps, n, models, enc, seed, lanes)
    agents = sim_agents(sc, current, enc)
    if method == "logged":
        return (agents, *_logged(sc, agents, current, steps, n))
    if method == "constant_velocity":
        return (agents, *_constant_velocity(sc, agents, current, steps, n))
    return (agents, *_random(sc, agents, current, steps, n, np.random.default_rng(seed)))


def evaluate_realism(scenes: list[Scenario], run: str | Path | None = None, methods=ROLLOUT_METHODS,
                     current: int = 10, steps: int = 80, n: int = 32, seed: int = 0, device: str = "cpu") -> dict:
    """The realism meta-metric, its feature likelihoods and minADE per method, averaged over scenes (each scene
    weighs the same, as in WOSAC). ``run``: a traffic training run directory (needed for ``model``)."""
    models, enc = None, EncodingConfig()
    if "model" in methods:
        placement, trajectory, tcfg = load_models(run, device)
        models, enc = (placement, trajectory), tcfg.encoding
    out = {}
    for m in methods:
        rows, t0 = [], time.perf_counter()
        for sc in scenes:
            agents, xy, h = rollouts(sc, m, current, steps, n, models, enc, seed)
            valid = logged_validity(sc, agents, current, steps) if m == "logged" else None
            rows.append({"scene": sc.id, **sim_agent_realism(sc, agents, xy, h, current, valid)})
        lik = {k: float(np.nanmean([r["likelihoods"][k] for r in rows])) for k in rows[0]["likelihoods"]}
        out[m] = {"meta_metric": float(np.mean([r["meta_metric"] for r in rows])), "likelihoods": lik,
                  "min_ade": float(np.mean([r["min_ade"] for r in rows])),
                  "num_agents": int(sum(r["num_agents"] for r in rows)), "seconds": round(time.perf_counter() - t0, 2),
                  "per_scene": [{k: r[k] for k in ("scene", "meta_metric", "min_ade", "num_agents")} for r in rows]}
    return out
