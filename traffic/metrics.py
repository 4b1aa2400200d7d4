"""Traffic-generation metrics: distribution match (MMD) and realism rates (collision, off-road, kinematics).

All metrics read only the scenario contract (:mod:`sim_bridge.scenario`); world frame metres,
radians, 10 Hz (dt = 0.1 s). "Vehicles" are agents of type VEHICLE; the ego is ``metadata.sdc_id``.

**MMD** (TrafficGen, Feng et al. 2023, Sec. 4.1). For one scene, X = the generated and Y = the
reference non-ego vehicles valid at frame ``t0`` within ``range_m`` of the ego, in the ego frame at
``t0`` (x forward, y left). Per attribute, each vehicle is a feature vector:
position (x, y) [m]; heading (cos dh, sin dh) with dh = heading - ego heading (so wrap-around is
harmless); size (length, width) [m]; speed |v| [m/s]. With the Gaussian kernel
k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), the biased estimator is

    MMD^2(X, Y) = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j),
    MMD = sqrt(max(MMD^2, 0)).

A mean over an empty set counts as 0: an empty X against a non-empty Y gives sqrt(mean k(Y, Y))
(all of Y is missed); two empty sets give 0. Bandwidths are fixed (:data:`BANDWIDTHS`: position
10 m, heading 0.5 on the (cos, sin) embedding, size 1 m, speed 2 m/s) so numbers compare across runs.
Scenes are matched in one of two ways (``pairing="auto"`` picks): **paired**, when every reference
scene has generated scenes with the same id and map (same number of map features and the same
lane-point checksum): scene i with scene i when the two lists match one to one in order, else each
reference scene with the union of the generated scenes of its id and map (several samples per scene);
**pooled** otherwise (different maps, e.g. procedural traffic): reference scene i is compared with
generated scene ``perm[i % G]``, ``perm`` a permutation of the G generated scenes drawn from
``np.random.default_rng(seed)``. ``mmd_*`` is the mean over reference scenes; ``mmd_*_pooled``
compares all vehicles of all scenes as two sets (a scene-free view of the same attributes).

**collision_rate**: fraction of generated non-ego agents (all types, >= 1 valid step) whose oriented
2-D box (length x width at heading) overlaps the box of another valid agent (the ego included) at
some valid step, where at least one of the two is a VEHICLE. Overlaps among pedestrians, cyclists
and static objects are not collisions: pedestrians walk in groups and barriers stand end to end, so
their boxes overlap in real logs (15% of the shared real agents otherwise). Overlap is the
separating-axis test on the 4 box axes, vectorised over [T, A, A]. ``collision_rate_t0`` is the same
fraction among agents valid at ``t0``, at ``t0`` only; ``collision_rate_vehicle`` counts non-ego
vehicles only.

**offroad_rate**: fraction of (non-ego vehicle, valid step) pairs with the vehicle *moving*
(max(|velocity|, |p_{t+1} - p_t| / dt) > 1 m/s) and its centre within ``range_m`` of the ego at that
step (maps of real logs are cropped around the ego), whose centre is off the drivable area
D = union of lane and DRIVEWAY polygons (shapely ``intersects_xy``) union {p : dist(p, c) <= w/2 + 0.5 m}
over lane centre lines c without a polygon (Waymo; some nuScenes connectors). w/2 is the lane's half
width: the median over points of mean(left, right) of its ``width`` extras (ScenarioNet stores
per-point distances to the left/right boundary) clipped to [1.5, 2.5] m, else 1.9 m. Bike lanes are
not drivable. ``offroad_rate_all`` counts parked vehicles too: the maps hold lanes, not kerbside
parking or car parks, so on the shared real scenes 62% of all vehicle steps are "off-road"
(two nuScenes scenes are car parks) against 3% of moving ones.

**kinematic_violation_rate**: fraction of non-ego vehicle steps t (t and t+K valid, K = 3 steps,
tau = K dt = 0.3 s) with v_t = (p_{t+K} - p_t) / tau where any of: |a_t| = |v_{t+K} - v_t| / tau
> 10 m/s^2 (t+2K valid); |wrap(h_{t+K} - h_t)| / tau > 1.5 rad/s while |v_t| > 1 m/s;
|wrap(atan2(v_t) - h_t - wrap(h_{t+K} - h_t) / 2)| > 0.5 rad while |v_t| > 2 m/s (a reversing vehicle
counts as a mismatch). Why K = 3: over 0.1 s, centimetre jitter of logged positions alone gives
|a| > 10 m/s^2 at 2-5% of Waymo steps; over 0.3 s real logs are clean while jumps and spins remain.

Einsum letters: a agent, t time, p point, s segment.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from traffic.encoding import point_to_segments
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.geometry import boxes_overlap, to_frame, wrap_angle
from sim_bridge.scenario import Scenario

__all__ = ["BANDWIDTHS", "evaluate_traffic", "scene_attributes", "mmd", "box_overlaps",
           "collision_counts", "on_road", "offroad_counts", "kinematic_counts"]

DT = 0.1
BANDWIDTHS = {"position": 10.0, "heading": 0.5, "size": 1.0, "speed": 2.0}
MAX_ACCEL, MAX_YAW_RATE, MAX_SLIP = 10.0, 1.5, 0.5   # m/s^2, rad/s, rad
YAW_RATE_MIN_SPEED, SLIP_MIN_SPEED, MOVING_SPEED = 1.0, 2.0, 1.0  # m/s
KIN_WINDOW = 3  # steps over which kinematic finite differences are taken
DEFAULT_HALF_WIDTH, ROAD_MARGIN, HALF_WIDTH_CLIP = 1.9, 0.5, (1.5, 2.5)  # m
_CHUNK = 2_000_000  # elements per vectorised block (bounds memory)


# ---- MMD ---------------------------------------------------------------------------------------
def scene_attributes(scenario: Scenario, t0: int = 0, range_m: float = 50.0) -> dict[str, np.ndarray]:
    """Per-vehicle MMD features of one scene at frame ``t0``, ego frame.

    Returns:
        {"position": [N, 2] m, "heading": [N, 2] (cos, sin), "size": [N, 2] (length, width) m,
        "speed": [N, 1] m/s} for the N non-ego vehicles valid at t0 within range_m of the ego.
    """
    if not 0 <= t0 < scenario.length:
        raise ValueError(f"t0={t0} outside scenario {scenario.id!r} of length {scenario.length}")
    tr, e = scenario.tracks, scenario.ego_index
    if not tr.valid[e, t0]:
        return {k: np.zeros((0, 1 if k == "speed" else 2)) for k in BANDWIDTHS}
    keep = tr.valid[:, t0] & (np.asarray(tr.types) == "VEHICLE")
    keep[e] = False
    d = tr.xy[keep, t0] - tr.xy[e, t0]                                      # [N, 2]
    keep_r = np.linalg.norm(d, axis=-1) <= range_m
    d, idx = d[keep_r], np.flatnonzero(keep)[keep_r]
    rel = wrap_angle(tr.heading[idx, t0] - tr.heading[e, t0])
    return {"position": to_frame(tr.xy[idx, t0], np.array([*tr.xy[e, t0], tr.heading[e, t0]])),
            "heading": np.stack([np.cos(rel), np.sin(rel)], -1),
            "size": tr.size[idx, t0, :2],
            "speed": tr.speed[idx, t0][:, None]}


def _kernel_mean(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """mean_{i,j} k(x_i, y_j) for x [n, d], y [m, d], in row blocks of x (0 if either is empty)."""
    if len(x) == 0 or len(y) == 0:
        return 0.0
    rows, total = max(1, _CHUNK // (len(y) * x.shape[1])), 0.0
    for i in range(0, len(x), rows):
        d2 = ((x[i:i + rows, None, :] - y[None, :, :]) ** 2).sum(-1)       # [rows, m]
        total += float(np.exp(-d2 / (2 * sigma ** 2)).sum())
    return total / (len(x) * len(y))


def mmd(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Biased Gaussian-kernel MMD between feature sets x [n, d] and y [m, d]; sqrt of MMD^2 clipped at 0."""
    m2 = _kernel_mean(x, x, sigma) + _kernel_mean(y, y, sigma) - 2 * _kernel_mean(x, y, sigma)
    return math.sqrt(max(m2, 0.0))


def _map_key(sc: Scenario) -> tuple:
    lanes = [f.polyline[0, :2] for f in sc.map_features.values() if f.is_lane and f.polyline is not None]
    return sc.id, len(sc.map_features), round(float(np.sum(lanes)), 1) if lanes else 0.0


def _match(gen: list[Scenario], ref: list[Scenario], pairing: str, seed: int) -> tuple[str, list[list[int]]]:
    """For each reference scene, the indices of the generated scenes it is compared with."""
    gen_keys, ref_keys = [_map_key(sc) for sc in gen], [_map_key(sc) for sc in ref]
    if gen_keys == ref_keys:  # one generated scene per reference scene, in the same order
        paired = [[i] for i in range(len(ref))]
    else:
        by_key: dict[tuple, list[int]] = {}
        for i, key in enumerate(gen_keys):
            by_key.setdefault(key, []).append(i)
        paired = [by_key.get(key, []) for key in ref_keys]
    if pairing == "auto":
        pairing = "paired" if all(paired) else "pooled"
    if pairing == "paired":
        if not all(paired):
            raise ValueError("pairing='paired' but some reference scenes have no generated scene with their id/map")
        return pairing, paired
    if pairing != "pooled":
        raise ValueError(f"pairing must be 'auto', 'paired' or 'pooled', got {pairing!r}")
    perm = np.random.default_rng(seed).permutation(len(gen))
    return pairing, [[int(perm[i % len(gen)])] for i in range(len(ref))]


# ---- collisions ------------------------------------------------------------------------------
def box_overlaps(xy: np.ndarray, heading: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Pairwise overlap of oriented boxes by the separating-axis test (touching counts as overlap).

    Args:
        xy: [..., A, 2] centres (m); heading: [..., A] (rad); size: [..., A, 2] (length, width) m.

    Returns:
        bool [..., A, A], symmetric; the diagonal is True.
    """
    return boxes_overlap(xy[..., :, None, :], heading[..., :, None], size[..., :, None, :],
                xy[..., None, :, :], heading[..., None, :], size[..., None, :, :])


def collision_hits(scenario: Scenario) -> np.ndarray:
    """bool [A, T]: agent a overlaps another agent at step t (pairs with at least one vehicle).

    Broad phase: bounding circles on [t, A, A] blocks; narrow phase: :func:`_sat` on the candidate
    (t, i, j) triples only.
    """
    tr = scenario.tracks
    a = tr.num_agents
    vehicle = np.asarray(tr.types) == "VEHICLE"
    candidate_pair = np.triu(vehicle[:, None] | vehicle[None, :], k=1)       # [A, A], i < j
    xy, h, size = tr.xy.swapaxes(0, 1), tr.heading.T, tr.size[:, :, :2].swapaxes(0, 1)  # [T, A, ...]
    radius = np.linalg.norm(size, axis=-1) / 2                                # [T, A]
    v = tr.valid.T                                                            # [T, A]
    hit = np.zeros((tr.valid.shape[1], a), bool)                              # [T, A]
    tc = max(1, _CHUNK // max(a * a, 1))
    for t in range(0, scenario.length, tc):
        sl = slice(t, t + tc)
        x, y, r = xy[sl, :, 0], xy[sl, :, 1], radius[sl]                   # [t, A]
        near = (x[:, :, None] - x[:, None]) ** 2 + (y[:, :, None] - y[:, None]) ** 2 \
            <= (r[:, :, None] + r[:, None]) ** 2                              # [t, A, A]
        near &= v[sl, :, None] & v[sl, None, :] & candidate_pair
        tt, ii, jj = np.nonzero(near)
        tt = tt + t
        ov = boxes_overlap(xy[tt, ii], h[tt, ii], size[tt, ii], xy[tt, jj], h[tt, jj], size[tt, jj])
        hit[tt[ov], ii[ov]] = True
        hit[tt[ov], jj[ov]] = True
    return hit.T                                                              # [A, T]


def collision_counts(scenario: Scenario, t0: int = 0) -> dict[str, int]:
    """Counts behind collision_rate(_t0, _vehicle) for one scene (see the module docstring)."""
    tr = scenario.tracks
    counted = np.ones(tr.num_agents, bool)
    counted[scenario.ego_index] = False
    vehicle = np.asarray(tr.types) == "VEHICLE"
    hit = collision_hits(scenario)
    present = counted & tr.valid.any(1)
    at_t0 = counted & tr.valid[:, t0]
    return {"agents": int(present.sum()), "colliding": int((present & hit.any(1)).sum()),
            "agents_t0": int(at_t0.sum()), "colliding_t0": int((at_t0 & hit[:, t0]).sum()),
            "vehicles": int((present & vehicle).sum()),
            "colliding_vehicles": int((present & vehicle & hit.any(1)).sum())}


# ---- off-road --------------------------------------------------------------------------------
def _half_width(extras: dict) -> float:
    w = np.asarray(extras.get("width", []), float)
    w = w[np.isfinite(w).all(-1) & (w > 0).all(-1)] if w.ndim == 2 else w[np.isfinite(w) & (w > 0)] / 2
    if w.size == 0:
        return DEFAULT_HALF_WIDTH
    return float(np.clip(np.median(w.mean(-1) if w.ndim == 2 else w), *HALF_WIDTH_CLIP))


def on_road(scenario: Scenario, points: np.ndarray, tile_m: float = 32.0) -> np.ndarray:
    """Whether each point [P, 2] (m, world) lies on the drivable area D of the module docstring; bool [P]."""
    feats = [f for f in scenario.map_features.values()
             if (f.is_lane and f.type != "LANE_BIKE_LANE") or f.type == "DRIVEWAY"]
    has_polygon = [f.polygon is not None and len(f.polygon) >= 3 for f in feats]
    polys = [shapely.Polygon(f.polygon[:, :2]) for f, ok in zip(feats, has_polygon) if ok]
    out = np.zeros(len(points), bool)
    if polys:
        area = shapely.union_all(shapely.make_valid(np.asarray(polys, dtype=object)))
        shapely.prepare(area)
        out |= shapely.intersects_xy(area, points[:, 0], points[:, 1])
    lines = [f for f, ok in zip(feats, has_polygon) if f.is_lane and not ok and f.polyline is not None]
    if not lines or out.all():
        return out
    # nuScenes polylines carry the lane yaw as a third column: use x, y only.
    a = np.concatenate([f.polyline[:-1, :2] for f in lines])                  # [S, 2]
    b = np.concatenate([f.polyline[1:, :2] for f in lines])
    tol = np.concatenate([np.full(len(f.polyline) - 1, _half_width(f.extras) + ROAD_MARGIN) for f in lines])
    lo, hi = np.minimum(a, b) - tol[:, None], np.maximum(a, b) + tol[:, None]
    todo = np.flatnonzero(~out)
    keys = np.floor(points[todo] / tile_m).astype(np.int64)
    tiles, inv = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(inv.ravel(), kind="stable")
    groups = np.split(todo[order], np.cumsum(np.bincount(inv.ravel(), minlength=len(tiles)))[:-1])
    for key, idx in zip(tiles, groups):  # spatial tiles bound the [P, S] blocks; loops never visit pairs
        sel = ((lo < (key + 1) * tile_m) & (hi > key * tile_m)).all(1)
        if not sel.any():
            continue
        step = max(1, _CHUNK // int(sel.sum()))
        for c in range(0, len(idx), step):
            d2 = point_to_segments(points[idx[c:c + step]], a[sel], b[sel])[2] ** 2
            out[idx[c:c + step]] = (d2 <= tol[sel] ** 2).any(1)
    return out


def _non_ego_vehicles(scenario: Scenario) -> np.ndarray:
    m = np.asarray(scenario.tracks.types) == "VEHICLE"
    m[scenario.ego_index] = False
    return m


def offroad_counts(scenario: Scenario, range_m: float = 50.0) -> dict[str, int]:
    """Counts behind offroad_rate(_all) for one scene: {"points", "offroad", "points_all", "offroad_all"}."""
    tr, e = scenario.tracks, scenario.ego_index
    near = np.linalg.norm(tr.xy - tr.xy[e][None], axis=-1) <= range_m        # [A, T]
    m = tr.valid & tr.valid[e][None] & near & _non_ego_vehicles(scenario)[:, None]
    step = np.zeros(tr.valid.shape)
    step[:, :-1] = np.where(tr.valid[:, 1:] & tr.valid[:, :-1],
                            np.linalg.norm(np.diff(tr.xy, axis=1), axis=-1) / DT, 0.0)
    moving = np.maximum(tr.speed, step)[m] > MOVING_SPEED                     # [P]
    pts = tr.xy[m]
    # parked cars repeat the same centre: test each distinct centimetre once
    uniq, inv = np.unique(np.round(pts, 2), axis=0, return_inverse=True)
    off = ~on_road(scenario, uniq)[inv.ravel()] if len(pts) else np.zeros(0, bool)
    return {"points": int(moving.sum()), "offroad": int((off & moving).sum()),
            "points_all": int(len(pts)), "offroad_all": int(off.sum())}


# ---- kinematics ------------------------------------------------------------------------------
def kinematic_counts(scenario: Scenario) -> dict[str, int]:
    """Counts behind kinematic_violation_rate for one scene: {"steps", "violations", "accel", "yaw_rate", "slip"}."""
    tr, k, tau = scenario.tracks, KIN_WINDOW, KIN_WINDOW * DT
    m = _non_ego_vehicles(scenario)
    p, h, valid = tr.xy[m], tr.heading[m], tr.valid[m]                       # [a, t, 2], [a, t], [a, t]
    if p.shape[1] <= k:
        return {"steps": 0, "violations": 0, "accel": 0, "yaw_rate": 0, "slip": 0}
    ok = valid[:, k:] & valid[:, :-k]                                         # [a, t-k]
    v = (p[:, k:] - p[:, :-k]) / tau                                          # [a, t-k, 2]
    speed = np.linalg.norm(v, axis=-1)
    dh = wrap_angle(h[:, k:] - h[:, :-k])                                     # [a, t-k]
    acc = np.zeros_like(ok)
    acc[:, :-k] = ok[:, k:] & ok[:, :-k] & (np.linalg.norm(v[:, k:] - v[:, :-k], axis=-1) / tau > MAX_ACCEL)
    yaw = ok & (speed > YAW_RATE_MIN_SPEED) & (np.abs(dh) / tau > MAX_YAW_RATE)
    slip_angle = np.abs(wrap_angle(np.arctan2(v[..., 1], v[..., 0]) - h[:, :-k] - dh / 2))
    slip = ok & (speed > SLIP_MIN_SPEED) & (slip_angle > MAX_SLIP)
    return {"steps": int(ok.sum()), "violations": int((acc | yaw | slip).sum()), "accel": int(acc.sum()),
            "yaw_rate": int(yaw.sum()), "slip": int(slip.sum())}


# ---- the entry point -------------------------------------------------------------------------
def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def evaluate_traffic(generated: ScenarioDataset | list[Scenario], reference: ScenarioDataset | list[Scenario],
                     t0: int = 0, range_m: float = 50.0, pairing: str = "auto", seed: int = 0) -> dict:
    """Compare generated traffic with reference traffic (definitions in the module docstring).

    Args:
        generated: generated scenes (a dataset directory or Scenario list).
        reference: reference (e.g. logged) scenes.
        t0: frame whose vehicles enter the MMD (and collision_rate_t0).
        range_m: radius around the ego for the MMD sets and the off-road check, m.
        pairing: "auto", "paired" (same scenes, matched by id + map) or "pooled" (any scenes).
        seed: seeds the pooled scene matching.

    Returns:
        dict with mmd_position, mmd_heading, mmd_size, mmd_speed (mean over reference scenes) and
        their ``_pooled`` variants, collision_rate, collision_rate_t0, offroad_rate,
        kinematic_violation_rate (generated scenes; the same rates of the reference under
        ``reference_rates``), num_scenarios, num_agents (generated non-ego agents), num_vehicles_t0
        ({"generated", "reference"} MMD set sizes), agent_count_distance (mean over reference scenes of
        |mean generated count - reference count| / reference count, vehicles of the MMD sets),
        diversity_position (with several generated samples per reference scene: the mean position MMD between
        two samples of the same scene; NaN otherwise), pairing, bandwidths, per_scene rows.
    """
    gen, ref = list(generated), list(reference)
    if not gen or not ref:
        raise ValueError(f"need generated and reference scenes, got {len(gen)} and {len(ref)}")
    mode, matches = _match(gen, ref, pairing, seed)
    gen_att = [scene_attributes(sc, t0, range_m) for sc in gen]
    ref_att = [scene_attributes(sc, t0, range_m) for sc in ref]
    per_scene, mmds = [], {k: [] for k in BANDWIDTHS}
    for sc, att, js in zip(ref, ref_att, matches):
        row = {"reference": sc.id, "generated": [gen[j].id for j in js]}
        for k, sigma in BANDWIDTHS.items():
            row[f"mmd_{k}"] = mmd(np.concatenate([gen_att[j][k] for j in js]), att[k], sigma)
            mmds[k].append(row[f"mmd_{k}"])
        n_ref = len(att["speed"])
        row["agent_count_distance"] = abs(np.mean([len(gen_att[j]["speed"]) for j in js]) - n_ref) / max(n_ref, 1)
        if len(js) > 1:  # several samples of one scene: how different they are from each other
            row["diversity_position"] = float(np.mean([mmd(gen_att[i]["position"], gen_att[j]["position"],
                                                           BANDWIDTHS["position"])
                                                       for x, i in enumerate(js) for j in js[x + 1:]]))
        per_scene.append(row)
    out = {f"mmd_{k}": float(np.mean(v)) for k, v in mmds.items()}
    out["agent_count_distance"] = float(np.mean([r["agent_count_distance"] for r in per_scene]))
    div = [r["diversity_position"] for r in per_scene if "diversity_position" in r]
    out["diversity_position"] = float(np.mean(div)) if div else float("nan")
    for k, sigma in BANDWIDTHS.items():
        out[f"mmd_{k}_pooled"] = mmd(np.concatenate([a[k] for a in gen_att]),
                                     np.concatenate([a[k] for a in ref_att]), sigma)
    rates = _rates(gen, t0, range_m)
    ref_rates = rates if generated is reference else _rates(ref, t0, range_m)
    out.update({k: v for k, v in rates.items() if k != "per_scene"})
    out.update(num_scenarios=len(gen), num_vehicles_t0={"generated": sum(len(a["speed"]) for a in gen_att),
                                                        "reference": sum(len(a["speed"]) for a in ref_att)},
               pairing=mode, bandwidths=dict(BANDWIDTHS), t0=t0, range_m=range_m,
               reference_rates={k: v for k, v in ref_rates.items() if k != "per_scene"},
               per_scene=per_scene, per_generated_scene=rates["per_scene"])
    return out


def _rates(scenes: list[Scenario], t0: int, range_m: float) -> dict:
    """Collision, off-road and kinematic rates pooled (micro-averaged) over scenes."""
    rows = []
    for sc in scenes:
        rows.append({"id": sc.id, **{f"collision_{k}": v for k, v in collision_counts(sc, t0).items()},
                     **{f"offroad_{k}": v for k, v in offroad_counts(sc, range_m).items()},
                     **{f"kinematic_{k}": v for k, v in kinematic_counts(sc).items()}})
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k != "id"}
    return {"collision_rate": _rate(tot["collision_colliding"], tot["collision_agents"]),
            "collision_rate_t0": _rate(tot["collision_colliding_t0"], tot["collision_agents_t0"]),
            "collision_rate_vehicle": _rate(tot["collision_colliding_vehicles"], tot["collision_vehicles"]),
            "offroad_rate": _rate(tot["offroad_offroad"], tot["offroad_points"]),
            "offroad_rate_all": _rate(tot["offroad_offroad_all"], tot["offroad_points_all"]),
            "kinematic_violation_rate": _rate(tot["kinematic_violations"], tot["kinematic_steps"]),
            "num_agents": tot["collision_agents"], "per_scene": rows}
