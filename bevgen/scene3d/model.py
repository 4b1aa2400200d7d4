"""The compositional 3D-aware scene generator (DisCoScene-style NeRF-GAN driven by BEV boxes).

Letters: b batch, n box, r ray (low-resolution pixel), s sample, m point, d latent / style, f feature.

Wiring (``Scene3DGenerator.__init__``): mapping networks (object latent + spatial condition ->
object style; scene latent -> background style), an object field (``fields.OBJECT_FIELDS``), the
street background field, the samplers (rays, slab ray-box intersection, object and background
samples), the compositor, and the upsampler. ``forward`` renders a batch of layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevgen.scene3d.compositor import composite
from bevgen.scene3d.layout import LayoutBatch
from bevgen.scene3d.fields import OBJECT_FIELDS, BackgroundField, MappingNetwork
from bevgen.scene3d.renderer import Upsampler
from bevgen.scene3d.samplers import camera_rays, sample_background, sample_objects
from sim_bridge.boxes import Boxes3D

__all__ = ["Scene3DModelConfig", "Scene3DGenerator", "GeneratorOutput", "box_condition", "sample_latents"]

COND_DIM = 8  # box condition: x, y, z, l, w, h (scaled), cos yaw, sin yaw


@dataclass(frozen=True)
class Scene3DModelConfig:
    """Architecture of the generator (the discriminators follow image_size / crop_size)."""

    image_size: int = 64
    """Output side in pixels (square images)."""
    render_size: int = 32
    """Side of the volume-rendered feature image; image_size / render_size must be a power of two."""
    feature_dim: int = 16
    """Rendered feature channels (the first 3 are low-resolution RGB)."""
    z_dim: int = 64
    """Latent width per object and for the background."""
    w_dim: int = 64
    """Style width after the mapping networks."""
    num_classes: int = 4
    """Object classes embedded in the object condition (bevgen.layout.CLASS_NAMES)."""
    object_field: Literal["mlp", "triplane"] = "mlp"
    """Per-object field: modulated MLP (tiny) or tri-plane (paper)."""
    object_hidden: int = 64
    """Hidden width of the object field."""
    object_layers: int = 3
    """Modulated layers of the MLP object field."""
    object_pe_freqs: int = 4
    """Positional-encoding frequencies of canonical coordinates (MLP field)."""
    triplane_size: int = 32
    """Tri-plane resolution (tri-plane field)."""
    object_density_bias: float = -2.0
    """Initial raw density of objects (softplus(-2) = 0.13 / m: objects start nearly transparent)."""
    object_samples: int = 8
    """Samples per ray inside each hit box."""
    objects_per_ray: int = 2
    """Nearest hit boxes sampled per ray."""
    background_samples: int = 16
    """Background samples per ray (stratified in inverse depth)."""
    near_m: float = 0.5
    """Background near bound."""
    far_m: float = 80.0
    """Background far bound; the sky lies behind it."""
    bev_extent_m: float = 64.0
    """The BEV plane covers +-bev_extent_m around the ego."""
    bev_plane_size: int = 32
    """BEV plane resolution (cells per side)."""
    bev_plane_channels: int = 16
    """BEV plane channels."""
    background_hidden: int = 64
    """Hidden width of the background MLP."""
    background_layers: int = 2
    """Modulated layers of the background MLP."""
    upsampler_channels: int = 32
    """Channels of the 2D upsampler."""

    def __post_init__(self):
        ratio = self.image_size // max(self.render_size, 1)
        if self.image_size % self.render_size or ratio & (ratio - 1):
            raise ValueError(f"image_size {self.image_size} must be render_size {self.render_size} times a power "
                             "of two (e.g. 64 and 32, or 256 and 64)")
        if self.object_samples < 1 or self.background_samples < 2 or self.objects_per_ray < 1:
            raise ValueError("object_samples, objects_per_ray must be >= 1 and background_samples >= 2")
        if not 0 < self.near_m < self.far_m:
            raise ValueError(f"need 0 < near_m < far_m, got {self.near_m}, {self.far_m}")


@dataclass(frozen=True)
class GeneratorOutput:
    """A batch of renders.

    Attributes:
        rgb: [B, 3, H, H] in ~[-1, 1] (upsampled); rgb_low: [B, 3, h, h] volume-rendered colours.
        features: [B, F, h, h] rendered features; depth: [B, h, h] expected distance (m).
        object_alpha: [B, h, h] opacity of all objects; instance_alpha: [B, N, h, h] per box.
    """

    rgb: Tensor
    rgb_low: Tensor
    features: Tensor
    depth: Tensor
    object_alpha: Tensor
    instance_alpha: Tensor


def box_condition(boxes: Boxes3D, num_classes: int) -> Tensor:
    """Spatial condition of each box: torch ``Boxes3D`` [B, N] -> [B, N, COND_DIM + num_classes]
    (centre / 50 m in x, y, / 5 m in z; size / 5 m; cos, sin of yaw; one-hot class)."""
    packed = boxes.as_array()  # (x, y, z_centre, l, w, h, yaw) per box: this kernel's own layout
    scale = packed.new_tensor([50.0, 50.0, 5.0, 5.0, 5.0, 5.0])
    geo = torch.cat([packed[..., :6] / scale, torch.cos(packed[..., 6:7]), torch.sin(packed[..., 6:7])], -1)
    one_hot = F.one_hot(boxes.classes.clamp(0, num_classes - 1), num_classes).to(packed.dtype)
    return torch.cat([geo, one_hot], -1)


def sample_latents(batch: int, num_boxes: int, z_dim: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Standard-normal latents: z_obj [B, N, z_dim], z_bg [B, z_dim]."""
    z_obj = torch.randn(batch, num_boxes, z_dim, generator=generator, device=device)
    z_bg = torch.randn(batch, z_dim, generator=generator, device=device)
    return z_obj, z_bg


class Scene3DGenerator(nn.Module):
    """Layout + latents -> image, object opacity and depth. CPU and GPU, pure PyTorch."""

    def __init__(self, cfg: Scene3DModelConfig):
        super().__init__()
        self.cfg = cfg
        self.object_mapping = MappingNetwork(cfg.z_dim + COND_DIM + cfg.num_classes, cfg.w_dim)
        self.background_mapping = MappingNetwork(cfg.z_dim, cfg.w_dim)
        if cfg.object_field == "mlp":
            self.object_field = OBJECT_FIELDS["mlp"](cfg.w_dim, cfg.feature_dim, cfg.object_hidden, cfg.object_layers,
                                                     cfg.object_pe_freqs, cfg.object_density_bias)
        else:
            self.object_field = OBJECT_FIELDS["triplane"](cfg.w_dim, cfg.feature_dim, cfg.object_hidden,
                                                          plane_size=cfg.triplane_size,
                                                          density_bias=cfg.object_density_bias)
        self.background_field = BackgroundField(cfg.w_dim, cfg.feature_dim, cfg.bev_extent_m, cfg.bev_plane_size,
                                                cfg.bev_plane_channels, cfg.background_hidden, cfg.background_layers)
        self.upsampler = Upsampler(cfg.feature_dim, cfg.upsampler_channels, cfg.image_size // cfg.render_size)

    def forward(self, layout: LayoutBatch, z_obj: Tensor, z_bg: Tensor,
                generator: torch.Generator | None = None) -> GeneratorOutput:
        """Render a batch of layouts.

        Args:
            layout: a ``LayoutBatch`` (``layout.stack_layouts`` / ``Scene3DData.layout_batch``): boxes [B, N],
                K [B,3,3] (for image_size x image_size), T_cam_from_ego [B,4,4].
            z_obj: [B, N, z_dim] per-object latents; z_bg: [B, z_dim] background latent.
            generator: sample jitter (training); None renders deterministically at bin midpoints.
        Returns:
            GeneratorOutput. Cost O(B r^2 (S_b + k S_o) hidden^2) for the fields plus O(B H^2 C^2) upsampling.
        """
        cfg = self.cfg
        boxes = layout.boxes.to(dtype=torch.float32)
        B, N = *boxes.batch_shape, len(boxes)
        h = cfg.render_size
        origins, dirs = camera_rays(layout.K, layout.T_cam_from_ego, cfg.image_size, h)
        w_obj = self.object_mapping(torch.cat([z_obj, box_condition(boxes, cfg.num_classes)], -1))
        w_bg = self.background_mapping(z_bg)  # [B, d]

        obj = sample_objects(origins, dirs, boxes, cfg.object_samples, cfg.objects_per_ray,
                             generator=generator)
        S_o = cfg.object_samples
        g_obj = (obj.batch * N + obj.box).repeat_interleave(S_o)
        o_sigma, o_feat = self.object_field(obj.canonical.reshape(-1, 3), w_obj.reshape(B * N, -1), g_obj)

        bg_t, bg_delta, pts = sample_background(origins, dirs, cfg.background_samples, cfg.near_m, cfg.far_m,
                                                generator)
        R, S_b = dirs.shape[1], cfg.background_samples
        b_sigma, b_feat = self.background_field(pts.reshape(B, R * S_b, 3), w_bg)
        sky = self.background_field.sky_color(dirs, w_bg)

        res = composite(bg_t, bg_delta, b_sigma.reshape(B, R, S_b), b_feat.reshape(B, R, S_b, -1),
                        sky.reshape(B, R, -1), obj, o_sigma.reshape(-1, S_o), o_feat.reshape(-1, S_o, cfg.feature_dim),
                        N, min(cfg.objects_per_ray, N), cfg.far_m)
        features = res.features.reshape(B, h, h, -1).permute(0, 3, 1, 2).contiguous()
        rgb, rgb_low = self.upsampler(features)
        return GeneratorOutput(rgb, rgb_low, features, res.depth.reshape(B, h, h), res.object_alpha.reshape(B, h, h),
                               res.instance_alpha.reshape(B, N, h, h))
