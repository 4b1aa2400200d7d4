"""Discriminators (scene and object) and batched object-crop sampling.

Letters: b batch, n box, c channel, h/w pixels, q crop (flattened valid (b, n) pairs).

Crops are sampled with one ``grid_sample`` call per batch (RoI-align without torchvision): every
image gets a grid of N crop windows stacked along the grid's height, so no Python loop over
objects and no copy of the image per crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResNetDiscriminator", "crop_objects", "square_windows"]


def square_windows(boxes_2d: Tensor, expand: float = 1.2, min_size: float = 4.0) -> Tensor:
    """Square windows around 2D boxes: [..., 4] (x0, y0, x1, y1) -> [..., 4] with side
    ``max(w, h) * expand`` (at least ``min_size`` pixels), centred on the box."""
    c = 0.5 * (boxes_2d[..., :2] + boxes_2d[..., 2:])
    side = ((boxes_2d[..., 2:] - boxes_2d[..., :2]).amax(-1, keepdim=True) * expand).clamp_min(min_size)
    return torch.cat([c - side / 2, c + side / 2], -1)


def crop_objects(images: Tensor, windows: Tensor, valid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Bilinear crops of ``windows`` resampled to ``size`` x ``size`` (zero padding outside the image).

    Args:
        images: [B, C, H, W]; windows: [B, N, 4] (x0, y0, x1, y1) in pixels (continuous coordinates,
            pixel (i, j) covers [j, j+1) x [i, i+1)); valid: [B, N] bool.
        size: crop side s.
    Returns:
        crops [Q, C, s, s] for the Q valid windows (row-major over (b, n)), and their (b, n) indices
        as an int64 [Q, 2] tensor. Differentiable w.r.t. ``images``. Cost O(B N s^2 C).
    """
    B, C, H, W = images.shape
    N = windows.shape[1]
    q = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size  # [s] in (0, 1)
    x = windows[..., 0:1] + (windows[..., 2:3] - windows[..., 0:1]) * q  # [B, N, s]
    y = windows[..., 1:2] + (windows[..., 3:4] - windows[..., 1:2]) * q
    gx, gy = 2 * x / W - 1, 2 * y / H - 1  # align_corners=False normalisation
    grid = torch.stack([gx[:, :, None, :].expand(-1, -1, size, -1),
                        gy[:, :, :, None].expand(-1, -1, -1, size)], -1)  # [B, N, s, s, 2]
    out = F.grid_sample(images, grid.reshape(B, N * size, size, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # [B, C, N s, s]
    crops = out.reshape(B, C, N, size, size).permute(0, 2, 1, 3, 4)
    idx = valid.nonzero()
    return crops[idx[:, 0], idx[:, 1]], idx


class _Block(nn.Module):
    """Residual down block: two 3x3 convs + average pooling, skip through a 1x1 conv (StyleGAN2 D)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + F.avg_pool2d(self.skip(x), 2)) / math.sqrt(2)


class ResNetDiscriminator(nn.Module):
    """Image -> realism logit, optionally class-conditioned by projection (Miyato & Koyama 2018).

    [B, 3, S, S] in [-1, 1] (S a power of two >= 8), classes [B] or None -> logits [B].
    Cost O(B S^2 C^2).
    """

    def __init__(self, size: int, channels: int = 32, max_channels: int = 256, num_classes: int = 0):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"discriminator input size must be a power of two >= 8, got {size}")
        self.size = size
        self.from_rgb = nn.Conv2d(3, channels, 1)
        blocks, c, s = [], channels, size
        while s > 4:
            c_out = min(c * 2, max_channels)
            blocks.append(_Block(c, c_out))
            c, s = c_out, s // 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c * 16, c)
        self.out = nn.Linear(c, 1)
        self.embed = nn.Embedding(num_classes, c) if num_classes else None

    def forward(self, images: Tensor, classes: Tensor | None = None) -> Tensor:
        """Realism logits.

        Args:
            images: [B, 3, H, W] in [-1, 1]; resized (bilinear) to S x S when W != S.
            classes: [B] int64 class of each image for the projection term, or None (unconditional).
        Returns:
            [B] logits (higher = more real).
        """
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = self.blocks(F.leaky_relu(self.from_rgb(images), 0.2))
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        logit = self.out(h)[:, 0]
        if self.embed is not None and classes is not None:
            logit = logit + (self.embed(classes) * h).sum(-1)
        return logit
