"""More training frames for the views generator: the tiny model on a CPU, the 128x224 one on a GPU.

    python benchmarks/views_data.py prepare 256          # frames of procedural seeds 64..319 (+ the device copy)
    python benchmarks/views_data.py tiny 2500            # CPU: the shipped tiny model, 1500 -> 2500 steps on them
    python benchmarks/views_data.py tiny 1500 --scratch  # CPU: the tiny generator trained anew on them
    python benchmarks/views_data.py tiny 1500 --scratch --object-loss 3   # ... its loss weighted on the boxes
    python benchmarks/views_data.py train 520            # on a CUDA machine, from the repository root (seconds)
    python benchmarks/views_data.py score RUN_OR_PT...   # selection frames; add --heldout for the held-out sets

The views models train on ``make checkpoints``' 664 frames (procedural seeds 0-63, 12 frames each; 614 after its
validation scenes). ``prepare`` renders 12 frames each of procedural seeds 64 .. 64 + N - 1 with the same recipe
(200 steps, traffic density 0.8, ``benchmarks/work/views_data/extra``); the held-out sets (seeds 10000+, the 3
held-out real scenes) and the selection frames (the validation scenes of seeds 0-63, the 4 real training scenes)
stay out of every arm.

* ``tiny``: the shipped tiny model fine-tuned on the 614 + new frames (``--init-from`` with the shipped run's
  split, so its validation frames stay held out; the tiny config's schedule from step 1500 to ``STEPS``: the
  same recipe as the "longer training" row of the README, which used the 614 frames alone); with ``--scratch``
  the tiny generator trained from its first step on them (the shipped tokenizer, the tiny config's schedule).
* ``train`` (GPU): ``configs/views/hires.yaml``'s generator over the frozen 128x224 patch-adversarial tokenizer
  (``checkpoints/views_hires``, or ``runs/views_hires`` from ``make checkpoints-hires``) from scratch in two arms
  trained at once (bf16 autocast, batch 32): ``A`` on the 614 frames, ``B`` on the 614 + new ones. It first
  trains both 60 steps to time a step, then as many steps as fit in the budget (warm-up, cosine to 10%), and
  writes each arm's weights (``generator_<arm>.pt``), train summary and the ends of the logs to ``$OUT``.
  ``prepare`` writes what the GPU machine needs into ``benchmarks/work/views_data/carry`` (frames without depth
  and with the semantic maps zeroed, which the generator never reads: about 13 kB a frame; the tokenizer's
  weights; the arms' split files), small enough to travel (``carry`` of the device tool).
* ``score``: samples (seed 0, the run's sampler settings) of each run directory, or of each returned
  ``generator_<arm>.pt`` beside the carried tokenizer, scored with the benchmarks' evaluator (same bevseg network
  and extractor) on ``views_sampler``'s selection frames, as shares of the oracle
  (``benchmarks/work/views_data/scored.json``); with ``--heldout`` on the held-out sets, once, for the record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "views_data"
CARRY = WORK / "carry"
ARMS = ("A", "B")
TARGETS = ("vehicle_iou", "road_iou", "seam_consistency")


def _base_run() -> Path:
    from bevgen.pretrained import shipped

    run = shipped("views_hires") or ROOT / "runs" / "views_hires"
    if not (run / "checkpoints" / "tokenizer.pt").exists():
        raise SystemExit("no 128x224 tokenizer: run `make checkpoints-hires` first")
    return run


def _frames() -> tuple[Path, list[str], list[str]]:
    """The merged dataset of the 614 + new frames (links, ``WORK / "merged"``; the new ones named ``extra-*``),
    its training names (every frame but the held-out ones) and the held-out names: the split the shipped models
    were made with (seed 0, 10% of make checkpoints' frames by scenario; the selection frames come from it)."""
    from views_eval import TRAIN_DATA

    from bevgen.render.dataset import merge_datasets, split_frames

    index = merge_datasets({"": TRAIN_DATA, "extra": WORK / "extra" / "camera_data"}, WORK / "merged")
    _, held = split_frames(json.loads((TRAIN_DATA / "index.json").read_text())["frames"], 0.1, 0)
    held = set(held)
    return WORK / "merged", [n for n in index["frames"] if n not in held], [n for n in index["frames"] if n in held]


def prepare(n: int) -> None:
    """Render the extra frames (resumable) and write the device copy of both arms' data."""
    import numpy as np

    from bevgen.pretrained import write_training_frames
    from runkit.checkpoint import load_checkpoint, save_checkpoint

    write_training_frames(WORK / "extra", num_scenarios=n, start_seed=64)
    merged, train, held = _frames()
    (CARRY / "frames" / "frames").mkdir(parents=True, exist_ok=True)
    for name in train + held:
        dst = CARRY / "frames" / "frames" / f"{name}.npz"
        if not dst.exists():
            z = dict(np.load(merged / "frames" / f"{name}.npz"))
            z.pop("depth", None)
            z["semantic"] = np.zeros_like(z["semantic"])
            np.savez_compressed(dst, **z)
    shutil.copy(merged / "index.json", CARRY / "frames" / "index.json")
    ck = load_checkpoint(_base_run() / "checkpoints" / "tokenizer.pt")
    save_checkpoint(CARRY / "tokenizer.pt", **{k: ck[k] for k in ("model", "config", "step", "best_metric")})
    arms = {"A": [n for n in train if not n.startswith("extra-")], "B": train}
    for arm, names in arms.items():
        (CARRY / f"split_{arm}.json").write_text(json.dumps({"train": names, "heldout": held}))
    print(f"{len(train) + len(held)} frames in {CARRY / 'frames'}; arm A trains on {len(arms['A'])}, "
          f"arm B on {len(arms['B'])}")


def tiny(steps: int, scratch: bool = False, object_loss: float = 0.0) -> Path:
    """CPU: the shipped tiny model fine-tuned on the 614 + new frames, or (``scratch``) its generator trained
    anew on them over the shipped tokenizer, its loss weighted on tokens covered by boxes when ``object_loss``
    (``generator.object_loss_weight``) is above 0 (resumes; 2 threads)."""
    from bevgen.pretrained import shipped
    from bevgen.views.config import ViewsConfig
    from bevgen.views.train import train_views
    from runkit.config import load_config

    base = WORK / "tiny_base"
    run = WORK / (f"tiny_{'scratch_' if scratch else ''}{steps}" + (f"_w{object_loss:g}" if object_loss else ""))
    merged, train, held = _frames()
    if not base.exists():  # the shipped weights with the split they were made with (init_from keeps it held out)
        shutil.copytree(shipped("views_tiny"), base)
        (base / "split.json").write_text(json.dumps({"train": [n for n in train if not n.startswith("extra-")],
                                                     "heldout": held}))
    cfg = load_config(ViewsConfig, ROOT / "configs" / "views" / "tiny.yaml",
                      [f"train.generator_steps={steps}", "train.threads=2",
                       f"generator.object_loss_weight={object_loss}"])
    if scratch:
        if not (run / "split.json").exists():
            (run / "checkpoints").mkdir(parents=True)
            shutil.copy(base / "checkpoints" / "tokenizer.pt", run / "checkpoints" / "tokenizer.pt")
            (run / "split.json").write_text(json.dumps({"train": train, "heldout": held}))
        summary = train_views(cfg, merged, run, stage="generator",
                              resume=(run / "checkpoints" / "generator.pt").exists())
    else:
        summary = train_views(cfg, merged, run, stage="generator", init_from=base)
    print(json.dumps(summary, default=str))
    return run


def _launch(tag: str, steps: int, precision: str, deadline: float, out: Path, batch: int, device: str) -> dict:
    """Both arms' generator stage at once (one process each), waited for until ``deadline``."""
    sets = {"train.device": device, "train.precision": precision, "train.threads": 0, "train.generator_batch": batch,
            "train.generator_steps": steps, "train.sample_every": 0, "train.checkpoint_every": max(100, steps // 4),
            "train.warmup_steps": min(200, max(1, steps // 10))}
    procs = {}
    for arm in ARMS:
        run = WORK / "runs" / f"{tag}{arm}"
        shutil.rmtree(run, ignore_errors=True)
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(CARRY / "tokenizer.pt", run / "checkpoints" / "tokenizer.pt")
        shutil.copy(CARRY / f"split_{arm}.json", run / "split.json")
        argv = [sys.executable, "-c", "from bevgen.cli import main; main()", "views", "train", "-c",
                str(ROOT / "configs" / "views" / "hires.yaml"), "--data", str(CARRY / "frames"), "--out", str(run),
                "--stage", "generator", "--no-progress"]
        for k, v in sets.items():
            argv += ["--set", f"{k}={v}"]
        log = open(WORK / "logs" / f"{tag}{arm}.log", "w")
        procs[arm] = (run, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    res = {}
    for arm, (run, p) in procs.items():
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "killed"
        summary = run / "train_summary.json"
        res[arm] = {"rc": rc, "run": run, "summary": json.loads(summary.read_text()) if summary.exists() else None}
        print(f"{tag} {arm}: rc {rc}", flush=True)
    return res


def train(budget: float, cal: int = 60, batch: int = 32, device: str = "cuda") -> None:
    """On a CUDA machine: time a step with both arms running, then train both as long as ``budget`` allows
    (``device`` "cpu" with a small ``cal`` and ``batch`` checks the procedure here)."""
    t0, out = time.time(), Path(os.environ.get("OUT", WORK / "out"))
    out.mkdir(parents=True, exist_ok=True)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    try:
        _train(t0, out, budget, cal, batch, device)
    finally:  # the ends of the arms' logs, in one file (the device returns few files)
        tails = [f"== {p.name}\n{p.read_text()[-4000:]}" for p in sorted((WORK / "logs").glob("*.log"))]
        (out / "logs.txt").write_text("\n".join(tails))


def _train(t0: float, out: Path, budget: float, cal: int, batch: int, device: str) -> None:
    import torch

    precision = "bf16"
    runs = _launch("cal", cal, precision, t0 + 0.45 * budget, out, batch, device)
    if not all(r["summary"] for r in runs.values()):
        precision = "fp32"
        runs = _launch("cal", cal, precision, t0 + 0.6 * budget, out, batch, device)
    if not all(r["summary"] for r in runs.values()):
        raise SystemExit("calibration failed: see the cal*.log files")
    per_step = max(r["summary"]["generator"]["seconds"] / cal for r in runs.values())
    overhead = max(r["summary"]["seconds"] - r["summary"]["generator"]["seconds"] for r in runs.values())
    left = budget - (time.time() - t0)
    steps = int((left - overhead - 30) / per_step) // 100 * 100
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else device, "torch": torch.__version__,
            "precision": precision, "batch": batch, "per_step_s_two_arms": round(per_step, 4),
            "overhead_s": round(overhead, 1), "steps": steps}
    print(json.dumps(info), flush=True)
    (out / "calibration.json").write_text(json.dumps(info, indent=1))
    if steps < 100:
        raise SystemExit("too little time left for 100 steps")
    for arm, r in _launch("", steps, precision, t0 + budget, out, batch, device).items():
        ck_path = r["run"] / "checkpoints" / "generator.pt"
        if ck_path.exists():
            ck = torch.load(ck_path, map_location="cpu", weights_only=True)
            torch.save({k: ck[k] for k in ("model", "config", "step", "best_metric")}, out / f"generator_{arm}.pt")
        if r["summary"]:
            (out / f"summary_{arm}.json").write_text(json.dumps(r["summary"] | info, indent=1))


def score(models: list[Path], heldout: bool) -> list[dict]:
    """Samples of each run directory or returned generator (with the carried tokenizer) on the selection or
    held-out frames."""
    import torch
    from views_eval import TRAIN_DATA, bevseg_net, real_map_data
    from views_sampler import selection_sets

    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import load_views

    torch.set_num_threads(2)
    bevseg, sets = bevseg_net(TRAIN_DATA), selection_sets()
    if heldout:
        import run as bench

        sets = {"heldout_procedural": bench._heldout_camera_data()}
        if (real := real_map_data()) is not None:
            sets["heldout_real_maps"] = real
        sets = {k: (v, json.loads((v / "index.json").read_text())["frames"]) for k, v in sets.items()}
    rows = []
    for model in models:
        run = model
        if model.suffix == ".pt":
            run = WORK / "scored" / model.stem
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copy(CARRY / "tokenizer.pt", run / "checkpoints" / "tokenizer.pt")
            shutil.copy(model, run / "checkpoints" / "generator.pt")
        pipe = load_views(run)
        for name, (data, names) in sets.items():
            m = evaluate_views(lambda b, p=pipe: p(b, seed=0).images, data, names, WORK / "eval" / model.name / name,
                               bevseg_ckpt=bevseg, progress=False)
            rows.append({"arm": model.name, "set": name, "frames": len(names),
                         "share_of_oracle": {k: round(m[k] / m[f"{k}_oracle"], 4) for k in TARGETS},
                         "fid": round(m["fid"], 2)} | {k: round(m[k], 4) for k in m if k.startswith("road_iou_")})
            print(json.dumps(rows[-1]), flush=True)
    out = WORK / ("scored_heldout.json" if heldout else "scored.json")
    old = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([r for r in old if r["arm"] not in {m.name for m in models}] + rows, indent=1))
    return rows


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("prepare", "tiny", "train", "score"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "prepare":
        prepare(int(sys.argv[2]))
    elif sys.argv[1] == "tiny":
        w = float(sys.argv[sys.argv.index("--object-loss") + 1]) if "--object-loss" in sys.argv else 0.0
        tiny(int(sys.argv[2]), "--scratch" in sys.argv, w)
    elif sys.argv[1] == "train":
        train(float(sys.argv[2]), *(int(a) for a in sys.argv[3:5]), *sys.argv[5:6])
    else:
        score([Path(a) for a in sys.argv[2:] if not a.startswith("--")], "--heldout" in sys.argv)
