"""GPU figures for the traffic models (`make bench-gpu`, needs CUDA): training throughput of the tiny and paper
presets (bf16 autocast) and generation speed (32 vehicles + 190 frames per scene, batched over 16 scenes)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def bench_gpu_traffic(data: list[Path], steps: int = 150) -> dict:
    import torch

    from sim_bridge.dataset import ScenarioDataset
    from traffic.generate import generate_scenes
    from traffic.train import TrafficTrainConfig, load_models, train

    dirs = tuple(str(d) for d in data)
    scenes = [s for d in dirs for s in ScenarioDataset(d, repair=True) if s.tracks.valid[s.ego_index, 0]][:16]
    res: dict = {"what": f"{steps} training steps, batch 32, bf16, on {', '.join(Path(d).name for d in dirs)}; "
                         f"generation of 32 vehicles + 190 frames per scene, {len(scenes)} scenes in one batch"}
    for preset in ("tiny", "paper"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrafficTrainConfig(data=dirs, preset=preset, steps=steps, batch_size=32,
                                     precision="bf16", device="cuda", checkpoint_every=steps)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            summary = train(cfg, f"{tmp}/run", progress=False)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            h = summary["history"]
            placement, trajectory, tcfg = load_models(f"{tmp}/run", "cuda")
            gen = torch.Generator(device="cuda").manual_seed(0)
            generate_scenes(placement, trajectory, scenes[:2], False, [4, 4], tcfg.encoding, gen, "cuda", steps=20)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            generate_scenes(placement, trajectory, scenes, False, [32] * len(scenes), tcfg.encoding, gen, "cuda",
                            steps=190)
            torch.cuda.synchronize()
            per_scene = (time.perf_counter() - t0) / len(scenes)
        res[preset] = {"train_steps": steps, "batch_size": 32, "train_wall_s_incl_encoding": round(wall, 1),
                       "train_steps_per_s": round(steps / summary["seconds"], 2),
                       "loss_first10": round(sum(x["total"] for x in h[:10]) / 10, 3),
                       "loss_last10": round(sum(x["total"] for x in h[-10:]) / 10, 3),
                       "generate_32_vehicles_190_frames_s_per_scene": round(per_scene, 3),
                       "scenes_in_batch": len(scenes), "samples": summary["samples"]}
    return res
