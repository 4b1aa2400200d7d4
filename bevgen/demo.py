"""``bevgen demo``: the main job on the embedded default data, ending in ``report.html``.

Stages (each cached: a second run skips what is done):
  1. procedural scenarios (MetaDrive PG maps + IDM traffic) -> ``scenarios/``
  2. validation of every file against the contract, dataset statistics (``info.json``)
  3. BEV rasters: PNG previews of spread frames and an animated top-down GIF of one scenario
  4. traffic: train the tiny TrafficGen-style model, densify the scenarios (x2) -> ``augmented/``
  5. RL: PPO on the augmented scenarios, evaluated on held-out procedural scenarios next to the random and IDM
     policies, and a top-down rollout of the trained agent
  6. cameras (:mod:`bevgen.demo_cameras`): synthetic six-camera datasets, the camera-view and scene3d
     models, generated views of held-out frames with metrics, six generated views of the agent's drive,
     scene3d edits
  7. the report, self-contained HTML with every image inlined
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

from bevgen.demo_cameras import FAST as CAMERAS_FAST, CamerasDemoConfig
from bevgen.layout import CHANNELS, BevConfig, BevRasterizer
from bevgen.preview import preview_image
from bevgen.rollout import record_rollout, save_animation
from bevgen import demo_cameras as dc
from bevgen import report as rp
from runkit.config import save_config, to_dict
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.envs.factory import EnvConfig, RewardConfig, make_env
from sim_bridge.rl.evaluate import EvalConfig, evaluate, make_policy, write_metrics
from sim_bridge.rl.train import BatchedConfig, PPOConfig, PPOTrainConfig, read_episodes
from sim_bridge.rl.train import train as train_ppo
from sim_bridge.rl.warmstart import WarmStartConfig
from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural
from traffic.generate import GenerateConfig, augment
from traffic.train import TrafficTrainConfig, train

# torch, matplotlib and traffic.metrics (shapely) are imported lazily: heavy, used by single stages.

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the end-to-end demo."""

    procedural: ProceduralConfig = ProceduralConfig()
    """Scenario generation."""
    bev: BevConfig = BevConfig()
    """BEV raster geometry."""
    preview_frames: int = 3
    """Preview frames per scenario."""
    animation_stride: int = 2
    """Every n-th frame goes into the top-down animation."""
    traffic_steps: int = 300
    """Training steps of the tiny traffic model."""
    ppo_steps: int = 300_000
    """PPO environment steps on the augmented scenarios (batched simulator, after a behaviour-cloning warm start
    from the scenarios' logged egos)."""
    ppo_final_std: float = 0.05
    """Action noise the PPO policy is annealed to over the last 80% of training (``ppo.final_std``), so that
    the mean action the evaluation and the rollout drive is the policy that was trained; 0 = no annealing."""
    heldout_scenarios: int = 4
    """Procedural scenarios (other seeds) the agent is evaluated on."""
    rollout_steps: int = 200
    """Length of the trained agent's top-down rollout."""
    cameras: CamerasDemoConfig = CamerasDemoConfig()
    """Camera stages: synthetic data, camera views, the drive video, scene3d."""


def demo_config(fast: bool, workers: int) -> DemoConfig:
    if fast:
        return DemoConfig(procedural=ProceduralConfig(num_scenarios=2, steps=80, workers=min(workers, 2)),
                          preview_frames=2, animation_stride=4, traffic_steps=20, ppo_steps=512,
                          heldout_scenarios=1, rollout_steps=40, cameras=CAMERAS_FAST)
    return DemoConfig(procedural=ProceduralConfig(num_scenarios=8, steps=200, workers=workers))


def _stage_traffic(cfg: DemoConfig, data: Path, out: Path) -> dict:
    """Train (or reuse) the tiny traffic model on the scenarios and densify them x2."""
    from traffic.metrics import evaluate_traffic

    run = out / "traffic"
    summary = run / "train_summary.json"
    if not (summary.exists() and json.loads(summary.read_text())["final_step"] >= cfg.traffic_steps):
        resume = (run / "checkpoints" / "latest.pt").exists()
        train(TrafficTrainConfig(data=(str(data),), steps=cfg.traffic_steps, batch_size=8,
                                 checkpoint_every=max(cfg.traffic_steps // 3, 1)), run, resume=resume, progress=False)
    _, stats = augment(data, run, out / "augmented", GenerateConfig(density=2.0))
    metrics = evaluate_traffic(ScenarioDataset(out / "augmented"), ScenarioDataset(data))
    return {"stats": stats, "metrics": metrics, "losses": [json.loads(line) for line in
                                                           (run / "losses.jsonl").read_text().splitlines()]}


def _train_ppo(cfg: DemoConfig, data: Path, run: Path) -> list[dict]:
    """PPO on the batched simulator (observation "scene", which MetaDrive evaluation and the rollout read through
    ``SceneObservation``) with the 60-minute recipe's settings (configs/sim/ppo_60min.yaml: 128 scene slots,
    warm start by cloning the scenarios' logged egos), collisions costing 100 and the action noise annealed to
    ``ppo_final_std``.

    Measured (2-core CPU, 300k steps, MetaDrive, route completion on the 4 held-out scenes / on 12 unseen
    procedural scenes, seeds 10000+, over 3 training seeds): 0.75-0.77 / 0.71-0.81; the same without the
    annealing 0.55-0.75 / 0.66-0.68 (2 seeds); the previous recipe (self-play, collisions costing 20, no
    annealing) 0.62 / 0.64, and 1M steps of it overfit the 8 maps (0.49 / 0.59). 100 more procedural maps in
    the training set gave 0.68-0.83 / 0.69-0.86 (3 runs), not worth their 4.5 minutes of generation. Crashes
    into slower cars ahead remain (crash rate 0.5-0.75): docs/batched_sim.md has the ablation."""
    summary = run / "train_summary.json"
    if not (summary.exists() and json.loads(summary.read_text())["final_step"] >= cfg.ppo_steps):
        small = cfg.ppo_steps < 16_384
        reward = RewardConfig(crash_vehicle_penalty=100.0, crash_object_penalty=100.0)
        tc = PPOTrainConfig(env=EnvConfig(data=str(data), horizon=500, observation="scene", reward=reward),
                            backend="batched", batched=BatchedConfig(num_scenes=8 if small else 128),
                            ppo=PPOConfig(n_steps=64 if small else 128, batch_size=128 if small else 4096, n_epochs=5,
                                          net_arch=(64, 64) if small else (256, 256), final_std=cfg.ppo_final_std,
                                          std_anneal_fraction=0.8),
                            warm_start=WarmStartConfig(demonstrations="log", steps=50 if small else 2000),
                            total_steps=cfg.ppo_steps, checkpoint_every=max(cfg.ppo_steps // 4, 512))
        train_ppo(tc, run, resume=(run / "checkpoints" / "latest.pt").exists(), progress_bar=False)
    return read_episodes(run)


def _curve_png(episodes: list[dict], path: Path) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    if episodes:
        steps = np.array([e["step"] for e in episodes])
        rew = np.array([e["reward"] for e in episodes])
        k = max(1, len(rew) // 10)
        ax.plot(steps, rew, ".", alpha=0.35, label="episode")
        ax.plot(steps[k - 1:], np.convolve(rew, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
        ax.legend()
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode reward")
    ax.set_title("PPO on the augmented scenarios")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return np.asarray(Image.open(path).convert("RGB"))


def _stage(console, name: str, timings: dict):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()
            if console:
                console.print(f"[bold cyan]stage[/] {name} ...")

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.t, 2)
            if console and exc[0] is None:
                console.print(f"[bold cyan]stage[/] {name}: {timings[name]:.1f} s")
    return _T()


def run_demo(out: str | Path, fast: bool = False, workers: int = 2, console=None) -> Path:
    """Run every stage into ``out`` and return the path of ``report.html``."""
    out = Path(out)
    cfg = demo_config(fast, workers)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    data = out / "scenarios"

    with _stage(console, "procedural scenarios", timings):
        gen = generate_procedural(cfg.procedural, data, resume=True)
    with _stage(console, "validate", timings):
        ds = ScenarioDataset(data)
        checked = list(ds.iter_checked())
        bad = [(n, str(e)) for n, e in checked if isinstance(e, Exception)]
        scenes = [s for _, s in checked if not isinstance(s, Exception)]
    with _stage(console, "dataset statistics", timings):
        rows = [{"scenario": s.id, "steps": s.length, "seconds": s.length / 10,
                 "agents": ", ".join(f"{k.lower()} {v}" for k, v in s.agent_counts().items()),
                 "lanes": sum(f.is_lane for f in s.map_features.values()),
                 "map features": len(s.map_features)} for s in scenes]
        (out / "info.json").write_text(json.dumps(rows, indent=2))
    with _stage(console, "BEV previews", timings):
        previews, raster_ms = [], []
        for s in scenes:
            r = BevRasterizer(s, cfg.bev)
            for t in np.linspace(0, s.length - 1, cfg.preview_frames).astype(int):
                t0 = time.perf_counter()
                layout = r(int(t))
                raster_ms.append((time.perf_counter() - t0) * 1e3)
                img = preview_image(layout, title=f"{s.id} t={t / 10:.1f}s", scale=1, legend=False)
                previews.append((img, f"{s.id}, t = {t / 10:.1f} s, {int(layout.valid.sum())} boxes"))
                (out / "bev").mkdir(parents=True, exist_ok=True)
                Image.fromarray(preview_image(layout, title=f"{s.id} t={t / 10:.1f}s")).save(
                    out / "bev" / f"{s.id}_t{int(t):04d}.png")
        anim_src = scenes[0]
        r = BevRasterizer(anim_src, cfg.bev)
        frames = [preview_image(r(t), title=f"{anim_src.id} t={t / 10:.1f}s", scale=2)
                  for t in range(0, anim_src.length, cfg.animation_stride)]
        (out / "bev" / f"{anim_src.id}.gif").write_bytes(rp.gif_bytes(frames, fps=10 / cfg.animation_stride))

    with _stage(console, "traffic model + augmentation", timings):
        traffic = _stage_traffic(cfg, data, out)
        aug = ScenarioDataset(out / "augmented")
        before_after = []
        named = [(n, s) for n, s in checked if not isinstance(s, Exception)]
        for name, s in named[:2]:  # augmentation keeps file names
            a = aug.load(name)
            for label, sc in (("logged", s), ("augmented x2", a)):
                lay = BevRasterizer(sc, cfg.bev)(0)
                before_after.append((preview_image(lay, title=f"{sc.id} {label}", scale=1, legend=False),
                                     f"{sc.id}, {label}: {int(lay.valid.sum())} boxes at t = 0"))
        a0 = aug.load(aug.names[0])
        ra = BevRasterizer(a0, cfg.bev)
        traffic_frames = [preview_image(ra(t), title=f"{a0.id} augmented t={t / 10:.1f}s", scale=2)
                          for t in range(0, a0.length, cfg.animation_stride)]
    with _stage(console, "held-out scenarios", timings):
        heldout = out / "heldout"
        generate_procedural(ProceduralConfig(num_scenarios=cfg.heldout_scenarios, start_seed=10_000,
                                             steps=cfg.procedural.steps, workers=cfg.procedural.workers), heldout)
    with _stage(console, "PPO training", timings):
        episodes = _train_ppo(cfg, out / "augmented", out / "ppo")
        (out / "rl").mkdir(parents=True, exist_ok=True)
        curve = _curve_png(episodes, out / "rl" / "learning_curve.png")
    with _stage(console, "evaluation", timings):
        env_cfg = EnvConfig(data=str(heldout), horizon=200, observation="scene")
        result = evaluate(str(out / "ppo"), str(heldout), EvalConfig(workers=1), env_cfg)
        write_metrics(result, out / "rl")
    with _stage(console, "agent rollout", timings):
        # the trained agent in augmented (dense) traffic: its snapshots also drive the six-camera video
        env = make_env(EnvConfig(data=str(out / "augmented"), num_scenarios=1, horizon=cfg.rollout_steps,
                                 observation="scene"))
        try:
            roll = record_rollout(env, make_policy(str(out / "ppo"), env, seed=0), max_steps=cfg.rollout_steps,
                                  every=2, seed=0, scale=1, keep_snapshots=True)
        finally:
            env.close()
        save_animation(roll.frames, out / "rl" / "rollout.gif", fps=5)

    camera_parts = _camera_stages(cfg, out, console, timings, roll.snapshots)

    with _stage(console, "report", timings):
        legend = rp.definition_list({name: desc for name, (desc, _) in CHANNELS.items() if name in cfg.bev.channels})
        versions = _versions()
        sections = [
            ("What this is", "<p>bevgen's three jobs on one scenario contract, with no data download: "
             "procedural driving scenarios (MetaDrive procedural maps with IDM traffic, generated offline, "
             "ScenarioNet format) are validated and rasterized into ego-centric bird's-eye-view layouts; "
             "<b>dense traffic</b>: a TrafficGen-style model learns from them and inserts vehicles; "
             "<b>RL</b>: a PPO agent, warm-started by cloning the scenarios' logged drivers, trains on the "
             "augmented scenarios in the batched simulator and is evaluated in MetaDrive on held-out ones; "
             "<b>camera views</b>: BEV layouts (including the agent's own drive) become six surrounding "
             "camera images, and a compositional 3D-aware generator renders and edits box layouts.</p>"),
            ("Scenarios", rp.table(rows) + f"<p class='muted'>{len(scenes)} valid, {len(bad)} bad; "
             f"generation wrote {len(gen.written)}, reused {len(gen.reused)}, failed {len(gen.failed)}.</p>"
             + (rp.table([{"file": n, "problem": e} for n, e in bad]) if bad else "")),
            ("Top-down animation", rp.gif_tag(frames, f"{anim_src.id}: ego-centric BEV, forward is up",
                                               fps=10 / cfg.animation_stride)),
            ("BEV previews", "<div class='gallery'>" + "".join(rp.image_tag(i, c) for i, c in previews) + "</div>"),
            ("Traffic: before and after augmentation",
             "<p>A TrafficGen-style model (placement + trajectories) trained on these scenarios inserts vehicles "
             "(density x2); every logged agent is kept bit-identical and inserted vehicles yield rather than "
             "collide.</p><div class='gallery'>" + "".join(rp.image_tag(i, c) for i, c in before_after) + "</div>"
             + rp.table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in traffic["metrics"].items()
                          if k in ("collision_rate", "offroad_rate", "kinematic_violation_rate", "num_agents")}])
             + f"<p class='muted'>placed {traffic['stats']['placed']} of {traffic['stats']['requested']} requested; "
               f"training loss {traffic['losses'][0]['total']:.2f} -> {traffic['losses'][-1]['total']:.2f}.</p>"),
            ("Generated traffic", rp.gif_tag(traffic_frames, f"{a0.id}: logged + generated vehicles",
                                             fps=10 / cfg.animation_stride)),
            ("RL: learning curve", rp.image_tag(curve, "PPO (stable-baselines3) on the batched simulator")),
            ("RL: evaluation on held-out scenarios",
             rp.table([{"policy": name, **{k: m[k] for k in ("success_rate", "route_completion", "crash_rate",
                                                             "out_of_road_rate", "episode_reward", "num_episodes")}}
                       for name, m in [("PPO (trained)", result)] + list(result["reference"].items())])),
            ("Trained agent rollout", rp.gif_tag(roll.frames, "top-down view in an augmented scenario: agent (yellow), "
                                                              "traffic, route (cyan)",
                                                 fps=5)),
            ("BEV channels", legend + f"<p class='muted'>{cfg.bev.size}x{cfg.bev.size} px, "
             f"{cfg.bev.resolution_m} m/px, +-{cfg.bev.range_m} m; rasterization median "
             f"{np.median(raster_ms):.2f} ms per frame on this machine.</p>"),
            *dc.camera_sections(*camera_parts),
            ("Metrics", rp.definition_list({**dc.metric_definitions(),
                "valid scenarios": f"{len(scenes)}: files that load through the safe loader and pass the contract "
                                   "validator",
                "rasterization time": f"{np.median(raster_ms):.2f} ms: median wall time of one "
                                      f"{cfg.bev.size}x{cfg.bev.size} BEV frame",
                "success_rate": "fraction of episodes with route completion > 0.95, no crash and not leaving the road",
                "route_completion": "fraction of the ego's route covered (MetaDrive), averaged over episodes",
                "crash_rate / out_of_road_rate": "fraction of episodes ending in a collision / off the road",
                "collision_rate": "fraction of non-ego agents whose box overlaps another agent's at some step "
                                  "(pairs with a vehicle)",
                "offroad_rate": "fraction of moving-vehicle steps with the centre off the lane surface",
                "kinematic_violation_rate": "fraction of vehicle steps with |accel| > 10 m/s^2, |yaw rate| > 1.5 "
                                            "rad/s, or heading vs motion > 0.5 rad",
            })),
            ("Stages", rp.table([{"stage": k, "seconds": v} for k, v in timings.items()])),
            ("Config and versions", rp.pre(json.dumps(to_dict(cfg), indent=2)) + rp.table([versions])),
        ]
        path = rp.write_report(out / "report.html", "bevgen demo", sections,
                               subtitle=f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
                                        f"({platform.processor() or platform.machine()})")
    (out / "stages.json").write_text(json.dumps(timings, indent=2))
    return path


def _camera_stages(cfg: DemoConfig, out: Path, console, timings: dict, snapshots) -> tuple:
    """Synthetic camera data -> views and scene3d models -> views, drive, scene3d results (see demo_cameras)."""
    import torch

    torch.set_num_threads(max(1, cfg.procedural.workers))
    cc = cfg.cameras
    with _stage(console, "synthetic camera datasets", timings):
        dc.camera_data(cc, out / "augmented", out / "camera_data", cfg.procedural.workers)
        dc.camera_data(cc, out / "heldout", out / "camera_heldout", cfg.procedural.workers)
    with _stage(console, "camera-view model", timings):
        pipe, views_src = dc.views_model(cc, out / "camera_data", out / "views")
    with _stage(console, "camera views of held-out frames", timings):
        views = dc.views_stage(cc, pipe, out / "camera_heldout", out / "camera_data", out / "views_eval")
    with _stage(console, "six-camera drive", timings):
        drive = dc.drive_stage(cc, pipe, snapshots, out / "drive")
    with _stage(console, "scene3d", timings):
        gen, scene3d_src = dc.scene3d_model(cc, out / "camera_data", out / "scene3d")
        scene3d = dc.scene3d_stage(cc, gen, out / "camera_heldout", out / "scene3d_eval")
    return views, drive, scene3d, {"views": views_src, "scene3d": scene3d_src}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("bevgen", "numpy", "metadrive-simulator", "opencv-python-headless", "torch", "stable-baselines3",
                "pybullet"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
