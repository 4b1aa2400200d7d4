"""MetaDrive unpickles nothing itself: its scenario and index reads go through the safe loader."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest

metadrive = pytest.importorskip("metadrive")  # the project modules below import nothing heavy; skip first

from sim_bridge.envs.factory import EnvConfig, make_env  # noqa: E402
from sim_bridge.envs.metadrive import _UNPICKLING_MODULES, route_scenario_reads  # noqa: E402
from sim_bridge.safe_pickle import UnsafePickleError  # noqa: E402
from sim_bridge.dataset import write_index  # noqa: E402
from sim_bridge.scenario import ScenarioError  # noqa: E402

MD_ROOT = Path(metadrive.__file__).parent
# Call sites of pickle.load(s) in the installed MetaDrive that never see scenario data from a user's
# dataset directory, with the reason. Any other call site must be in a module that
# route_scenario_reads() guards (_UNPICKLING_MODULES).
NOT_SCENARIO_DATA = {
    "render_pipeline/toolkit/render_service/service.py": "render-pipeline network service, never imported headless",
    "render_pipeline/toolkit/render_service/example_usage.py": "example script",
}


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _unpickling_modules() -> set[str]:
    found = set()
    for path in MD_ROOT.rglob("*.py"):
        rel = str(path.relative_to(MD_ROOT))
        if rel.startswith(("tests/", "examples/")) or "/tests/" in rel:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MetaDrive's sources have invalid escape sequences
                tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("load", "loads")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("pickle", "cPickle")):
                found.add(rel)
    return found


def test_every_metadrive_unpickling_site_is_guarded():
    guarded = {m.removeprefix("metadrive.").replace(".", "/") + ".py" for m in _UNPICKLING_MODULES}
    uncovered = _unpickling_modules() - guarded - set(NOT_SCENARIO_DATA)
    assert not uncovered, (f"MetaDrive unpickles in {sorted(uncovered)}: guard the module in "
                           "sim_bridge/envs/metadrive.py (_UNPICKLING_MODULES) or list why it never sees scenario data")


def test_metadrive_readers_refuse_malicious_files(tmp_path, real_dir):
    route_scenario_reads()
    from metadrive.manager import scenario_data_manager
    from metadrive.scenario import utils as md_utils

    marker = tmp_path / "PAYLOAD_RAN"
    bad = tmp_path / "sd_evil.pkl"
    bad.write_bytes(pickle.dumps({"payload": _Payload(marker)}))
    for reader in (md_utils.read_scenario_data, scenario_data_manager.read_scenario_data):
        with pytest.raises(UnsafePickleError, match="sd_evil.pkl"):
            reader(str(bad))
    with pytest.raises(UnsafePickleError, match="MetaDrive tried to unpickle"):
        md_utils.pickle.load(open(bad, "rb"))
    (tmp_path / "dataset_summary.pkl").write_bytes(pickle.dumps({"sd_evil.pkl": _Payload(marker)}))
    with pytest.raises(UnsafePickleError, match="dataset_summary.pkl"):
        scenario_data_manager.read_dataset_summary(str(tmp_path))
    # the good files still read, as MetaDrive's ScenarioDescription
    good = sorted(real_dir.glob("sd_*.pkl"))[0]
    sd = md_utils.read_scenario_data(str(good), centralize=True)
    assert type(sd).__name__ == "ScenarioDescription" and sd["metadata"]["sdc_id"] in sd["tracks"]
    assert not marker.exists()


@pytest.mark.metadrive
def test_scenario_env_refuses_a_planted_file_without_the_precheck(tmp_path, real_dir):
    """Skip our pre-check and let MetaDrive's own data manager read: it refuses the planted file at its
    reset, runs nothing, and still drives the good scenario."""
    data = tmp_path / "data"
    data.mkdir()
    good = "sd_nuscenes_v1.0-mini_scene-0916.pkl"
    shutil.copy(real_dir / good, data / good)
    marker = tmp_path / "PAYLOAD_RAN"
    (data / "sd_evil.pkl").write_bytes(pickle.dumps({"payload": _Payload(marker)}))
    write_index(data, {good: {}, "sd_evil.pkl": {}})
    with pytest.raises(ValueError, match="sd_evil.pkl: refused to load"):
        EnvConfig(data=str(data)).check_scenarios()
    env = make_env(EnvConfig(data=str(data), horizon=5))
    try:
        env.reset(seed=0)
        env.step([0.0, 0.5])
        with pytest.raises(UnsafePickleError, match="sd_evil.pkl"):
            env.reset(seed=1)
    finally:
        env.close()
    assert not marker.exists()


def test_missing_file_named_by_the_index_is_our_error(tmp_path, real_dir):
    route_scenario_reads()
    from metadrive.manager import scenario_data_manager

    write_index(tmp_path, {"sd_gone.pkl": {}})
    with pytest.raises(ScenarioError, match="sd_gone.pkl"):
        scenario_data_manager.read_dataset_summary(str(tmp_path))
