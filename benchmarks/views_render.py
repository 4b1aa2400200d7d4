"""Synthetic renderer throughput: six-camera frames per second (pybullet TinyRenderer, CPU).

    python benchmarks/views_render.py [--out benchmarks/results/views_render.json]

Measures, on procedural MetaDrive scenarios (falls back to the shared real scenarios when MetaDrive is
missing): steady-state frames/s and ms per camera at 128x224 (one process, and two worker processes
rendering at the same time) and at 224x400, the one-off static scene build per scenario, and the
end-to-end dataset writer (scene build + render + compressed npz). Wall time and process CPU time are
both reported, with the load average: on a shared machine the CPU time is the figure that compares.
Reference (../shared/ANCHORS.md): pybullet TinyRenderer, ground + ~30 boxes: ~6 ms per 128x224 camera,
~20 ms per 224x400 camera.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

from sim_bridge.sources.real import REAL_DIR

ANCHOR_MS_PER_CAMERA = {"128x224": 6.0, "224x400": 20.0}


def _scenarios(tmp: Path) -> tuple[Path, str]:
    """A scenario directory to render: 2 procedural maps (MetaDrive), else the shared real scenes."""
    try:
        from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

        report = generate_procedural(ProceduralConfig(num_scenarios=2, steps=80, workers=1, traffic_density=0.3),
                                     tmp / "proc", resume=False)
        if report.ok:
            return tmp / "proc", "procedural (MetaDrive PG, 3 blocks, traffic density 0.3)"
    except ImportError:
        pass
    return REAL_DIR, "real (shared real-scenarios)"


def _time_frames(root: str, name: str, hw: tuple[int, int], frames: int, barrier=None) -> dict:
    """Render ``frames`` consecutive frames after a warm-up frame (which builds the static scene)."""
    from bevgen.cameras import nuscenes_rig
    from bevgen.render.scene import SceneRenderer, SynthConfig
    from sim_bridge.dataset import ScenarioDataset

    sc = ScenarioDataset(root).load(name)
    ts = [t for t in range(10, sc.length) if sc.tracks.valid[sc.ego_index, t]]
    with SceneRenderer(nuscenes_rig(hw), SynthConfig(image_size=hw)) as r:
        t0 = time.perf_counter()
        r.render(sc, ts[0])
        build_s = time.perf_counter() - t0
        if barrier is not None:
            barrier.wait()
        w0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for t in (ts[1:] * (1 + frames // max(len(ts) - 1, 1)))[:frames]:
            r.render(sc, t)
            n += 1
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"frames": n, "wall_s": wall, "cpu_s": cpu, "build_s": build_s,
            "triangles": r.static.num_triangles, "views": 6}


def _worker(args) -> dict:
    root, name, hw, frames, barrier, queue = args
    queue.put(_time_frames(root, name, hw, frames, barrier))


def _rates(res: dict, views: int = 6) -> dict:
    return {"frames_per_s_wall": round(res["frames"] / res["wall_s"], 2),
            "frames_per_s_cpu": round(res["frames"] / res["cpu_s"], 2),
            "ms_per_camera_wall": round(1000 * res["wall_s"] / (res["frames"] * views), 2),
            "ms_per_camera_cpu": round(1000 * res["cpu_s"] / (res["frames"] * views), 2)}


def bench_render(out_json: Path | None = None, frames: int = 40) -> dict:
    """Renderer and dataset-writer throughput; returns (and optionally writes) a JSON-able dict."""
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.dataset import ScenarioDataset

    out: dict = {"load_average_before": os.getloadavg(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root, kind = _scenarios(Path(tmp))
        names = ScenarioDataset(root).names[:2]
        out["scenarios"] = kind
        for hw, n in (((128, 224), frames), ((224, 400), max(frames // 2, 5))):
            key = f"{hw[0]}x{hw[1]}"
            res = _time_frames(str(root), names[0], hw, n)
            rates = _rates(res)
            out[key] = {**rates, "frames": res["frames"], "scene_build_s": round(res["build_s"], 3),
                        "static_triangles": res["triangles"], "anchor_ms_per_camera": ANCHOR_MS_PER_CAMERA[key],
                        "cpu_ms_per_camera_over_anchor":
                            round(rates["ms_per_camera_cpu"] / ANCHOR_MS_PER_CAMERA[key], 3)}
        # two workers rendering at the same time (one scenario each), steady state after the build
        ctx = mp.get_context("fork")
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=((str(root), names[i % len(names)], (128, 224), frames, barrier,
                                                    queue),)) for i in range(2)]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        total = sum(r["frames"] for r in results)
        out["128x224_2_workers"] = {
            "frames": total, "frames_per_s_wall": round(total / max(r["wall_s"] for r in results), 2),
            "frames_per_s_cpu_sum": round(sum(r["frames"] / r["cpu_s"] for r in results), 2)}
        # end to end: write_synthetic_dataset, 2 workers, scene builds and npz compression included
        t0 = time.perf_counter()
        s = write_synthetic_dataset(root, Path(tmp) / "synth", SynthConfig(), frames_per_scenario=15, frame_stride=4,
                                    workers=2, progress=False, scenarios=names)
        out["dataset_writer_128x224_2_workers"] = {"frames": s["num_frames"],
                                                   "seconds": round(time.perf_counter() - t0, 2),
                                                   "frames_per_s": s["frames_per_second"], "failed": len(s["failed"])}
    out["load_average_after"] = os.getloadavg()
    out["target_frames_per_s_128x224"] = 20.0
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=40)
    a = ap.parse_args()
    print(json.dumps(bench_render(a.out, a.frames), indent=2))
