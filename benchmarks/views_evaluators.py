"""How much the views scores depend on the evaluator's own training draw.

    python benchmarks/views_evaluators.py                 # seeds 0 1 2, 600 steps each
    python benchmarks/views_evaluators.py --seeds 0 3 4
    python benchmarks/views_evaluators.py --real-training-maps   # evaluators that also saw real road layouts

Vehicle and road IoU are read off generated views by a BEV segmentation network that this project trains
(``bevgen.views.bevseg_train``); a network trained with another seed is another evaluator, and its oracle (the same
network on the true views) moves with it. This script trains one network per seed on ``make checkpoints``' training
frames (600 steps, the benchmark's recipe; seed 0 is the network ``make bench`` uses,
``benchmarks/work/cameras/bevseg``, reused when present), scores the shipped tiny model (seed-0 samples, so every
evaluator reads the same images) and its oracle on both held-out sets of ``benchmarks/views_eval.py``, and reports
each evaluator's shares of the oracle (vehicle / road / seams, per distance too; with ``shares_ci90``, the 90%
interval of the vehicle, road and seam shares over another draw of frames from the same scenarios,
``bevgen.views.bootstrap``), their mean and their minimum, and
the same shares of the round trip (the true views through the tokenizer and the layout-reading decoder, no
generator: where the generated share is lost, in the tokens or in the generator). Seams and FID need no network:
they are the same under every evaluator and are listed once.

``--real-training-maps`` trains each network on those frames plus the four real training scenes rendered by the
synthetic renderer (``benchmarks/views_sampler.py``'s selection frames; the three held-out real scenes are never
used): a network trained on procedural maps alone reads the real-map oracle's vehicles at IoU 0.07 and its
road at 0.44, so its real-map shares are mostly its own noise.

Results: ``benchmarks/results/views_evaluators.json`` (``views_evaluators_real_maps.json`` with
``--real-training-maps``; with the machine). Runs: ``benchmarks/work/cameras/
bevseg_seed<k>_<steps>`` (resumable; one network takes about 3 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import _heldout_camera_data, machine  # noqa: E402  (benchmarks/ is not a package)
from views_eval import (REAL_DIR, TRAIN_DATA, WORK, bevseg_net, evaluate_model, model_views,  # noqa: E402
                        real_map_data)

RESULT = ROOT / "benchmarks" / "results" / "views_evaluators.json"
RESULT_REAL = ROOT / "benchmarks" / "results" / "views_evaluators_real_maps.json"
SHARES = ("vehicle_iou", "road_iou", "vehicle_iou_near", "vehicle_iou_mid", "vehicle_iou_far", "road_iou_near",
          "road_iou_mid", "road_iou_far")
SHARED = ("seam_consistency", "seam_consistency_oracle", "fid", "psnr")


def evaluator(seed: int, steps: int = 600, data: Path = TRAIN_DATA, tag: str = "") -> Path:
    """The BEV segmentation network of ``seed`` trained on ``data`` (default the shipped model's training frames;
    cached under ``WORK / bevseg<tag>_seed<seed>_<steps>``)."""
    from bevgen.views.bevseg import BevSegConfig
    from bevgen.views.bevseg_train import train_bevseg

    if seed == 0 and steps == 600 and data == TRAIN_DATA:
        return bevseg_net(TRAIN_DATA)  # the benchmark's own network
    cfg = replace(BevSegConfig(), seed=seed)
    return train_bevseg(data, None, WORK / f"bevseg{tag}_seed{seed}_{steps}", steps=steps, config=cfg,
                        resume=True, progress=True)


def with_real_training_maps() -> Path:
    """``TRAIN_DATA``'s frames and the real training scenes' rendered frames as one dataset (links, no copies):
    ``WORK / "bevseg_data_real_maps"``."""
    from views_sampler import selection_sets  # the real training scenes' frames, rendered when missing

    from bevgen.render.dataset import merge_datasets

    real = selection_sets().get("real_maps_train_scenes")
    if real is None:
        raise SystemExit(f"{REAL_DIR} missing: no real scenes to train the evaluator on")
    out = WORK / "bevseg_data_real_maps"
    merge_datasets({"": TRAIN_DATA, "real": real[0]}, out)
    return out


def shares(row: dict) -> dict:
    """Share of the oracle of every IoU the row holds (None where the oracle reads 0)."""
    out = {}
    for k in SHARES:
        gen, ora = row.get(k), row.get(f"{k}_oracle")
        if gen is not None and ora:
            out[k] = round(gen / ora, 4)
    return out


def summary(per_seed: dict[int, dict]) -> dict:
    """Mean, minimum and maximum over evaluators of every share, per set (``<set>_round_trip``: the round trip's)."""
    out: dict = {}
    for seed_rows in per_seed.values():
        for name, row in seed_rows.items():
            for key, suffix in (("shares", ""), ("round_trip_shares", "_round_trip")):
                for k, v in row.get(key, {}).items():
                    out.setdefault(name + suffix, {}).setdefault(k, []).append(v)
    return {name: {k: {"mean": round(statistics.fmean(v), 4), "min": min(v), "max": max(v), "n": len(v)}
                   for k, v in ks.items()} for name, ks in out.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluator seeds (default 0 1 2)")
    ap.add_argument("--steps", type=int, default=600, help="training steps of each evaluator (default 600)")
    ap.add_argument("--ckpt", type=Path, default=ROOT / "checkpoints" / "views_tiny",
                    help="views run to score (default: the shipped tiny model)")
    ap.add_argument("--real-training-maps", action="store_true",
                    help="train each evaluator on the real training scenes' rendered frames too")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"result JSON (default {RESULT.relative_to(ROOT)}, or {RESULT_REAL.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    args.out = args.out or (RESULT_REAL if args.real_training_maps else RESULT)
    if not (TRAIN_DATA / "index.json").exists():
        raise SystemExit(f"{TRAIN_DATA}: no training frames; run `make checkpoints` (or "
                         "`python -c 'from bevgen.pretrained import write_training_frames as w; "
                         "w(__import__(\"pathlib\").Path(\"runs/checkpoints\"))'`) first")
    sets = {"procedural": _heldout_camera_data()}
    real = real_map_data()
    if real is not None:
        sets["real_maps"] = real
    data, tag = (with_real_training_maps(), "_real_maps") if args.real_training_maps else (TRAIN_DATA, "")
    per_seed: dict[int, dict] = {}
    shared: dict = {}
    samples, round_trips = model_views(args.ckpt), model_views(args.ckpt, round_trip=True)  # drawn once
    for seed in args.seeds:
        t0 = time.perf_counter()
        net = evaluator(seed, args.steps, data, tag)
        t_train = time.perf_counter() - t0
        where = WORK / f"eval_evaluators{tag}" / args.ckpt.name / f"seed{seed}"
        rows = evaluate_model(args.ckpt, sets, net, where, views=samples)
        trips = evaluate_model(args.ckpt, sets, net, where / "round_trip", round_trip=True, views=round_trips)
        per_seed[seed] = {name: {"shares": shares(r), "shares_ci90": r.get("shares_ci90"),
                                 "round_trip_shares": shares(trips[name]),
                                 "oracle": {k: round(r[f"{k}_oracle"], 4) for k in SHARES if f"{k}_oracle" in r},
                                 "generated": {k: round(r[k], 4) for k in SHARES if r.get(k) is not None}}
                          for name, r in rows.items()}
        shared = {name: {k: r.get(k) for k in SHARED} for name, r in rows.items()}
        print(f"seed {seed} (evaluator {t_train:.0f} s): "
              + "; ".join(f"{n}: " + " ".join(f"{k} {v:.3f} {(r['shares_ci90'] or {}).get(k)}"
                                              for k, v in r["shares"].items() if k in ("vehicle_iou", "road_iou"))
                          for n, r in per_seed[seed].items()), flush=True)
    result = {"benchmark": "views_evaluators", "machine": machine(), "model": str(args.ckpt),
              "evaluator": {"trained_on": str(data), "steps": args.steps, "seeds": args.seeds},
              "sets": {k: str(v) for k, v in sets.items()}, "per_seed": per_seed, "summary": summary(per_seed),
              "same_under_every_evaluator": shared}
    if args.out.exists():  # rows added by hand beside a run (other models scored for the record) stay
        old = json.loads(args.out.read_text())
        result |= {k: old[k] for k in ("candidates", "note") if k in old}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    main()
