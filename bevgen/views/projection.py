"""The BEV layout seen through each camera: an image-aligned condition computed from geometry alone.

The rig and the layout are known exactly, so instead of letting attention discover where a box lands in a
view, every image token gets what its own pixels see (``layout_projection``):

* each token cell is sampled at ``sub x sub`` pixel rays (``attention.token_rays`` with ``sub``; ``sub =
  stride`` is one ray per pixel), ``d = normalize(R^T K^-1 [u, v, 1])`` from the camera centre ``c = -R^T t``;
* **boxes:** the nearest intersection of the ray with every layout box (slab test in the box's frame,
  yawed about z), run only on the (ray, box) pairs whose bounding-sphere test passes: O(b v P m) cheap tests
  for P rays per view and m boxes, plus the full test on the few pairs that pass;
* **ground:** rays pointing down meet z = 0 at ``p = c - (c_z / d_z) d``; the BEV raster is sampled there
  (``grid_sample``, nearest), unless a box is hit first (occlusion);
* per ray: raster channels at the ground point (C), box class one-hot (num_classes), box-hit flag, hit
  normal in the box frame (|n_x| front/back face, |n_y| side, |n_z| top), the box's heading relative to
  the ray's azimuth (cos, sin), log-depth of the first hit (box or ground, / log 100 m), sky flag;
* per token: the mean of its rays' features, so a token half covered by a car reads 0.5 on the
  vehicle flag.

``projection_channels`` counts the feature channels; :func:`box_coverage` reads the fraction of each token's
rays that hit a box (the object loss weight). Letters: b batch, v view, h w token grid, s sub-pixel
sample, m box, c feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bevgen.views.attention import token_rays
from bevgen.views.config import projection_channels
from sim_bridge.boxes import Boxes3D
from sim_bridge.geometry import vectors_to_frame

__all__ = ["ray_box_hits", "layout_projection", "pixel_layout", "batch_boxes", "projection_channels",
           "box_coverage", "layout_edges", "MAX_DEPTH_M"]

MAX_DEPTH_M = 100.0
"""Depths are encoded as log(1 + t) / log(1 + MAX_DEPTH_M) (clipped to 1)."""
_EPS = 1e-6


def batch_boxes(batch: dict[str, Tensor]) -> Boxes3D:
    """The boxes of a collated ``FrameDataset`` batch (frame-file keys ``boxes``, ``classes``, ``box_valid``)
    as a torch ``Boxes3D`` [b, m]."""
    return Boxes3D.from_array(batch["boxes"], batch["classes"], batch["box_valid"].bool())


def _slab(o: Tensor, rays: Tensor, yaw: Tensor, half: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against yawed boxes, elementwise over matching leading shapes.

    o: [..., 3] ray origin in the box frame; rays: [..., 3] direction (ego frame); yaw: [...] the box yaw;
    half: [..., 3] half size. Returns hit [...], entry distance [...] (clamped at 0), entry axis [...].
    """
    d = torch.cat([vectors_to_frame(rays[..., :2], yaw), rays[..., 2:]], -1)  # direction in the box frame
    inv = 1.0 / torch.where(d.abs() < _EPS, torch.full_like(d, _EPS), d)
    t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near, axis = torch.minimum(t1, t2).max(-1)  # entry distance and the slab it enters through
    t_far = torch.maximum(t1, t2).min(-1).values
    return (t_near <= t_far) & (t_far > 0), t_near.clamp(min=0), axis


def ray_box_hits(origins: Tensor, rays: Tensor, boxes: Boxes3D) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit of every ray with any valid box (slab test in each box's yawed frame).

    Args:
        origins: [b, v, 3] ray origins (camera centres). rays: [b, v, p, 3] directions (ego frame).
        boxes: torch ``Boxes3D`` [b, m].
    Returns:
        t [b, v, p] distance to the nearest hit (inf where none; in units of the ray's length), index [b, v, p]
        of that box (0 where none; the lowest index where two boxes tie), normal [b, v, p, 3] |unit normal| of
        the face hit, in the box frame (0 where none).

    Cost: a ray can only hit a box whose bounding sphere it passes through, and a box fills a small part of
    each view, so every (ray, box) pair is first culled by that sphere test (one batched product, O(b v p m))
    and the slab test runs only on the k pairs that survive: O(b v p m) cheap + O(k) full. The result is the
    same as slab-testing every pair (the sphere holds the box; the slab arithmetic per pair is unchanged).
    Padding boxes are never tested.
    """
    b, v, p, _ = rays.shape
    center, half = boxes.center.float(), 0.5 * boxes.size.float()  # [b, m, 3]
    radius = half.norm(dim=-1) * (1 + 1e-4) + 1e-4  # [b, m]: the bounding sphere, a hair larger
    w = center[:, None] - origins[:, :, None]  # [b, v, m, 3] origin -> box centre
    unit = F.normalize(rays.float(), dim=-1)
    along = unit @ w.transpose(-1, -2)  # [b, v, p, m] distance along the ray to the point nearest the centre
    r, r2 = radius[:, None, None], (w.square().sum(-1) - radius[:, None].square())[:, :, None]  # [b,1,1,m], [b,v,1,m]
    near = (along >= -r) & (along.square() >= r2) & boxes.valid[:, None, None]  # the ray passes through the sphere
    bi, vi, pi, mi = near.nonzero(as_tuple=True)  # k candidate pairs
    yaw = boxes.yaw.float()[bi, mi]
    rel = -w[bi, vi, mi]  # box centre -> origin, ego axes; world -> box frame: rotate by -yaw about z
    o = torch.cat([vectors_to_frame(rel[:, :2], yaw), rel[:, 2:]], -1)
    hit, t_pair, axis = _slab(o, rays.float()[bi, vi, pi], yaw, half[bi, mi])
    t_pair = torch.where(hit, t_pair, torch.full_like(t_pair, math.inf))
    ray = (bi * v + vi) * p + pi  # flat ray index of each pair
    t_best = torch.full((b * v * p,), math.inf, device=rays.device).scatter_reduce(0, ray, t_pair, "amin")
    first = hit & (t_pair == t_best[ray])  # pairs at their ray's nearest hit
    m = boxes.valid.shape[-1]
    idx = torch.full((b * v * p,), m, device=rays.device).scatter_reduce(
        0, ray, torch.where(first, mi, torch.full_like(mi, m)), "amin")
    chosen = first & (mi == idx[ray])
    normal = torch.zeros(b * v * p, 3, device=rays.device)
    normal[ray[chosen]] = F.one_hot(axis[chosen], 3).float()
    idx = torch.where(idx == m, torch.zeros_like(idx), idx)
    return t_best.view(b, v, p), idx.view(b, v, p), normal.view(b, v, p, 3)


def layout_projection(bev: Tensor, boxes: Boxes3D, K: Tensor, T_cam_from_ego: Tensor, grid_hw: tuple[int, int],
                      stride: int, sub: int, range_m: float, num_classes: int) -> Tensor:
    """The layout seen through every camera, per token (see the module docstring for the channels).

    Args:
        bev: [b, C, S, S] raster (0/1 or 0/255; row 0 = x +range, column 0 = y +range).
        boxes: torch ``Boxes3D`` [b, m] (ego frame; ``valid`` respected).
        K: [b, v, 3, 3] at the model's image size; T_cam_from_ego: [b, v, 4, 4].
        grid_hw: (h, w) token grid; stride: pixels per token; sub: rays per token side (averaged).
        range_m: half extent of the raster (m). num_classes: box classes (one-hot width).
    Returns:
        [b, v, h, w, projection_channels(C, num_classes)] float32 in [0, 1] (heading in [-1, 1]).
        O(b v h w sub^2 (m + C)).
    """
    rays, centres = token_rays(K, T_cam_from_ego, grid_hw, stride, sub)
    b, v, H, W, _ = rays.shape
    flat = rearrange(rays, "b v H W c -> b v (H W) c")
    t_box, idx, normal = ray_box_hits(centres, flat, boxes)  # [b, v, p]
    hit = torch.isfinite(t_box)
    dz = flat[..., 2]
    cz = centres[..., 2:3]
    down = dz < -1e-3
    t_ground = torch.where(down, -cz / torch.where(down, dz, -torch.ones_like(dz)), torch.full_like(dz, math.inf))
    ground_pt = centres[:, :, None, :2] + t_ground.clamp(max=1e4)[..., None] * flat[..., :2]  # [b, v, p, 2]
    # raster sample: column = y (left = +range), row = x (top = +range); grid_sample wants (col, row) in [-1, 1]
    grid = torch.stack([-ground_pt[..., 1] / range_m, -ground_pt[..., 0] / range_m], -1)
    on_map = down & (grid.abs() <= 1).all(-1) & ~(hit & (t_box < t_ground))
    raster = (bev.float() > 0).float()
    sampled = F.grid_sample(raster, grid.reshape(b, v * H * W, 1, 2), mode="nearest", align_corners=False)
    sampled = rearrange(sampled[..., 0], "b c (v p) -> b v p c", v=v) * on_map[..., None]
    cls = boxes.classes.long().clamp(0, num_classes - 1).gather(1, idx.reshape(b, -1)).reshape(b, v, -1)
    onehot = F.one_hot(cls, num_classes).float() * hit[..., None]
    yaw = boxes.yaw.float().gather(1, idx.reshape(b, -1)).reshape(b, v, -1)
    rel = yaw - torch.atan2(flat[..., 1], flat[..., 0])
    heading = torch.stack([rel.cos(), rel.sin()], -1) * hit[..., None]
    t_first = torch.where(hit, t_box, t_ground)  # inf where the ray meets neither (sky)
    depth = torch.log1p(t_first.clamp(max=MAX_DEPTH_M)) / math.log1p(MAX_DEPTH_M)
    depth = torch.where(torch.isfinite(t_first), depth, torch.zeros_like(depth))
    sky = (~hit & ~down).float()
    feats = torch.cat([sampled, onehot, hit.float()[..., None], normal, heading, depth[..., None], sky[..., None]], -1)
    feats = F.avg_pool2d(rearrange(feats, "b v (H W) c -> (b v) c H W", H=H), sub)  # mean of each token's rays
    return rearrange(feats, "(b v) c h w -> b v h w c", b=b)


def box_coverage(features: Tensor, bev_channels: int, num_classes: int) -> Tensor:
    """Fraction of each token's rays that hit a box: [..., c] projection features -> [...]."""
    return features[..., bev_channels + num_classes]


def layout_edges(pixels: Tensor, raster: Sequence[int], bev_channels: int, num_classes: int, radius: int = 1) -> Tensor:
    """Pixels within ``radius`` of an edge of the layout as seen through them: [n, c, H, W] ``pixel_layout`` ->
    [n, 1, H, W] bool.

    An edge is where one of the ``raster`` channels at the ground point (indices among the ``bev_channels``: road,
    lines, edges, crosswalks, boxes), the box-hit flag or the sky flag changes between neighbouring pixels: road
    borders, lane markings, car outlines and the horizon, the part of a view that places the layout. O(n c H W).
    """
    if any(not 0 <= i < bev_channels for i in raster):
        raise ValueError(f"raster channels {list(raster)} must lie in [0, {bev_channels})")
    keep = [*raster, bev_channels + num_classes, pixels.shape[1] - 1]
    chans = pixels[:, keep]
    k = 2 * radius + 1
    spread = F.max_pool2d(chans, k, 1, radius) + F.max_pool2d(-chans, k, 1, radius)  # local max - local min
    return (spread > 0.5).any(1, keepdim=True)


def pixel_layout(batch: dict[str, Tensor], image_size: tuple[int, int], range_m: float, num_classes: int,
                 max_objects: int) -> Tensor:
    """The layout seen through every pixel (one ray per pixel centre), for a decoder that reads it.

    Args:
        batch: a collated ``FrameDataset`` dict at the model's image size (bev, boxes / classes / box_valid, K,
            T_cam_from_ego). image_size: (H, W). range_m, num_classes, max_objects: the generator's settings.
    Returns:
        [b v, projection_channels(C, num_classes), H, W] float32. O(b v H W (m + C)).
    """
    boxes = batch_boxes(batch)[:, :max_objects]
    feats = layout_projection(batch["bev"], boxes, batch["K"], batch["T_cam_from_ego"], tuple(image_size), 1, 1,
                              range_m, num_classes)
    return rearrange(feats, "b v H W c -> (b v) c H W")
