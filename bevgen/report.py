"""Self-contained HTML reports: images inlined as data URIs, no external assets, no scripts.

A report is a list of sections (title, HTML body); helpers turn numpy images, tables and dicts
into HTML. Every value placed in the page is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from runkit.atomic import atomic_write_text

__all__ = ["image_tag", "gif_tag", "table", "definition_list", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} .gallery{display:flex;flex-wrap:wrap;gap:10px} .gallery figure{margin:0}
figcaption{font-size:12px;color:#555} dt{font-weight:600} dd{margin:0 0 8px 16px;color:#444}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto} .muted{color:#777;font-size:13px}
"""


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def image_tag(img: np.ndarray, caption: str = "", width: int | None = None) -> str:
    """<figure> with a uint8 RGB image [H, W, 3] inlined as PNG."""
    data = base64.b64encode(_png_bytes(img)).decode()
    w = f' width="{int(width)}"' if width else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption or "image")}"{w} src="data:image/png;base64,{data}">{cap}</figure>'


def gif_bytes(frames: Sequence[np.ndarray], fps: float = 10.0) -> bytes:
    """Animated GIF of uint8 RGB frames."""

    ims = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def gif_tag(frames: Sequence[np.ndarray], caption: str = "", fps: float = 10.0) -> str:
    data = base64.b64encode(gif_bytes(frames, fps)).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption or "animation")}" src="data:image/gif;base64,{data}">{cap}</figure>'


def table(rows: Iterable[Mapping], columns: Sequence[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return '<p class="muted">(none)</p>'
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def definition_list(items: Mapping[str, str]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items()) + "</dl>"


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> Path:
    """Write the page; ``sections`` are (heading, trusted HTML built with the helpers above)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='muted'>{html.escape(subtitle)}</p>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    atomic_write_text(path, "".join(parts))
    return path
