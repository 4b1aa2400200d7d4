"""Throughput of the batched tensor simulator against MetaDrive's ScenarioEnv on the same scenes.

``bench_batched_sim()`` steps 128 / 256 / 512 scenes together (the 7 shared real scenes repeated; the
ego driven by uniform random actions, everyone else replayed, finished scenes auto-reset through the
SB3 ``VecEnv``), then MetaDrive's ScenarioEnv on the same scenes (a constant action, ~300 steps
including resets), and reports steps/s (median of 3 timing windows) and their ratio, plus how the
batched cost grows with agents per scene and boundary segments per grid cell, IDM traffic and self-play
(every moving vehicle driven). Torch runs with 2 threads (and 1 for reference).

    python benchmarks/batched_sim.py [--quick]
    python benchmarks/batched_sim.py --transfer [OUT]   # bench_batched_transfer(): PPO on batched, eval in both
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]


def _vec_steps_per_s(batch, num_envs: int, steps: int, warmup: int = 5, seed: int = 0, traffic: str = "log",
                     device: str = "cpu") -> float:
    """Env steps/s of ``BatchedVecEnv`` (median of 3 windows of ``steps`` steps)."""
    from sim_bridge.batched.env import BatchedEnvConfig, BatchedVecEnv

    env = BatchedVecEnv(batch, num_envs, BatchedEnvConfig(traffic=traffic), device=device)
    env.reset()
    acts = np.random.default_rng(seed).uniform(-1, 1, (warmup + steps, num_envs, 2)).astype(np.float32)
    for i in range(warmup):
        env.step(acts[i])
    return _median_rate(lambda i: env.step(acts[warmup + i % steps]), steps) * num_envs


def _median_rate(step, steps: int, windows: int = 3) -> float:
    """Median over ``windows`` timing windows of ``steps`` calls of step(i): calls per second. The 2-core VM
    this runs on is shared; one window moved by up to 30% between runs, the median of three by much less."""
    rates = []
    for w in range(windows):
        t0 = time.perf_counter()
        for i in range(steps):
            step(w * steps + i)
        rates.append(steps / (time.perf_counter() - t0))
    return float(np.median(rates))


def _self_play_steps_per_s(num_scenes: int, steps: int, warmup: int = 5, seed: int = 0) -> dict:
    """Self-play on the 7 real scenes: every driven vehicle acts (uniform random actions); slot steps/s
    (the VecEnv's num_envs per step, waiting slots included) and agent steps/s (driven vehicles only)."""
    from sim_bridge.batched.env import BatchedEnvConfig
    from sim_bridge.batched.selfplay import SelfPlayVecEnv
    from sim_bridge.batched.state import SelfPlayConfig, load_batched

    env = SelfPlayVecEnv(load_batched(REAL_DIR, self_play=SelfPlayConfig()), num_scenes, BatchedEnvConfig())
    env.reset()
    acts = np.random.default_rng(seed).uniform(-1, 1, (warmup + steps, env.num_envs, 2)).astype(np.float32)
    for i in range(warmup):
        env.step(acts[i])
    agent0 = env.active_agent_steps
    rate = _median_rate(lambda i: env.step(acts[warmup + i % steps]), steps)
    active = (env.active_agent_steps - agent0) / (3 * steps * env.num_envs)  # share of slots driving
    return {"slots": env.num_envs, "slot_steps_per_s": round(env.num_envs * rate, 1),
            "agent_steps_per_s": round(env.num_envs * rate * active, 1)}


def _more_agents(batch, factor: int):
    """The same scenes with every non-ego agent present ``factor`` times (each copy 0.5 m further along x)."""
    a = batch.frames.shape[2]
    frames = [batch.frames] + [batch.frames.clone() for _ in range(factor - 1)]
    for i, f in enumerate(frames[1:], 1):
        f[..., 0] += 0.5 * i
    is_ego = torch.arange(a) == batch.ego[:, None]
    valid = [batch.frame_valid] + [batch.frame_valid & ~is_ego[:, None, :] for _ in range(factor - 1)]
    return dataclasses.replace(batch, frames=torch.cat(frames, 2), frame_valid=torch.cat(valid, 2),
                               path_s=batch.path_s.repeat(1, 1, factor), agent_type=batch.agent_type.repeat(1, factor),
                               agent_mask=batch.agent_mask.repeat(1, factor))


def _more_segments(batch, factor: int):
    """The same scenes with ``factor`` times as many boundary segment slots per grid cell (copies)."""
    return dataclasses.replace(batch, grid=batch.grid.repeat(1, 1, factor),
                               grid_segments=batch.grid_segments.repeat(1, 1, factor, 1, 1))


def _metadrive_steps_per_s(steps: int = 300) -> dict:
    from sim_bridge.envs.factory import EnvConfig, make_env

    env = make_env(EnvConfig(data=str(REAL_DIR), horizon=1000))
    try:
        t0 = time.perf_counter()
        env.reset(seed=0)
        reset_s = time.perf_counter() - t0
        done_steps, resets, seed = 0, 1, 0
        t0 = time.perf_counter()
        while done_steps < steps:
            _, _, term, trunc, _ = env.step(np.array([0.0, 0.3]))
            done_steps += 1
            if term or trunc:
                seed = (seed + 1) % 7
                env.reset(seed=seed)
                resets += 1
        wall = time.perf_counter() - t0
    finally:
        env.close()
    return {"steps_per_s": round(steps / wall, 1), "steps": steps, "resets": resets,
            "first_reset_s": round(reset_s, 2)}


def bench_batched_sim(quick: bool = False) -> dict:
    """Batched env steps/s at 128/256/512 scenes vs MetaDrive ScenarioEnv steps/s on the same 7 real scenes."""
    from sim_bridge.batched.state import load_batched

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    steps = 10 if quick else 40
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    batch = load_batched(REAL_DIR)
    load_s = time.perf_counter() - t0
    res: dict = {"what": "batched env steps/s (SB3 VecEnv step incl. observation, auto-reset, infos); ego random "
                         "actions, others replayed; 7 real scenes repeated; CPU",
                 "load_s": round(load_s, 2), "scenario_set_mb": round(batch.nbytes / 1e6, 2),
                 "padded": {"agents": int(batch.frames.shape[2]), "steps": int(batch.frames.shape[1]),
                            "segments_per_cell": int(batch.grid.shape[2]), "route_points": int(batch.route.shape[1])}}
    for th in (2, 1):
        torch.set_num_threads(th)
        res[f"threads_{th}"] = {f"scenes_{b}": round(_vec_steps_per_s(batch, b, steps), 1) for b in (128, 256, 512)}
    # growth measured on 1 thread: steadier than 2 on a shared 2-core machine
    res["cost_growth_256_scenes_1_thread"] = {
        "agents_x1": res["threads_1"]["scenes_256"],
        **{f"agents_x{f}": round(_vec_steps_per_s(_more_agents(batch, f), 256, steps), 1) for f in (2, 4)},
        **{f"segments_per_cell_x{f}": round(_vec_steps_per_s(_more_segments(batch, f), 256, steps), 1) for f in (2, 4)}}
    # self-play (the policy drives up to 8 vehicles per scene, each an agent): same scenes, 1 thread
    res["self_play_1_thread"] = {f"scenes_{b}": _self_play_steps_per_s(b, steps) for b in (16, 64)}
    # IDM traffic (logged vehicles yield to the ego): same scenes, 1 thread
    res["idm_traffic_1_thread"] = {f"scenes_{b}": round(_vec_steps_per_s(batch, b, steps, traffic="idm"), 1)
                                   for b in (128, 256)}
    torch.set_num_threads(2)
    md = _metadrive_steps_per_s(100 if quick else 300)
    res["metadrive_scenario_env"] = md
    best = max(*res["threads_2"].values(), *res["threads_1"].values())
    res["best_steps_per_s"] = best
    res["ratio_vs_metadrive"] = round(best / md["steps_per_s"], 1)
    res["target"] = ">= 20,000 steps/s and >= 50x MetaDrive"
    torch.set_num_threads(threads)
    return res


def bench_batched_sim_gpu(device: str = "cuda", scenes: tuple[int, ...] = (512, 2048, 8192, 16384),
                          steps: int = 40) -> dict:
    """GPU rows: the same VecEnv (random ego actions, logs replayed, observations copied back to the host as SB3
    expects) on ``device`` at more scenes than a CPU holds, plus IDM traffic; skipped without CUDA."""
    from sim_bridge.batched.state import load_batched

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    if device.startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    batch = load_batched(REAL_DIR)
    res: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
                 "what": "batched env steps/s on the GPU (SB3 VecEnv step incl. observation copy to the host, "
                         "auto-reset, infos); ego random actions, others replayed; 7 real scenes repeated"}
    res["log_replay"] = {f"scenes_{b}": round(_vec_steps_per_s(batch, b, steps, device=device), 1) for b in scenes}
    res["idm_traffic"] = {f"scenes_{b}": round(_vec_steps_per_s(batch, b, steps, traffic="idm", device=device), 1)
                          for b in scenes[:2]}
    res["best_steps_per_s"] = max(res["log_replay"].values())
    return res


TRANSFER_KEYS = ("route_completion", "success_rate", "crash_rate", "out_of_road_rate", "episode_reward")


def transfer_rows(runs: dict[str, Path], splits: dict[str, Path]) -> dict:
    """Each trained run (name -> run directory) evaluated in both simulators on each split (name -> scenario
    directory): deterministic policy, one episode per scene, the same ("scene") observation and episode rules.

    Returns {"seeds": {name: {split: {batched, metadrive, metadrive_minus_batched}}}, split: {batched, metadrive,
    route_completion_gap_per_seed, route_completion_gap_mean, route_completion_gap_mean_abs}}. O(runs x scenes).
    """
    from sim_bridge.rl.evaluate import EvalConfig, evaluate

    res: dict = {"seeds": {}}
    for name, run in runs.items():
        row: dict = {}
        for split, data in splits.items():
            row[split] = {}
            for sim in ("batched", "metadrive"):
                t0 = time.perf_counter()
                m = evaluate(str(run), str(data), EvalConfig(simulator=sim, reference=False, seed=int(name)))
                row[split][sim] = {**{k: m[k] for k in TRANSFER_KEYS}, "episodes": m["num_episodes"],
                                   "eval_s": round(time.perf_counter() - t0, 1),
                                   "per_scenario": [{k: r[k] for k in ("scenario", "route_completion", "success",
                                                                       "crash", "out_of_road", "steps")}
                                                    for r in m["per_scenario"]]}
            b, md = row[split]["batched"], row[split]["metadrive"]
            row[split]["metadrive_minus_batched"] = {k: round(md[k] - b[k], 4) for k in TRANSFER_KEYS}
        res["seeds"][name] = row
    rows = list(res["seeds"].values())
    for split in splits:
        res[split] = {sim: {k: round(float(np.mean([r[split][sim][k] for r in rows])), 4) for k in TRANSFER_KEYS}
                      for sim in ("batched", "metadrive")}
        gaps = [r[split]["metadrive_minus_batched"]["route_completion"] for r in rows]
        res[split]["route_completion_gap_per_seed"] = gaps
        res[split]["route_completion_gap_mean"] = round(float(np.mean(gaps)), 4)
        res[split]["route_completion_gap_mean_abs"] = round(float(np.mean(np.abs(gaps))), 4)
    return res


def bench_batched_transfer(budget_steps: int = 1_000_000, num_scenes: int = 128, held_out: int = 3,
                           out: str | Path | None = None, seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                           rl60_work: str | Path | None = ROOT / "benchmarks" / "work" / "rl_60min") -> dict:
    """PPO trained on the batched simulator, evaluated in both simulators: does the policy transfer to MetaDrive?

    Two sets of policies:

    * for each seed, ``budget_steps`` of PPO (``configs/sim/ppo_batched.yaml`` settings, ``num_scenes`` slots)
      on the real scenes' training split only (``split_real``: ``held_out`` scenes held out, datasets
      round-robin); a finished seed (``train_summary.json`` at the budget) is not retrained;
    * ``rl_60min``: the policies of the 60-minute recipe (``configs/sim/ppo_60min.yaml``, real training split
      plus 100 procedural scenes) found in ``rl60_work/seed*`` (made by the ``rl_60min`` benchmark; skipped
      with a reason where absent), on the same held-out scenes.

    Each final policy is evaluated on the held-out and on the training scenes in the batched simulator and in
    MetaDrive's ScenarioEnv. Target (issue: "loses at most 0.1 route completion"): MetaDrive route completion
    at most 0.1 below the batched one on held-out scenes, judged per policy; the mean over seeds is reported too.
    """
    import tempfile

    from runkit.config import load_config
    from sim_bridge.rl.experiment import split_real
    from sim_bridge.rl.train import PPOTrainConfig, read_episodes, train

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="batched_transfer_"))
    train_dir, test_dir, test_names = split_real(REAL_DIR, out, held_out)
    runs: dict[str, Path] = {}
    training: dict = {}
    for seed in seeds:
        cfg = load_config(PPOTrainConfig, ROOT / "configs" / "sim" / "ppo_batched.yaml",
                          [f"env.data={train_dir}", f"total_steps={budget_steps}", f"batched.num_scenes={num_scenes}",
                           f"seed={seed}"])
        run = out / f"seed{seed}"
        done = run / "train_summary.json"
        if done.exists() and json.loads(done.read_text())["final_step"] >= budget_steps:
            summary = json.loads(done.read_text())
            sps, secs, n_eps = summary["steps_per_second"], summary["seconds"], len(read_episodes(run))
        else:
            result = train(cfg, run, resume=(run / "checkpoints" / "latest.pt").exists(), progress_bar=False)
            sps, secs, n_eps = result.steps_per_second, result.seconds, len(result.episodes)
        training[str(seed)] = {"train_steps_per_s": round(sps, 1), "train_seconds": round(secs, 1),
                               "train_episodes": n_eps}
        runs[str(seed)] = run
    res: dict = {"budget_steps": budget_steps, "num_scenes": num_scenes, "held_out": test_names,
                 **transfer_rows(runs, {"held_out": test_dir, "train": train_dir})}
    for seed, row in training.items():
        res["seeds"][seed] = row | res["seeds"][seed]
    res["train_steps_per_s"] = round(float(np.mean([r["train_steps_per_s"] for r in training.values()])), 1)
    gaps = res["held_out"]["route_completion_gap_per_seed"]
    res["target"] = ("MetaDrive route completion at most 0.1 below the batched one on held-out scenes, per policy "
                     "(mean over seeds reported too)")
    res["target_met_mean"] = res["held_out"]["route_completion_gap_mean"] >= -0.1
    res["seeds_within_target"] = sum(g >= -0.1 for g in gaps)
    res["seeds_within_0.1_either_way"] = sum(abs(g) <= 0.1 for g in gaps)
    rl60 = Path(rl60_work) if rl60_work is not None else None
    found = sorted(rl60.glob("seed*/checkpoints/latest.pt")) if rl60 is not None and rl60.exists() else []
    if found and (rl60 / "real_test").exists():
        r60 = transfer_rows({p.parents[1].name.removeprefix("seed"): p.parents[1] for p in found},
                            {"held_out": rl60 / "real_test", "train": rl60 / "real_train"})
        g60 = r60["held_out"]["route_completion_gap_per_seed"]
        res["rl_60min"] = {"recipe": "configs/sim/ppo_60min.yaml (real training split + 100 procedural scenes)",
                           "held_out_names": sorted(p.name for p in (rl60 / "real_test").glob("sd_*.pkl")),
                           **r60, "seeds_within_target": sum(g >= -0.1 for g in g60),
                           "target_met": all(g >= -0.1 for g in g60)}
    else:
        res["rl_60min"] = {"skipped": f"no finished runs in {rl60}: run `python benchmarks/run.py rl_60min` first"}
    res["target_met"] = res["target_met_mean"] and res["rl_60min"].get("target_met", True)
    (out / "transfer.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    if "--transfer" in sys.argv:
        print(json.dumps(bench_batched_transfer(out=sys.argv[sys.argv.index("--transfer") + 1]
                                                if len(sys.argv) > sys.argv.index("--transfer") + 1 else None),
                         indent=2))
    else:
        print(json.dumps(bench_batched_sim(quick="--quick" in sys.argv), indent=2))
