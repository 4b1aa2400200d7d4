"""Camera-aware geometry and attention for the views generator (BEVGen-style, Swerdlow et al. 2023).

Per-sample camera geometry (no cached calibration): for view v with intrinsics K_v and extrinsics
T_cam_from_ego[v] = [R_v | t_v], token cell (i, j) of a stride-s grid is centred at pixel
((j + 0.5) s, (i + 0.5) s) and looks along the unit ego-frame ray

    d_vij = normalize(R_v^T K_v^-1 [(j + 0.5) s, (i + 0.5) s, 1]^T),   origin c_v = -R_v^T t_v

(the math of ``bevgen.cameras.CameraRig.rays``, batched in torch over samples and views).

Attention biases (added to the q.k / sqrt(d_head) logits through ``scaled_dot_product_attention``'s
float ``attn_mask``), one learned scale per head and layer:

* cross-view self-attention between image tokens i, j (of any views):
      bias_h(i, j) = beta_h * cos(d_i, d_j) = beta_h * d_i . d_j
  symmetric, maximal (= beta_h) for identical rays, so tokens of overlapping view borders attend to
  each other whichever camera they belong to;
* image -> condition cross-attention from token i (view v) to a condition token j at ego-frame ground
  position p_j (a BEV cell centre or a box centre):
      bias_h(i, j) = gamma_h * cos(az(d_i) - az(p_j - c_v)) = gamma_h * u(d_i,xy) . u((p_j - c_v)_xy)
  with u the 2D unit vector: BEV cells lying along the azimuth of the token's ray are favoured.
  Invalid keys (padding boxes, the null condition's boxes) get the dtype's most negative value.

Letters: b batch, v view, h w token grid (``h`` is also the head index in attention), n image token
(v h w), m condition token, k head, e head dim, d feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


__all__ = ["fourier_features", "token_rays", "view_neighbours", "view_keys", "ray_cosine", "azimuth_cosine",
           "GeometricBias", "Attention", "MLP"]



def fourier_features(x: Tensor, num_freqs: int) -> Tensor:
    """[..., c] -> [..., c (2 F + 1)]: x, sin(2^f pi x), cos(2^f pi x) for f < F (NeRF encoding)."""
    freqs = (2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x[..., None] * freqs  # [..., c, F]
    return torch.cat([x, rearrange(torch.cat([xf.sin(), xf.cos()], -1), "... c f -> ... (c f)")], dim=-1)


def token_rays(K: Tensor, T_cam_from_ego: Tensor, grid_hw: tuple[int, int], stride: int, sub: int = 1
               ) -> tuple[Tensor, Tensor]:
    """Unit ego-frame rays through token-cell centres (or ``sub x sub`` evenly spaced points per cell), and
    camera centres, per sample.

    Args:
        K: [b, v, 3, 3] intrinsics in pixels of the model's image size.
        T_cam_from_ego: [b, v, 4, 4] rigid ego -> camera transforms.
        grid_hw: (h, w) token grid per view.
        stride: pixels per token cell (the tokenizer's downsample).
        sub: rays per cell side (1: the cell centre; ``stride``: one ray per pixel centre).
    Returns:
        rays [b, v, h sub, w sub, 3] unit directions (row-major over the image), centres [b, v, 3] in metres
        (ego frame). O(b v h w sub^2).
    """
    h, w = grid_hw
    K, T = K.float(), T_cam_from_ego.float()
    R = T[..., :3, :3]
    centres = -torch.einsum("bvji,bvj->bvi", R, T[..., :3, 3])  # -R^T t
    pitch = stride / sub
    jj = (torch.arange(w * sub, device=K.device, dtype=K.dtype) + 0.5) * pitch
    ii = (torch.arange(h * sub, device=K.device, dtype=K.dtype) + 0.5) * pitch
    H, W = len(ii), len(jj)
    pix = torch.stack([jj.expand(H, W), ii[:, None].expand(H, W), torch.ones(H, W, device=K.device)], -1)
    M = R.transpose(-1, -2) @ torch.linalg.inv(K)  # [b, v, 3, 3] = R_ego_from_cam K^-1
    rays = torch.einsum("bvij,hwj->bvhwi", M, pix)
    return F.normalize(rays, dim=-1), centres


def view_neighbours(T_cam_from_ego: Tensor, k: int) -> Tensor:
    """For each view, itself and the ``k`` nearest views on each side around the rig, by camera yaw.

    Args: T_cam_from_ego [b, v, 4, 4] (camera z = optical axis); k >= 1 (2 k + 1 <= v).
    Returns: [b, v, 2 k + 1] long view indices (the view itself first). O(b v log v).
    """
    b, v = T_cam_from_ego.shape[:2]
    if 2 * k + 1 > v:
        raise ValueError(f"view_neighbours={k} needs at least {2 * k + 1} views, got {v}")
    axis = T_cam_from_ego[..., 2, :3].float()  # row 2 of R_cam_from_ego = the optical axis in the ego frame
    order = torch.atan2(axis[..., 1], axis[..., 0]).argsort(-1)  # [b, v] views around the rig
    rank = order.argsort(-1)  # position of each view in that ring
    offsets = torch.tensor([0] + [s * i for i in range(1, k + 1) for s in (-1, 1)], device=order.device)
    ring = (rank[..., None] + offsets) % v  # [b, v, 2k+1] ring positions
    return torch.gather(order[:, None, :].expand(b, v, v), 2, ring)


def view_keys(neighbours: Tensor, grid_hw: tuple[int, int], span: float = 1.0) -> Tensor:
    """The keys of each view's self-attention: its own tokens, and of each neighbouring view the columns facing it.

    Adjacent cameras overlap only at their borders, so ``span`` < 1 keeps, of the view to the right (ring offset
    -i, lower yaw), its left ``span`` of columns and, of the view to the left (+i), its right ones: the part of
    the neighbour that sees the same scene. Self-attention then costs O(n h w (1 + 2 k span)) instead of
    O(n h w (2 k + 1)).

    Args:
        neighbours: [b, v, 2 k + 1] from :func:`view_neighbours` (the view itself, then offsets -1, +1, -2, ...).
        grid_hw: (h, w) token grid per view (tokens of a view in row-major order).
        span: fraction of each neighbouring view's columns, in (0, 1] (at least one column).
    Returns:
        [b, v, L] long indices into the n = v h w tokens, L = h w + 2 k h round(span w).
    """
    h, w = grid_hw
    cols = max(1, min(w, round(span * w)))
    dev = neighbours.device
    rows = torch.arange(h, device=dev)[:, None] * w

    def cells(c: Tensor) -> Tensor:
        return (rows + c[None]).reshape(-1)

    own, left, right = (cells(torch.arange(a, z, device=dev)) for a, z in ((0, w), (0, cols), (w - cols, w)))
    parts = [neighbours[..., :1] * (h * w) + own]
    for slot in range(1, neighbours.shape[-1]):  # odd slots: the view to the right, whose left columns face this one
        parts.append(neighbours[..., slot:slot + 1] * (h * w) + (left if slot % 2 else right))
    return torch.cat(parts, -1)


def ray_cosine(rays: Tensor) -> Tensor:
    """Cosine between every pair of token rays: [b, n, 3] unit -> [b, n, n], symmetric. O(b n^2)."""
    return rays @ rays.transpose(-1, -2)


def azimuth_cosine(rays: Tensor, centres: Tensor, key_xy: Tensor) -> Tensor:
    """cos(az(d_i) - az(p_j - c_v)) between token rays and ground positions of condition tokens.

    Args:
        rays: [b, v, h, w, 3] unit token rays (ego frame).
        centres: [b, v, 3] camera centres.
        key_xy: [b, m, 2] ego-frame ground positions of the condition tokens (metres).
    Returns:
        [b, n, m] with n = v h w, in [-1, 1] (0 where a ray is vertical). O(b n m).
    """
    ray_dir = F.normalize(rays[..., :2], dim=-1, eps=1e-6)  # [b, v, h, w, 2]
    key_dir = F.normalize(key_xy[:, None] - centres[:, :, None, :2], dim=-1, eps=1e-6)  # [b, v, m, 2]
    cos = torch.einsum("bvhwc,bvmc->bvhwm", ray_dir, key_dir)
    return rearrange(cos, "b v h w m -> b (v h w) m")


class GeometricBias(nn.Module):
    """Per-head learned scale of a geometric cosine: [b, n, m] -> [b, k, n, m] (+ key mask)."""

    def __init__(self, heads: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((heads,), float(init)))

    def forward(self, cos: Tensor, key_valid: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Args: cos [b, n, m]; key_valid [b, m] bool or None; dtype of the attention logits.
        Returns: [b, k, n, m] additive bias in ``dtype``; invalid keys get finfo(dtype).min."""
        bias = (self.scale[None, :, None, None] * cos[:, None]).to(dtype)
        if key_valid is not None:
            bias = bias.masked_fill(~key_valid[:, None, None, :], torch.finfo(dtype).min)
        return bias

    def ray_features(self, rays: Tensor, head_dim: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The bias of :meth:`forward` on ``cos = ray_cosine(rays)`` in dot-product form, for self-attention.

        scale_k (r_i . r_j) = (scale_k sqrt(e) r_i) . r_j / sqrt(e): appended to the queries and keys of
        :class:`Attention` (``extra``), it adds exactly this bias without an [n, n] tensor, so attention runs
        unmasked (O(n) memory for the bias instead of O(k n^2), and no n^2 bias add per call).

        Args: rays [b, n, 3] unit token rays; head_dim e of the attention heads; dtype of the logits.
        Returns: (query part [b, k, n, 3], key part [b, 1, n, 3]).
        """
        q = (self.scale[None, :, None, None] * head_dim ** 0.5) * rays[:, None]
        return q.to(dtype), rays[:, None].to(dtype)


class Attention(nn.Module):
    """Multi-head (self or cross) attention through ``F.scaled_dot_product_attention`` with a float
    additive mask. O(b k n m e) time; the bias is [b, k, n, m]."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: Tensor, ctx: Tensor | None = None, bias: Tensor | None = None,
                extra: tuple[Tensor, Tensor] | None = None, keys: Tensor | None = None) -> Tensor:
        """Args: x [b, n, d] queries; ctx [b, m, d] keys/values (None: x); bias [b, k, n, m] or None; extra:
        (query part [b, k, n, f], key part [b, 1 or k, m, f]) appended to each head's queries and keys, adding
        their dot product / sqrt(e) to the logits (:meth:`GeometricBias.ray_features`); keys: [b, g, L] long,
        self-attention in g equal blocks of the sequence (views), the queries of block i attending to the tokens
        keys[:, i] only (:func:`view_keys`; no bias then).
        Returns: [b, n, d]."""
        ctx = x if ctx is None else ctx
        q = rearrange(self.q(x), "b n (k e) -> b k n e", k=self.heads)
        k, v = rearrange(self.kv(ctx), "b m (two k e) -> two b k m e", two=2, k=self.heads)
        e = q.shape[-1]
        if bias is not None:
            bias = bias.to(q.dtype)
        if extra is not None:  # one head width for q, k and v (the fused CPU kernel needs it), a multiple of 8
            qe, ke = extra
            pad = -(e + qe.shape[-1]) % 8
            q = F.pad(torch.cat([q, qe.to(q.dtype)], -1), (0, pad))
            k = F.pad(torch.cat([k, ke.to(k.dtype).expand(*k.shape[:2], -1, -1)], -1), (0, pad))
            v = F.pad(v, (0, q.shape[-1] - e))
        drop = self.dropout if self.training else 0.0
        if keys is not None:
            g = keys.shape[1]
            # 4-D [b, (heads views), tokens, e] operands: the fused CPU kernel is about 4x slower on 5-D ones
            q = rearrange(q, "b k (g n) e -> b (k g) n e", g=g)
            rows = torch.arange(keys.shape[0], device=keys.device)[:, None, None]
            k, v = (rearrange(t[rows, :, keys], "b g j k e -> b (k g) j e").contiguous() for t in (k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=e ** -0.5)[..., :e]
            return self.out(rearrange(y, "b (k g) n e -> b (g n) (k e)", g=g))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=e ** -0.5)[..., :e]
        return self.out(rearrange(y, "b k n e -> b n (k e)"))


class MLP(nn.Sequential):
    """Linear-GELU-Linear (with dropout): [..., d] -> [..., d]."""

    def __init__(self, d: int, ratio: float, dropout: float = 0.0):
        hidden = int(d * ratio)
        super().__init__(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d),
                         nn.Dropout(dropout))
