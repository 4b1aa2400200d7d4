"""The batched simulator's scene observation, computed for a MetaDrive ``ScenarioEnv`` ego.

A policy trained on ``sim_bridge.batched`` (PPO on ``BatchedVecEnv``) reads the observation of
:func:`sim_bridge.batched.env.observe`: ego state against its route, the nearest agents in the ego
frame, route points ahead, nearest road-edge points. :class:`SceneObservation` gives a MetaDrive
``ScenarioEnv`` the same observation, computed by the same function, so the policy drives MetaDrive
unchanged (``EnvConfig.observation="scene"``).

How: on reset the current scenario file (MetaDrive's ``reset(seed=i)`` plays index i of the
directory) is loaded once into a 1-scene ``BatchedScenarios`` (cached per file); every step builds a
``SimState`` from MetaDrive's ego (position, ``heading_theta`` rad, ``speed`` m/s, wheel angle =
``steering`` in [-1, 1] x ``max_steering`` deg), t = steps since reset and the route segment carried
over, then calls ``observe``. Frames: MetaDrive centres each scenario on the ego's logged position at
step 0 (``metadata["old_origin_in_current_coordinate"]`` = minus that point); the batched frame is
centred on the ego's first *valid* position (``BatchedScenarios.origin``); the shift between the two
is applied here. As in the batched env (``end_with_log``), an episode is truncated when the log ends
(ScenarioEnv itself runs on to its horizon). Traffic is read from the log at step t (what ScenarioEnv replays unless
``reactive_traffic``; with IDM traffic the observed agents are the logged ones, not MetaDrive's).
"""

# The batched simulator (torch) is imported lazily: EnvConfig users that never ask for the scene observation
# do not pay for torch.

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from sim_bridge.envs.factory import EnvConfig

__all__ = ["SceneObservation", "scene_env_config", "load_env_scenarios"]


def scene_env_config(cfg: EnvConfig, **overrides: Any):
    """The ``BatchedEnvConfig`` matching an ``EnvConfig`` (horizon, reward, reactive traffic, observation layout
    ``scene_obs``).

    Both backends build their observation and episode settings from here, so a policy trained on one
    reads the same layout in the other. ``reactive_traffic`` is MetaDrive's IDM traffic in ScenarioEnv and
    the batched simulator's ``traffic="idm"``.
    """
    from sim_bridge.batched.env import BatchedEnvConfig

    traffic = "idm" if cfg.reactive_traffic else "log"
    o = cfg.scene_obs
    return replace(BatchedEnvConfig(horizon=cfg.horizon, reward=cfg.reward, traffic=traffic, obs_agents=o.agents,
                                    obs_route_points=o.route_points, obs_route_spacing=o.route_spacing_m,
                                    obs_edge_points=o.edge_points, obs_range=o.range_m), **overrides)


def load_env_scenarios(cfg: EnvConfig, device: str | torch.device = "cpu", self_play=None):
    """The scenarios an ``EnvConfig`` names (its directory range, checked through the safe loader) as one
    ``BatchedScenarios`` on ``device`` (rows of the driven vehicles with ``self_play``, a ``SelfPlayConfig``)."""
    from sim_bridge.batched.state import load_batched
    from sim_bridge.dataset import ScenarioDataset

    if cfg.procedural:
        raise ValueError("the batched simulator needs a scenario directory, not 'procedural' maps")
    total = cfg.check_scenarios()
    names = ScenarioDataset(cfg.data).names[cfg.start_index:cfg.start_index + total]
    return load_batched(cfg.data, names=names, device=device, self_play=self_play)


class SceneObservation(gym.Wrapper):
    """Replaces a MetaDrive ``ScenarioEnv``'s observation by the batched simulator's one.

    Args:
        env: a ``ScenarioEnv`` over the directory ``data`` (``make_env`` builds it).
        data: that scenario directory.
        cfg: the env settings (``scene_env_config(cfg)`` gives the observation layout).
    """

    def __init__(self, env: gym.Env, data: str | Path, cfg: EnvConfig):
        from sim_bridge.batched.env import obs_dim

        super().__init__(env)
        self.data, self.cfg = Path(data), scene_env_config(cfg)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim(self.cfg),), np.float32)
        self._cache: dict[str, tuple[Any, torch.Tensor]] = {}  # file -> (1-scene batch, MetaDrive -> batch shift)
        self._batch, self._shift = None, None
        self._t, self._route_index = 0, torch.zeros(1, dtype=torch.long)

    def _load(self, name: str) -> tuple[Any, torch.Tensor]:
        if name not in self._cache:
            from sim_bridge.batched.state import load_batched

            batch = load_batched(self.data, names=[name])
            meta = self.env.unwrapped.engine.data_manager.current_scenario["metadata"]
            md_origin = -np.asarray(meta.get("old_origin_in_current_coordinate", (0.0, 0.0)), np.float64)[:2]
            # world = md_xy + md_origin = batch_xy + batch.origin
            self._cache[name] = batch, torch.as_tensor(md_origin - batch.origin[0].numpy(), dtype=torch.float32)
        return self._cache[name]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        _, info = self.env.reset(seed=seed) if options is None else self.env.reset(seed=seed, options=options)
        name = self.env.unwrapped.engine.data_manager.current_scenario_file_name
        self._batch, self._shift = self._load(name)
        self._t, self._route_index = 0, torch.zeros(1, dtype=torch.long)
        return self._observe(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if self.cfg.end_with_log and not terminated and self._t >= int(self._batch.length[0]) - 1:
            truncated = True  # the batched episode's end: ScenarioEnv would drive on past the log
        return self._observe(), reward, terminated, truncated, info

    def sim_state(self):
        """The ``SimState`` (b = 1) of MetaDrive's ego now, in the batch's frame."""
        from sim_bridge.batched.env import ego_state

        ag = self.env.unwrapped.agent
        xy = torch.tensor([ag.position[:2]], dtype=torch.float32) + self._shift
        wheel = float(ag.steering) * math.radians(float(ag.max_steering))
        one = lambda v: torch.tensor([float(v)], dtype=torch.float32)  # noqa: E731
        return ego_state(self._batch, torch.zeros(1, dtype=torch.long), torch.tensor([self._t]), xy,
                         one(ag.heading_theta), one(ag.speed), one(wheel), self._route_index, self.cfg)

    def _observe(self) -> np.ndarray:
        from sim_bridge.batched.env import observe

        st = self.sim_state()
        self._route_index = st.route_index
        return observe(self._batch, st, self.cfg)[0].numpy()
