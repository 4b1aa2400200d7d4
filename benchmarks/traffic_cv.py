"""Choosing a traffic-model setting without the held-out scenes: leave-one-scene-out realism, then seeds held out.

    python benchmarks/traffic_cv.py cv long --set steps=3000             # 4 folds, training seed 0
    python benchmarks/traffic_cv.py heldout long --set steps=3000 --seeds 0 1 2 3
    python benchmarks/traffic_cv.py table                                # every arm measured so far

Every arm is the benchmark's traffic recipe (``run.traffic_recipe``: tiny preset, 12 start frames, cosine
decay, random scene frames) changed by ``--set key=value`` overrides of ``TrafficTrainConfig``; the arm's name
labels its results and must always mean the same overrides (a clash is refused).

* ``cv``: a training scene scores the model that trained on it, so each fold trains on 3 of the 4 real training
  scenes and scores the realism meta-metric (``traffic.sim_agents.evaluate_realism``, 32 rollouts of 8 s) on the
  fourth, at start frames 10, 40, 70 and 100 (those with 8 s of log after them). Settings are chosen here.
* ``heldout``: the full training split at each seed, scored once on the 3 held-out scenes (start frame 10, as
  ``make bench`` does) and, in sample, on the training scenes. For the record after choosing, not for choosing.

Each job trains with 1 thread; ``--jobs`` run at once (2 on a 2-core machine: a (fold, seed) of the 1500-step
recipe takes about 8 minutes there). Runs live in ``benchmarks/work/traffic_cv/<arm>/``; a finished run is not
retrained, an interrupted one resumes from its checkpoint, and a job that fails is reported and the others go
on. Results are appended to ``benchmarks/work/traffic_cv/results.jsonl`` with the arm's full config.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "traffic_cv"
CV_STARTS = (10, 40, 70, 100)
ROLLOUT_STEPS = 80


def _splits(work: Path) -> tuple[Path, Path]:
    from run import REAL_DIR
    from sim_bridge.rl.experiment import split_real

    if not REAL_DIR.exists():
        raise SystemExit(f"no real scenes at {REAL_DIR}: the cross-validation needs them")
    train_dir, test_dir, _ = split_real(REAL_DIR, work, held_out=3)
    return train_dir, test_dir


def _fold_data(train_dir: Path, fold: int, work: Path) -> tuple[Path, str]:
    """The training split without its ``fold``-th scene (sorted by name), and that scene's name."""
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.rl.experiment import write_items
    from sim_bridge.scenario import load_scenario_dict

    src = ScenarioDataset(train_dir)
    names = sorted(src.names)
    out = work / "folds" / f"fold{fold}"
    items = ((n, load_scenario_dict(src.path_of(n))) for n in names if n != names[fold])
    report = write_items(items, out, lambda n, d: n, resume=True, repair=True)
    if report.failed:
        raise RuntimeError(f"could not write fold {fold}: {report.failed}")
    return out, names[fold]


def _config(data: Path, overrides: list[str], seed: int):
    from run import traffic_recipe

    from runkit.config import apply_overrides, from_dict, to_dict
    from traffic.train import TrafficTrainConfig

    d = apply_overrides(to_dict(traffic_recipe(data)), [*overrides, f"seed={seed}"])
    d["checkpoint_every"] = d["steps"]
    return from_dict(TrafficTrainConfig, d)


def _trained(cfg, run: Path) -> Path:
    from traffic.train import train

    if not (run / "train_summary.json").exists():
        train(cfg, run, resume=(run / "checkpoints" / "latest.pt").exists(), progress=False)
    return run


def _realism(run: Path, scenes, current: int) -> float:
    import traffic.sim_agents as S

    return S.evaluate_realism(scenes, run, methods=("model",), seed=0, current=current)["model"]["meta_metric"]


def _job(kind: str, arm: str, overrides: list[str], seed: int, fold: int | None, data: Path, train_dir: Path,
         test_dir: Path, val: str | None, work: Path) -> dict:
    """One training run on ``data`` and its scores (in a worker process with 1 thread): ``cv`` scores the
    training split's scene ``val`` (left out of ``data``), ``heldout`` the test and training splits."""
    import torch

    from runkit.config import to_dict
    from sim_bridge.dataset import ScenarioDataset

    torch.set_num_threads(1)
    row: dict = {"kind": kind, "arm": arm, "overrides": overrides, "seed": seed}
    cfg = _config(data, overrides, seed)
    if kind == "cv":
        run = _trained(cfg, work / arm / f"fold{fold}_s{seed}")
        sc = ScenarioDataset(train_dir).load(val)
        windows = {c: _realism(run, [sc], c) for c in CV_STARTS if c + ROLLOUT_STEPS < sc.length}
        row.update(fold=fold, scene=val, windows=windows, score=sum(windows.values()) / len(windows))
    else:
        run = _trained(cfg, work / arm / f"full_s{seed}")
        for split, d in (("heldout", test_dir), ("train", train_dir)):
            ds = ScenarioDataset(d)
            row[split] = _realism(run, [ds.load(n) for n in sorted(ds.names)], 10)
        row["score"] = row["heldout"]
    row["config"] = to_dict(cfg)
    return row


def _done(work: Path = WORK) -> list[dict]:
    """Every result row so far (``work / "results.jsonl"``)."""
    path = work / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_jobs(kind: str, arm: str, overrides: list[str], seeds: list[int], jobs: int = 2,
             work: Path = WORK) -> list[dict]:
    """Train and score every (seed, fold) of ``arm`` not measured yet, ``jobs`` at a time; returns the new rows."""
    from tqdm.auto import tqdm

    from sim_bridge.dataset import ScenarioDataset

    rows = _done(work)
    for r in rows:
        if r["arm"] == arm and r["overrides"] != overrides:
            raise SystemExit(f"arm '{arm}' was measured with {r['overrides']}, not {overrides}: choose another name")
    _config(work, overrides, 0)  # a bad override fails here, naming the key, before anything trains
    train_dir, test_dir = _splits(work)  # written here, once, before the workers read them
    if kind == "cv":  # (fold, its training data, the scene it leaves out)
        parts = [(f, *_fold_data(train_dir, f, work)) for f in range(len(ScenarioDataset(train_dir).names))]
    else:
        parts = [(None, train_dir, None)]
    have = {(r["kind"], r["seed"], r.get("fold")) for r in rows if r["arm"] == arm}
    todo = [(kind, arm, overrides, s, f, data, train_dir, test_dir, val, work) for s in seeds for f, data, val in parts
            if (kind, s, f) not in have]
    new = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_job, *t): t for t in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"{kind} {arm}", unit="run"):
            try:
                row = fut.result()
            except Exception:  # one failed run is reported; the others go on
                print(f"job (seed, fold) {futures[fut][3:5]} failed:\n{traceback.format_exc()}", file=sys.stderr)
                continue
            with (work / "results.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            new.append(row)
    return new


def table(rows: list[dict]) -> str:
    """Per arm and kind: the mean score over folds and seeds, and each fold's or seed's score."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["arm"], r["kind"]), []).append(r)
    lines = ["| arm | overrides | kind | runs | mean | each |", "|---|---|---|---|---|---|"]
    for (arm, kind), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: (r["seed"], r.get("fold") or 0))
        each = " / ".join(f"{r['score']:.4f}" for r in rs)
        mean = sum(r["score"] for r in rs) / len(rs)
        sets = " ".join(rs[0]["overrides"]) or "(recipe)"
        lines.append(f"| {arm} | {sets} | {kind} | {len(rs)} | {mean:.4f} | {each} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from runkit.config import ConfigError

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for kind in ("cv", "heldout"):
        s = sub.add_parser(kind, help="leave-one-scene-out folds" if kind == "cv" else "full split, held-out scenes")
        s.add_argument("arm", help="a name for this setting (results are grouped by it)")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="TrafficTrainConfig override of the benchmark's recipe, e.g. steps=3000 (repeatable)")
        s.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
        s.add_argument("--jobs", type=int, default=2, help="runs at once, 1 thread each (default 2)")
    sub.add_parser("table", help="print every arm measured so far")
    a = p.parse_args(argv)
    if a.cmd != "table":
        try:
            run_jobs(a.cmd, a.arm, a.overrides, a.seeds, a.jobs)
        except ConfigError as e:  # a bad --set names its key
            raise SystemExit(f"--set: {e}") from None
    print(table(_done()))


if __name__ == "__main__":
    main()
