"""Train the compositional scene generator (non-saturating GAN, scene + object discriminators, lazy R1
on both, EMA generator); CPU, GPU, or several GPUs under torchrun.

Top to bottom: config -> seed -> device / distributed -> data (one camera of a frame dataset, in
memory) -> generator, EMA copy, discriminators, optimizers -> loop -> atomic checkpoints
``{model, optimizer, config, step, best_metric}`` loaded back with ``weights_only=True``.

Each step: the generator renders layouts + cameras drawn from the dataset independently of the real
images of that step; G step (D frozen) on the scene logit and on object crops at the projected boxes;
D step on the same (detached) fakes against real images and real crops; R1 every ``r1_every`` steps.
Distributed: ``torchrun --nproc_per_node G -m bevgen.scene3d.train ...``; each rank draws its own
batches, gradients are all-reduced by hand (DDP's reducer does not support R1's double backward).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from bevgen.scene3d.data import load_scene3d_data
from bevgen.scene3d.discriminators import ResNetDiscriminator, crop_objects, square_windows
from bevgen.scene3d.metrics import box_alpha_iou, sample_grid
from bevgen.scene3d.model import Scene3DGenerator, Scene3DModelConfig, sample_latents
from runkit.checkpoint import load_checkpoint, save_checkpoint
from runkit.config import from_dict, load_config, save_config, to_dict
from runkit.distributed import finish_distributed, setup_distributed
from runkit.rundir import check_resume
from runkit.seeding import seed_everything, stream_seed

# cv2 and tensorboard (optional `rl` extra) are imported lazily, where samples/logs are written.

__all__ = ["Scene3DDataConfig", "Scene3DTrainConfig", "train_scene3d", "load_scene3d"]


@dataclass(frozen=True)
class Scene3DDataConfig:
    """Which images and boxes the generator learns from."""

    cameras: tuple[str, ...] = ("CAM_FRONT",)
    """Cameras of the frame dataset used as samples (each cropped to a centred square, resized to
    model.image_size); the generator is conditioned on the camera, so more views mean more data."""
    max_objects: int = 8
    """Boxes per layout (nearest visible first), padded."""
    class_filter: tuple[int, ...] = (0,)
    """Box classes kept (bevgen.layout.CLASS_NAMES indices; 0 = vehicle)."""
    max_depth_m: float = 60.0
    """Boxes farther than this (camera depth) are dropped."""


@dataclass(frozen=True)
class Scene3DTrainConfig:
    """GAN training of the scene generator."""

    model: Scene3DModelConfig = field(default_factory=Scene3DModelConfig)
    data: Scene3DDataConfig = field(default_factory=Scene3DDataConfig)
    steps: int = 1000
    """Optimizer steps (one G and one D update each)."""
    batch_size: int = 8
    lr_g: float = 0.002
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    """R1 weight of the scene discriminator."""
    r1_gamma_object: float = 0.5
    """R1 weight of the object discriminator."""
    r1_every: int = 4
    """Lazy regularisation interval (the penalty is scaled by it)."""
    object_weight: float = 1.0
    """Weight of the object-crop adversarial loss."""
    object_frame_fraction: float = 0.5
    """Share of each batch (real images and generator layouts alike, drawn independently) taken from
    samples with at least one box, so that both discriminators see the same mixture and the object
    discriminator gets crops every step."""
    crop_size: int = 16
    """Side of the object crops fed to the object discriminator."""
    d_channels: int = 32
    """Base width of both discriminators (doubled per down block)."""
    d_max_channels: int = 128
    """Width cap of the discriminators."""
    ema_beta: float = 0.995
    """EMA decay of the generator copy used for rendering (ramped up over the first steps)."""
    checkpoint_every: int = 200
    sample_every: int = 200
    """Write a sample grid (and TensorBoard images) every N steps."""
    seed: int = 0
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocast for fields and convolutions on GPU; compositing always runs in fp32."""

    def __post_init__(self):
        if not 0.0 <= self.object_frame_fraction <= 1.0:
            raise ValueError(f"object_frame_fraction must lie in [0, 1], got {self.object_frame_fraction}")
        if min(self.steps, self.batch_size, self.checkpoint_every, self.sample_every, self.r1_every) < 1:
            raise ValueError("steps, batch_size, checkpoint_every, sample_every and r1_every must be >= 1")
        if self.crop_size < 8 or self.crop_size & (self.crop_size - 1):
            raise ValueError(f"crop_size must be a power of two >= 8, got {self.crop_size}")


def _allreduce(params, world: int) -> None:
    """Average gradients over ranks (one flat buffer)."""
    if world == 1:
        return

    for p in params:  # a rank whose batch had no object crops has no object-D grads: same buffer size
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for g in grads:
        g.copy_(flat[off:off + g.numel()].view_as(g))
        off += g.numel()


def build_modules(cfg: Scene3DTrainConfig):
    """(generator, scene discriminator, object discriminator) for a config."""

    m = cfg.model
    return (Scene3DGenerator(m), ResNetDiscriminator(m.image_size, cfg.d_channels, cfg.d_max_channels),
            ResNetDiscriminator(cfg.crop_size, cfg.d_channels, cfg.d_max_channels, num_classes=m.num_classes))


def load_scene3d(run_dir: str | Path, device: str = "cpu", ema: bool = True):
    """The (EMA) generator of a run, in eval mode, loaded strictly; its config is ``generator.cfg`` and
    the training config ``generator.train_config``."""

    ckpt = load_checkpoint(run_dir, device, hint="train one with `bevgen scene3d train`")
    cfg = from_dict(Scene3DTrainConfig, ckpt["config"])
    gen = Scene3DGenerator(cfg.model).to(device)
    gen.load_state_dict(ckpt["model"]["generator_ema" if ema else "generator"], strict=True)
    gen.train_config = cfg
    return gen.eval().requires_grad_(False)


def _r1(d, x, classes=None):
    """R1 penalty ||grad_x D(x)||^2 per sample, mean over the batch."""

    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(d(x, classes).sum(), x, create_graph=True)
    return g.square().flatten(1).sum(1).mean()


def _crops(images, lay, crop_size):
    """Square crops [Q, 3, s, s] at the layout's projected boxes and their classes [Q]."""

    crops, idx = crop_objects(images, square_windows(lay.windows), lay.boxes.valid, crop_size)
    return crops, lay.boxes.classes[idx[:, 0], idx[:, 1]]


def gan_step(step: int, cfg: Scene3DTrainConfig, G, D, Do, opt_g, opt_d, real, real_lay, fake_lay, z, gen,
             autocast, world: int = 1) -> dict:
    """One G update then one D update (with lazy R1). Returns float losses."""

    D.requires_grad_(False)
    Do.requires_grad_(False)
    with autocast:
        fake = G(fake_lay, *z, generator=gen).rgb
        f_crops, f_cls = _crops(fake, fake_lay, cfg.crop_size)
        loss_g = F.softplus(-D(fake)).mean()
        loss_go = F.softplus(-Do(f_crops, f_cls)).mean() if len(f_cls) else fake.sum() * 0
        total_g = loss_g + cfg.object_weight * loss_go
    opt_g.zero_grad(set_to_none=True)
    total_g.backward()
    _allreduce(list(G.parameters()), world)
    opt_g.step()

    D.requires_grad_(True)
    Do.requires_grad_(True)
    fake, f_crops = fake.detach(), f_crops.detach()
    r_crops, r_cls = _crops(real, real_lay, cfg.crop_size)
    with autocast:
        loss_d = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
        loss_do = (F.softplus(Do(f_crops, f_cls)).mean() if len(f_cls) else 0.0) + \
            (F.softplus(-Do(r_crops, r_cls)).mean() if len(r_cls) else 0.0)
        total_d = loss_d + cfg.object_weight * loss_do
        r1 = r1o = torch.zeros((), device=real.device)
        if step % cfg.r1_every == 0:
            r1 = _r1(D, real)
            r1o = _r1(Do, r_crops, r_cls) if len(r_cls) else r1o
            total_d = total_d + cfg.r1_every * (0.5 * cfg.r1_gamma * r1 + 0.5 * cfg.r1_gamma_object * r1o)
    opt_d.zero_grad(set_to_none=True)
    total_d.backward()
    _allreduce(list(D.parameters()) + list(Do.parameters()), world)
    opt_d.step()
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in
            (("g_scene", loss_g), ("g_object", loss_go), ("d_scene", loss_d), ("d_object", loss_do),
             ("r1_scene", r1), ("r1_object", r1o))}


def _save(run_dir: Path, mods: dict, opts: dict, cfg: Scene3DTrainConfig, step: int, best: float) -> None:
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", model={k: m.state_dict() for k, m in mods.items()},
                    optimizer={k: o.state_dict() for k, o in opts.items()}, config=to_dict(cfg), step=step,
                    best_metric=best)


def _write_samples(run_dir: Path, G_ema, data, idx, step: int, writer) -> float:
    """Render fixed layouts with the EMA generator; write a PNG grid (real | fake | opacity);
    return the box-alpha IoU of those renders."""

    dev = next(G_ema.parameters()).device
    lay = data.layout_batch(idx, dev)
    with torch.no_grad():
        out = G_ema(lay, *_fixed_latents(len(idx), len(lay.boxes), G_ema.cfg.z_dim, dev))
    iou = box_alpha_iou(out.object_alpha, lay.windows, lay.boxes.valid, G_ema.cfg.image_size)
    grid = sample_grid(data.images[idx], out, lay)
    import cv2

    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(run_dir / "samples" / f"step_{step:06d}.png"), grid[..., ::-1])
    writer.add_image("eval/samples", grid, step, dataformats="HWC")
    return iou


def _fixed_latents(B: int, N: int, z_dim: int, device):
    z_obj, z_bg = sample_latents(B, N, z_dim, torch.Generator().manual_seed(1234), "cpu")
    return z_obj.to(device), z_bg.to(device)


def _draw(rng: np.random.Generator, n: int, with_boxes: np.ndarray, size: int, fraction: float) -> np.ndarray:
    """``size`` sample indices: each from ``with_boxes`` with probability ``fraction``, else from all n."""
    idx = rng.integers(n, size=size)
    if len(with_boxes):
        pick = rng.random(size) < fraction
        idx[pick] = with_boxes[rng.integers(len(with_boxes), size=int(pick.sum()))]
    return idx


def train_scene3d(cfg: Scene3DTrainConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
                  progress: bool = True) -> dict:
    """Train; returns a summary (steps, seconds, steps_per_second, last losses, box_alpha_iou, problems).

    Writes ``config.yaml``, TensorBoard logs (``tb/``), ``samples/*.png``, ``losses.jsonl``,
    ``train_summary.json`` and ``checkpoints/latest.pt`` (generator, generator_ema, scene_d, object_d).
    """

    run_dir = Path(run_dir)
    rank, world, device = setup_distributed(cfg.device)
    ckpt_path = check_resume(run_dir, resume)
    seed_everything(cfg.seed, rank)  # same initial weights on every rank

    dc = cfg.data
    data = load_scene3d_data(data_dir, dc.cameras, cfg.model.image_size, dc.max_objects, dc.class_filter,
                             dc.max_depth_m)
    G, D, Do = (m.to(device) for m in build_modules(cfg))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(list(D.parameters()) + list(Do.parameters()), lr=cfg.lr_d, betas=cfg.betas)
    mods = {"generator": G, "generator_ema": G_ema, "scene_d": D, "object_d": Do}
    opts = {"g": opt_g, "d": opt_d}
    start, best = 0, -1.0
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, device)
        for k, m in mods.items():
            m.load_state_dict(ckpt["model"][k], strict=True)
        for k, o in opts.items():
            o.load_state_dict(ckpt["optimizer"][k])
        start, best = int(ckpt["step"]), float(ckpt["best_metric"])
    # batch draws and latents: a resumed run continues with fresh draws instead of replaying step 0's
    rng = np.random.default_rng(stream_seed(cfg.seed, rank, start))
    gen = torch.Generator(device=device).manual_seed(stream_seed(cfg.seed, rank, start))

    writer = bar = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        writer = SummaryWriter(str(run_dir / "tb"))
        writer.add_text("hyperparameters", "\n".join(f"{k}: {v}" for k, v in to_dict(cfg).items()), start)
        if progress:

            bar = tqdm(total=cfg.steps, initial=start, desc="scene3d train", unit="step")
    with_boxes = np.flatnonzero(data.valid.any(1))  # preview layouts that have objects first
    pool = with_boxes if len(with_boxes) >= 8 else np.arange(len(data))
    sample_idx = pool[np.linspace(0, len(pool) - 1, min(8, len(pool))).astype(int)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and device.type == "cuda")
    history, iou, t0, B = [], float("nan"), time.perf_counter(), cfg.batch_size
    for step in range(start, cfg.steps):
        real_idx, fake_idx = _draw(rng, len(data), with_boxes, B, cfg.object_frame_fraction), \
            _draw(rng, len(data), with_boxes, B, cfg.object_frame_fraction)
        real, real_lay = data.image_batch(real_idx, device), data.layout_batch(real_idx, device)
        fake_lay = data.layout_batch(fake_idx, device)
        z = sample_latents(B, len(data.boxes), cfg.model.z_dim, gen, device)
        row = {"step": step + 1, **gan_step(step, cfg, G, D, Do, opt_g, opt_d, real, real_lay, fake_lay, z, gen,
                                            autocast, world)}
        beta = min(cfg.ema_beta, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
        if not all(np.isfinite(v) for v in row.values()):
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {row}")
        history.append(row)
        if rank != 0:
            continue
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(f"losses/{k}", v, step + 1)
        if bar:
            bar.update(1)
            bar.set_postfix(g=f"{row['g_scene']:.2f}", d=f"{row['d_scene']:.2f}")
        done = step + 1 == cfg.steps
        if (step + 1) % cfg.sample_every == 0 or done:
            iou = _write_samples(run_dir, G_ema, data, sample_idx, step + 1, writer)
            writer.add_scalar("eval/box_alpha_iou", iou, step + 1)
            best = max(best, iou)
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            _save(run_dir, mods, opts, cfg, step + 1, best)
        writer.add_scalar("charts/steps_per_second", (step + 1 - start) / (time.perf_counter() - t0), step + 1)
    if bar:
        bar.close()
    seconds = time.perf_counter() - t0
    summary = {"start_step": start, "final_step": cfg.steps, "frames": len(data), "seconds": round(seconds, 2),
               "steps_per_second": round((cfg.steps - start) / max(seconds, 1e-9), 4),
               "box_alpha_iou": iou, "problems": list(data.problems), "last": history[-1] if history else {}}
    if rank == 0:
        writer.close()
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        with open(run_dir / "losses.jsonl", "a") as f:
            for h in history:
                f.write(json.dumps(h) + "\n")
    summary["history"] = history
    finish_distributed()
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m bevgen.scene3d.train --data DIR --out RUN [--config FILE] [--set k=v ...]`` (torchrun-friendly)."""

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    train_scene3d(load_config(Scene3DTrainConfig, a.config, a.set), a.data, a.out, resume=a.resume)


if __name__ == "__main__":
    main()
