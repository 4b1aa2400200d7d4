"""Train the placement and trajectory models on any dataset directories; CPU, GPU or torchrun/DDP.

Top to bottom: config -> seed -> device / DDP -> data (scenes encoded at several start frames, cached
in memory) -> models + optimizer -> loop (both losses each step; TensorBoard, progress bar) -> atomic
checkpoints ``{model, optimizer, config, step, best_metric}`` read back with ``weights_only=True``.

Multi-GPU: ``torchrun --nproc_per_node N -m traffic.train ...`` (or ``bevgen traffic train`` under
torchrun): each rank trains on its own shard of scenes, gradients are averaged by DDP, rank 0 writes
logs and checkpoints. Same code on CPU (gloo) and GPU (nccl).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from runkit.checkpoint import load_checkpoint, save_checkpoint
from runkit.config import from_dict, load_config, save_config, to_dict
from runkit.distributed import finish_distributed, setup_distributed
from runkit.rundir import check_resume
from runkit.seeding import seed_everything, stream_seed
from sim_bridge.dataset import ScenarioDataset
from traffic.encoding import EncodingConfig, collate, encode_scene, transform_batch

# torch, tensorboard and traffic.model.* (torch) are imported lazily: configs load without the `ml` extra.

__all__ = ["TrafficTrainConfig", "train", "load_models", "build_samples"]


@dataclass(frozen=True)
class TrafficTrainConfig:
    """Training of the TrafficGen-style models."""

    data: tuple[str, ...] = ()
    """Dataset directories to train on (procedural, Waymo, nuScenes, ...)."""
    preset: str = "tiny"
    """Model widths, a name in ``traffic.model.PRESETS``: tiny (2-core CPU, minutes) or paper (TrafficGen
    widths, GPUs)."""
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 8
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "cosine"
    """Learning rate after a 20-step warm-up: constant, or cosine decay to 5% of ``lr`` at the last step."""
    weight_decay: float = 1e-4
    symmetry: Literal["none", "mirror", "rotate", "rotate_mirror"] = "none"
    """Training-time augmentation: each sampled scene is seen in a random scene frame, rotated about the ego by an
    angle uniform in [-pi, pi) ("rotate"), mirrored across the ego's heading with probability 0.5 ("mirror"; a
    mirror swaps the side of the road traffic keeps to), or both ("rotate_mirror"). ``encoding.transform_batch``."""
    start_frames: tuple[int, ...] = (0, 10, 20, 30, 40)
    """Frames each scenario is encoded at (more training samples per scenario)."""
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocast on GPU; models stay fp32."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.symmetry not in ("none", "mirror", "rotate", "rotate_mirror"):
            raise ValueError(f"symmetry must be 'none', 'mirror', 'rotate' or 'rotate_mirror', got {self.symmetry!r}")
        _model_config(self.preset)


def lr_factor(cfg: TrafficTrainConfig, step: int) -> float:
    """The learning rate at optimizer step ``step`` (0-based) as a fraction of ``cfg.lr``."""
    warm = min(1.0, (step + 1) / 20)
    if cfg.schedule == "constant":
        return warm
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(cfg.steps - 1, 1), 1.0))))


def _model_config(preset: str):
    """The ModelConfig of a preset name, from the package's one registry ``traffic.model.PRESETS``."""
    from traffic.model.encoder import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)} (traffic.model.PRESETS)")
    return PRESETS[preset]


def build_samples(dirs: tuple[str, ...], enc: EncodingConfig, start_frames: tuple[int, ...],
                  rank: int = 0, world: int = 1) -> tuple[list[dict], list[str]]:
    """Encode every (scenario, start frame) of this rank's shard; bad scenarios are reported, not fatal."""
    samples, problems = [], []
    for d in dirs:
        ds = ScenarioDataset(d, repair=True)
        for i, (name, sc) in enumerate(ds.iter_checked()):
            if i % world != rank:
                continue
            if isinstance(sc, Exception):
                problems.append(f"{name}: {sc}")
                continue
            for t0 in start_frames:
                if t0 < sc.length - 1 and sc.tracks.valid[sc.ego_index, t0]:
                    e = encode_scene(sc, t0, enc)
                    if (e["agent_lane"] >= 0).sum() >= 1:
                        samples.append(e)
    return samples, problems


def load_models(path: str | Path, device: str = "cpu"):
    """(placement, trajectory, config) from a checkpoint, loaded strictly with ``weights_only=True``."""
    from traffic.model.placement import PlacementModel
    from traffic.model.trajectory import TrajectoryModel

    ckpt = load_checkpoint(path, device, hint="train one with `bevgen traffic train`")
    cfg = from_dict(TrafficTrainConfig, ckpt["config"])
    mcfg = _model_config(cfg.preset)
    placement, trajectory = PlacementModel(mcfg).to(device), TrajectoryModel(mcfg).to(device)
    placement.load_state_dict(ckpt["model"]["placement"], strict=True)
    if "encoder.hist_embed.weight" not in ckpt["model"]["trajectory"]:
        raise ValueError(f"{path}: this trajectory model predates the agents' history input (agent_hist); retrain it "
                         "with `bevgen traffic train`")
    trajectory.load_state_dict(ckpt["model"]["trajectory"], strict=True)
    return placement.eval(), trajectory.eval(), cfg


def _joint(placement, trajectory):
    """One module whose forward returns both losses, so DDP sees a single forward/backward."""
    import torch

    class Joint(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.placement, self.trajectory = placement, trajectory

        def forward(self, batch, generator=None):
            return self.placement.loss(batch, generator=generator), self.trajectory.loss(batch)

    return Joint()


def _save(run_dir: Path, joint, opt, cfg: TrafficTrainConfig, step: int, best: float) -> None:
    save_checkpoint(run_dir / "checkpoints" / "latest.pt",
                    model={"placement": joint.placement.state_dict(), "trajectory": joint.trajectory.state_dict()},
                    optimizer=opt.state_dict(), config=to_dict(cfg), step=step, best_metric=best)


def train(cfg: TrafficTrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train both models; returns a summary with the loss history. Writes config, TensorBoard, checkpoints."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from traffic.model.placement import PlacementModel
    from traffic.model.trajectory import TrajectoryModel

    if not cfg.data:
        raise ValueError("data: give at least one dataset directory to train on")
    run_dir = Path(run_dir)
    rank, world, device = setup_distributed(cfg.device)
    ckpt_path = check_resume(run_dir, resume)
    seed_everything(cfg.seed, rank)  # same init on every rank
    # a resumed run replays the streams of step 0 (unlike views and scene3d, which pass the start step)
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, rank))  # batch indices (CPU)
    gen_dev = torch.Generator(device=device).manual_seed(stream_seed(cfg.seed, rank))  # sampling inside the models
    gen_aug = torch.Generator().manual_seed(stream_seed(cfg.seed, rank) + 500)  # scene frames (cfg.symmetry; CPU)

    samples, problems = build_samples(cfg.data, cfg.encoding, cfg.start_frames, rank, world)
    if not samples:
        raise ValueError(f"no usable training samples in {cfg.data} (problems: {problems[:3]})")
    mcfg = _model_config(cfg.preset)
    joint = _joint(PlacementModel(mcfg), TrajectoryModel(mcfg)).to(device)
    params = list(joint.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, math.inf
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, device)
        joint.placement.load_state_dict(ckpt["model"]["placement"], strict=True)
        joint.trajectory.load_state_dict(ckpt["model"]["trajectory"], strict=True)
        opt.load_state_dict(ckpt["optimizer"])
        start, best = int(ckpt["step"]), float(ckpt["best_metric"])
    net = DDP(joint, find_unused_parameters=True) if world > 1 else joint
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, start + s))  # resumes mid-schedule

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        writer = SummaryWriter(str(run_dir / "tb"))
    bar = None
    if progress and rank == 0:

        bar = tqdm(total=cfg.steps, initial=start, desc="traffic train", unit="step")
    history, t0 = [], time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and device.type == "cuda")
    for step in range(start, cfg.steps):
        idx = torch.randint(len(samples), (min(cfg.batch_size, len(samples)),), generator=gen).tolist()
        batch = collate([samples[i] for i in idx])
        if cfg.symmetry != "none":
            angle = (torch.rand(len(idx), generator=gen_aug) * 2 - 1) * math.pi * cfg.symmetry.startswith("rotate")
            mirror = torch.rand(len(idx), generator=gen_aug) < (0.0 if cfg.symmetry == "rotate" else 0.5)
            batch = transform_batch(batch, angle, mirror)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            lp, lt = net(batch, generator=gen_dev)
            total = lp["total"] + lt["total"]
        opt.zero_grad(set_to_none=True)
        total.backward()  # DDP averages gradients across ranks here
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        row = {"step": step + 1, "total": float(total.detach()), "placement": float(lp["total"].detach()),
               "trajectory": float(lt["total"].detach())}
        history.append(row)
        if writer:
            for k in ("total", "placement", "trajectory"):
                writer.add_scalar(f"losses/{k}", row[k], step + 1)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{row['total']:.3f}")
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            recent = float(np.mean([h["total"] for h in history[-20:]]))
            best = min(best, recent)
            _save(run_dir, joint, opt, cfg, step + 1, best)
    if bar:
        bar.close()
    seconds = time.perf_counter() - t0
    summary = {"start_step": start, "final_step": cfg.steps, "samples": len(samples), "problems": problems,
               "seconds": round(seconds, 2), "history": history}
    if rank == 0:
        writer.close()
        (run_dir / "train_summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "history"},
                                                               indent=2))
        with open(run_dir / "losses.jsonl", "a") as f:
            for h in history:
                f.write(json.dumps(h) + "\n")
    finish_distributed()
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m traffic.train --data DIR [DIR ...] --out RUN [--set k=v ...]`` (torchrun-friendly)."""

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    cfg = load_config(TrafficTrainConfig, a.config, [f"data={json.dumps(a.data)}"] + a.set)
    train(cfg, a.out, resume=a.resume)


if __name__ == "__main__":
    main()
