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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REAL_DIR = ROOT.parent / "shared" / "data" / "real-scenarios"
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
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
            "date": time.strftime("%Y-%m-%d")}


def bench_raster() -> dict:
    """Rasterization of every frame of the real scenes at the default 200x200 x 8 channels, one thread."""
    import cv2
    import numpy as np

    from bevgen.layout import BevRasterizer
    from sim_bridge.scenario import ScenarioDataset

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
        "what": "one ego-centric BEV frame, 200x200 px, 8 channels, incl. boxes; 1 thread; all frames of the 7 real scenes",
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

    from sim_bridge.scenario import ScenarioDataset, load_scenario

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


BENCHES = {"raster": bench_raster, "procedural": bench_procedural, "load": bench_load}


def _row_lines(results: dict) -> list[str]:
    lines = []
    r = results.get("raster", {})
    if "nuscenes_ms_median" in r:
        lines.append(f"| BEV raster, 200x200x8, real nuScenes frame (1 thread) | {r['nuscenes_ms_median']} ms median, "
                     f"{r['nuscenes_ms_p95']} ms p95 ({r['frames_per_s_nuscenes']} frames/s) | target < 10 ms |")
        lines.append(f"| BEV raster, real Waymo frame (1 thread) | {r['waymo_ms_median']} ms median, "
                     f"{r['waymo_ms_p95']} ms p95 | |")
    p = results.get("procedural", {})
    if "wall_s_2_workers" in p:
        lines.append(f"| Procedural scenarios, 4 maps x 200 steps + IDM traffic | {p['wall_s_1_workers']} s (1 worker), "
                     f"{p['wall_s_2_workers']} s (2 workers) | MetaDrive export ~{p['reference_metadrive_export_s']:g} s: "
                     f"**{p['speedup_vs_reference_2_workers']}x** |")
    lo = results.get("load", {})
    if "safe_load_validate_ms" in lo:
        lines.append(f"| Safe load + validate one real scenario | {lo['safe_load_validate_ms']} ms "
                     f"(plain pickle {lo['plain_pickle_ms']} ms) | |")
    return lines


def refresh_readme(results: dict, mach: dict) -> None:
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    text = README.read_text()
    if start not in text or end not in text:
        return
    table = "\n".join([
        f"Measured {mach['date']} on {mach['cpu']} ({mach['cores']} cores, no GPU), Python {mach['python']}; "
        "`make bench` refreshes this table from `benchmarks/results/*.json`.", "",
        "| work | bevgen | reference / target |", "|---|---|---|", *_row_lines(results)])
    head, rest = text.split(start, 1)
    README.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    mach = machine()
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        result = {"benchmark": name, "machine": mach, **BENCHES[name]()}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    all_results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    refresh_readme(all_results, mach)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
