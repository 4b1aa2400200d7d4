"""Sim-agent rollouts for the realism meta-metric (:func:`traffic.realism.sim_agent_realism`).

From ``current`` (1 s of logged history: frames 0..10) every agent the traffic models encode (valid at the
current frame, a vehicle, pedestrian or cyclist, within ``EncodingConfig.range_m`` of the ego, the ego first;
at most ``max_agents``) is rolled out for ``steps`` (8 s) ``rollouts`` times by one of:

* ``model``: the trajectory model (modes sampled per agent and rollout); vehicles on a lane then drive along
  the lane graph with IDM gap keeping (:mod:`traffic.lanes`, the same machinery as generation), wanting the
  model's speed and taking the model's branch at junctions; pedestrians, cyclists and vehicles off the lanes
  follow the model's path as predicted;
* ``constant_velocity``: each agent keeps its current velocity and heading (deterministic);
* ``random``: controls drawn uniformly every step (acceleration in [-4, 4] m/s^2, yaw rate in [-0.5, 0.5]
  rad/s) and integrated from the current state;
* ``logged``: the logged future itself, every rollout identical (the upper bound; an agent exists where its
  log does, :func:`logged_validity`; its pose is held where the log has none).

Letters: r rollout, a agent, f future step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sim_bridge.scenario import Scenario
from traffic.encoding import EncodingConfig, collate, encode_scene, to_world
from traffic.lanes import LaneGraph, Routes, build_routes, follow_routes, route_stops
from traffic.metrics import DT
from traffic.realism import sim_agent_realism
from traffic.train import load_models

__all__ = ["ROLLOUT_METHODS", "sim_agents", "rollouts", "logged_validity", "evaluate_realism"]

ROLLOUT_METHODS = ("model", "constant_velocity", "random", "logged")
ON_LANE_M = 1.5  # m: a vehicle this close to a lane centre (heading within 60 degrees) drives along the lane graph


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
    if not lanes:
        return agents, xy, h
    tr = sc.tracks
    graph = LaneGraph.from_scenario(sc)
    vehicle = np.asarray(tr.types)[agents] == "VEHICLE"
    lane, s, lat = graph.snap(tr.xy[agents, current], tr.heading[agents, current])
    on_lane = vehicle & (lane >= 0) & (np.abs(lat) <= ON_LANE_M)
    follow, rest = np.flatnonzero(on_lane), np.flatnonzero(~on_lane)
    # the traffic model is a vehicle model (as TrafficGen): pedestrians and cyclists keep their velocity
    walk = rest[~vehicle[rest]]
    cv_xy, cv_h = _constant_velocity(sc, agents[walk], current, steps, n)
    xy[:, walk], h[:, walk] = cv_xy, cv_h
    if not len(follow):
        return agents, xy, h
    rng = np.random.default_rng(seed)
    T = steps + 1
    speed0 = tr.speed[agents, current]
    size = tr.size[agents, current, :2]
    parts, desired = [], []
    for r in range(n):  # one route per (rollout, vehicle): the rollout's sampled path picks the branches
        path = np.concatenate([np.repeat(tr.xy[agents[follow], current][:, None], 1, 1), xy[r, follow]], 1)
        spd = np.concatenate([speed0[follow, None], np.linalg.norm(np.diff(path, axis=1), axis=-1) / DT], 1)
        limit = graph.limit[lane[follow]]
        desired.append(np.where(limit[:, None] > 0, np.minimum(spd, 1.1 * limit[:, None] + 0.5), spd))
        parts.append(build_routes(graph, lane[follow], s[follow], float(min(desired[-1].sum(1).max() * DT + 30, 400)),
                                  guides=list(path), rng=rng))
    routes = Routes.concat(parts)
    (stop_s, stop_light), red = route_stops(routes, graph, sc)
    red = red[:, current:current + T]
    red = np.pad(red, ((0, 0), (0, T - red.shape[1])), mode="edge") if red.shape[1] else np.zeros((len(red), T), bool)
    o_xy = np.concatenate([tr.xy[agents[rest], current][None, :, None].repeat(n, 0), xy[:, rest]], 2)  # [n, o, T, 2]
    o_h = np.concatenate([tr.heading[agents[rest], current][None, :, None].repeat(n, 0), h[:, rest]], 2)
    fxy, fh, _, _ = follow_routes(
        routes, np.tile(speed0[follow], n), np.tile(lat[follow], n), np.tile(size[follow], (n, 1)),
        np.concatenate(desired), o_xy.reshape(-1, T, 2), o_h.reshape(-1, T),
        np.broadcast_to(size[rest][None, :, None], (n, len(rest), T, 2)).reshape(-1, T, 2),
        np.ones((n * len(rest), T), bool), red=red, stops=(stop_s, stop_light),
        group=np.repeat(np.arange(n), len(follow)), others_group=np.repeat(np.arange(n), len(rest)),
        heading0=np.tile(tr.heading[agents[follow], current], n))
    xy[:, follow] = fxy.reshape(n, len(follow), T, 2)[:, :, 1:]
    h[:, follow] = fh.reshape(n, len(follow), T)[:, :, 1:]
    return agents, xy, h


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
