"""The `bevgen` command: help everywhere, exit codes, one line per problem, outputs on disk."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bevgen.cli import app
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import save_scenario

runner = CliRunner()


# each command's help names its subcommands / options together with their explanations
HELP = {
    "": [("scenarios", "Make, convert, check and look at scenario datasets"),
         ("sim", "Train and evaluate driving agents (PPO) in MetaDrive"),
         ("traffic", "Learned traffic (TrafficGen-style)"), ("views", "Camera views from BEV layouts"),
         ("scene3d", "Compositional 3D-aware scene generator"), ("demo", "Run the main job")],
    "scenarios": [("procedural", "Generate scenarios on MetaDrive procedural maps"),
                  ("validate", "Check scenario files against the contract; one line per bad file"),
                  ("info", "Table of scenarios"), ("bev", "Rasterize ego-centric BEV frames"),
                  ("convert", "Convert real driving logs"), ("export", "Export scenarios to Waymo TFRecords")],
    "scenarios procedural": [("--out", "Output dataset directory."), ("--num", "Number of scenarios"),
                             ("--seed", "First seed"), ("--workers", "Worker processes, one MetaDrive engine each."),
                             ("--steps", "Steps per scenario at 10 Hz."),
                             ("--set", "Override a config field: --set key=value"),
                             ("--resume", "Keep scenarios already in --out and only add missing seeds.")],
    "scenarios convert": [("waymo", "Convert Waymo Open Motion TFRecords"), ("nuscenes", "Convert nuScenes scenes"),
                          ("scenarionet", "Re-write a scenario folder through the contract")],
    "scenarios convert waymo": [("inputs...", "Waymo Open Motion TFRecord files"),
                                ("--out", "Output dataset directory."),
                                ("--resume", "Keep scenarios already in --out.")],
    "scenarios convert nuscenes": [("--dataroot", "nuScenes root (holds the version folder and maps/expansion)."),
                                   ("--version", "nuScenes version folder"), ("--scene", "Only these scene names"),
                                   ("--map-radius", "Map features within this many metres of the ego path.")],
    "scenarios convert scenarionet": [("SCENARIOS", "An existing dataset directory"),
                                      ("--out", "Output dataset directory.")],
    "scenarios validate": [("SCENARIOS", "Dataset directories or scenario files."),
                           ("--repair", "Accept what a conversion would repair (lanes with < 2 points).")],
    "scenarios info": [("SCENARIOS", "Dataset directory or scenario file."),
                       ("--json", "Print JSON instead of a table.")],
    "scenarios bev": [("--out", "Folder for PNG previews."), ("--frame", "Frame index (repeatable)"),
                      ("--limit", "At most this many scenarios (0 = all)."),
                      ("--npz", "Also save raster/boxes as .npz."),
                      ("--config", "YAML config file; unknown keys are errors.")],
    "demo": [("--out", "Run directory."), ("--fast", "Smallest settings"), ("--workers", "Worker processes.")],
}


def _help_text(cmd: list[str]) -> str:
    """The help of ``cmd`` as one line: table borders dropped, wrapped cells joined again."""
    res = runner.invoke(app, cmd + ["--help"], env={"COLUMNS": "200"}, prog_name="bevgen")
    assert res.exit_code == 0, res.output
    return " ".join(res.output.replace("│", " ").split())


@pytest.mark.parametrize("cmd", sorted(HELP))
def test_help(cmd):
    import re

    text = _help_text(cmd.split())
    assert text.startswith(f"Usage: {' '.join(['bevgen', *cmd.split()])} "), text[:200]
    for name, explanation in HELP[cmd]:
        # the explanation in the same table row as its option or subcommand (after short flag, type, ...)
        row = re.escape(name) + r"(?: \S+){0,5} " + re.escape(explanation)  # short flag, type, range
        assert re.search(row, text), (cmd, name, explanation, text)


def test_help_is_fast_and_light():
    code = ("import sys, bevgen.cli; heavy = [m for m in ('metadrive', 'torch', 'nuscenes', 'cv2', "
            "'waymo_open_dataset') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_validate_reports_each_bad_file_and_exits_nonzero(tmp_path, road_dict):
    save_scenario(road_dict, tmp_path / "sd_good.pkl")
    (tmp_path / "sd_cut.pkl").write_bytes(pickle.dumps(road_dict)[:500])
    road_dict["tracks"]["lead"]["state"]["heading"] = road_dict["tracks"]["lead"]["state"]["heading"][:5]
    (tmp_path / "sd_short.pkl").write_bytes(pickle.dumps(road_dict))
    res = runner.invoke(app, ["scenarios", "validate", str(tmp_path)])
    assert res.exit_code == 1
    bad = [line for line in res.output.splitlines() if line.startswith("BAD ")]
    assert len(bad) == 2
    assert any("sd_cut.pkl: file is truncated" in line for line in bad)
    assert any("sd_short.pkl: tracks['lead'].state.heading: shape (5,)" in line for line in bad)
    assert "1 good, 2 bad" in res.output


def test_validate_real_set_flags_degenerate_lane_unless_repair(real_dir):
    res = runner.invoke(app, ["scenarios", "validate", str(real_dir)])
    assert res.exit_code == 1 and "6 good, 1 bad" in res.output and "a lane needs at least 2 points" in res.output
    res = runner.invoke(app, ["scenarios", "validate", "--repair", str(real_dir)])
    assert res.exit_code == 0 and "7 good, 0 bad" in res.output


def test_info_and_bev_on_real_set(real_dir, tmp_path):
    res = runner.invoke(app, ["scenarios", "info", "--json", str(real_dir)])
    assert res.exit_code == 0
    rows = json.loads(res.output)["scenarios"]
    assert len(rows) == 7 and {r["dataset"] for r in rows} == {"nuscenes", "waymo"}
    waymo = next(r for r in rows if r["id"] == "2a1e44d405a6833f")
    assert waymo["agents"] == {"VEHICLE": 184, "PEDESTRIAN": 25, "CYCLIST": 2} and waymo["traffic_lights"] == 8
    res = runner.invoke(app, ["scenarios", "bev", str(real_dir), "--out", str(tmp_path / "bev"), "-t", "10",
                              "--limit", "2", "--npz", "--set", "range_m=40"])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "bev").glob("*.png"))
    assert len(pngs) == 2 and len(list((tmp_path / "bev").glob("*.npz"))) == 2
    import numpy as np

    assert np.load(sorted((tmp_path / "bev").glob("*.npz"))[0])["raster"].shape == (8, 160, 160)
    assert "range_m: 40.0" in (tmp_path / "bev" / "bevgen_run.yaml").read_text()


def test_bad_config_key_is_a_clear_error(tmp_path, real_dir):
    res = runner.invoke(app, ["scenarios", "bev", str(real_dir), "--out", str(tmp_path), "--set", "rnage_m=3"])
    assert res.exit_code == 2 and "unknown key 'rnage_m'" in res.output and "range_m" in res.output


def test_convert_scenarionet_keeps_good_files(real_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(real_dir, src)
    victim = ScenarioDataset(src).names[0]
    (src / victim).write_bytes(b"\x80\x04garbage")
    res = runner.invoke(app, ["scenarios", "convert", "scenarionet", str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert f"bad item {victim}" in res.output.replace("\n", " ") or victim in res.output
    assert len(ScenarioDataset(tmp_path / "out")) == 6


def test_convert_missing_inputs(tmp_path):
    res = runner.invoke(app, ["scenarios", "convert", "waymo", str(tmp_path / "nope.tfrecord"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["scenarios", "info", str(tmp_path)])
    assert res.exit_code == 2 and "empty dataset directory" in res.output


@pytest.mark.metadrive
def test_procedural_command(tmp_path):
    out = tmp_path / "proc"
    res = runner.invoke(app, ["scenarios", "procedural", "--out", str(out), "-n", "1", "--steps", "20", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert ScenarioDataset(out).names == ["sd_procedural_seed000000.pkl"]
    assert "num_scenarios: 1" in (out / "bevgen_run.yaml").read_text()
    res = runner.invoke(app, ["scenarios", "procedural", "--out", str(out), "-n", "1", "--set", "workrs=1"])
    assert res.exit_code == 2 and "did you mean 'workers'" in res.output
    # resuming with other contents per seed would mix two kinds of scenario in one folder: refused, nothing changed
    record = (out / "bevgen_run.yaml").read_text()
    res = runner.invoke(app, ["scenarios", "procedural", "--out", str(out), "-n", "2", "--steps", "30", "-j", "1"])
    assert res.exit_code == 2 and "steps=20" in " ".join(res.output.split()), res.output
    assert (out / "bevgen_run.yaml").read_text() == record and len(ScenarioDataset(out).names) == 1
