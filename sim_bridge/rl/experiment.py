"""The TrafficGen experiment: same PPO budget on different training sets, tested on held-out real scenes.

Arms (each trained with identical PPO settings and step budget, then evaluated on the same held-out
real scenarios, next to the random and IDM references):
    procedural  MetaDrive procedural maps with IDM traffic (no data needed)
    real        the real scenarios that are not held out
    augmented   a traffic-generated or density-augmented dataset directory (``augmented=DIR``)

Every arm replays scenario files in MetaDrive's ScenarioEnv (procedural ones are exported first, as
``bevgen scenarios procedural`` does), so all arms share one observation layout and the test set is
unseen by all of them.

Outputs in ``out``: one training run per arm, ``results.json`` (learning curves + held-out metrics)
and ``experiment.png`` (learning curves and held-out success / route completion). The budget is an
argument, so the paper-scale version is the same command with a larger ``budget_steps`` on a GPU box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from runkit.config import save_config, to_dict
from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural
from sim_bridge.rl.evaluate import EvalConfig, evaluate, summarize_episodes
from sim_bridge.rl.train import PPOTrainConfig, read_episodes, train
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import load_scenario_dict
from sim_bridge.sources.convert import write_items

__all__ = ["ExperimentConfig", "run_experiment", "split_real", "plot_experiment"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of the three-way experiment."""

    real_data: str = ""
    """Real scenario directory; part of it is held out for testing."""
    held_out: int = 3
    """How many real scenarios to hold out (taken from the end of the directory, round-robin over datasets)."""
    augmented: str = ""
    """Optional traffic-augmented dataset directory (the third arm); empty = arm skipped."""
    budget_steps: int = 20_000
    """Environment steps per arm."""
    procedural_scenarios: int = 20
    """Procedural scenarios (maps with IDM traffic, 200 steps each) for the procedural arm."""
    num_envs: int = 2
    seed: int = 0
    train: PPOTrainConfig = field(default_factory=PPOTrainConfig)
    """PPO and env settings shared by all arms (env.data, total_steps, num_envs and seed are set per arm)."""


def split_real(real_dir: str | Path, out: Path, held_out: int) -> tuple[Path, Path, list[str]]:
    """Write ``train`` and ``test`` dataset directories; the test set mixes datasets (round-robin)."""
    ds = ScenarioDataset(real_dir)
    by_dataset: dict[str, list[str]] = {}
    for name in ds.names:
        by_dataset.setdefault(str(ds.summary.get(name, {}).get("dataset", "unknown")), []).append(name)
    test: list[str] = []
    while len(test) < held_out and any(by_dataset.values()):
        for names in by_dataset.values():
            if names and len(test) < held_out:
                test.append(names.pop())
    train_names = [n for n in ds.names if n not in test]
    if not train_names:
        raise ValueError(f"{real_dir}: holding out {held_out} leaves no scenario to train on")
    dirs = {}
    for split, names in (("train", train_names), ("test", test)):
        items = ((n, load_scenario_dict(ds.path_of(n))) for n in names)
        report = write_items(items, out / f"real_{split}", lambda n, d: n, resume=True, repair=True)
        if report.failed:
            raise ValueError(f"{real_dir}: could not copy {report.failed}")
        dirs[split] = out / f"real_{split}"
    return dirs["train"], dirs["test"], test


def run_experiment(cfg: ExperimentConfig, out: str | Path, eval_cfg: EvalConfig = EvalConfig()) -> dict:
    """Train every arm for ``cfg.budget_steps`` and evaluate on the held-out real scenes; returns results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train_dir, test_dir, test_names = split_real(cfg.real_data, out, cfg.held_out)
    proc_dir = out / "procedural_data"
    report = generate_procedural(ProceduralConfig(num_scenarios=cfg.procedural_scenarios, start_seed=cfg.seed * 10_000,
                                                  workers=cfg.num_envs), proc_dir)
    if report.failed:
        raise RuntimeError(f"procedural generation failed for {report.failed}")
    arms = {"procedural": replace(cfg.train.env, data=str(proc_dir), num_scenarios=0),
            "real": replace(cfg.train.env, data=str(train_dir), num_scenarios=0)}
    if cfg.augmented:
        arms["augmented"] = replace(cfg.train.env, data=str(cfg.augmented), num_scenarios=0)
    results: dict = {"budget_steps": cfg.budget_steps, "held_out": test_names, "arms": {},
                     "skipped": {} if cfg.augmented else {"augmented": "no augmented dataset given (augmented=DIR)"}}
    test_env = replace(cfg.train.env, data=str(test_dir), num_scenarios=0)
    for arm, env_cfg in arms.items():
        run_cfg = replace(cfg.train, env=env_cfg, total_steps=cfg.budget_steps, num_envs=cfg.num_envs, seed=cfg.seed)
        run_dir = out / f"run_{arm}"
        done = run_dir / "train_summary.json"
        if done.exists() and json.loads(done.read_text())["final_step"] >= cfg.budget_steps:
            episodes = read_episodes(run_dir)
        else:
            resume = (run_dir / "checkpoints" / "latest.pt").exists()
            episodes = train(run_cfg, run_dir, resume=resume, progress_bar=False).episodes
        metrics = evaluate(str(run_dir), str(test_dir), replace(eval_cfg, reference=False), test_env)
        results["arms"][arm] = {
            "train_data": env_cfg.data, "curve": [[int(e["step"]), float(e["reward"])] for e in episodes],
            "train_episodes": len(episodes), "held_out": {k: metrics[k] for k in metrics if k not in ("config",)}}
    results["reference"] = {ref: summarize_episodes(evaluate(ref, str(test_dir), replace(eval_cfg, reference=False),
                                                             test_env)["per_scenario"]) for ref in ("random", "idm")}
    results["config"] = to_dict(cfg)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_experiment(results, out / "experiment.png")
    return results


def plot_experiment(results: dict, path: str | Path) -> Path:
    """Learning curves (episode reward vs steps, smoothed) and held-out success / route completion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"procedural": "#4c72b0", "real": "#dd8452", "augmented": "#55a868"}
    budget = results["budget_steps"]
    window = budget / 5
    grid = np.linspace(window, budget, 40)
    for arm, r in results["arms"].items():
        curve = np.asarray(r["curve"], float).reshape(-1, 2)
        if len(curve):
            # mean reward of the episodes that ended in the last `window` steps: comparable across arms whose
            # episodes have very different lengths
            means = [curve[(curve[:, 0] > g - window) & (curve[:, 0] <= g), 1] for g in grid]
            y = np.array([m.mean() if len(m) else np.nan for m in means])
            ax1.plot(grid, y, label=arm, color=colors.get(arm), marker=".")
    ax1.set_xlabel("environment steps")
    ax1.set_ylabel(f"episode reward (mean over last {int(window):,} steps)")
    ax1.set_title(f"PPO learning curves, budget {results['budget_steps']:,} steps")
    ax1.legend()
    names = list(results["arms"]) + list(results["reference"])
    rows = [results["arms"][n]["held_out"] for n in results["arms"]] + list(results["reference"].values())
    x = np.arange(len(names))
    ax2.bar(x - 0.2, [m["success_rate"] for m in rows], 0.4, label="success rate")
    ax2.bar(x + 0.2, [m["route_completion"] for m in rows], 0.4, label="route completion")
    ax2.set_xticks(x, names, rotation=20)
    ax2.set_ylim(0, 1)
    ax2.set_title(f"held-out real scenarios ({len(results['held_out'])})")
    ax2.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
