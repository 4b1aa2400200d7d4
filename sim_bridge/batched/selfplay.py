"""Self-play: one policy drives every picked vehicle of a scene at once, each seeing the others move.

A scene loaded for self-play (``load_batched(..., self_play=SelfPlayConfig())``) has one row per
vehicle the policy drives (the logged ego and the moving vehicles nearest to it, ``SelfPlayConfig``),
each with its own route (its logged path) and its logged size; everything else replays its log.

A scene in flight takes ``P`` consecutive scene slots (P = the most vehicles any loaded scene drives),
slot ``g * P + k`` driving vehicle k of scene g. Each slot is the single-vehicle simulation of
:mod:`sim_bridge.batched.env` (its own route, observation, reward and termination) with one change:
the scene it sees is the log with every driven vehicle of its scene at its *simulated* state. A vehicle
whose episode ends (crash, out of road, arrival) leaves the scene, as MetaDrive's multi-agent envs
remove finished vehicles; the scene restarts on the next scenario once all its vehicles are done or
the scene runs out of time (horizon or end of log).

Per step: the motion and events of the b = G * P slots are the batched single-vehicle ones; the
coupling is one scatter of the G * P simulated states into the G scene tensors [G, a, 9] and one
gather back per slot, O(b a) like log replay.

:class:`SelfPlayVecEnv` is the SB3 ``VecEnv`` over the slots. A slot without a live vehicle (its
vehicle finished while the scene runs on, or its scene drives fewer than P) is *inactive*: it
observes zeros, gets reward 0 and never ends; ``acted_active`` says which slots were active when the
last actions were taken, and :class:`sim_bridge.rl.masked.MaskedRolloutBuffer` drops the inactive
ones from PPO's updates (GAE stays exact: an agent's last step is ``done``, so nothing flows across
the inactive gap).

Einsum letters: g scene in flight, p driven vehicle of a scene, b = g * p slot, a agent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from sim_bridge.batched.env import (BatchedEnvConfig, TensorVecEnv, ego_motion, judge, log_frames, obs_dim, observe,
                                   reset)
from sim_bridge.batched.events import nearest_agents
from sim_bridge.batched.state import BatchedScenarios, SimState

__all__ = ["scene_rows", "self_play_config", "self_play_step", "SelfPlayVecEnv"]


def scene_rows(batch: BatchedScenarios) -> Tensor:
    """int64 [l, P]: the rows (driven vehicles) of each logged scene in load order, -1 padded."""
    count = torch.bincount(batch.scene, minlength=batch.num_scenes)
    p = int(count.max())
    order = torch.argsort(batch.scene, stable=True)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(batch.num_scenarios, device=batch.scene.device) - first[batch.scene[order]]
    out = torch.full((batch.num_scenes, p), -1, dtype=torch.long, device=batch.scene.device)
    out[batch.scene[order], k] = order
    return out


def self_play_config(cfg: BatchedEnvConfig) -> BatchedEnvConfig:
    """``cfg`` for self-play: bicycle control and the logged sizes (the driven vehicles are not all
    MetaDrive's default car). Logged (not IDM) traffic: the driven vehicles are the reactive ones."""
    if cfg.traffic != "log":
        raise ValueError("self-play drives the scene's vehicles with the policy; the rest replay their logs "
                         "(traffic='log', env.reactive_traffic=false)")
    return replace(cfg, ego_control="bicycle", ego_size="logged")


def self_play_step(batch: BatchedScenarios, state: SimState, action: Tensor, driven: Tensor, alive: Tensor,
                   per_scene: int, cfg: BatchedEnvConfig
                   ) -> tuple[SimState, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """One step of G = b / per_scene scenes whose slots drive their vehicles together.

    Args:
        state: the b slots, scene g in slots g * per_scene ... (g + 1) * per_scene - 1 (same scenario
            and step within a scene).
        action: [b, 2]; driven: bool [b], the slot has a vehicle this scene; alive: bool [b], that
            vehicle is still in the scene (its episode runs).

    Returns:
        As :func:`sim_bridge.batched.env.step`, reward / terminated / truncated zero for slots not alive.
    """
    b, p = state.scenario.shape[0], per_scene
    g = b // p
    t = state.t + 1
    xy, yaw, speed, rate, steer = ego_motion(batch, state, action, cfg)
    # the log at the new step, one copy per scene
    lead = torch.arange(g, device=t.device) * p
    scene, present = log_frames(batch, state.scenario[lead], t[lead])  # [g, a, 9], [g, a]
    a = scene.shape[1]
    # the driven vehicles at their simulated state; a finished one has left
    c, s = torch.cos(yaw), torch.sin(yaw)
    sim = torch.cat([xy, yaw[:, None], state.ego_size, c[:, None], s[:, None], (speed * c)[:, None],
                     (speed * s)[:, None]], -1)  # [b, 9]
    gi = torch.arange(b, device=t.device) // p
    scene[gi[driven], state.ego_index[driven]] = sim[driven]
    present[gi[driven], state.ego_index[driven]] = alive[driven]
    # every slot sees its scene, itself excluded
    agents = scene.repeat_interleave(p, 0)  # [b, a, 9]
    own = torch.arange(a, device=t.device) == state.ego_index[:, None]
    others = present.repeat_interleave(p, 0) & ~own & state.kept
    near = nearest_agents(agents, others, xy, max(cfg.obs_agents, cfg.collision_candidates))
    moved = replace(state, t=t, ego_xy=xy, ego_yaw=yaw, ego_speed=speed, ego_steer=steer, ego_yaw_rate=rate,
                    agents=agents, others=others, near=near, agent_tau=t[:, None].float().expand_as(others))
    new, reward, term, trunc, info = judge(batch, state, moved, cfg)
    return new, torch.where(alive, reward, 0.0), term & alive, trunc & alive, info


class SelfPlayVecEnv(TensorVecEnv):
    """Stable-baselines3 ``VecEnv`` of self-play: ``num_scenes`` scenes, ``P`` slots each (see the module).

    ``num_envs = num_scenes * P``. A slot's episode is its vehicle's; infos of a finished one carry
    ``terminal_observation``, ``TimeLimit.truncated``, ``route_completion``, ``crash``, ``crash_vehicle``,
    ``crash_object``, ``out_of_road``, ``arrive_dest``, ``episode_reward``, ``episode_length`` and SB3's
    ``episode`` stats (so no ``VecMonitor``: it would count a slot's inactive steps into the next
    episode). ``acted_active`` (bool [num_envs]) marks the slots that were driving when the last
    actions were taken; ``active_agent_steps`` counts the agent steps driven so far.

    Args:
        batch: scenes loaded for self-play (``load_batched(..., self_play=...)``).
        num_scenes: scenes in flight (G).
        cfg: env settings (made self-play's by :func:`self_play_config`).
        device: simulator device.
        seed: first scene drawn (mod the number of scenes).
    """

    def __init__(self, batch: BatchedScenarios, num_scenes: int, cfg: BatchedEnvConfig = BatchedEnvConfig(),
                 device: str | torch.device = "cpu", seed: int = 0):
        self.batch, self.device = batch.to(device), torch.device(device)
        self.cfg = self_play_config(cfg)
        self.rows = scene_rows(self.batch)  # [l, P]
        self.per_scene = int(self.rows.shape[1])
        self.num_scenes = num_scenes
        super().__init__(num_scenes * self.per_scene, gym.spaces.Box(-np.inf, np.inf, (obs_dim(cfg),), np.float32),
                         gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
        self._next = seed
        self.state: SimState | None = None
        self.driven = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.alive = torch.zeros_like(self.driven)
        self.acted_active = np.ones(self.num_envs, bool)
        self.active_agent_steps = 0
        self._init_episodes()

    def _start(self, m: int) -> tuple[SimState, Tensor]:
        """Reset m scenes onto the next scenarios: (state of their m * P slots, driven [m * P])."""
        logs = (self._next + torch.arange(m, device=self.device)) % self.batch.num_scenes
        self._next = (self._next + m) % self.batch.num_scenes
        rows = self.rows[logs].reshape(-1)  # [m * P]
        driven = rows >= 0
        rows = torch.where(driven, rows, self.rows[logs, :1].expand(-1, self.per_scene).reshape(-1))
        return reset(self.batch, rows, self.cfg), driven

    def _observe(self, state: SimState, active: Tensor) -> Tensor:
        return observe(self.batch, state, self.cfg) * active[:, None]

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self._next = int(self._seeds[0]) % self.batch.num_scenes
        self._reset_seeds()
        self.state, self.driven = self._start(self.num_scenes)
        self.alive = self.driven.clone()
        self.acted_active = self.alive.cpu().numpy()
        self._ret.zero_()
        self._len.zero_()
        return self._observe(self.state, self.alive).cpu().numpy()

    def step_wait(self):
        alive = self.alive
        self.acted_active = alive.cpu().numpy()
        self.active_agent_steps += int(self.acted_active.sum())
        state, reward, term, trunc, info = self_play_step(self.batch, self.state, self._actions, self.driven, alive,
                                                          self.per_scene, self.cfg)
        self._ret += reward
        self._len += alive.long()
        ended = term | trunc
        self.alive = alive & ~ended
        obs = observe(self.batch, state, self.cfg)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if bool(ended.any()):
            idx = ended.nonzero().squeeze(-1)
            self._final_infos(infos, idx, info, obs, trunc)
        over = ~self.alive.view(self.num_scenes, self.per_scene).any(-1)  # every vehicle done, or out of time
        obs = obs * self.alive[:, None]
        if bool(over.any()):
            slots = over.repeat_interleave(self.per_scene)
            fresh, driven = self._start(int(over.sum()))
            state = state.replace_where(slots, fresh)
            self.driven[slots] = driven
            self.alive[slots] = driven
            obs[slots] = self._observe(fresh, driven)
        self.state = state
        return obs.cpu().numpy(), reward.cpu().numpy().astype(np.float32), ended.cpu().numpy(), infos
