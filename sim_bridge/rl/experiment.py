"""The TrafficGen experiment: same RL budget on different training sets, tested on held-out real scenes.

Arms (each trained with identical settings and step budget, ``seeds`` runs per arm, then evaluated on
the same held-out real scenarios, next to the random and IDM references):
    procedural            MetaDrive procedural maps with IDM traffic (no data needed)
    real                  the real scenarios that are not held out
    augmented             a traffic-generated or density-augmented dataset directory (``augmented=DIR``)
    augmented+procedural  both of the above, indexed together (``merge_datasets``)

Every arm replays scenario files (procedural ones are exported first, as ``bevgen scenarios
procedural`` does), so all arms share one observation layout and the test set is unseen by all of them.
Training runs on the backend ``train.backend`` names (MetaDrive workers or the batched simulator);
evaluation is always MetaDrive's ScenarioEnv, the reference.

Each arm reports, per held-out metric (success, route completion, crash, out of road), the mean over its
seeds and a 95% Student-t interval of that mean (each seed's value is its mean over the held-out scenes).

Outputs in ``out``: one training run per arm and seed, ``results.json`` (learning curves, per-seed and
summarised held-out metrics) and ``experiment.png`` (learning curves and the held-out metrics with their
intervals). The budget is an argument, so the paper-scale version is the same command with a larger
``budget_steps`` on a GPU box.
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
from sim_bridge.dataset import ScenarioDataset, merge_datasets
from sim_bridge.scenario import load_scenario_dict
from sim_bridge.sources.convert import write_items

__all__ = ["ExperimentConfig", "run_experiment", "split_real", "plot_experiment", "plot_learning_curve", "interval",
           "ARM_METRICS"]

ARM_METRICS = ("success_rate", "route_completion", "crash_rate", "out_of_road_rate")


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of the experiment."""

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
    procedural_data: str = ""
    """An existing procedural scenario directory for the procedural arms (``bevgen scenarios procedural``);
    empty = generate ``procedural_scenarios`` of them into the experiment directory."""
    num_envs: int = 2
    """MetaDrive worker processes (training with the MetaDrive backend, procedural export, evaluation)."""
    seed: int = 0
    """First seed; run k of every arm uses seed + k."""
    seeds: int = 3
    """Training runs per arm (the interval needs at least 2)."""
    train: PPOTrainConfig = field(default_factory=PPOTrainConfig)
    """RL and env settings shared by all arms (env.data, total_steps, num_envs and seed are set per run)."""

    def __post_init__(self):
        if self.seeds < 1 or self.budget_steps < 1:
            raise ValueError("seeds and budget_steps must be >= 1")


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


def interval(values: list[float], level: float = 0.95) -> dict:
    """Mean of ``values`` and the Student-t ``level`` interval of that mean (low = high = mean for one value)."""
    from scipy import stats

    x = np.asarray(values, float)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4), "n": len(x)}


def run_experiment(cfg: ExperimentConfig, out: str | Path, eval_cfg: EvalConfig = EvalConfig()) -> dict:
    """Train every arm ``cfg.seeds`` times for ``cfg.budget_steps`` and evaluate on the held-out real scenes.

    Finished runs (``train_summary.json`` at the budget) are not retrained and unfinished ones resume, so
    an interrupted experiment continues where it stopped.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train_dir, test_dir, test_names = split_real(cfg.real_data, out, cfg.held_out)
    if cfg.procedural_data:
        proc_dir = Path(cfg.procedural_data)
        ScenarioDataset(proc_dir)  # fails early, naming the problem, if it is not a dataset directory
    else:
        proc_dir = out / "procedural_data"
        report = generate_procedural(ProceduralConfig(num_scenarios=cfg.procedural_scenarios,
                                                      start_seed=cfg.seed * 10_000, workers=cfg.num_envs), proc_dir)
        if report.failed:
            raise RuntimeError(f"procedural generation failed for {report.failed}")
    arms = {"procedural": str(proc_dir), "real": str(train_dir)}
    if cfg.augmented:
        arms["augmented"] = str(cfg.augmented)
        arms["augmented+procedural"] = str(merge_datasets([cfg.augmented, proc_dir], out / "augmented+procedural_data"))
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    results: dict = {"budget_steps": cfg.budget_steps, "seeds": seeds, "backend": cfg.train.backend,
                     "held_out": test_names, "arms": {},
                     "skipped": {} if cfg.augmented else
                     {"augmented": "no augmented dataset given (augmented=DIR)",
                      "augmented+procedural": "no augmented dataset given (augmented=DIR)"}}
    test_env = replace(cfg.train.env, data=str(test_dir), num_scenarios=0)
    eval_cfg = replace(eval_cfg, reference=False, simulator="metadrive")
    for arm, data in arms.items():
        runs = []
        for seed in seeds:
            run_cfg = replace(cfg.train, env=replace(cfg.train.env, data=data, num_scenarios=0),
                              total_steps=cfg.budget_steps, num_envs=cfg.num_envs, seed=seed)
            run_dir = out / f"run_{arm}" / f"seed{seed}"
            done = run_dir / "train_summary.json"
            if done.exists() and json.loads(done.read_text())["final_step"] >= cfg.budget_steps:
                episodes = read_episodes(run_dir)
            else:
                resume = (run_dir / "checkpoints" / "latest.pt").exists()
                episodes = train(run_cfg, run_dir, resume=resume, progress_bar=False).episodes
            metrics = evaluate(str(run_dir), str(test_dir), replace(eval_cfg, seed=seed), test_env)
            runs.append({"seed": seed, "curve": [[int(e["step"]), float(e["reward"])] for e in episodes],
                         "train_episodes": len(episodes),
                         "held_out": {k: metrics[k] for k in metrics if k not in ("config",)}})
        results["arms"][arm] = {"train_data": data, "runs": runs,
                                "summary": {m: interval([r["held_out"][m] for r in runs]) for m in ARM_METRICS}}
    results["reference"] = {ref: summarize_episodes(evaluate(ref, str(test_dir), eval_cfg, test_env)["per_scenario"])
                            for ref in ("random", "idm")}
    results["config"] = to_dict(cfg)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_experiment(results, out / "experiment.png")
    return results


def plot_experiment(results: dict, path: str | Path) -> Path:
    """Learning curves (episode reward vs steps, mean over seeds) and held-out success / route completion /
    crash rate per arm with their 95% intervals, beside the random and IDM references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    colors = {"procedural": "#4c72b0", "real": "#dd8452", "augmented": "#55a868", "augmented+procedural": "#8172b3"}
    budget = results["budget_steps"]
    window = budget / 5
    grid = np.linspace(window, budget, 40)
    for arm, r in results["arms"].items():
        per_seed = []
        for run in r["runs"]:
            curve = np.asarray(run["curve"], float).reshape(-1, 2)
            # mean reward of the episodes that ended in the last `window` steps: comparable across arms whose
            # episodes have very different lengths
            means = [curve[(curve[:, 0] > g - window) & (curve[:, 0] <= g), 1] for g in grid]
            per_seed.append([m.mean() if len(m) else np.nan for m in means])
        if per_seed:
            curves = np.array(per_seed)
            seen = np.isfinite(curves).any(0)  # windows where some seed finished an episode
            mean = np.where(seen, np.nansum(curves, 0) / np.maximum(np.isfinite(curves).sum(0), 1), np.nan)
            ax1.plot(grid, mean, label=f"{arm} ({len(per_seed)} seeds)", color=colors.get(arm), marker=".")
    ax1.set_xlabel("environment steps")
    ax1.set_ylabel(f"episode reward (mean over last {int(window):,} steps)")
    ax1.set_title(f"learning curves ({results.get('backend', 'metadrive')}), budget {budget:,} steps")
    ax1.legend(fontsize=8)
    names = list(results["arms"]) + list(results["reference"])
    metrics = (("success_rate", "success"), ("route_completion", "route completion"), ("crash_rate", "crash"))
    x = np.arange(len(names))
    width = 0.27
    for k, (key, label) in enumerate(metrics):
        means, lo, hi = [], [], []
        for n in names:
            if n in results["arms"]:
                s = results["arms"][n]["summary"][key]
                means.append(s["mean"]), lo.append(s["mean"] - s["low"]), hi.append(s["high"] - s["mean"])
            else:
                means.append(results["reference"][n][key]), lo.append(0.0), hi.append(0.0)
        ax2.bar(x + (k - 1) * width, means, width, yerr=[lo, hi], capsize=3, label=label)
    ax2.set_xticks(x, names, rotation=15, fontsize=8)
    ax2.set_ylim(0, 1.05)
    ax2.set_title(f"held-out real scenarios ({len(results['held_out'])}), MetaDrive; bars: 95% interval over seeds")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_learning_curve(episodes: list[dict], path: str | Path, title: str, bins: int = 40) -> Path:
    """A run's training episodes (``read_episodes``) in ``bins`` step windows: mean episode reward (left axis)
    and route completion, success and crash rates (right axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([e["step"] for e in episodes], float)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if len(steps):
        edges = np.linspace(0, steps.max(), bins + 1)
        idx = np.clip(np.digitize(steps, edges[1:-1]), 0, bins - 1)
        mid = 0.5 * (edges[1:] + edges[:-1])

        def mean(key: str, clip: bool = False) -> np.ndarray:
            v = np.array([e[key] for e in episodes], float)
            v = np.clip(v, 0, 1) if clip else v
            return np.array([v[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)])

        ax.plot(mid, mean("reward"), color="black", marker=".", label="episode reward")
        ax.set_ylabel("episode reward")
        ax2 = ax.twinx()
        for key, color, clip in (("route_completion", "#4c72b0", True), ("success", "#55a868", False),
                                 ("crash", "#c44e52", False)):
            ax2.plot(mid, mean(key, clip), color=color, label=key.replace("_", " "))
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("rate (training episodes)")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax2.legend(lines, [h.get_label() for h in lines], fontsize=8, loc="lower right")
    ax.set_xlabel("environment steps")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
