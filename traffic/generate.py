"""Generate traffic on the maps of a dataset, or densify existing scenarios, with the trained models.

``generate``: keep each scenario's map, ego track and traffic lights; drop the other agents; place
``num_vehicles`` vehicles at the first frame (placement model) and drive them for the scenario's
length (trajectory model, re-predicting every 2 s). ``augment``: keep every logged agent exactly
(bit-identical arrays) and insert ``(density - 1) x`` as many vehicles as were logged near the ego.

Output scenarios keep the generated sizes (length, width), the map's real speed limits and the agent
types. They are built with the typed edits of :mod:`sim_bridge.scenario_edit` (``keep_tracks``, ``with_tracks``,
``Track.extended``; new vehicles stored in the ego's float dtype) and written through the contract
(``DatasetWriter``), so they load in MetaDrive's ``ScenarioEnv``. Scenes are processed in batches: one
placement pass per new vehicle and one trajectory pass per 2 s chunk serve the whole batch, which is where
the speed over per-scene generation comes from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from sim_bridge.dataset import ConversionReport, DatasetWriter, ScenarioDataset
from sim_bridge.scenario import Scenario
from sim_bridge.scenario_edit import Track
from traffic.encoding import EncodingConfig, agent_feature_rows, collate, encode_scene, to_world
from traffic.follow import FollowConfig, follow_routes
from traffic.lanes import LaneGraph, Routes, build_routes, route_stops
from traffic.train import load_models

# torch and traffic.metrics (shapely) are imported lazily: importing this module stays light.

__all__ = ["GenerateConfig", "generate", "augment", "generate_scenes", "extend_logged"]

VEHICLE_HEIGHT_M = 1.6
# placements asked per vehicle wanted: some are dropped by the yield check (augment loses more: replayed
# logged traffic cannot yield to an inserted vehicle standing in its way)
OVERSAMPLE = {"generate": 1.5, "augment": 3.0}


@dataclass(frozen=True)
class GenerateConfig:
    """Traffic generation settings."""

    num_vehicles: int = 32
    """generate: vehicles placed per scenario (besides the ego); -1 = as many as were logged near the ego."""
    density: float = 2.0
    """augment: target vehicle count as a multiple of the logged count near the ego."""
    batch_size: int = 8
    """Scenes generated together."""
    max_tries: int = 10
    """Placement retries per vehicle when a sampled box overlaps an existing one."""
    seed: int = 0
    device: str = "cpu"
    extend: bool = False
    """augment: also continue logged vehicles whose tracks end early (logged steps stay bit-identical)."""

    def __post_init__(self):
        if self.num_vehicles < -1 or self.density < 1.0 or self.batch_size < 1:
            raise ValueError("num_vehicles >= -1, density >= 1 and batch_size >= 1 are required")


def generate_scenes(placement, trajectory, scenes: list, keep_logged: bool, num_new: list[int],
                    enc: EncodingConfig, generator, device: str = "cpu", steps: int | None = None) -> list[dict]:
    """Place and drive new vehicles in a batch of scenarios.

    Args:
        placement, trajectory: the trained models (eval mode).
        scenes: ``Scenario`` objects (each with a valid ego at frame 0).
        keep_logged: keep the logged agents as context (augment) or only the ego (generate).
        num_new: vehicles to add per scene.
        enc: encoding geometry (max_agents is raised to fit the logged + new agents).
        generator: torch.Generator for reproducible sampling.
        steps: trajectory steps to generate (default: the longest scenario's length - 1).

    Returns:
        Per scene: ``{"state": [N, 7] scene frame at t0, "traj": [N, T-1, 3] scene frame, "origin": [3]}``
        for the N vehicles actually placed (rejections can leave fewer than asked).
    """
    import torch

    n_max = max(num_new) if num_new else 0
    enc = EncodingConfig(**{**enc.__dict__, "max_agents": enc.max_agents + n_max})
    encoded = [encode_scene(sc, 0, enc) for sc in scenes]
    if not keep_logged:
        for e in encoded:
            e["agent_mask"][1:] = False
            e["agent_lane"][1:] = -1
    batch = {k: v.to(device) for k, v in collate(encoded).items()}
    with torch.no_grad():
        placed = placement.sample(batch, torch.tensor(num_new, device=device), generator=generator)
        new_state, new_valid = placed.agent_state, placed.valid  # [B, N, 7], [B, N]
        # append the placed vehicles to the context rows and drive everybody jointly
        ctx = batch["agent_mask"]
        n_ctx = int(ctx.sum(1).max())
        order = torch.argsort((~ctx).to(torch.int8), dim=1, stable=True)[:, :n_ctx]  # context rows first
        take = lambda t: torch.gather(t, 1,
                                      order.view(*order.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))
        state = torch.cat([take(batch["agent_state"]), new_state], 1)
        types = torch.cat([take(batch["agent_type"]), torch.zeros_like(new_valid, dtype=torch.long)], 1)
        mask = torch.cat([take(ctx), new_valid], 1)
        steps = max(sc.length for sc in scenes) - 1 if steps is None else steps
        tb = dict(batch)
        hist = torch.cat([take(batch["agent_hist"]), new_state.new_zeros(*new_state.shape[:2], 2)], 1)  # placed: none
        tb.update(agent_state=state, agent_hist=hist, agent_type=types, agent_mask=mask,
                  agent_feats=agent_feature_rows(state, types, enc.range_m) * mask[..., None])
        traj = trajectory.rollout(tb, steps=steps, generator=generator) if steps > 0 else \
            state.new_zeros(*state.shape[:2], 0, 3)
    out = []
    for b in range(len(scenes)):
        keep = new_valid[b].cpu().numpy()
        out.append({"state": new_state[b].cpu().numpy()[keep],
                    "traj": traj[b, n_ctx:].cpu().numpy()[keep], "origin": encoded[b]["origin"]})
    return out


def extend_logged(trajectory, sc: Scenario, enc: EncodingConfig, generator, device: str = "cpu",
                  min_missing: int = 5) -> tuple[Scenario, dict[str, int]]:
    """Continue logged vehicles whose track ends at least ``min_missing`` steps before the scenario does.

    Logged steps stay bit-identical; only the steps after a track's last valid one are filled (and marked
    valid) with the trajectory model's rollout from that frame (:meth:`Track.extended`). Agents ending at the
    same frame share one encoding and one rollout.

    Returns:
        (the scenario with the extended tracks, {agent id: first extended step}).
    """
    import torch

    tr, T = sc.tracks, sc.length
    by_end: dict[int, list[int]] = {}
    for i, _ in enumerate(tr.ids):
        v = np.flatnonzero(tr.valid[i])
        if tr.types[i] != "VEHICLE" or i == sc.ego_index or len(v) < 2:
            continue
        e = int(v[-1])
        if e <= T - 1 - min_missing and tr.valid[sc.ego_index, e]:
            by_end.setdefault(e, []).append(i)
    extended: dict[str, Track] = {}
    for e, rows in sorted(by_end.items()):
        enc_e = encode_scene(sc, e, enc)
        batch = {k: v.to(device) for k, v in collate([enc_e]).items()}
        with torch.no_grad():
            traj = trajectory.rollout(batch, steps=T - 1 - e, generator=generator)[0].cpu().numpy()  # [A, S, 3]
        for r, i in enumerate(enc_e["agent_index"]):
            if i in rows:
                wxy, wh = to_world(traj[r, :, :2], traj[r, :, 2], enc_e["origin"])
                extended[tr.ids[i]] = sc.track(tr.ids[i]).extended(e + 1, wxy, wh)
    out = sc.with_tracks(extended) if extended else sc
    return out, {aid: int(t.metadata["bevgen_extended_from"]) for aid, t in extended.items()}


def _new_track(state: np.ndarray, traj: np.ndarray, origin: np.ndarray, length: int, z: float, dtype, oid: str,
               run: str, timed: tuple[np.ndarray, np.ndarray] | None = None) -> Track:
    """One generated vehicle (world frame) with its float state written in ``dtype``; ``state`` [7] and ``traj``
    [T-1, 3] in the scene frame of ``origin`` [3]; ``timed`` = (xy [T, 2], heading [T]) world poses from
    :func:`_time_paths` replacing the raw prediction."""
    xy = np.concatenate([state[None, :2], traj[: length - 1, :2]])
    head = np.concatenate([[state[2]], traj[: length - 1, 2]])
    wxy, whead = to_world(xy, head, origin) if timed is None else timed
    vel = np.zeros_like(wxy)
    if length > 1:
        vel[1:] = np.diff(wxy, axis=0) / 0.1
        vel[0] = to_world(state[None, 3:5], None, np.array([0.0, 0.0, origin[2]]))[0]
    return Track.from_arrays(
        "VEHICLE", np.column_stack([wxy, np.full(length, z)]), whead, vel, length=state[5], width=state[6],
        height=VEHICLE_HEIGHT_M, dtype=dtype,
        metadata={"type": "VEHICLE", "track_length": length, "object_id": oid, "generated_by": run})


def _time_paths(scenes: list[Scenario], placed: list[dict], keep_logged: bool,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Drive the placed vehicles of a batch of scenes along their lane graphs (:mod:`traffic.follow`).

    Each vehicle is snapped to its lane (offset clipped to ``FollowConfig.max_lateral``), routed along connected
    lanes following the trajectory model's predicted path at every branch, and driven with IDM gap keeping to
    the agents that stay in the scene (replayed, they do not react), to the vehicles placed before it, to red
    lights and to the end of the mapped lanes, wanting the model's predicted speed (capped at the lane's limit).
    The scenes step together in one :func:`follow_routes` call (O(T) numpy steps for the batch).

    Returns:
        Per scene (xy [N, T, 2], heading [N, T], hit bool [N]) in the world frame; hit = not on a lane at
        placement, or overlapping somebody at some step (such vehicles are dropped).
    """
    T_max = max(sc.length for sc in scenes)
    pad_t = lambda x, fill=0: np.concatenate(  # noqa: E731
        [x, np.full((*x.shape[:1], T_max - x.shape[1], *x.shape[2:]), fill, x.dtype)], 1)
    rng = np.random.default_rng(seed)
    out, parts = [], []
    for g, (sc, p) in enumerate(zip(scenes, placed)):
        tr, T = sc.tracks, sc.length
        n = len(p["state"])
        path = np.concatenate([p["state"][:, None, :3], p["traj"][:, : T - 1, :3]], 1) if n else np.zeros((0, T, 3))
        path = np.concatenate([path, np.repeat(path[:, -1:], T - path.shape[1], 1)], 1)  # a short prediction waits
        wxy, wh = to_world(path[..., :2], path[..., 2], p["origin"])
        graph = LaneGraph.from_scenario(sc)
        lane, s, lat = graph.snap(wxy[:, 0], wh[:, 0])
        ok = np.flatnonzero(lane >= 0)
        out.append((wxy.copy(), wh.copy(), lane < 0))
        if not len(ok):
            continue
        speed = np.zeros((n, T))
        speed[:, 1:] = np.linalg.norm(np.diff(wxy, axis=1), axis=-1) / 0.1
        speed[:, 0] = np.linalg.norm(p["state"][:, 3:5], axis=-1)
        limit = graph.limit[np.maximum(lane, 0)]
        desired = np.where(limit[:, None] > 0, np.minimum(speed, 1.1 * limit[:, None] + 0.5), speed)
        length = float(min(desired.sum(1).max() * 0.1 + 30.0, 400.0))
        routes = build_routes(graph, lane[ok], s[ok], length, guides=[wxy[i] for i in ok], rng=rng)
        (stop_s, stop_light), red = route_stops(routes, graph, sc)
        kept = list(range(tr.num_agents)) if keep_logged else [sc.ego_index]
        lat = np.clip(lat, -FollowConfig.max_lateral, FollowConfig.max_lateral)
        parts.append(dict(scene=g, ok=ok, routes=routes, speed0=speed[ok, 0], lat=lat[ok], size=p["state"][ok, 5:7],
                          desired=pad_t(desired[ok], 0.0), red=pad_t(red, False), stop_s=stop_s, stop_light=stop_light,
                          o_xy=pad_t(tr.xy[kept]), o_h=pad_t(tr.heading[kept]), o_size=pad_t(tr.size[kept][..., :2]),
                          o_valid=pad_t(tr.valid[kept], False), o_speed=pad_t(tr.speed[kept])))
    if not parts:
        return out
    cat = lambda k: np.concatenate([q[k] for q in parts])  # noqa: E731
    k_max = max(q["stop_s"].shape[1] for q in parts)
    offsets = np.cumsum([0] + [len(q["red"]) for q in parts])[:-1]
    stop_s = np.concatenate([np.pad(q["stop_s"], ((0, 0), (0, k_max - q["stop_s"].shape[1])), constant_values=np.inf)
                             for q in parts])
    stop_light = np.concatenate([np.pad(np.where(q["stop_light"] >= 0, q["stop_light"] + o, -1),
                                        ((0, 0), (0, k_max - q["stop_light"].shape[1])), constant_values=-1)
                                 for q, o in zip(parts, offsets)])
    fxy, fh, _, fhit = follow_routes(
        Routes.concat([q["routes"] for q in parts]), cat("speed0"), cat("lat"), cat("size"), cat("desired"),
        cat("o_xy"), cat("o_h"), cat("o_size"), cat("o_valid"), cat("o_speed"), red=cat("red"),
        stops=(stop_s, stop_light), group=np.concatenate([np.full(len(q["ok"]), q["scene"]) for q in parts]),
        others_group=np.concatenate([np.full(len(q["o_xy"]), q["scene"]) for q in parts]))
    start = 0
    for q in parts:
        m, T = len(q["ok"]), scenes[q["scene"]].length
        xy, h, hit = out[q["scene"]]
        xy[q["ok"]], h[q["ok"]], hit[q["ok"]] = fxy[start:start + m, :T], fh[start:start + m, :T], fhit[start:start + m]
        start += m
    return out


def _write_scene(writer: DatasetWriter, name: str, sc: Scenario, placed: dict, timed: tuple, keep_logged: bool,
                 run: str, want: int) -> tuple[int, int]:
    """Drop the vehicles that are still hit (``timed`` from :func:`_time_paths`), keep the first ``want``, write
    the scene (new vehicles stored in the ego's float dtype). Returns (kept, dropped)."""
    ego = sc.track(sc.sdc_id)
    z = float(ego.position[0, 2])
    T = sc.length
    txy, th, hit = timed
    keep = np.flatnonzero(~hit)[:want]
    new = {f"bevgen_vehicle_{k}": _new_track(placed["state"][i], placed["traj"][i], placed["origin"], T, z,
                                             ego.dtype, f"bevgen_vehicle_{k}", run, timed=(txy[i], th[i]))
           for k, i in enumerate(keep)}
    meta = dict(sc.metadata)
    meta["bevgen_traffic"] = {"model": run, "mode": "augment" if keep_logged else "generate",
                              "generated_vehicles": int(len(keep)), "dropped_still_hit": int(hit.sum())}
    meta.pop("object_summary", None)
    meta.pop("number_summary", None)
    base = sc if keep_logged else sc.keep_tracks([sc.sdc_id])
    writer.add_or_fail(name, name, replace(base.with_tracks(new), metadata=meta))
    return int(len(keep)), int(hit.sum())


REFILL_ROUNDS = 2  # extra sampling rounds, each doubling the ask, for scenes left short of their request


def _refill(placement, trajectory, scenes, want, ask, placed, timed, keep_logged, tcfg, gen, cfg) -> None:
    """Resample the scenes of a batch whose kept vehicles fall short of ``want`` (placements rejected, or
    still hit after yielding), asking twice as many each round; a scene keeps its best round. In place."""
    for _ in range(REFILL_ROUNDS):
        short = [i for i, (w, tm) in enumerate(zip(want, timed)) if int((~tm[2]).sum()) < w]
        if not short:
            return
        for i in short:
            ask[i] *= 2
        again = generate_scenes(placement, trajectory, [scenes[i] for i in short], keep_logged, [ask[i] for i in short],
                                tcfg.encoding, gen, cfg.device)
        for i, p, tm in zip(short, again, _time_paths([scenes[i] for i in short], again, keep_logged, cfg.seed)):
            if int((~tm[2]).sum()) > int((~timed[i][2]).sum()):
                placed[i], timed[i] = p, tm


def _logged_vehicles_near_ego(sc, range_m: float) -> int:
    tr, ego = sc.tracks, sc.ego_index
    d = np.abs(tr.position[:, 0, :2] - tr.position[ego, 0, :2]).max(1)
    veh = np.array([t == "VEHICLE" for t in tr.types])
    return int((veh & tr.valid[:, 0] & (d <= range_m)).sum() - 1)  # minus the ego


def _run(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig, keep_logged: bool,
         on_scene: Callable[[int, int], None] | None) -> tuple[ConversionReport, dict]:
    import torch

    placement, trajectory, tcfg = load_models(run, cfg.device)
    ds = ScenarioDataset(data, repair=True)
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    stats = {"scenes": 0, "placed": 0, "requested": 0, "seconds": 0.0}
    with DatasetWriter(out, resume=True, repair=True) as writer:
        todo = []
        for n in ds.names:
            if writer.has(n):
                writer.reuse(n)  # written by an earlier run into ``out``: kept, and counted as kept
            else:
                todo.append(n)
        if on_scene:
            on_scene(0, len(todo))
        for start in range(0, len(todo), cfg.batch_size):
            # each file is read once; the Scenario drives the models and is written back through typed edits
            # (logged agents bit-identical); only one batch of scenes is in memory at a time
            chunk = []
            for n, s in ds.iter_checked(todo[start:start + cfg.batch_size]):
                if isinstance(s, Exception):
                    writer.fail(n, s)
                elif not s.tracks.valid[s.ego_index, 0]:
                    writer.fail(n, ValueError(f"{n}: the ego is not valid at frame 0"))
                else:
                    chunk.append((n, s))
            if not chunk:
                continue
            if keep_logged:
                want = [int(round((cfg.density - 1.0) * max(_logged_vehicles_near_ego(s, tcfg.encoding.range_m), 1)))
                        for _, s in chunk]
            elif cfg.num_vehicles < 0:
                want = [max(_logged_vehicles_near_ego(s, tcfg.encoding.range_m), 0) for _, s in chunk]
            else:
                want = [cfg.num_vehicles] * len(chunk)
            t0 = time.perf_counter()
            # oversample: vehicles that logged traffic would still run into are dropped after timing
            ask = [int(np.ceil(w * OVERSAMPLE["augment" if keep_logged else "generate"])) for w in want]
            placed = generate_scenes(placement, trajectory, [s for _, s in chunk], keep_logged, ask,
                                     tcfg.encoding, gen, cfg.device)
            scenes = []
            for _, s in chunk:
                if keep_logged and cfg.extend:  # extended tracks are obstacles for the yield check too
                    s, ext = extend_logged(trajectory, s, tcfg.encoding, gen, cfg.device)
                    stats["extended"] = stats.get("extended", 0) + len(ext)
                scenes.append(s)
            timed = _time_paths(scenes, placed, keep_logged, cfg.seed)
            _refill(placement, trajectory, scenes, want, ask, placed, timed, keep_logged, tcfg, gen, cfg)
            for (n, _), s, p, tm, w in zip(chunk, scenes, placed, timed, want):
                kept, dropped = _write_scene(writer, n, s, p, tm, keep_logged, str(run), w)
                stats["scenes"] += 1
                stats["placed"] += kept
                stats["dropped"] = stats.get("dropped", 0) + dropped
                stats["requested"] += w
            stats["seconds"] += time.perf_counter() - t0
            if on_scene:
                on_scene(min(start + cfg.batch_size, len(todo)), len(todo))
    return writer.report, stats


def generate(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig = GenerateConfig(),
             on_scene: Callable[[int, int], None] | None = None) -> tuple[ConversionReport, dict]:
    """New traffic (``cfg.num_vehicles`` per scene) on the maps and ego routes of ``data``."""
    return _run(data, run, out, cfg, keep_logged=False, on_scene=on_scene)


def augment(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig = GenerateConfig(),
            on_scene: Callable[[int, int], None] | None = None) -> tuple[ConversionReport, dict]:
    """Insert vehicles into existing scenarios (logged agents kept bit-identical) up to ``cfg.density`` x."""
    return _run(data, run, out, cfg, keep_logged=True, on_scene=on_scene)
