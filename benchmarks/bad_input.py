"""The bad-input matrix of `make bench`: hostile and broken files against the loader and every command.

Two parts:
  * kinds: each kind of hostile or broken file (code-running globals, gadgets, foreign defaultdict
    factories, gigantic declarations, corruptions) planted as a scenario file and read by the loader
    (`load_scenario`), by `bevgen scenarios validate`, and by MetaDrive's own data manager inside a
    ScenarioEnv (routed through the safe loader);
  * commands: an `os.system` payload planted as a scenario, as `dataset_summary.pkl` and as
    `dataset_mapping.pkl` under every command that reads scenarios (found from the CLI definition,
    as in tests/test_untrusted_input.py).
Every run must end in one of our documented errors naming the file, and no payload may run.
"""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _kinds(marker: Path) -> dict[str, bytes]:
    """name -> file bytes; each would touch ``marker`` (or exhaust memory) under plain pickle.load."""
    from numpy.core import multiarray

    sh = f"touch {marker}"
    wrap = lambda obj: pickle.dumps({"id": "x", "payload": obj}, protocol=4)  # noqa: E731
    return {
        "os.system via __reduce__": wrap(_Reduce(os.system, sh)),
        "subprocess.call": wrap(_Reduce(__import__("subprocess").call, ["touch", str(marker)])),
        "builtins.eval": b"cbuiltins\neval\n(S'__import__(\"os\").system(\"" + sh.encode() + b"\")'\ntR.",
        "builtins.exec": b"cbuiltins\nexec\n(S'import os; os.system(\"" + sh.encode() + b"\")'\ntR.",
        "getattr gadget": b"cbuiltins\ngetattr\n(cos\nsystem\nS'x'\ntR.",
        "defaultdict(os.system)": wrap(collections.defaultdict(os.system)),
        "defaultdict(OrderedDict) factory": wrap(collections.defaultdict(collections.OrderedDict)),
        "persistent id": b"\x80\x04P0\n.",
        "codecs other than latin1": wrap(_Reduce(__import__("_codecs").encode, "eA==", "base64")),
        "gigantic numpy.ndarray(shape)": wrap(_Reduce(np.ndarray, (10**6, 10**6))),
        "gigantic array reconstruct": wrap(_Reduce(multiarray._reconstruct, np.ndarray, (10**6, 10**6), b"b")),
        "gigantic bytearray": wrap(_Reduce(bytearray, 10**12)),
        "gigantic range": wrap(_Reduce(list, range(10**12))),
        "truncated real scenario": (REAL_DIR / "sd_nuscenes_v1.0-mini_scene-0916.pkl").read_bytes()[:5000],
        "random bytes": np.random.RandomState(0).bytes(4096),
        "empty file": b"",
        "not a dict (list)": pickle.dumps([1, 2, 3]),
        "scenario with a broken field": _broken_field(),
    }


def _broken_field() -> bytes:
    from sim_bridge.safe_pickle import safe_load

    d = safe_load(REAL_DIR / "sd_nuscenes_v1.0-mini_scene-0916.pkl")
    ego = d["metadata"]["sdc_id"]
    d["tracks"][ego]["state"]["position"] = np.zeros((3, 7, 2))
    return pickle.dumps(d)


def _loader_and_validate(name: str, blob: bytes, work: Path, marker: Path) -> dict:
    import subprocess

    from sim_bridge.safe_pickle import LOAD_ERRORS
    from sim_bridge.scenario import ScenarioError, load_scenario

    path = work / "sd_bad.pkl"
    path.write_bytes(blob)
    row = {"kind": name}
    try:
        load_scenario(path)
        row["loader"] = "loaded"
    except (ScenarioError, *LOAD_ERRORS) as e:
        row["loader"] = type(e).__name__ if str(path) in str(e) else f"{type(e).__name__} (file not named)"
    except Exception as e:  # noqa: BLE001 - recorded as a failure of the matrix
        row["loader"] = f"UNCLEAR {type(e).__name__}"
    res = subprocess.run([sys.executable, "-m", "bevgen.cli", "scenarios", "validate", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = res.stdout + res.stderr
    row["validate"] = ("clear" if res.returncode == 1 and "BAD " in out and "Traceback" not in out
                       else f"UNCLEAR rc={res.returncode}")
    row["executed"] = marker.exists()
    return row


def _metadrive_reads(kinds: dict[str, bytes], work: Path, marker: Path) -> dict:
    """Plant each kind as scenario 0 of a ScenarioEnv directory, skip our pre-check, and reset:
    MetaDrive's own data manager must refuse through the safe loader."""
    from sim_bridge.envs.factory import EnvConfig, make_env
    from sim_bridge.safe_pickle import LOAD_ERRORS
    from sim_bridge.dataset import write_index
    from sim_bridge.scenario import ScenarioError

    root = work / "md"
    root.mkdir()
    name = "sd_nuscenes_v1.0-mini_scene-0916.pkl"
    write_index(root, {name: {}})
    refused = unclear = 0
    env = None
    try:
        for blob in kinds.values():
            (root / name).write_bytes(blob)
            if env is None:
                env = make_env(EnvConfig(data=str(root), num_scenarios=1))
            try:
                if env.engine is not None:  # the engine starts at the first reset; drop its cached scenario
                    env.engine.data_manager.clear_stored_scenarios()
                env.reset(seed=0)
                unclear += 1
            except (ScenarioError, *LOAD_ERRORS):
                refused += 1
            except Exception:  # noqa: BLE001
                unclear += 1
    finally:
        if env is not None:
            env.close()
    return {"kinds": len(kinds), "refused": refused, "unclear": unclear, "executed": marker.exists()}


def _command_matrix(work: Path, marker: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from typer.testing import CliRunner

    from bevgen.cli import app
    from tests.test_untrusted_input import GOOD, SINGLE_FILE, _plant, _run, scenario_commands

    from sim_bridge.dataset import ScenarioDataset, write_index

    good = work / "good"
    good.mkdir()
    ds = ScenarioDataset(REAL_DIR)
    for n in GOOD:
        shutil.copy(ds.path_of(n), good / n)
    write_index(good, {n: ds.summary[n] for n in GOOD})
    traffic = work / "traffic"
    CliRunner().invoke(app, ["traffic", "train", "--data", str(good), "--out", str(traffic), "--preset", "tiny",
                             "--steps", "2"])
    cmds = scenario_commands()
    runs = clear = 0
    unclear = []
    for cmd in cmds:
        for case in ("scenario", "summary", "mapping"):
            if case != "scenario" and cmd in SINGLE_FILE:
                continue
            where = work / f"{cmd.replace(' ', '_')}_{case}"
            data = _plant(good, where / "data", case, marker)
            bad_name = "dataset_%s.pkl" % case if case != "scenario" else None
            code, text = _run(cmd, data, data / "sd_nuscenes_v1.0-mini_scene-0655.pkl", where / "out", traffic)
            flat = "".join(text.split())
            named = (bad_name or "sd_nuscenes_v1.0-mini_scene-0655.pkl") in flat
            runs += 1
            if code != 0 and named and "refused" in flat and "UNCAUGHT" not in text:
                clear += 1
            else:
                unclear.append(f"{cmd} [{case}] rc={code}")
    return {"commands": sorted(cmds), "locations": ["scenario file", "dataset_summary.pkl", "dataset_mapping.pkl"],
            "runs": runs, "clear_errors": clear, "unclear": unclear, "executed": marker.exists()}


def bench_bad_input() -> dict:
    if not REAL_DIR.exists():
        return {"skipped": f"{REAL_DIR} not found"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        marker = work / "PAYLOAD_RAN"
        kinds = _kinds(marker)
        rows = [_loader_and_validate(name, blob, work, marker) for name, blob in kinds.items()]
        md = _metadrive_reads(kinds, work, marker)
        matrix = _command_matrix(work, marker)
        executed = marker.exists()
    loader_clear = sum(not r["loader"].startswith(("UNCLEAR", "loaded")) and "not named" not in r["loader"]
                       for r in rows)
    return {
        "what": "hostile and broken files against the safe loader, `scenarios validate`, MetaDrive's data manager "
                "and every command that reads scenarios; clear = one of our errors naming the file, no traceback",
        "kinds_tried": len(kinds), "loader_clear_errors": loader_clear,
        "validate_clear_errors": sum(r["validate"] == "clear" for r in rows),
        "metadrive_data_manager": md, "command_matrix": matrix, "anything_executed": executed,
        "per_kind": rows, "seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_bad_input(), indent=2))
