"""Generate traffic on the maps of a dataset, or densify existing scenarios, with the trained models.

``generate``: keep each scenario's map, ego track and traffic lights; drop the other agents; place
``num_vehicles`` vehicles at the first frame (placement model) and drive them for the scenario's
length (trajectory model, re-predicting every 2 s). ``augment``: keep every logged agent exactly
(bit-identical arrays) and insert ``(density - 1) x`` as many vehicles as were logged near the ego.

Output scenarios keep the generated sizes (length, width), the map's real speed limits and the agent
types, and are written through the contract (``DatasetWriter``), so they load in MetaDrive's
``ScenarioEnv``. Scenes are processed in batches: one placement pass per new vehicle and one
trajectory pass per 2 s chunk serve the whole batch, which is where the speed over per-scene
generation comes from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sim_bridge.scenario import ConversionReport, DatasetWriter, ScenarioDataset, load_scenario_dict
from traffic.encoding import EncodingConfig, agent_feature_rows, collate, encode_scene, to_world, wrap

__all__ = ["GenerateConfig", "generate", "augment", "generate_scenes"]

VEHICLE_HEIGHT_M = 1.6


@dataclass(frozen=True)
class GenerateConfig:
    """Traffic generation settings."""

    num_vehicles: int = 32
    """generate: vehicles placed per scenario (besides the ego)."""
    density: float = 2.0
    """augment: target vehicle count as a multiple of the logged count near the ego."""
    batch_size: int = 8
    """Scenes generated together."""
    max_tries: int = 10
    """Placement retries per vehicle when a sampled box overlaps an existing one."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.num_vehicles < 0 or self.density < 1.0 or self.batch_size < 1:
            raise ValueError("num_vehicles >= 0, density >= 1 and batch_size >= 1 are required")


def generate_scenes(placement, trajectory, scenes: list, keep_logged: bool, num_new: list[int],
                    enc: EncodingConfig, generator, device: str = "cpu") -> list[dict]:
    """Place and drive new vehicles in a batch of scenarios.

    Args:
        placement, trajectory: the trained models (eval mode).
        scenes: ``Scenario`` objects (each with a valid ego at frame 0).
        keep_logged: keep the logged agents as context (augment) or only the ego (generate).
        num_new: vehicles to add per scene.
        enc: encoding geometry (max_agents is raised to fit the logged + new agents).
        generator: torch.Generator for reproducible sampling.

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
        new_state, new_valid = placed["agent_state"], placed["valid"]  # [B, N, 7], [B, N]
        # append the placed vehicles to the context rows and drive everybody jointly
        ctx = batch["agent_mask"]
        n_ctx = int(ctx.sum(1).max())
        order = torch.argsort((~ctx).to(torch.int8), dim=1, stable=True)[:, :n_ctx]  # context rows first
        take = lambda t: torch.gather(t, 1, order.view(*order.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))
        state = torch.cat([take(batch["agent_state"]), new_state], 1)
        types = torch.cat([take(batch["agent_type"]), torch.zeros_like(new_valid, dtype=torch.long)], 1)
        mask = torch.cat([take(ctx), new_valid], 1)
        steps = max(sc.length for sc in scenes) - 1
        tb = dict(batch)
        tb.update(agent_state=state, agent_type=types, agent_mask=mask,
                  agent_feats=agent_feature_rows(state, types, enc.range_m) * mask[..., None])
        traj = trajectory.rollout(tb, steps=steps, generator=generator) if steps > 0 else \
            state.new_zeros(*state.shape[:2], 0, 3)
    out = []
    for b in range(len(scenes)):
        keep = new_valid[b].cpu().numpy()
        out.append({"state": new_state[b].cpu().numpy()[keep],
                    "traj": traj[b, n_ctx:].cpu().numpy()[keep], "origin": encoded[b]["origin"]})
    return out


def _new_track(state: np.ndarray, traj: np.ndarray, origin: np.ndarray, length: int, z: float, dtype, idx: int,
               run: str) -> dict:
    """A ScenarioNet track dict for one generated vehicle (world frame)."""
    xy = np.concatenate([state[None, :2], traj[: length - 1, :2]])
    head = np.concatenate([[state[2]], traj[: length - 1, 2]])
    wxy, whead = to_world(xy, head, origin)
    vel = np.zeros_like(wxy)
    if length > 1:
        vel[1:] = np.diff(wxy, axis=0) / 0.1
        vel[0] = to_world(state[None, 3:5], None, np.array([0.0, 0.0, origin[2]]))[0]
    T = length
    pos = np.column_stack([wxy, np.full(T, z)])
    st = {"position": pos.astype(dtype), "heading": whead.astype(dtype), "velocity": vel.astype(dtype),
          "valid": np.ones(T, bool), "length": np.full(T, state[5], dtype), "width": np.full(T, state[6], dtype),
          "height": np.full(T, VEHICLE_HEIGHT_M, dtype)}
    oid = f"bevgen_vehicle_{idx}"
    return {"type": "VEHICLE", "state": st,
            "metadata": {"type": "VEHICLE", "track_length": T, "object_id": oid, "generated_by": run}}


def _write_scene(writer: DatasetWriter, name: str, raw: dict, placed: dict, keep_logged: bool, run: str) -> None:
    sdc = str(raw["metadata"]["sdc_id"])
    tracks = dict(raw["tracks"]) if keep_logged else {sdc: raw["tracks"][sdc]}
    ego_state = raw["tracks"][sdc]["state"]
    dtype = np.asarray(ego_state["position"]).dtype
    z = float(np.asarray(ego_state["position"])[0, 2]) if np.asarray(ego_state["position"]).shape[1] > 2 else 0.0
    for i, (s, tr) in enumerate(zip(placed["state"], placed["traj"])):
        tracks[f"bevgen_vehicle_{i}"] = _new_track(s, tr, placed["origin"], int(raw["length"]), z, dtype, i, run)
    meta = dict(raw["metadata"])
    meta["bevgen_traffic"] = {"model": run, "mode": "augment" if keep_logged else "generate",
                              "generated_vehicles": len(placed["state"])}
    meta.pop("object_summary", None)
    meta.pop("number_summary", None)
    writer.add_or_fail(name, name, {**raw, "tracks": tracks, "metadata": meta})


def _logged_vehicles_near_ego(sc, range_m: float) -> int:
    tr, ego = sc.tracks, sc.ego_index
    d = np.abs(tr.position[:, 0, :2] - tr.position[ego, 0, :2]).max(1)
    veh = np.array([t == "VEHICLE" for t in tr.types])
    return int((veh & tr.valid[:, 0] & (d <= range_m)).sum() - 1)  # minus the ego


def _run(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig, keep_logged: bool,
         on_scene: Callable[[int, int], None] | None) -> tuple[ConversionReport, dict]:
    import torch

    from traffic.train import load_models

    placement, trajectory, tcfg = load_models(run, cfg.device)
    ds = ScenarioDataset(data, repair=True)
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    stats = {"scenes": 0, "placed": 0, "requested": 0, "seconds": 0.0}
    items = list(ds.iter_checked())
    with DatasetWriter(out, resume=True, repair=True) as writer:
        for name, err in items:
            if isinstance(err, Exception):
                writer.fail(name, err)
        good = [(n, s) for n, s in items if not isinstance(s, Exception) and not writer.has(n)]
        for start in range(0, len(good), cfg.batch_size):
            chunk = [(n, s) for n, s in good[start:start + cfg.batch_size] if s.tracks.valid[s.ego_index, 0]]
            for n, s in good[start:start + cfg.batch_size]:
                if not s.tracks.valid[s.ego_index, 0]:
                    writer.fail(n, ValueError(f"{n}: the ego is not valid at frame 0"))
            if not chunk:
                continue
            if keep_logged:
                want = [int(round((cfg.density - 1.0) * max(_logged_vehicles_near_ego(s, tcfg.encoding.range_m), 1)))
                        for _, s in chunk]
            else:
                want = [cfg.num_vehicles] * len(chunk)
            t0 = time.perf_counter()
            placed = generate_scenes(placement, trajectory, [s for _, s in chunk], keep_logged, want,
                                     tcfg.encoding, gen, cfg.device)
            stats["seconds"] += time.perf_counter() - t0
            for (n, _), p, w in zip(chunk, placed, want):
                _write_scene(writer, n, load_scenario_dict(ds.path_of(n)), p, keep_logged, str(run))
                stats["scenes"] += 1
                stats["placed"] += len(p["state"])
                stats["requested"] += w
            if on_scene:
                on_scene(min(start + cfg.batch_size, len(good)), len(good))
    return writer.report, stats


def generate(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig = GenerateConfig(),
             on_scene: Callable[[int, int], None] | None = None) -> tuple[ConversionReport, dict]:
    """New traffic (``cfg.num_vehicles`` per scene) on the maps and ego routes of ``data``."""
    return _run(data, run, out, cfg, keep_logged=False, on_scene=on_scene)


def augment(data: str | Path, run: str | Path, out: str | Path, cfg: GenerateConfig = GenerateConfig(),
            on_scene: Callable[[int, int], None] | None = None) -> tuple[ConversionReport, dict]:
    """Insert vehicles into existing scenarios (logged agents kept bit-identical) up to ``cfg.density`` x."""
    return _run(data, run, out, cfg, keep_logged=True, on_scene=on_scene)
