"""Camera -> BEV segmentation network used to score generated camera views (road and vehicle IoU).

A generated multi-view frame is good for driving if a perception model recovers the BEV layout it
was conditioned on. This small network is trained in-project on ground-truth images; evaluation
runs it on generated images and compares with the layout (GT images give the oracle number).

Architecture (Simple-BEV style lifting, Harley et al., "Simple-BEV: What Really Matters for
Multi-Sensor BEV Perception?", ICRA 2023): a conv image encoder (stride 4 or 8) -> the centres of
an ``out_size`` x ``out_size`` BEV grid, at a few heights z, are projected through each camera's K
and T_cam_from_ego (per sample, batched) and the encoder features are bilinearly sampled there
(``grid_sample`` over all views at once); features are averaged over the views that see the point
(depth > near and inside the image) -> heights stacked as channels, plus BEV coordinates and the
visible-view count -> a small conv U-Net in BEV -> logits for road (the ``drivable_area`` channel)
and ``vehicle``. Targets are the dataset raster max-pooled to ``out_size``. Training, loading and
evaluation: :mod:`bevgen.views.bevseg_train`.

Letters: b batch, v view, c channel, z height, p BEV point, i/j matrix rows/cols.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bevgen.cameras import scale_intrinsics
from bevgen.render.dataset import FrameDataset


__all__ = ["BevSegConfig", "BevSegNet", "predict", "iou", "bev_targets", "ego_cells", "load_split", "mean_map",
           "resize_views", "project", "channel_indices", "CLASSES"]

CLASSES = ("road", "vehicle")
NEAR = 0.1  # m: points closer to the camera plane than this count as not visible


@dataclass(frozen=True)
class BevSegConfig:
    """Camera->BEV segmentation model and its training."""

    image_size: tuple[int, int] = (0, 0)
    """(H, W) the network runs at; inputs of other sizes are resized (K scaled). (0, 0): the dataset's."""
    stride: int = 4
    """Image encoder stride: 4 or 8."""
    enc_channels: int = 48
    """Image encoder width (features lifted to BEV have half of it)."""
    bev_channels: int = 64
    """BEV decoder width."""
    heights: tuple[float, ...] = (0.0, 0.75, 1.5)
    """Heights z (m, ego frame) at which BEV cell centres are projected into the cameras."""
    out_size: int = 50
    """Output BEV grid (cells per side); must divide the dataset raster size."""
    bev_range_m: float = 50.0
    """Half extent of the BEV raster in metres (set from the dataset's index.json at training)."""
    source_size: int = 200
    """Dataset raster size in pixels (set from the dataset's index.json at training)."""
    ego_clear_m: tuple[float, float] = (5.0, 2.2)
    """(length, width) box around the ego centre removed from the vehicle channel, in targets and
    predictions: layouts draw the ego's own box, which no camera sees and which would hand every
    method (including the mean-map baseline) free vehicle IoU. (0, 0) keeps it."""
    road_channel: str = "drivable_area"
    """Dataset BEV channel (index.json ``bev.channels``) used as the road target."""
    vehicle_channel: str = "vehicle"
    """Dataset BEV channel used as the vehicle target."""
    steps: int = 600
    """Total optimizer steps (warm-up over 20 steps, then cosine decay to 0 at ``steps``)."""
    batch_size: int = 4
    """Frames (each with all its views) per optimizer step."""
    lr: float = 2e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    pos_weight: tuple[float, float] = (1.0, 3.0)
    """BCE positive weights for (road, vehicle): vehicles cover few cells."""
    checkpoint_every: int = 100
    """Steps between checkpoints (and at the last step)."""
    seed: int = 0
    """Seed of the weights, the batch draws and the augmentations."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    tensorboard: bool = True
    """Write TensorBoard logs to ``out_dir/tb``."""

    def __post_init__(self):
        if self.stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {self.stride}")
        if self.source_size % self.out_size:
            raise ValueError(f"out_size {self.out_size} must divide the raster size {self.source_size}")
        if not self.heights:
            raise ValueError("heights: give at least one height")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------

def bev_points(cfg: BevSegConfig, device: Any = "cpu") -> Tensor:
    """Ego-frame centres of the output cells at every height: [z, out, out, 3] (raster convention:
    row 0 far front, column 0 far left)."""
    res = 2 * cfg.bev_range_m / cfg.out_size
    centre = cfg.bev_range_m - (torch.arange(cfg.out_size, dtype=torch.float32, device=device) + 0.5) * res
    x, y = torch.meshgrid(centre, centre, indexing="ij")  # x from rows, y from columns
    z = torch.tensor(cfg.heights, dtype=torch.float32, device=device)
    return torch.stack([x.expand(len(z), -1, -1), y.expand(len(z), -1, -1),
                        z[:, None, None].expand(-1, cfg.out_size, cfg.out_size)], -1)


def project(pts: Tensor, K: Tensor, T: Tensor, image_size: Sequence[int], border_px: float = 0.0
            ) -> tuple[Tensor, Tensor]:
    """Project ego points into every view of every sample (shared by the BEV lifting and the seam metric).

    Args:
        pts: [p, 3] ego-frame points. K: [b, v, 3, 3]. T: [b, v, 4, 4] T_cam_from_ego.
        image_size: (H, W) that K refers to.
        border_px: points within this many pixels of an image border count as not visible.
    Returns:
        grid [b, v, p, 2] in grid_sample's normalised coordinates (align_corners=False: -1/+1 are
        the outer image edges, matching the pixel-centre convention of bevgen.cameras),
        visible [b, v, p] bool (depth > NEAR and inside the image, ``border_px`` from its edges).
    """
    cam = torch.einsum("bvij,pj->bvpi", T[..., :3, :3], pts) + T[..., None, :3, 3]  # [b, v, p, 3]
    depth = cam[..., 2]
    uvw = torch.einsum("bvij,bvpj->bvpi", K, cam)
    uv = uvw[..., :2] / uvw[..., 2:3].clamp(min=NEAR)  # [b, v, p, 2] pixels
    H, W = image_size
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)
    if border_px:
        m = float(border_px)
        inside = (uv[..., 0] >= m) & (uv[..., 0] <= W - m) & (uv[..., 1] >= m) & (uv[..., 1] <= H - m)
    else:
        inside = (grid.abs() <= 1).all(-1)
    return grid, (depth > NEAR) & inside


def resize_views(images: Tensor, K: Tensor | None, size: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """THE resize of multi-view images (training, bevseg, evaluation and the demo all use it); K scaled to match.

    Area interpolation when shrinking (each output pixel is the mean of the input pixels it covers, like
    OpenCV's INTER_AREA), bilinear (antialiased along a shrinking axis) when enlarging either axis.

    Args:
        images: [b, v, c, H, W] uint8 or float. K: [b, v, 3, 3] for (H, W), or None. size: target (h, w).
    Returns:
        images [b, v, c, h, w] (same dtype; uint8 rounded), K [b, v, 3, 3] (:func:`scale_intrinsics`; None
        without K).
    """
    b, v, c, H, W = images.shape
    h, w = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return images, K
    flat = rearrange(images, "b v c H W -> (b v) c H W").float()
    if h <= H and w <= W:
        x = F.interpolate(flat, size=(h, w), mode="area")
    else:
        x = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H or w < W)
    if images.dtype == torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    return rearrange(x, "(b v) c h w -> b v c h w", b=b), None if K is None else scale_intrinsics(K, (H, W), (h, w))


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------

def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU())


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(8, c))

    def forward(self, x: Tensor) -> Tensor:
        """[b, c, h, w] -> [b, c, h, w]."""
        return F.relu(x + self.body(x))


class BevSegNet(nn.Module):
    """Images + cameras -> BEV logits. ``forward``: float images [b, v, 3, H, W] in [0, 1],
    K [b, v, 3, 3] (for H, W), T [b, v, 4, 4] -> logits [b, 2, out, out]."""

    def __init__(self, cfg: BevSegConfig):
        super().__init__()
        self.config = cfg
        c, cb = cfg.enc_channels, cfg.bev_channels
        layers = [_conv(3, c // 2, 2), _conv(c // 2, c // 2), _conv(c // 2, c, 2), _Res(c)]
        if cfg.stride == 8:
            layers += [_conv(c, c, 2), _Res(c)]
        self.encoder = nn.Sequential(*layers, nn.Conv2d(c, c // 2, 1))
        c_lift = (c // 2) * len(cfg.heights) + 3  # + (x, y) coordinates + visible-view fraction
        self.bev_in = nn.Sequential(_conv(c_lift, cb), _Res(cb))
        self.bev_down = nn.Sequential(_conv(cb, cb, 2), _Res(cb), _Res(cb))
        self.bev_up = nn.Sequential(_conv(2 * cb, cb), _Res(cb), nn.Conv2d(cb, len(CLASSES), 1))
        self.register_buffer("points", bev_points(cfg).reshape(-1, 3), persistent=False)  # [z*out*out, 3]
        keep = ~ego_cells(cfg.out_size, cfg.bev_range_m, cfg.ego_clear_m) if min(cfg.ego_clear_m) > 0 else None
        self.register_buffer("vehicle_keep", torch.ones(cfg.out_size, cfg.out_size, dtype=torch.bool)
                             if keep is None else keep, persistent=False)  # [out, out]

    def lift(self, feats: Tensor, K: Tensor, T: Tensor, image_size: Sequence[int]) -> Tensor:
        """Encoder features [b, v, c, h', w'] -> BEV [b, z*c + 3, out, out] (mean over seeing views).

        Cost O(b v z out^2 c): one grid_sample over all views and heights."""
        b, v, c = feats.shape[:3]
        n, zn = self.config.out_size, len(self.config.heights)
        grid, vis = project(self.points, K, T, image_size)  # [b, v, p, 2], [b, v, p]
        sampled = F.grid_sample(rearrange(feats, "b v c h w -> (b v) c h w"),
                                rearrange(grid, "b v p t -> (b v) 1 p t"), mode="bilinear",
                                padding_mode="zeros", align_corners=False)  # [(b v), c, 1, p]
        sampled = rearrange(sampled, "(b v) c 1 p -> b v c p", b=b) * vis[:, :, None].float()
        count = vis.float().sum(1)  # [b, p]
        mean = sampled.sum(1) / count[:, None].clamp(min=1.0)  # [b, c, p]
        bev = rearrange(mean, "b c (z x y) -> b (z c) x y", z=zn, x=n)
        frac = rearrange(count / v, "b (z x y) -> b z x y", z=zn, x=n)[:, :1]  # ground-level coverage
        xy = rearrange(self.points[: n * n, :2] / self.config.bev_range_m, "(x y) t -> t x y", x=n)
        return torch.cat([bev, xy.expand(b, -1, -1, -1), frac], 1)

    def forward(self, images: Tensor, K: Tensor, T: Tensor) -> Tensor:
        """BEV logits of a batch of multi-view frames.

        Args:
            images: float [b, v, 3, H, W] in [0, 1]. K: [b, v, 3, 3] intrinsics for (H, W).
            T: [b, v, 4, 4] T_cam_from_ego.
        Returns:
            logits [b, 2, out, out] (road, vehicle; raster convention, row 0 far front).
        """
        b, v, _, H, W = images.shape
        feats = self.encoder(rearrange(images, "b v c h w -> (b v) c h w") * 2 - 1)
        feats = rearrange(feats, "(b v) c h w -> b v c h w", b=b)
        x0 = self.bev_in(self.lift(feats, K, T, (H, W)))  # [b, cb, out, out]
        x1 = F.interpolate(self.bev_down(x0), size=x0.shape[-2:], mode="bilinear", align_corners=False)
        return self.bev_up(torch.cat([x0, x1], 1))  # [b, 2, out, out]

    @torch.inference_mode()
    def predict(self, images: Tensor, K: Tensor, T: Tensor) -> Tensor:
        """uint8 images [b, v, 3, H, W] (any H, W; resized to the model's size, K scaled), K [b, v, 3, 3]
        for (H, W), T [b, v, 4, 4] -> probabilities [b, 2, out, out] (road, vehicle), float32 on CPU."""
        dev = next(self.parameters()).device
        images, K = resize_views(torch.as_tensor(images), torch.as_tensor(K, dtype=torch.float32),
                                 self.config.image_size)
        x = images.to(dev).float() / 255.0
        probs = torch.sigmoid(self(x, K.to(dev).float(), torch.as_tensor(T).to(dev).float()))
        probs[:, 1] *= self.vehicle_keep  # the ego box is not scored (see BevSegConfig.ego_clear_m)
        return probs.cpu()


def predict(model: BevSegNet, images: Any, K: Any, T: Any) -> Tensor:
    """Functional alias of :meth:`BevSegNet.predict` -> probs [b, 2, out, out]."""
    return model.predict(images, K, T)


# ----------------------------------------------------------------------------------------------
# Targets, metrics, data
# ----------------------------------------------------------------------------------------------

def ego_cells(out_size: int, range_m: float, clear_m: Sequence[float]) -> Tensor:
    """bool [out, out]: output cells that intersect the box |x| <= L/2, |y| <= W/2 around the ego."""
    res = 2 * range_m / out_size
    hi = range_m - torch.arange(out_size, dtype=torch.float64) * res  # cell r spans (hi - res, hi]
    rows = (hi - res < clear_m[0] / 2) & (hi > -clear_m[0] / 2)
    cols = (hi - res < clear_m[1] / 2) & (hi > -clear_m[1] / 2)
    return rows[:, None] & cols[None, :]


def bev_targets(bev: Tensor, channel_index: Sequence[int], cfg: BevSegConfig, out_size: int | None = None
                ) -> Tensor:
    """Dataset rasters uint8 [b, C, S, S] -> bool targets [b, 2, out, out]: max-pool of the road and
    vehicle channels, the ego box (cfg.ego_clear_m) cleared from the vehicle channel."""
    out_size = out_size or cfg.out_size
    x = torch.as_tensor(bev)[:, list(channel_index)].float()
    t = F.max_pool2d(x, x.shape[-1] // out_size) > 0
    if min(cfg.ego_clear_m) > 0:
        t[:, 1] &= ~ego_cells(out_size, cfg.bev_range_m, cfg.ego_clear_m)
    return t


def iou(pred: Any, target: Any) -> np.ndarray:
    """Dataset-level IoU per channel: sum of intersections / sum of unions over all samples.

    Args:
        pred, target: bool [b, c, h, w] (tensor or numpy).
    Returns:
        float64 [c]; NaN for a channel whose union is empty.
    """
    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    inter = (p & t).sum(axis=(0, 2, 3)).astype(np.float64)
    union = (p | t).sum(axis=(0, 2, 3)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def channel_indices(data_root: str | Path, cfg: BevSegConfig) -> tuple[list[int], dict]:
    index = json.loads((Path(data_root) / "index.json").read_text())
    bev = index.get("bev", {})
    channels = list(bev.get("channels", []))
    missing = [c for c in (cfg.road_channel, cfg.vehicle_channel) if c not in channels]
    if missing:
        raise ValueError(f"{data_root}: BEV channels {missing} not in the dataset's channels {channels}")
    return [channels.index(cfg.road_channel), channels.index(cfg.vehicle_channel)], bev


def load_split(data_root: str | Path, names: Sequence[str] | None, cfg: BevSegConfig) -> dict:
    """Load frames into memory for training / evaluation (bad or missing frames are reported and skipped).

    Returns:
        {"images": uint8 [n, v, 3, H, W] at cfg.image_size, "K": [n, v, 3, 3] (scaled), "T": [n, v, 4, 4],
         "target": bool [n, 2, out, out], "names": [n], "problems": [str]}.
    """

    idx, _ = channel_indices(data_root, cfg)
    ds = FrameDataset(data_root, names=list(names) if names is not None else None)
    out: dict[str, list] = {"images": [], "K": [], "T": [], "target": [], "names": []}
    problems = [f"{n}: frame file missing" for n in ds.missing]
    for i in range(len(ds)):
        try:
            item = ds[i]
        except Exception as e:  # noqa: BLE001 - a bad frame must not cost the good ones
            problems.append(f"item {i}: {type(e).__name__}: {e}")
            continue
        img, K = resize_views(item["images"][None], item["K"][None].float(), cfg.image_size)
        out["images"].append(img[0])
        out["K"].append(K[0])
        out["T"].append(item["T_cam_from_ego"].float())
        out["target"].append(bev_targets(item["bev"][None], idx, cfg)[0])
        out["names"].append(item["name"])
    if not out["names"]:
        raise ValueError(f"{data_root}: no loadable frames ({problems[:3]})")
    res = {k: torch.stack(v) for k, v in out.items() if k != "names"}
    return {**res, "names": out["names"], "problems": problems}


def mean_map(targets: Tensor) -> Tensor:
    """Trivial baseline: per-cell frequency of each class over a set of frames, [2, out, out] float."""
    return targets.float().mean(0)
