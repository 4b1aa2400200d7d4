"""Camera-view evaluation: BEV segmentation learns and beats the mean-map baseline; every metric of
evaluate_views can fail (wrong frame, shuffled cameras, blurred images)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pybullet")

# E402: imported after the importorskip calls so that the module is skipped, not failed, without torch/pybullet
from conftest import make_varied_road_scenario as _varied_road  # noqa: E402  # tests/conftest.py (on sys.path)

from bevgen.views.bevseg import BevSegConfig, iou, load_split, mean_map, resize_views  # noqa: E402
from bevgen.views.bevseg_train import load_bevseg, train_bevseg  # noqa: E402
from bevgen.views.metrics import evaluate_views, overlapping_pairs, seam_consistency  # noqa: E402

SMALL = BevSegConfig(enc_channels=32, bev_channels=32, out_size=25, lr=3e-3, tensorboard=False)



@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """36 rendered frames (12 scenarios x 3, 64x112) split by scenario: (root, train, heldout)."""
    from bevgen.render.dataset import split_frames, write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.scenario import Scenario, save_scenario

    base = tmp_path_factory.mktemp("views_eval")
    for s in range(12):
        save_scenario(Scenario.from_dict(_varied_road(s)), base / "scenarios" / f"road{s:02d}.pkl")
    summary = write_synthetic_dataset(base / "scenarios", base / "data", SynthConfig(image_size=(64, 112)),
                                      frames_per_scenario=3, frame_stride=8, first_frame=0, progress=False)
    assert summary["num_frames"] == 36, summary
    names = json.loads((base / "data" / "index.json").read_text())["frames"]
    train, held = split_frames(names, 0.25, seed=0)
    return base / "data", train, held


@pytest.fixture(scope="module")
def bevseg(synth, tmp_path_factory):
    root, train, _ = synth
    return train_bevseg(root, train, tmp_path_factory.mktemp("bevseg"), steps=90, config=SMALL, progress=False)


def test_bevseg_learns_and_beats_the_mean_map(synth, bevseg):
    root, train, held = synth
    summary = json.loads((bevseg.parent.parent / "train_summary.json").read_text())
    assert summary["final_loss"] < 0.3 * summary["first_loss"], summary
    model = load_bevseg(bevseg)
    assert model.config.image_size == (64, 112) and model.config.source_size == 200
    tr, ho = load_split(root, train, model.config), load_split(root, held, model.config)
    probs = model.predict(ho["images"], ho["K"], ho["T"])
    assert probs.shape == (len(held), 2, 25, 25)
    ours = iou(probs > 0.5, ho["target"])
    base = mean_map(tr["target"])[None].expand_as(probs)
    best_base = np.nanmax([iou(base > th, ho["target"]) for th in (0.1, 0.2, 0.3, 0.5)], axis=0)
    assert ours[0] > best_base[0] + 0.2, (ours, best_base)  # road (measured 0.79 vs 0.23)
    assert ours.mean() > best_base.mean() + 0.1, (ours, best_base)


def test_bevseg_resume_and_strict_load(synth, bevseg, tmp_path):
    root, train, _ = synth
    out = tmp_path / "run"
    train_bevseg(root, train[:4], out, steps=2, config=SMALL, progress=False)
    with pytest.raises(FileExistsError):
        train_bevseg(root, train[:4], out, steps=3, config=SMALL, progress=False)
    ckpt = train_bevseg(root, train[:4], out, steps=3, config=SMALL, resume=True, progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3 and set(state) == {"model", "optimizer", "config", "step", "best_metric"}
    state["model"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="extra.weight"):
        load_bevseg(tmp_path / "bad.pt")


def _frames(root, names):
    from bevgen.render.dataset import FrameDataset

    ds = FrameDataset(root, names)
    items = [ds[i] for i in range(len(ds))]
    return {k: torch.stack([it[k] for it in items]) for k in ("images", "K", "T_cam_from_ego")}


def test_seams_come_from_geometry_and_fail_for_shuffled_cameras(synth):
    root, _, held = synth
    f = _frames(root, held)
    img, K, T = f["images"], f["K"], f["T_cam_from_ego"]
    assert overlapping_pairs(K[0], T[0], (64, 112)) == [(0, 1), (0, 5), (1, 2), (2, 3), (3, 4), (4, 5)]
    gt = seam_consistency(img, K, T)
    assert gt > seam_consistency(img.roll(1, dims=1), K, T) + 0.2  # measured 0.74 vs 0.35
    assert abs(seam_consistency(img.flip(-1), K, T)) < 0.5 * gt
    assert seam_consistency(torch.full_like(img, 128), K, T) == pytest.approx(0.0, abs=1e-6)
    # a camera pair whose images disagree lowers that pair only: per-frame scores stay finite
    score, per_frame = seam_consistency(img, K[0], T[0], per_frame=True)
    assert score == pytest.approx(gt) and per_frame.shape == (len(held),) and np.isfinite(per_frame).all()


def test_evaluate_views_metrics_can_fail(synth, bevseg, tmp_path):
    import cv2

    root, _, held = synth
    other = {n: held[(i + 3) % len(held)] for i, n in enumerate(held)}  # a frame of another scenario
    other_imgs = dict(zip(held, _frames(root, held)["images"]))

    def identity(batch):
        return batch["images"]

    def wrong_frame(batch):
        return torch.stack([other_imgs[other[n]] for n in batch["name"]])

    def shuffled_cameras(batch):
        return batch["images"].roll(1, dims=1)

    def blurred(batch):
        x = batch["images"].permute(0, 1, 3, 4, 2).numpy()
        return torch.from_numpy(np.stack([[cv2.GaussianBlur(v, (0, 0), 2.0) for v in f] for f in x])
                                ).permute(0, 1, 4, 2, 3).contiguous()

    def half_size(batch):
        return resize_views(batch["images"], batch["K"], (32, 56))[0]

    run = {g.__name__: evaluate_views(g, root, held, tmp_path / g.__name__, bevseg_ckpt=bevseg, batch_size=4,
                                      progress=False, num_preview=2)
           for g in (identity, wrong_frame, shuffled_cameras, blurred, half_size)}
    ident = run["identity"]
    keys = {"road_iou", "vehicle_iou", "road_iou_oracle", "vehicle_iou_oracle", "seam_consistency",
            "seam_consistency_oracle", "fid", "kid", "fid_extractor", "num_samples", "definitions"}
    on_disk = json.loads((tmp_path / "identity" / "metrics.json").read_text())
    assert keys <= set(on_disk) and keys - {"definitions"} <= set(on_disk["definitions"])
    assert (tmp_path / "identity" / "preview.png").stat().st_size > 1000
    assert ident["num_samples"] == 6 * len(held) and ident["fid_extractor"] == "bevgen-randconv-v1"
    # ground truth reproduces the oracle exactly
    assert (ident["road_iou"] == ident["road_iou_oracle"]
            and ident["seam_consistency"] == ident["seam_consistency_oracle"])
    assert ident["fid"] == pytest.approx(0.0, abs=1e-6)
    # shares of the oracle and their bootstrap intervals: exactly 1 for the ground truth, per-frame sums on disk
    assert all(v == pytest.approx(1.0) for v in ident["shares"].values()), ident["shares"]
    assert all(ci == pytest.approx([1.0, 1.0]) for ci in ident["shares_ci90"].values()), ident["shares_ci90"]
    frames = json.loads((tmp_path / "identity" / "per_frame.json").read_text())
    assert frames["names"] == list(held) and len(frames["road_inter"]) == len(held)
    assert sum(frames["road_inter"]) / sum(frames["road_union"]) == pytest.approx(ident["road_iou"])
    # IoU fails for images of another frame, seams for shuffled cameras, FID for blur
    assert run["wrong_frame"]["road_iou"] < ident["road_iou"] - 0.1, (run["wrong_frame"], ident)
    assert run["wrong_frame"]["vehicle_iou"] < ident["vehicle_iou"]
    lo, hi = run["wrong_frame"]["shares_ci90"]["road_iou"]  # the interval excludes the oracle's share
    assert lo - 1e-4 <= run["wrong_frame"]["shares"]["road_iou"] <= hi + 1e-4 and hi < 0.9, run["wrong_frame"]
    assert run["shuffled_cameras"]["seam_consistency"] < ident["seam_consistency"] - 0.2
    assert run["blurred"]["fid"] > 1.5 * run["wrong_frame"]["fid"], (run["blurred"], run["wrong_frame"])
    # generated images smaller than the dataset: GT is resized and K scaled before every metric
    half = run["half_size"]
    assert half["image_size"] == [32, 56] and half["fid"] == pytest.approx(0.0, abs=1e-6)
    assert half["road_iou"] == half["road_iou_oracle"] and half["seam_consistency"] > 0.3


def test_sample_once_scores_the_same_samples_under_every_evaluator(synth, bevseg, tmp_path):
    """A generator that draws new noise on every call, wrapped in SampleOnce: a second evaluation (another
    evaluator, another out_dir) gets the very same images, drawn once per batch; another frame set is drawn."""
    from bevgen.views.metrics import SampleOnce

    root, _, held = synth
    rng = torch.Generator().manual_seed(0)

    def noisy(batch):  # the true views plus fresh noise: each call differs
        x = batch["images"].float() + 40 * torch.randn(batch["images"].shape, generator=rng)
        return x.clamp(0, 255).to(torch.uint8)

    once = SampleOnce(noisy)
    first, again = (evaluate_views(once, root, held, tmp_path / d, bevseg_ckpt=bevseg, batch_size=4,
                                   progress=False, num_preview=0) for d in ("a", "b"))
    batches = -(-len(held) // 4)
    assert once.draws == batches
    for key in ("road_iou", "vehicle_iou", "seam_consistency", "fid", "psnr"):
        assert first[key] == again[key], key
    fresh = evaluate_views(noisy, root, held, tmp_path / "c", bevseg_ckpt=bevseg, batch_size=4, progress=False,
                           num_preview=0)
    assert fresh["psnr"] != first["psnr"]  # without the wrapper the samples change
    evaluate_views(once, root, held[:2], tmp_path / "d", bevseg_ckpt=bevseg, batch_size=4, progress=False,
                   num_preview=0)
    assert once.draws == batches + 1  # another batch: drawn, not mistaken for a kept one


def test_psnr_per_image():
    from bevgen.views.metrics import psnr

    a = torch.zeros(2, 3, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, 1] = 10  # one image off by 10 grey levels everywhere: 20 log10(255 / 10) = 28.13 dB
    out = psnr(b, a)
    assert out.shape == (6,) and abs(out[1] - 28.13) < 0.01 and out[0] == out[2] == 99.0

