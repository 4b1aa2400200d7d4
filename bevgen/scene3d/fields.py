"""Radiance fields of the compositional scene generator: per-object fields in canonical box
coordinates and a street background field (BEV feature plane + height encoding, plus sky).

Letters: b batch, n box, m point (flattened samples), g field instance (one object or one scene),
p plane cell, c plane channel, d latent / style width, f rendered feature width.

Every field maps points plus a per-instance latent ``w`` to (density [M] in 1/m, features [M, F]
in [0, 1]); features 0..2 are the low-resolution RGB that the upsampler refines. Points of many
instances are evaluated in one batch: each point carries the index ``g`` of its instance, styles
are computed once per instance and gathered per point (no loop over objects).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["positional_encoding", "ModulatedMLP", "MappingNetwork", "ObjectField", "MLPObjectField",
           "TriplaneObjectField", "BackgroundField", "OBJECT_FIELDS", "bilinear_gather", "feature_activation"]


def positional_encoding(x: Tensor, freqs: int) -> Tensor:
    """[..., D] -> [..., D (1 + 2 freqs)]: x, sin(2^k pi x), cos(2^k pi x) for k < freqs."""
    if freqs == 0:
        return x
    scales = (2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)) * math.pi
    xs = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(xs), torch.cos(xs)], -1)


def feature_activation(raw: Tensor) -> Tensor:
    """Features in about [0, 1] (EG3D's widened sigmoid keeps gradients alive at the ends)."""
    return torch.sigmoid(raw) * 1.002 - 0.001


class MappingNetwork(nn.Module):
    """MLP from a latent (plus an optional condition) to a style vector w. [G, in] -> [G, d]."""

    def __init__(self, in_dim: int, w_dim: int, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(in_dim if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ModulatedMLP(nn.Module):
    """StyleGAN2-style modulated linear layers (weight scaled per input channel by a style, then
    demodulated), styles per instance, points gathered by instance index.

    Cost per point: O(sum of in*out over layers); per instance: O(w_dim * sum(in) + sum(in*out)).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, w_dim: int):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(o, i)) for i, o in zip(dims[:-1], dims[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(o)) for o in dims[1:]])
        self.affines = nn.ModuleList([nn.Linear(w_dim, i) for i in dims[:-1]])
        for a in self.affines:  # styles start near 1 (StyleGAN2) but already depend on w
            nn.init.normal_(a.weight, std=0.5 / math.sqrt(w_dim))
            nn.init.ones_(a.bias)
        self.out_dim = hidden

    def forward(self, x: Tensor, w: Tensor, g: Tensor) -> Tensor:
        """x [M, in] points, w [G, d] styles per instance, g [M] instance of each point -> [M, hidden]."""
        for W, bias, aff in zip(self.weights, self.biases, self.affines):
            s = aff(w)  # [G, in]
            demod = torch.rsqrt((s * s) @ (W * W).t() + 1e-8)  # [G, out]
            x = F.leaky_relu(((x * s[g]) @ W.t()) * demod[g] + bias, 0.2)
        return x

    def forward_grouped(self, x: Tensor, w: Tensor) -> Tensor:
        """x [G, P, in] (P points of each instance), w [G, d] -> [G, P, hidden]; the style is folded into a
        per-instance weight [G, out, in] (one bmm per layer, no per-point gathers)."""
        for W, bias, aff in zip(self.weights, self.biases, self.affines):
            Wg = W[None] * aff(w)[:, None, :]  # [G, out, in]
            Wg = Wg * torch.rsqrt(Wg.square().sum(-1, keepdim=True) + 1e-8)
            x = F.leaky_relu(torch.baddbmm(bias, x, Wg.transpose(1, 2)), 0.2)
        return x


def bilinear_gather(planes: Tensor, g: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of points in per-instance feature planes (border clamp), batched over instances.

    Args:
        planes: [G, C, P, P] planes; uv: [M, 2] in [-1, 1] (u -> columns, v -> rows, align_corners=False);
        g: [M] instance of each point.
    Returns:
        [M, C]. Cost O(M C), memory independent of G (gather from the flattened table).
    """
    G, C, P, _ = planes.shape
    table = planes.permute(0, 2, 3, 1).reshape(G * P * P, C)
    xy = ((uv.clamp(-1, 1) + 1) * P - 1) / 2  # continuous pixel coordinates, centres at integers
    x0f, y0f = xy[:, 0].floor(), xy[:, 1].floor()
    fx, fy = xy[:, 0] - x0f, xy[:, 1] - y0f
    x0 = x0f.long().clamp(0, P - 1)
    y0 = y0f.long().clamp(0, P - 1)
    x1, y1 = (x0f.long() + 1).clamp(0, P - 1), (y0f.long() + 1).clamp(0, P - 1)
    base = g * (P * P)
    return (table[base + y0 * P + x0] * ((1 - fx) * (1 - fy))[:, None]
            + table[base + y0 * P + x1] * (fx * (1 - fy))[:, None]
            + table[base + y1 * P + x0] * ((1 - fx) * fy)[:, None]
            + table[base + y1 * P + x1] * (fx * fy)[:, None])


class PlaneDecoder(nn.Module):
    """Style -> feature planes: linear to an 8x8 grid, then (upsample x2, conv 3x3, LeakyReLU) blocks.
    [G, d] -> [G, C_out, P, P]."""

    def __init__(self, w_dim: int, channels: int, size: int, width: int = 64):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"plane size must be a power of two >= 8, got {size}")
        self.width = width
        self.fc = nn.Linear(w_dim, width * 64)
        blocks: list[nn.Module] = []
        for _ in range(int(math.log2(size // 8))):
            blocks += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, w: Tensor) -> Tensor:
        """Decode styles into planes.

        Args:
            w: [G, d] one style per plane set.
        Returns:
            [G, C_out, P, P] feature planes (P = ``size``).
        """
        x = F.leaky_relu(self.fc(w), 0.2).reshape(-1, self.width, 8, 8)
        return self.out(self.blocks(x))


class ObjectField(nn.Module, ABC):
    """A field over canonical box coordinates [-1, 1]^3 shared by all objects, styled per object."""

    @abstractmethod
    def forward(self, canonical: Tensor, w: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """canonical [M, 3], w [G, d] per-object styles, g [M] object of each point ->
        (density [M] >= 0 in 1/m, features [M, F])."""


class MLPObjectField(ObjectField):
    """Modulated MLP on the positional encoding of canonical coordinates (GIRAFFE / DisCoScene tiny)."""

    def __init__(self, w_dim: int, feature_dim: int, hidden: int = 64, layers: int = 3, pe_freqs: int = 4,
                 density_bias: float = -2.0):
        super().__init__()
        self.pe_freqs = pe_freqs
        self.mlp = ModulatedMLP(3 * (1 + 2 * pe_freqs), hidden, layers, w_dim)
        self.density = nn.Linear(hidden, 1)
        self.features = nn.Linear(hidden, feature_dim)
        nn.init.normal_(self.density.weight, std=0.01)
        nn.init.constant_(self.density.bias, density_bias)  # objects start nearly transparent

    def forward(self, canonical: Tensor, w: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Density and features at points in canonical box coordinates.

        Args:
            canonical: [M, 3] points in [-1, 1]^3 of their object's box.
            w: [G, d] per-object styles.
            g: [M] int64 object index (into ``w``) of each point.
        Returns:
            (density [M] >= 0 in 1/m, features [M, F]).
        """
        h = self.mlp(positional_encoding(canonical, self.pe_freqs), w, g)
        return F.softplus(self.density(h)[:, 0]), feature_activation(self.features(h))


class TriplaneObjectField(ObjectField):
    """EG3D-style tri-plane per object (xy, xz, yz planes decoded from the object's style), summed
    features decoded by a small MLP. Cost per point O(3 C + hidden^2); per object O(planes)."""

    def __init__(self, w_dim: int, feature_dim: int, hidden: int = 64, plane_channels: int = 16,
                 plane_size: int = 32, density_bias: float = -2.0):
        super().__init__()
        self.c, self.plane_size = plane_channels, plane_size
        self.planes = PlaneDecoder(w_dim, 3 * plane_channels, plane_size)
        self.mlp = nn.Sequential(nn.Linear(plane_channels, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                                 nn.Softplus())
        self.density = nn.Linear(hidden, 1)
        self.features = nn.Linear(hidden, feature_dim)
        nn.init.constant_(self.density.bias, density_bias)

    def forward(self, canonical: Tensor, w: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Density and features at points in canonical box coordinates, from per-object tri-planes.

        Args:
            canonical: [M, 3] points in [-1, 1]^3 of their object's box.
            w: [G, d] per-object styles (each decoded into 3 planes [C, P, P]).
            g: [M] int64 object index (into ``w``) of each point.
        Returns:
            (density [M] >= 0 in 1/m, features [M, F]).
        """
        G = w.shape[0]
        planes = self.planes(w).reshape(G * 3, self.c, self.plane_size, self.plane_size)
        x, y, z = canonical.unbind(-1)
        feat = sum(bilinear_gather(planes, g * 3 + i, uv) for i, uv in
                   enumerate((torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([y, z], -1))))
        h = self.mlp(feat)
        return F.softplus(self.density(h)[:, 0]), feature_activation(self.features(h))


OBJECT_FIELDS: dict[str, type[ObjectField]] = {"mlp": MLPObjectField, "triplane": TriplaneObjectField}


class BackgroundField(nn.Module):
    """Street background: a BEV feature plane (decoded from the scene style) looked up at (x, y),
    concatenated with a positional encoding of the height z, through a modulated MLP; plus a sky
    colour/feature per ray direction. A learnable linear height prior ``softplus(raw - a z + c)``
    starts the density as a ground plane at z ~ 0 (the ego frame's origin is on the ground).

    Cost per point O(C + hidden^2); per scene O(plane decoder).
    """

    def __init__(self, w_dim: int, feature_dim: int, extent_m: float = 64.0, plane_size: int = 32,
                 plane_channels: int = 16, hidden: int = 64, layers: int = 2, height_freqs: int = 4,
                 height_scale_m: float = 8.0):
        super().__init__()
        self.extent, self.height_scale, self.height_freqs = extent_m, height_scale_m, height_freqs
        self.plane = PlaneDecoder(w_dim, plane_channels, plane_size)
        self.mlp = ModulatedMLP(plane_channels + 1 + 2 * height_freqs, hidden, layers, w_dim)
        self.density = nn.Linear(hidden, 1)
        self.features = nn.Linear(hidden, feature_dim)
        nn.init.normal_(self.density.weight, std=0.01)
        nn.init.zeros_(self.density.bias)
        self.ground_slope = nn.Parameter(torch.tensor(4.0))  # 1/m: how fast density falls with height
        self.ground_offset = nn.Parameter(torch.tensor(-2.0))
        self.sky = ModulatedMLP(3 * (1 + 2 * 2), hidden // 2, 2, w_dim)
        self.sky_features = nn.Linear(hidden // 2, feature_dim)

    def forward(self, points: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """points [B, P, 3] ego frame, w [B, d] scene styles -> (density [B, P], features [B, P, F])."""
        planes = self.plane(w)  # [B, C, Pp, Pp], row 0 = far front (+x), col 0 = far left (+y)
        uv = torch.stack([-points[..., 1], -points[..., 0]], -1) / self.extent
        feat = F.grid_sample(planes, uv[:, :, None, :], mode="bilinear", padding_mode="border",
                             align_corners=False)[..., 0].transpose(1, 2)  # [B, P, C]
        z = points[..., 2:3] / self.height_scale
        h = self.mlp.forward_grouped(torch.cat([feat, positional_encoding(z, self.height_freqs)], -1), w)
        raw = self.density(h)[..., 0] - self.ground_slope * points[..., 2] + self.ground_offset
        return F.softplus(raw), feature_activation(self.features(h))

    def sky_color(self, dirs: Tensor, w: Tensor) -> Tensor:
        """dirs [B, R, 3] unit ego directions, w [B, d] -> features [B, R, F] of the sky behind ``far``."""
        return feature_activation(self.sky_features(self.sky.forward_grouped(positional_encoding(dirs, 2), w)))
