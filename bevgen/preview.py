"""PNG previews of BEV layouts: channels painted in a fixed colour order, a legend, a title.

Pure numpy compositing plus Pillow for text (no matplotlib figure per frame: ~2 ms a preview).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bevgen.layout import CHANNELS, BevLayout

# cv2 is imported lazily (one drawing helper): a slow import that previews mostly do not need.

__all__ = ["colorize", "preview_image", "save_preview", "grid"]

_BACKGROUND = (24, 26, 32)
_EGO_COLOR = (250, 220, 40)


def colorize(layout: BevLayout, scale: int = 1, draw_ego: bool = True) -> np.ndarray:
    """uint8 [H*scale, W*scale, 3] RGB composite of every channel, later channels on top."""
    _, h, w = layout.raster.shape
    img = np.empty((h, w, 3), np.uint8)
    img[:] = _BACKGROUND
    for name, plane in zip(layout.channels, layout.raster):
        img[plane.astype(bool)] = CHANNELS[name][1]
    if draw_ego:
        _draw_ego(img, layout)
    if scale > 1:
        img = img.repeat(scale, 0).repeat(scale, 1)
    return img


def _draw_ego(img: np.ndarray, layout: BevLayout) -> None:
    """Ego marker: a filled triangle pointing forward (up) at the raster centre."""
    import cv2

    cfg = layout.config
    c = cfg.size / 2 - 0.5  # OpenCV pixel centres are integers
    half_len, half_w = 2.4 / cfg.resolution_m, 1.0 / cfg.resolution_m
    tri = np.array([[c, c - half_len], [c - half_w, c + half_len], [c + half_w, c + half_len]])
    cv2.fillPoly(img, [np.round(tri).astype(np.int32)], _EGO_COLOR)


def preview_image(layout: BevLayout, title: str | None = None, scale: int = 2, legend: bool = True) -> np.ndarray:
    """uint8 [H', W', 3]: the composite, a title bar and a legend column naming every channel."""

    body = colorize(layout, scale)
    font = ImageFont.load_default(size=13)
    legend_w = 190 if legend else 0
    title_h = 22 if title else 0
    canvas = Image.new("RGB", (body.shape[1] + legend_w, body.shape[0] + title_h), (255, 255, 255))
    canvas.paste(Image.fromarray(body), (0, title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 4), title, fill=(20, 20, 20), font=font)
    if legend:
        x0, y = body.shape[1] + 10, title_h + 8
        entries = [(n, CHANNELS[n][1]) for n in layout.channels] + [("ego", _EGO_COLOR)]
        for name, color in entries:
            draw.rectangle([x0, y, x0 + 14, y + 14], fill=color, outline=(0, 0, 0))
            draw.text((x0 + 20, y), name.replace("_", " "), fill=(20, 20, 20), font=font)
            y += 20
        cfg = layout.config
        draw.text((x0, y + 6), f"{2 * cfg.range_m:g} m x {2 * cfg.range_m:g} m", fill=(80, 80, 80), font=font)
        draw.text((x0, y + 24), f"{cfg.resolution_m:g} m/px, forward = up", fill=(80, 80, 80), font=font)
    return np.asarray(canvas)


def grid(images: Sequence[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    """Tile same-sized uint8 RGB images into a grid with white padding."""
    h, w, _ = images[0].shape
    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return out


def save_preview(layout: BevLayout, path: str | Path, title: str | None = None, scale: int = 2) -> Path:
    """Write :func:`preview_image` as a PNG; returns the path."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(preview_image(layout, title, scale)).save(path)
    return path
