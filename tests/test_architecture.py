"""Imports flow one way (bevgen -> traffic -> sim_bridge) and importing a package has no side effects."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"sim_bridge": {"traffic", "bevgen"}, "traffic": {"bevgen"}, "runkit": {"sim_bridge", "traffic", "bevgen"}}


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
                 for p in (ROOT / package).rglob("*.py") if _imports(p) & FORBIDDEN[package]}
    assert not offenders, f"{package} must not import {FORBIDDEN[package]}: {offenders}"


def test_metadrive_imported_only_in_envs_and_procedural():
    """MetaDrive (process-wide singletons, asset downloads) stays behind sim_bridge/envs/."""
    def allowed(p: Path) -> bool:
        return p.parent == ROOT / "sim_bridge" / "envs" or p == ROOT / "sim_bridge" / "sources" / "procedural.py"

    users = {p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py")
             if "metadrive" in _imports(p) and not allowed(p)}
    assert not users, sorted(map(str, users))


def test_importing_packages_is_cheap_and_silent():
    code = ("import sys, sim_bridge.scenario, sim_bridge.sources.procedural, sim_bridge.sources.waymo, "
            "sim_bridge.sources.nuscenes, sim_bridge.envs.metadrive, bevgen.layout, bevgen.cameras, traffic, "
            "runkit.config, runkit.checkpoint, runkit.seeding, runkit.distributed, runkit.rundir; "
            "print(sorted(m for m in ('metadrive', 'torch', 'nuscenes', 'waymo_open_dataset', 'panda3d') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert res.stdout.strip() == "[]" and res.stderr == ""


# Hand-written frame maths that belongs in sim_bridge/geometry.py (one implementation, numpy and torch).
_FRAME_MATHS = {
    "angle wrap": r"%\s*\(?2(\.0)?\s*\*\s*(np\.|math\.|torch\.)?pi\)?\s*-\s*(np\.|math\.|torch\.)?pi"
                  r"|remainder\([^)]*pi|arctan2\(np\.sin\(",
    "2-D rotation into a frame": r"\bc \* \w+\[[^\]]*0\] \+ s \* \w+\[[^\]]*1\]",
    "box corners": r"def \w*(box_corners|footprints)\w*\(",
}


@pytest.mark.parametrize("what", sorted(_FRAME_MATHS))
def test_frame_maths_lives_in_the_geometry_module(what):
    pattern = re.compile(_FRAME_MATHS[what])
    geometry = ROOT / "sim_bridge" / "geometry.py"
    allowed = {geometry, ROOT / "sim_bridge" / "boxes.py"}  # Boxes3D.corners / footprints call geometry
    files = [p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py") if p not in allowed]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"{what} written by hand outside sim_bridge/geometry.py: {offenders}"


# A packed box array documented as a function argument or field: "[N, 7]", "[B, N, 7]", "[b, m, 7]", ...
_PACKED_BOXES = r"\[\s*(\w+\s*,\s*)?[nNmM]\s*,\s*7\s*\]"


def test_boxes_cross_bevgen_as_boxes3d_not_packed_arrays():
    """Packages hand each other ``sim_bridge.boxes.Boxes3D``; the packed [..., 7] form is documented only in
    boxes.py / geometry.py and in the frame-file format (render/dataset.py), which converts at load/save.
    (traffic's [N, 7] agent-state rows are not boxes and sim_bridge/batched/ is a kernel: not scanned.)"""
    pattern = re.compile(_PACKED_BOXES)
    allowed = {ROOT / "sim_bridge" / "boxes.py", ROOT / "sim_bridge" / "geometry.py",
               ROOT / "bevgen" / "render" / "dataset.py"}
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "bevgen").rglob("*.py") if p not in allowed
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"take or return a Boxes3D instead of documenting a packed box array: {offenders}"


def test_package_modules_stay_under_500_lines():
    files = [p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these modules by concept: {long}"


# Run plumbing (seeding, checkpoints, atomic writes) lives once, in runkit/.
_PLUMBING_DEFS = {"seed_everything", "load_checkpoint", "save_checkpoint"}


def _plumbing(path: Path) -> list[str]:
    """Definitions of runkit's plumbing functions and temp-file renames (os.replace/os.rename, tmp.replace)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in _PLUMBING_DEFS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} defines {node.name}")
        elif isinstance(node, ast.Call) and isinstance(f := node.func, ast.Attribute):
            os_call = isinstance(f.value, ast.Name) and f.value.id == "os" and f.attr in ("replace", "rename")
            tmp_rename = (f.attr in ("replace", "rename") and isinstance(f.value, ast.Name) and "tmp" in f.value.id
                          and len(node.args) == 1)
            if os_call or tmp_rename:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} renames a temp file by hand")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & {"replace",
                                                                                                        "rename"}:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports os.replace")
    return found


def test_run_plumbing_lives_in_runkit():
    files = [p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py")]
    offenders = [f for p in files for f in _plumbing(p)]
    assert not offenders, f"use runkit.checkpoint / runkit.seeding / runkit.atomic instead: {offenders}"


# Imports sit at the module top. A function imports one of the project's own modules only in the CLI modules
# (`bevgen --help` must not import torch, MetaDrive or pybullet) and in modules whose docstring or a module-level
# comment says what is imported lazily and why (a heavy optional dependency such as torch, or an import cycle).
_OWN_PACKAGES = ("bevgen", "traffic", "sim_bridge", "runkit")
_LAZY_MARKER = re.compile(r"import(s|ed)? lazily|lazy import")
_LAZY_PENDING: dict[str, str] = {}  # modules not audited yet (each with its reason); none left


def _is_cli_module(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return (rel in ("bevgen/cli.py", "bevgen/cli_common.py", "bevgen/views/cli.py", "bevgen/scene3d/cli.py")
            or (path.parent == ROOT / "bevgen" and path.name.endswith("_cli.py")))


def _local_own_imports(path: Path) -> list[int]:
    """Lines of imports of bevgen/traffic/sim_bridge/runkit (or relative ones) inside functions."""
    lines = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    own = node.level > 0 or (node.module or "").split(".")[0] in _OWN_PACKAGES
                elif isinstance(node, ast.Import):
                    own = any(a.name.split(".")[0] in _OWN_PACKAGES for a in node.names)
                else:
                    continue
                if own:
                    lines.add(node.lineno)
    return sorted(lines)


def _says_what_it_imports_lazily(path: Path) -> bool:
    text = path.read_text()
    said = [ast.get_docstring(ast.parse(text)) or ""] + [line for line in text.splitlines() if line.startswith("#")]
    return any(_LAZY_MARKER.search(s) for s in said)


def test_own_modules_are_imported_at_the_module_top():
    files = [p for pkg in _OWN_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    offenders = [f"{p.relative_to(ROOT).as_posix()}:{n}" for p in files
                 if not (_is_cli_module(p) or p.relative_to(ROOT).as_posix() in _LAZY_PENDING
                         or _says_what_it_imports_lazily(p))
                 for n in _local_own_imports(p)]
    assert not offenders, ("import these at the module top, or say in a module-level comment what is imported "
                           f"lazily and why (a heavy optional dependency or a cycle): {offenders}")


def test_lazy_import_exemptions_are_still_needed():
    stale = [f for f in _LAZY_PENDING if not (ROOT / f).exists() or not _local_own_imports(ROOT / f)
             or _says_what_it_imports_lazily(ROOT / f)]
    assert not stale, f"drop these from _LAZY_PENDING in tests/test_architecture.py: {stale}"
