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
from bevgen.cli_common import save_run_config as _save_run_config
from bevgen.scenarios_cli import _report_conversion
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
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny (CPU, minutes) or paper (TrafficGen widths)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
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


def _traffic_generate(mode: str, data: Path, ckpt: Path, out: Path, num: int, density: float, batch: int, seed: int,
                      extend: bool = False):
    from traffic.generate import GenerateConfig, augment, generate

    if not data.is_dir():
        _fail(f"not a dataset directory: {data}")
    try:
        cfg = GenerateConfig(num_vehicles=num, density=density, batch_size=batch, seed=seed, extend=extend)
        _save_run_config(out, f"traffic {mode}", {"data": str(data), "ckpt": str(ckpt), **cfg.__dict__})
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
    num_vehicles: int = typer.Option(32, "--num-vehicles", "-n", help="Vehicles to place per scenario."),
    batch: int = typer.Option(8, "--batch", help="Scenes generated together."),
    seed: int = typer.Option(0, "--seed"),
):
    """New scenarios: the maps of DATA with N learned vehicles and their trajectories."""
    _traffic_generate("generate", data, ckpt, out, num_vehicles, 2.0, batch, seed)


@app.command("augment")
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


@app.command("eval")
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

    table = Table(title=f"{generated} vs {reference}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("mmd_position", "mmd_heading", "mmd_size", "mmd_speed", "collision_rate", "offroad_rate",
              "kinematic_violation_rate", "num_scenarios", "num_agents"):
        v = m[k]
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))

    Console().print(table)
