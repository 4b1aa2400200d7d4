"""A decoder that reads the layout through every pixel (``tokenizer.layout_channels``): it starts as the
tokens-only decoder, refuses to run without the layout, and a tiny model trained with it learns to use it."""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")

from bevgen.render.dataset import merge_datasets  # noqa: E402
from bevgen.views.config import TokenizerConfig, ViewsConfig  # noqa: E402
from bevgen.views.projection import pixel_layout, projection_channels  # noqa: E402
from bevgen.views.tokenizer import VQAutoencoder  # noqa: E402
from tests.bevgen.test_views_model import (_one_thread, _synthetic_batch, _tiny_config,  # noqa: E402, F401
                                           frames_dir, trained)

LAYOUT = projection_channels(8, 4)


def test_layout_decoder_starts_as_the_tokens_only_decoder_and_needs_the_layout():
    torch.manual_seed(0)
    plain = VQAutoencoder(TokenizerConfig())
    aware = VQAutoencoder(TokenizerConfig(layout_channels=LAYOUT))
    missing, unexpected = aware.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("layout_in.") for k in missing)
    q = torch.randn(2, 32, 8, 14)
    layout = torch.rand(2, LAYOUT, 64, 112)
    torch.testing.assert_close(aware.run_decoder(q, layout), plain.run_decoder(q))  # zero-initialised injection
    # one injection per scale: the token grid and each of the three upsampling stages
    assert len(aware.layout_in) == 4 and sorted(aware._inject) == [1, 4, 7, 10]
    with pytest.raises(ValueError, match="layout through every pixel"):
        aware.run_decoder(q)
    with pytest.raises(ValueError, match="layout through every pixel"):
        aware.run_decoder(q, layout[:, :5])
    out = aware.run_decoder(q, layout)
    out.square().mean().backward()  # the injection is trainable from the first step (its last conv gets gradient)
    assert all(float(m[-1].weight.grad.abs().sum()) > 0 for m in aware.layout_in)


def test_config_refuses_a_layout_width_that_does_not_match_the_projection():
    with pytest.raises(ValueError, match="layout_channels"):
        ViewsConfig(tokenizer=TokenizerConfig(layout_channels=7))
    assert ViewsConfig(tokenizer=TokenizerConfig(layout_channels=projection_channels(8, 4))).tokenizer.layout_channels


def test_pixel_layout_is_the_token_projection_at_one_ray_per_pixel():
    from bevgen.views.generator import batch_boxes
    from bevgen.views.projection import layout_projection

    batch = _synthetic_batch(b=1, size=(32, 56))
    batch["bev"] = torch.zeros(1, 8, 200, 200)
    batch["bev"][:, 0, 100:, :] = 1  # drivable area behind the ego (raster rows below the centre: x < 0)
    per_pixel = pixel_layout(batch, (32, 56), 50.0, 4, 64)
    assert per_pixel.shape == (6, LAYOUT, 32, 56)
    per_token = layout_projection(batch["bev"], batch_boxes(batch), batch["K"], batch["T_cam_from_ego"], (4, 7), 8,
                                  8, 50.0, 4)[0]  # [v, h, w, c] with 8x8 rays per token = every pixel
    pooled = torch.nn.functional.avg_pool2d(per_pixel, 8).permute(0, 2, 3, 1)
    torch.testing.assert_close(pooled, per_token)
    # the back camera (index 4 in the nuScenes order) sees the drivable area on its lower half, the front none
    assert float(per_pixel[4, 0, 20:].mean()) > 0.9 and float(per_pixel[1, 0].max()) == 0


def test_layout_edges_mark_the_borders_of_what_the_views_draw():
    """Edges of the layout seen through the pixels: the drivable area's border and the horizon, one pixel either
    side; a raster channel left out of ``raster`` (a lane's centre line, not painted) adds none."""
    from bevgen.views.projection import layout_edges

    batch = _synthetic_batch(b=1, size=(32, 56))
    batch["bev"] = torch.zeros(1, 8, 200, 200)
    batch["bev"][:, 0, 100:, :] = 1  # drivable area behind the ego
    pixels = pixel_layout(batch, (32, 56), 50.0, 4, 64)
    edges = layout_edges(pixels, [0, 2, 3, 4, 5, 6, 7], 8, 4)
    assert edges.shape == (6, 1, 32, 56) and edges.dtype == torch.bool
    kept = pixels[:, [0, 2, 3, 4, 5, 6, 7, 8 + 4, LAYOUT - 1]]  # drawn raster channels, box hit, sky
    padded = torch.nn.functional.pad(kept, (1, 1, 1, 1), value=float("nan"))
    expected = torch.zeros_like(edges)
    for dy in (-1, 0, 1):  # a pixel whose 3x3 neighbourhood holds another value of any kept channel
        for dx in (-1, 0, 1):
            other = padded[..., 1 + dy:33 + dy, 1 + dx:57 + dx]
            expected |= ((other != kept) & ~other.isnan()).any(1, keepdim=True)
    assert torch.equal(edges, expected) and 0 < float(edges.float().mean()) < 0.3
    assert bool(edges[..., 1:, :][(pixels[:, -1:, 1:] != pixels[:, -1:, :-1])].all())  # the horizon, both sides
    assert float(edges[4].float().mean()) > float(edges[1].float().mean())  # the back view sees the road border too
    centre = {**batch, "bev": batch["bev"].clone()}
    centre["bev"][:, 1, 40:60, :] = 1  # a centre-line band ahead
    assert torch.equal(layout_edges(pixel_layout(centre, (32, 56), 50.0, 4, 64), [0, 2, 3, 4, 5, 6, 7], 8, 4), edges)
    assert not torch.equal(layout_edges(pixel_layout(centre, (32, 56), 50.0, 4, 64), range(8), 8, 4), edges)
    with pytest.raises(ValueError, match="raster channels"):
        layout_edges(pixels, [8], 8, 4)


def test_edge_weighted_reconstruction_loss_is_the_plain_one_under_even_weights():
    torch.manual_seed(0)
    tok = VQAutoencoder(TokenizerConfig())
    recon, x = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    plain = tok.reconstruction_loss(recon, x)
    even = tok.reconstruction_loss(recon, x, torch.full((2, 1, 16, 24), 4.0))
    for k in plain:
        torch.testing.assert_close(even[k], plain[k])
    mask = torch.zeros(2, 1, 16, 24)
    mask[..., 4:8, 6:12] = 1  # only these pixels count
    only = tok.reconstruction_loss(recon, x, mask)
    torch.testing.assert_close(only["l1"], (recon - x).abs()[..., 4:8, 6:12].mean())
    torch.testing.assert_close(only["mse"], ((recon - x) ** 2)[..., 4:8, 6:12].mean())


def _reconstruction_errors(pipe, data) -> tuple[float, float]:
    """Mean absolute error of the round trip of every frame with its own layout and with another frame's, on the
    pixels where the two layouts disagree about the drivable area (elsewhere the decoder sees the same input)."""
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.sample import fit_batch

    ds = FrameDataset(data)
    batch = fit_batch(default_collate([ds[i] for i in range(len(ds))]), pipe.image_size)
    swapped = {**batch, **{k: batch[k].roll(1, 0) for k in ("bev", "boxes", "classes", "box_valid")}}
    differs = (pipe.pixel_layout(batch)[:, 0] != pipe.pixel_layout(swapped)[:, 0]).view(len(ds), 6, 1,
                                                                                      *pipe.image_size)
    truth = batch["images"].float()

    def error(b: dict) -> float:
        err = (pipe.reconstruct(batch["images"], b).float() - truth).abs()
        return float((err * differs).sum() / (differs.sum() * 3))

    with pytest.raises(ValueError, match="reads the layout"):
        pipe.reconstruct(batch["images"])
    own, other = error(batch), error(swapped)
    return own, other


def test_tune_decoder_gives_a_trained_run_a_layout_decoder(trained, frames_dir, tmp_path):  # noqa: F811
    """The tokens-only run's decoder is tuned with the layout: encoder, codebook and generator unchanged, the loss
    falls, the decoder uses the layout, the run samples, and a finished run is not retrained."""
    from bevgen.views.decoder_tune import tune_decoder
    from bevgen.views.sample import load_views

    run, _ = trained
    out = tmp_path / "tuned"
    summary = tune_decoder(run, frames_dir, out, steps=60, lr=2e-3, checkpoint_every=20, progress=False)
    assert summary["steps"] == 60 and summary["frames"] == 8 and not summary["problems"], summary
    assert summary["final_loss_mean20"] < summary["first_loss"], summary
    base, tuned = load_views(run), load_views(out)
    assert tuned.tokenizer.cfg.layout_channels == LAYOUT and base.tokenizer.cfg.layout_channels == 0
    for name in ("encoder", "quantizer"):
        for (k, a), b in zip(getattr(base.tokenizer, name).state_dict().items(),
                             getattr(tuned.tokenizer, name).state_dict().values()):
            if k != "unused_steps":
                torch.testing.assert_close(a, b)
    for a, b in zip(base.generator.state_dict().values(), tuned.generator.state_dict().values()):
        torch.testing.assert_close(a, b)
    own, other = _reconstruction_errors(tuned, frames_dir)
    assert own < 0.9 * other, (own, other)  # measured 26.5 vs 35.6 grey levels (0.12% of the pixels differ)
    assert tuned(_synthetic_batch(b=1, size=(32, 56)), steps=2, seed=0).images.shape == (1, 6, 3, 32, 56)
    assert (out / "config.yaml").exists() and not (out / "checkpoints" / "decoder_tune.pt").exists()
    assert tune_decoder(run, frames_dir, out, steps=60, lr=2e-3, progress=False) == summary  # finished: as is
    with pytest.raises(ValueError, match="other settings.*steps: 60 there, 80 asked"):
        tune_decoder(run, frames_dir, out, steps=80, lr=2e-3, progress=False)
    with pytest.raises(ValueError, match="new directory"):
        tune_decoder(run, frames_dir, run, steps=1, progress=False)
    edged = tune_decoder(run, frames_dir, tmp_path / "edges", steps=20, lr=2e-3, edge_weight=3.0, progress=False)
    assert edged["edge_weight"] == 3.0 and edged["final_loss_mean20"] < edged["first_loss"], edged
    with pytest.raises(ValueError, match="edge_weight: 3.0 there, None asked"):  # another loss: not the same run
        tune_decoder(run, frames_dir, tmp_path / "edges", steps=20, lr=2e-3, progress=False)
    other = tmp_path / "more_frames"  # the same frames as another dataset: a finished run on other data is not it
    merge_datasets({"": frames_dir}, other)
    with pytest.raises(ValueError, match="other settings.*data: .* there, .*more_frames' asked"):
        tune_decoder(run, other, out, steps=60, lr=2e-3, progress=False)


def test_tiny_model_with_a_layout_decoder_trains_and_reads_the_layout(frames_dir, tmp_path):  # noqa: F811
    """Trained with the layout from scratch, the decoder reconstructs a frame better with its own layout than with
    another frame's where the two differ (the layout carries information the decoder uses), and the pipeline
    samples with it."""
    from bevgen.views.sample import load_views
    from bevgen.views.train import train_views

    cfg = _tiny_config(tokenizer_steps=60, generator_steps=4)
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, layout_channels=LAYOUT))
    torch.manual_seed(0)
    summary = train_views(cfg, frames_dir, tmp_path / "run", stage="all", progress=False)
    tok = summary["tokenizer"]
    assert tok["final_loss_mean20"] < 0.7 * tok["first_loss"], tok
    pipe = load_views(tmp_path / "run")
    assert pipe.tokenizer.cfg.layout_channels == LAYOUT
    own, other = _reconstruction_errors(pipe, frames_dir)
    assert own < 0.9 * other, (own, other)  # measured 27.1 vs 35.7
    out = pipe(_synthetic_batch(b=1, size=(32, 56)), steps=2, seed=0)
    assert out.images.shape == (1, 6, 3, 32, 56)


def test_tune_decoder_resumes_an_interrupted_run(trained, frames_dir, tmp_path, monkeypatch):  # noqa: F811
    from bevgen.views.decoder_tune import tune_decoder

    run, _ = trained
    out, calls = tmp_path / "tuned", []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 15:
            raise RuntimeError("interrupted")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_die)
    with pytest.raises(RuntimeError, match="interrupted"):
        tune_decoder(run, frames_dir, out, steps=20, checkpoint_every=10, progress=False)
    state = torch.load(out / "checkpoints" / "decoder_tune.pt", weights_only=True)
    assert state["step"] == 10 and len(state["losses"]) == 10 and not (out / "decoder_tune.json").exists()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    summary = tune_decoder(run, frames_dir, out, steps=20, checkpoint_every=10, progress=False)
    assert summary["start_step"] == 10 and summary["steps"] == 20 and summary["first_loss"] == state["first_loss"]
    assert (out / "checkpoints" / "tokenizer.pt").exists() and not (out / "checkpoints" / "decoder_tune.pt").exists()


def test_tune_decoder_frozen_trains_only_the_layout_injection(trained, frames_dir, tmp_path):  # noqa: F811
    from bevgen.views.decoder_tune import tune_decoder
    from bevgen.views.sample import load_views

    run, _ = trained
    summary = tune_decoder(run, frames_dir, tmp_path / "frozen", steps=10, lr=2e-3, train_decoder=False,
                           progress=False)
    assert summary["train_decoder"] is False
    base, tuned = load_views(run).tokenizer, load_views(tmp_path / "frozen").tokenizer
    for a, b in zip(base.decoder.state_dict().values(), tuned.decoder.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert all(float(m[-1].weight.detach().abs().sum()) > 0 for m in tuned.layout_in)  # the injection left zero
    with pytest.raises(ValueError, match="nothing to train"):
        tune_decoder(run, frames_dir, tmp_path / "none", steps=1, layout=False, train_decoder=False, progress=False)


def test_tune_decoder_command(trained, frames_dir, tmp_path):  # noqa: F811
    """``bevgen views tune-decoder``: a frozen-decoder run from the command line, and clear errors on bad input."""
    from typer.testing import CliRunner

    from bevgen.cli import app

    run, _ = trained
    runner = CliRunner()
    base = ["views", "tune-decoder", "--ckpt", str(run), "--no-progress", "--steps", "3"]
    res = runner.invoke(app, base + ["--data", str(frames_dir), "--out", str(tmp_path / "t"), "--freeze-decoder",
                                      "--generated", "0.5"])
    assert res.exit_code == 0, res.output
    done = json.loads((tmp_path / "t" / "decoder_tune.json").read_text())
    assert done["train_decoder"] is False and done["generated"] == 0.5 and "previous" not in done
    # tuning the tuned run again (a second segment, as make checkpoints does) keeps the first on record
    res = runner.invoke(app, ["views", "tune-decoder", "--ckpt", str(tmp_path / "t"), "--no-progress", "--steps", "2",
                              "--data", str(frames_dir), "--out", str(tmp_path / "t2"), "--freeze-decoder",
                              "--edge-weight", "10"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "t2" / "decoder_tune.json").read_text())
    assert again["steps"] == 2 and again["edge_weight"] == 10 and again["previous"] == done
    res = runner.invoke(app, base + ["--data", str(tmp_path), "--out", str(tmp_path / "u")])
    assert res.exit_code != 0 and "not a views dataset" in " ".join(res.output.split())
    res = runner.invoke(app, ["views", "tune-decoder", "--ckpt", str(tmp_path / "nope"), "--data", str(frames_dir),
                              "--out", str(tmp_path / "v")])
    assert res.exit_code != 0 and "not a trained views run" in " ".join(res.output.split())
    assert not (tmp_path / "u").exists() and not (tmp_path / "v").exists()


def test_generated_tokens_are_seeded_codebook_guesses_and_tune_runs_on_them(trained, frames_dir, tmp_path):  # noqa: F811
    """``tune_decoder(generated=...)``: the frames chosen get the generator's one-step guesses (codes of the
    codebook, seeded); a share of 0 keeps every true token; the share is checked and recorded."""
    from bevgen.views.config import with_legacy_defaults
    from bevgen.views.decoder_tune import _generated_tokens, tune_decoder
    from bevgen.views.sample import images_to_unit, load_views
    from bevgen.views.train import _batches, _frames, _load_items
    from runkit.checkpoint import load_checkpoint
    from runkit.config import from_dict

    run, _ = trained
    gen_state = load_checkpoint(run / "checkpoints" / "generator.pt")
    cfg = from_dict(ViewsConfig, with_legacy_defaults(gen_state["config"]))
    train, _ = _frames(cfg, frames_dir, None)
    batch = next(_batches(_load_items(frames_dir, train, cfg, []), 2, cfg, torch.Generator().manual_seed(0)))
    tok = load_views(run).tokenizer
    x = images_to_unit(batch["images"].flatten(0, 1))
    with torch.no_grad():
        q, idx, _ = tok._quantise(x)
    codes = tok.quantizer.codes
    corrupt = _generated_tokens(cfg, gen_state, seed=0)
    torch.testing.assert_close(corrupt(batch, idx, codes, 0.0), q)  # share 0: the true tokens
    out = corrupt(batch, idx, codes, 1.0)
    assert out.shape == q.shape
    same = (out - q).abs().amax(1) < 1e-6  # [b v, h, w] tokens equal to the truth (kept, or guessed right)
    assert bool((same.view(2, -1).float().mean(1) < 1).all())  # every frame gets some of the generator's tokens
    flat = out.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    assert float((flat @ codes.T).amax(1).min()) > 1 - 1e-5  # every token is a code of the codebook
    again = _generated_tokens(cfg, gen_state, seed=0)  # seeded: the same calls draw the same tokens
    again(batch, idx, codes, 0.0)
    torch.testing.assert_close(again(batch, idx, codes, 1.0), out)
    summary = tune_decoder(run, frames_dir, tmp_path / "g", steps=3, train_decoder=False, generated=0.5,
                           progress=False)
    assert summary["generated"] == 0.5
    with pytest.raises(ValueError, match="generated must lie"):
        tune_decoder(run, frames_dir, tmp_path / "bad", steps=1, generated=1.5, progress=False)
