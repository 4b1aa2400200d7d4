"""Decoder-only fine-tuning of the shipped tiny tokenizer: does a sharper decoder lift road IoU?

    python benchmarks/views_decoder.py 600,0.05 400,0.0         # steps,adversarial weight per arm

The generator predicts token indices, so a new decoder over the same encoder and codebook changes the pixels of
every sample without retraining the generator. Each arm starts from ``checkpoints/views_tiny``'s tokenizer,
freezes its encoder and codebook (the tokens of every frame stay bit-identical) and trains the decoder alone
on ``make checkpoints``' training frames (the shipped run's split: its validation scenarios excluded) with the
tokenizer's reconstruction losses (L1 + MSE + image gradients) and, when the weight is above 0, the
patch-adversarial term (``bevgen.views.adversarial``, adaptive weight, on from the first step); Adam 2e-4 with
20 warm-up steps, batch 4 frames (24 views), 2 threads.

Each arm (and the shipped decoder) is scored with the benchmarks' evaluator on the selection frames of
``benchmarks/views_sampler.py`` (never the held-out sets): the round trip of the true views and the shipped
generator's samples (seed 0, the shipped sampler settings) decoded by the arm's decoder, as shares of the
oracle. Rows are printed and written to ``benchmarks/work/views_decoder.json``; an arm's run
(``benchmarks/work/views_decoder/<steps>_<weight>``: the shipped run with the new tokenizer.pt) is reused
when present. Add ``--heldout`` to score the arms once on the held-out sets too (for the record only).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "views_decoder"
TARGETS = ("vehicle_iou", "road_iou", "seam_consistency")


def tune_decoder(steps: int, adversarial_weight: float, out: Path, lr: float = 2e-4, batch: int = 4) -> Path:
    """A copy of the shipped views run whose tokenizer decoder was trained ``steps`` more steps (encoder and
    codebook frozen). Cost per step: one encoder forward without grad, decoder forward/backward (and the
    discriminator's) over batch x 6 views: about 0.5 s at 64x112 on 2 cores."""
    import torch
    from views_eval import TRAIN_DATA

    from bevgen.pretrained import shipped
    from bevgen.render.dataset import split_frames
    from bevgen.views.adversarial import TokenizerAdversary
    from bevgen.views.config import ViewsConfig
    from bevgen.views.sample import images_to_unit
    from bevgen.views.tokenizer import VQAutoencoder
    from bevgen.views.train import _batches, _load_items
    from runkit.checkpoint import load_checkpoint, save_checkpoint
    from runkit.config import from_dict

    torch.set_num_threads(2)
    torch.manual_seed(0)
    ship = shipped("views_tiny")
    if ship is None:
        raise SystemExit("checkpoints/views_tiny missing: run `make checkpoints` first")
    state = load_checkpoint(ship / "checkpoints" / "tokenizer.pt")
    cfg = from_dict(ViewsConfig, state["config"])
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, adversarial_weight=adversarial_weight, adversarial_start=0, discriminator_lr=2e-4))
    tok = VQAutoencoder(cfg.tokenizer)
    tok.load_state_dict(state["model"], strict=True)
    tok.encoder.eval().requires_grad_(False)
    tok.quantizer.eval().requires_grad_(False)
    names = json.loads((TRAIN_DATA / "index.json").read_text())["frames"]
    train, _ = split_frames(names, cfg.data.heldout_fraction, cfg.train.seed)
    problems: list[str] = []
    items = _load_items(TRAIN_DATA, list(train), cfg, problems)
    for p in problems:
        print(f"skipped {p}", file=sys.stderr)
    batches = _batches(items, batch, cfg, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(tok.decoder.parameters(), lr=lr, betas=(0.5, 0.9))
    adv = TokenizerAdversary(cfg.train, torch.device("cpu"), None, 1, lr_at=lambda i: 2e-4)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 20)
        x = images_to_unit(next(batches)["images"].flatten(0, 1))
        with torch.no_grad():
            q, _, _ = tok._quantise(x)
        recon = tok.decoder(q)
        loss = tok.reconstruction_loss(recon, x)["total"]
        if adv.active(step):
            loss = adv.losses(x, recon, loss, tok.decoder[-1].weight, step)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.decoder.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            took = time.perf_counter() - t0
            print(f"decoder step {step + 1}/{steps}: loss {float(loss.detach()):.4f} ({took:.0f} s)", file=sys.stderr,
                  flush=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ship, tmp)
    save_checkpoint(tmp / "checkpoints" / "tokenizer.pt", model=tok.state_dict(), config=state["config"],
                    step=state["step"], best_metric=state["best_metric"])
    tmp.rename(out)  # a run dir appears only when complete
    return out


def score(run: Path, sets: dict, bevseg: Path, tag: str) -> list[dict]:
    """Round trip (procedural sets) and the shipped generator's samples of ``run`` on every set."""
    from views_tokenizer import round_trip

    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import load_views

    pipe, rows = load_views(run), []
    for mode in ("round_trip", "generated"):
        for name, (data, names) in sets.items():
            if mode == "round_trip" and "real" in name:
                continue  # the real maps' round trip is not a selection figure
            f = round_trip(pipe.tokenizer, tuple(pipe.config.data.image_size)) if mode == "round_trip" else (
                lambda b: pipe(b, seed=0).images)
            m = evaluate_views(f, data, names, WORK / "eval" / tag / mode / name, bevseg_ckpt=bevseg, progress=False)
            rows.append({"arm": tag, "mode": mode, "set": name, "frames": len(names),
                         "share_of_oracle": {k: round(m[k] / m[f"{k}_oracle"], 4) for k in TARGETS},
                         "fid": round(m["fid"], 2), "psnr": round(m["psnr"], 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str]) -> None:
    import torch
    from views_eval import TRAIN_DATA, bevseg_net, real_map_data
    from views_sampler import selection_sets

    from bevgen.pretrained import shipped

    heldout = "--heldout" in argv
    arms = [tuple(a.split(",")) for a in argv if not a.startswith("--")]
    if not arms:
        raise SystemExit(__doc__)
    torch.set_num_threads(2)
    bevseg, sets = bevseg_net(TRAIN_DATA), selection_sets()
    if heldout:
        import run as bench

        sets = {"heldout_procedural": bench._heldout_camera_data()}
        real = real_map_data()
        if real is not None:
            sets["heldout_real_maps"] = real
        sets = {k: (v, json.loads((v / "index.json").read_text())["frames"]) for k, v in sets.items()}
    rows = score(shipped("views_tiny"), sets, bevseg, "shipped")
    for steps, weight in arms:
        run = WORK / f"{int(steps)}_{float(weight)}"
        if not run.exists():
            tune_decoder(int(steps), float(weight), run)
        rows += score(run, sets, bevseg, run.name)
    out = WORK.parent / ("views_decoder_heldout.json" if heldout else "views_decoder.json")
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
