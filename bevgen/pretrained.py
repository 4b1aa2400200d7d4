"""The tiny camera-view and scene3d checkpoints shipped in ``checkpoints/``, and the one command that makes them.

    make checkpoints        (= python -m bevgen.pretrained --out checkpoints)

Recipe (:func:`build`): procedural scenarios (MetaDrive maps + IDM traffic, seeds 0-63, denser traffic than the
default) -> synthetic six-camera dataset (pybullet CPU renderer, 128x224) -> ``configs/views/tiny.yaml`` (generator
steps: ``VIEWS_GENERATOR_STEPS``; then its decoder learns to read the layout through every pixel,
``VIEWS_DECODER_STEPS`` + ``VIEWS_DECODER_MORE_STEPS``, then ``VIEWS_DECODER_REAL_STEPS`` on real road layouts too
where ``REAL_DIR`` holds real scenarios, then ``VIEWS_DECODER_EDGE_STEPS`` with the layout's edges weighted, its own
weights frozen) -> ``configs/scene3d/tiny.yaml``; then only the
weights and configs are exported (no optimizer state), read back with ``weights_only=True`` by the ordinary loaders
(``bevgen.views.sample.load_views``, ``bevgen.scene3d.train.load_scene3d``). Every step is seeded and runs on one
CPU thread per process, so the same versions on the same kind of machine reproduce the same files; the demo says in
its report when it used them. About two hours on a 2-core laptop CPU (estimated from the timed segments,
checkpoints/README.json), both models training side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bevgen.render.dataset import merge_datasets, write_synthetic_dataset
from bevgen.render.scene import SynthConfig
from bevgen.views.decoder_tune import tune_decoder
from runkit.checkpoint import load_checkpoint, save_checkpoint
from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural
from sim_bridge.sources.real import REAL_DIR

# sim_bridge.rl.experiment (split_real) is imported lazily: it pulls the RL stack (PPO training, evaluation),
# which only the real-layout stage needs.

__all__ = ["SHIPPED", "SHIPPED_SAW_SELECTION_SCENE", "shipped", "build", "build_hires", "write_training_frames",
           "write_real_training_frames", "real_layout_frames", "export_views", "export_scene3d"]

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
"""Where the shipped checkpoints live (a source checkout; absent in a wheel install)."""
_FILES = {"views_tiny": ("checkpoints/tokenizer.pt", "checkpoints/generator.pt"),
          "views_hires": ("checkpoints/tokenizer.pt", "checkpoints/generator.pt"),
          "scene3d_tiny": ("checkpoints/latest.pt",)}
VIEWS_GENERATOR_STEPS = 1500
"""Generator steps of the shipped views model (the tiny preset itself stops at 600 for a quick user run)."""
VIEWS_DECODER_STEPS = 1200
"""Steps of the shipped views model's layout injection (``bevgen.views.decoder_tune``, the decoder's own weights
frozen), trained after the generator over the frozen encoder and codebook (reconstruction losses, 2 threads:
about 7.5 min)."""
VIEWS_DECODER_MORE_STEPS = 600
"""A second segment of the same layout-injection training, started afresh (new Adam state) from the first one's
weights (about 4 min). Measured as the "+600 true tokens" arm of ``benchmarks/views_decoder.py``: procedural road
IoU share 0.904-0.922 under three evaluator seeds against 0.886-0.911 without it
(``benchmarks/results/views_evaluators.json``)."""
VIEWS_DECODER_REAL_STEPS = 600
"""A third segment on the procedural frames plus real road layouts: every real training scene of ``REAL_DIR`` (all
but the 3 that ``sim_bridge.rl.experiment.split_real`` holds out for evaluation) rendered by the synthetic renderer,
24 frames each (about 4.5 min). The recipe was chosen with ``REAL_SELECTION_SCENE`` left out, by
``benchmarks/views_decoder.py``'s rule on that scene and unseen procedural frames (worst share of a target 1.000
against 0.822 for 600 more procedural steps; README, camera views); the shipped segment is that recipe refit with
the selection scene in (``SHIPPED_SAW_SELECTION_SCENE``). Skipped, with a message, without ``REAL_DIR``."""
REAL_SELECTION_SCENE = "sd_nuscenes_v1.0-mini_scene-0553"
"""The real training scene kept out of every arm of ``VIEWS_DECODER_REAL_STEPS`` while choosing: their real selection
set (``real_layout_frames`` without ``selection_scene``)."""
SHIPPED_SAW_SELECTION_SCENE = True
"""The shipped real-layout segment trains on ``REAL_SELECTION_SCENE`` too: with four real training scenes, the one
kept for choosing is a quarter of the real data, so once the recipe was chosen it was refit on all four. The scene
is in-sample for the shipped model; ``benchmarks/views_decoder.py --real-selection`` chooses from a run that did not
see it (``from=DIR``)."""
VIEWS_DECODER_EDGE_STEPS = 1200
"""A fourth segment of the layout injection (about 9 min): the pixels within one pixel of an edge of the layout (road
borders, lane markings, car outlines, the horizon: ``bevgen.views.projection.layout_edges``) weigh
``1 + VIEWS_DECODER_EDGE_WEIGHT`` in the reconstruction losses, on the procedural frames plus the real training
scenes' frames taken ``VIEWS_DECODER_EDGE_REAL_REPEAT`` times (27% of the frames instead of 12%). With the real
frames taken once, procedural road rose under every evaluator network but real-map road fell under two of them below
the 0.9 bar; with them taken three times every one of twenty held-out readings (five networks per evaluator
family, two held-out sets) clears it (README, camera views; ``benchmarks/results/views_evaluators*.json``). Skipped
with the real-layout segment."""
VIEWS_DECODER_EDGE_WEIGHT = 10.0
VIEWS_DECODER_EDGE_REAL_REPEAT = 3


def shipped(name: str, root: Path = SHIPPED) -> Path | None:
    """Run directory of a shipped checkpoint ("views_tiny", "views_hires" or "scene3d_tiny"), or None when absent."""
    run = Path(root) / name
    return run if all((run / f).exists() for f in _FILES[name]) else None


def export_views(run_dir: Path, out: Path) -> Path:
    """Copy a views run's tokenizer and generator weights + configs (no optimizer state) into ``out``."""
    for name in ("tokenizer", "generator"):
        ck = load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")
        save_checkpoint(out / "checkpoints" / f"{name}.pt",
                        **{k: ck[k] for k in ("model", "config", "step", "best_metric")})
    for extra in ("config.yaml", "train_summary.json", "decoder_tune.json"):
        if (run_dir / extra).exists():
            (out / extra).write_bytes((run_dir / extra).read_bytes())
    return out


def export_scene3d(run_dir: Path, out: Path) -> Path:
    """Copy a scene3d run's EMA generator + config (no discriminators, no optimizer) into ``out``."""
    ck = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    slim = {"model": {"generator_ema": ck["model"]["generator_ema"]},
            **{k: ck[k] for k in ("config", "step", "best_metric")}}
    save_checkpoint(out / "checkpoints" / "latest.pt", **slim)
    for extra in ("config.yaml", "train_summary.json"):
        if (run_dir / extra).exists():
            (out / extra).write_bytes((run_dir / extra).read_bytes())
    return out


def write_training_frames(work: Path, num_scenarios: int = 64, start_seed: int = 0) -> Path:
    """The shipped models' training frames: procedural seeds start_seed .. start_seed + num_scenarios - 1 (traffic
    density 0.8) in ``work / "scenarios"``, 12 six-camera frames each (every 15 steps from step 10) in
    ``work / "camera_data"`` (resumable; returns the latter). Other seeds give more frames of the same recipe."""
    work = Path(work)
    generate_procedural(ProceduralConfig(num_scenarios=num_scenarios, start_seed=start_seed, steps=200,
                                         traffic_density=0.8, workers=2), work / "scenarios", resume=True)
    write_synthetic_dataset(work / "scenarios", work / "camera_data", SynthConfig(), frames_per_scenario=12,
                            frame_stride=15, first_frame=10, workers=2, resume=True)
    return work / "camera_data"


def write_real_training_frames(real_dir: Path, split_dir: Path, out: Path) -> Path | None:
    """The real training scenes of ``real_dir`` (``split_real`` into ``split_dir``: all but 3 held out for
    evaluation) rendered by the synthetic renderer into ``out``, 24 frames each, every 5 steps from step 10; None
    when ``real_dir`` holds no scenarios. Resumable. The views decoder's real-layout data and the views selection
    frames (``benchmarks/views_sampler.py``) are both this recipe."""
    from sim_bridge.rl.experiment import split_real

    real_dir = Path(real_dir)
    if not real_dir.is_dir() or not any(real_dir.glob("*.pkl")):
        return None
    train, _, _ = split_real(real_dir, Path(split_dir), held_out=3)
    write_synthetic_dataset(train, out, SynthConfig(), frames_per_scenario=24, frame_stride=5, first_frame=10,
                            workers=2, resume=True, progress=False, repair=True)
    return Path(out)


def real_layout_frames(work: Path, real_dir: Path = REAL_DIR, selection_scene: bool = False,
                       repeat: int = 1) -> Path | None:
    """``work / "camera_data"`` plus the real training scenes rendered (:func:`write_real_training_frames` into
    ``work / "real_frames"``) as one dataset (links, no copies); None when ``real_dir`` holds no scenarios.
    Resumable. ``repeat`` > 1 takes every real frame that many times (tags ``real``, ``real2``, ...: each copy is a
    scenario of its own, so a decoder tune's validation split may hold out one copy and train on another; into a
    folder named ``..._x<repeat>``).

    Without ``selection_scene`` (the data of every arm still to be chosen) ``REAL_SELECTION_SCENE`` is left out,
    into ``work / "camera_data_real"``; with it (the shipped refit, once a recipe is chosen) every real training
    scene is in, into ``work / "camera_data_real_all"``."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    real = write_real_training_frames(real_dir, work / "real_split", work / "real_frames")
    if real is None:
        return None
    out = work / (("camera_data_real_all" if selection_scene else "camera_data_real")
                  + (f"_x{repeat}" if repeat > 1 else ""))
    copies = {f"real{k if k > 1 else ''}": real for k in range(1, repeat + 1)}
    merge_datasets({"": work / "camera_data", **copies}, out,
                   keep=lambda name: selection_scene or REAL_SELECTION_SCENE not in name)
    return out


def build(work: Path, out: Path = SHIPPED, parallel: bool = True, real_dir: Path = REAL_DIR) -> dict:
    """Make the shipped checkpoints from scratch (resumable: every stage keeps its outputs in ``work``).

    Args:
        work: scratch directory (scenarios, dataset, full training runs with optimizer state, logs).
        out: where the slim checkpoints go (``checkpoints/`` of the repository by default).
        parallel: train the two models in two processes side by side (one CPU thread each).
        real_dir: real scenarios for the views decoder's real-layout segment (skipped where there are none).
    Returns:
        summary: seconds per stage and each training summary.
    """

    work, out = Path(work), Path(out)
    times: dict = {}
    t0 = time.perf_counter()
    write_training_frames(work)
    times["data_s"] = time.perf_counter() - t0
    jobs = [_train_cmd("views", "configs/views/tiny.yaml", work, "views",
                       f"train.generator_steps={VIEWS_GENERATOR_STEPS}"),
            _train_cmd("scene3d", "configs/scene3d/tiny.yaml", work, "scene3d")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    if parallel:
        procs = [subprocess.Popen(j, env=env) for j in jobs]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.call(j, env=env) for j in jobs]
    if any(codes):
        raise RuntimeError(f"training failed (exit codes views={codes[0]}, scene3d={codes[1]}); logs in {work}")
    times["training_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tune_decoder(work / "views", work / "camera_data", work / "views_layout", steps=VIEWS_DECODER_STEPS, threads=2,
                 train_decoder=False)
    tune_decoder(work / "views_layout", work / "camera_data", work / "views_layout_more",
                 steps=VIEWS_DECODER_MORE_STEPS, threads=2, train_decoder=False)
    final = work / "views_layout_more"
    mixed = real_layout_frames(work, real_dir, selection_scene=True)
    if mixed is None:
        print(f"{real_dir}: no real scenarios; the views decoder's real-layout segment is skipped", file=sys.stderr)
    else:  # from the weights alone (no split.json: the mixed frames are split by scenario afresh)
        export_views(final, work / "views_layout_base")
        final = work / "views_layout_real"
        tune_decoder(work / "views_layout_base", mixed, final, steps=VIEWS_DECODER_REAL_STEPS, threads=2,
                     train_decoder=False)
        more_real = real_layout_frames(work, real_dir, selection_scene=True, repeat=VIEWS_DECODER_EDGE_REAL_REPEAT)
        tune_decoder(final, more_real, work / "views_layout_edges", steps=VIEWS_DECODER_EDGE_STEPS, threads=2,
                     train_decoder=False, edge_weight=VIEWS_DECODER_EDGE_WEIGHT)
        final = work / "views_layout_edges"
    times["decoder_s"] = time.perf_counter() - t0
    export_views(final, out / "views_tiny")
    export_scene3d(work / "scene3d", out / "scene3d_tiny")
    summary = {"seconds": times, "files": _sizes(out, out)}
    (out / "README.json").write_text(json.dumps({"made_by": "make checkpoints (python -m bevgen.pretrained)",
                                                 **summary}, indent=2))
    return summary


def build_hires(work: Path, out: Path = SHIPPED) -> dict:
    """Make ``views_hires``: ``configs/views/hires.yaml`` (128x224 views, 16x28 tokens per view, patch-adversarial
    tokenizer) trained both stages on the same frames as the tiny model, one process on every core (resumable
    in ``work / "views_hires"``), then exported like :func:`build`'s models. About 2.5 hours on a 2-core CPU
    (tokenizer 900 steps ~40 min; generator 1500 steps at 4.4-5.3 s each)."""
    work, out = Path(work), Path(out)
    write_training_frames(work)
    job = _train_cmd("views", "configs/views/hires.yaml", work, "views_hires", "train.threads=0")
    t0 = time.perf_counter()
    if subprocess.call(job):
        raise RuntimeError(f"training failed; logs in {work / 'views_hires'}")
    export_views(work / "views_hires", out / "views_hires")
    return {"training_s": time.perf_counter() - t0, "files": _sizes(out / "views_hires", out)}


def _train_cmd(model: str, config: str, work: Path, run: str, *overrides: str) -> list[str]:
    """``bevgen MODEL train`` on ``work / "camera_data"`` into ``work / run`` with a repository config and
    ``--set`` overrides; ``--resume`` when the run already has checkpoints (a finished or interrupted run
    continues)."""
    cmd = [sys.executable, "-m", "bevgen.cli", model, "train", "-c", str(REPO / config), "--data",
           str(work / "camera_data"), "--out", str(work / run)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd + (["--resume"] if (work / run / "checkpoints").exists() else [])


def _sizes(folder: Path, root: Path) -> dict[str, int]:
    """Bytes of every .pt file under ``folder``, keyed by its path relative to ``root``."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(folder.rglob("*.pt"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bevgen.pretrained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SHIPPED, help="where the slim checkpoints go")
    parser.add_argument("--work", type=Path, default=Path("runs/checkpoints"), help="scratch directory (resumable)")
    parser.add_argument("--sequential", action="store_true", help="train the two models one after the other")
    parser.add_argument("--real-dir", type=Path, default=REAL_DIR,
                        help="real scenarios for the views decoder's real-layout segment (skipped when absent)")
    parser.add_argument("--hires", action="store_true",
                        help="make views_hires instead (the 128x224 model; about 2.5 h on 2 cores)")
    args = parser.parse_args(argv)
    if args.hires:
        print(json.dumps(build_hires(args.work, args.out), indent=2))
    else:
        print(json.dumps(build(args.work, args.out, parallel=not args.sequential, real_dir=args.real_dir), indent=2))


if __name__ == "__main__":
    main()
