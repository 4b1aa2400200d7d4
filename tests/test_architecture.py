"""Imports flow one way (bevgen -> traffic -> sim_bridge) and importing a package has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"sim_bridge": {"traffic", "bevgen"}, "traffic": {"bevgen"}}


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
            "sim_bridge.sources.nuscenes, sim_bridge.envs.metadrive, bevgen.layout, bevgen.cameras, traffic; "
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
    import re

    pattern = re.compile(_FRAME_MATHS[what])
    geometry = ROOT / "sim_bridge" / "geometry.py"
    allowed = {geometry, ROOT / "bevgen" / "cameras.py"}  # cameras.box_corners validates, then calls geometry
    files = [p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py") if p not in allowed]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"{what} written by hand outside sim_bridge/geometry.py: {offenders}"


def test_package_modules_stay_under_500_lines():
    files = [p for pkg in ("bevgen", "traffic", "sim_bridge") for p in (ROOT / pkg).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these modules by concept: {long}"
