"""Evaluation of the scene generator: FID / KID (``bevgen.features`` extractor policy), object-crop FID,
the box-alpha IoU layout-fidelity proxy, and render throughput.

``box_alpha_iou`` needs no feature extractor: for each image, the soft IoU between the rendered
object opacity (accumulated weight of object samples, in [0, 1]) and the union of the projected 2D
boxes, sum(min(a, m)) / sum(max(a, m)). It is 1 only when objects are opaque exactly over their
boxes; it falls when the generator lets objects turn transparent (paints them into the background)
or when opacity is diffuse. Opacity is confined to the boxes by construction, so a solid box shape
scores about 0.7-0.9 against its bounding rectangle and an untrained (nearly transparent) model ~0.1.

Letters: b batch, n box, h/w pixels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bevgen.features import fid_kid, load_extractor

# torch, cv2 and the torch modules (scene3d.model, .discriminators) are imported lazily:
# DEFINITIONS and the box maths are read without the `ml` extra.

__all__ = ["box_masks", "box_alpha_iou", "evaluate_scene3d", "render_layouts", "sample_grid", "to_uint8"]


DEFINITIONS = {
    "fid": "Frechet distance between extractor features of renders of the dataset's layouts (fresh latents) and "
           "the dataset's real images (bevgen.features extractor policy; compare only under the same extractor).",
    "kid": "Kernel Inception Distance on the same features (unbiased, ~0 for matching distributions).",
    "object_fid": "FID of 32x32 crops at the projected boxes: real crops at real boxes vs rendered crops.",
    "box_alpha_iou": "Soft IoU sum(min(a, m)) / sum(max(a, m)) between the rendered object opacity a and the "
                     "union m of the projected 2D boxes; needs no extractor; ~0.1 untrained, 0.7-0.9 for solid cars.",
    "images_per_second": "Renders per second at the model's resolution on this machine (batch 8, no gradients).",
    "resolution": "Side of the square rendered image in pixels.",
}


def box_masks(windows, valid, image_size: int, size: int):
    """Union of 2D boxes as a float mask at ``size`` x ``size`` (pixel centres tested).

    Args:
        windows: tensor [B, N, 4] (x0, y0, x1, y1) in pixels of ``image_size``; valid: [B, N] bool.
    Returns:
        tensor [B, size, size] in {0, 1}. Cost O(B N size^2).
    """
    import torch

    c = (torch.arange(size, device=windows.device, dtype=torch.float32) + 0.5) * (image_size / size)
    w = windows.float()
    inx = (c[None, None, :] >= w[..., 0:1]) & (c[None, None, :] < w[..., 2:3])  # [B, N, W]
    iny = (c[None, None, :] >= w[..., 1:2]) & (c[None, None, :] < w[..., 3:4])  # [B, N, H]
    m = (iny[..., :, None] & inx[..., None, :] & valid[..., None, None]).any(1)
    return m.float()


def box_alpha_iou(object_alpha, windows, valid, image_size: int, per_image: bool = False):
    """Soft IoU between object opacity [B, h, h] and projected boxes; mean over images with a visible box
    (NaN if none). ``per_image=True`` returns the [B] values (NaN where no box)."""
    import torch

    m = box_masks(windows, valid, image_size, object_alpha.shape[-1])
    a = object_alpha.float().clamp(0, 1)
    iou = torch.minimum(a, m).sum((1, 2)) / torch.maximum(a, m).sum((1, 2)).clamp_min(1e-8)
    iou = torch.where(m.sum((1, 2)) > 0, iou, torch.full_like(iou, float("nan")))
    if per_image:
        return iou.cpu().numpy()
    vals = iou[~torch.isnan(iou)]
    return float(vals.mean()) if len(vals) else float("nan")


def to_uint8(images) -> np.ndarray:
    """[B, 3, H, W] tensor in [-1, 1] -> uint8 [B, H, W, 3]."""
    return np.ascontiguousarray(((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
                                .permute(0, 2, 3, 1).cpu().numpy())


def sample_grid(real: np.ndarray, out: Any, lay: dict) -> np.ndarray:
    """Preview grid uint8 [3 R, B R, 3]: real frames (with their boxes) / renders of the same layouts /
    renders with the object opacity overlaid in red and the projected boxes in green."""
    import cv2
    import torch.nn.functional as F

    fake = to_uint8(out.rgb)
    R = fake.shape[1]
    alpha = F.interpolate(out.object_alpha[:, None].float(), size=(R, R), mode="nearest")[:, 0].cpu().numpy()
    over = fake.astype(np.float32)
    over[..., 0] = over[..., 0] * (1 - alpha) + 255 * alpha
    over = over.clip(0, 255).astype(np.uint8)
    real = np.ascontiguousarray(real).copy()
    win, valid = lay.windows.cpu().numpy(), lay.boxes.valid.cpu().numpy()
    for b in range(len(fake)):
        for x0, y0, x1, y1 in win[b][valid[b]]:
            for img in (real[b], over[b]):
                cv2.rectangle(img, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), (0, 255, 0), 1)
    rows = [np.concatenate(list(x), axis=1) for x in (real, fake, over)]
    return np.concatenate(rows, axis=0)


def render_layouts(generator, data, idx: np.ndarray, batch_size: int, seed: int):
    """Render layouts ``idx`` of ``data``; returns fake uint8 [M,R,R,3], per-image IoU [M], seconds."""
    import torch

    from bevgen.scene3d.model import sample_latents

    dev = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    fakes, ious, seconds = [], [], 0.0
    for s in range(0, len(idx), batch_size):
        lay = data.layout_batch(idx[s:s + batch_size], dev)
        boxes = lay.boxes  # torch Boxes3D [B, N]
        z_obj, z_bg = sample_latents(boxes.batch_shape[0], len(boxes), generator.cfg.z_dim, g)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = generator(lay, z_obj.to(dev), z_bg.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds += time.perf_counter() - t0
        fakes.append(to_uint8(out.rgb))
        ious.append(box_alpha_iou(out.object_alpha, lay.windows, boxes.valid, generator.cfg.image_size,
                                  per_image=True))
    return np.concatenate(fakes), np.concatenate(ious), seconds


def _crops_uint8(images: np.ndarray, data, idx: np.ndarray, size: int = 32) -> np.ndarray:
    """Object crops uint8 [Q, size, size, 3] of images [M, R, R, 3] at the boxes of layouts ``idx``."""
    import torch

    from bevgen.scene3d.discriminators import crop_objects, square_windows

    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    lay = data.layout_batch(idx)
    crops, _ = crop_objects(x, square_windows(lay.windows), lay.boxes.valid, size)
    return to_uint8(crops)


def evaluate_scene3d(generator, data, num_samples: int = 256, batch_size: int = 8, seed: int = 0,
                     extractor: Any = None, out_dir: str | Path | None = None) -> dict:
    """FID/KID, object-crop FID, box-alpha IoU and images/s of a generator on a dataset's layouts.

    Fakes are rendered for the dataset's own layouts and cameras (cycled up to ``num_samples``) with
    fresh latents; reals are the dataset's images. Object FID compares crops at the projected boxes
    (real crops at real boxes, fake crops at the same layouts' boxes), resized to 32x32.

    Args:
        generator: Scene3DGenerator (eval mode); data: Scene3DData.
        num_samples: renders; batch_size: renders per forward; seed: latent seed.
        extractor: ``bevgen.features`` Extractor (default ``load_extractor()``).
        out_dir: when given, ``metrics.json`` is written there.
    Returns:
        {"fid", "kid", "object_fid", "object_kid", "box_alpha_iou", "images_per_second", "resolution",
        "fid_extractor", "num_samples", "num_object_crops"}.
    """

    extractor = extractor or load_extractor()
    idx = np.arange(num_samples) % len(data)
    fakes, ious, seconds = render_layouts(generator, data, idx, batch_size, seed)
    real_idx = np.arange(min(num_samples, len(data)))
    scene = fid_kid(data.images[real_idx], fakes, extractor)
    real_crops, fake_crops = _crops_uint8(data.images[real_idx], data, real_idx), _crops_uint8(fakes, data, idx)
    if min(len(real_crops), len(fake_crops)) >= 2:
        obj = fid_kid(real_crops, fake_crops, extractor)
    else:
        obj = {"fid": float("nan"), "kid": float("nan")}
    ok = ious[~np.isnan(ious)]
    metrics = {"fid": float(scene["fid"]), "kid": float(scene["kid"]), "object_fid": float(obj["fid"]),
               "object_kid": float(obj["kid"]), "box_alpha_iou": float(ok.mean()) if len(ok) else float("nan"),
               "images_per_second": len(idx) / max(seconds, 1e-9), "resolution": int(generator.cfg.image_size),
               "fid_extractor": scene["fid_extractor"], "num_samples": int(len(idx)),
               "num_object_crops": int(len(fake_crops))}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
