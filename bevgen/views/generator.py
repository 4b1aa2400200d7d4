"""Masked-token transformer generating the tokens of all camera views jointly from a BEV layout.

Inputs per frame: image tokens [n = v h w] (index K = [MASK]), the BEV raster [C, Hb, Wb], m boxes (read
from the batch's frame-file keys into a ``sim_bridge.boxes.Boxes3D`` by :func:`batch_boxes`), and the
frame's own rig (K [v, 3, 3] at the model's image size, T_cam_from_ego [v, 4, 4]). Architecture:

* condition tokens: a strided-conv BEV encoder pooled to a g x g grid, each cell with a Fourier
  embedding of its ego-frame centre (x, y) / range; plus one object token per box from its 8
  normalised corners (``Boxes3D.corners``), a Fourier embedding of
  its centre and a class embedding; ``cond_layers`` self-attention blocks mix them;
* image tokens: token embedding + camera embedding MLP(Fourier(d_ray), Fourier(c_v / 4 m)) computed
  per sample from the rig (``attention.token_rays``) + (``aligned_condition``) an MLP of the layout seen
  through the token's own pixels (``bevgen.views.projection.layout_projection``: raster at the ground
  point, box class, face, heading and depth): the condition arrives spatially aligned with the tokens;
* ``layers`` blocks of [cross-view self-attention with bias beta cos(d_i, d_j); cross-attention to the
  condition tokens with the azimuth bias gamma cos(az(d_i) - az(p_j - c_v)); MLP], pre-norm;
* head: logits over the K codes.

Training (MaskGIT, Chang et al. 2022): per sample r ~ U(0, 1), a fraction cos(pi r / 2) of the tokens
(at least one) is replaced by [MASK]; cross-entropy on the masked tokens, each weighted by
1 + object_loss_weight * (fraction of its rays that hit a box). With probability
``cond_dropout`` a sample gets the null condition (BEV features replaced by a learned null vector,
positions kept; all boxes invalid; aligned condition zero), which enables classifier-free guidance at sampling time.

Letters: b batch, v view, h w token grid, n image token (v h w), m condition token, c BEV channel,
k head / code, d feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bevgen.views.attention import (MLP, Attention, GeometricBias, azimuth_cosine,
                                    fourier_features, token_rays, view_keys,
                                    view_neighbours)
from bevgen.views.config import GeneratorConfig
from bevgen.views.projection import batch_boxes, box_coverage, layout_projection, projection_channels
from sim_bridge.boxes import Boxes3D

__all__ = ["ViewsTransformer", "Context", "masked_token_loss", "batch_boxes"]

CENTRE_SCALE_M = 4.0  # camera centres enter the Fourier features as c / 4 m
HEIGHT_SCALE_M = 4.0  # box corner heights enter as z / 4 m


@dataclass
class Context:
    """The per-frame quantities reused across decoding steps (built by :meth:`ViewsTransformer.context`).

    Attributes:
        cond_valid: bool [b, m], condition tokens that are keys (BEV cells, valid boxes).
        cond: [b, m, d] condition tokens (m = g*g BEV cells + boxes); None while the condition blocks run.
        cam: [b, n, d] ray and camera-centre embedding of each image token.
        rays: [b, n, 3] unit ego-frame ray of each image token (self-attention bias beta cos(d_i, d_j), added in
            dot-product form: :meth:`GeometricBias.ray_features`).
        keys: [b, v, L] the tokens each view's tokens attend to (``attention.view_keys``: their own view, and
            the facing ``neighbour_span`` of the ``view_neighbours`` = k nearest views on each side), or None (all).
        az_cos: [b, n, m] azimuth agreement of each image token's ray with each condition token (cross bias).
        aligned: [b, n, d] embedding of the layout projected into each token's pixels (None without
            ``aligned_condition``).
        biases: (dtype, per block ((query, key) ray features of the self bias, cross bias [b, k, n, m])): the
            attention biases,
            filled by the first no-grad :meth:`ViewsTransformer.logits` call and reused by later decoding steps
            (they depend on the context only; recomputing them was about a third of a decoding step).
    """

    cond_valid: Tensor
    cond: Tensor | None = None
    cam: Tensor | None = None
    rays: Tensor | None = None
    keys: Tensor | None = None
    az_cos: Tensor | None = None
    aligned: Tensor | None = None
    biases: tuple[torch.dtype, list[tuple[Tensor, Tensor]]] | None = None


class BevEncoder(nn.Module):
    """Raster [b, c, Hb, Wb] (0/1) -> BEV tokens [b, g*g, d] and cell centres [g*g, 2] (ego x, y, m).

    Four 3x3 convs (three stride 2) then adaptive average pooling to g x g: O(b Hb Wb c_enc^2 / 16).
    Row 0 of the raster is the far front (x = +range), column 0 the far left (y = +range).
    """

    def __init__(self, in_channels: int, cfg: GeneratorConfig, range_m: float):
        super().__init__()
        c, g = cfg.bev_channels, cfg.bev_grid
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, cfg.d_model, 3, padding=1), nn.AdaptiveAvgPool2d(g))
        centre = range_m - (torch.arange(g, dtype=torch.float32) + 0.5) * (2 * range_m / g)
        xy = torch.stack(torch.meshgrid(centre, centre, indexing="ij"), -1).reshape(g * g, 2)  # (x row, y col)
        self.register_buffer("cell_xy", xy, persistent=False)
        self.pos = nn.Linear(2 * (2 * cfg.fourier_freqs + 1), cfg.d_model)
        self.range_m, self.freqs = range_m, cfg.fourier_freqs

    def forward(self, raster: Tensor) -> tuple[Tensor, Tensor]:
        """raster [b, c, Hb, Wb] -> features [b, g*g, d], position embeddings [g*g, d]."""
        feats = rearrange(self.net(raster.float()), "b d g1 g2 -> b (g1 g2) d")
        return feats, self.pos(fourier_features(self.cell_xy / self.range_m, self.freqs))


class ObjectEncoder(nn.Module):
    """Torch ``Boxes3D`` [b, m] -> object tokens [b, m, d] (corners, centre, class)."""

    def __init__(self, cfg: GeneratorConfig, range_m: float):
        super().__init__()
        self.range_m, self.freqs = range_m, cfg.fourier_freqs
        self.mlp = nn.Sequential(nn.Linear(24 + 2 * (2 * cfg.fourier_freqs + 1), cfg.d_model), nn.SiLU(),
                                 nn.Linear(cfg.d_model, cfg.d_model))
        self.cls = nn.Embedding(cfg.num_classes, cfg.d_model)

    def forward(self, boxes: Boxes3D) -> Tensor:
        """boxes: torch ``Boxes3D`` [b, m] (ego frame, m; classes used, ``valid`` is not) -> tokens [b, m, d]."""
        boxes = boxes.to(dtype=torch.float32)
        corners = boxes.corners()  # [b, m, 8, 3]
        scale = corners.new_tensor([self.range_m, self.range_m, HEIGHT_SCALE_M])
        feats = torch.cat([rearrange(corners / scale, "b m c x -> b m (c x)"),
                           fourier_features(boxes.center[..., :2] / self.range_m, self.freqs)], -1)
        return self.mlp(feats) + self.cls(boxes.classes.clamp(0, self.cls.num_embeddings - 1))


class Block(nn.Module):
    """Pre-norm block: biased self-attention, optional biased cross-attention, MLP. [b, n, d] -> same."""

    def __init__(self, cfg: GeneratorConfig, cross: bool):
        super().__init__()
        d, k = cfg.d_model, cfg.heads
        self.n1, self.attn = nn.LayerNorm(d), Attention(d, k, cfg.dropout)
        self.self_bias = GeometricBias(k, cfg.ray_bias_init) if cross else None
        self.n2, self.cross = (nn.LayerNorm(d), Attention(d, k, cfg.dropout)) if cross else (None, None)
        self.cross_bias = GeometricBias(k, cfg.bev_bias_init) if cross else None
        self.n3, self.mlp = nn.LayerNorm(d), MLP(d, cfg.mlp_ratio, cfg.dropout)

    def biases(self, ctx: Context, dtype: torch.dtype) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """(self-attention ray features (query [b, k, n, 3], key [b, 1, n, 3]), cross-attention bias [b, k, n, m])
        of an image-token block."""
        head_dim = self.attn.q.out_features // self.attn.heads
        return (self.self_bias.ray_features(ctx.rays, head_dim, dtype),
                self.cross_bias(ctx.az_cos, ctx.cond_valid, dtype))

    def forward(self, x: Tensor, ctx: Context, biases: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x [b, n, d] (image tokens, or condition tokens when built without cross-attention), ctx from
        :meth:`ViewsTransformer.context` (rays [b, n, 3], cond [b, m, d], az_cos [b, n, m], cond_valid
        [b, m]), biases: :meth:`biases` computed earlier (None: computed here) -> [b, n, d]."""
        dt = _logit_dtype(x)
        if self.cross is None:  # condition-token block: padding boxes masked out as keys
            mask = _key_mask(ctx.cond_valid, dt)
            x = x + self.attn(self.n1(x), bias=mask)
        else:
            self_feats, cross_bias = biases if biases is not None else self.biases(ctx, dt)
            x = x + self.attn(self.n1(x), extra=self_feats, keys=ctx.keys)
            x = x + self.cross(self.n2(x), ctx.cond, bias=cross_bias)
        return x + self.mlp(self.n3(x))


def _logit_dtype(x: Tensor) -> torch.dtype:
    """The dtype attention logits are computed in (the autocast dtype under autocast)."""
    return x.dtype if not torch.is_autocast_enabled() else torch.get_autocast_dtype(x.device.type)


def _key_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """[b, m] bool -> [b, 1, 1, m] additive mask (0 valid, finfo.min invalid)."""
    zero = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    return zero.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]


class ViewsTransformer(nn.Module):
    """Bidirectional masked-token model over all views; see the module docstring."""

    def __init__(self, cfg: GeneratorConfig, codebook_size: int, num_views: int, token_grid: tuple[int, int],
                 stride: int, bev_channels: int, range_m: float):
        super().__init__()
        self.cfg, self.codebook_size, self.num_views = cfg, codebook_size, num_views
        self.token_grid, self.stride = tuple(token_grid), stride
        d = cfg.d_model
        self.tok = nn.Embedding(codebook_size + 1, d)  # last index = [MASK]
        ray_in = 3 * (2 * cfg.fourier_freqs + 1)
        self.cam = nn.Sequential(nn.Linear(2 * ray_in, d), nn.SiLU(), nn.Linear(d, d))
        self.bev = BevEncoder(bev_channels, cfg, range_m)
        self.objects = ObjectEncoder(cfg, range_m)
        self.null_bev = nn.Parameter(torch.zeros(d))
        self.cond_blocks = nn.ModuleList([Block(cfg, cross=False) for _ in range(cfg.cond_layers)])
        self.cond_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList([Block(cfg, cross=True) for _ in range(cfg.layers)])
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, codebook_size))
        self.bev_channels, self.range_m = bev_channels, range_m
        self.aligned = None
        if cfg.aligned_condition:
            self.aligned = nn.Sequential(nn.Linear(projection_channels(bev_channels, cfg.num_classes), d), nn.SiLU(),
                                         nn.Linear(d, d))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def num_tokens(self) -> int:
        """n = v h w image tokens per frame."""
        return self.num_views * self.token_grid[0] * self.token_grid[1]

    def projection(self, batch: dict[str, Tensor]) -> Tensor:
        """The layout seen through each token's pixels: [b, n, c] (``projection.layout_projection``), read from
        ``batch["projection"]`` when the batch carries it (training caches it per frame)."""
        if "projection" in batch:
            return batch["projection"].float()
        boxes = batch_boxes(batch)[:, : self.cfg.max_objects]
        feats = layout_projection(batch["bev"], boxes, batch["K"], batch["T_cam_from_ego"], self.token_grid,
                                  self.stride, self.cfg.projection_subsamples, self.range_m, self.cfg.num_classes)
        return rearrange(feats, "b v h w c -> b (v h w) c")

    def coverage(self, projection: Tensor) -> Tensor:
        """[b, n, c] projection -> [b, n] fraction of each token's rays that hit a box."""
        return box_coverage(projection, self.bev_channels, self.cfg.num_classes)

    def context(self, batch: dict[str, Tensor], null: Tensor) -> Context:
        """Everything that does not depend on the image tokens (computed once per decoded frame).

        Args:
            batch: a collated ``FrameDataset`` dict (``bevgen.render.dataset`` keys): bev [b, c, Hb, Wb], the
                boxes (``boxes`` / ``classes`` / ``box_valid``, read by :func:`batch_boxes`), K [b, v, 3, 3]
                (model image size), T_cam_from_ego [b, v, 4, 4].
            null: [b] bool, True where the null (unconditional) condition is used.
        Returns:
            :class:`Context`: cond [b, g*g + m, d], cond_valid [b, g*g + m], cam [b, n, d], rays [b, n, 3],
            az_cos [b, n, g*g + m], aligned [b, n, d] (or None). O(b n m + BEV convs), plus
            O(b n sub^2 m) for the aligned condition.
        """
        bev_feat, bev_pos = self.bev(batch["bev"])
        b = bev_feat.shape[0]
        bev_feat = torch.where(null[:, None, None], self.null_bev.to(bev_feat.dtype), bev_feat) + bev_pos
        boxes = batch_boxes(batch)[:, : self.cfg.max_objects].to(dtype=torch.float32)
        obj = self.objects(boxes)
        obj_valid = boxes.valid & ~null[:, None]
        cond = torch.cat([bev_feat, obj], 1)
        cond_valid = torch.cat([torch.ones(bev_feat.shape[:2], dtype=torch.bool, device=cond.device), obj_valid], 1)
        ctx = Context(cond_valid)
        for blk in self.cond_blocks:
            cond = blk(cond, ctx)
        rays, centres = token_rays(batch["K"], batch["T_cam_from_ego"], self.token_grid, self.stride)
        key_xy = torch.cat([self.bev.cell_xy.expand(b, -1, -1), boxes.center[..., :2]], 1)
        freqs = self.cfg.fourier_freqs
        cam_in = torch.cat([fourier_features(rays, freqs),
                            fourier_features(centres / CENTRE_SCALE_M, freqs)[:, :, None, None].expand(
                                *rays.shape[:-1], -1)], -1)
        flat_rays = rearrange(rays, "b v h w c -> b (v h w) c")
        cam = rearrange(self.cam(cam_in), "b v h w d -> b (v h w) d")
        aligned = None
        if self.aligned is not None:
            proj = self.projection(batch) * ~null[:, None, None]
            aligned = self.aligned(proj.to(cam.dtype))
        keys = None
        if self.cfg.view_neighbours:
            keys = view_keys(view_neighbours(batch["T_cam_from_ego"], self.cfg.view_neighbours), self.token_grid,
                             self.cfg.neighbour_span)
        return Context(cond_valid, cond=self.cond_norm(cond), cam=cam, rays=flat_rays, keys=keys,
                       az_cos=azimuth_cosine(rays, centres, key_xy), aligned=aligned)

    def logits(self, tokens: Tensor, ctx: Context, positions: Tensor | None = None) -> Tensor:
        """Token indices [b, n] (mask_id = masked) -> logits [b, n, K] (or [b, len(positions), K]: the head only
        at those token positions, e.g. the ones still to decode). O(layers b (n^2 + n m) d).

        Without grad (sampling) the attention biases are cached in ``ctx`` and reused by the next calls."""
        x = self.tok(tokens) + ctx.cam
        if ctx.aligned is not None:
            x = x + ctx.aligned
        biases: list = [None] * len(self.blocks)
        if not torch.is_grad_enabled():
            dt = _logit_dtype(x)
            if ctx.biases is None or ctx.biases[0] != dt:
                ctx.biases = (dt, [blk.biases(ctx, dt) for blk in self.blocks])
            biases = ctx.biases[1]
        for blk, bias in zip(self.blocks, biases):
            x = blk(x, ctx, bias)
        return self.head(x if positions is None else x[:, positions]).float()

    def forward(self, tokens: Tensor, batch: dict[str, Tensor], null: Tensor) -> Tensor:
        """tokens [b, n], batch (see :meth:`context`), null [b] bool -> logits [b, n, K]."""
        return self.logits(tokens, self.context(batch, null))


def masked_token_loss(model: nn.Module, tokens: Tensor, batch: dict[str, Tensor], cond_dropout: float,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """MaskGIT loss with the cosine schedule and condition dropout.

    Args:
        model: a ViewsTransformer (or a DDP wrapper of one); ``mask_id`` read from the unwrapped model.
        tokens: [b, n] ground-truth code indices of all views.
        batch: condition tensors (see ``ViewsTransformer.context``).
        cond_dropout: probability of the null condition per sample.
        generator: torch.Generator on tokens.device for the mask draws.
    Returns:
        dict: total (cross-entropy on masked tokens, weighted 1 + object_loss_weight * box coverage), acc
        (top-1 on masked tokens), acc_objects (top-1 on masked tokens at least half covered by a box; NaN
        when none), mask_ratio.
    """
    core = getattr(model, "module", model)
    weight_obj = core.cfg.object_loss_weight
    coverage = None
    if core.aligned is not None or weight_obj > 0:
        if "projection" not in batch:
            batch = {**batch, "projection": core.projection(batch)}
        coverage = core.coverage(batch["projection"].float())  # [b, n]
    b, n = tokens.shape
    dev = tokens.device
    ratio = torch.cos(0.5 * math.pi * torch.rand(b, device=dev, generator=generator))
    n_mask = (ratio * n).ceil().clamp(1, n)
    rank = torch.rand(b, n, device=dev, generator=generator).argsort(-1).argsort(-1)
    mask = rank < n_mask[:, None]
    null = torch.rand(b, device=dev, generator=generator) < cond_dropout
    logits = model(tokens.masked_fill(mask, core.mask_id), batch, null)
    target = tokens[mask]
    ce = F.cross_entropy(logits[mask], target, reduction="none")
    right = (logits[mask].argmax(-1) == target).float()
    out = {"acc": right.mean().detach(), "mask_ratio": mask.float().mean().detach()}
    if coverage is None:
        return out | {"total": ce.mean()}
    cov = coverage[mask]
    w = 1.0 + weight_obj * cov
    on_obj = cov >= 0.5
    out["acc_objects"] = (right[on_obj].mean() if on_obj.any() else right.new_tensor(float("nan"))).detach()
    return out | {"total": (w * ce).sum() / w.sum()}
