"""`bevgen demo --fast`: the main job end to end on procedural data, its report, and stage caching."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import pytest
from PIL import Image

from bevgen.demo import run_demo

pytestmark = pytest.mark.metadrive


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(out, fast=True, workers=2)


def test_report_renders_in_headless_chromium(demo_run):
    """The report opens in a real browser with no console errors and every image decodes."""
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on PATH (.ci/run installs the Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [dev] extra")
    _, report = demo_run
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
            sections = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        finally:
            browser.close()
    assert not problems, problems
    assert len(images) >= 10
    broken = [alt for complete, width, alt in images if not (complete and width > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert "Metrics" in sections and "Config and versions" in sections


def test_demo_fast_writes_report_and_caches(demo_run):
    out, report = demo_run
    html = report.read_text()
    for section in ("Scenarios", "Top-down animation", "BEV previews", "Traffic: before and after augmentation",
                    "Generated traffic", "RL: learning curve", "RL: evaluation on held-out scenarios",
                    "Trained agent rollout", "Camera views from BEV layouts", "Camera views: metrics",
                    "Scene3D: compositional 3D-aware generation and edits", "BEV channels", "Metrics",
                    "Config and versions"):
        assert f"<h2>{section}</h2>" in html
    assert "<h2>Six-camera video of the agent" in html
    images = re.findall(r'src="data:image/(png|gif);base64,([^"]+)"', html)
    assert len(images) >= 10, "animations, previews, before/after, learning curve are inlined"
    for kind, data in images:
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        assert im.width >= 100 and im.height >= 100
        if kind == "gif":
            assert getattr(im, "n_frames", 1) >= 3, "an animation (short when the agent's episode ends early)"
    assert "http://" not in html and "https://" not in html, "self-contained: nothing fetched"
    assert "2 valid, 0 bad" in html
    assert len(list((out / "bev").glob("*.png"))) == 4
    info = json.loads((out / "info.json").read_text())
    assert len(info) == 2 and all(r["lanes"] > 0 for r in info)
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["procedural"]["num_scenarios"] == len(info)

    # the report's metric tables show the numbers the evaluations wrote
    def shown(value, digits):
        return f"<td>{round(value, digits) if isinstance(value, float) else value}</td>" in html

    views = json.loads((out / "views_eval" / "eval" / "metrics.json").read_text())
    assert views["fid_extractor"] == "bevgen-randconv-v1" and views["num_samples"] % 6 == 0, views
    for key in ("road_iou", "vehicle_iou", "road_iou_oracle", "vehicle_iou_oracle", "seam_consistency", "fid",
                "num_samples"):
        assert shown(views[key], 4), (key, views[key])
    scene3d = json.loads((out / "scene3d_eval" / "metrics.json").read_text())
    for key in ("fid", "kid", "object_fid", "box_alpha_iou", "resolution"):
        assert shown(scene3d[key], 4), (key, scene3d[key])
    assert scene3d["box_alpha_iou"] > 0.05, scene3d  # objects render opacity inside their boxes (empty: 0)
    drive = json.loads((out / "drive" / "drive_metrics.json").read_text())
    # the ego moves, so even the ground truth's static pixels change between frames
    assert drive["frames"] >= 4 and drive["temporal_change_truth"] > 0.1, drive
    for key in ("temporal_change_generated", "temporal_change_truth", "flicker_generated"):
        assert shown(drive[key], 2), (key, drive[key])
    with Image.open(out / "drive" / "drive_views.gif") as gif:
        assert gif.n_frames == drive["frames"] and gif.width >= 100, (gif.n_frames, drive["frames"])

    metrics = json.loads((out / "rl" / "metrics.json").read_text())
    assert set(metrics["reference"]) == {"random", "idm"} and metrics["num_episodes"] >= 1
    assert len(list((out / "augmented").glob("sd_*.pkl"))) == 2

    # second run: scenarios, the traffic model and the PPO run are reused, not rebuilt
    cached = [*(out / "scenarios").glob("sd_*.pkl"), out / "traffic" / "checkpoints" / "latest.pt",
              out / "ppo" / "checkpoints" / "latest.pt", *(out / "camera_data" / "frames").glob("*.npz"),
              out / "views_eval" / "bevseg" / "checkpoints" / "latest.pt"]
    mtimes = {str(p): p.stat().st_mtime_ns for p in cached}
    run_demo(out, fast=True, workers=2)
    assert {str(p): p.stat().st_mtime_ns for p in cached} == mtimes
    report_json = json.loads((out / "scenarios" / "conversion_report.json").read_text())
    assert len(report_json["reused"]) == 2 and not report_json["written"]
