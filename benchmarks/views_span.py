"""What attending to part of each neighbouring view costs: the ``generator.neighbour_span`` A/B.

Arms: ``configs/views/tiny.yaml`` with ``view_neighbours: 1`` and ``neighbour_span`` 1.0 / 0.75 / 0.5, generator
stage only, from the shipped tiny tokenizer, ``STEPS`` steps (2 threads) on the frames of procedural seeds 0-15
(``make checkpoints``' recipe: traffic density 0.8, 12 frames per scene; the frames' own 10% held out by scenario).
Scored on the held-out procedural frames of ``benchmarks/views_eval.py`` (seeds 10000+):

* held-out masked-token NLL and accuracy (6 masks per frame at ratios 0.3 / 0.6 / 0.9, seed 0) and the NLL of
  the tokens in the 2 border columns of each view;
* road / vehicle IoU, seams, FID of samples (``evaluate_views``), ``SEEDS`` sampling seeds, mean and per seed,
  with a BEV segmentation network trained on the arms' training frames (its own: compare arms with each other).

Every run lives in ``benchmarks/work/views_span`` and is reused when finished (resumable otherwise).
Run: ``python benchmarks/run.py views_span`` (about 20 min per arm on the 2-core VM).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "views_span"
SPANS = (1.0, 0.75, 0.5)
STEPS = 1200
SEEDS = (0, 1, 2, 3)
KEYS = ("road_iou", "vehicle_iou", "seam_consistency", "fid")


def train_arm(span: float, data: Path, tokenizer: Path) -> Path:
    """One arm's generator (resumes; a finished run is reused)."""
    import dataclasses

    from views_eval import train_generator

    from bevgen.views.config import ViewsConfig
    from runkit.config import load_config

    cfg = load_config(ViewsConfig, ROOT / "configs" / "views" / "tiny.yaml")
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, view_neighbours=1,
                                                                 neighbour_span=span),
                              train=dataclasses.replace(cfg.train, generator_steps=STEPS, threads=2))
    return train_generator(cfg, data, WORK / f"span{span}", tokenizer)


def masked_nll(run: Path, data: Path, threads: int = 2) -> dict:
    """Held-out masked-token NLL / accuracy of a run on ``data`` (all tokens, and those of each view's 2 border
    columns), the same masks for every run."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.sample import COND_KEYS, fit_batch, load_views

    torch.set_num_threads(threads)
    pipe = load_views(run)
    gen, ds = pipe.generator, FrameDataset(data)
    w = gen.token_grid[1]
    sums = dict.fromkeys(("nll", "right", "count", "border_nll", "border_count"), 0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), pipe._eval_mode():
        for i in range(0, len(ds), 4):
            batch = default_collate([{k: v for k, v in ds[j].items() if k not in ("semantic", "name")}
                                     for j in range(i, min(i + 4, len(ds)))])
            batch = fit_batch(batch, pipe.image_size)
            tokens = pipe.encode(batch["images"])
            ctx = gen.context({k: batch[k] for k in COND_KEYS}, torch.zeros(len(tokens), dtype=torch.bool))
            col = torch.arange(tokens.shape[1]) % w
            for ratio in (0.3, 0.6, 0.9, 0.3, 0.6, 0.9):
                mask = torch.rand(tokens.shape, generator=g) < ratio
                logits = gen.logits(tokens.masked_fill(mask, gen.mask_id), ctx)
                ce = F.cross_entropy(logits[mask], tokens[mask], reduction="none")
                border = ((col < 2) | (col >= w - 2))[mask.nonzero()[:, 1]]
                sums["nll"] += float(ce.sum())
                sums["count"] += int(mask.sum())
                sums["right"] += int((logits[mask].argmax(-1) == tokens[mask]).sum())
                sums["border_nll"] += float(ce[border].sum())
                sums["border_count"] += int(border.sum())
    return {"nll": round(sums["nll"] / sums["count"], 4), "accuracy": round(sums["right"] / sums["count"], 4),
            "nll_border_columns": round(sums["border_nll"] / sums["border_count"], 4)}


def bench_views_span(heldout: Path) -> dict:
    """Train (or reuse) every arm and score it; mean over sampling seeds beside each seed's figures."""
    from bevgen.pretrained import shipped, write_training_frames
    from bevgen.views.bevseg_train import train_bevseg
    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import load_views

    ship = shipped("views_tiny")
    if ship is None:
        return {"skipped": "no shipped views_tiny checkpoint (its tokenizer is every arm's)"}
    data = write_training_frames(WORK, num_scenarios=16)  # make checkpoints' recipe, its first 16 scenes
    bevseg = train_bevseg(data, None, WORK / "bevseg", steps=600, resume=True, progress=False)
    names = json.loads((heldout / "index.json").read_text())["frames"]
    out: dict = {"heldout": str(heldout.relative_to(ROOT)), "train_frames": str(data.relative_to(ROOT)),
                 "steps": STEPS, "sampling_seeds": list(SEEDS), "arms": {}}
    for span in SPANS:
        run = train_arm(span, data, ship / "checkpoints" / "tokenizer.pt")
        pipe = load_views(run)
        per_seed = []
        for seed in SEEDS:
            m = evaluate_views(lambda b, s=seed, p=pipe: p(b, seed=s).images, heldout, names,
                               WORK / "eval" / f"span{span}" / f"seed{seed}", bevseg_ckpt=bevseg, progress=False)
            per_seed.append({k: round(m[k], 4) for k in KEYS})
        summary = json.loads((run / "train_summary.json").read_text())
        out["arms"][str(span)] = {
            "neighbour_span": span, **masked_nll(run, heldout),
            **{k: round(statistics.mean(s[k] for s in per_seed), 4) for k in KEYS}, "per_seed": per_seed,
            "oracle": {k: round(m[f"{k}_oracle"], 4) for k in KEYS if f"{k}_oracle" in m},
            "generator_train": summary.get("generator")}
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import _heldout_camera_data

    print(json.dumps(bench_views_span(_heldout_camera_data()), indent=2, default=str))
