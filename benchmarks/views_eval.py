"""Views model evaluation on held-out layouts and the conditioning ablation.

Held-out sets (never trained on; the same evaluator, bevseg network and FID extractor for every model):

* ``procedural``: synthetic frames of procedural maps with seeds 10000+ (``run._heldout_camera_data``);
* ``real_maps``: the 3 real scenarios the benchmarks hold out (``split_real``: nuScenes 0655, 0916, Waymo 8a34)
  with their maps and logged traffic rendered by the synthetic renderer, when ``../shared`` is present (the
  other 4 real scenes served to choose the sampler settings).

The BEV segmentation network that scores the views is trained once on the shipped model's training frames
(``make checkpoints``' camera data) and reused for every model, so every row is comparable.

Ablation arms (generator stage only, ``configs/views/tiny.yaml`` with ``ARM_STEPS`` generator steps, from the
shipped run's frozen tokenizer, on the frames of its first 16 procedural scenes (the ``split.json`` the arm
copies when it starts; the same seed for every arm):

* ``current``: the model before aligned conditioning (BEV + object tokens through cross-attention only);
* ``aligned``: + the layout projected into each camera, added to the image tokens;
* ``aligned_object_loss``: + the masked-token loss weighted on tokens covered by boxes (the shipped config).

The shipped checkpoint (``make checkpoints``: more scenes, more steps) is scored beside them, conditioned and
unconditioned (the null layout: the floor). An arm is trained when its run is missing
(``benchmarks/work/views_ablation/<arm>``, resumable).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "cameras"
TRAIN_RUN = ROOT / "runs" / "checkpoints" / "views"
TRAIN_DATA = ROOT / "runs" / "checkpoints" / "camera_data"

ARMS = {"current": {"aligned_condition": False, "object_loss_weight": 0.0},
        "aligned": {"aligned_condition": True, "object_loss_weight": 0.0},
        "aligned_object_loss": {"aligned_condition": True, "object_loss_weight": 3.0}}
ARM_STEPS = 600
"""Generator steps of every ablation arm."""
KEYS = ("road_iou", "vehicle_iou", "vehicle_iou_near", "vehicle_iou_mid", "vehicle_iou_far", "seam_consistency",
        "fid", "kid")


def real_map_data() -> Path | None:
    """The real scenarios the benchmarks hold out (``split_real``, 3 of the 7 shared ones) rendered by the synthetic
    renderer (8 frames each, unusable map features dropped as ``--repair`` does; cached), or None without
    ``../shared``. The views models never train on real maps; the other 4 scenes are where sampler settings are
    chosen (``benchmarks/views_sampler.py``), so they stay out of this set. A scenario that fails to render is an
    error here, not a smaller set."""
    if not REAL_DIR.exists():
        return None
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.rl.experiment import split_real

    _, test, _ = split_real(REAL_DIR, WORK / "real_split", held_out=3)
    out = WORK / "heldout_real_maps_test"
    report = write_synthetic_dataset(test, out, SynthConfig(), frames_per_scenario=8, frame_stride=10,
                                     first_frame=10, workers=2, resume=True, progress=False, repair=True)
    if report["failed"]:
        raise RuntimeError(f"held-out real scenarios failed to render: {report['failed']}")
    return out


def bevseg_net(train_data: Path) -> Path:
    """The BEV segmentation network every views model is scored with (600 steps on ``train_data``, cached)."""
    from bevgen.views.bevseg_train import train_bevseg

    return train_bevseg(train_data, None, WORK / "bevseg", steps=600, resume=True, progress=False)


def round_trip_views(pipe):
    """``batch -> views``: the batch's true views encoded to tokens and decoded with the frame's layout (what the
    tokenizer keeps; no generator), at the pipeline's image size."""
    from bevgen.views.sample import fit_batch

    def reconstruct(b: dict):
        fitted = fit_batch(b, pipe.image_size)  # the frame's condition too: a layout-reading decoder needs it
        return pipe.reconstruct(fitted["images"], fitted)

    return reconstruct


def model_views(run: Path, unconditional: bool = False, round_trip: bool = False):
    """``batch -> views`` of one views model, each batch drawn once (``SampleOnce``: pass it to several
    ``evaluate_model`` calls to score the same samples under several evaluators). Seed 0, the config's decoding
    steps and guidance; ``unconditional``: samples of the null layout, the floor; ``round_trip``: the true views
    encoded to tokens and decoded with the frame's layout, what the tokenizer keeps, no generator."""
    from bevgen.views.metrics import SampleOnce
    from bevgen.views.sample import load_views

    pipe = load_views(run)
    return SampleOnce(round_trip_views(pipe) if round_trip
                      else (lambda b: pipe(b, seed=0, unconditional=unconditional).images))


def evaluate_model(run: Path, sets: dict[str, Path], bevseg: Path, out: Path, threads: int = 2,
                   unconditional: bool = False, round_trip: bool = False, views=None) -> dict:
    """Metrics of one views model on every held-out set (``model_views``' samples; ``views``: samples already
    made by ``model_views`` for this run and these flags, reused)."""
    import torch

    from bevgen.views.metrics import evaluate_views

    torch.set_num_threads(threads)
    views = views or model_views(run, unconditional, round_trip)
    rows = {}
    for name, data in sets.items():
        names = json.loads((data / "index.json").read_text())["frames"]
        t0 = time.perf_counter()
        m = evaluate_views(views, data, names, out / name, bevseg_ckpt=bevseg, progress=False)
        rows[name] = {k: v for k, v in m.items() if k != "definitions"} | {"eval_s": round(time.perf_counter() - t0, 1)}
    return rows


def train_generator(cfg, data: Path, run: Path, tokenizer: Path, split: dict | None = None) -> Path:
    """A generator-only run from a frozen tokenizer (copied into ``run`` with ``split`` as its split.json when
    the run starts; None: the frames of ``data`` split by scenario), resumed when interrupted, reused when
    finished."""
    from bevgen.views.train import train_views

    if not (run / "checkpoints" / "tokenizer.pt").exists():
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copy(tokenizer, run / "checkpoints" / "tokenizer.pt")
        if split is not None:
            (run / "split.json").write_text(json.dumps(split))
    train_views(cfg, data, run, stage="generator", resume=(run / "checkpoints" / "generator.pt").exists(),
                progress=False)
    return run


def train_arm(arm: str, out: Path) -> Path:
    """The generator of one ablation arm, trained from the shipped run's tokenizer (resumes)."""
    import dataclasses

    from bevgen.views.config import ViewsConfig
    from runkit.config import load_config

    cfg = load_config(ViewsConfig, ROOT / "configs" / "views" / "tiny.yaml")
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, **ARMS[arm]),
                              train=dataclasses.replace(cfg.train, generator_steps=ARM_STEPS))
    split = json.loads((TRAIN_RUN / "split.json").read_text())
    first16 = [n for n in split["train"] if int(n.split("seed")[1][:6]) < 16]  # the arms' training frames
    return train_generator(cfg, TRAIN_DATA, out / arm, TRAIN_RUN / "checkpoints" / "tokenizer.pt",
                           split | {"train": first16})


def bench_views_ablation(heldout_procedural: Path) -> dict:
    """Train (or reuse) every arm and score it on the held-out sets; the shipped checkpoint scored alongside."""
    from bevgen.pretrained import shipped

    if not (TRAIN_RUN / "checkpoints" / "tokenizer.pt").exists():
        return {"skipped": f"{TRAIN_RUN} missing: run `make checkpoints` first (its tokenizer and data are shared)"}
    sets = {"procedural": heldout_procedural}
    real = real_map_data()
    if real is not None:
        sets["real_maps"] = real
    bevseg = bevseg_net(TRAIN_DATA)
    out = {"sets": {k: str(v) for k, v in sets.items()}, "bevseg_trained_on": str(TRAIN_DATA), "arms": {}}
    for arm in ARMS:
        run = train_arm(arm, ROOT / "benchmarks" / "work" / "views_ablation")
        rows = evaluate_model(run, sets, bevseg, WORK / "ablation_eval" / arm)
        summary = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").exists() else {}
        out["arms"][arm] = {"run": str(run), "config": ARMS[arm], "metrics": rows, "steps": ARM_STEPS,
                            "generator_final_loss": (summary.get("generator") or {}).get("final_loss_mean20")}
    ship = shipped("views_tiny")
    if ship is not None:
        out["shipped"] = evaluate_model(ship, sets, bevseg, WORK / "ablation_eval" / "shipped")
        out["shipped_unconditional"] = evaluate_model(ship, sets, bevseg, WORK / "ablation_eval" / "unconditional",
                                                      unconditional=True)
    out["table"] = ablation_table(out)
    return out


def drive_flicker(run: Path, frames: int = 16, stride: int = 2, keep_below: float = 0.1) -> dict:
    """Temporal change of generated views on a drive where the ego moves: held-out procedural seed 10000, frames
    10, 10 + stride, ... (0.2 s apart) rendered at the model's size; ``drive.temporal_change`` over static pixels,
    frames decoded independently (same seed) and as a sequence (``ViewsPipeline.sequence``), beside the ground
    truth's own change."""
    import numpy as np
    import torch

    from bevgen.render.dataset import FrameDataset, write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from bevgen.views.drive import temporal_change
    from bevgen.views.sample import load_views

    torch.set_num_threads(2)
    pipe = load_views(run)
    data = WORK / f"drive_{pipe.image_size[0]}x{pipe.image_size[1]}"
    scen = WORK / "heldout_scenarios"
    write_synthetic_dataset(scen, data, SynthConfig(image_size=pipe.image_size), frames_per_scenario=frames,
                            frame_stride=stride, first_frame=10, workers=1, resume=True, progress=False)
    ds = FrameDataset(data)
    first = sorted(ds.names)[0].rsplit("__", 1)[0]
    items = [ds[i] for i in range(len(ds)) if ds.names[i].startswith(first + "__")]
    items.sort(key=lambda it: it["name"])
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in
             ("bev", "boxes", "classes", "box_valid", "K", "T_cam_from_ego")}
    truth = np.stack([it["images"].permute(0, 2, 3, 1).numpy() for it in items])
    semantic = np.stack([np.asarray(it["semantic"]) for it in items])
    from bevgen.render.dataset import load_frame

    poses = np.stack([load_frame(data / "frames" / f"{it['name']}.npz")["ego_pose"][:2] for it in items])
    moved = float(np.linalg.norm(np.diff(poses, axis=0), axis=1).sum())
    t0 = time.perf_counter()
    independent = pipe(batch, seed=0).images.permute(0, 1, 3, 4, 2).numpy()
    t1 = time.perf_counter()
    sequence = pipe.sequence(batch, seed=0, keep_below=keep_below).images.permute(0, 1, 3, 4, 2).numpy()
    t2 = time.perf_counter()
    gt = temporal_change(truth, truth, semantic)
    out = {"scenario": first, "frames": len(items), "seconds_between_frames": stride / 10,
           "ego_moved_m": round(moved, 1),
           "truth": gt, "independent": temporal_change(independent, truth, semantic),
           "sequence": temporal_change(sequence, truth, semantic), "keep_below": keep_below,
           "seconds_independent": round(t1 - t0, 2), "seconds_sequence": round(t2 - t1, 2)}
    out["sequence_over_truth"] = out["sequence"] / gt if gt else None
    out["independent_over_truth"] = out["independent"] / gt if gt else None
    return out


def ablation_table(result: dict) -> list[str]:
    """Markdown rows: arm x held-out set with the oracle beside each figure."""
    lines = ["| arm | set | road IoU | vehicle IoU (near / mid / far) | seams | FID |", "|---|---|---|---|---|---|"]

    def r(x, nd=3):
        return "-" if x is None else f"{x:.{nd}f}"

    rows = [(f"{arm} ({a.get('steps', ARM_STEPS)} steps, 16 scenes)", a["metrics"])
            for arm, a in result.get("arms", {}).items()]
    rows += [(label, result[key]) for key, label in (("shipped", "shipped (make checkpoints)"),
                                                     ("shipped_unconditional", "shipped, null layout (floor)"))
             if key in result]
    for arm, metrics in rows:
        for name, m in metrics.items():
            lines.append(f"| {arm} | {name} | {r(m['road_iou'])} ({r(m['road_iou_oracle'])}) | "
                         f"{r(m['vehicle_iou'])} ({r(m['vehicle_iou_oracle'])}): {r(m.get('vehicle_iou_near'))} / "
                         f"{r(m.get('vehicle_iou_mid'))} / {r(m.get('vehicle_iou_far'))} | "
                         f"{r(m['seam_consistency'])} ({r(m['seam_consistency_oracle'])}) | {r(m['fid'], 1)} |")
    return lines


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import _heldout_camera_data

    print(json.dumps(bench_views_ablation(_heldout_camera_data()), indent=2, default=str))
