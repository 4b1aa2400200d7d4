"""Scene3D figures: render throughput (images/s at 64x64 on this CPU; 256x256 where a GPU is present),
tiny-config training speed and time, and the box-alpha IoU of a trained tiny model vs an untrained one.

    python benchmarks/scene3d.py --data FRAMES_DIR [--run TRAINED_TINY_RUN] [--out results.json]

``bench_scene3d(data_dir, run_dir=None)`` is the function ``benchmarks/run.py`` calls. Without a
trained run it measures steps/s on a short training run and extrapolates the tiny config's time.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "scene3d" / "tiny.yaml"
PAPER = ROOT / "configs" / "scene3d" / "paper.yaml"


def _images_per_second(cfg, data, device: str, batch: int, repeats: int) -> float:
    """Deterministic renders (no grad) of dataset layouts with a freshly initialised generator."""
    import torch

    from bevgen.scene3d.model import Scene3DGenerator, sample_latents

    gen = Scene3DGenerator(cfg.model).to(device).eval()
    idx = np.arange(batch) % len(data)
    lay = data.layout_batch(idx, device)
    z = [t.to(device) for t in sample_latents(batch, lay.num_boxes, cfg.model.z_dim, torch.Generator())]
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16,
                                         enabled=device == "cuda" and cfg.precision == "bf16"):
        gen(lay, *z)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            gen(lay, *z)
        if device == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def _iou_of(generator, data, n: int = 64) -> float:
    from bevgen.scene3d.metrics import render_layouts

    with_boxes = np.flatnonzero(data.valid.any(1))
    idx = with_boxes[np.linspace(0, len(with_boxes) - 1, min(n, len(with_boxes))).astype(int)]
    _, ious, _ = render_layouts(generator, data, idx, 8, seed=0)
    return float(np.nanmean(ious))


def bench_scene3d(data_dir: str | Path, run_dir: str | Path | None = None, probe_steps: int = 8,
                  threads: int | None = None) -> dict:
    """Figures as a dict (see module docstring). ``threads`` pins torch's CPU threads (default: all cores)."""
    import torch

    from bevgen.scene3d.data import load_scene3d_data
    from bevgen.scene3d.train import Scene3DTrainConfig, build_modules, load_scene3d, train_scene3d
    from runkit.config import load_config

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(Scene3DTrainConfig, TINY)
    dc = cfg.data
    data = load_scene3d_data(data_dir, dc.cameras, cfg.model.image_size, dc.max_objects, dc.class_filter,
                             dc.max_depth_m)
    res: dict = {"cpu_threads": torch.get_num_threads(), "frames": len(data),
                 "images_per_second_64_cpu": round(_images_per_second(cfg, data, "cpu", 8, 3), 2)}
    with tempfile.TemporaryDirectory() as tmp:
        probe = load_config(Scene3DTrainConfig, TINY, [f"steps={probe_steps}", f"sample_every={probe_steps}",
                                                      f"checkpoint_every={probe_steps}", "device=cpu"])
        s = train_scene3d(probe, data_dir, Path(tmp) / "run", progress=False)
    res["train_steps_per_second_cpu"] = s["steps_per_second"]
    res["tiny_steps"] = cfg.steps
    res["tiny_train_minutes_extrapolated"] = round(cfg.steps / s["steps_per_second"] / 60, 1)
    torch.manual_seed(cfg.seed)
    untrained = build_modules(cfg)[0].eval()
    res["box_alpha_iou_untrained"] = round(_iou_of(untrained, data), 4)
    if run_dir is not None and (Path(run_dir) / "checkpoints" / "latest.pt").exists():
        summary_path = Path(run_dir) / "train_summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            res["tiny_train_minutes_measured"] = round(summary["seconds"] / 60, 1)
            res["tiny_trained_steps"] = summary["final_step"]
        res["box_alpha_iou_trained"] = round(_iou_of(load_scene3d(run_dir), data), 4)
    if torch.cuda.is_available():
        paper = load_config(Scene3DTrainConfig, PAPER)
        pdata = load_scene3d_data(data_dir, paper.data.cameras, paper.model.image_size, paper.data.max_objects,
                                  paper.data.class_filter, paper.data.max_depth_m)
        res["gpu"] = torch.cuda.get_device_name(0)
        res["images_per_second_256_gpu"] = round(_images_per_second(paper, pdata, "cuda", 8, 10), 2)
        res["images_per_second_64_gpu"] = round(_images_per_second(cfg, data, "cuda", 32, 10), 2)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="Frame dataset (bevgen.render format).")
    p.add_argument("--run", help="A trained tiny run directory (for measured time and trained IoU).")
    p.add_argument("--out", help="Write the figures here as JSON.")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    res = {**bench_scene3d(a.data, a.run, threads=a.threads), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d")}
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
