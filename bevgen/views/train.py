"""Train the views model: VQ tokenizer, then the masked-token generator; CPU, GPU or torchrun/DDP.

Top to bottom: config -> seed -> device / DDP -> data (FrameDataset frames split by scenario, images
area-resized to ``data.image_size`` with K scaled to match; cached in memory for small datasets) ->
stage "tokenizer" (VQ autoencoder, L1 + MSE + gradient + VQ losses) -> stage "generator" (tokenizer
frozen, every training frame tokenised once and kept in memory, MaskGIT loss with condition dropout)
-> atomic checkpoints ``checkpoints/{tokenizer,generator}.pt`` = {model, optimizer, config, step,
best_metric} read back with ``weights_only=True``. TensorBoard: ``losses/``, ``charts/`` and sample
grids (per preview frame: real | tokenizer reconstruction | generated, each a six-view mosaic) also
saved as PNG. A resumed run keeps its split.json, refuses a config whose model / data fields differ
from the checkpoints', and continues with fresh random streams (seeded from the step it resumes at).

Multi-GPU: ``torchrun --nproc_per_node N -m bevgen.views.train --data DIR --out RUN``: each rank
trains on its shard of frames, DDP averages gradients, rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import typer
from tqdm.auto import tqdm

from bevgen.render.dataset import FrameDataset, split_frames
from bevgen.views.adversarial import TokenizerAdversary
from bevgen.views.config import MODEL_FIELDS, ViewsConfig, config_differences
from bevgen.views.figures import sample_grid
from runkit.atomic import atomic_write_text
from runkit.checkpoint import load_checkpoint, save_checkpoint
from runkit.config import save_config, to_dict
from runkit.distributed import finish_distributed, setup_distributed
from runkit.seeding import seed_everything, stream_seed

# torch, cv2, tensorboard and the torch modules (views.sample, views.generator) are imported lazily:
# optional `ml`/`rl` extras, and importing this module stays light.

__all__ = ["train_views", "main", "STAGES"]

STAGES = ("tokenizer", "generator", "all")
KEEP_KEYS = ("images", "bev", "boxes", "classes", "box_valid", "K", "T_cam_from_ego")


def _frames(cfg: ViewsConfig, data_dir: Path, split_file: Path | None) -> tuple[list[str], list[str]]:
    """(train, heldout) frame names: those of ``split_file`` (a resumed run's split.json) when given, else
    split by scenario; checks the dataset against the config."""

    index = json.loads((data_dir / "index.json").read_text())
    bev, views = index.get("bev", {}), len(index["rig"]["names"])
    problems = []
    if abs(float(bev.get("range_m", cfg.data.bev_range_m)) - cfg.data.bev_range_m) > 1e-6:
        problems.append(f"data.bev_range_m={cfg.data.bev_range_m} but the dataset has {bev['range_m']}")
    if len(bev.get("channels", [None] * cfg.data.bev_channels)) != cfg.data.bev_channels:
        problems.append(f"data.bev_channels={cfg.data.bev_channels} but the dataset has {len(bev['channels'])}")
    if views != cfg.data.num_views:
        problems.append(f"data.num_views={cfg.data.num_views} but the dataset rig has {views} cameras")
    if problems:
        raise ValueError(f"{data_dir}: " + "; ".join(problems))
    if split_file is not None:
        split = json.loads(split_file.read_text())
        return list(split["train"]), list(split["heldout"])
    if cfg.data.heldout_fraction <= 0:
        return list(index["frames"]), []
    train, held = split_frames(index["frames"], cfg.data.heldout_fraction, cfg.train.seed)
    return list(train), list(held)


def _load_items(data_dir: Path, names: list[str], cfg: ViewsConfig, problems: list[str]) -> list[dict]:
    """Load, resize (model image size, K scaled) and keep frames in memory; bad or missing frames are reported."""
    from torch.utils.data import default_collate

    from bevgen.views.sample import fit_batch

    try:
        ds, items = FrameDataset(data_dir, names=names), []
    except FileNotFoundError as e:  # every frame missing: the caller decides whether that is fatal
        problems.append(str(e))
        return []
    problems += [f"{name}: frame file missing" for name in ds.missing]
    for i, name in enumerate(ds.names):
        try:
            frame = ds[i]  # one read of the npz per frame
            item = fit_batch(default_collate([{k: frame[k] for k in KEEP_KEYS}]), cfg.data.image_size)
            items.append({k: v[0] for k, v in item.items()})
        except Exception as e:  # noqa: BLE001 - one unreadable frame must not stop training
            problems.append(f"{name}: {type(e).__name__}: {e}")
    return items


def _batches(source, batch_size: int, cfg: ViewsConfig, gen):
    """Infinite iterator of collated batches (dict of tensors at the model's image size)."""
    import torch
    from torch.utils.data import DataLoader, default_collate

    from bevgen.views.sample import fit_batch

    if len(source) == 0:
        raise ValueError("no training frames to draw batches from (every frame missing or unreadable)")
    if isinstance(source, list):  # cached: random draws with replacement across the epoch boundary
        while True:
            idx = torch.randint(len(source), (min(batch_size, len(source)),), generator=gen).tolist()
            yield default_collate([source[i] for i in idx])
    # fewer frames than a batch: keep the short batch (drop_last would leave an empty, endless loader)
    loader = DataLoader(source, batch_size=batch_size, shuffle=True, drop_last=len(source) >= batch_size, generator=gen,
                        num_workers=cfg.data.num_workers, collate_fn=lambda b: default_collate(
                            [{k: x[k] for k in KEEP_KEYS} for x in b]))
    while True:
        for batch in loader:
            yield fit_batch(batch, cfg.data.image_size)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at ``total`` (a pure function of the step,
    so resumed runs continue the same schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _restore(path: Path, model, opt, device) -> tuple[int, float]:
    """Load a stage checkpoint strictly; returns (step, best_metric). A checkpoint without optimizer state
    (a run seeded with ``init_from``) continues with a fresh optimizer."""
    ckpt = load_checkpoint(path, device)
    model.load_state_dict(ckpt["model"], strict=True)
    if opt is not None and "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"]), float(ckpt["best_metric"])


def _seed_from(base: Path, run_dir: Path, data_dir: Path, cfg: ViewsConfig) -> None:
    """Start ``run_dir`` from another run's weights and step counts (fine-tuning on other data): its
    tokenizer and generator weights without optimizer state, and a split that keeps the frames the base
    run held out (those in ``data_dir``) held out and trains on every other frame. A run already seeded
    (or trained) is left as it is."""
    ckpts = {s: run_dir / "checkpoints" / f"{s}.pt" for s in ("tokenizer", "generator")}
    if ckpts["generator"].exists():
        return
    missing = [s for s in ckpts if not (base / "checkpoints" / f"{s}.pt").exists()]
    if missing:
        raise FileNotFoundError(f"init_from {base}: no {' or '.join(missing)} checkpoint to start from")
    loaded = {s: load_checkpoint(base / "checkpoints" / f"{s}.pt") for s in ckpts}
    diff = config_differences(loaded["generator"]["config"], cfg, MODEL_FIELDS)
    if diff:
        raise ValueError(f"init_from {base}: its model was trained with another config: " + "; ".join(diff))
    if int(loaded["generator"]["step"]) >= cfg.train.generator_steps:
        raise ValueError(f"init_from {base}: its generator is at step {loaded['generator']['step']}; set "
                         f"train.generator_steps above it (now {cfg.train.generator_steps}) to fine-tune")
    if not (run_dir / "split.json").exists():
        names = json.loads((data_dir / "index.json").read_text())["frames"]
        base_split = base / "split.json"
        held = set(json.loads(base_split.read_text())["heldout"]) if base_split.exists() else set()
        train, heldout = [n for n in names if n not in held], [n for n in names if n in held]
        if not heldout:  # none of the base run's held-out frames is in data_dir: split the frames by scenario
            train, heldout = split_frames(names, cfg.data.heldout_fraction, cfg.train.seed)
        atomic_write_text(run_dir / "split.json", json.dumps({"data_dir": str(data_dir), "init_from": str(base),
                                                              "train": list(train), "heldout": list(heldout)},
                                                             indent=1))
    for s, ck in loaded.items():  # tokenizer first: a generator checkpoint marks a seeded run
        save_checkpoint(ckpts[s], **{k: ck[k] for k in ("model", "config", "step", "best_metric")})


def _check_reused(cfg: ViewsConfig, ckpts: dict[str, Path], todo: tuple[str, ...], resume: bool) -> None:
    """Checkpoints a run continues from (a resumed stage, the frozen tokenizer of the generator stage)
    must hold cfg's model and data fields: raise naming every differing field."""
    fields, diff = {"tokenizer": ("data", "tokenizer"), "generator": MODEL_FIELDS}, {}
    for stage, path in ckpts.items():
        if path.exists() and (resume if stage in todo else stage == "tokenizer"):
            diff |= dict.fromkeys(config_differences(load_checkpoint(path)["config"], cfg, fields[stage]))
    if diff:
        raise ValueError(f"{path.parent} holds checkpoints trained with another config: " + "; ".join(sorted(diff))
                         + ". Resume with the run's own config.yaml (drop -c), or train into a new run directory.")


def _fresh_streams(ctx: dict, start: int) -> None:
    """A stage resumed at step ``start`` > 0 reseeds the batch draws and torch's global generator (dead-code
    restarts, dropout) from (seed, rank, start) instead of replaying the draws of step 0."""
    import torch

    if start:
        seed = stream_seed(ctx["cfg"].train.seed, ctx["rank"], start)
        ctx["gen"].manual_seed(seed)
        torch.manual_seed(seed)


def _write_samples(writer, run_dir: Path, pipe, preview: dict, step: int, tag: str) -> None:
    """Real | reconstruction | generated grid of the preview frames, to TensorBoard and PNG."""
    import cv2

    gen = pipe(preview, steps=pipe.config.train.sample_steps, seed=0).images
    recon = pipe.reconstruct(preview["images"], preview)
    grid = sample_grid([[preview["images"][b], recon[b], gen[b]] for b in range(len(gen))])
    writer.add_image(f"samples/{tag}", grid, step)
    (run_dir / "samples").mkdir(exist_ok=True)
    cv2.imwrite(str(run_dir / "samples" / f"{tag}_{step:06d}.png"), grid.transpose(1, 2, 0)[..., ::-1])


def _loop(name: str, params, opt, base_lr: float, start: int, total: int, step_fn, ctx: dict, on_checkpoint) -> dict:
    """Shared optimisation loop: step_fn() -> dict of scalar tensors ('total' is minimised)."""
    import torch

    bar = None
    if ctx["progress"] and ctx["rank"] == 0:

        bar = tqdm(total=total, initial=start, desc=f"views {name}", unit="step")
    history, t0, last = [], time.perf_counter(), {}
    for step in range(start, total):
        lr = base_lr * _lr_factor(step, ctx["cfg"].train.warmup_steps, total)
        for group in opt.param_groups:
            group["lr"] = lr
        with ctx["autocast"]:
            out = step_fn()
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        last = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
        history.append(last["total"])
        if ctx["writer"]:
            for k, v in last.items():
                group = 'charts' if k in ('acc', 'acc_objects', 'usage', 'perplexity', 'adv_lambda') else 'losses'
                ctx["writer"].add_scalar(f"{group}/{name}_{k}", v, step + 1)
            if (step + 1) % 20 == 0:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                ctx["writer"].add_scalar(f"charts/{name}_steps_per_second", rate, step + 1)
                ctx["writer"].add_scalar(f"charts/{name}_lr", lr, step + 1)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{last['total']:.3f}")
        if ctx["rank"] == 0 and ((step + 1) % ctx["cfg"].train.checkpoint_every == 0 or step + 1 == total):
            on_checkpoint(step + 1, float(np.mean(history[-20:])))
    if bar:
        bar.close()
    return {"steps": total, "start_step": start, "seconds": round(time.perf_counter() - t0, 2),
            "first_loss": history[0] if history else None, "final": last,
            "final_loss_mean20": float(np.mean(history[-20:])) if history else None}


def _train_tokenizer(tok, items_or_ds, ctx: dict, resume: bool) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bevgen.views.projection import pixel_layout
    from bevgen.views.sample import images_to_unit

    cfg, device, path = ctx["cfg"], ctx["device"], ctx["run_dir"] / "checkpoints" / "tokenizer.pt"
    opt = torch.optim.Adam(tok.parameters(), lr=cfg.train.tokenizer_lr, betas=(0.5, 0.9))
    start, best = _restore(path, tok, opt, device) if resume and path.exists() else (0, math.inf)
    adv = TokenizerAdversary(cfg.train, device, path if resume and path.exists() else None, ctx["world"],
                             lr_at=lambda i: cfg.train.discriminator_lr * _lr_factor(i, cfg.train.warmup_steps,
                                                                                 cfg.train.tokenizer_steps))
    _fresh_streams(ctx, start)
    net = DDP(tok) if ctx["world"] > 1 else tok
    batches = _batches(items_or_ds, cfg.train.tokenizer_batch, cfg, ctx["gen"])
    step = start

    def step_fn():
        nonlocal step
        if ctx["world"] > 1:  # dead-code restarts happen per rank: keep rank 0's codebook everywhere
            dist.broadcast(tok.quantizer.codebook.data, 0)
        batch = {k: v.to(device) for k, v in next(batches).items()}
        x = images_to_unit(batch["images"].flatten(0, 1))
        layout = None
        if cfg.tokenizer.layout_channels:
            g = cfg.generator
            layout = pixel_layout(batch, cfg.data.image_size, cfg.data.bev_range_m, g.num_classes, g.max_objects)
        out = net(x, layout)
        stats = tok.usage(out["idx"])
        losses = {k: out[k] for k in ("total", "l1", "mse", "grad", "vq")}
        if adv.active(step):
            losses |= adv.losses(x, out["recon"], out["total"], tok.decoder[-1].weight, step)
        step += 1
        return losses | {k: torch.tensor(v) for k, v in stats.items()}

    def checkpoint(at: int, recent: float) -> None:
        nonlocal best
        best = min(best, recent)
        save_checkpoint(path, model=tok.state_dict(), optimizer=opt.state_dict(), config=to_dict(cfg),
                        step=at, best_metric=best, **adv.state())

    return _loop("tokenizer", list(tok.parameters()), opt, cfg.train.tokenizer_lr, start, cfg.train.tokenizer_steps,
                 step_fn, ctx, checkpoint)


def _pretokenize(tok, items: list[dict], device, batch: int = 8, gen_model=None) -> list[dict]:
    """Encode every frame's views once: items gain 'tokens' [n] (int64) and, when ``gen_model`` uses it, the
    frame's aligned condition 'projection' [n, c] (``ViewsTransformer.projection``, a pure function of the
    layout and rig, so it is computed once per frame, not per step); they lose 'images'."""
    import torch
    from torch.utils.data import default_collate

    from bevgen.views.sample import COND_KEYS, images_to_unit

    need_proj = gen_model is not None and (gen_model.aligned is not None or gen_model.cfg.object_loss_weight > 0)
    out = []
    with torch.no_grad():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            imgs = torch.stack([it["images"] for it in chunk]).to(device)
            idx = tok.encode(images_to_unit(imgs.flatten(0, 1))).view(len(chunk), -1).cpu()
            extra = [{} for _ in chunk]
            if need_proj:
                cond = {k: v.to(device) for k, v in default_collate([{k: it[k] for k in COND_KEYS}
                                                                     for it in chunk]).items()}
                extra = [{"projection": p.cpu()} for p in gen_model.projection(cond)]
            out += [{k: v for k, v in it.items() if k != "images"} | {"tokens": t} | e
                    for it, t, e in zip(chunk, idx, extra)]
    return out


def _train_generator(gen_model, tok, items: list[dict], preview: dict | None, ctx: dict, resume: bool) -> dict:
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bevgen.views.generator import masked_token_loss
    from bevgen.views.sample import COND_KEYS, ViewsPipeline

    cfg, device, path = ctx["cfg"], ctx["device"], ctx["run_dir"] / "checkpoints" / "generator.pt"
    decay = [p for n, p in gen_model.named_parameters() if p.ndim >= 2 and "tok" not in n]
    other = [p for n, p in gen_model.named_parameters() if not (p.ndim >= 2 and "tok" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.train.generator_lr, betas=(0.9, 0.95))
    start, best = _restore(path, gen_model, opt, device) if resume and path.exists() else (0, math.inf)
    _fresh_streams(ctx, start)
    net = DDP(gen_model, find_unused_parameters=True) if ctx["world"] > 1 else gen_model
    batches = _batches(items, cfg.train.generator_batch, cfg, ctx["gen"])
    gen_dev = torch.Generator(device=device).manual_seed(stream_seed(cfg.train.seed, ctx["rank"], start))
    pipe = ViewsPipeline(tok, gen_model, cfg)  # switches to eval mode only while sampling

    def step_fn():
        b = {k: v.to(device) for k, v in next(batches).items()}
        cond = {k: b[k] for k in COND_KEYS + ("projection",) if k in b}
        return masked_token_loss(net, b["tokens"], cond, cfg.generator.cond_dropout, gen_dev)

    def checkpoint(step: int, recent: float) -> None:
        nonlocal best
        best = min(best, recent)
        save_checkpoint(path, model=gen_model.state_dict(), optimizer=opt.state_dict(), config=to_dict(cfg),
                        step=step, best_metric=best)
        every = cfg.train.sample_every
        due = step == cfg.train.generator_steps or (every and step % every == 0)
        if preview is not None and ctx["writer"] and due:
            _write_samples(ctx["writer"], ctx["run_dir"], pipe, preview, step, "generator")

    return _loop("generator", list(gen_model.parameters()), opt, cfg.train.generator_lr, start,
                 cfg.train.generator_steps, step_fn, ctx, checkpoint)


def train_views(cfg: ViewsConfig, data_dir: str | Path, run_dir: str | Path, stage: str = "all",
                resume: bool = False, progress: bool = True, init_from: str | Path | None = None) -> dict:
    """Train the tokenizer and/or the generator on a FrameDataset directory.

    Args:
        cfg: resolved ViewsConfig.
        data_dir: dataset written by ``bevgen.render.dataset.write_synthetic_dataset`` (or the nuScenes
            converter); images of another size are resized to ``cfg.data.image_size``.
        run_dir: output directory (config.yaml, split.json, checkpoints/, tb/, samples/, train_summary.json).
        stage: "tokenizer", "generator" (needs a trained tokenizer in run_dir) or "all".
        resume: continue from the checkpoints in run_dir (a finished stage is skipped) with the frames of
            its split.json; cfg's model and data fields must equal the checkpoints' (ValueError otherwise).
        progress: tqdm progress bars.
        init_from: fine-tune: start from this run's weights and step counts (optimizer fresh; the model fields
            of cfg must equal its), keeping the frames it held out held out; a stage then trains from that
            step to cfg's step count (``train.generator_steps`` above the base run's: the schedule's tail).
            Implies ``resume`` (an interrupted fine-tune continues from its own checkpoints).
    Returns:
        summary dict: per stage {steps, start_step, seconds, first_loss, final, final_loss_mean20}
        (tokenizer also usage / perplexity over the training frames), frames, problems, seconds.
    """
    import torch

    from bevgen.views.sample import build_models, fit_batch

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    if init_from is not None:
        _seed_from(Path(init_from), run_dir, data_dir, cfg)
        resume = True
    ckpts = {s: run_dir / "checkpoints" / f"{s}.pt" for s in ("tokenizer", "generator")}
    todo = ("tokenizer", "generator") if stage == "all" else (stage,)
    for s in todo:
        if ckpts[s].exists() and not resume:
            raise FileExistsError(f"{ckpts[s]} exists; pass resume=True (--resume) or choose another run dir")
    if "tokenizer" not in todo and not ckpts["tokenizer"].exists():
        raise FileNotFoundError(f"{ckpts['tokenizer']}: train the tokenizer first (stage 'tokenizer' or 'all')")
    _check_reused(cfg, ckpts, todo, resume)
    t_start = time.perf_counter()
    rank, world, device = setup_distributed(cfg.train.device)
    if cfg.train.threads and device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, rank)  # same initial weights on every rank
    gen = torch.Generator().manual_seed(stream_seed(cfg.train.seed, rank))  # batch draws (CPU)

    split_file = run_dir / "split.json"
    reuse_split = (resume or "tokenizer" not in todo) and split_file.exists()  # never re-split a run
    train_names, held_names = _frames(cfg, data_dir, split_file if reuse_split else None)
    problems: list[str] = []
    shard = train_names[rank::world]
    if cfg.data.cache_in_memory:
        source = _load_items(data_dir, shard, cfg, problems)
    else:

        source = FrameDataset(data_dir, names=shard)
        problems += [f"{name}: frame file missing" for name in source.missing]
    if len(source) == 0:
        raise ValueError(f"{data_dir}: no usable training frames (problems: {problems[:3]})")
    preview_items = _load_items(data_dir, (held_names or train_names)[:2], cfg, problems) if rank == 0 else []

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if not reuse_split:
            split_file.write_text(json.dumps({"data_dir": str(data_dir), "train": train_names, "heldout": held_names},
                                             indent=1))
        writer = SummaryWriter(str(run_dir / "tb"))
        writer.add_text("hparams", "```\n" + json.dumps(to_dict(cfg), indent=2) + "\n```")
    use_bf16 = cfg.train.precision == "bf16" and device.type == "cuda"
    ctx = {"cfg": cfg, "device": device, "rank": rank, "world": world, "gen": gen, "writer": writer,
           "run_dir": run_dir, "progress": progress,
           "autocast": torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)}
    tok, gen_model = build_models(cfg)
    tok, gen_model = tok.to(device), gen_model.to(device)
    summary: dict = {"frames": {"train": len(train_names), "heldout": len(held_names)}, "problems": problems}

    if "tokenizer" in todo:
        summary["tokenizer"] = _train_tokenizer(tok.train(), source, ctx, resume)
    if world > 1:
        torch.distributed.barrier()  # rank 0 has written tokenizer.pt
    _restore(ckpts["tokenizer"], tok, None, device)
    tok.eval().requires_grad_(False)

    if "generator" in todo:
        items = source if isinstance(source, list) else _load_items(data_dir, shard, cfg, problems)
        tokenised = _pretokenize(tok, items, device, gen_model=gen_model)
        all_idx = torch.stack([it["tokens"] for it in tokenised])
        summary["tokenizer_usage"] = tok.usage(all_idx)
        preview = None
        if preview_items:
            preview = {k: torch.stack([it[k] for it in preview_items]).to(device) for k in KEEP_KEYS}
            preview = fit_batch(preview, cfg.data.image_size)
        summary["generator"] = _train_generator(gen_model.train(), tok, tokenised, preview, ctx, resume)

    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    if rank == 0:
        if "tokenizer_usage" in summary:
            writer.add_scalar("charts/tokenizer_codebook_usage", summary["tokenizer_usage"]["usage"], 0)
            writer.add_scalar("charts/tokenizer_perplexity", summary["tokenizer_usage"]["perplexity"], 0)
        writer.close()
        summary_file = run_dir / "train_summary.json"
        trained = any(summary[s]["start_step"] < summary[s]["steps"] for s in todo)
        if trained or not summary_file.exists():  # resuming a finished run keeps the record of its training
            atomic_write_text(summary_file, json.dumps(summary, indent=2, default=str))
    finish_distributed()
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m bevgen.views.train`` (e.g. under torchrun): ``bevgen views train`` with the same options."""
    from bevgen.views.cli import app  # the command line lives in the CLI module, which imports this one lazily

    typer.main.get_command(app).commands["train"].main(argv, prog_name="python -m bevgen.views.train")


if __name__ == "__main__":
    main()
