"""Volume rendering (alpha compositing of sorted samples) and the 2D upsampler.

Letters: b batch, r ray, s sample, f feature, h/w pixels.

Compositing runs in float32 with autocast off (transmittance products underflow in half precision);
the upsampler may run under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["alpha_composite", "Upsampler"]


def alpha_composite(sigma: Tensor, delta: Tensor, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of samples already sorted by distance.

    alpha_i = 1 - exp(-sigma_i delta_i), T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i.
    A sample with sigma = 0 has alpha = 0 and changes neither T nor the result (exactly).

    Args:
        sigma: [..., S] density (1/m); delta: [..., S] segment lengths (m); features: [..., S, F].
    Returns:
        rendered features [..., F] = sum_i w_i f_i, weights [..., S], final transmittance [...].
        Cost O(S F) per ray.
    """
    with torch.autocast(device_type=sigma.device.type, enabled=False):
        sigma, delta, features = sigma.float(), delta.float(), features.float()
        alpha = 1.0 - torch.exp(-sigma * delta)
        trans = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
        t_excl = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], -1)
        weights = alpha * t_excl
        out = torch.einsum("...s,...sf->...f", weights, features)
        return out, weights, trans[..., -1]


class Upsampler(nn.Module):
    """Low-resolution feature image -> RGB image, ``factor`` = 2^k times larger.

    Each x2 stage: bilinear upsample, two 3x3 convs with LeakyReLU; a 1x1 ``to_rgb`` residual is added
    to the bilinearly upsampled low-resolution RGB (features 0..2) so that the coarse colours, and
    therefore object placement, come from the 3D render (EG3D's super-resolution design).

    [B, F, r, r] features in ~[0, 1] -> [B, 3, r f, r f] image in ~[-1, 1]. Cost O(B (r f)^2 C^2).
    """

    def __init__(self, feature_dim: int, channels: int = 64, factor: int = 2):
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"upsample factor must be a power of two, got {factor}")
        self.stem = nn.Conv2d(feature_dim, channels, 3, padding=1)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2))
            for _ in range(factor.bit_length() - 1))
        self.to_rgb = nn.Conv2d(channels, 3, 1)
        nn.init.normal_(self.to_rgb.weight, std=0.01)
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (rgb [B, 3, R, R], rgb_low [B, 3, r, r]), both in ~[-1, 1]."""
        rgb_low = features[:, :3] * 2 - 1
        x, rgb = F.leaky_relu(self.stem(features), 0.2), rgb_low
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
        return rgb + self.to_rgb(x), rgb_low
