"""`bevgen demo --fast`: the main job end to end on procedural data, its report, and stage caching."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from bevgen.demo import run_demo

pytestmark = pytest.mark.metadrive


def test_demo_fast_writes_report_and_caches(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, fast=True, workers=2)
    html = report.read_text()
    for section in ("Scenarios", "Top-down animation", "BEV previews", "BEV channels", "Metrics", "Config and versions"):
        assert f"<h2>{section}</h2>" in html
    images = re.findall(r'src="data:image/(png|gif);base64,([^"]+)"', html)
    assert len(images) >= 5, "an animation and several previews are inlined"
    for kind, data in images:
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        assert im.width >= 100 and im.height >= 100
        if kind == "gif":
            assert getattr(im, "n_frames", 1) > 5
    assert "http://" not in html and "https://" not in html, "self-contained: nothing fetched"
    assert "2 valid, 0 bad" in html
    assert len(list((out / "bev").glob("*.png"))) == 4 and (out / "config.yaml").exists()
    info = json.loads((out / "info.json").read_text())
    assert len(info) == 2 and all(r["lanes"] > 0 for r in info)

    # second run: scenarios are reused, not regenerated
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "scenarios").glob("sd_*.pkl")}
    run_demo(out, fast=True, workers=2)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scenarios").glob("sd_*.pkl")} == mtimes
    report_json = json.loads((out / "scenarios" / "conversion_report.json").read_text())
    assert len(report_json["reused"]) == 2 and not report_json["written"]
