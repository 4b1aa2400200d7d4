"""Does one more real scene help the views decoder on a real map it never saw? A learning curve on the real
training scenes alone (never the three held-out ones).

    python benchmarks/views_real_curve.py                 # 4 folds x {0, 2, 3} real scenes, 2 evaluators
    python benchmarks/views_real_curve.py --seeds 0       # the benchmark's evaluator only

The shipped real-layout segment (``bevgen.pretrained.VIEWS_DECODER_REAL_STEPS``) was chosen with one real training
scene kept out and then refit on all four (``SHIPPED_SAW_SELECTION_SCENE``). This script measures the rule behind
that refit without the held-out scenes: for each real training scene L in turn (leave one out), the segment's
recipe (600 layout-injection steps from the two-segment model, decoder frozen, ``tune_decoder`` as ``make
checkpoints`` runs it) trains on ``make checkpoints``' procedural frames plus

* 3 real scenes: every other real training scene;
* 2 real scenes: those less one (the next scene after L in name order, so each scene is dropped once);
* 0 real scenes: none (one run, the procedural control, shared by every fold),

and the shipped generator's samples (seed 0, shipped sampler settings) of L's 24 frames are scored as shares of
the oracle (``bevgen.views.metrics.evaluate_views``; ``views_evaluators.py``'s networks, seed 0 the benchmark's).
Arms differ in their real scenes only, and every arm is scored on the same frames, so the comparison is paired:
``gain_3_over_2`` per fold is what one more real scene buys on an unseen real map. Each arm records which real
scenes its training split really held (``trained_real``; the frames are split by scenario afresh).

Runs: ``benchmarks/work/views_real_curve/<arm>`` (reused when finished; each about 4.5 min on 2 cores). Results:
``benchmarks/results/views_real_curve.json`` (with the machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "views_real_curve"
RESULT = ROOT / "benchmarks" / "results" / "views_real_curve.json"
KEYS = ("vehicle_iou", "road_iou", "seam_consistency")


def arms(scenes: list[str]) -> dict[str, list[str]]:
    """{arm name: its real scenes}: per left-out scene L, ``L_out3`` (every other scene) and ``L_out2`` (those less
    the next scene after L in name order), plus ``procedural`` (none). Each scene is dropped from one 2-scene arm."""
    scenes = sorted(scenes)
    out: dict[str, list[str]] = {"procedural": []}
    for i, left in enumerate(scenes):
        others = [s for s in scenes if s != left]
        dropped = scenes[(i + 1) % len(scenes)]
        out[f"{short(left)}_out3"] = others
        out[f"{short(left)}_out2"] = [s for s in others if s != dropped]
    return out


def short(scene: str) -> str:
    """A scene's short name: its last ``_``-separated part (``scene-0553``, ``2a1e44d405a6833f``)."""
    return scene.rsplit("_", 1)[-1]


def train_arm(name: str, real_scenes: list[str], base: Path, real_frames: Path, every_real: list[str]) -> dict:
    """The real-layout segment trained on the procedural frames plus ``real_scenes`` of ``every_real`` (reused
    when finished)."""
    from views_eval import TRAIN_DATA

    from bevgen.pretrained import VIEWS_DECODER_REAL_STEPS
    from bevgen.render.dataset import merge_datasets, scenario_of
    from bevgen.views.config import ViewsConfig
    from bevgen.views.decoder_tune import tune_decoder
    from bevgen.views.train import _frames
    from runkit.config import load_config

    data = WORK / "data" / name
    dropped = set(every_real) - set(real_scenes)
    merge_datasets({"": TRAIN_DATA, "real": real_frames}, data, keep=lambda n: scenario_of(n) not in dropped)
    run = WORK / name
    if not (run / "decoder_tune.json").exists():
        tune_decoder(base, data, run, steps=VIEWS_DECODER_REAL_STEPS, threads=2, train_decoder=False)
    cfg = load_config(ViewsConfig, run / "config.yaml")
    train, _ = _frames(cfg, data, None)
    trained = sorted({scenario_of(n)[len("real-"):] for n in train if n.startswith("real-")})
    return {"run": str(run.relative_to(ROOT)), "real_scenes": real_scenes, "trained_real": trained}


_SAMPLES: dict[Path, object] = {}
"""Each run's samples (``views_eval.model_views``), drawn once and scored under every evaluator."""


def score(run: Path, data: Path, names: list[str], bevseg: Path, where: Path) -> dict:
    """Shares of the oracle (with their 90% intervals) of ``run``'s samples of ``names``; cached in ``where``."""
    from views_eval import model_views

    from bevgen.views.metrics import evaluate_views

    done = where / "metrics.json"
    if done.exists():
        m = json.loads(done.read_text())
    else:
        if run not in _SAMPLES:
            _SAMPLES[run] = model_views(run)
        m = evaluate_views(_SAMPLES[run], data, names, where, bevseg_ckpt=bevseg, progress=False)
    return {"shares": {k: round(m["shares"][k], 4) for k in KEYS}, "shares_ci90": m["shares_ci90"]}


def main(argv: list[str] | None = None) -> dict:
    import torch
    from views_eval import REAL_DIR, TRAIN_DATA
    from views_evaluators import evaluator
    from views_sampler import selection_sets

    from bevgen.pretrained import write_real_training_frames
    from bevgen.render.dataset import scenario_of
    from run import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                    help="evaluator seeds (views_evaluators.py's networks; default 0 1)")
    ap.add_argument("--base", type=Path, default=TRAIN_DATA.parent / "views_layout_base",
                    help="the two-segment views run every arm starts from (make checkpoints' views_layout_base)")
    args = ap.parse_args(argv)
    if not (args.base / "checkpoints" / "tokenizer.pt").exists():
        raise SystemExit(f"{args.base}: no views run; run `make checkpoints` first (it leaves views_layout_base)")
    torch.set_num_threads(2)
    sel = selection_sets()
    if "real_maps_train_scenes" not in sel:
        raise SystemExit(f"{REAL_DIR}: no real scenarios")
    real_frames = write_real_training_frames(REAL_DIR, TRAIN_DATA.parent / "real_split",
                                             TRAIN_DATA.parent / "real_frames")
    frames_data = sel["real_maps_train_scenes"][0]
    all_names = json.loads((frames_data / "index.json").read_text())["frames"]
    scenes = sorted({scenario_of(n) for n in all_names})
    plan = arms(scenes)
    trained = {name: train_arm(name, real, args.base, real_frames, scenes) for name, real in plan.items()}
    nets = {seed: evaluator(seed) for seed in args.seeds}
    folds = {}
    for left in scenes:
        names = [n for n in all_names if scenario_of(n) == left]
        row = {"frames": len(names)}
        for arm in ("procedural", f"{short(left)}_out2", f"{short(left)}_out3"):
            row[arm.split("_")[-1]] = {seed: score(ROOT / trained[arm]["run"], frames_data, names, net,
                                                   WORK / "eval" / arm / short(left) / f"seed{seed}")
                                       for seed, net in nets.items()}
        row["gain_3_over_2"] = {seed: {k: round(row["out3"][seed]["shares"][k] - row["out2"][seed]["shares"][k], 4)
                                       for k in KEYS} for seed in nets}
        row["gain_3_over_0"] = {seed: {k: round(row["out3"][seed]["shares"][k]
                                                - row["procedural"][seed]["shares"][k], 4)
                                       for k in KEYS} for seed in nets}
        folds[short(left)] = row
        print(f"{short(left)}: " + "; ".join(
            f"seed {s} road 0 / 2 / 3 real scenes {row['procedural'][s]['shares']['road_iou']:.3f} / "
            f"{row['out2'][s]['shares']['road_iou']:.3f} / {row['out3'][s]['shares']['road_iou']:.3f}" for s in nets),
            flush=True)
    mean = {g: {seed: {k: round(statistics.mean(f[g][seed][k] for f in folds.values()), 4) for k in KEYS}
                for seed in nets} for g in ("gain_3_over_2", "gain_3_over_0")}
    result = {"benchmark": "views_real_curve", "machine": machine(), "base": str(args.base),
              "evaluator_seeds": args.seeds, "arms": trained, "folds": folds, "mean_gain": mean,
              "note": "shares of the oracle on a left-out real training scene (24 frames), the shipped generator's "
                      "samples decoded by each arm's decoder; out3 / out2 / procedural: the real-layout segment "
                      "trained on the procedural frames plus 3 / 2 / 0 of the other real training scenes; gains "
                      "are paired differences of shares on the same frames (module docstring)"}
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(mean, indent=1))
    return result


if __name__ == "__main__":
    main()
