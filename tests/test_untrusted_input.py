"""Every command that reads scenarios, given a dataset a stranger planted a malicious pickle in.

The commands are found in the CLI definition itself: an option or argument whose metavar is one of
``bevgen.cli_common.SCENARIO_METAVARS`` reads scenario pickles. ``INVOCATIONS`` says how to run each
one cheaply; a command that is declared but missing here fails ``test_every_scenario_command_is_covered``,
so a new command is covered as soon as it exists. For each command and each planted file (a scenario,
``dataset_summary.pkl``, ``dataset_mapping.pkl``) the test asserts: the payload never ran, the bad file
is named in a clear message (no traceback), and commands that work file by file still processed the
good files. The same commands then run on a dataset written by MetaDrive's own summary code
(``defaultdict`` in the metadata and the summary) and must succeed.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bevgen.cli import app
from bevgen.cli_common import SCENARIO_METAVARS

REPO = Path(__file__).resolve().parents[1]
GOOD = ["sd_nuscenes_v1.0-mini_scene-0916.pkl", "sd_training.tfrecord-00000-of-01000_2a1e44d405a6833f.pkl"]
EVIL = "sd_nuscenes_v1.0-mini_scene-0655.pkl"  # the file name a real scene would have

# {DATA}: the dataset directory; {FILE}: a scenario file in it (the planted one in the bad cases);
# {OUT}: a fresh output directory; {TRAFFIC}: a tiny traffic model trained on the good scenes.
INVOCATIONS: dict[str, list[str]] = {
    "scenarios validate": ["{DATA}"],
    "scenarios info": ["{DATA}"],
    "scenarios bev": ["{DATA}", "--out", "{OUT}", "--frame", "0"],
    "scenarios convert scenarionet": ["{DATA}", "--out", "{OUT}"],
    "scenarios export": ["{DATA}", "--format", "waymo", "--out", "{OUT}"],
    "sim train": ["--train", "{DATA}", "--out", "{OUT}", "--steps", "64", "--envs", "1",
                  "--set", "ppo.n_steps=32", "--set", "ppo.batch_size=32", "--set", "env.horizon=20"],
    "sim eval": ["--policy", "idm", "--data", "{DATA}", "--out", "{OUT}", "--no-reference", "--set", "horizon=20"],
    "sim experiment": ["--real", "{DATA}", "--out", "{OUT}", "--budget", "32", "--held-out", "1", "--envs", "1",
                       "--seeds", "1", "--set", "procedural_scenarios=1", "--set", "train.ppo.n_steps=32",
                       "--set", "train.ppo.batch_size=32", "--set", "train.env.horizon=20"],
    "sim rollout": ["--policy", "idm", "--data", "{DATA}", "--out", "{OUT}", "--steps", "5"],
    "traffic train": ["--data", "{DATA}", "--out", "{OUT}", "--preset", "tiny", "--steps", "2"],
    "traffic generate": ["--data", "{DATA}", "--ckpt", "{TRAFFIC}", "--out", "{OUT}", "-n", "2"],
    "traffic augment": ["--data", "{DATA}", "--ckpt", "{TRAFFIC}", "--out", "{OUT}", "--density", "1.2"],
    "traffic eval": ["--generated", "{DATA}", "--reference", "{DATA}", "--out", "{OUT}", "--ckpt", "{TRAFFIC}",
                     "--rollouts", "2"],
    "views dataset": ["--scenarios", "{DATA}", "--out", "{OUT}", "-n", "1", "-j", "1"],
    "views sample": ["--ckpt", str(REPO / "checkpoints" / "views_tiny"), "--scenario", "{FILE}", "--out", "{OUT}",
                     "--no-truth", "--steps", "2"],
    "scene3d render": ["--ckpt", str(REPO / "checkpoints" / "scene3d_tiny"), "--layout", "{FILE}", "--out", "{OUT}"],
}
# Commands that read a single file: only the planted scenario applies to them.
SINGLE_FILE = {"views sample", "scene3d render"}
# Commands that work file by file: with a planted scenario they still process the good ones.
ONE_BY_ONE = {"scenarios validate", "scenarios info", "scenarios bev", "scenarios convert scenarionet",
              "scenarios export", "traffic train", "traffic generate", "traffic augment", "views dataset"}
SLOW = {"sim train", "sim experiment", "sim eval", "sim rollout", "traffic train", "traffic generate",
        "traffic augment", "views dataset", "views sample", "scene3d render"}


def scenario_commands() -> dict[str, list[str]]:
    """'group sub' -> the options/arguments of that command that read scenario pickles."""
    found: dict[str, list[str]] = {}

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
            return
        names = [p.opts[0] if p.opts else p.name for p in cmd.params if p.metavar in SCENARIO_METAVARS]
        if names:
            found[" ".join(path)] = names

    walk(typer.main.get_command(app), [])
    return found


def test_every_scenario_command_is_covered():
    cmds = scenario_commands()
    assert set(cmds) == set(INVOCATIONS), (f"declared but not exercised: {sorted(set(cmds) - set(INVOCATIONS))}; "
                                           f"exercised but no longer declared: {sorted(set(INVOCATIONS) - set(cmds))}")
    for must in ("sim eval", "sim train", "sim rollout", "sim experiment", "traffic train", "traffic generate",
                 "traffic augment", "traffic eval", "views dataset", "scenarios validate", "scenarios info",
                 "scenarios bev", "scenarios convert scenarionet"):
        assert must in cmds


def test_inputs_that_read_scenarios_are_declared():
    """An option whose help says it takes a dataset directory or scenario file must carry the metavar,
    or the matrix below would silently miss it."""
    offenders = []

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
            return
        for p in cmd.params:
            text = (getattr(p, "help", "") or "").lower()
            takes_value = not getattr(p, "is_flag", False) and not isinstance(p.default, (int, float))
            reads = any(w in text for w in ("dataset director", "scenario file", "scenario director", "real scenarios",
                                            "scenarios whose"))
            other = any(w in text for w in ("frame", "output", "nuscenes", "run director"))
            if takes_value and reads and not other and p.metavar not in SCENARIO_METAVARS:
                offenders.append(f"{' '.join(path)} {p.name}: {text[:60]}")

    walk(typer.main.get_command(app), [])
    assert not offenders, offenders


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, real_dir) -> Path:
    """Two real scenes (nuScenes, Waymo) in a dataset directory of their own."""
    from sim_bridge.dataset import ScenarioDataset, write_index

    ds = ScenarioDataset(real_dir)
    out = tmp_path_factory.mktemp("good")
    for name in GOOD:
        shutil.copy(ds.path_of(name), out / name)
    write_index(out, {n: ds.summary[n] for n in GOOD})
    return out


@pytest.fixture(scope="module")
def traffic_ckpt(tmp_path_factory, good_dir) -> Path:
    run = tmp_path_factory.mktemp("traffic_run")
    res = CliRunner().invoke(app, ["traffic", "train", "--data", str(good_dir), "--out", str(run), "--preset", "tiny",
                                   "--steps", "2"])
    assert res.exit_code == 0, res.output
    return run


def _plant(good_dir: Path, where: Path, case: str, marker: Path) -> Path:
    """A copy of the good directory with one malicious file: a scenario, the summary or the mapping."""
    from sim_bridge.safe_pickle import safe_load

    shutil.copytree(good_dir, where)
    evil = pickle.dumps({"id": "x", "payload": _Payload(marker)})
    if case == "scenario":
        (where / EVIL).write_bytes(evil)
        summary = {EVIL: {}, **safe_load(where / "dataset_summary.pkl")}  # first: index 0 is what rollouts drive
        (where / "dataset_summary.pkl").write_bytes(pickle.dumps(summary))
        (where / "dataset_mapping.pkl").write_bytes(pickle.dumps({k: "" for k in summary}))
    else:
        (where / f"dataset_{case}.pkl").write_bytes(evil)
    return where


def _run(cmd: str, data: Path, file: Path, out: Path, traffic: Path | None) -> tuple[int, str]:
    args = [a.format(DATA=data, FILE=file, OUT=out, TRAFFIC=traffic) for a in INVOCATIONS[cmd]]
    res = CliRunner().invoke(app, cmd.split() + args, catch_exceptions=True)
    text = res.output + ("" if res.exception is None or isinstance(res.exception, SystemExit)
                         else f"\nUNCAUGHT {type(res.exception).__name__}: {res.exception}")
    return res.exit_code, text


def _params(cases):
    out = []
    for cmd in INVOCATIONS:
        for case in cases:
            if case != "scenario" and cmd in SINGLE_FILE:
                continue
            out.append(pytest.param(cmd, case, marks=[pytest.mark.slow] if cmd in SLOW else [],
                                    id=f"{cmd.replace(' ', '-')}-{case}"))
    return out


@pytest.mark.parametrize("cmd,case", _params(["scenario", "summary", "mapping"]))
def test_planted_pickle_runs_nothing(cmd, case, good_dir, tmp_path, request):
    marker = tmp_path / "PAYLOAD_RAN"
    data = _plant(good_dir, tmp_path / "data", case, marker)
    traffic = request.getfixturevalue("traffic_ckpt") if "{TRAFFIC}" in INVOCATIONS[cmd] else None
    out = tmp_path / "out"
    code, text = _run(cmd, data, data / EVIL, out, traffic)
    assert not marker.exists(), f"{cmd}: the planted pickle executed"
    assert "UNCAUGHT" not in text and "Traceback" not in text, text[-3000:]
    bad_name = EVIL if case == "scenario" else f"dataset_{case}.pkl"
    flat = " ".join(text.split())
    assert bad_name in flat.replace(" ", "") or bad_name in flat, f"{cmd}: the bad file is not named:\n{text[-2000:]}"
    assert "refused" in flat, text[-2000:]
    assert code != 0, f"{cmd}: a refused file must not end with exit code 0:\n{text[-1500:]}"
    if case == "scenario" and cmd in ONE_BY_ONE:
        _assert_good_processed(cmd, text, out)


def _assert_good_processed(cmd: str, text: str, out: Path) -> None:
    from sim_bridge.dataset import ScenarioDataset

    if cmd == "scenarios validate":
        assert "2 good, 1 bad" in text
    elif cmd == "scenarios info":
        assert "(2 scenarios)" in text
    elif cmd == "scenarios bev":
        assert len(list(out.glob("*.png"))) == 2
    elif cmd in ("scenarios convert scenarionet", "traffic generate", "traffic augment"):
        assert len(ScenarioDataset(out)) == 2
    elif cmd == "scenarios export":
        assert len(list((out / "waymo").glob("*.tfrecord"))) == 2
    elif cmd == "traffic train":
        assert list((out / "checkpoints").glob("*.pt")), "training on the good scenes did not run"
    elif cmd == "views dataset":
        import json

        index = json.loads((out / "index.json").read_text())
        assert {f.split("__")[0] for f in index["frames"]} == {Path(n).stem for n in GOOD}, index["frames"]


# ---- files written by MetaDrive's own code (defaultdicts included) load in every command ----------
@pytest.fixture(scope="module")
def metadrive_written_dir(tmp_path_factory, good_dir) -> Path:
    """The good scenes re-saved by MetaDrive's ``save_dataset`` (its summary helpers write
    ``collections.defaultdict`` into each scenario's metadata and into ``dataset_summary.pkl``)."""
    import collections

    md_utils = pytest.importorskip("metadrive.scenario.utils")
    from metadrive.scenario.scenario_description import ScenarioDescription as SD

    from sim_bridge.safe_pickle import safe_load
    from sim_bridge.scenario import load_scenario_dict

    out = tmp_path_factory.mktemp("metadrive_written")
    scenarios = [SD(load_scenario_dict(good_dir / n)) for n in GOOD]
    md_utils.save_dataset(scenarios, "mixed", "v0", str(out))
    summary = safe_load(out / "dataset_summary.pkl")
    kinds = {type(v["number_summary"]["num_moving_objects_each_type"]) for v in summary.values()}
    assert kinds == {collections.defaultdict}, "MetaDrive no longer writes defaultdicts: the test lost its point"
    return out


@pytest.mark.parametrize("cmd", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else [],
                                              id=c.replace(" ", "-")) for c in INVOCATIONS])
def test_metadrive_written_dataset_loads_everywhere(cmd, metadrive_written_dir, tmp_path, request):
    traffic = request.getfixturevalue("traffic_ckpt") if "{TRAFFIC}" in INVOCATIONS[cmd] else None
    file = sorted(metadrive_written_dir.glob("sd_*.pkl"))[0]
    code, text = _run(cmd, metadrive_written_dir, file, tmp_path / "out", traffic)
    assert code == 0, text[-3000:]
