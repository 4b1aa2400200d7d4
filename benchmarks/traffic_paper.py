"""Like-for-like generation speed: our traffic models at the paper preset against the original TrafficGen.

The original's figures (../shared/ANCHORS.md) were measured with random weights at paper widths on this kind
of machine, 2 threads, one scene at a time: placing 32 vehicles 5.09 s, 190 frames of their trajectories
22.9 s. Here the same work runs through ``traffic.generate.generate_scenes`` with the ``paper`` preset, also
with random weights (speed does not depend on training; the rows of `make bench` that report realism use
trained models), on the same 7 real scenes, one scene at a time and batched over the 7. Placement alone is
timed as a rollout of 0 steps. Each figure is the median of ``repeats`` runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

ANCHOR_PLACE_32_S = 5.09  # original TrafficGen, paper widths, 2 threads, per scene
ANCHOR_TRAJ_190_S = 22.9
ANCHOR_PARAMS = {"placement": 26.1e6, "trajectory": 42.4e6}


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_traffic_paper(real_dir: Path, repeats: int = 3) -> dict:
    import torch

    from sim_bridge.dataset import ScenarioDataset
    from traffic.encoding import EncodingConfig
    from traffic.generate import generate_scenes
    from traffic.model.encoder import PRESETS
    from traffic.model.placement import PlacementModel
    from traffic.model.trajectory import TrajectoryModel

    if not real_dir.exists():
        return {"skipped": f"{real_dir} not found"}
    scenes = [s for s in ScenarioDataset(real_dir, repair=True)]
    enc = EncodingConfig()
    out: dict = {"what": "32 new vehicles per real scene (7 scenes) with random weights, median of "
                         f"{repeats}; placement alone, then placement + 190 trajectory frames",
                 "anchor": {"place_32_s": ANCHOR_PLACE_32_S, "traj_190_frames_s": ANCHOR_TRAJ_190_S,
                            "params": ANCHOR_PARAMS, "threads": 2, "per": "scene, one at a time"}}
    for preset in ("paper", "tiny"):
        torch.manual_seed(0)
        placement, trajectory = PlacementModel(PRESETS[preset]).eval(), TrajectoryModel(PRESETS[preset]).eval()
        row: dict = {"params": {"placement": sum(p.numel() for p in placement.parameters()),
                                "trajectory": sum(p.numel() for p in trajectory.parameters())}}
        for threads in (2, 1):
            torch.set_num_threads(threads)

            def run(steps: int, batch: int, placement=placement, trajectory=trajectory) -> None:
                g = torch.Generator().manual_seed(0)
                for i in range(0, len(scenes), batch):
                    part = scenes[i:i + batch]
                    generate_scenes(placement, trajectory, part, False, [32] * len(part), enc, g, steps=steps)

            run(2, len(scenes))  # warm-up
            place = _median_s(lambda: run(0, 1), repeats) / len(scenes)
            full = _median_s(lambda: run(190, 1), repeats) / len(scenes)
            row[f"{threads}_threads"] = {"place_32_s_per_scene": round(place, 3),
                                         "place_32_plus_190_frames_s_per_scene": round(full, 3)}
            if threads == 2:
                batched = _median_s(lambda: run(190, len(scenes)), repeats) / len(scenes)
                row["2_threads"]["place_32_plus_190_frames_s_per_scene_batched_7"] = round(batched, 3)
                row["speedup_vs_original_one_at_a_time"] = round(
                    (ANCHOR_PLACE_32_S + ANCHOR_TRAJ_190_S) / full, 1)
                row["speedup_vs_original_batched"] = round((ANCHOR_PLACE_32_S + ANCHOR_TRAJ_190_S) / batched, 1)
                row["placement_speedup_vs_original"] = round(ANCHOR_PLACE_32_S / place, 1)
        out[preset] = row
    torch.set_num_threads(2)
    return out
