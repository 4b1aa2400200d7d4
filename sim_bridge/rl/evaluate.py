"""Evaluate a driving policy on a scenario set: the metrics the field reports, per scenario and overall.

Policies: a training run directory (its ``checkpoints/latest.pt``), ``"random"`` (uniform actions) or
``"idm"`` (MetaDrive's IDM ego: lane following with car-following and lane-change rules). Every
result also carries the random and IDM rows measured on the same scenarios, so a number is never
read without its baselines.

Definitions (per episode; rates are means over episodes):
    route_completion  fraction of the ego's route covered (MetaDrive's measure, clipped to [0, 1]).
    success           route_completion > 0.95 with no crash and without leaving the road.
    crash             any collision (vehicle, object, pedestrian, building, sidewalk).
    out_of_road       the ego left the drivable area / its route.
    episode_reward    sum of rewards with the env's reward settings.

Simulators (``EvalConfig.simulator``): "metadrive" (ScenarioEnv / MetaDriveEnv) or "batched"
(``sim_bridge.rl.evaluate_batched``: all episodes as one batch of tensor scene slots). A run trained
on the batched backend reads the "scene" observation; in MetaDrive its evaluation env gets that
observation (``SceneObservation``) from the run's saved config, whatever ``env.observation`` says.

Scale: episodes are sharded over worker processes (one MetaDrive engine each). ``backend="ray"`` runs
the same shards as Ray tasks, so a Ray cluster spreads evaluation over machines with no code change
(``ray.init(address=...)`` before calling, or ``RAY_ADDRESS``); ``backend="process"`` uses a local pool.
"""

# The policy builder (stable-baselines3, torch) and the batched evaluator are imported lazily: the batched
# evaluator imports this module, and metric code must load without the RL stack.

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from runkit.config import to_dict
from sim_bridge.envs.factory import EnvConfig, make_env, shard

__all__ = ["EvalConfig", "evaluate", "write_metrics", "make_policy", "METRIC_KEYS", "summarize_episodes",
           "policy_env"]

METRIC_KEYS = ("success_rate", "route_completion", "crash_rate", "out_of_road_rate", "episode_reward", "num_episodes")
REFERENCE_POLICIES = ("random", "idm")


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate."""

    episodes: int = 0
    """Episodes in total; 0 = one per scenario."""
    workers: int = 1
    """Parallel shards (one MetaDrive engine each)."""
    backend: Literal["process", "ray"] = "process"
    """How shards run when workers > 1: a local process pool, or Ray tasks (local or a cluster)."""
    simulator: Literal["metadrive", "batched"] = "metadrive"
    """Where episodes run: MetaDrive, or the batched tensor simulator (scenario directories; policies
    trained on the batched backend and "random" only)."""
    deterministic: bool = True
    """Use the policy's mean action instead of sampling."""
    self_play: bool = False
    """Batched simulator only: the policy drives every moving vehicle of each scene at once (up to 8, as
    self-play training picks them) and each driven vehicle's episode is a row; ``episodes`` counts scenes."""
    reference: bool = True
    """Also evaluate the random and IDM policies on the same scenarios."""
    seed: int = 0


def make_policy(spec: str, env, seed: int, deterministic: bool = True):
    if spec == "random":
        rng = np.random.default_rng(seed)
        low, high = env.action_space.low, env.action_space.high
        return lambda obs: rng.uniform(low, high).astype(np.float32)
    if spec == "idm":
        return lambda obs: np.zeros(env.action_space.shape, np.float32)  # ignored: the IDM ego drives
    from runkit.checkpoint import load_checkpoint
    from sim_bridge.rl.train import build_policy, latest_checkpoint

    ckpt = latest_checkpoint(spec)
    if ckpt is None:
        raise FileNotFoundError(f"{spec}: not 'random', 'idm' or a training run with checkpoints/latest.pt")
    saved = load_checkpoint(ckpt)
    first = next((k for k in ("mlp_extractor.policy_net.0.weight", "actor.latent_pi.0.weight") if k in saved["model"]),
                 None)  # the first layer of PPO's or SAC's actor
    want = tuple(saved["model"][first].shape[1:]) if first else env.observation_space.shape
    if tuple(want) != tuple(env.observation_space.shape):
        trained_on = saved["config"]["env"]["data"]
        raise ValueError(
            f"{spec}: the policy takes {want[0]}-d observations (trained on {trained_on!r}) but this env gives "
            f"{env.observation_space.shape[0]}-d ones. Procedural MetaDriveEnv and replayed scenarios (ScenarioEnv) "
            "observe navigation differently; to evaluate on scenario directories, train on one (e.g. the output "
            "of `bevgen scenarios procedural`).")
    policy = build_policy(saved, env.observation_space, env.action_space)
    return lambda obs: policy.predict(obs, deterministic=deterministic)[0]


def _trained_env(spec: str) -> dict | None:
    """The env section of a training run's saved config; None for random / idm."""
    from runkit.checkpoint import load_checkpoint
    from sim_bridge.rl.train import latest_checkpoint

    ckpt = latest_checkpoint(spec) if spec not in REFERENCE_POLICIES else None
    if ckpt is None:
        return None
    config = load_checkpoint(ckpt).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("env"), dict):
        raise ValueError(f"{spec}: not a driving-policy run (its checkpoint {ckpt.name} holds no env config); "
                         "give a `bevgen sim train` run directory, 'random' or 'idm'")
    return config["env"]


def _with_trained_observation(env_cfg: EnvConfig, trained: dict | None) -> EnvConfig:
    from sim_bridge.envs.factory import SceneObsConfig

    if trained is None:
        return env_cfg
    return replace(env_cfg, observation=str(trained.get("observation", "lidar_state")),
                   scene_obs=SceneObsConfig(**trained.get("scene_obs", {})))


def policy_env(spec: str, env_cfg: EnvConfig) -> EnvConfig:
    """``env_cfg`` with the observation (kind and scene layout) the run ``spec`` was trained on; unchanged for
    random / idm. Runs saved before the layout was configurable read the default layout."""
    return _with_trained_observation(env_cfg, _trained_env(spec))


def _episode_row(info: dict, total_reward: float, steps: int, scenario: str) -> dict:
    rc = float(np.clip(info.get("route_completion", 0.0), 0.0, 1.0))
    crash = any(bool(info.get(k)) for k in ("crash", "crash_vehicle", "crash_object", "crash_human",
                                             "crash_building", "crash_sidewalk"))
    off = bool(info.get("out_of_road"))
    return {"scenario": scenario, "episode_reward": round(float(total_reward), 4), "steps": steps,
            "route_completion": round(rc, 4), "success": bool(rc > 0.95 and not crash and not off),
            "crash": crash, "out_of_road": off, "arrive_dest": bool(info.get("arrive_dest"))}


def _scenario_name(env, seed: int) -> str:
    dm = getattr(env.unwrapped.engine, "data_manager", None)
    if dm is not None and hasattr(dm, "current_scenario_summary"):
        summary = dm.current_scenario_summary
        return str(summary.get("scenario_id") or summary.get("id") or seed)
    return f"procedural_seed{seed}"


def _run_shard(job: tuple[str, EnvConfig, int, int, int, int, bool]) -> list[dict]:
    """Evaluate ``n_episodes`` of one shard in a fresh engine (a process pool or Ray task)."""
    spec, env_cfg, worker, num_workers, n_episodes, seed, deterministic = job
    env = make_env(env_cfg, worker, num_workers, ego="idm" if spec == "idm" else "agent")
    rows = []
    try:
        offset, count = shard(env_cfg.total_scenarios(), num_workers, worker)
        first = env_cfg.start_index + offset
        act = make_policy(spec, env, seed + worker, deterministic)
        for k in range(n_episodes):
            scen_seed = first + k % count
            obs, _ = env.reset(seed=scen_seed)
            total, steps, info = 0.0, 0, {}
            while True:
                obs, r, term, trunc, info = env.step(act(obs))
                total += r
                steps += 1
                if term or trunc:
                    break
            rows.append(_episode_row(info, total, steps, _scenario_name(env, scen_seed)))
    finally:
        env.close()
    return rows


def _episodes_per_worker(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


def _run(spec: str, env_cfg: EnvConfig, cfg: EvalConfig) -> list[dict]:
    n_total = cfg.episodes or env_cfg.total_scenarios()
    if cfg.simulator == "batched":
        from sim_bridge.rl.evaluate_batched import run_batched

        return run_batched(spec, env_cfg, n_total, cfg.seed, cfg.deterministic, self_play=cfg.self_play)
    if cfg.self_play:
        raise ValueError("self-play evaluation runs in the batched simulator (simulator=batched)")
    workers = max(1, min(cfg.workers, env_cfg.total_scenarios(), n_total))
    if workers > 1 and env_cfg.total_scenarios() < workers:
        workers = 1
    jobs = [(spec, env_cfg, w, workers, n, cfg.seed, cfg.deterministic)
            for w, n in enumerate(_episodes_per_worker(n_total, workers)) if n]
    if workers == 1:
        return _run_shard(jobs[0])
    if cfg.backend == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(_run_shard)
        return [row for rows in ray.get([task.remote(j) for j in jobs]) for row in rows]
    with mp.get_context("spawn").Pool(workers) as pool:
        return [row for rows in pool.map(_run_shard, jobs) for row in rows]


def summarize_episodes(rows: list[dict]) -> dict:
    """Overall metrics (METRIC_KEYS) from per-episode rows."""
    if not rows:
        return {k: 0.0 for k in METRIC_KEYS} | {"num_episodes": 0}
    mean = lambda k: round(float(np.mean([float(r[k]) for r in rows])), 4)
    return {"success_rate": mean("success"), "route_completion": mean("route_completion"),
            "crash_rate": mean("crash"), "out_of_road_rate": mean("out_of_road"),
            "episode_reward": mean("episode_reward"), "num_episodes": len(rows)}


def evaluate(policy: str, data: str | Path, cfg: EvalConfig = EvalConfig(), env: EnvConfig | None = None) -> dict:
    """Evaluate ``policy`` on the dataset directory ``data`` (or "procedural").

    Args:
        policy: a run directory, "random" or "idm".
        data: dataset directory, or "procedural" (then ``env.num_scenarios`` seeds).
        cfg: evaluation settings.
        env: env settings (reward, horizon, ...); ``data`` overrides its ``data`` field.

    Returns:
        A dict with METRIC_KEYS, ``per_scenario`` rows and ``reference`` rows (random, IDM).
    """
    env_cfg = replace(env or EnvConfig(data=str(data)), data=str(data))
    trained = _trained_env(str(policy))  # one checkpoint read: the policy reads what it was trained on
    env_cfg = _with_trained_observation(env_cfg, trained)
    obs = None if trained is None else env_cfg.observation
    if cfg.simulator == "batched" and obs not in (None, "scene"):
        raise ValueError(f"{policy}: trained on MetaDrive's {obs!r} observation; the batched simulator gives "
                         "'scene' observations only (train with --backend batched)")
    env_cfg.check_scenarios()  # every file through the safe loader before any engine starts
    rows = _run(str(policy), env_cfg, cfg)
    out = {"policy": str(policy), "data": str(data), **summarize_episodes(rows), "per_scenario": rows,
           "config": {"eval": to_dict(cfg), "env": to_dict(env_cfg)}}
    if cfg.reference:  # MetaDrive's IDM ego has no batched counterpart
        refs = ("random",) if cfg.simulator == "batched" else REFERENCE_POLICIES
        out["reference"] = {ref: summarize_episodes(rows if ref == policy else _run(ref, env_cfg, cfg))
                            for ref in refs}
    return out


def write_metrics(result: dict, out_dir: str | Path) -> Path:
    """Write ``metrics.json`` (and a one-table ``metrics.md``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(result, indent=2))
    rows = [("policy", result)] + [(f"reference: {k}", v) for k, v in result.get("reference", {}).items()]
    lines = ["| policy | success | route completion | crash | out of road | reward | episodes |",
             "|---|---|---|---|---|---|---|"]
    for name, m in rows:
        label = result["policy"] if name == "policy" else name
        lines.append(f"| {label} | {m['success_rate']:.2f} | {m['route_completion']:.2f} | {m['crash_rate']:.2f} | "
                     f"{m['out_of_road_rate']:.2f} | {m['episode_reward']:.1f} | {m['num_episodes']} |")
    (out_dir / "metrics.md").write_text("\n".join(lines) + "\n")
    return path
