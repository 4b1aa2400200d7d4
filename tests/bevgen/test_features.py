"""FID / KID feature extractors: distances behave (can fail), Inception weights load strictly."""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pybullet")

# E402: imported after the importorskip calls so that the module is skipped, not failed, without torch/pybullet
from bevgen.features import (RANDCONV_NAME, ExtractorWeightsError, _trace_sqrt_product_eig,  # noqa: E402
                             build_fid_inception, fid, fid_kid, kid, load_extractor)
from conftest import make_varied_road_scenario as _varied_road  # noqa: E402  # tests/conftest.py (on sys.path)



@pytest.fixture(scope="module")
def rendered() -> np.ndarray:
    """uint8 [72, 64, 112, 3]: 12 frames x 6 views of rendered roads."""
    from bevgen.cameras import nuscenes_rig
    from bevgen.render.scene import SceneRenderer, SynthConfig
    from sim_bridge.scenario import Scenario

    imgs = []
    with SceneRenderer(nuscenes_rig((64, 112)), SynthConfig(image_size=(64, 112))) as r:
        for s in range(6):
            sc = Scenario.from_dict(_varied_road(s))
            imgs += [r.render(sc, t).images for t in (0, 15)]
    return np.concatenate(imgs)


def _blur(x: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in x])


def test_fid_of_a_set_with_itself_is_zero(rendered):
    f = load_extractor().features(rendered)
    assert f.shape == (len(rendered), 384) and f.dtype == np.float64
    assert fid(f, f) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(f, rowvar=False)))


def test_fid_and_kid_separate_perturbed_images(rendered):
    ex = load_extractor()
    a, b = rendered[0::2], rendered[1::2]  # two halves of the same distribution (every other image)
    same = fid_kid(a, b, ex)
    assert same["fid_extractor"] == RANDCONV_NAME and same["num_samples"] == len(a)
    noisy = np.clip(b.astype(int) + np.random.RandomState(0).randint(-40, 41, b.shape), 0, 255).astype(np.uint8)
    shifted = np.clip(b.astype(int) + np.array([40, -20, -30]), 0, 255).astype(np.uint8)
    # measured ratios to the same-distribution FID: blur 2.5x, noise 11x, colour 74x
    for name, bad, ratio in (("blur", _blur(b), 1.8), ("noise", noisy, 4.0), ("colour", shifted, 10.0)):
        other = fid_kid(a, bad, ex)
        assert other["fid"] > ratio * same["fid"], (name, other, same)
        assert other["kid"] > 5 * abs(same["kid"]), (name, other, same)
    # unbiased KID: matching distributions give ~0, much smaller than any perturbation
    assert abs(same["kid"]) < 0.2 * fid_kid(a, _blur(b), ex)["kid"]


def test_extractor_is_deterministic_and_batch_independent(rendered):
    x = rendered[:6]
    f1 = load_extractor().features(x, batch_size=6)
    f2 = load_extractor().features(torch.from_numpy(x), batch_size=2)
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        load_extractor().features(x.astype(np.float32))


def test_fid_matrix_square_root_routes_agree():
    rs = np.random.RandomState(0)
    a, b = rs.randn(300, 16), rs.randn(200, 16) @ rs.randn(16, 16) + 1.0
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = ((a.mean(0) - b.mean(0)) ** 2).sum()
    expected = mu + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product_eig(s1, s2)
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)
    # fewer samples than dimensions (singular covariances) stays finite and >= 0
    small = fid(rs.randn(10, 64), rs.randn(12, 64) + 0.5)
    assert np.isfinite(small) and small > 0
    # unbiased KID: ~0 for two samples of one distribution, clearly positive for a shifted one
    c = rs.randn(300, 16)
    assert abs(kid(a, c)) < 0.1 * kid(a, c + 0.5)


def test_inception_weights_round_trip(tmp_path, rendered):
    torch.manual_seed(0)
    net = build_fid_inception()
    sd = net.state_dict()
    assert sd["fc.weight"].shape == (1008, 2048) and "Mixed_7c.branch_pool.bn.running_var" in sd
    assert not any(k.startswith("AuxLogits") for k in sd)
    path = tmp_path / "pt_inception.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)  # like old files
    ex = load_extractor(path)
    assert "inception" in ex.name and ex.dim == 2048
    f = ex.features(rendered[:2])
    assert f.shape == (2, 2048) and np.isfinite(f).all()
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(rendered[:2]).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(f, ref.double().numpy(), rtol=1e-4, atol=1e-5)


def test_wrong_weights_give_clear_errors(tmp_path):
    sd = build_fid_inception().state_dict()
    bad_shape = dict(sd, **{"fc.weight": torch.zeros(1000, 2048)})
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(ExtractorWeightsError, match=r"shape mismatch.*fc\.weight"):
        load_extractor(tmp_path / "shape.pth")
    missing = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c")}
    missing["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    torch.save(missing, tmp_path / "keys.pth")
    with pytest.raises(ExtractorWeightsError, match=r"missing key.*Mixed_7c.*unexpected key.*AuxLogits"):
        load_extractor(tmp_path / "keys.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ExtractorWeightsError, match="weights-only"):
        load_extractor(tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_extractor(tmp_path / "absent.pth")
