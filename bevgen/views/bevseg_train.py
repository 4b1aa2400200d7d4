"""Training, loading and evaluation of the camera -> BEV segmentation network (:mod:`bevgen.views.bevseg`).

``train_bevseg`` trains on ground-truth frames (seeded, atomic checkpoints, resume); ``load_bevseg`` reads a
checkpoint with ``weights_only=True`` and strict keys; ``evaluate_bevseg`` scores road / vehicle IoU.
``python -m bevgen.views.bevseg_train --help`` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from bevgen.render.dataset import split_frames
from bevgen.views.bevseg import BevSegConfig, BevSegNet, iou, load_split, mean_map
from runkit.checkpoint import load_checkpoint, save_checkpoint
from runkit.config import from_dict, load_config, save_config, to_dict
from runkit.seeding import seed_everything

# tensorboard (optional `rl` extra) is imported lazily, where logs are written.

__all__ = ["train_bevseg", "load_bevseg", "evaluate_bevseg", "mirror", "main"]

# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def mirror(images: Tensor, K: Tensor, T: Tensor, target: Tensor, which: Tensor
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left-right mirror augmentation of whole samples (world y -> -y), exact for any rig.

    Mirroring the world (``T' = T diag(1, -1, 1, 1)``) and every image (``u' = W - u``, i.e.
    ``K' = [[-1, 0, W], [0, 1, 0], [0, 0, 1]] K``) keeps each mirrored point on its mirrored pixel,
    and the BEV target flips its columns (column 0 = far left). Doubles the layouts the BEV decoder
    sees while keeping the forward-facing prior.

    Args:
        images [b, v, 3, H, W], K [b, v, 3, 3], T [b, v, 4, 4], target [b, 2, h, w]; which: bool [b].
    Returns:
        the four tensors with the selected samples mirrored.
    """
    W = images.shape[-1]
    flip_k = torch.tensor([[-1.0, 0.0, W], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
    mirror_y = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=T.dtype, device=T.device))
    sel = which.view(-1, 1, 1, 1)
    images = torch.where(sel[..., None], images.flip(-1), images)
    K = torch.where(sel, flip_k @ K, K)
    T = torch.where(sel, T @ mirror_y, T)
    target = torch.where(sel, target.flip(-1), target)
    return images, K, T, target


def _resolve_config(cfg: BevSegConfig, data_root: str | Path) -> BevSegConfig:
    index = json.loads((Path(data_root) / "index.json").read_text())
    bev = index.get("bev", {})
    rng, res = float(bev.get("range_m", 50.0)), float(bev.get("resolution_m", 0.5))
    size = cfg.image_size
    if tuple(size) == (0, 0):
        size = tuple(int(s) for s in index["rig"]["image_size"])
    return replace(cfg, image_size=tuple(size), bev_range_m=rng, source_size=int(round(2 * rng / res)))


def train_bevseg(data_root: str | Path, names: Sequence[str] | None, out_dir: str | Path,
                 steps: int | None = None, config: BevSegConfig | None = None, resume: bool = False,
                 progress: bool = True) -> Path:
    """Train the BEV segmentation network on ground-truth images.

    Args:
        data_root: synthetic / nuScenes image dataset (``bevgen.render.dataset`` format).
        names: training frame names (use ``split_frames`` so held-out scenarios stay unseen); None: all.
        out_dir: run directory: config.yaml, checkpoints/latest.pt, tb/, train_summary.json.
        steps: total optimizer steps (overrides config.steps).
        config: model / training config; image_size (0, 0) means the dataset's image size.
        resume: continue from out_dir/checkpoints/latest.pt up to ``steps`` when it exists (a finished
            run is returned as is; no checkpoint: train from scratch), so callers can use it as a cache.
        progress: tqdm progress bar.
    Returns:
        Path of the checkpoint ``{model, optimizer, config, step, best_metric}``.
    """
    cfg = _resolve_config(config or BevSegConfig(), data_root)
    if steps is not None:
        cfg = replace(cfg, steps=int(steps))
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoints" / "latest.pt"
    resume = resume and ckpt_path.exists()  # resume=True on an empty out_dir starts a fresh run
    if not resume and ckpt_path.exists():
        raise FileExistsError(f"{out_dir} already holds a bevseg run; pass resume=True or another out_dir")
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")

    data = load_split(data_root, names, cfg)
    n = len(data["names"])
    model = BevSegNet(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, math.inf
    if resume:
        ckpt = load_checkpoint(ckpt_path, device)
        model.load_state_dict(ckpt["model"], strict=True)
        opt.load_state_dict(ckpt["optimizer"])
        start, best = int(ckpt["step"]), float(ckpt["best_metric"])
    def lr_factor(s: int) -> float:  # s counts from ``start``: warm-up 20 steps, cosine to 0 at cfg.steps
        s += start
        return min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
    bar = None
    if progress:

        bar = tqdm(total=cfg.steps, initial=start, desc="bevseg train", unit="step")
    pos_weight = torch.tensor(cfg.pos_weight, device=device)[:, None, None]
    history, t0 = [], time.perf_counter()
    model.train()
    for step in range(start, cfg.steps):
        idx = torch.randint(n, (min(cfg.batch_size, n),), generator=gen)
        x = data["images"][idx].to(device).float() / 255.0
        # photometric jitter (per sample brightness/contrast) so the model does not key on exact colours
        gain = 1 + 0.2 * (torch.rand(len(idx), 1, 1, 1, 1, generator=gen) - 0.5)
        bias = 0.1 * (torch.rand(len(idx), 1, 1, 1, 1, generator=gen) - 0.5)
        x = (x * gain.to(device) + bias.to(device)).clamp(0, 1)
        K, T, target = data["K"][idx].to(device), data["T"][idx].to(device), data["target"][idx].to(device)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        if flip.any():
            x, K, T, target = mirror(x, K, T, target, flip.to(device))
        logits = model(x, K, T)
        loss = F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if writer:
            writer.add_scalar("losses/bce", history[-1], step + 1)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            best = min(best, float(np.mean(history[-20:])))
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(), config=to_dict(cfg),
                            step=step + 1, best_metric=best)
    if bar:
        bar.close()
    if writer:
        writer.close()
    summary = {"start_step": start, "final_step": cfg.steps, "frames": n, "problems": data["problems"],
               "seconds": round(time.perf_counter() - t0, 2),
               "first_loss": history[0] if history else None, "final_loss": float(np.mean(history[-20:]))
               if history else None}
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return ckpt_path


def load_bevseg(path: str | Path, device: str = "cpu") -> BevSegNet:
    """Load a trained network strictly (``weights_only=True``); ``path`` is a run dir or checkpoint."""
    ckpt = load_checkpoint(path, device, hint="train one with train_bevseg")
    model = BevSegNet(from_dict(BevSegConfig, ckpt["config"])).to(device)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def evaluate_bevseg(ckpt: str | Path, data_root: str | Path, names: Sequence[str] | None,
                    baseline_names: Sequence[str] | None = None, batch_size: int = 8) -> dict:
    """Held-out IoU of a trained network on ground-truth images, with the mean-map baseline.

    Args:
        ckpt: checkpoint or run dir. data_root / names: evaluation frames (held-out split).
        baseline_names: frames whose mean map is the trivial baseline (the training split); None: no baseline.
    Returns:
        {"road_iou", "vehicle_iou", "baseline_road_iou", "baseline_vehicle_iou", "frames"} (baseline
        thresholded at 0.5; None entries where undefined).
    """
    model = load_bevseg(ckpt)
    data = load_split(data_root, names, model.config)
    probs = torch.cat([model.predict(data["images"][i:i + batch_size], data["K"][i:i + batch_size],
                                     data["T"][i:i + batch_size]) for i in range(0, len(data["names"]), batch_size)])
    out = dict(zip(("road_iou", "vehicle_iou"), iou(probs > 0.5, data["target"]).tolist()))
    if baseline_names is not None:
        base = mean_map(load_split(data_root, baseline_names, model.config)["target"])
        out.update(zip(("baseline_road_iou", "baseline_vehicle_iou"),
                       iou((base > 0.5)[None].expand_as(probs), data["target"]).tolist()))
    out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
    return {**out, "frames": len(data["names"])}


def main(argv: list[str] | None = None) -> None:
    """``python -m bevgen.views.bevseg_train --data ROOT --out RUN [--steps N] [--heldout 0.2] [--set k=v ...]``:
    train on the scenario-level train split, then write RUN/eval.json with held-out IoU and baseline."""

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int)
    p.add_argument("--heldout", type=float, default=0.2)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    cfg = load_config(BevSegConfig, a.config, a.set)
    names = json.loads((Path(a.data) / "index.json").read_text())["frames"]
    train, held = split_frames(names, a.heldout, seed=cfg.seed)
    ckpt = train_bevseg(a.data, train, a.out, steps=a.steps, config=cfg, resume=a.resume)
    result = evaluate_bevseg(ckpt, a.data, held, baseline_names=train) if held else {}
    (Path(a.out) / "eval.json").write_text(json.dumps({**result, "train_frames": len(train)}, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
