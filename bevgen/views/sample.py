"""Inference: ``load_views(run_dir) -> ViewsPipeline``; six camera views from a BEV layout.

``pipe(layout, rig)`` (a :class:`~bevgen.layout.BevLayout` or a list of them, and a
:class:`~bevgen.cameras.CameraRig`) or ``pipe(batch)`` (a collated ``FrameDataset`` dict) returns a
:class:`ViewsOutput`: uint8 images [b, v, 3, H, W] and the camera names. Conditioning on a layout and a
rig needs no renderer.

Two decoders of the same masked-token model, both with classifier-free guidance
(logits = (1 + w) cond - w uncond, the conditional and unconditional halves batched in one forward):

* ``parallel`` (MaskGIT, Chang et al. 2022): start fully masked; at step t of T sample every masked
  token, keep the most confident ones and re-mask the floor(n cos(pi/2 (t+1)/T)) least confident
  (confidence = log p(sampled) + annealed Gumbel noise tau (1 - (t+1)/T) g). T forward passes.
* ``autoregressive``: the reference decoder; one token per forward pass in a fixed raster order
  over all views (view-major, then rows, then columns). n = v h w forward passes.

Randomness comes only from an explicit ``torch.Generator`` seeded by ``seed``; the device is the
module's. Letters: b batch, v view, h w token grid, n token (v h w), k code.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bevgen.cameras import NUSCENES_CAMERAS, CameraRig, scale_intrinsics
from bevgen.layout import BevLayout
from bevgen.views.bevseg import resize_views
from bevgen.views.config import ViewsConfig, config_differences, with_legacy_defaults
from bevgen.views.generator import Context, ViewsTransformer
from bevgen.views.projection import pixel_layout
from bevgen.views.tokenizer import VQAutoencoder
from runkit.checkpoint import load_checkpoint
from runkit.config import from_dict

__all__ = ["ViewsPipeline", "ViewsOutput", "load_views", "build_models", "fit_batch", "layout_condition",
           "images_to_unit", "unit_to_uint8"]

COND_KEYS = ("bev", "boxes", "classes", "box_valid", "K", "T_cam_from_ego")


def build_models(cfg: ViewsConfig) -> tuple[VQAutoencoder, ViewsTransformer]:
    """Fresh (untrained) tokenizer and generator for a config."""
    tok = VQAutoencoder(cfg.tokenizer)
    gen = ViewsTransformer(cfg.generator, cfg.tokenizer.codebook_size, cfg.data.num_views, cfg.token_grid,
                           cfg.tokenizer.downsample, cfg.data.bev_channels, cfg.data.bev_range_m)
    return tok, gen


def fit_batch(batch: dict, image_size: tuple[int, int], rig_size: tuple[int, int] | None = None) -> dict:
    """Bring a (batched) FrameDataset dict to the model's image size.

    Images uint8 [b, v, 3, H, W] go through :func:`bevgen.views.bevseg.resize_views` (area when shrinking)
    and K [b, v, 3, 3] rows 0 and 1 are scaled by (w / W, h / H) (``CameraRig.resized`` math). Without
    images, K refers to ``rig_size`` (default: already ``image_size``). Other keys pass through. O(b v H W).
    """
    out = dict(batch)
    if "images" in batch:
        out["images"], out["K"] = resize_views(batch["images"], batch["K"], image_size)
    else:
        out["K"] = scale_intrinsics(batch["K"], rig_size or image_size, image_size)
    return out


def images_to_unit(images: Tensor) -> Tensor:
    """uint8 [..., 3, H, W] -> float [..., 3, H, W] in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def unit_to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8 (clamped)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def _sample(logits: Tensor, temperature: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """[..., k] -> sampled index [...] (Gumbel-max; argmax at temperature 0) and its log-probability."""
    logp = F.log_softmax(logits / max(temperature, 1e-6), dim=-1)
    noisy = logp if temperature <= 0 else logp + _gumbel(logp.shape, generator, logp.device)
    idx = noisy.argmax(-1)
    return idx, logp.gather(-1, idx[..., None])[..., 0]


@dataclass(frozen=True)
class ViewsOutput:
    """What a :class:`ViewsPipeline` call returns."""

    images: Tensor
    """uint8 [b, v, 3, H, W] on the pipeline's device, views in ``camera_names`` order."""
    camera_names: tuple[str, ...]

    def numpy(self) -> np.ndarray:
        """uint8 [b, v, H, W, 3] (channels last, for image files)."""
        return self.images.permute(0, 1, 3, 4, 2).cpu().numpy()


def layout_condition(layouts: BevLayout | Sequence[BevLayout], rig: CameraRig) -> dict[str, Tensor]:
    """The model's condition for BEV layouts seen through one rig: a batch dict (``COND_KEYS``) of b = number
    of layouts, K referring to ``rig.image_size``. Boxes are padded to the longest layout (invalid padding)."""
    layouts = [layouts] if isinstance(layouts, BevLayout) else list(layouts)
    if not layouts:
        raise ValueError("no layouts given")
    arrays = [lay.box_arrays() for lay in layouts]
    n = max(len(a["boxes"]) for a in arrays)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.zeros((n - len(a), *a.shape[1:]), a.dtype)])

    b = len(layouts)
    return {"bev": torch.from_numpy(np.stack([lay.raster for lay in layouts])),
            "boxes": torch.from_numpy(np.stack([pad(a["boxes"]) for a in arrays])),
            "classes": torch.from_numpy(np.stack([pad(a["classes"]) for a in arrays])),
            "box_valid": torch.from_numpy(np.stack([pad(a["box_valid"]) for a in arrays])),
            "K": torch.from_numpy(rig.K.astype(np.float32))[None].expand(b, -1, -1, -1),
            "T_cam_from_ego": torch.from_numpy(rig.T_cam_from_ego.astype(np.float32))[None].expand(b, -1, -1, -1)}


class ViewsPipeline:
    """Tokenizer + generator; ``pipeline(layout, rig)`` or ``pipeline(batch)`` -> :class:`ViewsOutput`.

    The constructor leaves the modules' train/eval modes alone (a training loop may hold a pipeline for
    its preview samples); every call runs them in eval mode and restores their previous modes.
    """

    def __init__(self, tokenizer: VQAutoencoder, generator: ViewsTransformer, config: ViewsConfig):
        self.tokenizer, self.generator, self.config = tokenizer, generator, config

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Run the tokenizer and generator in eval mode (no dropout), then restore their modes."""
        modes = [(m, m.training) for mod in (self.tokenizer, self.generator) for m in mod.modules()]
        self.tokenizer.eval()
        self.generator.eval()
        try:
            yield
        finally:
            for m, training in modes:
                m.training = training

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of generated images."""
        return tuple(self.config.data.image_size)

    @property
    def rig_size(self) -> tuple[int, int]:
        """(H, W) the batch's K must refer to when the batch carries no images (= ``image_size``)."""
        return tuple(self.config.data.image_size)

    @property
    def num_views(self) -> int:
        return self.config.data.num_views

    def _context(self, batch: dict, guidance: float, unconditional: bool = False) -> Context:
        """Condition context; with guidance the batch is doubled as [cond; uncond]; ``unconditional``: the null
        condition for every row (use with guidance 0)."""
        b = batch["bev"].shape[0]
        null = torch.full((b,), unconditional, dtype=torch.bool, device=self.device)
        if self.generator.aligned is not None and "projection" not in batch:  # once, not again for the null half
            batch = {**batch, "projection": self.generator.projection(batch)}
        if guidance != 0:
            batch = {k: torch.cat([batch[k], batch[k]]) for k in COND_KEYS + ("projection",) if k in batch}
            null = torch.cat([null, ~null])
        return self.generator.context(batch, null)

    def _logits(self, tokens: Tensor, ctx: Context, guidance: float, positions: Tensor | None = None) -> Tensor:
        """[b, n] -> guided logits [b, n, k] ([b, len(positions), k] at ``positions`` only; one forward of 2b
        sequences when guided)."""
        if guidance == 0:
            return self.generator.logits(tokens, ctx, positions)
        cond, uncond = self.generator.logits(torch.cat([tokens, tokens]), ctx, positions).chunk(2)
        return (1 + guidance) * cond - guidance * uncond

    def decode_parallel(self, ctx: Context, b: int, steps: int, guidance: float, temperature: float,
                        generator: torch.Generator, choice_temperature: float = 4.5, init: Tensor | None = None
                        ) -> Tensor:
        """MaskGIT decoding: ``steps`` forwards -> tokens [b, n]. O(steps layers b n^2 d).

        ``init`` [b, n] starts from known tokens (mask_id where unknown): only the unknown ones are decoded, on
        the same cosine schedule scaled to their number (MaskGIT inpainting; the training masks cover any
        subset, so a partly known frame is in distribution)."""
        n, mask_id = self.generator.num_tokens, self.generator.mask_id
        tokens = torch.full((b, n), mask_id, dtype=torch.long, device=self.device) if init is None else init.clone()
        n0 = (tokens == mask_id).sum(-1)  # [b] tokens to decode
        if not bool(n0.any()):
            return tokens
        for t in range(steps):
            unknown = tokens == mask_id
            # logits and draws only where some row still has a token to decode (the head and the Gumbel draws
            # over the K codes of every token were a tenth of a step at 128x224)
            todo = unknown.any(0).nonzero()[:, 0]
            picked, logp_todo = _sample(self._logits(tokens, ctx, guidance, todo), temperature, generator)
            sampled, logp = tokens.clone(), torch.zeros(tokens.shape, device=tokens.device)
            sampled[:, todo], logp[:, todo] = picked, logp_todo
            sampled = torch.where(unknown, sampled, tokens)
            ratio = (t + 1) / steps
            n_left = unknown.sum(-1)
            n_mask = torch.floor(n0.double() * math.cos(0.5 * math.pi * ratio)).long()
            if t < steps - 1:  # reveal at least one token per step, keep at least one for later steps
                n_mask = torch.minimum(n_mask, n_left - 1).clamp(min=1)
            n_mask = torch.where(n_left > 0, n_mask, torch.zeros_like(n_mask))  # a finished row stays finished
            conf = logp + choice_temperature * (1 - ratio) * _gumbel(logp.shape, generator, logp.device)
            conf = conf.masked_fill(~unknown, math.inf)
            remask = conf.argsort(-1).argsort(-1) < n_mask[:, None]
            tokens = sampled.masked_fill(remask, mask_id)
        return tokens

    def decode_autoregressive(self, ctx: Context, b: int, guidance: float, temperature: float,
                              generator: torch.Generator) -> Tensor:
        """One token per forward in raster order over all views -> tokens [b, n]. O(n layers b n^2 d)."""
        n, mask_id = self.generator.num_tokens, self.generator.mask_id
        tokens = torch.full((b, n), mask_id, dtype=torch.long, device=self.device)
        for i in range(n):
            tokens[:, i] = _sample(self._logits(tokens, ctx, guidance)[:, i], temperature, generator)[0]
        return tokens

    def pixel_layout(self, batch: dict) -> Tensor | None:
        """The layout seen through every pixel, [b v, c, H, W] (``projection.pixel_layout``), for a decoder that
        reads it (``tokenizer.layout_channels`` > 0); None for a tokens-only decoder."""
        if not self.tokenizer.cfg.layout_channels:
            return None
        g = self.generator
        return pixel_layout(batch, self.image_size, g.range_m, g.cfg.num_classes, g.cfg.max_objects)

    def tokens_to_images(self, tokens: Tensor, batch: dict | None = None) -> Tensor:
        """[b, n] code indices -> uint8 [b, v, 3, H, W]; ``batch`` (the frames' condition at the model's image
        size) is needed by a decoder that reads the layout (``tokenizer.layout_channels`` > 0)."""
        h, w = self.config.token_grid
        grid = rearrange(tokens, "b (v h w) -> (b v) h w", v=self.num_views, h=h, w=w)
        if self.tokenizer.cfg.layout_channels and batch is None:
            raise ValueError("this model's decoder reads the layout: pass the frames' condition batch")
        layout = None if batch is None else self.pixel_layout(batch)
        images = self.tokenizer.decode(grid, layout)
        return rearrange(unit_to_uint8(images), "(b v) c H W -> b v c H W", v=self.num_views)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """uint8 [b, v, 3, H, W] at ``image_size`` -> code indices [b, n] (the generator's token order)."""
        b = images.shape[0]
        with self._eval_mode():
            idx = self.tokenizer.encode(images_to_unit(rearrange(images.to(self.device), "b v c H W -> (b v) c H W")))
        return rearrange(idx, "(b v) h w -> b (v h w)", b=b)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, batch: dict | None = None) -> Tensor:
        """Tokenizer round trip (the quality ceiling of generation): uint8 [b, v, 3, H, W] -> same; ``batch``:
        the frames' condition, for a decoder that reads the layout (see :meth:`tokens_to_images`)."""
        with self._eval_mode():
            return self.tokens_to_images(self.encode(images), batch)

    @torch.no_grad()
    def __call__(self, batch: dict | BevLayout | Sequence[BevLayout], rig: CameraRig | None = None,
                 mode: Literal["parallel", "autoregressive"] = "parallel",
                 steps: int | None = None, guidance: float | None = None, temperature: float | None = None,
                 seed: int = 0, rig_size: tuple[int, int] | None = None, unconditional: bool = False) -> ViewsOutput:
        """Generate all views of each frame.

        Args:
            batch: a ``BevLayout`` or a list of them (then ``rig`` is required), or a batched FrameDataset dict
                (tensors, ``bevgen.render.dataset`` keys): bev [b, c, Hb, Wb], the boxes (``boxes`` / ``classes``
                / ``box_valid``, read by ``generator.batch_boxes``), K [b, v, 3, 3], T_cam_from_ego [b, v, 4, 4];
                images (optional) only give the size K refers to (else ``rig_size``, default ``image_size``).
            rig: the cameras when ``batch`` holds layouts (any image size: K is rescaled to ``image_size``).
            mode: "parallel" (MaskGIT, ``steps`` forwards) or "autoregressive" (one token per forward).
            steps: parallel decoding steps (default config.train.sample_steps).
            guidance: classifier-free guidance weight w (default config.train.guidance; 0 = conditional only).
            temperature: sampling temperature of the token distribution (0 = greedy; default
                config.train.sample_temperature).
            seed: seed of the torch.Generator driving every random draw.
            unconditional: sample from the null condition (no layout and no boxes; the rig is kept; no guidance): the
                floor a conditional sample is measured against (``bevgen views eval --unconditional``).
        Returns:
            :class:`ViewsOutput`: uint8 images [b, v, 3, H, W] on the pipeline's device, (H, W) =
            ``image_size``; camera names from ``rig`` (else the nuScenes order the frame files use).
        """
        if mode not in ("parallel", "autoregressive"):
            raise ValueError(f"mode must be 'parallel' or 'autoregressive', got {mode!r}")
        batch, names, steps, guidance = self._prepare(batch, rig, steps, 0.0 if unconditional else guidance, rig_size)
        temperature = self._temperature(temperature)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        b = batch["bev"].shape[0]
        with self._eval_mode():
            ctx = self._context(batch, guidance, unconditional)
            if mode == "parallel":
                tokens = self.decode_parallel(ctx, b, steps, guidance, temperature, gen)
            else:
                tokens = self.decode_autoregressive(ctx, b, guidance, temperature, gen)
            if unconditional:  # the decoder sees the null layout too: the rig's geometry, no raster and no boxes
                batch = {**batch, "bev": torch.zeros_like(batch["bev"]),
                         "box_valid": torch.zeros_like(batch["box_valid"])}
            return ViewsOutput(self.tokens_to_images(tokens, batch), names)

    def _temperature(self, temperature: float | None) -> float:
        return float(self.config.train.sample_temperature if temperature is None else temperature)

    def _prepare(self, batch, rig, steps, guidance, rig_size) -> tuple[dict, tuple[str, ...], int, float]:
        """(condition batch on the device at the model's image size, camera names, steps, guidance)."""
        names = tuple(rig.names) if rig is not None else tuple(NUSCENES_CAMERAS)
        if not isinstance(batch, dict):
            if rig is None:
                raise ValueError("a rig is needed to generate views of BEV layouts")
            batch, rig_size, names = layout_condition(batch, rig), tuple(rig.image_size), tuple(rig.names)
        steps = int(steps or self.config.train.sample_steps)
        guidance = float(self.config.train.guidance if guidance is None else guidance)
        batch = fit_batch({k: v.to(self.device) for k, v in batch.items() if k in COND_KEYS + ("images",)},
                          self.image_size, rig_size)
        if batch["K"].shape[1] != self.num_views:
            raise ValueError(f"batch has {batch['K'].shape[1]} views, the model was trained on {self.num_views}")
        return batch, names, steps, guidance

    @torch.no_grad()
    def sequence(self, batch: dict | Sequence[BevLayout], rig: CameraRig | None = None, steps: int | None = None,
                 guidance: float | None = None, temperature: float | None = None, seed: int = 0,
                 rig_size: tuple[int, int] | None = None, keep_below: float = 0.1) -> ViewsOutput:
        """Views of consecutive frames of one drive (the batch's rows in time order), temporally consistent.

        Frame 0 is decoded in full. Every later frame starts from the previous frame's tokens wherever no
        channel of the layout seen through that token (``ViewsTransformer.projection``: raster classes, box
        class / face / heading, depth, sky) changed by ``keep_below`` or more (sky, background, plain road),
        and decodes only the rest (cars, lines and edges that moved), conditioned on the kept tokens
        (``decode_parallel(init=...)``). Each frame draws the same random stream (``seed``);
        ``keep_below=0`` re-draws every token (independent frames). The projection is ego-relative, so what
        the layout does not hold (buildings, texture) is kept in place rather than moved with the ego:
        re-projecting kept tokens with the ego motion is the next step.

        Args: as :meth:`__call__` (parallel decoding); keep_below: the change threshold.
        Returns:
            :class:`ViewsOutput` [F, v, 3, H, W]. O(F steps layers n^2 d), fewer forwards' worth of new tokens
            when much is kept.
        """
        batch, names, steps, guidance = self._prepare(batch, rig, steps, guidance, rig_size)
        temperature = self._temperature(temperature)
        proj = self.generator.projection(batch)  # [F, n, c]
        mask_id, out, prev = self.generator.mask_id, [], None
        gen = torch.Generator(device=self.device)
        with self._eval_mode():
            for f in range(proj.shape[0]):
                row = {k: v[f:f + 1] for k, v in batch.items()} | {"projection": proj[f:f + 1]}
                init = None
                if prev is not None and keep_below > 0:
                    keep = (proj[f] - proj[f - 1]).abs().amax(-1) < keep_below  # [n]
                    init = torch.where(keep, prev, torch.full_like(prev, mask_id))[None]
                gen.manual_seed(int(seed))
                prev = self.decode_parallel(self._context(row, guidance), 1, steps, guidance, temperature, gen,
                                            init=init)[0]
                out.append(prev)
            return ViewsOutput(self.tokens_to_images(torch.stack(out), batch), names)


def load_views(run_dir_or_ckpt: str | Path, device: str | torch.device = "cpu") -> ViewsPipeline:
    """Pipeline from a run directory (or its checkpoints/ directory, or one of its .pt files).

    Both ``checkpoints/tokenizer.pt`` and ``checkpoints/generator.pt`` are read with
    ``weights_only=True`` and loaded strictly (key or shape mismatches raise); the modules come back in
    eval mode. Raises FileNotFoundError when a file is missing and ValueError when the tokenizer
    checkpoint was trained with other tokenizer / ``data.image_size`` settings than the generator's.
    """
    path = Path(run_dir_or_ckpt)
    if path.suffix == ".pt":
        ckpt_dir = path.parent
    else:
        ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    files = {name: ckpt_dir / f"{name}.pt" for name in ("tokenizer", "generator")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no trained views model: missing {missing} (train with `bevgen views train`)")

    ckpts = {k: load_checkpoint(p, device) for k, p in files.items()}
    cfg = from_dict(ViewsConfig, with_legacy_defaults(ckpts["generator"]["config"]))
    diff = config_differences(ckpts["tokenizer"]["config"], cfg, fields=("tokenizer", "data.image_size"))
    if diff:
        raise ValueError(f"{files['tokenizer']} does not belong to {files['generator']} (tokenizer checkpoint vs "
                         f"generator config): " + "; ".join(diff))
    tok, gen = build_models(cfg)
    tok.load_state_dict(ckpts["tokenizer"]["model"], strict=True)
    gen.load_state_dict(ckpts["generator"]["model"], strict=True)
    return ViewsPipeline(tok.to(device).eval(), gen.to(device).eval(), cfg)
