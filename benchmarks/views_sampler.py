"""Choose the views sampler's defaults (guidance, token temperature, decoding steps) on selection frames.

    python benchmarks/views_sampler.py 1,1,12 1,0.7,12 0.5,0.5,24     # guidance,temperature,steps per setting

Selection frames are never scored by the benchmarks:

* ``procedural_validation``: the validation split a from-scratch ``make checkpoints`` run makes (its camera
  data's 10% held-out scenarios, every 2nd frame). The shipped tiny model was trained on these frames (its run
  kept the 24 validation frames, seeds 2 and 11, of a split of seeds 0-15 made before it was extended to seeds
  0-63), so this set flatters it against any model trained without them;
* ``real_maps_train_scenes``: the 4 real scenarios the benchmarks train on (``split_real``'s train part;
  nuScenes 0061, 0103, 0553, Waymo 2a1e) rendered every 0.5 s, every 2nd frame;
* ``procedural_unseen``: procedural seeds 20000-20015 with the training recipe, every 2nd frame (79 frames),
  unseen by every model here: the set to compare the shipped model with others on.

The held-out sets of ``views_eval`` (procedural seeds 10000+, the 3 held-out real scenes) stay untouched. Each
setting is scored with the benchmarks' evaluator (same bevseg network, same extractor) and printed as the
share of the oracle; all rows go to ``benchmarks/work/views_sampler.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def selection_sets() -> dict[str, tuple[Path, list[str]]]:
    from views_eval import REAL_DIR, TRAIN_DATA, WORK

    from bevgen.pretrained import write_real_training_frames, write_training_frames
    from bevgen.render.dataset import split_frames

    if not (TRAIN_DATA / "index.json").exists():
        raise SystemExit(f"{TRAIN_DATA} missing: run `make checkpoints` first (its frames hold the validation set)")
    _, val = split_frames(json.loads((TRAIN_DATA / "index.json").read_text())["frames"], 0.1, 0)
    sets = {"procedural_validation": (TRAIN_DATA, val[::2])}
    real = write_real_training_frames(REAL_DIR, WORK / "real_split", WORK / "selection_real_maps")
    if real is not None:
        sets["real_maps_train_scenes"] = (real, json.loads((real / "index.json").read_text())["frames"][::2])
    unseen = write_training_frames(WORK / "selection_unseen", num_scenarios=16, start_seed=20_000)
    sets["procedural_unseen"] = (unseen, json.loads((unseen / "index.json").read_text())["frames"][::2])
    return sets


def main(argv: list[str]) -> None:
    import torch
    from views_eval import TRAIN_DATA, WORK, bevseg_net

    from bevgen.pretrained import shipped
    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import load_views

    if not argv:
        raise SystemExit(__doc__)
    torch.set_num_threads(2)
    settings = [tuple(float(x) for x in a.split(",")) for a in argv]
    bevseg, sets, pipe = bevseg_net(TRAIN_DATA), selection_sets(), load_views(shipped("views_tiny"))
    rows = []
    for g, t, steps in settings:
        for name, (data, names) in sets.items():
            def sample(b, g=g, t=t, steps=int(steps)):
                return pipe(b, seed=0, guidance=g, temperature=t, steps=steps).images

            out = WORK / "sampler" / f"{g}_{t}_{int(steps)}" / name
            m = evaluate_views(sample, data, names, out, bevseg_ckpt=bevseg, progress=False)
            share = {k: m[k] / m[f"{k}_oracle"] for k in ("vehicle_iou", "road_iou", "seam_consistency")}
            rows.append({"guidance": g, "temperature": t, "steps": int(steps), "set": name, "frames": len(names),
                         "share_of_oracle": share, "fid": m["fid"]})
            print(json.dumps(rows[-1]), flush=True)
    (WORK.parent / "views_sampler.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
