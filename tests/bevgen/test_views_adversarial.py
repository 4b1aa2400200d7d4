"""The tokenizer's patch-adversarial term (bevgen.views.adversarial) on rendered views."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bevgen.views.adversarial import PatchDiscriminator, adaptive_weight, hinge_d_loss
from bevgen.views.config import DataConfig, GeneratorConfig, TokenizerConfig, ViewsConfig, ViewsTrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_straight_road_scenarios  # noqa: E402


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """Rendered 64x112 frames of two straight-road scenarios."""
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig

    root = tmp_path_factory.mktemp("views_adv")
    write_straight_road_scenarios(root / "scenarios", [(0.0, 10.0), (0.9, 6.0)])
    summary = write_synthetic_dataset(root / "scenarios", root / "frames", SynthConfig(image_size=(64, 112)),
                                      frames_per_scenario=3, frame_stride=5, first_frame=0, progress=False)
    assert summary["num_frames"] == 6, summary
    return root / "frames"


def _views(frames_dir) -> torch.Tensor:
    """Every view of the dataset as float [n, 3, 64, 112] in [-1, 1]."""
    from bevgen.render.dataset import FrameDataset

    ds = FrameDataset(frames_dir)
    imgs = torch.stack([torch.as_tensor(ds[i]["images"]) for i in range(len(ds))]).flatten(0, 1)
    return imgs.float() / 127.5 - 1.0


def test_patch_discriminator_learns_to_tell_views_from_blurred_ones(frames_dir):
    """The signal the tokenizer gets: real views against the same views with their detail averaged away (4x4)."""
    x = _views(frames_dir)
    blur = F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="bilinear", align_corners=False)
    train, test = slice(0, 24), slice(24, None)  # frames of scenario 0 (and one of 1) / the rest of scenario 1
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=16)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    losses = []
    for _ in range(40):
        i = torch.randint(0, 24, (8,))
        real, fake = disc(torch.cat([x[train][i], blur[train][i]])).chunk(2)
        loss = hinge_d_loss(real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    with torch.no_grad():
        real, fake = disc(x[test]).mean(dim=(1, 2, 3)), disc(blur[test]).mean(dim=(1, 2, 3))
    assert (real > fake).float().mean() > 0.9  # held-out views scored above their blurred copies


def test_adaptive_weight_balances_the_gradients_at_the_last_layer():
    w = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(8, 4)
    rec, adv = (x @ w).pow(2).mean(), 10.0 * (x @ w).mean()
    lam = adaptive_weight(rec, adv, w)
    g_rec, g_adv = torch.autograd.grad(rec, w, retain_graph=True)[0], torch.autograd.grad(adv, w)[0]
    assert torch.allclose(lam * g_adv.norm(), g_rec.norm(), rtol=1e-3)


def _config(**train) -> ViewsConfig:
    return ViewsConfig(
        data=DataConfig(image_size=(32, 56), heldout_fraction=0.25),
        tokenizer=TokenizerConfig(downsample=8, channels=8, channel_mult=(1, 2, 2), codebook_size=64, code_dim=16,
                                  dead_code_steps=10),
        generator=GeneratorConfig(d_model=32, layers=1, heads=2, cond_layers=1, mlp_ratio=2.0, bev_grid=8,
                                  bev_channels=8, fourier_freqs=4),
        train=ViewsTrainConfig(**{"tokenizer_steps": 20, "tokenizer_batch": 2, "tokenizer_lr": 3e-3,
                                  "warmup_steps": 5, "checkpoint_every": 10, "sample_every": 0, "device": "cpu",
                                  "threads": 1, "adversarial_weight": 0.5, "adversarial_start": 10,
                                  "discriminator_channels": 8, **train}))


def test_tokenizer_trains_with_the_adversarial_term_and_resumes_its_discriminator(frames_dir, tmp_path):
    from bevgen.views.train import train_views

    run = tmp_path / "run"
    torch.manual_seed(0)
    out = train_views(_config(), frames_dir, run, stage="tokenizer", progress=False)["tokenizer"]
    assert out["final_loss_mean20"] < out["first_loss"], out  # the first 10 steps are reconstruction only
    assert {"adv_g", "adv_d", "adv_lambda"} <= set(out["final"]) and out["final"]["adv_lambda"] > 0, out["final"]
    ckpt = torch.load(run / "checkpoints" / "tokenizer.pt", weights_only=True)
    disc = ckpt["discriminator"]
    assert ckpt["step"] == 20 and "discriminator_optimizer" in ckpt

    more = train_views(_config(tokenizer_steps=30), frames_dir, run, stage="tokenizer", resume=True,
                       progress=False)["tokenizer"]
    assert more["start_step"] == 20 and more["steps"] == 30
    after = torch.load(run / "checkpoints" / "tokenizer.pt", weights_only=True)["discriminator"]
    changed = [k for k in disc if disc[k].dtype.is_floating_point and not torch.equal(disc[k], after[k])]
    assert changed  # the resumed discriminator went on training

    plain = train_views(_config(adversarial_weight=0.0), frames_dir, tmp_path / "plain", stage="tokenizer",
                        progress=False)["tokenizer"]
    assert "adv_g" not in plain["final"]
    assert "discriminator" not in torch.load(tmp_path / "plain" / "checkpoints" / "tokenizer.pt", weights_only=True)
