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
from pathlib import Path
from typing import Any

__all__ = ["AssetsMissingError", "prepare_offline", "assets_available", "make_scenario_env",
           "make_procedural_env", "episode_dump_without_copy", "QUIET"]

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
    from sim_bridge.scenario import ScenarioDataset

    n = len(ScenarioDataset(data_dir)) if num_scenarios is None else num_scenarios
    cfg = _base_config(dict(data_directory=str(Path(data_dir).resolve()), num_scenarios=n, **overrides))
    prepare_offline(cfg)
    from metadrive.envs.scenario_env import ScenarioEnv

    return ScenarioEnv(cfg)


def make_procedural_env(**overrides: Any):
    """MetaDrive ``MetaDriveEnv`` (procedural maps), headless and offline."""
    cfg = _base_config(overrides)
    prepare_offline(cfg)
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
