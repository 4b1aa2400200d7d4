"""Ray generation, ray-box intersection (slab method) and sample placement for the scene generator.

Letters: b batch, r ray (pixel of the low-resolution render), n box, k box slot per ray (the nearest
``objects_per_ray`` hit boxes), s sample along a ray (segment), m flattened (ray, slot) hit.

Distances ``t`` are Euclidean along unit ego-frame ray directions; a point is ``o + t d``.

Costs: rays O(B R); intersection O(B R N) (one broadcast, no loops); object samples O(M S_o) with M
the number of (ray, box) hits kept (at most B R k), background samples O(B R S_b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sim_bridge.boxes import Boxes3D

__all__ = ["camera_rays", "ray_box_intersect", "ObjectSamples", "sample_objects", "sample_background",
           "box_rotation"]


def camera_rays(K: Tensor, T_cam_from_ego: Tensor, image_size: int, render_size: int) -> tuple[Tensor, Tensor]:
    """Unit rays through the pixel centres of a ``render_size``^2 grid covering the ``image_size``^2 image.

    Args:
        K: [B, 3, 3] intrinsics for the image_size x image_size image.
        T_cam_from_ego: [B, 4, 4] ego -> OpenCV camera.
        image_size: side of the image K refers to; render_size: side of the ray grid.
    Returns:
        origins [B, 3] (ego frame, m) and dirs [B, R, 3] unit ego-frame directions, R = render_size^2,
        row-major (ray index = row * render_size + col).
    """
    s = image_size / render_size
    ij = (torch.arange(render_size, device=K.device, dtype=torch.float32) + 0.5) * s
    v, u = torch.meshgrid(ij, ij, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # [R, 3]
    R_ce = T_cam_from_ego[:, :3, :3].float()
    M = R_ce.transpose(1, 2) @ torch.linalg.inv(K.float())  # [B, 3, 3] pixel -> ego direction
    dirs = torch.einsum("bij,rj->bri", M, pix)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = -torch.einsum("bji,bj->bi", R_ce, T_cam_from_ego[:, :3, 3].float())
    return origins, dirs


def box_rotation(yaw: Tensor) -> Tensor:
    """[...] yaw -> [..., 3, 3] rotation box-local -> ego (about +z)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    z, o = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*yaw.shape, 3, 3)


def ray_box_intersect(origins: Tensor, dirs: Tensor, boxes: Boxes3D, near: float = 0.0
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Slab-method intersection of every ray with every yawed box.

    In box-local coordinates (x along the box heading) the box is the slab intersection
    ``|p_a| <= size_a / 2``; the ray enters at the largest entry and leaves at the smallest exit of
    the three slabs. An axis-parallel ray (|d_a| < 1e-9) is treated as having a tiny d_a with its
    sign, which gives +-inf slab times (inside the slab: no constraint; outside: a miss).

    Args:
        origins: [B, 3] ray origins (ego frame); dirs: [B, R, 3] unit directions.
        boxes: torch ``Boxes3D`` [B, N] (ego frame; ``valid`` masks the hits).
        near: entry distances are clamped to >= near (camera inside a box).
    Returns:
        t_near [B, R, N], t_far [B, R, N] (metres along the ray) and hit [B, R, N] bool
        (valid box, t_far > max(t_near, near)).
    """
    Rt = box_rotation(boxes.yaw).transpose(-1, -2)  # [B, N, 3, 3] ego -> local
    o_loc = torch.einsum("bnij,bnj->bni", Rt, origins[:, None, :] - boxes.center)  # [B, N, 3]
    d_loc = torch.einsum("bnij,brj->brni", Rt, dirs)  # [B, R, N, 3]
    eps = 1e-9
    d_safe = torch.where(d_loc.abs() < eps, torch.where(d_loc < 0, -eps, eps), d_loc)
    half = 0.5 * boxes.size[:, None]  # [B, 1, N, 3]
    t1 = (-half - o_loc[:, None]) / d_safe
    t2 = (half - o_loc[:, None]) / d_safe
    t_near = torch.minimum(t1, t2).amax(-1).clamp_min(near)
    t_far = torch.maximum(t1, t2).amin(-1)
    hit = boxes.valid[:, None, :] & (t_far > t_near)
    return t_near, t_far, hit


def _stratified(n_rows: int, S: int, device, generator: torch.Generator | None) -> Tensor:
    """[n_rows, S] positions in (0, 1): bin midpoints (generator None) or uniform jitter within bins."""
    base = torch.arange(S, device=device, dtype=torch.float32)
    u = torch.full((n_rows, S), 0.5, device=device) if generator is None else \
        torch.rand((n_rows, S), device=device, generator=generator)
    return (base + u) / S


@dataclass(frozen=True)
class ObjectSamples:
    """Samples inside hit boxes, only for the kept (ray, slot) hits.

    Attributes:
        batch, ray, box: [M] int64 indices of each hit (box indexes the N boxes of that batch item).
        slot: [M] int64 slot k < objects_per_ray of the hit on its ray.
        t: [M, S] distances along the ray; delta: [M, S] segment lengths (t_far - t_near) / S.
        canonical: [M, S, 3] positions in box coordinates scaled to [-1, 1]^3 (x forward, y left, z up).
    """

    batch: Tensor
    ray: Tensor
    box: Tensor
    slot: Tensor
    t: Tensor
    delta: Tensor
    canonical: Tensor


def sample_objects(origins: Tensor, dirs: Tensor, boxes: Boxes3D, samples: int,
                   objects_per_ray: int, near: float = 0.05, generator: torch.Generator | None = None
                   ) -> ObjectSamples:
    """Stratified samples between each ray's entry and exit of its nearest ``objects_per_ray`` hit boxes.

    Args:
        origins [B, 3], dirs [B, R, 3], boxes (torch ``Boxes3D`` [B, N]): see :func:`ray_box_intersect`.
        samples: S samples per hit; objects_per_ray: k, boxes kept per ray (nearest entry first).
        generator: jitter within bins (training) or None for bin midpoints (deterministic renders).
    Returns:
        ObjectSamples with M <= B R k hits.
    """
    t_near, t_far, hit = ray_box_intersect(origins, dirs, boxes, near)
    k = min(objects_per_ray, len(boxes))
    key = torch.where(hit, t_near, torch.full_like(t_near, float("inf")))
    order = key.argsort(dim=-1)[..., :k]  # [B, R, k] nearest hits first
    kept = torch.gather(hit, -1, order)
    b, r, slot = kept.nonzero(as_tuple=True)
    n = order[b, r, slot]
    tn, tf = t_near[b, r, n], t_far[b, r, n]  # [M]
    u = _stratified(len(b), samples, dirs.device, generator)
    t = tn[:, None] + (tf - tn)[:, None] * u  # [M, S]
    delta = ((tf - tn) / samples)[:, None].expand(-1, samples)
    pts = origins[b][:, None, :] + t[..., None] * dirs[b, r][:, None, :]  # [M, S, 3] ego
    Rt = box_rotation(boxes.yaw[b, n]).transpose(-1, -2)  # [M, 3, 3]
    local = torch.einsum("mij,msj->msi", Rt, pts - boxes.center[b, n][:, None, :])
    canonical = (local / (0.5 * boxes.size[b, n][:, None, :])).clamp(-1.0, 1.0)
    return ObjectSamples(b, r, n, slot, t, delta, canonical)


def sample_background(origins: Tensor, dirs: Tensor, samples: int, near: float, far: float,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Samples between ``near`` and ``far``, stratified in inverse depth (dense near the camera, where a
    street's ground and nearby facades fill most pixels).

    Args:
        origins: [B, 3]; dirs: [B, R, 3]; samples: S_b; near, far: metres.
    Returns:
        t [B, R, S_b], delta [B, R, S_b] (distance to the next sample, the last one to ``far``),
        points [B, R, S_b, 3] ego frame.
    """
    B, R, _ = dirs.shape
    u = _stratified(B * R, samples, dirs.device, generator).reshape(B, R, samples)
    t = 1.0 / (1.0 / near * (1.0 - u) + 1.0 / far * u)
    nxt = torch.cat([t[..., 1:], torch.full_like(t[..., :1], far)], -1)
    delta = (nxt - t).clamp_min(1e-4)
    points = origins[:, None, None, :] + t[..., None] * dirs[:, :, None, :]
    return t, delta, points
