"""The ``bevgen`` command. Sub-commands import their heavy dependencies only when they run.

    bevgen scenarios procedural|convert|validate|info|bev   scenario datasets (sim_bridge)
    bevgen traffic train|generate|augment|eval              learned traffic (traffic)
    bevgen sim train|eval|rollout|experiment                PPO agents in MetaDrive (sim_bridge.rl)
    bevgen views dataset|train|sample|eval                  six camera views from a BEV layout
    bevgen scene3d train|render|eval                        compositional 3D-aware scene generator
    bevgen demo                                             the main job, end to end, with a report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from bevgen.cli_common import SCENARIOS, ConfigOpt, SetOpt
from bevgen.cli_common import console as _console
from bevgen.cli_common import fail as _fail
from bevgen.cli_common import save_run_config as _save_run_config



class _Bevgen(TyperGroup):
    """The top-level group: an unsafe, oversized or corrupt file reaching any command (however deep) is
    one clear line and exit code 2, never a traceback."""

    def invoke(self, ctx):
        from sim_bridge.safe_pickle import LOAD_ERRORS

        try:
            return super().invoke(ctx)
        except LOAD_ERRORS as e:
            _console().print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None


app = typer.Typer(help="bevgen: BEV layouts, camera views, traffic generation and RL on one scenario contract.",
                  cls=_Bevgen, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
scenarios = typer.Typer(help="Make, convert, check and look at scenario datasets (ScenarioNet format, "
                             "loadable by MetaDrive's ScenarioEnv).", no_args_is_help=True)
convert = typer.Typer(help="Convert real driving logs (or another scenario folder) into a dataset directory.",
                      no_args_is_help=True)
sim = typer.Typer(help="Train and evaluate driving agents (PPO) in MetaDrive on any scenario set.",
                  no_args_is_help=True)
app.add_typer(scenarios, name="scenarios")
scenarios.add_typer(convert, name="convert")
traffic_app = typer.Typer(help="Learned traffic (TrafficGen-style): place vehicles on HD maps, generate their "
                                "trajectories, densify real scenarios, evaluate against baselines.",
                          no_args_is_help=True)
app.add_typer(sim, name="sim")
app.add_typer(traffic_app, name="traffic")
# camera views and scene3d define their commands next to their code; their modules import nothing heavy
from bevgen.views.cli import app as views_app  # noqa: E402
from bevgen.scene3d.cli import app as scene3d_app  # noqa: E402

app.add_typer(views_app, name="views")
app.add_typer(scene3d_app, name="scene3d")
from bevgen.export_cli import register as _register_export  # noqa: E402

_register_export(scenarios)  # bevgen scenarios export





def _progress():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=_console(), transient=False)


def _report_conversion(report, out: Path) -> None:
    con = _console()
    con.print(f"wrote {len(report.written)}, kept {len(report.reused)}, failed {len(report.failed)} -> {out}")
    for item, note in report.repaired:
        con.print(f"[yellow]repaired[/] {item}: {note}", highlight=False)
    for item, err in report.failed:
        con.print(f"[red]bad item[/] {item}: {err}", highlight=False)



# ---- scenarios ----------------------------------------------------------------------------------
@scenarios.command("procedural")
def procedural_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    num: Optional[int] = typer.Option(None, "--num", "-n", help="Number of scenarios (config: num_scenarios)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="First seed (config: start_seed)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes, one MetaDrive engine each."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps per scenario at 10 Hz."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(True, help="Keep scenarios already in --out and only add missing seeds."),
):
    """Generate scenarios on MetaDrive procedural maps with IDM traffic (offline, deterministic per seed)."""
    from sim_bridge.config import ConfigError, load_config, to_dict
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    overrides = list(set_ or [])
    for key, val in (("num_scenarios", num), ("start_seed", seed), ("workers", workers), ("steps", steps)):
        if val is not None:
            overrides.append(f"{key}={val}")
    try:
        cfg = load_config(ProceduralConfig, config, overrides)
    except ConfigError as e:
        _fail(str(e))
    _save_run_config(out, "scenarios procedural", to_dict(cfg))
    with _progress() as prog:
        task = prog.add_task("procedural scenarios", total=cfg.num_scenarios)
        report = generate_procedural(cfg, out, resume=resume,
                                     progress=lambda done, total: prog.update(task, completed=done))
    _report_conversion(report, out)
    raise typer.Exit(1 if report.failed else 0)


def _write_items_with_progress(items, out: Path, filename, total: Optional[int], label: str, resume: bool):
    from sim_bridge.sources.convert import write_items

    with _progress() as prog:
        task = prog.add_task(label, total=total)
        report = write_items(items, out, filename, resume=resume, on_item=lambda n, ok: prog.advance(task))
    _report_conversion(report, out)
    raise typer.Exit(1 if report.failed else 0)


@convert.command("waymo")
def convert_waymo(
    inputs: List[Path] = typer.Argument(..., help="Waymo Open Motion TFRecord files (Scenario protos)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    resume: bool = typer.Option(True, help="Keep scenarios already in --out."),
):
    """Convert Waymo Open Motion TFRecords (no TensorFlow needed; record CRCs are checked)."""
    from sim_bridge.sources import waymo

    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        _fail(f"input file(s) not found: {', '.join(missing)}")
    _save_run_config(out, "scenarios convert waymo", {"inputs": [str(p) for p in inputs]})
    _write_items_with_progress(waymo.iter_waymo_scenarios(inputs), out, lambda n, d: waymo.scenario_filename(d), None,
                               "waymo records", resume)


@convert.command("nuscenes")
def convert_nuscenes(
    dataroot: Path = typer.Option(..., "--dataroot",
                                  help="nuScenes root (holds the version folder and maps/expansion)."),
    version: str = typer.Option("v1.0-mini", "--version", help="nuScenes version folder, e.g. v1.0-trainval."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    scene: Optional[List[str]] = typer.Option(None, "--scene", help="Only these scene names (repeatable)."),
    map_radius: float = typer.Option(500.0, help="Map features within this many metres of the ego path."),
    resume: bool = typer.Option(True, help="Keep scenarios already in --out."),
):
    """Convert nuScenes scenes (devkit + map expansion); 2 Hz keyframes are interpolated to 10 Hz."""
    from sim_bridge.sources import nuscenes

    try:
        items = nuscenes.iter_nuscenes_scenarios(dataroot, version, scenes=scene or None, map_radius_m=map_radius)
    except (FileNotFoundError, ValueError, OSError) as e:
        _fail(str(e))
    _save_run_config(out, "scenarios convert nuscenes",
                     {"dataroot": str(dataroot), "version": version, "scenes": scene, "map_radius_m": map_radius})
    _write_items_with_progress(items, out, lambda n, d: nuscenes.scenario_filename(d), len(scene) if scene else None,
                               "nuscenes scenes", resume)


@convert.command("scenarionet")
def convert_scenarionet(
    src: Path = typer.Argument(..., metavar=SCENARIOS,
                               help="An existing dataset directory (ScenarioNet / MetaDrive format)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    resume: bool = typer.Option(True, help="Keep scenarios already in --out."),
):
    """Re-write a scenario folder through the contract: safe loading, validation, repairs, fresh index."""
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.scenario import ScenarioError
    from sim_bridge.sources.convert import iter_scenarionet_dir

    try:
        total = len(ScenarioDataset(src))
    except (ScenarioError, OSError) as e:
        _fail(str(e))
    _write_items_with_progress(iter_scenarionet_dir(src), out, lambda name, d: name, total, "scenarios", resume)


def _targets(path: Path) -> list[tuple[str, Path]]:
    from sim_bridge.dataset import ScenarioDataset

    if path.is_file():
        return [(path.name, path)]
    ds = ScenarioDataset(path)
    return [(n, ds.path_of(n)) for n in ds.names]


@scenarios.command("validate")
def validate_cmd(
    paths: List[Path] = typer.Argument(..., metavar=SCENARIOS, help="Dataset directories or scenario files."),
    repair: bool = typer.Option(False, help="Accept what a conversion would repair (lanes with < 2 points)."),
):
    """Check scenario files against the contract; one line per problem; exit 1 if any file is bad."""
    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.scenario import ScenarioError, load_scenario

    bad = good = 0
    for root in paths:
        try:
            targets = _targets(root)
        except (ScenarioError, UnsafePickleError, CorruptFileError, OSError) as e:
            typer.echo(f"BAD {e}")
            bad += 1
            continue
        for _, p in targets:
            try:
                load_scenario(p, repair=repair)
                good += 1
            except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
                typer.echo(f"BAD {e}")
                bad += 1
    typer.echo(f"{good} good, {bad} bad")
    raise typer.Exit(1 if bad else 0)


@scenarios.command("info")
def info_cmd(
    path: Path = typer.Argument(..., metavar=SCENARIOS, help="Dataset directory or scenario file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Table of scenarios: length, agents by type, map features by type."""
    from rich.console import Console
    from rich.table import Table

    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.scenario import ScenarioError, load_scenario

    try:
        targets = _targets(path)
    except (ScenarioError, UnsafePickleError, CorruptFileError, OSError) as e:
        _fail(str(e))
    rows, bad = [], []
    for name, p in targets:
        try:
            sc = load_scenario(p, repair=True)
        except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
            bad.append(str(e))
            continue
        rows.append({"file": name, "id": sc.id, "dataset": sc.dataset, "length": sc.length,
                     "seconds": round(sc.length / 10, 1), "agents": dict(sc.agent_counts()),
                     "map_features": dict(sc.map_counts()), "map_categories": dict(sc.map_category_counts()),
                     "traffic_lights": len(sc.traffic_lights)})
    if as_json:
        typer.echo(json.dumps({"scenarios": rows, "bad": bad}, indent=2))
    else:
        table = Table(title=f"{path} ({len(rows)} scenarios)")
        for col in ("scenario", "dataset", "steps", "agents by type", "map features", "lights"):
            table.add_column(col, overflow="fold")
        fmt = lambda d: ", ".join(f"{k.lower()} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))
        for r in rows:
            table.add_row(r["id"], r["dataset"], str(r["length"]), fmt(r["agents"]), fmt(r["map_categories"]),
                          str(r["traffic_lights"]))
        Console(width=max(120, Console().width)).print(table)
        typer.echo("map features by exact type: --json")
        for b in bad:
            _console().print(f"[red]bad[/] {b}", highlight=False)
    raise typer.Exit(1 if bad else 0)


@scenarios.command("bev")
def bev_cmd(
    path: Path = typer.Argument(..., metavar=SCENARIOS, help="Dataset directory or scenario file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for PNG previews."),
    frames: Optional[List[int]] = typer.Option(None, "--frame", "-t",
                                               help="Frame index (repeatable); default: 3 spread frames."),
    limit: int = typer.Option(0, help="At most this many scenarios (0 = all)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    save_npz: bool = typer.Option(False, "--npz", help="Also save raster/boxes as .npz."),
):
    """Rasterize ego-centric BEV frames and write PNG previews with a legend."""
    import numpy as np

    from bevgen.layout import BevConfig, BevRasterizer
    from bevgen.preview import save_preview
    from sim_bridge.config import ConfigError, load_config, to_dict
    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.scenario import ScenarioError, load_scenario

    try:
        cfg = load_config(BevConfig, config, set_ or [])
        targets = _targets(path)
    except (ConfigError, ScenarioError, UnsafePickleError, CorruptFileError, OSError) as e:
        _fail(str(e))
    targets = targets[:limit] if limit else targets
    _save_run_config(out, "scenarios bev", to_dict(cfg))
    failed = 0
    with _progress() as prog:
        task = prog.add_task("bev previews", total=len(targets))
        for name, p in targets:
            try:
                sc = load_scenario(p, repair=True)
            except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
                _console().print(f"[red]bad[/] {e}", highlight=False)
                failed += 1
                prog.advance(task)
                continue
            r = BevRasterizer(sc, cfg)
            ts = frames or sorted({0, sc.length // 2, sc.length - 1})
            for t in ts:
                if not 0 <= t < sc.length:
                    _console().print(f"[yellow]skip[/] {sc.id}: frame {t} outside 0..{sc.length - 1}")
                    continue
                layout = r(t)
                stem = f"{Path(name).stem}_t{t:04d}"
                save_preview(layout, out / f"{stem}.png", title=f"{sc.id}  t={t / 10:.1f}s")
                if save_npz:
                    np.savez_compressed(out / f"{stem}.npz", raster=layout.raster, boxes=layout.boxes,
                                        classes=layout.classes, valid=layout.valid, channels=np.array(layout.channels))
            prog.advance(task)
    _console().print(f"previews in {out}")
    raise typer.Exit(1 if failed else 0)


# ---- sim ----------------------------------------------------------------------------------------
@sim.command("train")
def sim_train(
    train_data: str = typer.Option(..., "--train", metavar=SCENARIOS,
                                   help="Dataset directory to train on, or 'procedural'."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, TensorBoard logs, checkpoints)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Environment steps (config: total_steps)."),
    envs: Optional[int] = typer.Option(None, "--envs", help="Worker processes, one MetaDrive engine each."),
    scenarios_n: Optional[int] = typer.Option(None, "--scenarios", help="Number of scenarios (0 = whole directory)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
):
    """Train PPO (stable-baselines3) in MetaDrive; TensorBoard in OUT/tb, checkpoints in OUT/checkpoints."""
    from sim_bridge.config import ConfigError, load_config
    from sim_bridge.rl.train import TrainConfig, train

    overrides = [f"env.data={train_data}"] + list(set_ or [])
    for key, val in (("total_steps", steps), ("num_envs", envs), ("env.num_scenarios", scenarios_n), ("seed", seed)):
        if val is not None:
            overrides.append(f"{key}={val}")
    if resume and config is None and (out / "config.yaml").exists():
        config = out / "config.yaml"  # continue with the run's own settings; explicit options still apply
    try:
        cfg = load_config(TrainConfig, config, overrides)
        result = train(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        _fail(str(e))
    eps = result.episodes[-20:]
    mean = sum(e["reward"] for e in eps) / max(len(eps), 1)
    _console().print(f"trained steps {result.start_step} -> {result.final_step} "
                     f"({result.steps_per_second:.0f} steps/s); "
                     f"mean reward of the last {len(eps)} episodes {mean:.2f}; run in {out}")


@sim.command("eval")
def sim_eval(
    policy: str = typer.Option(..., "--policy", help="A training run directory, 'random' or 'idm'."),
    data: str = typer.Option(..., "--data", metavar=SCENARIOS,
                             help="Dataset directory to evaluate on (or 'procedural')."),
    out: Path = typer.Option(..., "--out", "-o", help="Where metrics.json and metrics.md go."),
    episodes: int = typer.Option(0, "--episodes", help="Episodes in total (0 = one per scenario)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel shards, one MetaDrive engine each."),
    backend: str = typer.Option("process", help="'process' (local pool) or 'ray' (local or RAY_ADDRESS cluster)."),
    reference: bool = typer.Option(True, help="Also evaluate the random and IDM policies (reference rows)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Evaluate a policy: success rate, route completion, crash and out-of-road rates, reward; per scenario."""
    from sim_bridge.config import ConfigError, from_dict, load_config
    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.rl.evaluate import EvalConfig, evaluate, write_metrics

    try:
        env_cfg = load_config(EnvConfig, config, [f"data={data}"] + list(set_ or []))
        cfg = from_dict(EvalConfig, {"episodes": episodes, "workers": workers, "backend": backend,
                                     "reference": reference}, "options")
        result = evaluate(policy, data, cfg, env_cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    path = write_metrics(result, out)
    typer.echo((out / "metrics.md").read_text())
    _console().print(f"metrics in {path}")


@sim.command("experiment")
def sim_experiment(
    real: Path = typer.Option(..., "--real", metavar=SCENARIOS,
                              help="Real scenario directory; part of it is held out for testing."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment directory (runs, results.json, experiment.png)."),
    budget: int = typer.Option(20_000, "--budget", help="PPO environment steps per arm."),
    held_out: int = typer.Option(3, "--held-out", help="Real scenarios held out for testing."),
    augmented: Optional[Path] = typer.Option(None, "--augmented", metavar=SCENARIOS,
                                             help="Traffic-augmented dataset (third arm)."),
    envs: int = typer.Option(2, "--envs", help="Worker processes per training run."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Same PPO budget on procedural / real / augmented scenarios, tested on held-out real scenes; plot + JSON."""
    from sim_bridge.config import ConfigError, load_config
    from sim_bridge.rl.evaluate import EvalConfig
    from sim_bridge.rl.experiment import ExperimentConfig, run_experiment

    overrides = [f"real_data={real}", f"budget_steps={budget}", f"held_out={held_out}", f"num_envs={envs}"]
    overrides += ([f"augmented={augmented}"] if augmented else []) + list(set_ or [])
    try:
        cfg = load_config(ExperimentConfig, config, overrides)
        res = run_experiment(cfg, out, EvalConfig(workers=envs))
    except (ConfigError, ValueError) as e:
        _fail(str(e))
    for arm, r in res["arms"].items():
        m = r["held_out"]
        typer.echo(f"{arm:>11}: success {m['success_rate']:.2f}  route completion {m['route_completion']:.2f}  "
                   f"crash {m['crash_rate']:.2f}  reward {m['episode_reward']:.1f}")
    for ref, m in res["reference"].items():
        typer.echo(f"{ref:>11}: success {m['success_rate']:.2f}  route completion {m['route_completion']:.2f}  "
                   f"crash {m['crash_rate']:.2f}  reward {m['episode_reward']:.1f}")
    _console().print(f"results in {out / 'results.json'}, plot {out / 'experiment.png'}")


@sim.command("rollout")
def sim_rollout(
    policy: str = typer.Option(..., "--policy", help="A training run directory, 'random' or 'idm'."),
    data: str = typer.Option(..., "--data", metavar=SCENARIOS, help="Dataset directory (or 'procedural')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the animation."),
    scenario: int = typer.Option(0, "--scenario", help="Scenario index in the directory (or seed offset)."),
    steps: int = typer.Option(300, "--steps", help="At most this many steps."),
    fmt: str = typer.Option("gif", "--format", help="gif or mp4."),
):
    """Drive one episode and write an animated top-down view: the agent, the traffic and its route."""
    from bevgen.rollout import record_rollout, save_animation
    from sim_bridge.envs.factory import EnvConfig, make_env
    from sim_bridge.rl.evaluate import make_policy

    try:
        env_cfg = EnvConfig(data=data, start_index=scenario, num_scenarios=1)
        env_cfg.check_scenarios()
    except ValueError as e:
        _fail(str(e))
    if fmt not in ("gif", "mp4"):
        _fail(f"--format must be gif or mp4, got {fmt!r}")
    env = make_env(env_cfg, ego="idm" if policy == "idm" else "agent")
    try:
        try:
            act = make_policy(policy, env, seed=0)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        result = record_rollout(env, act, max_steps=steps, seed=scenario)
    finally:
        env.close()
    out.mkdir(parents=True, exist_ok=True)
    path = save_animation(result.frames, out / f"rollout.{fmt}", fps=10)
    last = result.infos[-1] if result.infos else {}
    summary = {"steps": result.steps, "total_reward": round(float(result.total_reward), 3),
               "route_completion": float(last.get("route_completion", 0.0)), "crash": bool(last.get("crash")),
               "out_of_road": bool(last.get("out_of_road")), "arrive_dest": bool(last.get("arrive_dest"))}
    (out / "rollout.json").write_text(json.dumps(summary, indent=2))
    _console().print(f"{len(result.frames)} frames -> {path}; {summary}")


# ---- traffic ------------------------------------------------------------------------------------
@traffic_app.command("train")
def traffic_train(
    data: List[Path] = typer.Option(..., "--data", metavar=SCENARIOS,
                                    help="Dataset directories to learn from (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, TensorBoard, checkpoints)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny (CPU, minutes) or paper (TrafficGen widths)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
):
    """Train the placement and trajectory models (CPU/GPU; multi-GPU with `torchrun -m traffic.train`)."""
    from sim_bridge.config import ConfigError, load_config
    from traffic.train import TrafficTrainConfig, train

    missing = [str(d) for d in data if not d.is_dir()]
    if missing:
        _fail(f"not a dataset directory: {', '.join(missing)}")
    if resume and config is None and (out / "config.yaml").exists():
        config = out / "config.yaml"
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


def _traffic_generate(mode: str, data: Path, ckpt: Path, out: Path, num: int, density: float, batch: int, seed: int,
                      extend: bool = False):
    from traffic.generate import GenerateConfig, augment, generate

    if not data.is_dir():
        _fail(f"not a dataset directory: {data}")
    try:
        cfg = GenerateConfig(num_vehicles=num, density=density, batch_size=batch, seed=seed, extend=extend)
        _save_run_config(out, f"traffic {mode}", {"data": str(data), "ckpt": str(ckpt), **cfg.__dict__})
        with _progress() as prog:
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


@traffic_app.command("generate")
def traffic_generate(
    data: Path = typer.Option(..., "--data", metavar=SCENARIOS, help="Scenarios whose maps (and ego routes) to reuse."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Traffic training run directory or checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    num_vehicles: int = typer.Option(32, "--num-vehicles", "-n", help="Vehicles to place per scenario."),
    batch: int = typer.Option(8, "--batch", help="Scenes generated together."),
    seed: int = typer.Option(0, "--seed"),
):
    """New scenarios: the maps of DATA with N learned vehicles and their trajectories."""
    _traffic_generate("generate", data, ckpt, out, num_vehicles, 2.0, batch, seed)


@traffic_app.command("augment")
def traffic_augment(
    data: Path = typer.Option(..., "--data", metavar=SCENARIOS, help="Real scenarios to densify."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Traffic training run directory or checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    density: float = typer.Option(2.0, "--density", help="Target vehicle count as a multiple of the logged count."),
    batch: int = typer.Option(8, "--batch", help="Scenes processed together."),
    seed: int = typer.Option(0, "--seed"),
    extend: bool = typer.Option(False, "--extend", help="Also continue logged vehicles whose tracks end early "
                                                        "(their logged steps stay bit-identical)."),
):
    """Insert vehicles into logged scenarios; every logged step of every logged agent is kept bit-identical."""
    _traffic_generate("augment", data, ckpt, out, 0, density, batch, seed, extend)


@traffic_app.command("eval")
def traffic_eval(
    generated: Path = typer.Option(..., "--generated", metavar=SCENARIOS,
                                   help="Generated (or augmented) dataset directory."),
    reference: Path = typer.Option(..., "--reference", metavar=SCENARIOS, help="Real reference scenarios."),
    out: Path = typer.Option(..., "--out", "-o", help="Where metrics.json goes."),
):
    """MMD (position, heading, size, speed), collision, off-road and kinematic-violation rates."""
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.scenario import ScenarioError
    from traffic.metrics import evaluate_traffic

    try:
        m = evaluate_traffic(ScenarioDataset(generated, repair=True), ScenarioDataset(reference, repair=True))
    except (ScenarioError, OSError) as e:
        _fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2, default=float))
    from rich.table import Table

    table = Table(title=f"{generated} vs {reference}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed", "collision_rate", "offroad_rate",
              "kinematic_violation_rate", "num_scenarios", "num_agents"):
        v = m[k]
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    from rich.console import Console

    Console().print(table)


# ---- demo ---------------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    fast: bool = typer.Option(False, "--fast", help="Smallest settings: a smoke run in well under 3 minutes."),
    workers: int = typer.Option(2, "--workers", "-j", help="Worker processes."),
):
    """Run the main job on the embedded default data (procedural scenarios) and write report.html."""
    from bevgen.demo import run_demo

    report = run_demo(out, fast=fast, workers=workers, console=_console())
    _console().print(f"[bold green]done[/]: open {report}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
