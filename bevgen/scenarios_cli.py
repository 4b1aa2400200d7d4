"""``bevgen scenarios``: make, convert, check and look at scenario datasets (sim_bridge).

    bevgen scenarios procedural | convert waymo|nuscenes|scenarionet | validate | info | bev | export
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
from bevgen.cli_common import save_run_config as _save_run_config
from bevgen.export_cli import register as _register_export

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

app = typer.Typer(help="Make, convert, check and look at scenario datasets (ScenarioNet format, "
                       "loadable by MetaDrive's ScenarioEnv).", no_args_is_help=True)
convert = typer.Typer(help="Convert real driving logs (or another scenario folder) into a dataset directory.",
                      no_args_is_help=True)
app.add_typer(convert, name="convert")
_register_export(app)  # bevgen scenarios export


def _report_conversion(report, out: Path) -> None:
    con = _console()
    con.print(f"wrote {len(report.written)}, kept {len(report.reused)}, failed {len(report.failed)} -> {out}")
    for item, note in report.repaired:
        con.print(f"[yellow]repaired[/] {item}: {note}", highlight=False)
    for item, err in report.failed:
        con.print(f"[red]bad item[/] {item}: {err}", highlight=False)


# ---- scenarios ----------------------------------------------------------------------------------
@app.command("procedural")
def procedural_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory."),
    num: Optional[int] = typer.Option(None, "--num", "-n", min=1, help="Number of scenarios (config: num_scenarios)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="First seed (config: start_seed)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Worker processes, one MetaDrive engine each."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Steps per scenario at 10 Hz."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(True, help="Keep scenarios already in --out and only add missing seeds."),
):
    """Generate scenarios on MetaDrive procedural maps with IDM traffic (offline, deterministic per seed)."""
    from runkit.config import ConfigError, load_config, to_dict
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    overrides = list(set_ or [])
    for key, val in (("num_scenarios", num), ("start_seed", seed), ("workers", workers), ("steps", steps)):
        if val is not None:
            overrides.append(f"{key}={val}")
    try:
        cfg = load_config(ProceduralConfig, config, overrides)
    except ConfigError as e:
        _fail(str(e))
    if resume:  # scenarios already in --out are kept by seed: they must be of the same kind
        _refuse_other_settings(out, "scenarios procedural", to_dict(cfg), PROCEDURAL_CONTENT, hint="--no-resume")
    _save_run_config(out, "scenarios procedural", to_dict(cfg))
    with progress() as prog:
        task = prog.add_task("procedural scenarios", total=cfg.num_scenarios)
        report = generate_procedural(cfg, out, resume=resume,
                                     progress=lambda done, total: prog.update(task, completed=done))
    _report_conversion(report, out)
    raise typer.Exit(1 if report.failed else 0)


PROCEDURAL_CONTENT = ("steps", "map_blocks", "traffic_density")
"""ProceduralConfig fields that change what a seed's scenario holds (the seeds and workers do not)."""


def _write_items_with_progress(items, out: Path, filename, total: Optional[int], label: str, resume: bool):
    from sim_bridge.sources.convert import write_items

    with progress() as prog:
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
    map_radius: float = typer.Option(500.0, min=0.0, help="Map features within this many metres of the ego path."),
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


@app.command("validate")
def validate_cmd(
    paths: List[Path] = typer.Argument(..., metavar=SCENARIOS, help="Dataset directories or scenario files."),
    repair: bool = typer.Option(False, help="Accept what a conversion would repair (lanes with < 2 points)."),
):
    """Check scenario files against the contract; one line per bad file (its first problem); exit 1 if any is bad."""
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


@app.command("info")
def info_cmd(
    path: Path = typer.Argument(..., metavar=SCENARIOS, help="Dataset directory or scenario file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Table of scenarios: length, agents by type, map features by type."""

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


@app.command("bev")
def bev_cmd(
    path: Path = typer.Argument(..., metavar=SCENARIOS, help="Dataset directory or scenario file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for PNG previews."),
    frames: Optional[List[int]] = typer.Option(None, "--frame", "-t",
                                               help="Frame index (repeatable); default: 3 spread frames."),
    limit: int = typer.Option(0, min=0, help="At most this many scenarios (0 = all)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    save_npz: bool = typer.Option(False, "--npz", help="Also save raster/boxes as .npz."),
):
    """Rasterize ego-centric BEV frames and write PNG previews with a legend."""
    import numpy as np

    from bevgen.layout import BevConfig, BevRasterizer
    from bevgen.preview import save_preview
    from runkit.config import ConfigError, load_config, to_dict
    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.scenario import ScenarioError, load_scenario

    try:
        cfg = load_config(BevConfig, config, set_ or [])
        targets = _targets(path)
    except (ConfigError, ScenarioError, UnsafePickleError, CorruptFileError, OSError) as e:
        _fail(str(e))
    targets = targets[:limit] if limit else targets
    _save_run_config(out, "scenarios bev", to_dict(cfg))
    failed = written = 0
    with progress() as prog:
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
                written += 1
                if save_npz:
                    np.savez_compressed(out / f"{stem}.npz", raster=layout.raster, boxes=layout.boxes,
                                        classes=layout.classes, valid=layout.valid, channels=np.array(layout.channels))
            prog.advance(task)
    if not written and not failed:
        _fail(f"no preview written: no requested frame lies inside any scenario (frames {frames})", code=1)
    _console().print(f"{written} previews in {out}")
    raise typer.Exit(1 if failed else 0)
