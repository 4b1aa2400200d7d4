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
    for section in ("Scenarios", "Top-down animation", "BEV previews", "Traffic: before and after augmentation",
                    "Generated traffic", "RL: learning curve", "RL: evaluation on held-out scenarios",
                    "Trained agent rollout", "BEV channels", "Metrics", "Config and versions"):
        assert f"<h2>{section}</h2>" in html
    images = re.findall(r'src="data:image/(png|gif);base64,([^"]+)"', html)
    assert len(images) >= 10, "animations, previews, before/after, learning curve are inlined"
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

    metrics = json.loads((out / "rl" / "metrics.json").read_text())
    assert set(metrics["reference"]) == {"random", "idm"} and metrics["num_episodes"] >= 1
    assert len(list((out / "augmented").glob("sd_*.pkl"))) == 2

    # second run: scenarios, the traffic model and the PPO run are reused, not rebuilt
    cached = [*(out / "scenarios").glob("sd_*.pkl"), out / "traffic" / "checkpoints" / "latest.pt",
              out / "ppo" / "checkpoints" / "latest.pt"]
    mtimes = {str(p): p.stat().st_mtime_ns for p in cached}
    run_demo(out, fast=True, workers=2)
    assert {str(p): p.stat().st_mtime_ns for p in cached} == mtimes
    report_json = json.loads((out / "scenarios" / "conversion_report.json").read_text())
    assert len(report_json["reused"]) == 2 and not report_json["written"]
