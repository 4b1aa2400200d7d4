"""Evaluation of generated camera views: BEV IoU (layout faithfulness), cross-view seam consistency,
FID / KID (image realism), each also reported for the ground-truth images as an oracle.

Letters: b batch, v view, e camera pair (edge), p ground point, c colour channel.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bevgen.features import fid, kid, load_extractor
from bevgen.render.dataset import FrameDataset, view_mosaic
from bevgen.views.bootstrap import share_interval
from bevgen.views.bevseg import BevSegConfig, bev_targets, channel_indices, iou, project, resize_views
from bevgen.views.bevseg_train import load_bevseg
from runkit.atomic import atomic_write, atomic_write_text

# cv2 is imported lazily (preview images only): a slow import.

__all__ = ["overlapping_pairs", "seam_consistency", "evaluate_views", "psnr", "DEFINITIONS", "SeamConfig",
           "iou_by_distance", "DISTANCE_BANDS_M", "token_box_iou", "SampleOnce"]

DISTANCE_BANDS_M = {"near": (0.0, 15.0), "mid": (15.0, 30.0), "far": (30.0, float("inf"))}
"""Ranges of BEV-cell centre distance from the ego for the per-distance vehicle IoU."""


def iou_by_distance(pred: Any, target: Any, range_m: float, channel: int = 1,
                    bands: dict[str, tuple[float, float]] = DISTANCE_BANDS_M) -> dict[str, float]:
    """Dataset-level IoU of one channel inside each distance band of the BEV grid.

    Args:
        pred, target: bool [b, c, S, S] (row 0 = x +range, column 0 = y +range). range_m: half extent (m).
        channel: the channel scored (1 = vehicle in ``bev_targets``). bands: name -> [lo, hi) metres.
    Returns:
        {name: IoU} (NaN where the band's union is empty). O(b S^2).
    """
    p, t = np.asarray(pred, dtype=bool)[:, channel], np.asarray(target, dtype=bool)[:, channel]
    S = p.shape[-1]
    centre = range_m - (np.arange(S) + 0.5) * (2 * range_m / S)
    dist = np.hypot(centre[:, None], centre[None, :])
    out = {}
    for name, (lo, hi) in bands.items():
        cells = (dist >= lo) & (dist < hi)
        inter, union = (p & t)[:, cells].sum(), (p | t)[:, cells].sum()
        out[name] = float(inter / union) if union else float("nan")
    return out


@dataclass(frozen=True)
class SeamConfig:
    """Ground-point grid used by :func:`seam_consistency`."""

    range_m: float = 30.0
    """Half extent of the square ground grid around the ego (m)."""
    step_m: float = 0.25
    """Grid spacing (m)."""
    min_dist_m: float = 2.0
    """Points nearer than this to the ego centre are skipped (under the car body)."""
    min_points: int = 20
    """A camera pair is adjacent when at least this many grid points are visible in both views."""
    border_px: float = 1.0
    """Points within this many pixels of an image border count as not visible (bilinear support)."""
    flat_std: float = 2.0
    """Grey-level standard deviation below which an overlap counts as textureless (NCC floor)."""


DEFINITIONS = {
    "road_iou": "IoU of the drivable-area channel between the BEV segmentation network's prediction on the "
                "generated views (threshold 0.5) and the conditioning layout, max-pooled to the network's "
                "grid; dataset-level (sum of intersections / sum of unions). null without a bevseg checkpoint.",
    "vehicle_iou": "Same as road_iou for the vehicle channel, the ego's own box excluded (no camera sees it).",
    "vehicle_iou_near": "vehicle_iou over BEV cells within 15 m of the ego (centre distance); _mid: 15-30 m; "
                        "_far: 30 m to the raster's edge. Each also with _oracle.",
    "road_iou_near": "road_iou in the same distance bands as vehicle_iou_near / _mid / _far (where the "
                     "views lose the road: a distant road covers few pixels). Each also with _oracle.",
    "road_iou_oracle": "road_iou with the ground-truth images (resized to the generated size) as input: the "
                       "ceiling set by the segmentation network itself.",
    "vehicle_iou_oracle": "vehicle_iou on ground-truth images.",
    "seam_consistency": "Cross-view agreement: for every pair of cameras whose fields of view overlap on the "
                        "ground (found from the rig geometry), a grid of ground points (z = 0, +-30 m, 0.5 m) "
                        "seen by both cameras is sampled bilinearly in both images; score = normalised "
                        "cross-correlation of the two RGB samples (1 = same pattern, 0 = unrelated or "
                        "textureless), averaged over pairs and frames. Objects standing on the ground occlude "
                        "it differently in each view, so even ground truth scores below 1.",
    "seam_consistency_oracle": "seam_consistency of the ground-truth images.",
    "fid": "Frechet distance between extractor features of generated and ground-truth images (every view "
           "of every frame is one image). Small-N FID is biased upwards: compare runs at equal num_samples "
           "and extractor only.",
    "kid": "Kernel Inception Distance (unbiased polynomial-kernel MMD^2 averaged over subsets) on the same "
           "features; unbiased, so ~0 (possibly negative) for matching distributions.",
    "fid_extractor": "Feature extractor name; 'bevgen-randconv-v1' numbers are not comparable with "
                     "Inception FIDs (see bevgen.features).",
    "psnr": "Peak signal-to-noise ratio (dB, 8-bit) of the generated views against the ground-truth views "
            "(resized to the generated size), per view, averaged. The measure of a tokenizer round trip "
            "(`--mode reconstruct`); for sampled views, which need not copy the ground truth's pixels, only a "
            "rough guide.",
    "shares": "Each of road_iou, vehicle_iou and seam_consistency as a share of its oracle (generated / "
              "oracle; null where the oracle is 0 or missing): the form the targets take.",
    "shares_ci90": "90% interval of each share under a paired circular-block bootstrap of the frames (blocks of "
                   "4 consecutive frames within each scenario, 2000 draws; bevgen.views.bootstrap): how far the "
                   "share moves with another draw of frames from the same scenarios. Not covered: other "
                   "scenarios, another evaluator. Per-frame sums in per_frame.json.",
    "num_samples": "Images per set used for FID/KID (frames x views).",
    "missing_frames": "Requested frames whose file is missing from the dataset: skipped, not scored.",
}


# ----------------------------------------------------------------------------------------------
# Seam consistency
# ----------------------------------------------------------------------------------------------

def _ground_grid(cfg: SeamConfig) -> torch.Tensor:
    """[p, 3] ground points (z = 0) on a square grid, excluding the disc under the ego."""
    r = torch.arange(-cfg.range_m, cfg.range_m + 1e-6, cfg.step_m, dtype=torch.float64)
    x, y = torch.meshgrid(r, r, indexing="ij")
    keep = (x ** 2 + y ** 2) >= cfg.min_dist_m ** 2
    return torch.stack([x[keep], y[keep], torch.zeros_like(x[keep])], -1)


def _project_ground(pts: torch.Tensor, K: torch.Tensor, T: torch.Tensor, hw: Sequence[int], cfg: SeamConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground points [p, 3] through every camera (``bevseg.project`` with the seam border): grid [b, v, p, 2]
    (grid_sample coords), visible [b, v, p]."""

    return project(pts, K, T, hw, border_px=cfg.border_px)


def _rig_overlap(K: Any, T: Any, image_size: Sequence[int], cfg: SeamConfig
                 ) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """(pairs with >= cfg.min_points common ground points, [p', 3] grid points seen by >= 2 views)."""
    Kt, Tt = (torch.tensor(np.array(a), dtype=torch.float64) for a in (K, T))
    Kt, Tt = (Kt[0] if Kt.ndim == 4 else Kt), (Tt[0] if Tt.ndim == 4 else Tt)
    pts = _ground_grid(cfg)
    vis = _project_ground(pts, Kt[None], Tt[None], image_size, cfg)[1][0].double()  # [v, p]
    common = torch.einsum("vp,wp->vw", vis, vis)
    v = common.shape[0]
    pairs = [(i, j) for i in range(v) for j in range(i + 1, v) if common[i, j] >= cfg.min_points]
    return pairs, pts[vis.sum(0) >= 2]


def _as_batched(x: Any, b: int, shape: tuple[int, ...]) -> torch.Tensor:
    t = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))).double()
    return t.expand(b, *shape) if t.ndim == len(shape) else t


def overlapping_pairs(K: Any, T: Any, image_size: Sequence[int], cfg: SeamConfig = SeamConfig()
                      ) -> list[tuple[int, int]]:
    """Camera pairs (i < j) that see a common patch of ground, from the rig geometry.

    Args:
        K: [v, 3, 3], T: [v, 4, 4] T_cam_from_ego; image_size (H, W) K refers to.
    Returns:
        list of (i, j) with >= cfg.min_points common visible ground-grid points. Cost O(v p + v^2 p).
    """
    return _rig_overlap(K, T, image_size, cfg)[0]


def seam_consistency(images: Any, K: Any, T: Any, cfg: SeamConfig = SeamConfig(),
                     pairs: Sequence[tuple[int, int]] | None = None, per_frame: bool = False) -> Any:
    """Agreement of overlapping cameras on the ground they both see.

    Args:
        images: uint8 [b, v, 3, H, W] (tensor or numpy).
        K: [b, v, 3, 3] or [v, 3, 3] intrinsics for (H, W). T: [b, v, 4, 4] or [v, 4, 4] T_cam_from_ego.
        cfg: ground grid. pairs: camera pairs; default :func:`overlapping_pairs` of the first frame.
        per_frame: also return the per-frame scores.
    Returns:
        mean score in [-1, 1]: normalised cross-correlation (NCC) of the RGB values of the two views at
        the ground points both see, averaged over pairs and frames; NaN when no pair overlaps. With
        per_frame: (score, float64 [b] per-frame scores). NCC rather than a mean absolute difference:
        most of an overlap is uniform road or grass, so absolute differences barely separate real from
        camera-shuffled views (0.966 vs 0.954 on rendered roads) while NCC does (0.74 vs 0.37; 0 for
        unrelated images).
    Cost: O(v P) to find the grid points P' seen by >= 2 cameras of the first frame's rig, then
    O(b v P') projection, one grid_sample of b*v*P' points and O(b e P') comparisons (P' ~ P / 3 for the nuScenes rig).
    """
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"images: expected uint8 [b, v, 3, H, W], got {tuple(x.shape)} {x.dtype}")
    b, v, _, H, W = x.shape
    Kb, Tb = _as_batched(K, b, (v, 3, 3)), _as_batched(T, b, (v, 4, 4))
    rig_pairs, pts = _rig_overlap(Kb[0].numpy(), Tb[0].numpy(), (H, W), cfg)  # only overlap points are sampled
    pairs = rig_pairs if pairs is None else pairs
    if not pairs:
        return (float("nan"), np.full(b, np.nan)) if per_frame else float("nan")
    grid, vis = _project_ground(pts.float(), Kb.float(), Tb.float(), (H, W), cfg)  # [b, v, p, 2], [b, v, p]
    col = F.grid_sample(x.reshape(b * v, 3, H, W).float(), grid.reshape(b * v, 1, -1, 2).float(),
                        mode="bilinear", align_corners=False).reshape(b, v, 3, -1)  # [b, v, 3, p]
    i, j = (torch.tensor(a) for a in zip(*pairs))
    both = (vis[:, i] & vis[:, j]).float()[:, :, None]  # [b, e, 1, p]
    n = both.sum((2, 3))  # [b, e]
    a, c = col[:, i], col[:, j]  # [b, e, 3, p]
    a0 = (a - (a * both).sum(-1, keepdim=True) / n[..., None, None].clamp(min=1)) * both
    c0 = (c - (c * both).sum(-1, keepdim=True) / n[..., None, None].clamp(min=1)) * both
    den = ((a0 ** 2).sum((2, 3)) * (c0 ** 2).sum((2, 3))).sqrt()
    # flat overlaps (std below cfg.flat_std grey levels) carry no structure: they score ~0, not NaN
    score = (a0 * c0).sum((2, 3)) / den.clamp(min=3 * n * cfg.flat_std ** 2)  # [b, e] NCC
    ok = (n >= cfg.min_points).float()
    frame = ((score * ok).sum(1) / ok.sum(1).clamp(min=1)).double().numpy()
    frame[ok.sum(1).numpy() == 0] = np.nan
    total = float(np.nanmean(frame)) if np.isfinite(frame).any() else float("nan")
    return (total, frame) if per_frame else total


# ----------------------------------------------------------------------------------------------
# Full evaluation
# ----------------------------------------------------------------------------------------------

def _bev_rgb(target: np.ndarray, probs: np.ndarray | None, size: int) -> np.ndarray:
    """[2, h, w] bool target (+ [2, h, w] probs) -> RGB [size, size(*2), 3] panel (road grey, vehicle green)."""
    import cv2

    def paint(road, veh):
        img = np.full(road.shape + (3,), 25, np.uint8)
        img[road > 0.5] = (90, 90, 100)
        img[veh > 0.5] = (60, 210, 90)
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)

    panels = [paint(*target.astype(np.float32))]
    if probs is not None:
        panels.append(paint(*probs))
    return np.concatenate(panels, 1)


def _views_grid(images: np.ndarray) -> np.ndarray:
    """[v, 3, h, w] uint8 -> the six-view mosaic [2h, 3w, 3] (front row FL F FR, back row BL B BR)."""

    return view_mosaic(images.transpose(0, 2, 3, 1))


def _write_preview(path: Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Rows of (BEV panel, generated mosaic, GT mosaic) -> one PNG."""
    import cv2

    lines = []
    for bev, gen, gt in rows:
        h = gen.shape[0]
        bev = cv2.resize(bev, (int(bev.shape[1] * h / bev.shape[0]), h), interpolation=cv2.INTER_NEAREST)
        sep = np.full((h, 4, 3), 255, np.uint8)
        lines.append(np.concatenate([bev, sep, gen, sep, gt], 1))
    width = max(line.shape[1] for line in lines)
    header = np.full((18, width, 3), 255, np.uint8)
    bev_w, gen_w = rows[0][0].shape[1] * lines[0].shape[0] // rows[0][0].shape[0], rows[0][1].shape[1]
    for x, text in ((2, "BEV: layout | bevseg(generated)"), (bev_w + 6, "generated"),
                    (bev_w + gen_w + 10, "ground truth")):
        cv2.putText(header, text, (x, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.concatenate([header] + [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255)
                                        for line in lines], 0)
    atomic_write(path, lambda tmp: cv2.imwrite(str(tmp), canvas[..., ::-1]))


class SampleOnce:
    """``generate`` that draws each batch of frames once: the same samples scored under several evaluators.

    ``evaluate_views`` takes one BEV segmentation network; scoring one model under several (another evaluator
    seed, another training set) calls it once per network. Wrapped in ``SampleOnce``, the first call of a batch
    draws its views and keeps them (uint8, on the CPU), and any later call with the same batch returns them,
    so every evaluator scores the very same images and sampling is paid once.
    A batch is recognised by its frame names and a digest of its layouts, cameras and box arrays (frame names
    alone could repeat across datasets). Memory: b x 6 x 3 x H x W bytes per frame kept (130 kB at 64x112).

    Args:
        generate: ``generate(batch) -> uint8 [b, v, 3, h, w]`` as ``evaluate_views`` takes it.
    """

    def __init__(self, generate: Callable[[dict], Any]):
        self.generate = generate
        self.draws = 0
        self._kept: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def key(batch: dict) -> tuple:
        """The batch's identity: its frame names and a SHA-1 of its condition arrays."""
        import hashlib

        digest = hashlib.sha1()
        for name in ("bev", "K", "T_cam_from_ego", "boxes", "classes", "box_valid"):
            if name in batch:
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(torch.as_tensor(batch[name]).numpy()).tobytes())
        return tuple(batch["name"]), digest.hexdigest()

    def __call__(self, batch: dict) -> torch.Tensor:
        key = self.key(batch)
        if key not in self._kept:
            self._kept[key] = torch.as_tensor(self.generate(batch)).cpu()
            self.draws += 1
        return self._kept[key]


def evaluate_views(generate: Callable[[dict], Any], data_root: str | Path, names: Sequence[str] | None,
                   out_dir: str | Path, bevseg_ckpt: str | Path | None = None,
                   extractor_weights: str | Path | None = None, batch_size: int = 4, progress: bool = True,
                   num_preview: int = 4, seam: SeamConfig = SeamConfig()) -> dict:
    """Score a camera-view generator on a dataset's frames; writes ``out_dir/metrics.json`` + preview.

    Args:
        generate: ``generate(batch) -> uint8 [b, v, 3, h, w]`` where batch is a collated FrameDataset dict
            (e.g. a ViewsPipeline). (h, w) may be smaller than the dataset's: GT images are resized to it
            and K scaled before bevseg / seams / FID.
        data_root: dataset directory (bevgen.render.dataset format). names: frames (held-out split); None: all.
        out_dir: output directory (metrics.json, preview.png).
        bevseg_ckpt: trained BEV segmentation network (``train_bevseg``); None: IoU entries are null.
        extractor_weights: FID Inception weights; None: the built-in random-conv extractor.
        batch_size: frames per generate call. progress: tqdm bar. num_preview: frames in the preview.
        seam: ground grid of the seam metric.
    Returns:
        the metrics dict written to metrics.json (keys in ``DEFINITIONS`` plus ``definitions``).
    """

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = FrameDataset(data_root, names=list(names) if names is not None else None)
    if ds.missing:
        warnings.warn(f"{data_root}: {len(ds.missing)} frame file(s) missing, skipped (e.g. {ds.missing[0]}); "
                      "see metrics['missing_frames']", stacklevel=2)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    seg = load_bevseg(bevseg_ckpt) if bevseg_ckpt is not None else None
    ch_idx = channel_indices(data_root, seg.config if seg is not None else BevSegConfig())[0]
    extractor = load_extractor(extractor_weights)
    bar = None
    if progress:

        bar = tqdm(total=len(ds), desc="evaluate views", unit="frame")
    acc: dict[str, list] = {k: [] for k in ("pred", "pred_gt", "target", "seam", "seam_gt", "f_gen", "f_gt", "psnr",
                                            "names")}
    preview, pairs, size, t0 = [], None, None, time.perf_counter()
    for batch in loader:
        fake = torch.as_tensor(generate(batch)).cpu()
        if fake.dtype != torch.uint8 or fake.ndim != 5:
            raise ValueError(f"generate: expected uint8 [b, v, 3, h, w], got {tuple(fake.shape)} {fake.dtype}")
        size = tuple(fake.shape[-2:])
        gt, K = resize_views(batch["images"], batch["K"].float(), size)
        T = batch["T_cam_from_ego"].float()
        if pairs is None:
            pairs = overlapping_pairs(K[0].numpy(), T[0].numpy(), size, seam)
        acc["seam"].append(seam_consistency(fake, K, T, seam, pairs, per_frame=True)[1])
        acc["seam_gt"].append(seam_consistency(gt, K, T, seam, pairs, per_frame=True)[1])
        acc["f_gen"].append(extractor.features(fake.flatten(0, 1).permute(0, 2, 3, 1)))
        acc["f_gt"].append(extractor.features(gt.flatten(0, 1).permute(0, 2, 3, 1)))
        acc["psnr"].append(psnr(fake, gt))
        acc["names"].extend(batch["name"])
        probs = None
        if seg is not None:
            probs = seg.predict(fake, K, T)
            acc["pred"].append(probs > 0.5)
            acc["pred_gt"].append(seg.predict(gt, K, T) > 0.5)
            acc["target"].append(bev_targets(batch["bev"], ch_idx, seg.config))
        for k in range(len(fake)):
            if len(preview) < num_preview:
                target = (acc["target"][-1][k] if seg is not None
                          else bev_targets(batch["bev"][k:k + 1], ch_idx, BevSegConfig(),
                                           batch["bev"].shape[-1])[0]).numpy()
                preview.append((_bev_rgb(target, None if probs is None else probs[k].numpy(), 128),
                                _views_grid(fake[k].numpy()), _views_grid(gt[k].numpy())))
        if bar:
            bar.update(len(fake))
    if bar:
        bar.close()
    f_gen, f_gt = np.concatenate(acc["f_gen"]), np.concatenate(acc["f_gt"])
    seam_gen, seam_gt = np.concatenate(acc["seam"]), np.concatenate(acc["seam_gt"])
    metrics: dict[str, Any] = {"road_iou": None, "vehicle_iou": None, "road_iou_oracle": None,
                               "vehicle_iou_oracle": None}
    # per-frame sums behind the shares' intervals (null, not NaN, where a seam is undefined: strict JSON)
    per_frame: dict[str, Any] = {"names": list(acc["names"]), "seam": [_num(v) for v in seam_gen],
                                 "seam_oracle": [_num(v) for v in seam_gt]}
    if seg is not None:
        target = torch.cat(acc["target"])
        for key, pred in (("", torch.cat(acc["pred"])), ("_oracle", torch.cat(acc["pred_gt"]))):
            road, veh = iou(pred, target)
            metrics[f"road_iou{key}"], metrics[f"vehicle_iou{key}"] = _num(road), _num(veh)
            for name, channel in (("road", 0), ("vehicle", 1)):
                for band, value in iou_by_distance(pred, target, seg.config.bev_range_m, channel).items():
                    metrics[f"{name}_iou_{band}{key}"] = _num(value)
                hit, t = pred[:, channel], target[:, channel]
                per_frame[f"{name}_inter{key}"] = (hit & t).sum(dim=(1, 2)).tolist()
                per_frame[f"{name}_union{key}"] = (hit | t).sum(dim=(1, 2)).tolist()
    metrics.update({
        "seam_consistency": _num(np.nanmean(seam_gen)) if np.isfinite(seam_gen).any() else None,
        "seam_consistency_oracle": _num(np.nanmean(seam_gt)) if np.isfinite(seam_gt).any() else None,
        "fid": fid(f_gt, f_gen), "kid": kid(f_gt, f_gen), "fid_extractor": extractor.name,
        "psnr": _num(np.mean(np.concatenate(acc["psnr"]))),
        "num_samples": int(len(f_gen)), "num_frames": int(len(seam_gen)), "image_size": list(size or ()),
        "seam_pairs": [list(p) for p in (pairs or [])], "bevseg_ckpt": str(bevseg_ckpt) if bevseg_ckpt else None,
        "missing_frames": list(ds.missing), "seconds": round(time.perf_counter() - t0, 2),
        "definitions": DEFINITIONS})
    metrics.update(_shares(metrics, per_frame))
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(out_dir / "per_frame.json", json.dumps(per_frame))
    if preview:
        _write_preview(out_dir / "preview.png", preview)
    return metrics


def _shares(metrics: dict, per_frame: dict) -> dict:
    """``shares`` and ``shares_ci90`` (see ``DEFINITIONS``) from the dataset-level metrics and the per-frame sums."""
    shares, ci = {}, {}
    for key in ("road_iou", "vehicle_iou", "seam_consistency"):
        gen, ora = metrics.get(key), metrics.get(f"{key}_oracle")
        shares[key] = _num(gen / ora) if gen is not None and ora else None
        if key == "seam_consistency":
            g, o = (np.array(per_frame[k], dtype=float) for k in ("seam", "seam_oracle"))  # null -> NaN
            sums = (np.nan_to_num(g), np.isfinite(g), np.nan_to_num(o), np.isfinite(o))
        elif f"{key[:-4]}_inter" in per_frame:
            sums = tuple(per_frame[f"{key[:-4]}_{part}{suffix}"]
                         for suffix in ("", "_oracle") for part in ("inter", "union"))
        else:
            sums = None
        interval = share_interval(per_frame["names"], *sums) if sums is not None and shares[key] is not None else None
        ci[key] = [round(v, 4) for v in interval] if interval else None
    return {"shares": shares, "shares_ci90": ci}


def token_box_iou(pipe, fit: dict, images: torch.Tensor, batch: dict, threshold: float = 0.5) -> float:
    """Box IoU of views at the token grid: a fast evaluator that needs no segmentation network.

    Each code of the tokenizer's codebook is labelled "box" when most of its occurrences in the true views of the
    ``fit`` frames fall on tokens at least ``threshold`` covered by a projected box (``ViewsTransformer.coverage``
    of the layout seen through each camera). ``images`` (views of the ``batch`` frames: generated ones, or the
    true ones for the oracle) are encoded by the same tokenizer, and the tokens whose code is labelled box are
    compared with the batch's own covered tokens. Views with cars where the boxes are score near the true
    views' figure; cars elsewhere, or none, score near 0. O(b n) after encoding.

    Args:
        pipe: a ``ViewsPipeline``; fit, batch: collated ``FrameDataset`` dicts at ``pipe.image_size`` (fit with
            its images); images: uint8 [b, v, 3, H, W].
    Returns:
        IoU of the box tokens over the batch (0 when neither has any).
    """
    from bevgen.views.sample import COND_KEYS  # a function-level import: sample is heavier than metrics needs

    gen = pipe.generator

    def covered(b: dict) -> torch.Tensor:
        cond = {k: b[k].to(pipe.device) for k in COND_KEYS}
        with torch.no_grad():
            return gen.coverage(gen.projection(cond).float()) >= threshold  # [b, n]

    codes, on_box = pipe.encode(fit["images"]), covered(fit)
    k = gen.codebook_size
    box_code = torch.bincount(codes[on_box], minlength=k) > 0.5 * torch.bincount(codes.flatten(), minlength=k)
    pred, target = box_code[pipe.encode(images)], covered(batch)
    union = (pred | target).sum()
    return float((pred & target).sum() / union) if union else 0.0


def psnr(a: Any, b: Any) -> np.ndarray:
    """PSNR (dB) of uint8 images a against b, [..., 3, H, W] -> one value per image [...] (inf capped at 99).
    O(numel)."""
    mse = (torch.as_tensor(a).float() - torch.as_tensor(b).float()).square().mean(dim=(-3, -2, -1))
    return (10 * torch.log10(255.0 ** 2 / mse.clamp_min(255.0 ** 2 * 10 ** -9.9))).flatten().numpy()


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None
