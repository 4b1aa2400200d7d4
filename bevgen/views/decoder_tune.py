"""Give a trained views model a decoder that reads the layout through every pixel, without retraining anything else.

    bevgen views tune-decoder --ckpt RUN --data FRAMES --out RUN_LAYOUT [--steps 600] [--adversarial 0.05]

The generator predicts token indices, so a new decoder over the same encoder and codebook (both frozen: every
frame's tokens stay bit-identical, and so does what the generator was trained to predict) redraws every sample.
With ``layout`` the decoder also gets the layout seen through each pixel (``projection.pixel_layout``: the BEV
raster at the ground point of the pixel's ray, the box it hits, its face, heading and depth, a sky flag) at each
of its scales, through convolutions that start at zero (``tokenizer.layout_channels``). Tokens are 8x8 pixels, so
a road edge or a far car that covers a few pixels of a token is placed by the tokens only to within a token; the
geometry is exact, and the decoder learns to draw those edges where the layout puts them. With ``generated`` a share
of the frames is decoded from the run's generator's guesses instead of the true tokens (the target staying the true
views): at sampling time the decoder gets generated tokens, wrong in places, and learns to follow the layout there.

Training: the tokenizer's reconstruction losses (L1 + MSE + image gradients) of the true views of the run's
training frames (its ``split.json``, else the config's split of ``FRAMES``), optionally the patch-adversarial term
(``bevgen.views.adversarial``, adaptive weight); Adam, 20 warm-up steps, gradients clipped at 1. Cost per step: one
encoder forward without grad, the per-pixel layout (O(b v H W (m + C))) and the decoder's forward/backward over
``batch`` x 6 views: about 0.7 s at 64x112 on 2 cores. The state is checkpointed atomically every
``checkpoint_every`` steps in ``OUT/checkpoints/decoder_tune.pt`` and an interrupted run resumes from it; the
finished run holds the new tokenizer.pt and the unchanged generator weights (its stored config names the new
tokenizer), loadable by ``load_views`` like any run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

# torch and the torch modules of bevgen.views are imported lazily: bevgen.pretrained imports this module, and the
# command line that reaches it must start without torch.
from runkit.atomic import atomic_write_text
from runkit.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["tune_decoder"]

_OPTIONAL_SETTINGS = ("generated", "edge_weight")
"""Settings recorded only when set (runs tuned before they existed keep their records and resume unchanged)."""


def tune_decoder(run: str | Path, data: str | Path, out: str | Path, steps: int = 600, adversarial_weight: float = 0.0,
                 layout: bool = True, lr: float = 2e-4, batch: int = 4, seed: int = 0, checkpoint_every: int = 100,
                 threads: int = 0, train_decoder: bool = True, generated: float = 0.0, edge_weight: float = 0.0,
                 progress: bool = True) -> dict:
    """Train the decoder of ``run``'s tokenizer ``steps`` more steps (encoder and codebook frozen) into ``out``.

    Args:
        run: a trained views run (or exported model) directory. data: its FrameDataset directory (or another one
            with the same rig and BEV settings). out: the new run directory (must not be ``run``).
        steps: decoder steps. adversarial_weight: the patch-adversarial term's weight (0 = off).
        layout: the decoder reads the per-pixel layout (``tokenizer.layout_channels``); False fine-tunes the
            tokens-only decoder.
        lr, batch, seed: Adam learning rate, frames per step, seed of weights init and frame draws.
        train_decoder: train the decoder's own weights too; False (with ``layout``) trains only the layout
            injection, the decoder staying as it was (ControlNet's recipe: the base model frozen).
        generated: share of each batch's frames whose tokens are the run's generator's (one MaskGIT step from the
            true tokens with 50-100% of them masked, conditioned on the frame's layout, drawn at the sampling
            temperature), the target staying the true views: the decoder meets the tokens it will be given at
            sampling time, wrong where the generator errs, and learns to draw what the layout says there
            (0 = true tokens only, as before).
        edge_weight: pixels within one pixel of an edge of the layout as seen through them (road borders, lane
            markings, car outlines, the horizon: ``projection.layout_edges``; lane centre lines left out, as they
            are not painted) weigh ``1 + edge_weight`` in the reconstruction losses instead of 1 (0 = every pixel
            alike, as before): the pixels that place the layout in a view, a fifth of them at 64x112.
        checkpoint_every: steps between atomic checkpoints (resume points). threads: torch threads (0 = torch's
            default, every core). progress: tqdm bar.
    Returns:
        summary: the settings, start_step, seconds, first_loss, final_loss_mean20, frames, problems, and
        ``previous``: ``run``'s own summary where ``run`` was tuned before (also written to
        ``out / "decoder_tune.json"``). A finished ``out`` is returned as is; one finished or interrupted with
        other settings is refused (ValueError).
    """
    import torch
    from tqdm.auto import tqdm

    from bevgen.views.adversarial import TokenizerAdversary
    from bevgen.views.config import ViewsConfig, with_legacy_defaults
    from bevgen.views.projection import layout_edges, pixel_layout, projection_channels
    from bevgen.views.sample import images_to_unit
    from bevgen.views.tokenizer import VQAutoencoder
    from bevgen.views.train import _batches, _frames, _load_items
    from runkit.config import from_dict, save_config, to_dict

    run, data, out = Path(run), Path(data), Path(out)
    src = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    if out.resolve() == run.resolve():
        raise ValueError("--out must be a new directory: the tuned decoder does not overwrite the run it starts from")
    if not (layout or train_decoder):
        raise ValueError("nothing to train: a tokens-only decoder with its weights frozen")
    if edge_weight < 0:
        raise ValueError(f"edge_weight must be >= 0, got {edge_weight}")
    if not 0.0 <= generated <= 1.0:
        raise ValueError(f"generated must lie in [0, 1] (a share of each batch's frames), got {generated}")
    settings = {"from": str(run), "steps": steps, "layout": layout, "train_decoder": train_decoder,
                "adversarial_weight": adversarial_weight, "lr": lr, "batch": batch, "seed": seed}
    if generated:  # runs tuned before this option existed keep their settings (and resume) unchanged
        settings["generated"] = generated
    if edge_weight:
        settings["edge_weight"] = edge_weight
    if (out / "decoder_tune.json").exists():  # finished: returned as is, unless it was made with other settings
        done = json.loads((out / "decoder_tune.json").read_text())
        _same_settings(done, settings, out, data)
        return done
    for name in ("tokenizer", "generator"):
        if not (src / f"{name}.pt").exists():
            raise FileNotFoundError(f"{src / f'{name}.pt'} missing: not a trained views run")
    tok_state, gen_state = load_checkpoint(src / "tokenizer.pt"), load_checkpoint(src / "generator.pt")
    cfg = from_dict(ViewsConfig, with_legacy_defaults(gen_state["config"]))
    channels = projection_channels(cfg.data.bev_channels, cfg.generator.num_classes) if layout else 0
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, layout_channels=channels))
    saved_cfg = to_dict(cfg)
    train_cfg = dataclasses.replace(cfg.train, adversarial_weight=adversarial_weight, adversarial_start=0,
                                    discriminator_lr=2e-4)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tok = VQAutoencoder(cfg.tokenizer)
    missing, unexpected = tok.load_state_dict(tok_state["model"], strict=False)
    if unexpected or any(not k.startswith("layout_in.") for k in missing):
        raise ValueError(f"{src / 'tokenizer.pt'} does not fit its own config: missing {missing}, "
                         f"unexpected {unexpected}")
    tok.encoder.requires_grad_(False)
    tok.quantizer.requires_grad_(False)
    tok.decoder.requires_grad_(train_decoder)
    tok.train()
    tok.encoder.eval()
    tok.quantizer.eval()  # no dead-code restarts: the codebook is the generator's vocabulary
    params = [p for p in tok.parameters() if p.requires_grad]  # decoder (unless frozen) + layout injection
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    state_path = out / "checkpoints" / "decoder_tune.pt"
    adv = TokenizerAdversary(train_cfg, torch.device("cpu"), state_path if state_path.exists() else None, 1,
                             lr_at=lambda i: 2e-4)
    start, losses, first = 0, [], None
    if state_path.exists():  # resume an interrupted run
        st = load_checkpoint(state_path)
        _same_settings(st.get("settings", {}), settings, out, data)
        tok.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        start, losses, first = int(st["step"]), list(st["losses"]), st["first_loss"]
    split = run / "split.json"
    train, _ = _frames(cfg, data, split if split.exists() else None)
    problems: list[str] = []
    items = _load_items(data, train, cfg, problems)
    batches = _batches(items, batch, cfg, torch.Generator().manual_seed(seed + start))
    g = cfg.generator
    raster = _drawn_channels(data, cfg.data.bev_channels) if edge_weight else []
    corrupt = _generated_tokens(cfg, gen_state, seed + start) if generated else None

    def save(step: int) -> None:
        save_checkpoint(state_path, model=tok.state_dict(), optimizer=opt.state_dict(), step=step, losses=losses,
                        first_loss=first, config=saved_cfg, settings={**settings, "data": str(data)}, **adv.state())

    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), desc="decoder", unit="step", disable=not progress, initial=start, total=steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        b = next(batches)
        x = images_to_unit(b["images"].flatten(0, 1))
        with torch.no_grad():
            q, idx, _ = tok._quantise(x)
            if corrupt is not None:
                q = corrupt(b, idx, tok.quantizer.codes, generated)
            lay = pixel_layout(b, cfg.data.image_size, cfg.data.bev_range_m, g.num_classes, g.max_objects) \
                if layout or edge_weight else None
            weight = 1.0 + edge_weight * layout_edges(lay, raster, cfg.data.bev_channels, g.num_classes).float() \
                if edge_weight else None
        recon = tok.run_decoder(q, lay if layout else None)
        loss = tok.reconstruction_loss(recon, x, weight)["total"]
        if adv.active(step):
            loss = adv.losses(x, recon, loss, tok.decoder[-1].weight, step)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        first = losses[0] if first is None else first
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save(step + 1)
    # the finished run is written into ``out`` beside the resume state; decoder_tune.json, written last, marks it
    # finished, and only then is the resume state removed
    ck = out / "checkpoints"
    save_checkpoint(ck / "generator.pt", model=gen_state["model"], config=saved_cfg, step=gen_state["step"],
                    best_metric=gen_state.get("best_metric"))
    save_checkpoint(ck / "tokenizer.pt", model=tok.state_dict(), config=saved_cfg, step=tok_state["step"],
                    best_metric=tok_state.get("best_metric"))
    save_config(cfg, out / "config.yaml")
    for extra in ("split.json", "train_summary.json"):
        if (run / extra).exists():
            atomic_write_text(out / extra, (run / extra).read_text())
    summary = {**settings, "data": str(data), "start_step": start, "seconds": round(time.perf_counter() - t0, 1),
               "first_loss": first, "final_loss_mean20": sum(losses[-20:]) / max(1, len(losses[-20:])),
               "layout_channels": channels, "frames": len(items), "problems": problems}
    if (run / "decoder_tune.json").exists():  # a run tuned before: its segments stay on record, oldest innermost
        summary["previous"] = json.loads((run / "decoder_tune.json").read_text())
    atomic_write_text(out / "decoder_tune.json", json.dumps(summary, indent=2))
    state_path.unlink(missing_ok=True)
    return summary


def _generated_tokens(cfg, gen_state: dict, seed: int):
    """``corrupt(batch, idx, codes, share) -> q``: the quantised tokens of a batch (``idx`` [b v, h, w] true code
    indices, ``codes`` the codebook) with the frames of a random ``share`` of the batch replaced by the generator's
    guesses: per frame, a random 50-100% of its tokens masked and re-drawn in one MaskGIT step (the rest kept),
    conditioned on the frame's layout. One generator forward per batch: O(layers b n^2 d)."""
    import torch
    from einops import rearrange

    from bevgen.views.sample import COND_KEYS, _sample, build_models

    gen = build_models(cfg)[1]
    gen.load_state_dict(gen_state["model"], strict=True)
    gen.eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(seed)
    v = cfg.data.num_views

    @torch.no_grad()
    def corrupt(batch: dict, idx, codes, share: float):
        h, w = idx.shape[-2:]
        tokens = rearrange(idx, "(b v) h w -> b (v h w)", v=v)
        b, n = tokens.shape
        which = torch.rand(b, generator=rng) < share  # frames that get the generator's tokens
        if not bool(which.any()):
            return rearrange(codes[idx], "bv h w d -> bv d h w")
        ratio = 0.5 + 0.5 * torch.rand(b, 1, generator=rng)
        masked = (torch.rand(b, n, generator=rng) < ratio) & which[:, None]
        cond = {k: batch[k] for k in COND_KEYS + ("projection",) if k in batch}
        logits = gen(tokens.masked_fill(masked, gen.mask_id), cond, torch.zeros(b, dtype=torch.bool))
        drawn = _sample(logits, cfg.train.sample_temperature, rng)[0]
        out = torch.where(masked, drawn, tokens)
        return rearrange(codes[out], "b (v h w) d -> (b v) d h w", v=v, h=h, w=w)

    return corrupt


def _drawn_channels(data: Path, count: int) -> list[int]:
    """Indices of the BEV raster channels of ``data`` (its ``index.json``) that the views draw: all but
    ``lane_centerline`` (a lane's centre line is not painted on the road)."""
    names = json.loads((data / "index.json").read_text()).get("bev", {}).get("channels") or []
    if len(names) != count:
        raise ValueError(f"{data}/index.json names {len(names)} BEV channels, the run reads {count}")
    return [i for i, name in enumerate(names) if name != "lane_centerline"]


def _same_settings(stored: dict, settings: dict, out: Path, data: Path | None = None) -> None:
    """Refuse to return or resume a run in ``out`` that was made with other settings (ValueError naming them).

    ``data`` is compared by the dataset folder's name (the path may be relative, or the work folder moved); a resume
    state saved before the data was recorded has none, and is not refused for it."""
    keys = [*settings, *(k for k in _OPTIONAL_SETTINGS if k not in settings)]  # recorded only when set
    diff = [f"{k}: {stored.get(k)!r} there, {settings.get(k)!r} asked" for k in keys
            if stored.get(k) != settings.get(k)]
    if data is not None and stored.get("data") and Path(stored["data"]).name != Path(data).name:
        diff.append(f"data: {stored['data']!r} there, {str(data)!r} asked")
    if diff:
        raise ValueError(f"{out} holds a decoder tuned with other settings ({'; '.join(diff)}); choose another --out")
