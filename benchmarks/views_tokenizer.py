"""Tokenizer round trips on held-out frames: how much of a view survives encoding to tokens and back.

Arms (``configs/views/hires.yaml``'s tokenizer stage, on ``make checkpoints``' camera frames, 1 thread each):

* ``hires``: 128x224 views, 16x28 tokens per view, reconstruction losses only (L1 + MSE + image gradients);
* ``hires_adversarial``: the same with the patch-adversarial term (PatchGAN hinge loss, VQGAN's adaptive
  weight x 0.1 from step 300; ``bevgen.views.adversarial``).

The shipped tiny model's tokenizer (64x112 views, 8x14 tokens) is scored beside them. Every tokenizer
reconstructs the ground-truth views of the held-out sets of ``benchmarks/views_eval.py`` (procedural maps with
seeds 10000+, the 3 held-out real maps) and is scored with ``evaluate_views``: PSNR, FID / KID of the
reconstructions (the in-project extractor), and BEV IoU and seams of the reconstructions (the ceiling a
generator using that tokenizer can reach). A 128x224 tokenizer is scored twice: at its own size and with its
reconstructions shrunk to 64x112 (the size the tiny tokenizer works at: the same pixels compared).

An arm is trained when its run is missing (``benchmarks/work/views_tokenizer/<arm>``; resumable, about an hour
each on the 2-core VM). Run: ``python benchmarks/run.py views_tokenizer``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "views_tokenizer"
ARMS = {"hires": {"adversarial_weight": 0.0}, "hires_adversarial": {}}
"""Arm -> overrides of configs/views/hires.yaml's train section ({}: the config as committed)."""


def _config(arm: str):
    from bevgen.views.config import ViewsConfig
    from runkit.config import load_config

    cfg = load_config(ViewsConfig, ROOT / "configs" / "views" / "hires.yaml")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **ARMS[arm]))


def train_arm(arm: str, data: Path) -> Path:
    """The tokenizer of one arm (trained when missing, resumed when interrupted)."""
    from bevgen.views.train import train_views

    run = WORK / arm
    ckpt = run / "checkpoints" / "tokenizer.pt"
    cfg = _config(arm)
    done = ckpt.exists() and _load_ckpt(ckpt)["step"] >= cfg.train.tokenizer_steps
    if not done:
        train_views(cfg, data, run, stage="tokenizer", resume=ckpt.exists(), progress=False)
    return run


def _load_ckpt(path: Path) -> dict:
    from runkit.checkpoint import load_checkpoint

    return load_checkpoint(path)


def load_tokenizer(ckpt: Path):
    """(VQAutoencoder in eval mode, its ViewsConfig) from a tokenizer.pt."""
    from bevgen.views.config import ViewsConfig
    from bevgen.views.tokenizer import VQAutoencoder
    from runkit.config import from_dict

    state = _load_ckpt(ckpt)
    cfg = from_dict(ViewsConfig, state["config"])
    tok = VQAutoencoder(cfg.tokenizer)
    tok.load_state_dict(state["model"], strict=True)
    return tok.eval(), cfg


def round_trip(tok, image_size: tuple[int, int], out_size: tuple[int, int] | None = None):
    """generate(batch) for ``evaluate_views``: the batch's ground-truth views resized to ``image_size``, encoded and
    decoded (uint8 [b, v, 3, H, W]), then resized to ``out_size`` when given."""
    import torch
    from einops import rearrange

    from bevgen.views.bevseg import resize_views
    from bevgen.views.sample import images_to_unit, unit_to_uint8

    def generate(batch: dict):
        imgs, _ = resize_views(batch["images"], batch["K"].float(), image_size)
        b = imgs.shape[0]
        with torch.no_grad():
            x = images_to_unit(rearrange(imgs, "b v c h w -> (b v) c h w"))
            rec = unit_to_uint8(tok.decode(tok.encode(x)))
        rec = rearrange(rec, "(b v) c h w -> b v c h w", b=b)
        if out_size is not None and tuple(out_size) != tuple(image_size):
            rec, _ = resize_views(rec, batch["K"].float(), out_size)
        return rec

    return generate


def bench_views_tokenizer(sets: dict[str, Path], bevseg: Path, train_data: Path, threads: int = 2) -> dict:
    """Train (or reuse) the arms, then score every tokenizer's round trip on every held-out set."""
    import torch

    from bevgen.pretrained import shipped
    from bevgen.views.metrics import evaluate_views

    torch.set_num_threads(threads)
    models = {}
    ship = shipped("views_tiny")
    if ship is not None:
        models["tiny_64x112 (shipped)"] = ship / "checkpoints" / "tokenizer.pt"
    for arm in ARMS:
        models[arm] = train_arm(arm, train_data) / "checkpoints" / "tokenizer.pt"
    out: dict = {"sets": {k: str(v) for k, v in sets.items()}, "bevseg": str(bevseg), "models": {}}
    for name, ckpt in models.items():
        tok, cfg = load_tokenizer(ckpt)
        size = tuple(cfg.data.image_size)
        sizes = [size] + ([(64, 112)] if size != (64, 112) else [])
        row: dict = {"checkpoint": str(ckpt.relative_to(ROOT)), "image_size": list(size),
                     "token_grid": list(cfg.token_grid), "codebook_size": cfg.tokenizer.codebook_size,
                     "adversarial_weight": cfg.train.adversarial_weight,
                     "parameters_M": round(sum(p.numel() for p in tok.parameters()) / 1e6, 2)}
        summary = ckpt.parent.parent / "train_summary.json"
        if summary.exists():
            row["train"] = json.loads(summary.read_text()).get("tokenizer")
        for at in sizes:
            tag = f"{at[0]}x{at[1]}"
            for set_name, data in sets.items():
                names = json.loads((data / "index.json").read_text())["frames"]
                t0 = time.perf_counter()
                m = evaluate_views(round_trip(tok, size, at), data, names, WORK / "eval" / name / tag / set_name,
                                   bevseg_ckpt=bevseg, progress=False)
                row.setdefault(tag, {})[set_name] = {k: v for k, v in m.items() if k != "definitions"} | {
                    "eval_s": round(time.perf_counter() - t0, 1)}
        out["models"][name] = row
    out["table"] = table(out)
    out["figure"] = str(figure(models, sets["procedural"]).relative_to(ROOT))
    return out


def figure(models: dict[str, Path], data: Path, frame: int = 0, path: Path = ROOT / "docs" / "views_tokenizer.png",
           views: tuple[int, ...] = (0, 1, 2)) -> Path:
    """One held-out frame's front views: the truth (128x224), then each tokenizer's round trip (smaller ones
    enlarged bilinearly), one row each, labelled."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset

    name = json.loads((data / "index.json").read_text())["frames"][frame]
    batch = default_collate([{k: v for k, v in FrameDataset(data, names=[name])[0].items() if k != "name"}])
    size = tuple(batch["images"].shape[-2:])
    rows = [("ground truth", batch["images"][0])]
    for label, ckpt in models.items():
        tok, cfg = load_tokenizer(ckpt)
        rows.append((label, round_trip(tok, tuple(cfg.data.image_size), size)(batch)[0]))
    strips = []
    for label, imgs in rows:
        strip = np.concatenate([torch.as_tensor(imgs[v]).permute(1, 2, 0).numpy() for v in views], axis=1)
        band = Image.new("RGB", (strip.shape[1], 14), "white")
        ImageDraw.Draw(band).text((4, 1), label, fill="black")
        strips += [np.asarray(band), strip]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strips, axis=0)).save(path)
    return path


def table(result: dict) -> list[str]:
    """Markdown rows: tokenizer x size scored x held-out set."""
    def r(x, nd=3):
        return "-" if x is None else f"{x:.{nd}f}"

    lines = ["| tokenizer | scored at | set | PSNR dB | FID | road IoU (oracle) | vehicle IoU (oracle) | "
             "seams (oracle) |", "|---|---|---|---|---|---|---|---|"]
    for name, row in result["models"].items():
        for tag in [k for k in row if "x" in k and isinstance(row[k], dict)]:
            for set_name, m in row[tag].items():
                lines.append(f"| {name} | {tag} | {set_name} | {r(m['psnr'], 2)} | {r(m['fid'], 1)} | "
                             f"{r(m['road_iou'])} ({r(m['road_iou_oracle'])}) | {r(m['vehicle_iou'])} "
                             f"({r(m['vehicle_iou_oracle'])}) | {r(m['seam_consistency'])} "
                             f"({r(m['seam_consistency_oracle'])}) |")
    return lines
