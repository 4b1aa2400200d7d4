"""Tests for the views model (bevgen.views: tokenizer, camera-aware attention, generator, sampling, train)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bevgen.cameras import CameraRig, nuscenes_rig, project_points  # noqa: E402
from bevgen.views.attention import (GeometricBias, azimuth_cosine, ray_cosine,  # noqa: E402
                                    token_rays)
from bevgen.views.config import (DataConfig, GeneratorConfig, TokenizerConfig, ViewsTrainConfig,  # noqa: E402
                                 ViewsConfig)

FRONT, BACK = 1, 4


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _yawed_rig(rig: CameraRig, yaw: float, shift=(0.3, -0.2, 0.1)) -> CameraRig:
    """The rig mounted rotated by ``yaw`` about z and shifted: a different per-sample calibration."""
    c, s = math.cos(yaw), math.sin(yaw)
    T_ego_from_mount = np.eye(4)
    T_ego_from_mount[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T_ego_from_mount[:3, 3] = shift
    return CameraRig(rig.names, rig.K, rig.T_cam_from_ego @ np.linalg.inv(T_ego_from_mount), rig.image_size)


def _rig_tensors(rigs: list[CameraRig]) -> tuple:
    K = torch.tensor(np.stack([r.K for r in rigs]), dtype=torch.float32)
    T = torch.tensor(np.stack([r.T_cam_from_ego for r in rigs]), dtype=torch.float32)
    return K, T


def test_token_rays_match_the_rig_and_point_at_projected_points():
    stride = 8
    rigs = [nuscenes_rig((64, 112)), _yawed_rig(nuscenes_rig((64, 112)), 0.4)]
    K, T = _rig_tensors(rigs)
    rays, centres = token_rays(K, T, (8, 14), stride)
    assert rays.shape == (2, 6, 8, 14, 3) and centres.shape == (2, 6, 3)
    for b, rig in enumerate(rigs):  # same math as the numpy rig, per sample
        np.testing.assert_allclose(rays[b].numpy(), rig.rays(stride), atol=1e-5)
        np.testing.assert_allclose(centres[b].numpy(), rig.camera_centers, atol=1e-5)
    # a 3D point projected into a view: the ray of the token cell holding its pixel points at it
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-30, 30, (200, 2)), rng.uniform(0, 3, (200, 1))], 1)
    checked = 0
    for b, rig in enumerate(rigs):
        uv, _, inside = project_points(rig, pts)
        f = rig.K[:, 0, 0]
        for v, n in zip(*np.nonzero(inside)):
            i, j = int(uv[v, n, 1] // stride), int(uv[v, n, 0] // stride)
            to_pt = pts[n] - rig.camera_centers[v]
            cos = float(rays[b, v, i, j].double() @ torch.tensor(to_pt / np.linalg.norm(to_pt)))
            # the pixel lies within half a cell diagonal of the cell centre
            assert math.degrees(math.acos(min(1.0, cos))) <= math.degrees(stride * 0.75 / f[v]) + 0.05
            checked += 1
    assert checked > 50


def test_ray_bias_is_symmetric_and_maximal_for_identical_rays():
    K, T = _rig_tensors([nuscenes_rig((64, 112))])
    rays, centres = token_rays(K, T, (8, 14), 8)
    cos = ray_cosine(rays.flatten(1, 3))  # [1, n, n]
    bias = GeometricBias(heads=3, init=2.0)
    with torch.no_grad():
        bias.scale.copy_(torch.tensor([0.5, 1.0, 3.0]))
    b = bias(cos)
    assert b.shape == (1, 3, 672, 672)
    torch.testing.assert_close(b, b.transpose(-1, -2))
    diag = torch.diagonal(b, dim1=-2, dim2=-1)
    torch.testing.assert_close(diag, bias.scale[None, :, None].expand_as(diag), atol=1e-5, rtol=0)
    assert (b.amax(-1) <= diag + 1e-5).all()
    # neighbouring views overlap at their borders: some cross-view pairs are far more similar than others
    n_view = 8 * 14
    front_right_edge = cos[0, n_view: 2 * n_view].view(8, 14, -1)[:, -1]  # FRONT's rightmost column
    front_right_view = front_right_edge[:, 2 * n_view: 3 * n_view].amax()
    back_view = front_right_edge[:, 4 * n_view: 5 * n_view].amax()
    assert front_right_view > 0.95 and back_view < 0.0
    # key mask: invalid keys get the most negative value
    masked = bias(cos, torch.arange(672)[None] < 600)
    assert (masked[..., 600:] == torch.finfo(torch.float32).min).all()


def test_azimuth_bias_rewards_bev_cells_along_the_ray():
    K, T = _rig_tensors([nuscenes_rig((64, 112))])
    rays, centres = token_rays(K, T, (8, 14), 8)
    ahead, behind, left = [40.0, centres[0, FRONT, 1]], [-40.0, 0.0], [0.0, 40.0]
    cos = azimuth_cosine(rays, centres, torch.tensor([[ahead, behind, left]]))  # [1, n, 3]
    front_centre = FRONT * 112 + 4 * 14 + 7  # token near the FRONT image centre
    assert cos[0, front_centre, 0] > 0.99 and cos[0, front_centre, 1] < -0.99 and abs(cos[0, front_centre, 2]) < 0.2
    back_centre = BACK * 112 + 4 * 14 + 7
    assert cos[0, back_centre, 1] > 0.99


def test_config_checks_cross_fields():
    with pytest.raises(ValueError, match="divisible"):
        ViewsConfig(data=DataConfig(image_size=(60, 112)))
    with pytest.raises(ValueError, match="channel_mult"):
        TokenizerConfig(downsample=16, channel_mult=(1, 2))
    with pytest.raises(ValueError, match="heads"):
        GeneratorConfig(d_model=30, heads=4)


# ---- end to end on rendered frames ------------------------------------------------------------------
def _tiny_config(**train) -> ViewsConfig:
    """A test-sized model: 32x56 views, 8x tokenizer -> 4x7 tokens per view (168 per frame)."""
    return ViewsConfig(
        data=DataConfig(image_size=(32, 56), heldout_fraction=0.25),
        tokenizer=TokenizerConfig(downsample=8, channels=8, channel_mult=(1, 2, 2), codebook_size=64, code_dim=16,
                                  dead_code_steps=10),
        generator=GeneratorConfig(d_model=32, layers=1, heads=2, cond_layers=1, mlp_ratio=2.0, bev_grid=8,
                                  bev_channels=8, fourier_freqs=4),
        train=ViewsTrainConfig(**{"tokenizer_steps": 30, "generator_steps": 40, "tokenizer_batch": 2,
                                  "generator_batch": 4, "tokenizer_lr": 3e-3, "generator_lr": 3e-3, "warmup_steps": 5,
                                  "checkpoint_every": 20, "sample_every": 0, "sample_steps": 4, "device": "cpu",
                                  "threads": 1, **train}))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """Rendered 32x56 frames of three straight-road scenarios (different headings and speeds)."""
    import sys
    from pathlib import Path

    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import write_straight_road_scenarios

    root = tmp_path_factory.mktemp("views")
    write_straight_road_scenarios(root / "scenarios", [(0.0, 10.0), (0.7, 6.0), (-1.2, 12.0)])
    summary = write_synthetic_dataset(root / "scenarios", root / "frames", SynthConfig(image_size=(32, 56)),
                                      frames_per_scenario=4, frame_stride=5, first_frame=0, progress=False)
    assert summary["num_frames"] == 12, summary
    return root / "frames"


@pytest.fixture(scope="module")
def trained(frames_dir, tmp_path_factory):
    from bevgen.views.train import train_views

    run = tmp_path_factory.mktemp("views_run") / "run"
    torch.manual_seed(0)
    return run, train_views(_tiny_config(), frames_dir, run, stage="all", progress=False)


def test_train_views_losses_fall_and_codebook_is_used(trained):
    run, summary = trained
    assert summary["frames"] == {"train": 8, "heldout": 4} and not summary["problems"]
    tok, gen = summary["tokenizer"], summary["generator"]
    assert tok["steps"] == 30 and tok["final_loss_mean20"] < 0.7 * tok["first_loss"], tok
    # generator: cross-entropy starts at ln(64) = 4.16 nats (uniform over the codebook)
    assert gen["steps"] == 40 and gen["first_loss"] > 3.9 and gen["final_loss_mean20"] < gen["first_loss"] - 0.4, gen
    assert summary["tokenizer_usage"]["usage"] > 0.1 and summary["tokenizer_usage"]["perplexity"] > 4
    import json

    split = json.loads((run / "split.json").read_text())  # by scenario: no held-out scenario is trained on
    assert (len(split["train"]), len(split["heldout"])) == (8, 4)
    assert not {n.rsplit("__", 1)[0] for n in split["train"]} & {n.rsplit("__", 1)[0] for n in split["heldout"]}
    assert json.loads((run / "train_summary.json").read_text())["generator"]["steps"] == 40
    for stage, steps in (("tokenizer", 30), ("generator", 40)):
        assert torch.load(run / "checkpoints" / f"{stage}.pt", weights_only=True)["step"] == steps, stage
    assert "generator_steps: 40" in (run / "config.yaml").read_text()
    assert list((run / "samples").glob("generator_*.png"))  # preview grid written at the end


def test_sampling_parallel_and_autoregressive_give_six_views(trained, frames_dir):
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.sample import load_views

    pipe = load_views(trained[0])
    batch = default_collate([FrameDataset(frames_dir)[i] for i in (0, 5)])  # 32x56 frames
    par = pipe(batch, mode="parallel", steps=4, guidance=1.0, seed=3).images
    assert par.shape == (2, 6, 3, 32, 56) and par.dtype == torch.uint8
    torch.testing.assert_close(par, pipe(batch, mode="parallel", steps=4, guidance=1.0, seed=3).images)  # seeded
    assert not torch.equal(par, pipe(batch, mode="parallel", steps=4, guidance=1.0, seed=4).images)  # by the seed
    ar = pipe({k: v[:1] for k, v in batch.items() if k != "name"}, mode="autoregressive", guidance=1.0, seed=3).images
    assert ar.shape == (1, 6, 3, 32, 56) and ar.dtype == torch.uint8
    assert pipe.image_size == (32, 56) and pipe.num_views == 6
    # the token temperature defaults to the config's train.sample_temperature (greedy here)
    from bevgen.views.sample import ViewsPipeline

    greedy_cfg = dataclasses.replace(pipe.config, train=dataclasses.replace(pipe.config.train, sample_temperature=0.0))
    greedy = ViewsPipeline(pipe.tokenizer, pipe.generator, greedy_cfg)
    row = {k: v[:1] for k, v in batch.items() if k != "name"}
    t0 = pipe(row, mode="autoregressive", guidance=1.0, seed=3, temperature=0.0).images
    torch.testing.assert_close(greedy(row, mode="autoregressive", guidance=1.0, seed=7).images, t0)
    assert not torch.equal(pipe(row, mode="autoregressive", guidance=1.0, seed=7).images, t0)


def test_pipeline_takes_a_bev_layout_and_a_rig(trained):
    """pipe(layout, rig) conditions exactly like the frame-file batch of the same layout and rig, at any rig
    image size (K is rescaled once), and names the views after the rig's cameras."""
    from bevgen.cameras import nuscenes_rig
    from bevgen.layout import BevConfig, BevRasterizer
    from bevgen.views.cli import layout_arrays
    from bevgen.views.figures import frame_batch
    from bevgen.views.sample import ViewsOutput, load_views
    from sim_bridge.scenario import Scenario
    from tests.conftest import make_varied_road_scenario

    pipe = load_views(trained[0])
    sc = Scenario.from_dict(make_varied_road_scenario(3))
    layout = BevRasterizer(sc, BevConfig(range_m=pipe.config.data.bev_range_m))(4)
    typed = pipe(layout, nuscenes_rig(pipe.image_size), steps=3, seed=5)
    assert isinstance(typed, ViewsOutput) and typed.camera_names[1] == "CAM_FRONT"
    from_batch = pipe(frame_batch(layout_arrays(sc, 4, pipe.image_size, pipe.config.data.bev_range_m)), steps=3, seed=5)
    torch.testing.assert_close(typed.images, from_batch.images, rtol=0, atol=0)
    two = pipe([layout, layout], nuscenes_rig((900, 1600)), steps=3, seed=5)  # full-size rig: K rescaled
    assert two.images.shape == (2, 6, 3, 32, 56) and two.numpy().shape == (2, 6, 32, 56, 3)
    with pytest.raises(ValueError, match="rig"):
        pipe(layout)


def test_checkpoint_resume_round_trip(trained, frames_dir, tmp_path):
    import shutil

    from bevgen.views.sample import load_views
    from bevgen.views.train import train_views

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    with pytest.raises(FileExistsError):
        train_views(_tiny_config(), frames_dir, run, stage="generator", progress=False)
    before = load_views(run).generator.state_dict()
    out = train_views(_tiny_config(generator_steps=45), frames_dir, run, stage="generator", resume=True,
                      progress=False)
    assert out["generator"]["start_step"] == 40 and out["generator"]["steps"] == 45 and "tokenizer" not in out
    ckpt = torch.load(run / "checkpoints" / "generator.pt", weights_only=True)
    assert ckpt["step"] == 45 and set(ckpt) == {"model", "optimizer", "config", "step", "best_metric"}
    after = load_views(run).generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # training continued
    tok_ckpt = torch.load(run / "checkpoints" / "tokenizer.pt", weights_only=True)
    assert tok_ckpt["step"] == 30  # the frozen tokenizer was not retrained


def test_fit_batch_resizes_images_and_scales_K_like_the_rig():
    from bevgen.views.sample import fit_batch

    rig = nuscenes_rig((128, 224))
    K, T = _rig_tensors([rig])
    images = torch.zeros(1, 6, 3, 128, 224, dtype=torch.uint8)
    images[..., :64, :] = 200  # top half bright: survives area resizing exactly
    out = fit_batch({"images": images, "K": K, "T_cam_from_ego": T}, (64, 112))
    assert out["images"].shape == (1, 6, 3, 64, 112) and out["images"].dtype == torch.uint8
    assert (out["images"][..., :32, :] == 200).all() and (out["images"][..., 32:, :] == 0).all()
    np.testing.assert_allclose(out["K"][0].numpy(), rig.resized((64, 112)).K, rtol=1e-6)
    torch.testing.assert_close(out["T_cam_from_ego"], T)
    no_images = fit_batch({"K": K}, (64, 112), rig_size=(128, 224))  # K of another size, no images
    torch.testing.assert_close(no_images["K"], out["K"])


# ---- review fixes: pipeline modes, short datasets, resume checks, missing frames --------------------------
def _synthetic_batch(b: int = 1, size=(32, 56)) -> dict:
    """A batch of b frames with the nuScenes rig at ``size``, an empty BEV and no boxes (no dataset needed)."""
    K, T = _rig_tensors([nuscenes_rig(size)] * b)
    return {"images": torch.zeros(b, 6, 3, *size, dtype=torch.uint8), "bev": torch.zeros(b, 8, 64, 64),
            "boxes": torch.zeros(b, 4, 7), "classes": torch.zeros(b, 4, dtype=torch.long),
            "box_valid": torch.zeros(b, 4, dtype=torch.bool), "K": K, "T_cam_from_ego": T}


def test_pipeline_samples_in_eval_mode_and_restores_training_mode():
    from bevgen.views.sample import ViewsPipeline, build_models

    cfg = _tiny_config()
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, dropout=0.5))
    tok, gen = build_models(cfg)
    tok.train(), gen.train()
    pipe = ViewsPipeline(tok, gen, cfg)
    assert gen.training and tok.training  # the constructor leaves the modes alone (a trainer holds one)
    seen = []
    gen.blocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    out = pipe(_synthetic_batch(), steps=2, seed=0)
    assert out.images.shape == (1, 6, 3, 32, 56) and seen and not any(seen)  # dropout off while sampling
    assert all(m.training for m in gen.modules()) and all(m.training for m in tok.modules())  # restored
    pipe.reconstruct(_synthetic_batch()["images"])
    assert gen.training and tok.training
    gen.eval()
    pipe(_synthetic_batch(), steps=1, seed=0)
    assert not gen.training  # an eval-mode model stays in eval mode


def test_uncached_batches_with_fewer_frames_than_a_batch():
    from bevgen.views.train import _batches

    cfg = dataclasses.replace(_tiny_config(), data=dataclasses.replace(_tiny_config().data, cache_in_memory=False))
    frames = [{k: v[0] for k, v in _synthetic_batch().items()} for _ in range(2)]

    class Source:  # a FrameDataset stand-in (not a list: goes through the DataLoader)
        def __len__(self):
            return len(frames)

        def __getitem__(self, i):
            return frames[i]

    batches = _batches(Source(), 4, cfg, torch.Generator().manual_seed(0))
    for _ in range(3):  # the short batch is kept, epoch after epoch (drop_last would spin forever)
        assert next(batches)["images"].shape[0] == 2
    empty = Source()
    frames_backup, frames[:] = list(frames), []
    with pytest.raises(ValueError, match="no training frames"):
        next(_batches(empty, 4, cfg, torch.Generator()))
    frames[:] = frames_backup


def test_resume_refuses_another_model_or_data_config(trained, frames_dir, tmp_path):
    import shutil

    from bevgen.views.train import train_views

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    split = (run / "split.json").read_text()
    other = _tiny_config(generator_steps=45)
    other = dataclasses.replace(other, generator=dataclasses.replace(other.generator, d_model=48),
                                data=dataclasses.replace(other.data, heldout_fraction=0.5))
    with pytest.raises(ValueError) as err:
        train_views(other, frames_dir, run, stage="generator", resume=True, progress=False)
    assert "generator.d_model: checkpoint 32, config 48" in str(err.value) and "data.heldout_fraction" in str(err.value)
    # a train-only change (more steps, a reading knob) resumes, and the split is reused as written
    ok = _tiny_config(generator_steps=41)
    ok = dataclasses.replace(ok, data=dataclasses.replace(ok.data, cache_in_memory=False))
    out = train_views(ok, frames_dir, run, stage="generator", resume=True, progress=False)
    assert out["generator"]["start_step"] == 40 and (run / "split.json").read_text() == split


def test_merged_datasets_fine_tune_from_a_trained_run_keeping_its_held_out_frames(trained, frames_dir, tmp_path):
    import json
    import shutil

    from bevgen.render.dataset import FrameDataset, merge_datasets
    from bevgen.views.train import train_views

    merged = tmp_path / "merged"
    index = merge_datasets({"": frames_dir, "aug": frames_dir}, merged)  # the same frames twice, second one tagged
    assert len(index["frames"]) == 24 and index["source"] == "merged" and (merged / "frames").is_dir()
    ds = FrameDataset(merged, names=[n for n in index["frames"] if n.startswith("aug-")])
    source = FrameDataset(frames_dir, names=[ds.names[0].removeprefix("aug-")])
    assert len(ds) == 12 and torch.equal(ds[0]["images"], source[0]["images"])
    other = tmp_path / "other"  # another rig: refused
    shutil.copytree(frames_dir, other)
    odd = json.loads((other / "index.json").read_text())
    odd["rig"]["K"][0][0][0] += 1.0
    (other / "index.json").write_text(json.dumps(odd))
    with pytest.raises(ValueError, match="rig"):
        merge_datasets({"": frames_dir, "b": other}, tmp_path / "bad")

    base, run = trained[0], tmp_path / "ft"
    with pytest.raises(ValueError, match="generator_steps"):  # nothing to train: said, not silently skipped
        train_views(_tiny_config(), merged, run, stage="generator", progress=False, init_from=base)
    out = train_views(_tiny_config(generator_steps=50), merged, run, stage="generator", progress=False, init_from=base)
    split, base_split = (json.loads((r / "split.json").read_text()) for r in (run, base))
    assert split["heldout"] == base_split["heldout"] and len(split["train"]) == 20  # 8 base + 12 tagged frames
    g = out["generator"]
    assert (g["start_step"], g["steps"]) == (40, 50)
    # it starts from the trained weights: its first loss is near where the base run ended, not at ln(64) = 4.16
    base_gen = trained[1]["generator"]
    assert g["first_loss"] < min(base_gen["final_loss_mean20"] + 0.3, base_gen["first_loss"] - 0.4), (g, base_gen)
    ck = torch.load(run / "checkpoints" / "generator.pt", weights_only=True)
    assert ck["step"] == 50 and "optimizer" in ck
    assert torch.load(run / "checkpoints" / "tokenizer.pt", weights_only=True)["step"] == 30
    resumed = train_views(_tiny_config(generator_steps=52), merged, run, stage="generator", progress=False,
                          init_from=base)  # an interrupted fine-tune continues from its own checkpoints
    assert resumed["generator"]["start_step"] == 50


def test_load_views_rejects_a_tokenizer_of_another_config(trained, tmp_path):
    import shutil

    from bevgen.views.sample import load_views

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    ckpt = torch.load(run / "checkpoints" / "tokenizer.pt", weights_only=True)
    ckpt["config"]["tokenizer"]["commitment"] = 0.5
    ckpt["config"]["data"]["image_size"] = [64, 112]
    torch.save(ckpt, run / "checkpoints" / "tokenizer.pt")
    with pytest.raises(ValueError, match="tokenizer.commitment") as err:
        load_views(run)
    assert "data.image_size" in str(err.value)


def test_missing_frame_files_are_reported_and_skipped(frames_dir, tmp_path):
    import json
    import shutil

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.bevseg import BevSegConfig, load_split
    from bevgen.views.bevseg_train import _resolve_config
    from bevgen.views.train import _load_items

    root = tmp_path / "frames"
    shutil.copytree(frames_dir, root)
    names = json.loads((root / "index.json").read_text())["frames"]
    (root / "frames" / f"{names[1]}.npz").unlink()
    ds = FrameDataset(root)
    assert ds.missing == [names[1]] and len(ds) == len(names) - 1 and names[1] not in ds.names
    problems: list[str] = []
    items = _load_items(root, names[:3], _tiny_config(), problems)
    assert len(items) == 2 and problems == [f"{names[1]}: frame file missing"]
    data = load_split(root, names[:3], _resolve_config(BevSegConfig(), root))
    assert data["names"] == [names[0], names[2]] and any(names[1] in p for p in data["problems"])
    with pytest.raises(FileNotFoundError, match="all 1 requested"):
        FrameDataset(root, names=[names[1]])  # nothing left


def test_sequence_keeps_unchanged_tokens_and_redraws_changed_ones(trained, frames_dir):
    """A drive decoded as a sequence: a frame whose layout did not change comes out identical (no flicker); with
    keep_below=0 every frame is decoded on its own, exactly as a single-frame call with the same seed."""
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.sample import load_views

    pipe = load_views(trained[0])
    ds = FrameDataset(frames_dir)
    frames = [ds[i] for i in (0, 0, 1)]  # the same frame twice, then the next frame of the scenario
    batch = {k: v for k, v in default_collate(frames).items() if k != "name"}
    seq = pipe.sequence(batch, steps=4, seed=5).images
    assert seq.shape == (3, 6, 3, 32, 56)
    torch.testing.assert_close(seq[1], seq[0])  # unchanged layout: every token kept
    single = [pipe({k: v[i:i + 1] for k, v in batch.items()}, steps=4, seed=5).images[0] for i in range(3)]
    torch.testing.assert_close(seq[0], single[0])  # the first frame is an ordinary sample
    fresh = pipe.sequence(batch, steps=4, seed=5, keep_below=0).images
    for i in range(3):
        torch.testing.assert_close(fresh[i], single[i])
    # frame 2 moved on: some tokens kept from frame 1, some redrawn
    proj = pipe.generator.projection(pipe._prepare(batch, None, None, None, None)[0])
    kept = ((proj[2] - proj[1]).abs().amax(-1) < 0.1).float().mean()
    assert 0 < kept < 1, kept


def test_decode_parallel_from_known_tokens_keeps_them():
    from bevgen.views.sample import ViewsPipeline, build_models

    cfg = _tiny_config()
    tok, gen = build_models(cfg)
    pipe = ViewsPipeline(tok.eval(), gen.eval(), cfg)
    batch = _synthetic_batch(2)
    ctx = pipe._context(pipe._prepare(batch, None, None, 1.0, None)[0], 1.0)
    n, mask = gen.num_tokens, gen.mask_id
    init = torch.full((2, n), mask)
    known = torch.rand(2, n, generator=torch.Generator().manual_seed(0)) < 0.7
    init[known] = torch.randint(cfg.tokenizer.codebook_size, (int(known.sum()),))
    init[1] = torch.randint(cfg.tokenizer.codebook_size, (n,))  # row 1 fully known: left as it is
    with torch.no_grad():
        out = pipe.decode_parallel(ctx, 2, 4, 1.0, 1.0, torch.Generator().manual_seed(1), init=init)
    assert (out != mask).all()
    torch.testing.assert_close(out[init != mask], init[init != mask])


def test_cached_attention_biases_give_the_same_logits():
    """Sampling caches the attention biases in the context; the logits must not change (training recomputes)."""
    from bevgen.views.sample import build_models

    cfg = _tiny_config()
    _, gen = build_models(cfg)
    gen.eval()
    with torch.no_grad():  # non-trivial bias scales, so a stale or missing bias would show
        for blk in gen.blocks:
            blk.self_bias.scale.copy_(torch.linspace(-3, 3, cfg.generator.heads))
            blk.cross_bias.scale.copy_(torch.linspace(2, -2, cfg.generator.heads))
    batch = _synthetic_batch()
    b, n = batch["bev"].shape[0], gen.num_tokens
    tokens = torch.randint(0, gen.codebook_size + 1, (b, n), generator=torch.Generator().manual_seed(0))
    null = torch.zeros(b, dtype=torch.bool)
    ctx = gen.context(batch, null)
    fresh = gen.logits(tokens, ctx)  # grad enabled: nothing cached
    assert ctx.biases is None
    with torch.no_grad():
        first = gen.logits(tokens, ctx)
        assert ctx.biases is not None and len(ctx.biases[1]) == len(gen.blocks)
        second = gen.logits(tokens.flip(-1), ctx)  # reuses the cache
        again = gen.logits(tokens.flip(-1), gen.context(batch, null))
    torch.testing.assert_close(first, fresh.detach())
    torch.testing.assert_close(second, again)
