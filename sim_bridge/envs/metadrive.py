"""The one place that imports MetaDrive (always lazily, inside functions).

Offline use: MetaDrive 0.4.3's engine calls ``BaseEngine.try_pull_asset()`` on start and downloads
``assets.zip`` from the internet when its ``assets/`` folder is missing. Physics-only (headless)
simulation needs none of those assets: maps, traffic, IDM, lidar-state observations and scenario
replay all work without them. :func:`prepare_offline` replaces that hook so that an engine start
never touches the network; when assets are absent, anything that needs them (camera / RGB
observations, the 3D window, ``use_render=True``) is refused with a clear :class:`AssetsMissingError`
instead of a download attempt. Install the assets by hand (``python -m metadrive.pull_asset`` on a
connected machine) to enable rendering.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
import types
from pathlib import Path
from typing import Any

from sim_bridge.safe_pickle import UnsafePickleError
from sim_bridge.dataset import ScenarioDataset
from sim_bridge.scenario import Scenario, load_scenario_dict

__all__ = ["AssetsMissingError", "prepare_offline", "assets_available", "make_scenario_env",
           "make_procedural_env", "episode_dump_without_copy", "route_scenario_reads", "QUIET"]

QUIET = logging.CRITICAL  # MetaDrive's log level for library use; its INFO banner is noisy


class AssetsMissingError(RuntimeError):
    """Rendering was requested but MetaDrive's render assets are not installed (offline machine)."""


def assets_available() -> bool:
    """Whether MetaDrive's render assets are installed (its ``assets/version.txt`` exists)."""
    import metadrive

    return (Path(metadrive.__file__).parent / "assets" / "version.txt").exists()


def _offline_pull_hook() -> None:
    # Replaces BaseEngine.try_pull_asset: never download. Rendering paths check assets_available().
    return None


def prepare_offline(config: dict | None = None) -> None:
    """Make MetaDrive start without network access; refuse configs that need missing assets.

    Args:
        config: the env config about to be used; checked for rendering options.

    Raises:
        AssetsMissingError: the config asks for rendering and the assets are not installed.
    """
    from metadrive.engine.base_engine import BaseEngine

    if not assets_available():
        config = config or {}
        wants_render = bool(config.get("use_render")) or bool(config.get("image_observation"))
        if wants_render:
            raise AssetsMissingError(
                "MetaDrive render assets are not installed, so camera rendering and the 3D window are "
                "unavailable (this machine is offline). Physics-only simulation works: set "
                "use_render=False and image_observation=False, or install the assets with "
                "`python -m metadrive.pull_asset` on a machine with internet access.")
        BaseEngine.try_pull_asset = staticmethod(_offline_pull_hook)


# ---- scenario reads inside MetaDrive -------------------------------------------------------------
# MetaDrive's ScenarioEnv reads every scenario and both index files with a plain ``pickle.load``
# (``metadrive.scenario.utils.read_scenario_data`` / ``read_dataset_summary``, called by its
# ``ScenarioDataManager``). A dataset from a stranger would run code in every training or
# evaluation worker. How this module guarantees that MetaDrive unpickles nothing itself:
#   1. ``route_scenario_reads()`` replaces both readers, in ``metadrive.scenario.utils`` and in every
#      loaded MetaDrive module that imported them by name, with versions that read through
#      ``sim_bridge.safe_pickle`` (the one read path of the toolkit);
#   2. it replaces the ``pickle`` module those MetaDrive modules hold with one whose ``load``/``loads``
#      raise ``UnsafePickleError``: a MetaDrive code path that still reads a pickle by itself fails
#      loudly instead of executing the file;
#   3. every env this package builds calls it first (``_prepare``), in every process: worker
#      processes, Ray tasks and the snapshot/rollout paths all build envs through ``make_*_env``;
#   4. tests plant malicious files under every command that reaches MetaDrive, and a test lists
#      each ``pickle.load`` call site in the installed MetaDrive and fails when one is not covered.
_UNPICKLING_MODULES = ("metadrive.scenario.utils", "metadrive.manager.pg_map_manager")


def _safe_read_scenario_data(file_path, centralize: bool = False):
    """``metadrive.scenario.utils.read_scenario_data`` reading through the safe loader; the file is also checked
    against the contract (what a conversion would repair passes: MetaDrive copes with it), so a malformed
    file is a ScenarioError naming the field instead of a crash deep inside MetaDrive."""
    from metadrive.scenario.scenario_description import ScenarioDescription as SD

    if not SD.is_scenario_file(str(file_path)):
        raise ValueError(f"{file_path}: not a scenario file")
    raw = load_scenario_dict(file_path)
    Scenario.from_dict(raw, src=str(file_path), repair=True)
    data = SD(raw)
    return SD.centralize_to_ego_car_initial_position(data) if centralize else data


def _safe_read_dataset_summary(file_folder, check_file_existence: bool = True):
    """``metadrive.scenario.utils.read_dataset_summary`` reading through the safe loader.

    Returns (summary dict, scenario file names in index order, file name -> sub-folder); a missing
    file named by the index raises ``ScenarioError`` (the check MetaDrive makes with asserts).
    """
    ds = ScenarioDataset(file_folder)
    return ds.summary, list(ds.names), dict(ds.mapping)


def _refuse(*_args, **_kwargs):
    raise UnsafePickleError(
        "MetaDrive tried to unpickle a file itself; bevgen reads every scenario through "
        "sim_bridge.safe_pickle (see sim_bridge/envs/metadrive.py: route_scenario_reads)")


# ``pickle`` as MetaDrive's data modules see it: writing works, reading is refused.
_WRITE_ONLY_PICKLE = types.SimpleNamespace(dump=pickle.dump, dumps=pickle.dumps, load=_refuse, loads=_refuse,
                                           HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
                                           DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL)


def route_scenario_reads() -> None:
    """Route MetaDrive's scenario and index reads through :mod:`sim_bridge.safe_pickle` (idempotent).

    Call before building any MetaDrive env in a process; ``make_scenario_env`` and
    ``make_procedural_env`` do. See the comment above for the guarantee.
    """
    import importlib

    from metadrive.scenario import utils as md_utils

    originals = {}
    for name, safe in (("read_scenario_data", _safe_read_scenario_data),
                       ("read_dataset_summary", _safe_read_dataset_summary)):
        current = getattr(md_utils, name)
        if current is not safe:
            originals[id(current)] = safe
    for mod_name in _UNPICKLING_MODULES:
        importlib.import_module(mod_name).pickle = _WRITE_ONLY_PICKLE
    if not originals:
        return
    # Rebind every `from metadrive.scenario.utils import read_...` made by modules already imported.
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("metadrive") or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if id(value) in originals and callable(value):
                setattr(mod, attr, originals[id(value)])


def _prepare(config: dict) -> None:
    prepare_offline(config)
    route_scenario_reads()


def _base_config(overrides: dict[str, Any] | None) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(use_render=False, image_observation=False, log_level=QUIET)
    cfg.update(overrides or {})
    return cfg


def make_scenario_env(data_dir: str | Path, num_scenarios: int | None = None, **overrides: Any):
    """MetaDrive ``ScenarioEnv`` replaying a dataset directory, headless and offline.

    Args:
        data_dir: a dataset directory in the scenario contract.
        num_scenarios: how many scenarios to use (default: all in the directory).
        **overrides: any other ScenarioEnv config keys.

    Returns:
        A ``metadrive.envs.scenario_env.ScenarioEnv`` (call ``close()`` when done: one engine per process).
    """
    n = len(ScenarioDataset(data_dir)) if num_scenarios is None else num_scenarios
    cfg = _base_config(dict(data_directory=str(Path(data_dir).resolve()), num_scenarios=n, **overrides))
    _prepare(cfg)
    from metadrive.envs.scenario_env import ScenarioEnv

    return ScenarioEnv(cfg)


def make_procedural_env(**overrides: Any):
    """MetaDrive ``MetaDriveEnv`` (procedural maps), headless and offline."""
    cfg = _base_config(overrides)
    _prepare(cfg)
    from metadrive.envs.metadrive_env import MetaDriveEnv

    return MetaDriveEnv(cfg)


@contextlib.contextmanager
def episode_dump_without_copy():
    """Within this block, MetaDrive hands out its recorded episode without a deep copy.

    ``RecordManager.get_episode_metadata`` deep-copies the whole episode record (every object's
    state at every step) so that a caller cannot alias state the engine keeps using; that copy is
    ~40% of a 200-step export. Use this only when the engine is closed right after the dump, as the
    procedural exporter does. The original method is restored on exit.
    """
    from metadrive.manager.record_manager import RecordManager

    original = RecordManager.get_episode_metadata

    def _no_copy(self):
        assert self.engine.record_episode, "Turn on recording episode and then dump it"
        return self.episode_info

    RecordManager.get_episode_metadata = _no_copy
    try:
        yield
    finally:
        RecordManager.get_episode_metadata = original
