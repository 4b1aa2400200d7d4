"""``bevgen traffic``: learned traffic (TrafficGen-style) on HD maps (traffic).

    bevgen traffic train | generate | augment | eval
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from bevgen.cli_common import SCENARIOS, ConfigOpt, SetOpt, progress
from bevgen.cli_common import console as _console
from bevgen.cli_common import fail as _fail
from bevgen.cli_common import refuse_other_settings as _refuse_other_settings
from bevgen.cli_common import save_invocation
from bevgen.cli_common import save_run_config as _save_run_config
from bevgen.scenarios_cli import _report_conversion
from runkit.atomic import atomic_write_text
from runkit.rundir import run_config_file

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

app = typer.Typer(help="Learned traffic (TrafficGen-style): place vehicles on HD maps, generate their "
                       "trajectories, densify real scenarios, evaluate against baselines.", no_args_is_help=True)


# ---- traffic ------------------------------------------------------------------------------------
@app.command("train")
def traffic_train(
    data: List[Path] = typer.Option(..., "--data", metavar=SCENARIOS,
                                    help="Dataset directories to learn from (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, TensorBoard, checkpoints)."),
    preset: Optional[str] = typer.Option(None, "--preset",
                                         help="tiny (CPU, minutes; the default) or paper (TrafficGen widths)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: the config's steps)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
):
    """Train the placement and trajectory models (CPU/GPU; multi-GPU with `torchrun -m traffic.train`)."""
    from runkit.config import ConfigError, load_config
    from traffic.train import TrafficTrainConfig, train

    missing = [str(d) for d in data if not d.is_dir()]
    if missing:
        _fail(f"not a dataset directory: {', '.join(missing)}")
    config = run_config_file(out, resume, config)
    overrides = [f"data={json.dumps([str(d) for d in data])}"] + list(set_ or [])
    overrides += [f"preset={preset}"] if preset else []
    overrides += [f"steps={steps}"] if steps else []
    try:
        cfg = load_config(TrafficTrainConfig, config, overrides)
        summary = train(cfg, out, resume=resume)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    h = summary["history"]
    if h:
        first, last = h[: max(1, len(h) // 10)], h[-max(1, len(h) // 10):]
        mean = lambda rows: sum(r["total"] for r in rows) / len(rows)
        _console().print(f"loss {mean(first):.3f} -> {mean(last):.3f} over steps {summary['start_step']}.."
                         f"{summary['final_step']} on {summary['samples']} samples; run in {out}")
    for p in summary["problems"]:
        _console().print(f"[yellow]skipped[/] {p}", highlight=False)
    raise typer.Exit(1 if summary["problems"] else 0)  # trained on the good scenes; exit 1 says some were skipped


GENERATE_CONTENT = ("data", "ckpt", "num_vehicles", "density", "max_tries", "seed", "extend")
"""Settings of generate / augment that change what a scene's output holds (the batch size and device do not)."""


def _traffic_generate(mode: str, data: Path, ckpt: Path, out: Path, num: int, density: float, batch: int, seed: int,
                      extend: bool = False):
    from traffic.generate import GenerateConfig, augment, generate
    from traffic.train import load_models

    if not data.is_dir():
        _fail(f"not a dataset directory: {data}")
    try:
        cfg = GenerateConfig(num_vehicles=num, density=density, batch_size=batch, seed=seed, extend=extend)
        record = {"data": str(data), "ckpt": str(ckpt), **cfg.__dict__}
        # --out resumes: the scenarios already there stay, so they must come from the same command and settings
        _refuse_other_settings(out, f"traffic {mode}", record, GENERATE_CONTENT)
        load_models(ckpt)  # a bad checkpoint fails here, before --out is touched
        _save_run_config(out, f"traffic {mode}", record)
        with progress() as prog:
            task = prog.add_task(f"traffic {mode}", total=None)
            fn = augment if mode == "augment" else generate
            report, stats = fn(data, ckpt, out, cfg, on_scene=lambda d, t: prog.update(task, completed=d, total=t))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _report_conversion(report, out)
    per = stats["seconds"] / max(stats["scenes"], 1)
    _console().print(f"{stats['scenes']} scenes, {stats['placed']}/{stats['requested']} vehicles placed, "
                     f"{per:.2f} s per scene")
    raise typer.Exit(1 if report.failed else 0)


@app.command("generate")
def traffic_generate(
    data: Path = typer.Option(..., "--data", metavar=SCENARIOS, help="Scenarios whose maps (and ego routes) to reuse."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Traffic training run directory or checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    num_vehicles: int = typer.Option(32, "--num-vehicles", "-n", min=-1,
                                     help="Vehicles to place per scenario (-1: as many as were logged near the ego)."),
    batch: int = typer.Option(8, "--batch", min=1, help="Scenes generated together."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (placement and trajectories)."),
):
    """New scenarios: the maps of DATA with N learned vehicles and their trajectories."""
    _traffic_generate("generate", data, ckpt, out, num_vehicles, 2.0, batch, seed)


@app.command("augment")
def traffic_augment(
    data: Path = typer.Option(..., "--data", metavar=SCENARIOS, help="Real scenarios to densify."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Traffic training run directory or checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    density: float = typer.Option(2.0, "--density", min=1.0,
                                  help="Target vehicle count as a multiple of the logged count."),
    batch: int = typer.Option(8, "--batch", min=1, help="Scenes processed together."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (placement and trajectories)."),
    extend: bool = typer.Option(False, "--extend", help="Also continue logged vehicles whose tracks end early "
                                                        "(their logged steps stay bit-identical)."),
):
    """Insert vehicles into logged scenarios; every logged step of every logged agent is kept bit-identical."""
    _traffic_generate("augment", data, ckpt, out, 0, density, batch, seed, extend)


@app.command("eval")
def traffic_eval(
    ctx: typer.Context,
    reference: Path = typer.Option(..., "--reference", metavar=SCENARIOS, help="Real reference scenarios."),
    out: Path = typer.Option(..., "--out", "-o", help="Where metrics.json goes."),
    generated: Optional[Path] = typer.Option(None, "--generated", metavar=SCENARIOS,
                                             help="Generated (or augmented) dataset directory: MMD and rates "
                                                  "against --reference."),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Traffic training run: also score its rollouts with the "
                                                             "realism meta-metric."),
    rollouts: int = typer.Option(32, "--rollouts", min=1, help="Rollouts per scene for the realism meta-metric."),
    realism: bool = typer.Option(True, "--realism/--no-realism",
                                 help="Score sim-agent realism (WOSAC-style) on --reference: constant velocity, "
                                      "random and the logged future (upper bound), and --ckpt's model."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rollouts."),
):
    """Score traffic. With --generated: MMD (position, heading, size, speed), collision, off-road and
    kinematic-violation rates against --reference. Realism: from 1 s of logged history every agent of each
    --reference scene is rolled out for 8 s --rollouts times; the likelihood of the logged future under the
    rollouts' histograms (kinematic, interactive, map-based features) gives the WOSAC-style meta-metric
    (2025 weights) and minADE. metrics.json holds every figure with its definition."""
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.scenario import ScenarioError
    from traffic.baselines import mmd_references
    from traffic.metrics import evaluate_traffic
    from traffic.realism import REALISM_BINS, REALISM_WEIGHTS
    from traffic.sim_agents import ROLLOUT_METHODS, evaluate_realism

    if generated is None and not realism:
        _fail("nothing to score: give --generated, or leave --realism on")
    if ckpt is not None and not (ckpt / "checkpoints" / "latest.pt").exists():
        _fail(f"{ckpt}: no checkpoints/latest.pt (a `bevgen traffic train` run directory is expected)")
    m: dict = {}
    try:
        ref = ScenarioDataset(reference, repair=True)
        if generated is not None:
            m = evaluate_traffic(ScenarioDataset(generated, repair=True), ref)
            m["mmd_references"] = mmd_references(ref)
            m["mmd_references_definitions"] = {
                "logged_resampled": "the reference vehicles of each scene drawn with replacement, as many as logged, "
                                    "against the reference (mean of 200 draws): the MMD a generator of exactly the "
                                    "logged distribution gets from sampling alone (the floor)",
                "logged_on_lanes": "the reference vehicles farther than 3 m from every lane centre line moved onto "
                                   "the nearest one, along it (sizes and speeds exact): the best any placement "
                                   "bound to the lanes can score"}
        if realism:
            scenes = [sc for sc in ref if sc.length >= 91 and sc.tracks.valid[sc.ego_index, 10]]
            if not scenes:
                _fail(f"{reference}: no scene has the 9.1 s (1 s history + 8 s future) the realism metric needs")
            methods = tuple(x for x in ROLLOUT_METHODS if x != "model" or ckpt is not None)
            with _console().status(f"rolling out {len(scenes)} scenes x {rollouts} for {', '.join(methods)}"):
                m["realism"] = evaluate_realism(scenes, ckpt, methods, n=rollouts, seed=seed)
            m["realism_definitions"] = {
                "meta_metric": "sum over features of weight x likelihood (weights renormalised over the features a "
                               "scene defines); mean over scenes",
                "weights": REALISM_WEIGHTS, "histogram_bins": {k: list(v) for k, v in REALISM_BINS.items()},
                "likelihood": "per agent: exp(mean log p(logged value)) under a histogram of the rollouts' values "
                              "(+0.1 per bin), pooled over rollouts and the agent's valid logged steps; booleans "
                              "(collision, offroad, traffic_light_violation): p(logged value) under the rollouts' "
                              "frequency (+0.001); a feature's score is the mean over agents",
                "min_ade": "per agent the smallest mean displacement (m) to the log over the rollouts; mean",
                "history": "1 s (frames 0..10), future 8 s (80 steps), 10 Hz",
                "methods": "model: traffic model + lane following (traffic.sim_agents); constant_velocity; random "
                           "controls; logged: the logged future (upper bound)"}
    except (ScenarioError, OSError) as e:
        _fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(m, indent=2, default=float))
    save_invocation(ctx, out)

    if generated is not None:
        table = Table(title=f"{generated} vs {reference}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k in ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed", "collision_rate", "offroad_rate",
                  "kinematic_violation_rate", "num_scenarios", "num_agents"):
            v = m[k]
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
        for k, r in m["mmd_references"].items():  # what the MMDs can reach on these reference scenes
            table.add_row(f"mean MMD of the reference: {k}", f"{r['mean']:.4f}")
        Console().print(table)
    if "realism" in m:
        table = Table(title=f"sim-agent realism on {reference} ({rollouts} rollouts)")
        for c in ("method", "meta-metric", "kinematic", "interactive", "map-based", "minADE m"):
            table.add_column(c, justify="right" if c != "method" else "left")
        groups = {"kinematic": ("linear_speed", "linear_acceleration", "angular_speed", "angular_acceleration"),
                  "interactive": ("distance_to_nearest_object", "collision", "time_to_collision"),
                  "map-based": ("distance_to_road_edge", "offroad", "traffic_light_violation")}
        for name, r in m["realism"].items():
            part = [sum(REALISM_WEIGHTS[f] * r["likelihoods"][f] for f in g) / sum(REALISM_WEIGHTS[f] for f in g)
                    for g in groups.values()]
            table.add_row(name, f"{r['meta_metric']:.4f}", *(f"{x:.3f}" for x in part), f"{r['min_ade']:.2f}")
        Console().print(table)
