"""Composition of object samples over background samples along each ray.

Letters: b batch, r ray, n box, k box slot per ray, s sample, f feature.

Each ray carries S_b background samples and, for each of its k nearest hit boxes, S_o samples
between entry and exit (DisCoScene / GIRAFFE). All samples are merged, sorted by distance and
alpha-composited front to back, so that an object in front of a facade occludes it and a car behind
another car is occluded. Object samples of slots without a hit have density 0 and therefore leave
the background render bit-identical. Object opacity = accumulated weight of the object samples.
Runs in float32 with autocast off. Cost O(B R (S_b + k S_o) log(...) + ... F).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bevgen.scene3d.renderer import alpha_composite
from bevgen.scene3d.samplers import ObjectSamples

__all__ = ["CompositeResult", "composite"]

_FAR_FILL = 1e4  # distance assigned to empty object slots (sorted last, density 0)


@dataclass(frozen=True)
class CompositeResult:
    """Per-ray composition.

    Attributes:
        features: [B, R, F] rendered features (sky added behind the last sample).
        object_alpha: [B, R] accumulated weight of all object samples, in [0, 1].
        instance_alpha: [B, N, R] the same split by box.
        depth: [B, R] expected distance (m) of the opaque part; rays that see only sky get ``far``.
    """

    features: Tensor
    object_alpha: Tensor
    instance_alpha: Tensor
    depth: Tensor


def _dense(obj: ObjectSamples, values: Tensor, shape: tuple, fill: float) -> Tensor:
    """Scatter per-hit values [M, S, ...] into a dense [B, R, k, S, ...] tensor."""
    out = values.new_full(shape + tuple(values.shape[1:]), fill)
    out[obj.batch, obj.ray, obj.slot] = values
    return out


def composite(bg_t: Tensor, bg_delta: Tensor, bg_sigma: Tensor, bg_features: Tensor, sky: Tensor,
              obj: ObjectSamples, obj_sigma: Tensor, obj_features: Tensor, num_boxes: int, slots: int,
              far: float) -> CompositeResult:
    """Merge, sort and composite background and object samples.

    Args:
        bg_t, bg_delta, bg_sigma: [B, R, S_b]; bg_features: [B, R, S_b, F]; sky: [B, R, F].
        obj: the object samples (M hits); obj_sigma: [M, S_o]; obj_features: [M, S_o, F].
        num_boxes: N; slots: k (objects_per_ray used by the sampler); far: background far bound (m).
    Returns:
        CompositeResult.
    """
    with torch.autocast(device_type=bg_t.device.type, enabled=False):
        B, R, Sb = bg_t.shape
        So = obj.t.shape[1]
        shape = (B, R, slots)
        o_t = _dense(obj, obj.t.float(), shape, _FAR_FILL).reshape(B, R, slots * So)
        o_delta = _dense(obj, obj.delta.float(), shape, 0.0).reshape(B, R, slots * So)
        o_sigma = _dense(obj, obj_sigma.float(), shape, 0.0).reshape(B, R, slots * So)
        o_feat = _dense(obj, obj_features.float(), shape, 0.0).reshape(B, R, slots * So, -1)
        box_of_slot = torch.full(shape, -1, dtype=torch.long, device=bg_t.device)
        box_of_slot[obj.batch, obj.ray, obj.slot] = obj.box

        t = torch.cat([bg_t.float(), o_t], -1)
        order = t.argsort(dim=-1)
        take = lambda x: torch.gather(x, -1, order)  # noqa: E731
        sigma = take(torch.cat([bg_sigma.float(), o_sigma], -1))
        delta = take(torch.cat([bg_delta.float(), o_delta], -1))
        feats = torch.cat([bg_features.float(), o_feat], -2)
        feats = torch.gather(feats, -2, order[..., None].expand(-1, -1, -1, feats.shape[-1]))
        out, weights, t_final = alpha_composite(sigma, delta, feats)
        out = out + t_final[..., None] * sky.float()
        depth = (weights * take(t).clamp_max(far)).sum(-1) + t_final * far

        # weights back in the unsorted order, then summed per object slot and scattered to boxes
        w_unsorted = torch.empty_like(weights).scatter_(-1, order, weights)
        w_slot = w_unsorted[..., Sb:].reshape(B, R, slots, So).sum(-1)  # [B, R, k]
        object_alpha = w_slot.sum(-1)
        inst = torch.zeros(B, num_boxes + 1, R, device=bg_t.device)
        idx = torch.where(box_of_slot < 0, num_boxes, box_of_slot).permute(0, 2, 1)  # [B, k, R]
        inst.scatter_add_(1, idx, w_slot.permute(0, 2, 1))
        return CompositeResult(out, object_alpha, inst[:, :num_boxes], depth)
