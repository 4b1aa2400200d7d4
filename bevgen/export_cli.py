"""``bevgen scenarios export``: write scenarios in formats other simulators read (sim_bridge.export).

    bevgen scenarios export DIR_OR_FILES... --format waymo --format openscenario --out OUT [--check]

Output: ``OUT/waymo/<stem>.tfrecord`` (+ ``<stem>.ids.json`` when ids were renumbered),
``OUT/openscenario/<stem>.xosc`` + ``<stem>.xodr``, ``OUT/commonroad/<stem>.xml``, and
``OUT/export_report.json`` listing every exported file, what each format dropped, the ASAM checker
counts (``--check``) and every bad input with its reason. Bad inputs (unsafe, corrupt or invalid
files) are skipped; the exit code is 1 if any input failed. Scenarios are read only through the
safe loader (:mod:`sim_bridge.scenario`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

import typer

from bevgen.cli_common import console, fail, progress

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

__all__ = ["export_cmd", "register"]


def _targets(inputs: List[Path], failed: list[dict]) -> list[tuple[str, Path]]:
    """(display name, file) for every scenario file named or indexed; unreadable inputs go to ``failed``."""
    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.scenario import ScenarioError

    out = []
    for root in inputs:
        if root.is_file():
            out.append((str(root), root))
            continue
        try:
            ds = ScenarioDataset(root)
        except (ScenarioError, UnsafePickleError, CorruptFileError, OSError) as e:
            failed.append({"file": str(root), "error": str(e)})
            continue
        out += [(str(ds.path_of(n)), ds.path_of(n)) for n in ds.names]
    return out


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.name.removesuffix(".pkl"), 2
    base = stem
    while stem in used:
        stem, k = f"{base}_{k}", k + 1
    used.add(stem)
    return stem


def _check(result) -> dict:
    from sim_bridge.export.asam_qc import check_file

    return {p.name: check_file(p).to_json() for p in result.files if p.suffix in (".xosc", ".xodr")}


def export_cmd(
    inputs: List[Path] = typer.Argument(..., metavar="SCENARIOS", help="Dataset directories or scenario files."),
    formats: List[str] = typer.Option(..., "--format", "-f", help="waymo, openscenario or commonroad (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one sub-folder per format + export_report.json."),
    check: bool = typer.Option(False, "--check", help="Run the ASAM OpenDRIVE/OpenSCENARIO checkers on the output."),
):
    """Export scenarios to Waymo TFRecords, OpenSCENARIO 1.0 + OpenDRIVE and/or CommonRoad XML; bad files are
    reported and skipped."""
    from sim_bridge.export import EXPORTERS, get_exporter
    from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
    from sim_bridge.scenario import ScenarioError, load_scenario

    unknown = sorted(set(formats) - set(EXPORTERS))
    if unknown:
        fail(f"unknown --format {', '.join(unknown)}; choose from {', '.join(sorted(EXPORTERS))}")
    if check and "openscenario" in formats:
        from sim_bridge.export.asam_qc import checkers_available

        if (why := checkers_available()) is not None:
            fail(why)
    if "commonroad" in formats:
        try:
            import commonroad  # noqa: F401
        except ImportError:
            fail("--format commonroad needs commonroad-io: pip install 'bevgen[export]'")
    formats = list(dict.fromkeys(formats))
    failed: list[dict] = []
    exported: list[dict] = []
    targets = _targets(inputs, failed)
    used: set[str] = set()
    con, t0 = console(), time.perf_counter()
    with progress() as prog:
        task = prog.add_task("export", total=len(targets))
        for name, path in targets:
            try:
                sc = load_scenario(path, repair=True)
                stem = _unique_stem(path, used)
                entry = {"file": name, "scenario": sc.id, "repairs": sc.metadata.get("bevgen_repairs", []),
                         "outputs": {}}
                for fmt in formats:
                    result = get_exporter(fmt)(sc, out / fmt, stem)
                    entry["outputs"][fmt] = result.to_json()
                    if check and fmt == "openscenario":
                        entry["outputs"][fmt]["checks"] = _check(result)
                exported.append(entry)
            except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
                failed.append({"file": name, "error": str(e)})
                con.print(f"[red]bad file[/] {e}", highlight=False)  # the error names the file
            except Exception as e:  # noqa: BLE001 -- an exporter bug on one scenario must not cost the others
                failed.append({"file": name, "error": f"{type(e).__name__}: {e}"})
                con.print(f"[red]export failed[/] {name}: {type(e).__name__}: {e}", highlight=False)
            prog.advance(task)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    report = {"formats": formats, "exported": exported, "failed": failed, "seconds": round(seconds, 3)}
    (out / "export_report.json").write_text(json.dumps(report, indent=2))
    for f in failed:
        if not any(f["file"] == name for name, _ in targets):  # directories that did not open
            con.print(f"[red]bad input[/] {f['file']}: {f['error']}", highlight=False)
    con.print(f"exported {len(exported)} scenario(s) as {', '.join(formats)}, failed {len(failed)} -> {out}")
    raise typer.Exit(1 if failed else 0)


def register(scenarios_app: typer.Typer) -> None:
    """Add ``export`` to the ``bevgen scenarios`` sub-app."""
    scenarios_app.command("export")(export_cmd)
