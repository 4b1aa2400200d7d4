"""Views model sampling speed: parallel (MaskGIT) decoding vs token-by-token decoding of the same model.

Both decoders sample all six views of one frame at the tiny config (64x112, 8x14 tokens per view,
672 tokens per frame) with the model's sampler defaults (guidance, temperature; with guidance > 0 the
conditional and unconditional halves are batched in one forward). Parallel decoding does ``steps``
forward passes (timed ``repeats`` times, the median reported); token-by-token decoding does one per token.
Run: ``python benchmarks/views_model.py [RUN_DIR]``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]


def _batch(cfg, run_dir: Path | None) -> tuple[dict, str]:
    """One frame's condition: a held-out frame of the run's dataset, else a real scenario's BEV with the
    default nuScenes rig, else an empty layout (decoding cost does not depend on the content)."""
    import numpy as np
    import torch
    from torch.utils.data import default_collate

    if run_dir is not None and (run_dir / "split.json").exists():
        split = json.loads((run_dir / "split.json").read_text())
        names = split["heldout"] or split["train"]
        if Path(split["data_dir"]).exists() and names:
            from bevgen.render.dataset import FrameDataset

            item = FrameDataset(split["data_dir"], names=names[:1])[0]
            return default_collate([{k: v for k, v in item.items() if k not in ("semantic", "name")}]), names[0]
    from bevgen.cameras import nuscenes_rig
    from bevgen.layout import BevConfig, BevRasterizer

    rig = nuscenes_rig(cfg.data.image_size)
    bev = BevConfig()
    raster = np.zeros((len(bev.channels), bev.size, bev.size), np.uint8)
    boxes, classes, valid = np.zeros((64, 7), np.float32), np.zeros(64, np.int64), np.zeros(64, bool)
    source = "empty layout"
    if REAL_DIR.exists():
        from sim_bridge.dataset import ScenarioDataset

        ds = ScenarioDataset(REAL_DIR, repair=True)
        layout = BevRasterizer(ds.load(ds.names[0]), bev)(10)
        arrays = layout.box_arrays()
        raster, boxes, classes, valid = layout.raster, arrays["boxes"], arrays["classes"], arrays["box_valid"]
        source = f"{ds.names[0]} frame 10"
    item = {"bev": torch.from_numpy(raster), "boxes": torch.from_numpy(boxes).float(),
            "classes": torch.from_numpy(classes), "box_valid": torch.from_numpy(valid),
            "K": torch.tensor(rig.K, dtype=torch.float32),
            "T_cam_from_ego": torch.tensor(rig.T_cam_from_ego, dtype=torch.float32)}
    return default_collate([item]), source


def _autoregressive_estimate(pipe, batch: dict, forwards: int) -> float:
    """Seconds of token-by-token decoding from ``forwards`` of its n forwards: context + n x mean forward +
    image decode (each forward costs the same: all n tokens go through the network every time)."""
    import torch

    with torch.no_grad(), pipe._eval_mode():
        t0 = time.perf_counter()
        cond, _, _, guidance = pipe._prepare(batch, None, None, None, None)
        ctx = pipe._context(cond, guidance)
        t_ctx = time.perf_counter() - t0
        n, mask_id = pipe.generator.num_tokens, pipe.generator.mask_id
        tokens = torch.full((1, n), mask_id, dtype=torch.long, device=pipe.device)
        t0 = time.perf_counter()
        for i in range(forwards):
            tokens[:, i] = pipe._logits(tokens, ctx, guidance)[:, i].argmax(-1)
        per_forward = (time.perf_counter() - t0) / forwards
        t0 = time.perf_counter()
        pipe.tokens_to_images(tokens.clamp(max=mask_id - 1), cond)
        t_dec = time.perf_counter() - t0
    return t_ctx + n * per_forward + t_dec


def bench_views_sampling(run_dir: str | Path | None = None, out_json: str | Path | None = None,
                         threads: int = 1, steps: int | None = None, config: str = "tiny",
                         max_ar_forwards: int = 1000, repeats: int = 3, overrides: tuple[str, ...] = ()) -> dict:
    """Seconds to sample six views with parallel vs token-by-token decoding of the same model.

    Args:
        run_dir: a trained views run (``load_views``); None: ``configs/views/<config>.yaml`` with untrained
            weights (same architecture and cost).
        out_json: where to write the result (optional).
        threads: torch CPU threads.
        steps: parallel decoding steps (default the config's ``train.sample_steps``).
        config: the config of an untrained model (run_dir None).
        max_ar_forwards: above this many tokens per frame, token-by-token decoding is not run to the end: its time
            is the measured time of this many of its forwards (each one a full forward over all tokens, as in
            ``decode_autoregressive``) scaled to one forward per token, plus the context and the image decode
            (``autoregressive_estimated``: true).
        repeats: parallel decoding is timed this many times (after a warm-up); ``parallel_s`` is the median.
        overrides: ``dotted.key=value`` changes to the untrained model's config (e.g.
            ``tokenizer.layout_channels=20``: the decoder that reads the layout per pixel).
    Returns:
        dict with parallel_s, autoregressive_s, speedup, tokens_per_view, tokens_per_frame, steps,
        forwards, image_size, model, machine.
    """
    import torch

    from bevgen.views.config import ViewsConfig
    from bevgen.views.sample import ViewsPipeline, build_models, load_views
    from runkit.config import load_config

    torch.set_num_threads(threads)
    if run_dir is not None:
        pipe, model = load_views(run_dir), str(run_dir)
    else:
        cfg = load_config(ViewsConfig, ROOT / "configs" / "views" / f"{config}.yaml", overrides)
        torch.manual_seed(0)
        pipe, model = ViewsPipeline(*build_models(cfg), cfg), f"configs/views/{config}.yaml (untrained weights)"
        if overrides:
            model += f" with {' '.join(overrides)}"
    cfg = pipe.config
    steps = int(steps or cfg.train.sample_steps)
    batch, source = _batch(cfg, Path(run_dir) if run_dir else None)
    pipe(batch, mode="parallel", steps=2, seed=0)  # warm-up (allocator, kernels)
    runs = []
    for _ in range(repeats):  # the median: single runs on a shared 2-core VM spread by 10-30%
        t0 = time.perf_counter()
        par = pipe(batch, mode="parallel", steps=steps, seed=0).images
        runs.append(time.perf_counter() - t0)
    t_par = statistics.median(runs)
    estimated = cfg.tokens_per_frame > max_ar_forwards
    t0 = time.perf_counter()
    if estimated:
        t_ar = _autoregressive_estimate(pipe, batch, max_ar_forwards)
        ar = par
    else:
        ar = pipe(batch, mode="autoregressive", seed=0).images
        t_ar = time.perf_counter() - t0
    h, w = cfg.token_grid
    result = {"parallel_s": round(t_par, 3), "parallel_runs_s": [round(t, 3) for t in runs],
              "autoregressive_s": round(t_ar, 3), "speedup": round(t_ar / t_par, 1),
              "steps": steps, "forwards": {"parallel": steps, "autoregressive": cfg.tokens_per_frame},
              "tokens_per_view": h * w, "token_grid": [h, w], "tokens_per_frame": cfg.tokens_per_frame,
              "views": cfg.data.num_views, "image_size": list(cfg.data.image_size), "guidance": cfg.train.guidance,
              "output_shape": list(par.shape), "same_shape": list(par.shape) == list(ar.shape),
              "threads": threads, "model": model, "condition": source,
              "view_neighbours": cfg.generator.view_neighbours, "neighbour_span": cfg.generator.neighbour_span,
              "parameters_M": round(sum(p.numel() for p in pipe.generator.parameters()) / 1e6, 2),
              "layout_decoder": cfg.tokenizer.layout_channels > 0,
              "autoregressive_estimated": estimated, "autoregressive_forwards_timed": max_ar_forwards if estimated
              else cfg.tokens_per_frame}
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps(bench_views_sampling(sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
