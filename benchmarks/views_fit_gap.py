"""Does a views generator learn the real road layouts or memorise its few real training scenes?

    python benchmarks/views_fit_gap.py                                     # the shipped tiny model
    python benchmarks/views_fit_gap.py benchmarks/work/views_generator/real300 ...   # and other views runs

The generator is a masked-token model, so its own loss is a direct measure of fit: the masked-token cross-entropy
(``bevgen.views.generator.masked_token_loss``, no condition dropout, the same 8 mask draws for every set and run)
of the true views' tokens given their layout. It is taken on four sets of 24 frames (the selection frames of
``benchmarks/views_sampler.py``, never the held-out sets):

* ``real_train_scenes``: the real training scenes the real-layout arms train on (nuScenes 0061, 0103, Waymo 2a1e);
* ``real_selection_scene``: ``REAL_SELECTION_SCENE`` (nuScenes 0553), which no run trains on;
* ``procedural_train``: frames of ``make checkpoints``' training data;
* ``procedural_unseen``: procedural seeds 20000+, which no run trains on.

A run that generalises lowers the loss on the unseen real scene about as much as on the real scenes it trained on;
a run that memorises lowers the second far more. ``gap_real`` (unseen minus trained real scenes) against
``gap_procedural`` (the same on procedural maps, where training data is plentiful) says which. Where a run has a
``split.json``, each set's share of frames inside its training split is reported too (``trained_share``), so a
gap is read against what the run really saw. Token losses compare between runs with the same tokenizer only
(``tokenizer`` hashes its weights); the gaps compare across tokenizers.

Results: ``benchmarks/results/views_fit_gap.json`` (with the machine); about 40 s a run on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULT = ROOT / "benchmarks" / "results" / "views_fit_gap.json"
FRAMES = 24
DRAWS = 8


def spread(names: list[str], k: int = FRAMES) -> list[str]:
    """``k`` names spread evenly over the sorted ``names`` (all of them when there are fewer)."""
    names = sorted(names)
    step = max(1, len(names) // k)
    return names[::step][:k]


def fit_sets() -> dict[str, tuple[Path, list[str]]]:
    """The four frame sets of the module docstring as (dataset, frame names)."""
    from views_eval import TRAIN_DATA
    from views_sampler import selection_sets

    from bevgen.pretrained import REAL_SELECTION_SCENE

    sel = selection_sets()
    if "real_maps_train_scenes" not in sel:
        raise SystemExit("no real scenarios found (../shared/data/real-scenarios): nothing to compare")
    real, real_names = sel["real_maps_train_scenes"]
    unseen, unseen_names = sel["procedural_unseen"]
    train_names = json.loads((TRAIN_DATA / "index.json").read_text())["frames"]
    return {"real_train_scenes": (real, spread([n for n in real_names if REAL_SELECTION_SCENE not in n])),
            "real_selection_scene": (real, spread([n for n in real_names if REAL_SELECTION_SCENE in n])),
            "procedural_train": (TRAIN_DATA, spread(train_names)),
            "procedural_unseen": (unseen, spread(unseen_names))}


def trained_share(run: Path, names: list[str]) -> float | None:
    """Share of ``names`` inside ``run``'s training split (a merged dataset names real frames ``real-<frame>``,
    ``bevgen.pretrained.real_layout_frames``); None without a split.json."""
    split = run / "split.json"
    if not split.exists():
        return None
    train = set(json.loads(split.read_text())["train"])
    return sum(n in train or f"real-{n}" in train for n in names) / len(names)


def token_loss(pipe, data: Path, names: list[str]) -> dict:
    """Mean masked-token cross-entropy and top-1 accuracy of ``pipe``'s generator on the frames' true tokens."""
    import torch
    from torch.utils.data import default_collate

    from bevgen.render.dataset import FrameDataset
    from bevgen.views.generator import masked_token_loss
    from bevgen.views.sample import COND_KEYS, fit_batch, images_to_unit

    ds = FrameDataset(data, names=names)
    b = fit_batch(default_collate([ds[i] for i in range(len(ds))]), pipe.image_size)  # views and K at its size
    pipe.generator.eval()
    ce, acc = [], []
    with torch.no_grad():
        tokens = pipe.tokenizer.encode(images_to_unit(b["images"].flatten(0, 1))).view(len(ds), -1)
        cond = {k: b[k] for k in COND_KEYS}
        for draw in range(DRAWS):
            r = masked_token_loss(pipe.generator, tokens, cond, 0.0, torch.Generator().manual_seed(draw))
            ce.append(float(r["total"]))
            acc.append(float(r["acc"]))
    return {"ce": round(sum(ce) / DRAWS, 4), "acc": round(sum(acc) / DRAWS, 4), "frames": len(ds)}


def measure(run: Path, sets: dict) -> dict:
    """One run's losses on every set, its trained shares and the two gaps."""
    from bevgen.views.sample import load_views

    pipe = load_views(run)
    rows = {name: token_loss(pipe, data, names) | {"trained_share": trained_share(run, names)}
            for name, (data, names) in sets.items()}
    digest = hashlib.sha256()  # of the weights, not the file (a run's file also holds its optimizer state)
    for name, tensor in sorted(pipe.tokenizer.state_dict().items()):
        digest.update(name.encode() + tensor.cpu().contiguous().numpy().tobytes())
    tok = digest.hexdigest()[:12]
    return {"sets": rows, "tokenizer": tok,
            "gap_real": round(rows["real_selection_scene"]["ce"] - rows["real_train_scenes"]["ce"], 4),
            "gap_procedural": round(rows["procedural_unseen"]["ce"] - rows["procedural_train"]["ce"], 4)}


def main(argv: list[str] | None = None) -> dict:
    import torch
    from run import machine

    from bevgen.pretrained import shipped

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="*", help="views runs to measure besides the shipped tiny model")
    ap.add_argument("--out", type=Path, default=RESULT, help=f"result JSON (default {RESULT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    ship = shipped("views_tiny")
    if ship is None:
        raise SystemExit("checkpoints/views_tiny missing: run `make checkpoints` first")
    for run in args.runs:
        if not (run / "checkpoints" / "generator.pt").exists():
            raise SystemExit(f"{run}: no checkpoints/generator.pt (a views run directory)")
    torch.set_num_threads(2)
    sets = fit_sets()
    old = json.loads(args.out.read_text()).get("runs", {}) if args.out.exists() else {}
    runs = dict(old)  # runs measured before stay (a run directory is the key)
    for run in [ship, *args.runs]:
        key = str(run.resolve().relative_to(ROOT)) if run.resolve().is_relative_to(ROOT) else str(run)
        runs[key] = measure(run, sets)
        print(f"{key}: gap real {runs[key]['gap_real']:+.3f}, procedural {runs[key]['gap_procedural']:+.3f}; "
              + ", ".join(f"{k} {v['ce']:.3f}" for k, v in runs[key]["sets"].items()), flush=True)
    result = {"benchmark": "views_fit_gap", "machine": machine(), "draws": DRAWS,
              "sets": {k: {"data": str(d), "frames": n} for k, (d, n) in sets.items()}, "runs": runs,
              "definitions": {"ce": "masked-token cross-entropy (nats) of the true views' tokens given the layout",
                              "acc": "top-1 accuracy on the masked tokens",
                              "gap_real": "ce(real_selection_scene) - ce(real_train_scenes)",
                              "gap_procedural": "ce(procedural_unseen) - ce(procedural_train)",
                              "trained_share": "share of the set's frames in the run's training split (null: no "
                                               "split.json; the shipped model trained on procedural frames only)"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
