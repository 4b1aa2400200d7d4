"""The batched simulator as a Gymnasium ``VectorEnv`` (same scenes, same episodes as the SB3 ``VecEnv``).

Gymnasium's vector API (1.x): ``reset(seed=...) -> (obs [b, D], infos)`` and ``step(actions [b, 2]) ->
(obs, rewards, terminations, truncations, infos)`` with ``AutoresetMode.SAME_STEP``: a scene that ends is
reset within the same step, its last observation in ``infos["final_obs"]`` (masked by
``infos["_final_obs"]``) and its episode figures (route completion, crash, arrival, return, length) in
``infos["final_info"]``. Everything runs through :class:`~sim_bridge.batched.env.BatchedVecEnv`, so the two
interfaces cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from sim_bridge.batched.env import BatchedEnvConfig, BatchedVecEnv
from sim_bridge.batched.state import BatchedScenarios

__all__ = ["BatchedGymVectorEnv"]

_EPISODE_KEYS = ("route_completion", "crash", "crash_vehicle", "crash_object", "out_of_road", "arrive_dest",
                 "episode_reward", "episode_length")


class BatchedGymVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` scene slots of the batched simulator behind Gymnasium's ``VectorEnv`` interface."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, batch: BatchedScenarios, num_envs: int, cfg: BatchedEnvConfig = BatchedEnvConfig(),
                 device: str | torch.device = "cpu", seed: int = 0):
        self.vec = BatchedVecEnv(batch, num_envs, cfg, device, seed)
        self.num_envs = num_envs
        self.single_observation_space = self.vec.observation_space
        self.single_action_space = self.vec.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.vec.seed(int(seed if np.isscalar(seed) else seed[0]))
        return self.vec.reset(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, done, infos = self.vec.step(np.asarray(actions, np.float32))
        trunc = np.array([bool(i.get("TimeLimit.truncated", False)) for i in infos]) & done
        term = done & ~trunc
        info: dict[str, Any] = {}
        if done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_info = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = infos[i]["terminal_observation"]
                final_info[i] = {k: infos[i][k] for k in _EPISODE_KEYS}
            info.update(final_obs=final_obs, _final_obs=done.copy(), final_info=final_info, _final_info=done.copy())
        return obs, reward, term, trunc, info

    def close_extras(self, **kwargs: Any) -> None:
        self.vec.close()
