"""GPU figures for the traffic models (run on a CUDA machine): training throughput of the tiny and paper
presets (bf16 autocast) and generation speed (32 vehicles + 190 frames per scene, batched).

    python benchmarks/gpu_traffic.py --data DIR [DIR ...] --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from sim_bridge.dataset import ScenarioDataset
from traffic.generate import generate_scenes
from traffic.train import TrafficTrainConfig, load_models, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    a = p.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA device"
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d")}
    scenes = [s for d in a.data for s in ScenarioDataset(d, repair=True) if s.tracks.valid[s.ego_index, 0]][:16]
    for preset, batch in (("tiny", 32), ("paper", 32)):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrafficTrainConfig(data=tuple(a.data), preset=preset, steps=a.steps, batch_size=batch,
                                     precision="bf16", device="cuda", checkpoint_every=a.steps)
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
        res[preset] = {"train_steps": a.steps, "batch_size": batch, "train_wall_s_incl_encoding": round(wall, 1),
                       "train_steps_per_s": round(a.steps / summary["seconds"], 2),
                       "loss_first10": round(sum(x["total"] for x in h[:10]) / 10, 3),
                       "loss_last10": round(sum(x["total"] for x in h[-10:]) / 10, 3),
                       "generate_32_vehicles_190_frames_s_per_scene": round(per_scene, 3),
                       "scenes_in_batch": len(scenes), "samples": summary["samples"]}
        print(json.dumps({preset: res[preset]}), flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
