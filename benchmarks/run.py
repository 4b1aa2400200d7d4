"""`make bench`: timed figures as JSON (benchmarks/results/*.json) and the README table.

Each benchmark writes one JSON file with its figures, the machine it ran on and, where the same
work was measured for a reference system (../shared/ANCHORS.md), the ratio. Run a subset with
``python benchmarks/run.py raster procedural``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
# Reference figures measured on this kind of machine (../shared/ANCHORS.md, +-20%).
ANCHOR_EXPORT_4X200_S = 13.0  # MetaDrive 0.4.3 export_scenarios, 4 procedural maps x 200 steps, IDM traffic


def machine() -> dict:
    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    out = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def bench_raster() -> dict:
    """Rasterization of every frame of the real scenes at the default 200x200 x 8 channels, one thread."""
    import cv2
    import numpy as np

    from bevgen.layout import BevRasterizer
    from sim_bridge.dataset import ScenarioDataset

    cv2.setNumThreads(1)
    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    ds = ScenarioDataset(REAL_DIR, repair=True)
    per_source: dict[str, list[float]] = {"nuscenes": [], "waymo": []}
    prep = []
    for name in ds.names:
        sc = ds.load(name)
        t0 = time.perf_counter()
        r = BevRasterizer(sc)
        prep.append(time.perf_counter() - t0)
        r(0)  # warm-up
        for t in range(sc.length):
            t0 = time.perf_counter()
            r(t)
            per_source[sc.dataset].append(time.perf_counter() - t0)
    ms = {k: 1e3 * np.asarray(v) for k, v in per_source.items()}
    return {
        "what": "one ego-centric BEV frame, 200x200 px, 8 channels, incl. boxes; 1 thread; "
                "all frames of the 7 real scenes",
        "nuscenes_ms_median": round(float(np.median(ms["nuscenes"])), 3),
        "nuscenes_ms_p95": round(float(np.percentile(ms["nuscenes"], 95)), 3),
        "waymo_ms_median": round(float(np.median(ms["waymo"])), 3),
        "waymo_ms_p95": round(float(np.percentile(ms["waymo"], 95)), 3),
        "frames_per_s_nuscenes": round(1e3 / float(np.median(ms["nuscenes"])), 1),
        "map_prep_ms_median": round(1e3 * statistics.median(prep), 2),
        "frames": int(sum(len(v) for v in per_source.values())),
        "target": "well under 10 ms per nuScenes frame",
    }


def bench_procedural() -> dict:
    """Procedural generation: 4 maps x 200 steps with IDM traffic, written as a validated dataset."""
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    out = {"what": "4 procedural maps x 200 steps, IDM traffic, exported + validated + written"}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            report = generate_procedural(ProceduralConfig(num_scenarios=4, steps=200, workers=workers), tmp,
                                         resume=False)
            wall = time.perf_counter() - t0
        assert report.ok, report.failed
        out[f"wall_s_{workers}_workers"] = round(wall, 2)
        out[f"scenarios_per_min_{workers}_workers"] = round(4 / wall * 60, 1)
    out["reference_metadrive_export_s"] = ANCHOR_EXPORT_4X200_S
    out["speedup_vs_reference_2_workers"] = round(ANCHOR_EXPORT_4X200_S / out["wall_s_2_workers"], 2)
    return out


def bench_load() -> dict:
    """Safe loading + validation of the real scenes vs plain pickle.load (the price of safety)."""
    import pickle

    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.scenario import load_scenario

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    ds = ScenarioDataset(REAL_DIR)
    paths = [ds.path_of(n) for n in ds.names]

    def timed(fn, reps=5):
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            for p in paths:
                fn(p)
            best = min(best, time.perf_counter() - t0)
        return best / len(paths)

    plain = timed(lambda p: pickle.loads(p.read_bytes()))
    safe = timed(lambda p: load_scenario(p, repair=True))
    return {"what": "per real scenario file (1-5 MB): restricted unpickling + typed view + validation",
            "plain_pickle_ms": round(1e3 * plain, 2), "safe_load_validate_ms": round(1e3 * safe, 2),
            "overhead_x": round(safe / plain, 2)}


ANCHOR_SCENARIO_SPS = {1: 48.0, 2: 87.0}  # ScenarioEnv on the 7 real scenes, constant action, resets included
ANCHOR_PROCEDURAL_SPS = 580.0                # MetaDriveEnv, random actions, 1 process


def _steps_per_second(step, reset, n: int) -> float:
    reset()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def _wrapper_overhead(vec, action, steps: int) -> tuple[float, float]:
    """(raw steps/s, wrapped steps/s) from the same calls: the inner MetaDrive env's step/reset are timed by a
    shim, so (wrapped time - inner time) is exactly what DummyVecEnv + Monitor + ScenarioSeed add, free of the
    scenario-to-scenario noise that dominates separate runs."""
    raw = vec.envs[0].unwrapped
    inner = {"t": 0.0}
    orig_step, orig_reset = raw.step, raw.reset

    def timed(fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                inner["t"] += time.perf_counter() - t0
        return call

    raw.step, raw.reset = timed(orig_step), timed(orig_reset)
    try:
        vec.reset()
        inner["t"] = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            vec.step(action[None])
        total = time.perf_counter() - t0
    finally:
        raw.step, raw.reset = orig_step, orig_reset
    return steps / inner["t"], steps / total


def bench_rl_env() -> dict:
    """Env steps/s of the wrapped env, its overhead over raw MetaDrive, and scaling over worker processes."""
    import numpy as np

    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.envs.vec import make_vec_env

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    out: dict = {"what": "env steps per second incl. resets; constant action [0, 0.5]; "
                         "raw = time inside MetaDrive's step/reset during the same calls"}
    action = np.array([0.0, 0.5], np.float32)
    for name, cfg, n in (("real_scenarios", EnvConfig(data=str(REAL_DIR), horizon=1000), 1200),
                         ("procedural_maps", EnvConfig(data="procedural", num_scenarios=20, horizon=1000), 2400)):
        vec = make_vec_env(cfg, 1, seed=0)
        raw_sps, wrapped_sps = _wrapper_overhead(vec, action, n)
        vec.close()
        row = {"raw_metadrive_sps": round(raw_sps, 1), "wrapped_sps_1_worker": round(wrapped_sps, 1),
               "wrapper_overhead_pct": round(100 * (raw_sps / wrapped_sps - 1), 1)}
        for k in (2, 4):  # synchronous stepping: a worker rebuilding a map stalls the others
            vk = make_vec_env(cfg, k, seed=0)
            row[f"wrapped_sps_{k}_workers"] = round(k * _steps_per_second(
                lambda vk=vk, k=k: vk.step(np.stack([action] * k)), vk.reset, n // k), 1)
            vk.close()
        row["scaling_2_vs_1"] = round(row["wrapped_sps_2_workers"] / row["wrapped_sps_1_worker"], 2)
        out[name] = row
    out["real_scenarios"]["reference_sps_1_2_processes"] = ANCHOR_SCENARIO_SPS
    out["real_scenarios"]["speedup_vs_reference_2_workers"] = round(
        out["real_scenarios"]["wrapped_sps_2_workers"] / ANCHOR_SCENARIO_SPS[2], 2)
    out["procedural_maps"]["reference_sps_1_process"] = ANCHOR_PROCEDURAL_SPS
    return out


def bench_rl_experiment() -> dict:
    """The TrafficGen experiment (sim_bridge/rl/experiment.py): four arms x 3 seeds on the batched simulator,
    evaluated in MetaDrive on held-out real scenes, with 95% intervals."""
    from runkit.config import load_config
    from sim_bridge.rl.evaluate import EvalConfig
    from sim_bridge.rl.experiment import ExperimentConfig, run_experiment, split_real
    from sim_bridge.rl.train import PPOTrainConfig
    from traffic.generate import GenerateConfig, augment

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    budget = int(os.environ.get("BEVGEN_RL_BUDGET", "500000"))
    work = ROOT / "benchmarks" / "work" / "rl_experiment"
    # third arm: the real training split densified (x2) by the traffic model of `bench_traffic`, trained on the
    # same split: the held-out test scenes are unseen by both the traffic model and the agents
    traffic_run = _traffic_model()
    train_real, _, _ = split_real(REAL_DIR, work, held_out=3)
    if not (work / "augmented_train" / "dataset_summary.pkl").exists():
        augment(train_real, traffic_run, work / "augmented_train", GenerateConfig(density=2.0))
    proc = _procedural_100()
    # every arm warm-starts from its own scenarios' logged egos (the ablation in the issue notes: +0.07 to +0.08
    # held-out route completion on real and real + procedural data)
    train_cfg = load_config(PPOTrainConfig, ROOT / "configs" / "sim" / "ppo_batched.yaml",
                            ["warm_start.demonstrations=log"])
    cfg = ExperimentConfig(real_data=str(REAL_DIR), budget_steps=budget, held_out=3, procedural_data=str(proc),
                           num_envs=2, seeds=3, augmented=str(work / "augmented_train"), train=train_cfg)
    t0 = time.perf_counter()
    res = run_experiment(cfg, work, EvalConfig(workers=2))
    import shutil

    shutil.copy(work / "experiment.png", RESULTS / "rl_experiment.png")
    return {"what": f"{train_cfg.algorithm.upper()} on the batched simulator (configs/sim/ppo_batched.yaml, "
                    "behaviour-cloning warm start), "
                    f"{budget:,} env steps per run, seeds {res['seeds']}, evaluated in MetaDrive on "
                    f"{len(res['held_out'])} held-out real scenes; mean [95% interval] over seeds",
            "wall_s": round(time.perf_counter() - t0, 1), "held_out": res["held_out"],
            "arms": {k: {"train_data": Path(v["train_data"]).name, **v["summary"],
                         "per_seed_route_completion": [r["held_out"]["route_completion"] for r in v["runs"]]}
                     for k, v in res["arms"].items()},
            "reference": res["reference"], "skipped": res["skipped"], "plot": "benchmarks/results/rl_experiment.png"}


def _procedural_100() -> Path:
    """The 100 procedural scenes (seeds 20000-20099, maps of no other benchmark) every RL benchmark trains on,
    generated once (resumable)."""
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    proc = ROOT / "benchmarks" / "work" / "rl_experiment" / "procedural_100"
    generate_procedural(ProceduralConfig(num_scenarios=100, start_seed=20_000, workers=2), proc)
    return proc


RL_TARGETS = {"success_rate": (">=", 0.5), "route_completion": (">=", 0.75), "crash_rate": ("<=", 0.15)}


def _rl_run(work: Path, name: str, data: list[Path], config: str, overrides: list[str]) -> tuple[Path, dict]:
    """Train (or reuse, when its train_summary.json exists) one run on the batched simulator; its summary."""
    from runkit.config import load_config
    from sim_bridge.dataset import merge_datasets
    from sim_bridge.rl.train import PPOTrainConfig, train

    run = work / name
    summary = run / "train_summary.json"
    if not summary.exists():
        env_data = data[0] if len(data) == 1 else merge_datasets(data, run / "train_data")
        cfg = load_config(PPOTrainConfig, ROOT / "configs" / "sim" / config, [f"env.data={env_data}", *overrides])
        train(cfg, run, resume=(run / "checkpoints" / "latest.pt").exists(), progress_bar=False)
    return run, json.loads(summary.read_text())


def _held_out(run: Path, test_dir: Path, reference: bool = False) -> dict:
    from sim_bridge.rl.evaluate import EvalConfig, evaluate

    m = evaluate(str(run), str(test_dir), EvalConfig(simulator="metadrive", reference=reference, workers=2))
    out = {k: m[k] for k in ("success_rate", "route_completion", "crash_rate", "out_of_road_rate")}
    out["per_scenario"] = [{k: r[k] for k in ("scenario", "route_completion", "success", "crash", "steps")}
                           for r in m["per_scenario"]]
    if reference:
        out["reference"] = {k: {m_: v[m_] for m_ in ("success_rate", "route_completion", "crash_rate")}
                            for k, v in m["reference"].items()}
    return out


def bench_rl_60min() -> dict:
    """Agents trained within a 60-minute budget (configs/sim/ppo_60min.yaml): PPO on the batched simulator over the
    real training split and 100 procedural scenes, warm-started from their logged egos, collisions costing 20;
    evaluated in MetaDrive on the 3 held-out real scenes (nuScenes and Waymo) beside random and IDM. Seeds from
    BEVGEN_RL60_SEEDS (default 0,1,2); finished runs in benchmarks/work/rl_60min/seed* are evaluated again, not
    retrained. Targets are judged on the mean over seeds."""
    from sim_bridge.rl.experiment import interval, plot_learning_curve, split_real
    from sim_bridge.rl.train import read_episodes

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    work = ROOT / "benchmarks" / "work" / "rl_60min"
    train_real, test_real, held = split_real(REAL_DIR, work, held_out=3)
    proc = _procedural_100()
    seeds = [int(x) for x in os.environ.get("BEVGEN_RL60_SEEDS", "0,1,2").split(",")]
    runs: dict = {}
    for seed in seeds:
        run, summary = _rl_run(work, f"seed{seed}", [train_real, proc], "ppo_60min.yaml", [f"seed={seed}"])
        warm = json.loads((run / "warm_start.json").read_text()) if (run / "warm_start.json").exists() else {}
        runs[str(seed)] = {"train_steps": summary["final_step"],
                           "train_minutes": round((summary["seconds"] + warm.get("seconds", 0.0)) / 60, 1),
                           "steps_per_s": summary["steps_per_second"],
                           **_held_out(run, test_real, reference=seed == seeds[0])}
        if seed == seeds[0]:
            plot_learning_curve(read_episodes(run), RESULTS / "rl_60min_curve.png",
                                f"PPO, batched simulator, seed {seed}: {summary['final_step']:,} steps in "
                                f"{runs[str(seed)]['train_minutes']} min incl. warm start (training episodes)")
    first = runs[str(seeds[0])]
    summary_ci = {k: interval([r[k] for r in runs.values()]) for k in RL_TARGETS}
    met = {k: (summary_ci[k]["mean"] >= v if op == ">=" else summary_ci[k]["mean"] <= v)
           for k, (op, v) in RL_TARGETS.items()}
    return {"what": "configs/sim/ppo_60min.yaml on 4 real + 100 procedural scenes; MetaDrive on 3 held-out real "
                    "scenes; mean [95% interval] over seeds", "held_out": held, "seeds": runs,
            **{k: summary_ci[k]["mean"] for k in RL_TARGETS}, "interval": summary_ci,
            "train_steps": first["train_steps"], "train_minutes": max(r["train_minutes"] for r in runs.values()),
            "steps_per_s": first["steps_per_s"], "reference": first.get("reference", {}),
            "targets": {k: f"{op} {v}" for k, (op, v) in RL_TARGETS.items()}, "targets_met": met,
            "curve": "benchmarks/results/rl_60min_curve.png"}


def bench_rl_ablation() -> dict:
    """What makes the agent drive: the same 1M-step PPO run (configs/sim/ppo_batched.yaml, seed 0) on real data
    alone or with 100 procedural scenes, each without and with the behaviour-cloning warm start, then collision
    cost 20, SAC in place of PPO for the same wall-clock time, and a traffic-density curriculum; MetaDrive on the 3
    held-out real scenes. Finished runs in benchmarks/work/rl_ablation are evaluated again, not retrained."""
    from sim_bridge.rl.experiment import split_real

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    work = ROOT / "benchmarks" / "work" / "rl_ablation"
    train_real, test_real, held = split_real(REAL_DIR, work, held_out=3)
    proc = _procedural_100()
    warm = ["warm_start.demonstrations=log"]
    cost20 = ["env.reward.crash_vehicle_penalty=20", "env.reward.crash_object_penalty=20"]
    arms = {"real": ([train_real], []), "real + warm start": ([train_real], warm),
            "real + procedural": ([train_real, proc], []),
            "real + procedural + warm start": ([train_real, proc], ["warm_start.demonstrations=log"]),
            "real + procedural + warm start + crash cost 20": ([train_real, proc], [*warm, *cost20]),
            # the choices the 60-minute recipe leaves out, each against its neighbour above
            "real + procedural + crash cost 20": ([train_real, proc], cost20),
            "real + procedural + crash cost 20, SAC for the same 12 minutes": (
                [train_real, proc], [*cost20, "algorithm=sac", "time_limit_minutes=12"]),
            "real + procedural + warm start + crash cost 20 + traffic curriculum 0.25 to 1 over 300k steps": (
                [train_real, proc], [*warm, *cost20, "curriculum.traffic_start=0.25", "curriculum.steps=300000"])}
    out: dict = {"what": "PPO 1,000,000 steps (configs/sim/ppo_batched.yaml, seed 0; SAC: its wall-clock time) on "
                         "the batched simulator; MetaDrive on 3 held-out real scenes", "held_out": held, "arms": {}}
    for name, (data, extra) in arms.items():
        slug = name.split(",")[0].replace(" + ", "_").replace(" ", "_").replace(".", "")
        slug += "_sac" if "algorithm=sac" in extra else ""
        run, summary = _rl_run(work, slug, data, "ppo_batched.yaml", ["total_steps=1000000", "seed=0", *extra])
        out["arms"][name] = {"train_steps": summary["final_step"], "train_minutes": round(summary["seconds"] / 60, 1),
                             **_held_out(run, test_real)}
    return out


TRAFFIC_FRAMES = tuple(range(0, 120, 10))


def traffic_recipe(train_data: Path, steps: int = 1500):
    """The benchmark's traffic training config on ``train_data`` (``_traffic_model``; ``traffic_cv.py``'s arms)."""
    from traffic.train import TrafficTrainConfig

    return TrafficTrainConfig(data=(str(train_data),), steps=steps, batch_size=8, start_frames=TRAFFIC_FRAMES,
                              checkpoint_every=500, symmetry="rotate_mirror")


def _traffic_model() -> Path:
    """The tiny traffic model of the traffic and RL benchmarks, trained once (BEVGEN_TRAFFIC_STEPS steps, default
    1500, cosine learning-rate decay) on the 4 real training scenes, each encoded at 12 start frames (0, 1, ...,
    11 s), each sampled scene seen in a random frame (rotated about the ego, mirrored with probability 0.5: chosen
    by leave-one-scene-out realism on the training scenes, docs/traffic_realism.md); the 3 other real scenes are
    held out. The earlier recipe (24 procedural + 4 real scenes, 400 steps, frames 0-4 s) taught it MetaDrive's
    traffic, which starts at rest and accelerates: parked real cars drove off in its rollouts."""
    from sim_bridge.rl.experiment import split_real
    from traffic.train import load_models, train

    work = ROOT / "benchmarks" / "work" / "traffic"
    work.mkdir(parents=True, exist_ok=True)
    steps = int(os.environ.get("BEVGEN_TRAFFIC_STEPS", "1500"))
    train_real, _, _ = split_real(REAL_DIR, work, held_out=3)
    run = work / "run"
    cfg = traffic_recipe(train_real, steps)
    try:
        old = load_models(run)[2] if (run / "checkpoints" / "latest.pt").exists() else None
    except ValueError:  # a run of an older model version: retrain
        old = None
    if old is None or old.steps != steps or tuple(old.start_frames) != TRAFFIC_FRAMES or \
            old.schedule != cfg.schedule or old.symmetry != cfg.symmetry or \
            [Path(d).name for d in old.data] != [train_real.name]:
        import shutil

        shutil.rmtree(run, ignore_errors=True)
        train(cfg, run, progress=False)
    return run


ANCHOR_TRAFFICGEN = {"place_32_s": 5.09, "traj_190_frames_s": 22.9}  # original TrafficGen, 2 threads, per scene


def _mmd_per_scene(ref: list, rows: dict, generated: dict) -> dict:
    """Per held-out scene: the mean MMD of the model and of random-on-lanes traffic, what the scene allows
    (``mmd_references`` of that scene alone), and the share of the MMD set's vehicles standing (< 0.5 m/s) in
    the log and in the model's scene. Shows where the mean MMD is lost: car parks that no lane-bound placement
    reaches, and scenes where it could but the model's speeds are not the scene's."""
    import numpy as np

    from traffic.baselines import mmd_references
    from traffic.metrics import scene_attributes

    feats = ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed")
    standing = lambda sc: round(float((scene_attributes(sc)["speed"] < 0.5).mean()), 2)  # noqa: E731
    out = {}
    for i, sc in enumerate(ref):
        row = {k: round(float(np.mean([rows[k]["per_scene"][i][f] for f in feats])), 4)
               for k in ("model", "random_lanes_const_velocity")}
        row |= {k: round(v["mean"], 4) for k, v in mmd_references([sc]).items()}
        gen = generated[rows["model"]["per_scene"][i]["generated"][0]]
        row["standing_share"] = {"logged": standing(sc), "model": standing(gen)}
        out[sc.id] = row
    return out


def bench_traffic() -> dict:
    """TrafficGen: training time, generation speed (batched vs one scene at a time), realism vs baselines on
    held-out real scenes, and density-2 augmentation of the real scenes."""
    import numpy as np
    import torch

    from sim_bridge.rl.experiment import split_real
    from sim_bridge.dataset import ScenarioDataset
    from traffic.baselines import mmd_references, procedural_reference, random_lane_traffic
    from traffic.generate import GenerateConfig, _time_paths, augment, generate, generate_scenes
    from traffic.metrics import collision_hits, evaluate_traffic
    from traffic.sim_agents import evaluate_realism
    from traffic.train import load_models

    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    work = ROOT / "benchmarks" / "work" / "traffic"
    steps = int(os.environ.get("BEVGEN_TRAFFIC_STEPS", "1500"))
    run = _traffic_model()
    train_real, test_real, held_out = split_real(REAL_DIR, work, held_out=3)
    train_s = json.loads((run / "train_summary.json").read_text())["seconds"]  # also right when the run is reused
    # the shipped figure came from a run that shared the 2 cores with other training jobs (BEVGEN_TRAFFIC_NOTE)
    note = os.environ.get("BEVGEN_TRAFFIC_NOTE")
    prev = RESULTS / "traffic.json"
    if note is None and prev.exists():  # the same (reused) training run keeps the note recorded with it
        old = json.loads(prev.read_text())
        note = old.get("train_note", "") if old.get("train_s") == round(train_s, 1) else ""
    out: dict = {"what": "tiny model; trained on 4 real scenes x 12 start frames (cosine learning-rate decay); "
                         "tested on 3 held-out real scenes",
                 "train_steps": steps, "train_s": round(train_s, 1), "held_out": held_out, "train_note": note or ""}

    # speed: 32 vehicles + 9 s (90 steps) per scene, batched over the 7 real scenes vs one at a time
    placement, trajectory, tcfg = load_models(run)
    scenes = [s for s in ScenarioDataset(REAL_DIR, repair=True)]
    torch.set_num_threads(2)
    for label, bs in (("batched", len(scenes)), ("one_at_a_time", 1)):
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        for i in range(0, len(scenes), bs):
            generate_scenes(placement, trajectory, scenes[i:i + bs], False, [32] * len(scenes[i:i + bs]),
                            tcfg.encoding, g, steps=90)
        out[f"s_per_scene_32_vehicles_9s_{label}"] = round((time.perf_counter() - t) / len(scenes), 3)
    # the whole generation: the models, then every vehicle driven along the lane graph (traffic.lanes); the
    # median of 3 runs (one run moved by up to 30% between runs on this shared 2-core VM)
    models_s, lanes_s = [], []
    for rep in range(3):
        g = torch.Generator().manual_seed(rep)
        t = time.perf_counter()
        placed = generate_scenes(placement, trajectory, scenes, False, [32] * len(scenes), tcfg.encoding, g,
                                 steps=190)
        models_s.append((time.perf_counter() - t) / len(scenes))
        t = time.perf_counter()
        _time_paths(scenes, placed, keep_logged=False)
        lanes_s.append((time.perf_counter() - t) / len(scenes))
    out["s_per_scene_32_vehicles_190_frames_batched"] = round(float(np.median(models_s)), 3)
    out["s_per_scene_lane_following"] = round(float(np.median(lanes_s)), 3)
    out["s_per_scene_runs"] = {"models": [round(x, 3) for x in models_s],
                               "lane_following": [round(x, 3) for x in lanes_s]}
    total = out["s_per_scene_32_vehicles_190_frames_batched"] + out["s_per_scene_lane_following"]
    out["s_per_scene_32_vehicles_190_frames_with_lane_following"] = round(total, 3)
    out["reference_trafficgen_s_per_scene_place32_plus_190_frames"] = round(sum(ANCHOR_TRAFFICGEN.values()), 2)
    out["speedup_vs_reference"] = round(sum(ANCHOR_TRAFFICGEN.values()) / total, 1)

    # realism on held-out real scenes: model vs random-on-lanes + constant velocity vs MetaDrive procedural traffic
    gen_dir = work / "generated_heldout"
    import shutil

    shutil.rmtree(gen_dir, ignore_errors=True)
    generate(test_real, run, gen_dir, GenerateConfig(num_vehicles=-1, batch_size=8))
    ref = list(ScenarioDataset(test_real, repair=True))
    rng = np.random.default_rng(0)
    counts = [int(sum(t == "VEHICLE" for t in sc.tracks.types) - 1) for sc in ref]
    rand = [random_lane_traffic(sc, max(n, 1), sc.length, rng) for sc, n in zip(ref, counts)]
    proc_ref = procedural_reference(len(ref) * 2, work / "procedural_reference", seed=7, steps=91)
    keys = ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed", "collision_rate", "offroad_rate",
            "kinematic_violation_rate", "num_scenarios", "num_agents")
    rows = {"model": evaluate_traffic(ScenarioDataset(gen_dir), ref),
            "random_lanes_const_velocity": evaluate_traffic(rand, ref),
            "metadrive_procedural": evaluate_traffic(proc_ref, ref, pairing="pooled"),
            "logged (reference)": evaluate_traffic(ref, ref)}
    out["realism"] = {k: {m: (round(v[m], 4) if isinstance(v[m], float) else v[m]) for m in keys}
                      for k, v in rows.items()}
    # count match and diversity: a second sample of each held-out scene (model: seed 1; random: a new draw)
    gen_dir2 = work / "generated_heldout_seed1"
    shutil.rmtree(gen_dir2, ignore_errors=True)
    generate(test_real, run, gen_dir2, GenerateConfig(num_vehicles=-1, batch_size=8, seed=1))
    rand2 = [random_lane_traffic(sc, max(n, 1), sc.length, rng) for sc, n in zip(ref, counts)]
    two = {"model": list(ScenarioDataset(gen_dir)) + list(ScenarioDataset(gen_dir2)),
           "random_lanes_const_velocity": rand + rand2}
    for k, v in rows.items():
        out["realism"][k]["agent_count_distance"] = round(v["agent_count_distance"], 4)
    for k, scenes2 in two.items():
        out["realism"][k]["diversity_position"] = round(evaluate_traffic(scenes2, ref)["diversity_position"], 4)
    mmd = lambda r: np.mean([r[m] for m in ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed")])
    out["mean_mmd"] = {k: round(float(mmd(v)), 4) for k, v in out["realism"].items()}
    # what the MMD can reach on these scenes: the log resampled (the estimator's floor) and the log moved onto the
    # lanes (the best of any placement bound to within 3 m of a lane centre line)
    out["mmd_references"] = {k: {m: round(x, 4) for m, x in v.items()} for k, v in mmd_references(ref).items()}
    out["mmd_per_scene"] = _mmd_per_scene(ref, rows, {sc.id: sc for sc in ScenarioDataset(gen_dir)})

    # sim-agent realism (WOSAC-style meta-metric): 1 s history, 8 s rollouts x 32, on the held-out scenes
    sim = evaluate_realism(ref, run, n=32)
    out["sim_agent_realism"] = {k: {"meta_metric": round(v["meta_metric"], 4), "min_ade": round(v["min_ade"], 3),
                                    "likelihoods": {f: round(x, 4) for f, x in v["likelihoods"].items()},
                                    "num_agents": v["num_agents"], "seconds": v["seconds"]} for k, v in sim.items()}
    cv, log_ = sim["constant_velocity"]["meta_metric"], sim["logged"]["meta_metric"]
    gap_closed = (sim["model"]["meta_metric"] - cv) / max(log_ - cv, 1e-9)
    model = out["realism"]["model"]
    out["targets"] = {"offroad_rate <= 0.05": model["offroad_rate"] <= 0.05,
                      "collision_rate <= 0.02": model["collision_rate"] <= 0.02,
                      "kinematic_violation_rate <= 0.01": model["kinematic_violation_rate"] <= 0.01,
                      "mean MMD <= half of random-on-lanes": out["mean_mmd"]["model"]
                      <= 0.5 * out["mean_mmd"]["random_lanes_const_velocity"],
                      "realism above constant velocity, closing >= half the gap to logged": gap_closed >= 0.5,
                      ">= 50x faster than TrafficGen": out["speedup_vs_reference"] >= 50}
    out["realism_gap_closed"] = round(float(gap_closed), 3)

    # augmentation: density 2 on all real scenes
    aug = work / "augmented"
    shutil.rmtree(aug, ignore_errors=True)
    t = time.perf_counter()
    _, stats = augment(REAL_DIR, run, aug, GenerateConfig(density=2.0, batch_size=8))
    aug_s = time.perf_counter() - t
    before = after = inserted = colliding = 0
    for sc in ScenarioDataset(aug):
        new = np.array([i.startswith("bevgen_vehicle_") for i in sc.tracks.ids])
        near = np.abs(sc.tracks.xy[:, 0] - sc.tracks.xy[sc.ego_index, 0]).max(1) <= tcfg.encoding.range_m
        veh = np.array([t == "VEHICLE" for t in sc.tracks.types]) & sc.tracks.valid[:, 0] & near
        veh[sc.ego_index] = False
        before += int((veh & ~new).sum())
        after += int(veh.sum())
        hits = collision_hits(sc)
        inserted += int(new.sum())
        colliding += int((hits[new].any(1)).sum())
    out["augment_density_2"] = {"counted": "non-ego vehicles within range_m of the ego at t0",
                                "vehicles_at_t0_before": before, "vehicles_at_t0_after": after,
                                "ratio": round(after / max(before, 1), 2), "inserted": inserted,
                                "inserted_collision_rate": round(colliding / max(inserted, 1), 4),
                                "seconds": round(aug_s, 1),
                                "placed_of_requested": f"{stats['placed']}/{stats['requested']}",
                                "dropped_still_hit": stats.get("dropped", 0)}
    return out


def _heldout_camera_data() -> Path:
    """Synthetic six-camera frames of procedural maps the shipped models never saw (seeds 10000+), cached."""
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    work = ROOT / "benchmarks" / "work" / "cameras"
    generate_procedural(ProceduralConfig(num_scenarios=4, start_seed=10_000, steps=200, traffic_density=0.3,
                                         workers=2), work / "heldout_scenarios", resume=True)
    write_synthetic_dataset(work / "heldout_scenarios", work / "heldout", SynthConfig(), frames_per_scenario=8,
                            frame_stride=20, first_frame=10, workers=2, resume=True, progress=False)
    return work / "heldout"


def bench_views() -> dict:
    """Camera views: renderer throughput, sampling speed (parallel vs token by token), the metrics of the shipped
    tiny model on held-out layouts (procedural maps; real maps rendered) next to the ground-truth oracle, and
    the temporal change of a generated drive."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from views_eval import TRAIN_DATA, WORK, bevseg_net, drive_flicker, evaluate_model, real_map_data
    from views_model import bench_views_sampling
    from views_render import bench_render

    from bevgen.pretrained import shipped

    out = {"render": bench_render()}
    run = shipped("views_tiny")
    out["sampling"] = bench_views_sampling(run, threads=2, repeats=5)
    # the 128x224 architecture (16x28 tokens per view; untrained weights: the same cost as trained ones)
    out["sampling_hires"] = bench_views_sampling(None, threads=2, config="hires", max_ar_forwards=32, repeats=5)
    # ... with the decoder that reads the layout per pixel (what `bevgen views tune-decoder` adds, as shipped)
    out["sampling_hires_layout"] = bench_views_sampling(None, threads=2, config="hires", max_ar_forwards=32,
                                                        repeats=5, overrides=("tokenizer.layout_channels=20",))
    if run is None:
        return out
    summary = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").exists() else {}
    if all((summary.get(stage) or {}).get("start_step") == 0 for stage in ("tokenizer", "generator")):
        out["tiny_train_minutes"] = round(summary.get("seconds", float("nan")) / 60, 1)
    else:  # a resumed run's summary times its last segment only
        out["tiny_train_note"] = "resumed run: see checkpoints/README.json for how long each segment took"
    sets = {"metrics": _heldout_camera_data()}
    real = real_map_data()
    if real is not None:  # the shared real scenes' maps and traffic through the synthetic renderer
        sets["metrics_real_maps"] = real
    train_data = TRAIN_DATA  # the shipped model's training frames (make checkpoints)
    if not (train_data / "index.json").exists():
        train_data = sets["metrics"]
        out["bevseg_trained_on"] = "held-out frames (make checkpoints' data not present)"
    t0 = time.perf_counter()
    bevseg = bevseg_net(train_data)
    out |= evaluate_model(run, sets, bevseg, WORK / "eval")
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    out["drive_flicker"] = drive_flicker(run)
    hires = shipped("views_hires")
    if hires is not None:  # the 128x224 model (make checkpoints-hires): same sets, same bevseg network
        t0 = time.perf_counter()
        out["hires"] = evaluate_model(hires, sets, bevseg, WORK / "eval_hires")
        out["hires"]["eval_seconds"] = round(time.perf_counter() - t0, 1)
        out["hires"]["drive_flicker"] = drive_flicker(hires)
        out["hires"]["sampling"] = bench_views_sampling(hires, threads=2, max_ar_forwards=32, repeats=5)
    return out


def bench_views_ablation() -> dict:
    """Aligned conditioning and the object-weighted loss against the model without them (benchmarks/views_eval.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from views_eval import bench_views_ablation as run

    return run(_heldout_camera_data())


def bench_scene3d() -> dict:
    """scene3d: images/s at 64x64 on this CPU, tiny training time, box_alpha_iou trained vs untrained."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scene3d import bench_scene3d as run_bench

    from bevgen.pretrained import shipped

    return run_bench(_heldout_camera_data(), shipped("scene3d_tiny"), threads=2)


def bench_bad_input() -> dict:
    """Hostile and broken files against the loader, validate, MetaDrive's data manager and every command."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bad_input import bench_bad_input as run

    return run()


def bench_export() -> dict:
    """`bevgen scenarios export`: scenarios/s per format on the real and procedural scenes, ASAM checker counts."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from export import bench_export as run

    return run()


def bench_batched_sim() -> dict:
    """The batched tensor simulator: env steps/s at 128-512 scenes vs MetaDrive ScenarioEnv in the same run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from batched_sim import bench_batched_sim as run

    return run()


def bench_batched_transfer() -> dict:
    """PPO trained on the batched simulator (1M steps, 128 slots, 4 real scenes, 5 seeds), evaluated in it and in
    MetaDrive."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from batched_sim import bench_batched_transfer as run

    return run(out=ROOT / "benchmarks" / "work" / "batched_transfer")


def bench_traffic_paper() -> dict:
    """Like for like with the original TrafficGen: the paper preset, random weights, same scenes and threads."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from traffic_paper import bench_traffic_paper as run

    return run(REAL_DIR)


def bench_gpu_traffic() -> dict:
    """GPU rows (`make bench-gpu`): traffic training throughput and generation speed, tiny and paper presets."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_traffic import bench_gpu_traffic as run
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    proc = ROOT / "benchmarks" / "work" / "gpu" / "procedural"
    generate_procedural(ProceduralConfig(num_scenarios=24, steps=100, workers=2), proc, resume=True)
    return run([proc, *([REAL_DIR] if REAL_DIR.exists() else [])])


def bench_views_tokenizer() -> dict:
    """Tokenizer round trips (PSNR, FID of reconstructions): 128x224 with and without the patch-adversarial term
    against the shipped 64x112 one (benchmarks/views_tokenizer.py; trains the 128x224 arms when missing)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from views_eval import TRAIN_DATA, bevseg_net, real_map_data
    from views_tokenizer import bench_views_tokenizer as run

    if not (TRAIN_DATA / "index.json").exists():
        return {"skipped": f"{TRAIN_DATA} missing: run `make checkpoints` first (the arms train on its frames)"}
    sets = {"procedural": _heldout_camera_data()}
    real = real_map_data()
    if real is not None:
        sets["real_maps"] = real
    return run(sets, bevseg_net(TRAIN_DATA), TRAIN_DATA)


def bench_views_span() -> dict:
    """What attending to part of each neighbouring view costs (generator.neighbour_span 1.0 / 0.75 / 0.5 on the
    tiny config; benchmarks/views_span.py, trains the arms when missing)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from views_span import bench_views_span as run

    return run(_heldout_camera_data())


BENCHES = {"raster": bench_raster, "procedural": bench_procedural, "load": bench_load, "bad_input": bench_bad_input,
           "rl_env": bench_rl_env, "batched_sim": bench_batched_sim, "batched_transfer": bench_batched_transfer,
           "rl_experiment": bench_rl_experiment, "rl_60min": bench_rl_60min, "rl_ablation": bench_rl_ablation,
           "traffic": bench_traffic, "traffic_paper": bench_traffic_paper, "views": bench_views,
           "views_ablation": bench_views_ablation, "views_tokenizer": bench_views_tokenizer,
           "views_span": bench_views_span, "scene3d": bench_scene3d, "export": bench_export}
# Need a CUDA device: `make bench-gpu` (python benchmarks/run.py --gpu). Not part of `make bench`.
def bench_gpu_batched_sim() -> dict:
    """GPU rows (`make bench-gpu`): the batched simulator's env steps/s at 512-16384 scenes on CUDA."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from batched_sim import bench_batched_sim_gpu as run

    return run()


GPU_BENCHES = {"gpu_traffic": bench_gpu_traffic, "gpu_batched_sim": bench_gpu_batched_sim}


VIEWS_FID_BEFORE = {"fid": 33.2, "fid_extractor": "bevgen-randconv-v1", "image_size": [64, 112], "num_samples": 192}
"""FID of the views model the issue on camera views started from (the tiny model before aligned conditioning, scored
by this benchmark on 2026-11-25 on the same held-out procedural frames: its seam oracle reads the same 0.8941).
The target is half of it; FIDs compare only at the same extractor, image size and sample count."""


def _fid_target(m: dict) -> str:
    """The FID target beside a held-out procedural row, where the row is comparable with ``VIEWS_FID_BEFORE``."""
    ref = VIEWS_FID_BEFORE
    same = (m.get("fid_extractor") == ref["fid_extractor"] and list(m.get("image_size") or []) == ref["image_size"]
            and m.get("num_samples") == ref["num_samples"])
    if m.get("fid") is None or not same:
        return ""
    met = "met" if m["fid"] <= ref["fid"] / 2 else "not met"
    return f"; FID target <= {ref['fid'] / 2:.1f}, half of the {ref['fid']} of 2026-11-25 on these frames: {met}"


def _layout_timing(v: dict) -> str:
    """The 128x224 timing with the layout-reading decoder, beside the tokens-only one (``bench_views``)."""
    sm = v.get("sampling_hires_layout") or {}
    if sm.get("parallel_s") is None:
        return ""
    return (f"; with the decoder that reads the layout per pixel: {sm['parallel_s']} s vs "
            f"{sm['autoregressive_s']} s, {sm['speedup']}x")


def _views_model_rows(v: dict, label: str) -> list[str]:
    """README rows of one views model's held-out metrics and drive flicker (``bench_views`` output)."""
    lines: list[str] = []
    if "metrics" in v:
        m = v["metrics"]
        lines.append(f"| Views, {label} on held-out synthetic layouts: road / vehicle IoU, seams, FID | "
                     f"{_r(m.get('road_iou'))} / {_r(m.get('vehicle_iou'))}, seams {_r(m.get('seam_consistency'))}, "
                     f"FID {_r(m.get('fid'), 1)} ({m.get('fid_extractor')}) | ground truth (oracle): "
                     f"{_r(m.get('road_iou_oracle'))} / {_r(m.get('vehicle_iou_oracle'))}, seams "
                     f"{_r(m.get('seam_consistency_oracle'))}{_fid_target(m)} |")
        for key, where in (("metrics", "held-out procedural maps"),
                           ("metrics_real_maps", "3 held-out real maps, rendered")):
            m = v.get(key)
            if not m or m.get("vehicle_iou_oracle") is None:
                continue
            ratio = {k: (m[k] / m[f"{k}_oracle"] if m.get(k) is not None and m.get(f"{k}_oracle") else None)
                     for k in ("vehicle_iou", "road_iou", "seam_consistency")}
            ci = m.get("shares_ci90") or {}  # 90% interval over the frames (bevgen.views.bootstrap)
            share = {k: f"{_r(v, 2)}" + (f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if ci.get(k) else "")
                     for k, v in ratio.items()}
            bands = ("near", "mid", "far")
            road = (f"; road share of the oracle near / mid / far "
                    f"{' / '.join(str(_r(m[f'road_iou_{b}'] / m[f'road_iou_{b}_oracle'], 2)) for b in bands)}"
                    if all(m.get(f"road_iou_{b}") is not None and m.get(f"road_iou_{b}_oracle") for b in bands) else "")
            lines.append(f"| Views, {label}, {where}: vehicle IoU near / mid / far; share of the oracle "
                         f"(vehicle, road, seams) | {_r(m.get('vehicle_iou_near'))} / {_r(m.get('vehicle_iou_mid'))} / "
                         f"{_r(m.get('vehicle_iou_far'))}; {share['vehicle_iou']}, {share['road_iou']}, "
                         f"{share['seam_consistency']}{road} | targets 0.5, 0.9, 0.75 "
                         f"(MagicDrive 0.80 / 0.84); [90% interval over the frames] |")
    fl = v.get("drive_flicker") or {}
    if fl.get("truth"):
        lines.append(f"| Views, {label}, on a moving drive ({fl['frames']} frames, ego moves {fl['ego_moved_m']} m): "
                     f"change of static pixels per frame, sequence decoding / independent frames | "
                     f"{_r(fl['sequence'], 2)} / "
                     f"{_r(fl['independent'], 2)} grey levels ({_r(fl['sequence_over_truth'], 2)}x / "
                     f"{_r(fl['independent_over_truth'], 2)}x the ground truth's {_r(fl['truth'], 2)}) | "
                     f"target <= 3x |")
    return lines


def _row_lines(results: dict) -> list[str]:
    lines = []
    r = results.get("raster", {})
    if "nuscenes_ms_median" in r:
        lines.append(f"| BEV raster, 200x200x8, real nuScenes frame (1 thread) | "
                     f"{r['nuscenes_ms_median']} ms median, "
                     f"{r['nuscenes_ms_p95']} ms p95 ({r['frames_per_s_nuscenes']} frames/s) | "
                     f"target < 10 ms |")
        lines.append(f"| BEV raster, real Waymo frame (1 thread) | {r['waymo_ms_median']} ms median, "
                     f"{r['waymo_ms_p95']} ms p95 | |")
    p = results.get("procedural", {})
    if "wall_s_2_workers" in p:
        lines.append(f"| Procedural scenarios, 4 maps x 200 steps + IDM traffic | "
                     f"{p['wall_s_1_workers']} s (1 worker), "
                     f"{p['wall_s_2_workers']} s (2 workers) | "
                     f"MetaDrive export ~{p['reference_metadrive_export_s']:g} s: "
                     f"**{p['speedup_vs_reference_2_workers']}x** |")
    e = results.get("rl_env", {})
    if "real_scenarios" in e:
        r, p = e["real_scenarios"], e["procedural_maps"]
        lines.append(f"| RL env steps/s, real scenes in ScenarioEnv (resets included) | "
                     f"{r['wrapped_sps_1_worker']} (1 worker), "
                     f"{r['wrapped_sps_2_workers']} (2 workers), {r['wrapped_sps_4_workers']} (4); "
                     f"raw MetaDrive {r['raw_metadrive_sps']}, wrapper overhead "
                     f"{r['wrapper_overhead_pct']}% | ~{ANCHOR_SCENARIO_SPS[1]:g} / ~{ANCHOR_SCENARIO_SPS[2]:g}: "
                     f"**{r['speedup_vs_reference_2_workers']}x** at 2 workers |")
        lines.append(f"| RL env steps/s, procedural maps (MetaDriveEnv) | {p['wrapped_sps_1_worker']} (1 worker), "
                     f"{p['wrapped_sps_2_workers']} (2 workers), {p['wrapped_sps_4_workers']} (4); "
                     f"raw {p['raw_metadrive_sps']}, overhead "
                     f"{p['wrapper_overhead_pct']}% | ~{ANCHOR_PROCEDURAL_SPS:g} (random actions) |")
    x = results.get("rl_experiment", {})
    if "arms" in x:
        def ci(v: dict) -> str:
            return f"{v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}]" if isinstance(v, dict) else f"{v:.2f}"

        arms = "; ".join(f"{k}: {ci(v['success_rate'])} / {ci(v['route_completion'])} / {ci(v['crash_rate'])}"
                         for k, v in x["arms"].items())
        refs = ", ".join(f"{k} {v['success_rate']:.2f} / {v['route_completion']:.2f} / {v['crash_rate']:.2f}"
                         for k, v in x["reference"].items())
        lines.append(f"| RL experiment ({x.get('what', '')}): held-out success / route completion / crash | {arms} | "
                     f"{refs} |")
    r60 = results.get("rl_60min", {})
    if "route_completion" in r60:
        ref = r60.get("reference", {})
        refs = ", ".join(f"{k} {v['success_rate']:.2f} / {v['route_completion']:.2f} / {v['crash_rate']:.2f}"
                         for k, v in ref.items())
        met = ", ".join(f"{k.replace('_rate', '')} {'met' if v else 'not met'}" for k, v in r60["targets_met"].items())
        per = "; ".join(f"seed {k}: {v['success_rate']:.2f} / {v['route_completion']:.2f} / {v['crash_rate']:.2f}"
                        for k, v in r60.get("seeds", {}).items())
        lines.append(f"| RL agents trained within 60 min (`configs/sim/ppo_60min.yaml`: {r60['train_steps']:,} steps, "
                     f"at most {r60['train_minutes']} min incl. warm start, {len(r60.get('seeds', {})) or 1} seeds): "
                     f"held-out real success / route completion / crash in MetaDrive, mean over seeds | "
                     f"{r60['success_rate']:.2f} / {r60['route_completion']:.2f} / {r60['crash_rate']:.2f} ({per}) | "
                     f"targets >= 0.5 / >= 0.75 / <= 0.15 ({met}); {refs} |")
    ab = results.get("rl_ablation", {})
    if "arms" in ab:
        arms = "; ".join(f"{k}: {v['success_rate']:.2f} / {v['route_completion']:.2f} / {v['crash_rate']:.2f}"
                         for k, v in ab["arms"].items())
        lines.append(f"| RL ablation ({ab['what']}): success / route completion / crash | {arms} | |")
    tg = results.get("traffic", {})
    if "realism" in tg:
        lanes = (f" + lane following {tg['s_per_scene_lane_following']} s = "
                 f"{tg['s_per_scene_32_vehicles_190_frames_with_lane_following']} s "
                 f"({tg['speedup_vs_reference']}x TrafficGen's "
                 f"{tg['reference_trafficgen_s_per_scene_place32_plus_190_frames']} s)"
                 if "s_per_scene_lane_following" in tg else "")
        lines.append(f"| Traffic generation, tiny preset (trained), 32 vehicles + 190 frames per scene, batched over "
                     f"the 7 real scenes, 2 threads | models {tg['s_per_scene_32_vehicles_190_frames_batched']} s"
                     f"{lanes}; 9 s horizon (models): {tg['s_per_scene_32_vehicles_9s_batched']} s batched vs "
                     f"{tg['s_per_scene_32_vehicles_9s_one_at_a_time']} s one at a time | not like for like with "
                     f"TrafficGen (paper widths): see the paper-preset row |")
        mm = tg["mean_mmd"]
        mr = tg.get("mmd_references")
        refs = (f"; the log resampled (floor) {mr['logged_resampled']['mean']}, the log moved onto the lanes (best "
                f"lane-bound placement) {mr['logged_on_lanes']['mean']}" if mr else "")
        preset = f"tiny preset, {tg['train_steps']} training steps"
        lines.append(f"| Traffic realism ({preset}) on held-out real scenes: mean MMD (pos, heading, size, speed) | "
                     f"model {mm['model']}"
                     f" | random-on-lanes {mm['random_lanes_const_velocity']}, "
                     f"MetaDrive procedural {mm['metadrive_procedural']}{refs} |")
        if "mmd_per_scene" in tg:
            ps = "; ".join(f"{k.split('_')[-1][:16]}: {v['model']} / {v['random_lanes_const_velocity']} / "
                           f"{v['logged_on_lanes']} / {v['logged_resampled']}, standing "
                           f"{v['standing_share']['logged']:.0%} / {v['standing_share']['model']:.0%}"
                           for k, v in tg["mmd_per_scene"].items())
            lines.append(f"| Same, per held-out scene: mean MMD of the model / random-on-lanes / the log moved onto "
                         f"the lanes / the log resampled; vehicles standing in the log / the model | {ps} | the car "
                         f"parks (nuScenes 0916, 0655) lie beyond any lane-bound placement; on the Waymo scene the "
                         f"model places standing cars where the log's move |")
        r = tg["realism"]["model"]
        lines.append(f"| Generated traffic ({preset}): collision / off-road / kinematic violation rate | "
                     f"{r['collision_rate']} / "
                     f"{r['offroad_rate']} / {r['kinematic_violation_rate']} | logged: "
                     f"{tg['realism']['logged (reference)']['collision_rate']} / "
                     f"{tg['realism']['logged (reference)']['offroad_rate']} / "
                     f"{tg['realism']['logged (reference)']['kinematic_violation_rate']} |")
        if "sim_agent_realism" in tg:
            sr = tg["sim_agent_realism"]
            lines.append(f"| Sim-agent realism ({preset}; WOSAC-style meta-metric, 2025 weights; 1 s history, 8 s x 32 "
                         f"rollouts) "
                         f"on held-out real scenes / minADE | model {sr['model']['meta_metric']} / "
                         f"{sr['model']['min_ade']} m (closes {tg['realism_gap_closed']:.0%} of the constant-velocity "
                         f"to logged gap) | constant velocity {sr['constant_velocity']['meta_metric']} / "
                         f"{sr['constant_velocity']['min_ade']} m, random {sr['random']['meta_metric']} / "
                         f"{sr['random']['min_ade']} m, logged (upper bound) {sr['logged']['meta_metric']} |")
            met = tg["targets"]
            lines.append(f"| Traffic targets (issue: held-out real scenes) | "
                         f"{sum(met.values())} of {len(met)} met | "
                         + "; ".join(f"{k}: {'met' if v else 'not met'}" for k, v in met.items()) + " |")
        a = tg["augment_density_2"]
        lines.append(f"| `augment --density 2` on the real scenes ({preset}) | vehicles x{a['ratio']}, inserted "
                     f"collision rate {a['inserted_collision_rate']} | target < 0.05 |")
        lines.append(f"| Traffic model training (tiny, {tg['train_steps']} steps, 2-core CPU) | {tg['train_s']} s | "
                     f"{tg.get('train_note', '')} |")
    tp = results.get("traffic_paper", {})
    if "paper" in tp:
        pp, a = tp["paper"], tp["anchor"]
        mparams = (pp["params"]["placement"] + pp["params"]["trajectory"]) / 1e6
        aparams = sum(a["params"].values()) / 1e6
        t2 = pp["2_threads"]
        lines.append(f"| Traffic generation like for like: paper preset ({mparams:.1f}M parameters, random weights), "
                     f"one real scene at a time, 2 threads: place 32 / place 32 + 190 frames | "
                     f"{t2['place_32_s_per_scene']} s / {t2['place_32_plus_190_frames_s_per_scene']} s "
                     f"(batched over 7: {t2['place_32_plus_190_frames_s_per_scene_batched_7']} s) | original "
                     f"TrafficGen ({aparams:.1f}M): {a['place_32_s']} / {a['place_32_s'] + a['traj_190_frames_s']:.1f} "
                     f"s: **{pp['speedup_vs_original_one_at_a_time']}x** (batched "
                     f"{pp['speedup_vs_original_batched']}x) |")
        tt = tp["tiny"]["2_threads"]
        lines.append(f"| Same, tiny preset ({sum(tp['tiny']['params'].values()) / 1e6:.2f}M parameters) | "
                     f"{tt['place_32_s_per_scene']} s / {tt['place_32_plus_190_frames_s_per_scene']} s | "
                     f"{tp['tiny']['speedup_vs_original_one_at_a_time']}x (smaller model: not like for like) |")
    gt = results.get("gpu_traffic", {})
    if "paper" in gt:
        lines.append(f"| Traffic, GPU ({gt['machine'].get('gpu')}): paper preset training / generation | "
                     f"{gt['paper']['train_steps_per_s']} steps/s (batch 32, bf16); 32 vehicles + 190 frames "
                     f"{gt['paper']['generate_32_vehicles_190_frames_s_per_scene']} s per scene (batch of "
                     f"{gt['paper']['scenes_in_batch']}) | "
                     f"TrafficGen ~{sum(ANCHOR_TRAFFICGEN.values()):.0f} s per scene on 2 CPU threads |")
    gb = results.get("gpu_batched_sim", {})
    if "log_replay" in gb:
        lines.append(f"| Batched simulator, GPU ({gb['device']}): env steps/s, logs replayed / IDM traffic | "
                     f"{gb['log_replay']} / {gb['idm_traffic']} | best {gb['best_steps_per_s']}; CPU rows above |")
    v = results.get("views", {})
    if "render" in v:
        r = v["render"]
        lines.append(f"| Synthetic six-camera render, 128x224 (pybullet TinyRenderer, CPU, with buildings) | "
                     f"{_get(r, '128x224', 'frames_per_s_wall')} six-camera frames/s (1 process), "
                     f"{_get(r, '128x224_2_workers', 'frames_per_s_wall')} (2 workers); "
                     f"{_get(r, '128x224', 'ms_per_camera_cpu')} ms per camera; 224x400: "
                     f"{_get(r, '224x400', 'ms_per_camera_cpu')} ms per camera | pybullet with ground + 30 boxes: "
                     f"~6 / ~20 ms per camera; goal >= 20 frames/s |")
    if "sampling" in v:
        sm = v["sampling"]
        lines.append(f"| Six views, tiny model ({sm.get('image_size')}), 2 threads: parallel (MaskGIT, "
                     f"{sm.get('steps')} steps) vs token by token | {sm.get('parallel_s')} s vs "
                     f"{sm.get('autoregressive_s')} s: **{sm.get('speedup')}x** | target >= 10x |")
    if "sampling_hires" in v:
        sm = v["sampling_hires"]
        lines.append(f"| Six views, 128x224 architecture ({sm.get('token_grid', [16, 28])[0]}x"
                     f"{sm.get('token_grid', [16, 28])[1]} tokens per view, attention to the facing "
                     f"{sm.get('neighbour_span', 1.0):g} of the {sm.get('view_neighbours', 0)} neighbouring "
                     f"view(s) on each side; "
                     f"untrained weights, same cost), 2 threads: parallel ({sm.get('steps')} steps) vs token by "
                     f"token (estimated from {sm.get('autoregressive_forwards_timed')} of its forwards) | "
                     f"{sm.get('parallel_s')} s vs "
                     f"{sm.get('autoregressive_s')} s: **{sm.get('speedup')}x**{_layout_timing(v)} | "
                     f"target <= 1.5 s and >= 10x |")
    vt = results.get("views_tokenizer", {})
    for name, row in (vt.get("models") or {}).items():
        own = f"{row['image_size'][0]}x{row['image_size'][1]}"
        m = (row.get(own) or {}).get("procedural") or {}
        if m.get("psnr") is not None:
            small = ((row.get("64x112") or {}).get("procedural") or {}) if own != "64x112" else {}
            at64 = f"; at 64x112: {_r(small.get('psnr'), 2)} dB, FID {_r(small.get('fid'), 1)}" if small else ""
            lines.append(f"| Views tokenizer `{name}` ({own}, {row['token_grid'][0]}x{row['token_grid'][1]} tokens), "
                         f"held-out procedural round trip: PSNR, FID of reconstructions, road / vehicle IoU | "
                         f"{_r(m['psnr'], 2)} dB, FID {_r(m['fid'], 1)}, {_r(m['road_iou'])} / "
                         f"{_r(m['vehicle_iou'])}{at64} | oracle {_r(m['road_iou_oracle'])} / "
                         f"{_r(m['vehicle_iou_oracle'])} |")
    lines += _views_model_rows(v, "tiny model")
    if "metrics" in v:
        took = (f"{v['tiny_train_minutes']} min" if v.get("tiny_train_minutes") is not None
                else v.get("tiny_train_note", "not measured"))
        lines.append(f"| Views tiny training (both stages, 2-core CPU) | {took} | target < 30 min |")
    h = v.get("hires") or {}
    sm = h.get("sampling") or {}
    if sm.get("parallel_s") is not None:
        lines.append(f"| Six views, 128x224 model (trained, checkpoints/views_hires), 2 threads: parallel "
                     f"({sm.get('steps')} steps) vs token by token (estimated from "
                     f"{sm.get('autoregressive_forwards_timed')} of its forwards) | {sm.get('parallel_s')} s vs "
                     f"{sm.get('autoregressive_s')} s: **{sm.get('speedup')}x** | target <= 1.5 s and >= 10x |")
    lines += _views_model_rows(h, "128x224 model")
    ab = results.get("views_ablation", {})
    for arm, a in (ab.get("arms") or {}).items():
        m = (a.get("metrics") or {}).get("procedural") or {}
        if m.get("vehicle_iou") is not None:
            lines.append(f"| Views ablation, arm `{arm}` (same tokenizer, 16 scenes' frames, {a.get('steps', 600)} "
                         f"steps), held-out procedural: vehicle / "
                         f"road IoU, seams, FID | {_r(m['vehicle_iou'])} / {_r(m['road_iou'])}, seams "
                         f"{_r(m['seam_consistency'])}, FID {_r(m['fid'], 1)} | oracle {_r(m['vehicle_iou_oracle'])} / "
                         f"{_r(m['road_iou_oracle'])}, seams {_r(m['seam_consistency_oracle'])} |")
    prev = ((ab.get("previous_shipped") or {}).get("metrics") or {}).get("procedural") or {}
    if prev.get("vehicle_iou") is not None:
        lines.append(f"| Views, previous shipped model (same 1500-step schedule, object_loss_weight 3), held-out "
                     f"procedural: vehicle / road IoU, seams, FID | {_r(prev['vehicle_iou'])} / "
                     f"{_r(prev['road_iou'])}, seams {_r(prev['seam_consistency'])}, FID {_r(prev['fid'], 1)} | "
                     "shipped now (weight 0): the tiny-model rows above |")
    floor = ((ab.get("shipped_unconditional") or {}).get("procedural") or {})
    if floor.get("vehicle_iou") is not None:
        lines.append(f"| Views, tiny model sampled from the null layout (the floor), held-out procedural: vehicle / "
                     f"road IoU, seams, FID | {_r(floor['vehicle_iou'])} / {_r(floor['road_iou'])}, seams "
                     f"{_r(floor['seam_consistency'])}, FID {_r(floor['fid'], 1)} | conditioned: see the rows above |")
    s3 = results.get("scene3d", {})
    if "images_per_second_64_cpu" in s3:
        lines.append(f"| scene3d renders, tiny preset (configs/scene3d/tiny.yaml), 64x64, CPU, batch 8 | "
                     f"{s3['images_per_second_64_cpu']} images/s | "
                     f"DisCoScene ~10 images/s at 256x256 on a V100 |")
        lines.append(f"| scene3d tiny training / box_alpha_iou | {s3.get('tiny_train_minutes_measured')} min; "
                     f"IoU {s3.get('box_alpha_iou_trained')} trained | {s3.get('box_alpha_iou_untrained')} "
                     f"untrained |")
    ex = results.get("export", {})
    sets = [(k, ex[k]) for k in ("real", "procedural") if isinstance(ex.get(k), dict) and "waymo" in ex[k]]
    if sets:
        speed = "; ".join(f"{k}: Waymo {v['waymo']['scenarios_per_s']}, OpenSCENARIO "
                          f"{v['openscenario']['scenarios_per_s']}"
                          + (f", CommonRoad {v['commonroad']['scenarios_per_s']}" if "commonroad" in v else "")
                          for k, v in sets)
        checks = [v["openscenario"] for _, v in sets if "asam_errors" in v["openscenario"]]
        qc = (f"ASAM checkers: {sum(c['asam_errors'] for c in checks)} errors, "
              f"{sum(c['asam_warnings'] for c in checks)} warnings" if checks else "ASAM checkers not run")
        lines.append(f"| `scenarios export` scenarios/s (1 thread) | {speed} | {qc} |")
    lo = results.get("load", {})
    if "safe_load_validate_ms" in lo:
        lines.append(f"| Safe load + validate one real scenario | {lo['safe_load_validate_ms']} ms "
                     f"(plain pickle {lo['plain_pickle_ms']} ms) | |")
    bs = results.get("batched_sim", {})
    if "best_steps_per_s" in bs:
        t2, t1, md = bs["threads_2"], bs["threads_1"], bs["metadrive_scenario_env"]
        lines.append(f"| Batched simulator (torch, CPU), env steps/s at 128 / 256 / 512 scenes; real scenes "
                     f"| 1 thread: {t1['scenes_128']} / {t1['scenes_256']} / {t1['scenes_512']}; 2 threads: "
                     f"{t2['scenes_128']} / {t2['scenes_256']} / {t2['scenes_512']}; best {bs['best_steps_per_s']} "
                     f"| MetaDrive ScenarioEnv same run {md['steps_per_s']}: **{bs['ratio_vs_metadrive']}x**; "
                     "target 20,000 and 50x |")
        if "idm_traffic_1_thread" in bs:
            it, t1 = bs["idm_traffic_1_thread"], bs["threads_1"]
            lines.append(f"| Same with IDM traffic (logged vehicles yield to the ego), 1 thread, 128 / 256 scenes | "
                         f"{it['scenes_128']} / {it['scenes_256']} | replayed traffic, 1 thread: "
                         f"{t1['scenes_128']} / {t1['scenes_256']} |")
        if "self_play_1_thread" in bs:
            sp = bs["self_play_1_thread"]
            lines.append("| Self-play (every moving vehicle driven, up to 8 per scene), 1 thread, 16 / 64 scenes: "
                         f"agent steps/s (slot steps/s) | {sp['scenes_16']['agent_steps_per_s']} "
                         f"({sp['scenes_16']['slot_steps_per_s']}) / {sp['scenes_64']['agent_steps_per_s']} "
                         f"({sp['scenes_64']['slot_steps_per_s']}) | {sp['scenes_64']['slots']} slots at 64 scenes |")
    bt = results.get("batched_transfer", {})
    if "held_out" in bt and "batched" in bt["held_out"]:
        h, tr = bt["held_out"], bt["train"]
        lines.append(f"| PPO on the batched simulator ({bt['budget_steps']:,} steps, {bt['num_scenes']} slots, "
                     f"{bt['train_steps_per_s']} steps/s, {len(bt.get('seeds', {})) or 1} seeds): route completion "
                     f"batched / MetaDrive, held-out / training scenes | {h['batched']['route_completion']} / "
                     f"{h['metadrive']['route_completion']}; {tr['batched']['route_completion']} / "
                     f"{tr['metadrive']['route_completion']}; held-out gap per seed "
                     f"{h.get('route_completion_gap_per_seed', '?')} | target: MetaDrive at most 0.1 below batched on "
                     f"held-out scenes: {bt.get('seeds_within_target', '?')}/{len(bt.get('seeds', {}))} seeds, mean "
                     f"{h.get('route_completion_gap_mean', '?')} |")
        r60 = bt.get("rl_60min", {})
        if "held_out" in r60:
            h6 = r60["held_out"]
            lines.append(f"| Same check for the 60-minute recipe's policies ({len(r60['seeds'])} seeds, real + "
                         f"procedural training): route completion batched / MetaDrive on held-out scenes | "
                         f"{h6['batched']['route_completion']} / {h6['metadrive']['route_completion']}; gap per seed "
                         f"{h6['route_completion_gap_per_seed']} | {r60['seeds_within_target']}/{len(r60['seeds'])} "
                         f"seeds within 0.1 ({'met' if r60['target_met'] else 'not met'}) |")
    bi = results.get("bad_input", {})
    if "kinds_tried" in bi:
        cm, md = bi["command_matrix"], bi["metadrive_data_manager"]
        lines.append(f"| Bad-input matrix: {bi['kinds_tried']} kinds of hostile/broken file; {cm['runs']} runs of "
                     f"{len(cm['commands'])} commands x 3 locations | loader {bi['loader_clear_errors']}/"
                     f"{bi['kinds_tried']}, validate {bi['validate_clear_errors']}/{bi['kinds_tried']}, MetaDrive "
                     f"data manager {md['refused']}/{md['kinds']}, commands {cm['clear_errors']}/{cm['runs']} clear "
                     f"errors; executed: {'YES' if bi['anything_executed'] else 'nothing'} | every run a clear error, "
                     "nothing executed |")
    return lines


def _get(d: dict, *keys):
    for k in keys:
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if d != {} else "?"


def _r(x, nd: int = 3):
    return round(x, nd) if isinstance(x, (int, float)) else x


def refresh_readme(results: dict, mach: dict) -> None:
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    text = README.read_text()
    if start not in text or end not in text:
        return
    # Rows come from JSON files written at different times, possibly on different machines: name each.
    by_machine: dict[str, list[str]] = {}
    for name, r in sorted(results.items()):
        m = r.get("machine") or {}
        key = (f"{m.get('date', '?')} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores"
               + (f", {m['gpu']}" if m.get("gpu") else "") + f"), Python {m.get('python', '?')}"
               + (f", torch {m['torch']}" if m.get("torch") else "")) if m else "machine not recorded"
        by_machine.setdefault(key, []).append(name)
    provenance = "; ".join(f"{', '.join(names)}: {key}" for key, names in by_machine.items())
    table = "\n".join([
        f"`make bench` refreshes this table from `benchmarks/results/*.json` (no GPU unless a row says so). "
        f"Measured: {provenance}.", "",
        "| work | bevgen | reference / target |", "|---|---|---|", *_row_lines(results)])
    head, rest = text.split(start, 1)
    README.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str]) -> int:
    gpu = "--gpu" in argv
    argv = [a for a in argv if a != "--gpu"]
    table = GPU_BENCHES if gpu else BENCHES
    names = argv or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(table)}", file=sys.stderr)
        return 2
    mach = machine()
    if gpu and "gpu" not in mach:
        print("make bench-gpu needs a CUDA device (torch.cuda.is_available() is False here)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        result = {"benchmark": name, "machine": mach, **table[name]()}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    all_results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    refresh_readme(all_results, mach)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
