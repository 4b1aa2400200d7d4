"""Two baselines for traffic generation, scored with :func:`traffic.metrics.evaluate_traffic`.

1. :func:`random_lane_traffic`: on a given scene (map + logged ego kept), vehicles placed uniformly
   at random (by arc length) on lane centre lines near the ego, heading along the lane, moving at
   constant velocity. Same maps as the log, so the MMD pairs it scene by scene.
2. :func:`procedural_reference`: MetaDrive's own procedural traffic (PG maps + IDM), generated through
   :mod:`sim_bridge.sources.procedural`. Different maps, so the MMD pools scenes.

And two reference points that say what an MMD figure can reach on given reference scenes
(:func:`mmd_references`): the logged vehicles themselves, resampled (the estimator's floor for a generator
that draws from exactly the logged distribution with the logged count), and the logged vehicles moved onto
the lanes (what any placement bound to lane centre lines reaches at best).

Units: world frame metres, radians, 10 Hz. Einsum letters: a agent, t time, s segment.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from sim_bridge.dataset import DatasetWriter, ScenarioDataset
from sim_bridge.scenario import STEP_SECONDS, AgentTracks, Scenario
from sim_bridge.geometry import from_frame, to_frame, wrap_angle
from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural, scenario_filename
from traffic.encoding import EncodingConfig, point_to_segments
from traffic.metrics import BANDWIDTHS, mmd, scene_attributes

__all__ = ["random_lane_traffic", "procedural_reference", "write_baseline_dataset", "VEHICLE_SIZE",
           "logged_on_lanes", "mmd_references"]

# (mean, std, low, high) of (length, width, height) in m: passenger cars, roughly as in nuScenes/Waymo.
VEHICLE_SIZE = {"mean": (4.6, 1.9, 1.6), "std": (0.4, 0.1, 0.15), "low": (3.6, 1.6, 1.3), "high": (5.8, 2.2, 2.0)}
MAX_SPEED = 15.0  # m/s, cap on the sampled initial speed
# Per-scene metadata that names agents or steps of the source scene; stale once the agents change.
_STALE_METADATA = ("ts", "object_summary", "number_summary", "sdc_track_index", "tracks_to_predict",
                   "objects_of_interest", "track_length", "current_time_index")


def _lane_segments(scenario: Scenario) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vehicle-lane centre-line segments: start [S, 2], end [S, 2], speed cap [S] in m/s."""
    starts, ends, caps = [], [], []
    for f in scenario.map_features.values():
        if not f.is_lane or f.type == "LANE_BIKE_LANE" or f.polyline is None or len(f.polyline) < 2:
            continue
        limit = f.speed_limit_kmh
        cap = min(limit / 3.6, MAX_SPEED) if limit is not None and limit > 0 else MAX_SPEED
        starts.append(f.polyline[:-1, :2])  # nuScenes stores the lane yaw as a third column
        ends.append(f.polyline[1:, :2])
        caps.append(np.full(len(f.polyline) - 1, cap))
    if not starts:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(caps)


def _sample_on_lanes(scenario: Scenario, centre: np.ndarray, n: int, range_m: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points uniform by arc length on lane centre lines within range_m of centre [2].

    Returns:
        xy [n, 2] (m), heading [n] (rad, along the lane), speed cap [n] (m/s).
    """
    a, b, cap = _lane_segments(scenario)
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=-1)
    u = np.clip(((centre - a) * ab).sum(-1) / np.maximum(seg_len ** 2, 1e-12), 0, 1)
    near = (np.linalg.norm(a + u[:, None] * ab - centre, axis=-1) <= range_m) & (seg_len > 1e-6)
    if not near.any():
        raise ValueError(f"scenario {scenario.id!r}: no lane centre line within {range_m} m of the ego")
    idx = np.flatnonzero(near)
    p = seg_len[idx] / seg_len[idx].sum()
    xy, seg = np.zeros((0, 2)), np.zeros(0, int)
    for _ in range(1000):  # rejection sampling in batches: segments may leave the disc
        s = rng.choice(idx, size=4 * n + 16, p=p)
        pts = a[s] + rng.random(len(s))[:, None] * ab[s]
        ok = np.linalg.norm(pts - centre, axis=-1) <= range_m
        xy, seg = np.concatenate([xy, pts[ok]]), np.concatenate([seg, s[ok]])
        if len(xy) >= n:
            break
    else:
        raise RuntimeError(f"scenario {scenario.id!r}: could not place {n} vehicles on lanes")
    xy, seg = xy[:n], seg[:n]
    return xy, np.arctan2(ab[seg, 1], ab[seg, 0]), cap[seg]


def _fit(x: np.ndarray, steps: int, fill=0) -> np.ndarray:
    """Truncate or pad (with ``fill``) the time axis (axis 0) of x to ``steps``."""
    if len(x) >= steps:
        return x[:steps].copy()
    pad = np.full((steps - len(x),) + x.shape[1:], fill, dtype=x.dtype)
    return np.concatenate([x, pad])


def random_lane_traffic(scenario: Scenario, num_vehicles: int, steps: int, rng: np.random.Generator,
                        t0: int = 0, range_m: float = 50.0) -> Scenario:
    """Baseline 1: random vehicles on lane centre lines, constant-velocity motion.

    The map and the ego (sdc) track are kept; every other agent is replaced by ``num_vehicles``
    vehicles placed at frame ``t0`` uniformly by arc length on vehicle-lane centre lines within
    ``range_m`` of the ego, heading along the lane, size drawn from :data:`VEHICLE_SIZE` (clipped
    normal), speed uniform in [0, min(lane speed limit, 15 m/s)]. Each moves in a straight line at
    constant velocity: p(t) = p(t0) + v (t - t0) dt for every frame t (valid at all frames; z is the
    ego's z at t0). Vehicles may overlap each other: placement is blind, as a baseline should be.

    Args:
        scenario: the source scene; its ego must be valid at ``t0``.
        num_vehicles: N >= 0 vehicles to place.
        steps: length T of the output scene; the ego keeps its logged states on the overlap
            and is invalid (zeros) after the log ends.
        rng: the only source of randomness.
        t0: placement frame, 0 <= t0 < min(steps, scenario.length).
        range_m: placement radius around the ego at t0, m.

    Returns:
        A validated Scenario of length T with the same id, map and sdc_id, tracks [1 + N, T, ...]
        (ego first, then ``random_0`` ...), metadata ``dataset="baseline_random"``.
    """
    if num_vehicles < 0 or steps < 1:
        raise ValueError(f"need num_vehicles >= 0 and steps >= 1, got {num_vehicles}, {steps}")
    if not 0 <= t0 < min(steps, scenario.length):
        raise ValueError(f"t0={t0} must lie in [0, min(steps={steps}, length={scenario.length}))")
    tr, e = scenario.tracks, scenario.ego_index
    if not tr.valid[e, t0]:
        raise ValueError(f"scenario {scenario.id!r}: the ego is not valid at t0={t0}")
    n = num_vehicles
    xy0, heading0, cap = _sample_on_lanes(scenario, tr.xy[e, t0], n, range_m, rng) if n else \
        (np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    size = np.clip(rng.normal(VEHICLE_SIZE["mean"], VEHICLE_SIZE["std"], size=(n, 3)),
                   VEHICLE_SIZE["low"], VEHICLE_SIZE["high"])                  # [N, 3]
    vel0 = (rng.random(n) * cap)[:, None] * np.stack([np.cos(heading0), np.sin(heading0)], -1)  # [N, 2]
    dt = (np.arange(steps) - t0) * STEP_SECONDS                                # [T]
    xy = xy0[:, None, :] + vel0[:, None, :] * dt[None, :, None]               # [N, T, 2]
    z = np.full((n, steps, 1), tr.position[e, t0, 2])
    ids = [f"random_{i}" for i in range(n)]
    while scenario.sdc_id in ids:  # never shadow the ego id
        ids = [f"_{i}" for i in ids]
    tracks = AgentTracks(
        ids=(scenario.sdc_id, *ids), types=(tr.types[e],) + ("VEHICLE",) * n,
        position=np.concatenate([_fit(tr.position[e], steps)[None], np.concatenate([xy, z], -1)]),
        heading=np.concatenate([_fit(tr.heading[e], steps)[None], np.repeat(heading0[:, None], steps, 1)]),
        velocity=np.concatenate([_fit(tr.velocity[e], steps)[None], np.repeat(vel0[:, None], steps, 1)]),
        size=np.concatenate([_fit(tr.size[e], steps)[None], np.repeat(size[:, None], steps, 1)]),
        valid=np.concatenate([_fit(tr.valid[e], steps, False)[None], np.ones((n, steps), bool)]),
        metadata=({**(tr.metadata[e] if tr.metadata else {}), "track_length": steps},
                  *({"type": "VEHICLE", "object_id": i, "track_length": steps} for i in ids)))
    lights = {k: replace(tl, states=tuple(_fit(np.asarray(tl.states, dtype=object), steps, "LANE_STATE_UNKNOWN")))
              for k, tl in scenario.traffic_lights.items()}
    meta = {k: v for k, v in scenario.metadata.items() if k not in _STALE_METADATA}
    meta.update(dataset="baseline_random", sdc_id=scenario.sdc_id, ts=np.arange(steps) * STEP_SECONDS,
                track_length=steps, source_dataset=scenario.dataset,
                baseline={"name": "random_lane_traffic", "num_vehicles": n, "t0": t0, "range_m": range_m})
    return Scenario(id=scenario.id, length=steps, tracks=tracks, map_features=dict(scenario.map_features),
                    traffic_lights=lights, metadata=meta, version=scenario.version).validate(f"baseline:{scenario.id}")


def procedural_reference(num_scenarios: int, out_dir: str | Path, seed: int = 0, steps: int = 91,
                         workers: int = 1, traffic_density: float = 0.15) -> ScenarioDataset:
    """Baseline 2: MetaDrive procedural traffic (PG maps + IDM) as a dataset directory.

    Scenes are always regenerated (``resume=False``): a file of the same seed made with other
    settings must not be reused. The returned dataset lists only the requested seeds, even if
    ``out_dir`` holds other scene files. Note: MetaDrive's traffic starts at rest (speed 0 in the
    first frames) and is sparse near the ego; compare it at a later ``t0`` too.

    Args:
        num_scenarios: scenes (one map each), seeds ``seed .. seed + num_scenarios - 1``.
        out_dir: dataset directory (created).
        seed: first seed.
        steps: simulated steps per scene (a scene holds at most steps + 2 frames).
        workers: MetaDrive worker processes.
        traffic_density: MetaDrive traffic density (vehicles per 10 m of lane, roughly).

    Returns:
        The dataset (ego id ``ego``); raises RuntimeError naming the seeds that failed.
    """

    cfg = ProceduralConfig(num_scenarios=num_scenarios, start_seed=seed, steps=steps, workers=workers,
                           traffic_density=traffic_density)
    report = generate_procedural(cfg, out_dir, resume=False)
    if not report.ok:
        raise RuntimeError(f"procedural generation failed for {report.failed}")
    ds = ScenarioDataset(out_dir, repair=True)
    wanted = {scenario_filename(seed + i) for i in range(num_scenarios)}
    ds.summary = {k: v for k, v in ds.summary.items() if k in wanted}
    ds.mapping = {k: v for k, v in ds.mapping.items() if k in wanted}
    return ds


def write_baseline_dataset(scenarios: Iterable[Scenario], out_dir: str | Path) -> Path:
    """Write scenes as a dataset directory, one ``sd_baseline_<id>.pkl`` each (ids must be unique).

    Returns:
        out_dir as a Path (loadable with ``ScenarioDataset``).
    """
    out_dir = Path(out_dir)
    seen: set[str] = set()
    with DatasetWriter(out_dir, resume=False) as writer:
        for sc in scenarios:
            name = f"sd_baseline_{re.sub(r'[^A-Za-z0-9._-]', '_', sc.id)}.pkl"
            if name in seen:
                raise ValueError(f"two scenes map to the file {name!r}: give generated scenes unique ids")
            seen.add(name)
            writer.add(name, sc)
    return out_dir


def logged_on_lanes(scenario: Scenario, t0: int = 0,
                    max_offset_m: float = EncodingConfig.lane_assign_m) -> dict[str, np.ndarray]:
    """MMD features (:func:`traffic.metrics.scene_attributes`) of the logged vehicles at ``t0`` as a placement
    bound to the lanes would put them at best: a vehicle farther than ``max_offset_m`` from every vehicle-lane
    centre line moves to the nearest point of one and takes that lane's heading; sizes and speeds stay as
    logged. ``max_offset_m``: how far from a lane the traffic models still put a vehicle on it (the encoding's
    ``lane_assign_m``, the placement model's lateral bound).
    Cost O(N S) for N vehicles and S lane segments."""
    att = scene_attributes(scenario, t0)
    a, b, _ = _lane_segments(scenario)
    if not len(att["position"]) or not len(a):
        return att
    tr, e = scenario.tracks, scenario.ego_index
    ego = np.array([*tr.xy[e, t0], tr.heading[e, t0]])
    xy = from_frame(att["position"], ego)                                     # world [N, 2]
    t, _, dist = point_to_segments(xy, a, b)                                   # [N, S]
    n = np.arange(len(xy))
    j = dist.argmin(1)
    far = dist[n, j] > max_offset_m
    ab = b[j] - a[j]
    pos = to_frame(a[j] + t[n, j][:, None] * ab, ego)                          # nearest lane point, ego frame
    rel = wrap_angle(np.arctan2(ab[:, 1], ab[:, 0]) - ego[2])
    out = dict(att)
    out["position"] = np.where(far[:, None], pos, att["position"])
    out["heading"] = np.where(far[:, None], np.stack([np.cos(rel), np.sin(rel)], -1), att["heading"])
    return out


def mmd_references(reference: Iterable[Scenario], draws: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    """Reference points for the per-scene MMDs of :func:`traffic.metrics.evaluate_traffic` (mean over scenes).

    ``logged_resampled``: the logged vehicles of a scene drawn with replacement, as many as logged, against the
    logged set (mean over ``draws`` draws): the estimator's floor for a generator of exactly the logged
    distribution (a bootstrap, so it somewhat flatters: an independent draw of the same distribution would
    share no points with the log). ``logged_on_lanes``: :func:`logged_on_lanes` against the logged set.

    Returns:
        {name: {"mmd_position", "mmd_heading", "mmd_size", "mmd_speed", "mean"}}.
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[float]]] = {"logged_resampled": {}, "logged_on_lanes": {}}
    for sc in reference:
        att, lanes = scene_attributes(sc), logged_on_lanes(sc)
        n = len(att["position"])
        for k, sigma in BANDWIDTHS.items():
            x = att[k]
            boot = [mmd(x[rng.integers(0, n, n)], x, sigma) for _ in range(draws)] if n else [0.0]
            rows["logged_resampled"].setdefault(f"mmd_{k}", []).append(float(np.mean(boot)))
            rows["logged_on_lanes"].setdefault(f"mmd_{k}", []).append(mmd(lanes[k], x, sigma))
    out = {}
    for name, r in rows.items():
        means = {k: float(np.mean(v)) for k, v in r.items()}
        out[name] = means | {"mean": float(np.mean(list(means.values())))}
    return out
