"""The real training scenes seen from other logged vehicles: more real-map frames for the views generator.

    python benchmarks/views_real_egos.py                 # 8 other egos per scene, then 300 generator steps
    python benchmarks/views_real_egos.py --egos 4 --steps 0   # the frames only

Four real training scenes give the views generator 67 frames of real road layouts (``REAL_SELECTION_SCENE`` left
out), all from the logged ego's path; a generator trained on them memorises them
(``benchmarks/views_fit_gap.py``). Every logged vehicle of a scene is a viewpoint on the same real map: this
script copies each real training scenario with ``metadata.sdc_id`` set to another vehicle (those valid on at
least 3/4 of the frames the logged ego's recipe renders, longest paths first: the moving ones, then parked ones),
renders them with the training recipe (``bevgen.pretrained.write_real_training_frames``' settings), merges them
with ``make checkpoints``' procedural frames and the logged-ego real frames (``merge_datasets``, links), and
fine-tunes the shipped generator on the lot exactly as the real-frames arm of the README was
(``bevgen views train --init-from checkpoints/views_tiny --stage generator``, 300 more steps, the shipped
config). Score the run with ``python benchmarks/views_decoder.py --real-selection run=RUN from=BASE`` and
``python benchmarks/views_fit_gap.py RUN``. The shipped decoder has since been refit with ``REAL_SELECTION_SCENE``
in (``bevgen.pretrained.SHIPPED_SAW_SELECTION_SCENE``): a run fine-tuned from it now reads that scene in-sample,
so fine-tune from ``BASE``, a run that did not see it (``--init-from BASE``; views_decoder.py's docstring names
one).

Work: ``benchmarks/work/views_real_egos/`` (scenarios, frames, merged data; resumable) and the run
``benchmarks/work/views_generator/egos<steps>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "views_real_egos"
RECIPE = {"frames_per_scenario": 24, "frame_stride": 5, "first_frame": 10}
"""The render recipe of ``bevgen.pretrained.write_real_training_frames``."""


def as_ego(scenario, agent_id: str):
    """``scenario`` seen from ``agent_id``: the same scenario with ``metadata.sdc_id`` set to it."""
    return dataclasses.replace(scenario, metadata={**scenario.metadata, "sdc_id": agent_id})


def other_egos(scenario, per_scene: int) -> list[str]:
    """Ids of up to ``per_scene`` vehicles other than the ego that the render recipe sees on at least 3/4 of the
    frames it renders for the logged ego, longest driven path first. O(A T)."""
    import numpy as np

    from bevgen.render.dataset import select_frames

    tr = scenario.tracks
    need = int(0.75 * len(select_frames(scenario, **RECIPE)))
    found = []
    for i, (aid, kind) in enumerate(zip(tr.ids, tr.types)):
        if kind != "VEHICLE" or i == scenario.ego_index:
            continue
        if len(select_frames(as_ego(scenario, aid), **RECIPE)) < need:
            continue
        xy = tr.xy[i][tr.valid[i]]
        found.append((float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()), aid))
    return [aid for _, aid in sorted(found, reverse=True)[:per_scene]]


def write_other_egos(real_dir: Path, out: Path, per_scene: int) -> Path:
    """Every real training scenario of ``real_dir`` (``split_real``; ``REAL_SELECTION_SCENE`` left out) once per
    other ego, written to ``out`` as ``<scenario>_ego<id>.pkl`` (kept when present)."""
    from bevgen.pretrained import REAL_SELECTION_SCENE
    from sim_bridge.rl.experiment import split_real
    from sim_bridge.scenario import load_scenario, save_scenario

    train, _, _ = split_real(real_dir, WORK / "real_split", held_out=3)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(train).glob("*.pkl")):
        if REAL_SELECTION_SCENE in path.name or not path.name.startswith("sd_"):
            continue
        scenario = load_scenario(path, repair=True)
        egos = other_egos(scenario, per_scene)
        print(f"{path.stem}: {len(egos)} other egos", flush=True)
        for aid in egos:
            dst = out / f"{path.stem}_ego{aid.replace('/', '_')}.pkl"
            if not dst.exists():
                save_scenario(as_ego(scenario, aid), dst)
    return out


def main(argv: list[str] | None = None) -> Path:
    import yaml
    from views_eval import REAL_DIR, TRAIN_DATA

    from bevgen.pretrained import REAL_SELECTION_SCENE, shipped, write_real_training_frames
    from bevgen.render.dataset import merge_datasets, write_synthetic_dataset
    from bevgen.render.scene import SynthConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--egos", type=int, default=8, help="other vehicles per real training scene (default 8)")
    ap.add_argument("--steps", type=int, default=300, help="generator steps after the shipped ones (0: frames only)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="views run to fine-tune (default the shipped one, whose decoder has seen the real "
                         "selection scene)")
    args = ap.parse_args(argv)
    ship = args.init_from or shipped("views_tiny")
    if ship is None or not (TRAIN_DATA / "index.json").exists():
        raise SystemExit("run `make checkpoints` first (the shipped model and its training frames)")
    if not (ship / "config.yaml").exists():
        raise SystemExit(f"--init-from {ship}: no config.yaml (a views run directory)")
    logged = write_real_training_frames(REAL_DIR, WORK / "real_split", WORK / "real_frames")
    if logged is None:
        raise SystemExit(f"{REAL_DIR}: no real scenarios")
    scenarios = write_other_egos(REAL_DIR, WORK / "scenarios", args.egos)
    frames = WORK / "frames"
    write_synthetic_dataset(scenarios, frames, SynthConfig(), workers=2, resume=True, repair=True, **RECIPE)
    data = WORK / "camera_data_real_egos"
    merge_datasets({"": TRAIN_DATA, "real": logged, "ego": frames}, data,
                   keep=lambda name: REAL_SELECTION_SCENE not in name)
    run = ROOT / "benchmarks" / "work" / "views_generator" / f"egos{args.steps}"
    if args.steps > 0:
        steps = int(yaml.safe_load((ship / "config.yaml").read_text())["train"]["generator_steps"])
        cmd = [sys.executable, "-m", "bevgen.cli", "views", "train", "-c", str(ship / "config.yaml"),
               "--init-from", str(ship), "--data", str(data), "--out", str(run), "--stage", "generator",
               "--set", f"train.generator_steps={steps + args.steps}"]  # with its progress bar
        subprocess.run(cmd, check=True)
    print(f"frames: {data}\nrun: {run}")
    return run


if __name__ == "__main__":
    main()
