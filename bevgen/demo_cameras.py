"""The camera half of ``bevgen demo``: synthetic camera data, BEV -> six views, a six-camera drive, scene3d edits.

Stages (called from :func:`bevgen.demo.run_demo`, each cached in the run directory):
  * synthetic six-camera datasets of the demo's (augmented) training scenarios and of its held-out scenarios
  * the tiny camera-view model and the tiny scene3d model: the shipped checkpoints (``make checkpoints``) when
    present, else trained here with the step counts of :class:`CamerasDemoConfig`; the report says which
  * BEV beside generated and ground-truth views for held-out frames, and their metrics (BEV IoU vs the
    ground-truth oracle, seam consistency, FID/KID with the extractor named)
  * the trained agent's drive: per frame BEV -> six generated views, as a GIF, plus temporal consistency
  * scene3d: a held-out layout rendered, then edited (move / rotate / delete / add / restyle), a camera orbit
    and a moving car as GIFs, and its metrics
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bevgen import report as rp
from bevgen.pretrained import REPO, shipped
from bevgen.render.dataset import load_frame, write_synthetic_dataset
from bevgen.render.scene import SynthConfig
from bevgen.rollout import MissingEncoderError, save_animation
from bevgen.scene3d import edit as ed
from bevgen.scene3d.data import load_scene3d_data
from bevgen.scene3d.layout import layout_from_frame
from bevgen.scene3d.metrics import DEFINITIONS as SCENE3D
from bevgen.scene3d.metrics import evaluate_scene3d
from bevgen.views.config import ViewsConfig
from bevgen.views.drive import generate_drive_views, temporal_change
from bevgen.views.figures import COND_KEYS, bev_image, views_figure
from bevgen.views.train import train_views
from runkit.config import load_config

# torch and the torch-based modules (views.sample/metrics/bevseg*, scene3d.train) are imported lazily:
# optional `ml` extra, loaded only by the stages that train or evaluate models.

__all__ = ["CamerasDemoConfig", "camera_data", "views_model", "scene3d_model", "views_stage", "drive_stage",
           "scene3d_stage", "camera_sections"]


@dataclass(frozen=True)
class CamerasDemoConfig:
    """Camera-side settings of the demo."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    """Synthetic renderer (image size, buildings, ...)."""
    frames_per_scenario: int = 6
    """Rendered frames per scenario."""
    frame_stride: int = 30
    """Steps between rendered frames."""
    showcase_frames: int = 4
    """Held-out frames shown as BEV | generated | ground truth."""
    eval_frames: int = 24
    """Held-out frames scored by the view metrics."""
    bevseg_steps: int = 400
    """Training steps of the BEV segmentation network used by the IoU metrics."""
    drive_frames: int = 40
    """Most frames of the agent's drive turned into six generated views."""
    scene3d_eval_samples: int = 48
    """Renders scored by the scene3d metrics."""
    scene3d_gif_frames: int = 16
    """Frames of the scene3d orbit and moving-car animations."""
    use_shipped: bool = True
    """Load the shipped tiny checkpoints when present (else train with the steps below)."""
    views_tokenizer_steps: int = 600
    """Tokenizer steps when training here."""
    views_generator_steps: int = 500
    """Generator steps when training here."""
    scene3d_steps: int = 300
    """scene3d steps when training here."""


FAST = CamerasDemoConfig(frames_per_scenario=3, frame_stride=25, showcase_frames=2, eval_frames=4, bevseg_steps=10,
                         drive_frames=5, scene3d_eval_samples=8, scene3d_gif_frames=6, views_tokenizer_steps=20,
                         views_generator_steps=20, scene3d_steps=4)


def camera_data(cfg: CamerasDemoConfig, scenarios: Path, out: Path, workers: int, first_frame: int = 10) -> dict:
    """Render the paired six-camera dataset of a scenario directory (resumes; returns the writer's summary)."""

    return write_synthetic_dataset(scenarios, out, cfg.synth, frames_per_scenario=cfg.frames_per_scenario,
                                   frame_stride=cfg.frame_stride, first_frame=first_frame, workers=workers,
                                   resume=True, progress=False)


def _config(cls, name: str, overrides: list[str]):
    path = REPO / "configs" / name
    return load_config(cls, path if path.exists() else None, overrides)


def views_model(cfg: CamerasDemoConfig, data: Path, run: Path):
    """(pipeline, where it came from): the shipped tiny checkpoint, a finished run in ``run``, or a new run."""
    from bevgen.views.sample import load_views

    ship = shipped("views_tiny") if cfg.use_shipped else None
    if ship is not None:
        return load_views(ship), f"shipped checkpoint {ship.name} (made by `make checkpoints`)"
    if not (run / "checkpoints" / "generator.pt").exists():
        vc = _config(ViewsConfig, "views/tiny.yaml", [f"train.tokenizer_steps={cfg.views_tokenizer_steps}",
                                                      f"train.generator_steps={cfg.views_generator_steps}"])
        train_views(vc, data, run, stage="all", resume=(run / "checkpoints").exists(), progress=False)
    return load_views(run), f"trained in this run ({run.name}/, configs/views/tiny.yaml with fewer steps)"


def scene3d_model(cfg: CamerasDemoConfig, data: Path, run: Path):
    """(generator, where it came from), like :func:`views_model`."""
    from bevgen.scene3d.train import Scene3DTrainConfig, load_scene3d, train_scene3d

    ship = shipped("scene3d_tiny") if cfg.use_shipped else None
    if ship is not None:
        return load_scene3d(ship), f"shipped checkpoint {ship.name} (made by `make checkpoints`)"
    if not (run / "checkpoints" / "latest.pt").exists():
        sc = _config(Scene3DTrainConfig, "scene3d/tiny.yaml", [f"steps={cfg.scene3d_steps}"])
        train_scene3d(sc, data, run, progress=False)
    return load_scene3d(run), f"trained in this run ({run.name}/, configs/scene3d/tiny.yaml with fewer steps)"


def views_stage(cfg: CamerasDemoConfig, pipe, heldout: Path, train: Path, out: Path) -> dict:
    """Showcase figures and metrics of the views model on held-out frames."""
    import torch

    from bevgen.views.bevseg_train import train_bevseg
    from bevgen.views.metrics import evaluate_views

    names = json.loads((heldout / "index.json").read_text())["frames"]
    # the showcase: the frames with the most vehicles, generated as one batch
    loaded = [(n, load_frame(heldout / "frames" / f"{n}.npz")) for n in names]
    shown = sorted(loaded, key=lambda nf: -int(nf[1]["box_valid"].sum()))[:cfg.showcase_frames]
    batch = {k: torch.from_numpy(np.stack([f[k] for _, f in shown])) for k in COND_KEYS}
    rig_size = tuple(shown[0][1]["images"].shape[1:3])  # the stored K refer to the dataset's image size
    generated = pipe(batch, seed=0, rig_size=rig_size).numpy()
    range_m = pipe.config.data.bev_range_m
    showcase = [(views_figure(bev_image(f, range_m), gen, _resize_views(f["images"], pipe.image_size)),
                 f"{name}: BEV (left); generated views (top: front-left, front, front-right; below: back-left, back, "
                 f"back-right); synthetic ground truth underneath") for (name, f), gen in zip(shown, generated)]
    bevseg = train_bevseg(train, None, out / "bevseg", steps=cfg.bevseg_steps, resume=True, progress=False)
    metrics = evaluate_views(lambda b: pipe(b, seed=0).images, heldout, names[:cfg.eval_frames], out / "eval",
                             bevseg_ckpt=bevseg, progress=False)
    return {"showcase": showcase, "metrics": metrics}


def _resize_views(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 [V, H, W, 3] -> [V, h, w, 3] through the one resize of the views code (``bevseg.resize_views``)."""
    import torch

    from bevgen.views.bevseg import resize_views

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)[None]
    return resize_views(x, None, size)[0][0].permute(0, 2, 3, 1).numpy()


def drive_stage(cfg: CamerasDemoConfig, pipe, snapshots: Sequence, out: Path) -> dict:
    """Six generated views of every (subsampled) frame of the agent's drive; GIF, MP4 and temporal change."""

    snaps = list(snapshots)[:cfg.drive_frames]
    # one call for the whole drive: each frame keeps the previous frame's tokens where its layout did not change
    drive = generate_drive_views(snaps, lambda b, seed: pipe.sequence(b, seed=seed).images, pipe.image_size,
                                 pipe.config.data.bev_range_m, batch_size=max(len(snaps), 1))
    out.mkdir(parents=True, exist_ok=True)
    save_animation(drive.frames, out / "drive_views.gif", fps=4)
    try:
        mp4 = save_animation(drive.frames, out / "drive_views.mp4", fps=4)
    except MissingEncoderError:  # no MP4 encoder in this environment: the GIF is enough
        mp4 = None
    metrics = {"temporal_change_generated": temporal_change(drive.generated, drive.truth, drive.semantic),
               "temporal_change_truth": temporal_change(drive.truth, drive.truth, drive.semantic),
               "flicker_generated": temporal_change(drive.generated, drive.truth, drive.semantic, still_levels=8.0),
               "decoding": "ViewsPipeline.sequence (previous frame's tokens kept where no channel of the "
                           "projected layout changed by 0.1 or more)",
               "seconds_per_frame": drive.seconds_per_frame, "frames": int(len(drive.frames)),
               "mp4": mp4.name if mp4 else None}
    (out / "drive_metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"frames": drive.frames, "metrics": metrics}


def scene3d_stage(cfg: CamerasDemoConfig, gen, heldout: Path, out: Path) -> dict:
    """Edits of one held-out layout (a still per edit, an orbit GIF, a moving-car GIF) and the metrics."""

    tc = gen.train_config
    index = json.loads((heldout / "index.json").read_text())
    cams = index["rig"]["names"]
    res = gen.cfg.image_size
    best = None  # the held-out front-camera layout with the most vehicles
    for name in index["frames"]:
        lay, img = layout_from_frame(heldout / "frames" / f"{name}.npz", camera="CAM_FRONT", resolution=res,
                                     max_objects=tc.data.max_objects, class_filter=tc.data.class_filter, names=cams)
        if best is None or lay.valid.sum() > best[0].valid.sum():
            best = (lay, img, name)
    lay, real, name = best
    lat = ed.SceneLatents.from_seed(lay.num_boxes, gen.cfg.z_dim, seed=0)
    stills = [(real, f"{name}: synthetic ground truth, CAM_FRONT")]
    base = ed.render(gen, lay, lat)
    stills.append((base.rgb, f"generated from the layout ({int(lay.valid.sum())} cars)"))
    stills.append(((np.clip(base.alpha, 0, 1) * 255).astype(np.uint8)[..., None].repeat(3, -1), "object opacity"))
    gifs = []
    valid = np.flatnonzero(lay.valid)
    if len(valid):
        i = int(valid[0])
        stills.append((ed.render(gen, ed.move_object(lay, i, (0.0, 3.0, 0.0)), lat).rgb, f"car {i} moved 3 m left"))
        stills.append((ed.render(gen, ed.rotate_object(lay, i, np.pi / 2), lat).rgb, f"car {i} rotated 90 degrees"))
        stills.append((ed.render(gen, ed.delete_object(lay, i), lat).rgb, f"car {i} deleted"))
        stills.append((ed.render(gen, lay, ed.restyle_object(lat, i, seed=7)).rgb, f"car {i} restyled (new latent)"))
        gifs.append((ed.move_frames(gen, lay, lat, i, (0.0, -4.0, 0.0), frames=cfg.scene3d_gif_frames),
                     f"car {i} sliding 4 m right and back"))
    added, lat_added, j = ed.add_object(lay, lat, (12.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.3), cls=0, seed=3)
    stills.append((ed.render(gen, added, lat_added).rgb, "a car added 12 m ahead"))
    gifs.append((ed.orbit_frames(gen, lay, lat, frames=cfg.scene3d_gif_frames), "camera orbit (+-30 degrees)"))
    data = load_scene3d_data(heldout, cameras=tuple(tc.data.cameras), resolution=res, max_objects=tc.data.max_objects,
                             class_filter=tc.data.class_filter)
    metrics = evaluate_scene3d(gen, data, num_samples=cfg.scene3d_eval_samples, batch_size=8, out_dir=out)
    return {"stills": stills, "gifs": gifs, "metrics": metrics}


def _up(img: np.ndarray, k: int = 3) -> np.ndarray:
    return np.repeat(np.repeat(img, k, 0), k, 1)


def metric_definitions() -> dict[str, str]:
    """Definitions of every camera metric in the report, from the modules that compute them."""
    from bevgen.views.metrics import DEFINITIONS as VIEWS

    return {**{f"views {k}": v for k, v in VIEWS.items()},
            "drive temporal change": "mean |frame k+1 - frame k| (0-255) over pixels of static classes (road, "
                                     "ground, buildings, sky, markings) in both ground-truth frames, generated vs "
                                     "ground truth (the change ego motion explains)",
            "drive flicker": "the same over pixels whose ground-truth colour changed by < 8 levels (ground truth ~0)",
            **{f"scene3d {k}": v for k, v in SCENE3D.items()}}


def camera_sections(views: dict, drive: dict, scene3d: dict, sources: dict) -> list[tuple[str, str]]:
    """Report sections of the camera stages."""
    vm = views["metrics"]
    keys = ("road_iou", "road_iou_oracle", "vehicle_iou", "vehicle_iou_oracle", "seam_consistency",
            "seam_consistency_oracle", "fid", "kid", "num_samples")
    dm, sm = drive["metrics"], scene3d["metrics"]
    return [
        ("Camera views from BEV layouts",
         "<p>A VQ tokenizer and a masked-token transformer over the tokens of all six views, conditioned on the "
         "BEV raster and its boxes, with camera-aware cross-view attention built from each camera's K and "
         f"extrinsics; parallel (MaskGIT) decoding with classifier-free guidance. Model: {sources['views']}.</p>"
         + "".join(rp.image_tag(img, cap) for img, cap in views["showcase"])),
        ("Camera views: metrics",
         rp.table([{k: (round(vm[k], 4) if isinstance(vm.get(k), float) else vm.get(k)) for k in keys}])
         + f"<p class='muted'>feature extractor: {vm.get('fid_extractor')}</p>"),
        ("Six-camera video of the agent's drive",
         "<p>The trained agent's episode in MetaDrive; each frame's BEV goes through the views model (same seed "
         "every frame), with the synthetic ground truth underneath.</p>"
         + rp.gif_tag(list(drive["frames"]), "BEV | generated six views | ground truth", fps=4)
         + rp.table([{"temporal change, generated": round(dm["temporal_change_generated"], 2),
                      "temporal change, ground truth": round(dm["temporal_change_truth"], 2),
                      "flicker, generated": round(dm["flicker_generated"], 2),
                      "seconds per six-view frame": round(dm["seconds_per_frame"], 3), "frames": dm["frames"]}])),
        ("Scene3D: compositional 3D-aware generation and edits",
         f"<p>Per-object radiance fields placed by the layout's 3D boxes over a street background field, volume "
         f"rendered and upsampled; trained as a GAN with scene and object discriminators. Model: "
         f"{sources['scene3d']}.</p><div class='gallery'>"
         + "".join(rp.image_tag(_up(img), cap) for img, cap in scene3d["stills"]) + "</div><div class='gallery'>"
         + "".join(rp.gif_tag([_up(f) for f in frames], cap, fps=8) for frames, cap in scene3d["gifs"]) + "</div>"
         + rp.table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in sm.items()
                      if k in ("fid", "kid", "object_fid", "box_alpha_iou", "images_per_second", "resolution",
                               "num_samples")}])
         + f"<p class='muted'>feature extractor: {sm.get('fid_extractor')}</p>"),
    ]
