"""Decoder-only fine-tuning of the shipped tiny tokenizer: does a sharper decoder lift road IoU?

    python benchmarks/views_decoder.py 600,0.05 400,0.0         # steps,adversarial weight per arm
    python benchmarks/views_decoder.py 600,0.05,layout          # the decoder also reads the layout per pixel
    python benchmarks/views_decoder.py 600,0.0,layout,frozen    # ... and only the layout injection trains
    python benchmarks/views_decoder.py 600,0.0,layout,frozen,gen0.5  # half the frames from generated tokens
    python benchmarks/views_decoder.py from=runs/checkpoints/views_layout_real 1200,0.0,layout,frozen,real,edge10,realx3

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
(``benchmarks/work/views_decoder/<steps>_<weight>[_layout]``: the shipped run with the new tokenizer.pt) is reused
when present. Since the shipped decoder reads the layout, arms go on from it and are named ``shipped+<arm>``;
``gen<share>`` decodes that share of each batch's frames from the shipped generator's tokens (``generated`` of
``tune_decoder``); ``edge<weight>`` weighs the pixels on the layout's edges (road borders, lines, car outlines, the
horizon) ``1 + weight`` in the losses (``edge_weight`` of ``tune_decoder``); ``realx<k>`` is a ``real`` arm whose real
frames are taken ``k`` times (``real_layout_frames(repeat=k)``: the shipped fourth segment's data, k = 3). A
``layout`` arm's decoder also reads the layout through every pixel (``tokenizer.layout_channels``, ``bevgen views
tune-decoder``); its injection starts at zero, so it starts from the shipped decoder. Add ``--heldout`` to score
the arms once on the held-out sets too (for the record only).

A ``real`` arm trains on the procedural frames plus the real training scenes of ``../shared`` rendered
(``bevgen.pretrained.real_layout_frames``: ``REAL_SELECTION_SCENE`` left out). ``--real-selection`` scores the
generated samples on that scene (24 frames) and the unseen procedural frames instead, and prints each arm's worst
share of a target's bar (vehicle 0.5, road 0.9, seams 0.75 of the oracle): the rule that chose the shipped
decoder's real-layout segments (README, camera views). ``run=DIR`` scores a views run trained elsewhere (e.g. a
generator fine-tuned with ``bevgen views train --init-from``) as one more arm, named by its directory;
``--bevseg=CKPT`` scores with another segmentation network (e.g. one of ``benchmarks/views_evaluators.py``'s) instead
of the benchmark's (the rows name their evaluator).

``from=DIR`` starts the arms from another views run than the shipped one, scores it as the baseline row and names
the arms ``<DIR name>+<arm>``. ``--real-selection`` needs it: the shipped decoder's real-layout segment is the chosen
recipe refit on every real training scene, ``REAL_SELECTION_SCENE`` included
(``bevgen.pretrained.SHIPPED_SAW_SELECTION_SCENE``), so that scene no longer chooses anything tuned from it. Start
from the selected arm before the refit instead: ``from=benchmarks/work/views_decoder/shipped+600_real3_frozen``
(``600,0.0,layout,frozen,real`` tuned from the two-segment model). After ``make checkpoints``,
``benchmarks/views_real_curve.py`` remakes it bit for bit as ``benchmarks/work/views_real_curve/scene-0553_out3``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "views_decoder"
TARGETS = ("vehicle_iou", "road_iou", "seam_consistency")
BARS = {"vehicle_iou": 0.5, "road_iou": 0.9, "seam_consistency": 0.75}
"""Issue 16's targets as shares of the oracle: an arm's selection figure is its worst share of one of these."""


def tune_decoder(steps: int, adversarial_weight: float, out: Path, layout: bool = False,
                 train_decoder: bool = True, generated: float = 0.0, real: int = 0,
                 start: Path | None = None, edge_weight: float = 0.0) -> Path:
    """A copy of the views run ``start`` (default the shipped one) whose tokenizer decoder was trained ``steps``
    more steps on the shipped run's training frames (``bevgen.views.decoder_tune.tune_decoder``: encoder and
    codebook frozen; ``layout``: the decoder also reads the layout through every pixel; ``real``: the real training
    scenes' frames too, ``REAL_SELECTION_SCENE`` left out, each taken ``real`` times), 2 threads."""
    from views_eval import REAL_DIR, TRAIN_DATA

    from bevgen.pretrained import real_layout_frames, shipped
    from bevgen.views.decoder_tune import tune_decoder as tune

    ship = start or shipped("views_tiny")
    if ship is None:
        raise SystemExit("checkpoints/views_tiny missing: run `make checkpoints` first")
    data = TRAIN_DATA
    if real:
        data = real_layout_frames(TRAIN_DATA.parent, REAL_DIR, repeat=real)
        if data is None:
            raise SystemExit(f"{REAL_DIR}: no real scenarios for a real arm")
    summary = tune(ship, data, out, steps=steps, adversarial_weight=adversarial_weight, layout=layout,
                   threads=2, train_decoder=train_decoder, generated=generated, edge_weight=edge_weight)
    for p in summary["problems"]:
        print(f"skipped {p}", file=sys.stderr)
    return out


def evaluator_id(bevseg: Path) -> str:
    """Which bevseg network scored a row (the first 12 hex digits of its checkpoint's SHA-256): a network trained
    on another machine or with another seed is another evaluator, and shares compare only under one."""
    import hashlib

    return hashlib.sha256(Path(bevseg).read_bytes()).hexdigest()[:12]


def score(run: Path, sets: dict, bevseg: Path, tag: str, modes: tuple[str, ...] = ("round_trip", "generated"),
          keyed: bool = False) -> list[dict]:
    """Round trip (procedural sets) and the shipped generator's samples of ``run`` on every set (``keyed``: the
    scores are cached under the evaluator's id, for a network other than the benchmark's)."""
    from views_eval import round_trip_views

    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import load_views

    pipe, rows, eid = load_views(run), [], evaluator_id(bevseg)  # hashed once: the checkpoint is 6 MB
    round_trip = round_trip_views(pipe)

    for mode in modes:
        for name, (data, names) in sets.items():
            if mode == "round_trip" and "real" in name:
                continue  # the real maps' round trip is not a selection figure
            f = round_trip if mode == "round_trip" else (lambda b: pipe(b, seed=0).images)
            where = WORK / "eval" / tag / mode / (f"{name}@{eid}" if keyed else name)
            done = where / "metrics.json"  # an arm's run never changes once written: its scores are reused
            m = json.loads(done.read_text()) if done.exists() and tag != "shipped" else evaluate_views(
                f, data, names, where, bevseg_ckpt=bevseg, progress=False)
            rows.append({"arm": tag, "mode": mode, "set": name, "frames": len(names),
                         "share_of_oracle": {k: round(m[k] / m[f"{k}_oracle"], 4) for k in TARGETS},
                         "share_ci90": m.get("shares_ci90"),  # absent from scores cached before intervals
                         "fid": round(m["fid"], 2), "psnr": round(m["psnr"], 2), "evaluator": eid})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_args(argv: list[str], base: str = "shipped+") -> dict:
    """The command line (module docstring), every arm checked before anything is scored or trained.

    Returns:
        heldout, real_selection: the flags; arms: (steps, weight, layout, frozen, generated share, real (0: none,
        k: the real frames taken k times), run directory, edge weight) per arm, the directory
        ``WORK / <base><steps>_<weight>[_<option>...]``
        (``<DIR name>+`` for the base with ``from=DIR``); runs: the ``run=`` directories; bevseg: the ``--bevseg=``
        checkpoints (the last one scores); start: the ``from=`` directory or None. SystemExit with the docstring when
        there is nothing to score, with the reason on an unknown option or a second ``from=``.
    """
    starts = [Path(a.split("=", 1)[1]) for a in argv if a.startswith("from=")]  # the arms' starting run
    if len(starts) > 1:
        raise SystemExit(f"one from=DIR at most, got {[str(s) for s in starts]}")
    if starts:
        base = f"{starts[0].name}+"
    runs = [Path(a.split("=", 1)[1]) for a in argv if a.startswith("run=")]  # trained elsewhere: scored only
    other = [Path(a.split("=", 1)[1]) for a in argv if a.startswith("--bevseg=")]  # another evaluator
    flags = [a for a in argv if a.startswith("--") and not a.startswith("--bevseg=")]
    unknown = set(flags) - {"--heldout", "--real-selection"}
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}: --heldout, --real-selection, --bevseg=CKPT, run=DIR")
    todo = []
    for arm in (a for a in argv if not a.startswith(("--", "run=", "from="))):
        steps, weight, *kind = arm.split(",") if "," in arm else (arm, "?")  # "?": fails below, with the form
        gen = [k for k in kind if k.startswith("gen")]
        edge = [k for k in kind if k.startswith("edge")]
        times = [k for k in kind if k.startswith("realx")]
        if set(kind) - {"layout", "frozen", "real", *gen, *edge, *times} or max(map(len, (gen, edge, times))) > 1:
            raise SystemExit(f"{arm}: unknown arm options {kind}: layout, frozen, real, gen<share>, edge<weight>, "
                             "realx<times>")
        try:  # share of frames decoded from the generator's tokens; extra weight of the layout's edge pixels
            generated = float(gen[0][3:]) if gen else 0.0
            edge_w = float(edge[0][4:]) if edge else 0.0
            real = int(times[0][5:]) if times else int("real" in kind)
            steps_n, weight_f = int(steps), float(weight)
        except ValueError:
            raise SystemExit(f"{arm}: an arm is STEPS,WEIGHT[,option...] with gen<share> a number in [0, 1], "
                             "edge<weight> a number >= 0 and realx<times> a whole number >= 1, e.g. "
                             "600,0.0,layout,frozen,gen0.5") from None
        if edge_w < 0:
            raise SystemExit(f"{arm}: edge<weight> takes a number >= 0, got {edge_w}")
        if times and real < 1:
            raise SystemExit(f"{arm}: realx<times> takes a whole number >= 1, got {real}")
        if not 0.0 <= generated <= 1.0:
            raise SystemExit(f"{arm}: gen<share> takes a number in [0, 1], got {generated}")
        todo.append((steps_n, weight_f, "layout" in kind, "frozen" in kind, generated, real,
                     WORK / (base + "_".join([str(steps_n), str(weight_f), *kind])), edge_w))
    if not todo and not runs:
        raise SystemExit(__doc__)
    return {"heldout": "--heldout" in flags, "real_selection": "--real-selection" in flags, "arms": todo,
            "runs": runs, "bevseg": other, "start": starts[0] if starts else None}


def main(argv: list[str]) -> None:
    import torch
    from views_eval import TRAIN_DATA, bevseg_net, real_map_data
    from views_sampler import selection_sets

    from bevgen.pretrained import REAL_SELECTION_SCENE, SHIPPED_SAW_SELECTION_SCENE, shipped

    if shipped("views_tiny") is None:
        raise SystemExit("checkpoints/views_tiny missing: run `make checkpoints` first")
    ship_cfg = yaml.safe_load((shipped("views_tiny") / "config.yaml").read_text())
    # the shipped tokenizer reads the layout already (since 2026-12-05): arms tuned from it go on from there and
    # are named "shipped+<arm>", apart from the earlier arms that started from the tokens-only decoder
    base = "shipped+" if (ship_cfg.get("tokenizer") or {}).get("layout_channels", 0) else ""
    args = parse_args(argv, base)
    heldout, real_selection, todo, runs, other, start = (
        args[k] for k in ("heldout", "real_selection", "arms", "runs", "bevseg", "start"))
    if real_selection and start is None and SHIPPED_SAW_SELECTION_SCENE:
        raise SystemExit(f"--real-selection: the shipped decoder trained on {REAL_SELECTION_SCENE} (the chosen "
                         "recipe refit on every real training scene), so that scene cannot choose arms tuned from it; "
                         "start them from a run that did not see it with from=DIR (module docstring)")
    if start is not None and not (start / "checkpoints" / "tokenizer.pt").exists():
        raise SystemExit(f"from={start}: no checkpoints/tokenizer.pt (a views run directory)")
    torch.set_num_threads(2)
    bevseg, sets = (other[-1] if other else bevseg_net(TRAIN_DATA)), selection_sets()
    if heldout:
        import run as bench

        sets = {"heldout_procedural": bench._heldout_camera_data()}
        real = real_map_data()
        if real is not None:
            sets["heldout_real_maps"] = real
        sets = {k: (v, json.loads((v / "index.json").read_text())["frames"]) for k, v in sets.items()}
    elif real_selection:
        sets = real_selection_sets(sets)
    modes = ("generated",) if real_selection else ("round_trip", "generated")
    rows = (score(start, sets, bevseg, start.name, modes, bool(other)) if start is not None
            else score(shipped("views_tiny"), sets, bevseg, "shipped", modes, bool(other)))
    for steps, weight, layout, frozen, generated, real, run, edge_w in todo:  # frozen: only the injection trains
        if not run.exists():
            tune_decoder(steps, weight, run, layout=layout, train_decoder=not frozen, generated=generated, real=real,
                         start=start, edge_weight=edge_w)
        rows += score(run, sets, bevseg, run.name, modes, bool(other))
    for run in runs:
        if not (run / "checkpoints" / "generator.pt").exists():
            raise SystemExit(f"run={run}: no checkpoints/generator.pt (a views run directory)")
        rows += score(run, sets, bevseg, run.name, modes, bool(other))
    if real_selection:
        for arm, (worst, where) in worst_shares(rows).items():
            print(f"{arm}: worst share of a target's bar {worst:.3f} ({where})")
    out = WORK.parent / ("views_decoder_heldout.json" if heldout else "views_decoder.json")
    out.write_text(json.dumps(rows, indent=1))
    record(rows, "heldout" if heldout else "selection")


def real_selection_sets(sets: dict) -> dict:
    """``REAL_SELECTION_SCENE``'s frames of the real selection set (every one) and the unseen procedural frames."""
    from bevgen.pretrained import REAL_SELECTION_SCENE

    if "real_maps_train_scenes" not in sets:
        raise SystemExit("--real-selection needs the real scenarios of ../shared (none found)")
    data = sets["real_maps_train_scenes"][0]
    names = [f for f in json.loads((data / "index.json").read_text())["frames"] if REAL_SELECTION_SCENE in f]
    return {real_selection_name(): (data, names), "procedural_unseen": sets["procedural_unseen"]}


def real_selection_name(scene: str | None = None) -> str:
    """The rows' name of the real selection set: ``real_maps_`` and the scene part of ``REAL_SELECTION_SCENE``
    (``scene``), e.g. ``real_maps_scene_0553``."""
    from bevgen.pretrained import REAL_SELECTION_SCENE

    scene = scene or REAL_SELECTION_SCENE
    return "real_maps_" + scene.rsplit("_", 1)[-1].replace("-", "_")


def worst_shares(rows: list[dict]) -> dict[str, tuple[float, str]]:
    """Per arm, the lowest share of a target's bar (``BARS``) over its generated rows, and where it is."""
    out: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["mode"] != "generated":
            continue
        for k, bar in BARS.items():
            v = r["share_of_oracle"][k] / bar
            if r["arm"] not in out or v < out[r["arm"]][0]:
                out[r["arm"]] = (round(v, 4), f"{r['set']} {k} {r['share_of_oracle'][k]:.3f}")
    return out


def record(rows: list[dict], kind: str) -> Path:
    """Merge rows into ``benchmarks/results/views_decoder.json`` (keyed by arm, mode, set and evaluator; the arms of
    earlier runs kept), with the machine of this run."""
    from run import machine

    path = ROOT / "benchmarks" / "results" / "views_decoder.json"
    data = json.loads(path.read_text()) if path.exists() else {"benchmark": "views_decoder"}

    def key(r: dict) -> tuple:  # rows scored by another evaluator are other rows (older rows name none)
        return r["arm"], r["mode"], r["set"], r.get("evaluator")

    merged = {key(r): r for r in data.get(kind, [])}
    merged |= {key(r): {**r, "date": time.strftime("%Y-%m-%d")} for r in rows}
    data[kind] = sorted(merged.values(), key=lambda r: (r["arm"] != "shipped", r["arm"], r["mode"], r["set"]))
    data["machine"] = machine()
    data["note"] = ("shares of the oracle under the benchmarks' bevseg network (compare rows of one evaluator id "
                    "only; rows without one were scored before ids were recorded, by the network of their day); "
                    "selection rows choose, held-out rows "
                    "are for the record; arms: [shipped+]<steps>_<adversarial weight>[_layout][_frozen][_gen<share>] "
                    "(module docstring; shipped+: tuned on from the shipped layout decoder of the row's date; _real: "
                    "the real training scenes' frames too, the real selection set kept out; share_ci90: 90% interval "
                    "over another draw of frames, bevgen.views.bootstrap, null on rows scored before it)")
    path.write_text(json.dumps(data, indent=1))
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
