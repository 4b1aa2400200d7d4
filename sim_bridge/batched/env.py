"""The batched driving env: functional core (reset / step / observe) and an SB3 ``VecEnv``.

Rewards and terminations mirror MetaDrive's ``ScenarioEnv`` with :class:`RewardConfig`: per step
``driving_reward`` x metres of route progress; a crash replaces it by minus the matching penalty
(vehicle, then object / pedestrian / cyclist); arrival (route completion > 0.95 or a route shorter
than 2 m) replaces it by ``success_reward``, leaving the road by ``-out_of_road_penalty``. Out of road
is MetaDrive's relaxed test (|lateral| to the route > ``max_lateral_dist`` or completion < -0.1) or,
with ``edge_out_of_road``, the ego box touching a road edge (MetaDrive calls that crash_sidewalk).
ScenarioEnv's lateral / heading / steering shaping terms are not in RewardConfig and not here.

Other agents replay their logs, or (``traffic="idm"``) logged vehicles follow their logged paths with IDM gap
keeping to the ego: each keeps a fractional log step ``SimState.agent_tau`` that falls behind the log while
the ego blocks it and catches up after (:mod:`sim_bridge.batched.idm`).

Observation (float32 [b, D], D = 6 + 7 * obs_agents + 2 * obs_route_points + 2 * obs_edge_points):
ego (speed / max speed, wheel angle / max, sin and cos of the heading error to the route, lateral
offset / max_lateral_dist, route completion); the ``obs_agents`` nearest present agents in the ego
frame (x, y, vx, vy relative, / obs_range; sin, cos of relative yaw; present flag); the next route
points every ``obs_route_spacing`` m (ego frame, / obs_range); the closest points of the nearest
road-edge segments (ego frame, / obs_range, clipped to [-1, 1]).

Einsum letters: b scene slot, a agent, k nearby segment, r route point, c coordinate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from sim_bridge.batched.dynamics import VehicleConfig, bicycle_step, log_pose
from sim_bridge.batched.events import (box_crosses_segments, boxes_overlap, nearby_segments, nearest_agents,
                                      project_on_route)
from sim_bridge.batched.idm import idm_advance, scene_at
from sim_bridge.batched.state import (AGENT_HUMAN, AGENT_OBJECT, AGENT_VEHICLE, F_COS, F_SIN, F_VX, F_VY,
                                      BatchedScenarios, SimState)
from sim_bridge.envs.factory import IDMConfig, RewardConfig
from sim_bridge.geometry import vectors_to_frame

__all__ = ["BatchedEnvConfig", "IDMConfig", "reset", "ego_state", "step", "ego_motion", "judge", "log_frames",
           "observe", "road_events", "obs_dim", "TensorVecEnv", "BatchedVecEnv",
           "DEFAULT_EGO_SIZE"]

DEFAULT_EGO_SIZE = (4.515, 1.852)  # MetaDrive DefaultVehicle, m
ROUTE_LOOKAHEAD = 32  # route segments searched for the observed route points
_SENTINEL_DIST = 1e5  # m: a nearby segment this far is the padding sentinel (state._FAR)


@dataclass(frozen=True)
class BatchedEnvConfig:
    """Episode, reward and observation settings of the batched env."""

    horizon: int = 500
    """Maximum steps per episode."""
    end_with_log: bool = True
    """Also end (truncate) an episode when the scenario's log ends."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward and termination terms (same meaning as for MetaDrive)."""
    ego_control: Literal["bicycle", "log"] = "bicycle"
    """"bicycle": actions drive the ego; "log": the ego replays its log (actions ignored)."""
    ego_size: Literal["default", "logged"] = "default"
    """Ego box: MetaDrive's DefaultVehicle (4.515 x 1.852 m, what ScenarioEnv spawns) or the logged size."""
    vehicle: VehicleConfig = field(default_factory=VehicleConfig)
    """Ego dynamics limits."""
    max_lateral_dist: float = 4.0
    """m off the route beyond which the ego is out of road (ScenarioEnv's default)."""
    arrive_completion: float = 0.95
    """Route completion that counts as arrival."""
    edge_out_of_road: bool = True
    """Touching a road edge (or leaving the indexed map) also counts as out of road."""
    collision_candidates: int = 16
    """Agents tested for collision: the ones with the nearest centres (exact unless more than this many
    agents are closer to the ego than one it overlaps)."""
    traffic: Literal["log", "idm"] = "log"
    """Other vehicles: "log" replays them exactly; "idm" moves each along its logged path, on its logged
    schedule unless the ego (or a vehicle among the ego's ``collision_candidates`` nearest) stands in its
    lane ahead, when IDM gap keeping slows it (braking at most ``idm.max_brake``); a vehicle behind its log
    catches up at ``idm.max_accel`` and is never ahead of it (MetaDrive's ``reactive_traffic``, in tensors;
    ``EnvConfig.reactive_traffic`` sets it for both backends). Pedestrians, cyclists and objects always replay."""
    idm: IDMConfig = field(default_factory=IDMConfig)
    obs_agents: int = 8
    obs_route_points: int = 10
    obs_route_spacing: float = 2.0
    """m between observed route points (MetaDrive's TrajectoryNavigation uses 2 m)."""
    obs_edge_points: int = 8
    obs_range: float = 50.0
    """m; positions in the observation are divided by this."""

    def __post_init__(self):
        if self.obs_route_points * self.obs_route_spacing > ROUTE_LOOKAHEAD:
            raise ValueError(f"obs_route_points * obs_route_spacing must be <= {ROUTE_LOOKAHEAD} m (route look-ahead)")
        if self.horizon < 1 or self.obs_agents < 1 or self.obs_route_points < 1 or self.obs_edge_points < 1:
            raise ValueError("horizon and obs_* counts must be >= 1")


def obs_dim(cfg: BatchedEnvConfig) -> int:
    return 6 + 7 * cfg.obs_agents + 2 * cfg.obs_route_points + 2 * cfg.obs_edge_points


def _ego_size(batch: BatchedScenarios, scenario: Tensor, cfg: BatchedEnvConfig) -> Tensor:
    """[b, 2] ego (length, width), m."""
    if cfg.ego_size == "logged":
        return batch.ego_size[scenario]
    return batch.ego_size.new_tensor(DEFAULT_EGO_SIZE).expand(scenario.shape[0], 2)


def log_frames(batch: BatchedScenarios, scenario: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Every logged agent of rows ``scenario`` [b] at step t [b]: (agents [b, a, 9] frames channels, present
    bool [b, a]: valid then, and t within the log). One contiguous row read per slot."""
    n, steps, a, ch = batch.frames.shape
    log = batch.scene[scenario]
    row = log * steps + torch.minimum(t, batch.length[log] - 1)  # rows are contiguous: index_select copies
    present = batch.frame_valid.view(n * steps, a).index_select(0, row) & (t < batch.length[log])[:, None]
    return batch.frames.view(n * steps, a, ch).index_select(0, row), present


def _scene(batch: BatchedScenarios, scenario: Tensor, t: Tensor, xy: Tensor, k: int, kept: Tensor
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Logged agents at step t and the k nearest to xy [b, 2] among the ``kept`` ones (bool [b, a]).

    Returns:
        (agents [b, a, 9] frames channels, others bool [b, a] present and not the ego,
        near int64 [b, k'] agent indices by increasing centre distance, k' = min(k, a)).
    """
    agents, present = log_frames(batch, scenario, t)
    is_ego = torch.arange(agents.shape[1], device=t.device) == batch.ego[scenario][:, None]
    others = present & ~is_ego & kept
    return agents, others, nearest_agents(agents, others, xy, k)


def reset(batch: BatchedScenarios, scenario: Tensor, cfg: BatchedEnvConfig, kept: Tensor | None = None) -> SimState:
    """Start scenes: slot i plays ``scenario[i]`` (int64 [b]) from its first step, the ego on its log, with
    the agents ``kept`` (bool [b, a]; default all)."""
    t = torch.zeros_like(scenario)
    xy, yaw, speed = log_pose(batch.frames, batch.scene[scenario], batch.ego[scenario], t)
    return ego_state(batch, scenario, t, xy, yaw, speed, torch.zeros_like(yaw), t, cfg, kept=kept)



def ego_state(batch: BatchedScenarios, scenario: Tensor, t: Tensor, xy: Tensor, yaw: Tensor, speed: Tensor,
              steer: Tensor, route_index: Tensor, cfg: BatchedEnvConfig, yaw_rate: Tensor | None = None,
              kept: Tensor | None = None) -> SimState:
    """The state of scenes whose ego stands at a given pose (another simulator's ego, or a reset).

    Args:
        scenario, t: int64 [b] scenario row and log step (others replay their log at t).
        xy: [b, 2] m in the batch's frame; yaw: [b] rad; speed: [b] m/s; steer: [b] wheel angle, rad.
        route_index: int64 [b] route segment to start the projection search from (0 after a reset).
        yaw_rate: [b] rad/s (default 0: MetaDrive spawns its ego without angular velocity).
        kept: bool [b, a] agents the episode plays (default all).

    Returns:
        A :class:`SimState` with ``done`` False.
    """
    if kept is None:
        kept = torch.ones(scenario.shape[0], batch.frames.shape[2], dtype=torch.bool, device=scenario.device)
    agents, others, near = _scene(batch, scenario, t, xy, max(cfg.obs_agents, cfg.collision_candidates), kept)
    idx, progress, lateral, _ = project_on_route(batch, scenario, xy, route_index)
    return SimState(scenario=scenario, t=t, ego_xy=xy, ego_yaw=yaw, ego_speed=speed, ego_steer=steer,
                    ego_yaw_rate=torch.zeros_like(yaw) if yaw_rate is None else yaw_rate,
                    ego_size=_ego_size(batch, scenario, cfg), ego_index=batch.ego[scenario], agents=agents,
                    others=others, kept=kept, near=near, agent_tau=t[:, None].float().expand_as(others).clone(),
                    agent_speed=agents[..., F_VX:F_VY + 1].norm(dim=-1), route_index=idx, progress=progress,
                    lateral=lateral, done=torch.zeros_like(scenario, dtype=torch.bool))


def road_events(batch: BatchedScenarios, scenario: Tensor, ego: Tensor, route_index: Tensor, cfg: BatchedEnvConfig
                ) -> dict[str, Tensor]:
    """Where the ego box ego [b, 5] stands against the map and its route (previous segment route_index [b]).

    Returns:
        dict of [b] tensors: route_index, progress (m), lateral (m), route_completion, on_edge (the box
        touches a road edge or is off the indexed map), off_route (MetaDrive's relaxed out of road),
        out_of_road (off_route, or on_edge with ``edge_out_of_road``), arrive_dest.
    """
    xy = ego[:, :2]
    segs, on_map = nearby_segments(batch, scenario, xy)
    on_edge = box_crosses_segments(ego, segs).any(-1) | ~on_map
    idx, progress, lateral, _ = project_on_route(batch, scenario, xy, route_index)
    completion = progress / batch.route_length[scenario].clamp_min(1e-6)
    off_route = (lateral.abs() > cfg.max_lateral_dist) | (completion < -0.1)
    out_of_road = off_route | (on_edge & cfg.edge_out_of_road)
    arrive = (completion > cfg.arrive_completion) | (batch.route_length[scenario] < 2.0)
    return dict(route_index=idx, progress=progress, lateral=lateral, route_completion=completion, on_edge=on_edge,
                off_route=off_route, out_of_road=out_of_road, arrive_dest=arrive)


def step(batch: BatchedScenarios, state: SimState, action: Tensor, cfg: BatchedEnvConfig
         ) -> tuple[SimState, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Advance every slot one step (finished slots too: reset them before reading their results).

    Args:
        action: [b, 2] (steering, throttle/brake) in [-1, 1].

    Returns:
        (state, reward [b], terminated bool [b], truncated bool [b], info): info holds [b] tensors
        crash_vehicle, crash_object (objects, pedestrians, cyclists), crash_human (pedestrians,
        cyclists), off_route, on_edge, out_of_road, arrive_dest, route_completion, lateral.
    """
    t = state.t + 1
    xy, yaw, speed, rate, steer = ego_motion(batch, state, action, cfg)
    k_near = max(cfg.obs_agents, cfg.collision_candidates)
    if cfg.traffic == "idm":
        ego = torch.cat([xy, yaw[:, None], state.ego_size], -1)
        tau, a_speed, exact = idm_advance(batch, state, ego, speed, cfg.idm, cfg.collision_candidates)
        agents, others, near = scene_at(batch, state.scenario, tau, t, a_speed, exact, xy, k_near, state.kept)
    else:
        agents, others, near = _scene(batch, state.scenario, t, xy, k_near, state.kept)
        tau, a_speed = t[:, None].float().expand_as(others), state.agent_speed
    moved = replace(state, t=t, ego_xy=xy, ego_yaw=yaw, ego_speed=speed, ego_steer=steer, ego_yaw_rate=rate,
                    agents=agents, others=others, near=near, agent_tau=tau, agent_speed=a_speed)
    return judge(batch, state, moved, cfg)


def ego_motion(batch: BatchedScenarios, state: SimState, action: Tensor, cfg: BatchedEnvConfig
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The controlled vehicle's next (xy [b, 2], yaw, speed, yaw rate, wheel angle [b]): the bicycle driven by
    ``action`` [b, 2], or its log (``ego_control="log"``)."""
    if cfg.ego_control == "log":
        log, t = batch.scene[state.scenario], state.t + 1
        xy, yaw, speed = log_pose(batch.frames, log, state.ego_index, torch.minimum(t, batch.length[log] - 1))
        return xy, yaw, speed, torch.zeros_like(yaw), torch.zeros_like(yaw)
    return bicycle_step(state.ego_xy, state.ego_yaw, state.ego_speed, state.ego_yaw_rate, action, cfg.vehicle)


def judge(batch: BatchedScenarios, before: SimState, moved: SimState, cfg: BatchedEnvConfig
          ) -> tuple[SimState, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Events, reward and termination of a step from ``before`` to ``moved`` (the controlled vehicle and the
    scene at the new step; its route fields are still ``before``'s). Returns what :func:`step` returns."""
    sc, t, agents, others, near = moved.scenario, moved.t, moved.agents, moved.others, moved.near
    log = batch.scene[sc]
    ego = moved.ego_box
    cand = near[:, :cfg.collision_candidates]
    cand_f = agents.gather(1, cand[..., None].expand(-1, -1, agents.shape[-1]))  # [b, c, 9]
    hit = boxes_overlap(ego, cand_f[..., :5], cand_f[..., F_COS:F_SIN + 1]) & others.gather(1, cand)
    kind = batch.agent_type[log].gather(1, cand)
    crash_vehicle = (hit & (kind == AGENT_VEHICLE)).any(-1)
    crash_human = (hit & (kind == AGENT_HUMAN)).any(-1)
    crash_object = crash_human | (hit & (kind == AGENT_OBJECT)).any(-1)
    road = road_events(batch, sc, ego, before.route_index, cfg)
    idx, progress, lateral = road["route_index"], road["progress"], road["lateral"]
    on_edge, off_route, out_of_road, arrive = (road[k] for k in ("on_edge", "off_route", "out_of_road", "arrive_dest"))
    completion = road["route_completion"]

    r = cfg.reward
    reward = r.driving_reward * (progress - before.progress)
    reward = torch.where(crash_vehicle, -r.crash_vehicle_penalty, reward)
    reward = torch.where(crash_object, -r.crash_object_penalty, reward)
    reward = torch.where(arrive, r.success_reward, torch.where(out_of_road, -r.out_of_road_penalty, reward))
    terminated = (arrive | (out_of_road & r.out_of_road_done) | (crash_vehicle & r.crash_vehicle_done)
                  | (crash_object & r.crash_object_done))
    truncated = ~terminated & ((t >= cfg.horizon) | (cfg.end_with_log & (t >= batch.length[log] - 1)))
    new = replace(moved, route_index=idx, progress=progress, lateral=lateral, done=terminated | truncated)
    info = dict(crash_vehicle=crash_vehicle, crash_object=crash_object, crash_human=crash_human, off_route=off_route,
                on_edge=on_edge, out_of_road=out_of_road, arrive_dest=arrive, route_completion=completion,
                lateral=lateral)
    return new, reward, terminated, truncated, info


def _to_ego(v: Tensor, yaw: Tensor) -> Tensor:
    """Rotate world vectors v [b, ..., 2] into the frames of yaw [b]."""
    return vectors_to_frame(v, yaw.view((-1,) + (1,) * (v.dim() - 2)))


def observe(batch: BatchedScenarios, state: SimState, cfg: BatchedEnvConfig) -> Tensor:
    """The fixed-size observation of every slot: float32 [b, obs_dim(cfg)] (see the module docstring)."""
    sc, xy, yaw, rng = state.scenario, state.ego_xy, state.ego_yaw, cfg.obs_range
    b = sc.shape[0]
    length = batch.route_length[sc].clamp_min(1e-6)
    head = torch.atan2(*(batch.route[sc, state.route_index + 1] - batch.route[sc, state.route_index]).unbind(-1)[::-1])
    err = head - yaw
    max_wheel = math.radians(cfg.vehicle.max_steering_deg)
    ego = torch.stack([state.ego_speed / cfg.vehicle.max_speed, state.ego_steer / max_wheel,
                       torch.sin(err), torch.cos(err), state.lateral / cfg.max_lateral_dist,
                       state.progress / length], -1)
    # nearest agents
    k = min(cfg.obs_agents, state.near.shape[1])
    near = state.near[:, :k]  # [b, k]
    other = state.agents.gather(1, near[..., None].expand(-1, -1, 9))  # [b, k, 9]
    rel = _to_ego(other[..., 0:2] - xy[:, None], yaw)
    c, s_ = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    ego_v = state.ego_speed[:, None] * torch.cat([c, s_], -1)
    rv = _to_ego(other[..., F_VX:F_VY + 1] - ego_v[:, None], yaw) / rng
    oc, os_ = other[..., F_COS], other[..., F_SIN]
    present = state.others.gather(1, near)
    agents = torch.cat([rel / rng, rv, (os_ * c - oc * s_)[..., None],
                        (oc * c + os_ * s_)[..., None], present[..., None].float()], -1) * present[..., None]
    agents = torch.cat([agents, agents.new_zeros(b, cfg.obs_agents - k, 7)], 1).flatten(1)
    # route points ahead: within ROUTE_LOOKAHEAD segments (>= 1 m each) of the current one
    s = (state.progress[:, None] + cfg.obs_route_spacing * torch.arange(1, cfg.obs_route_points + 1, device=xy.device))
    s = torch.minimum(s.clamp_min(0.0), length[:, None])  # [b, r]
    last = batch.route_count[sc][:, None] - 1
    w = torch.minimum(state.route_index[:, None] + torch.arange(ROUTE_LOOKAHEAD + 1, device=xy.device), last)
    sw, pw = batch.route_s[sc[:, None], w], batch.route[sc[:, None], w]  # [b, w], [b, w, 2]
    j = (torch.searchsorted(sw, s, right=True) - 1).clamp(0, ROUTE_LOOKAHEAD - 1)  # [b, r]
    p0, p1 = pw.gather(1, j[..., None].expand(-1, -1, 2)), pw.gather(1, (j + 1)[..., None].expand(-1, -1, 2))
    s0, s1 = sw.gather(1, j), sw.gather(1, j + 1)
    f = ((s - s0) / (s1 - s0).clamp_min(1e-6)).clamp(0.0, 1.0)[..., None]
    route = _to_ego(p0 + f * (p1 - p0) - xy[:, None], yaw) / rng
    # closest points of the nearest road-edge segments
    segs, _ = nearby_segments(batch, sc, xy)
    a, d = segs[:, :, 0], segs[:, :, 1] - segs[:, :, 0]
    u = (((xy[:, None] - a) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    foot = a + u[..., None] * d - xy[:, None]  # [b, k, 2]
    m = min(cfg.obs_edge_points, foot.shape[1])
    dist, nearest = foot.norm(dim=-1).topk(m, dim=-1, largest=False)
    edges = _to_ego(foot.gather(1, nearest[..., None].expand(-1, -1, 2)), yaw) / rng
    # padding (the far sentinel, or fewer cell slots than points) reads (1, 1) whatever the batch's padding
    edges = torch.where((dist > _SENTINEL_DIST)[..., None], 1.0, edges.clamp(-1.0, 1.0))
    edges = torch.cat([edges, edges.new_ones(b, cfg.obs_edge_points - m, 2)], 1)
    return torch.cat([ego, agents, route.flatten(1), edges.flatten(1)], -1).float()


class TensorVecEnv(VecEnv):
    """What the batched simulator's VecEnvs share: one in-process batch (no per-index sub-envs), actions
    as a tensor, per-slot episode return and length, and the infos of finished episodes."""

    render_mode = None  # headless; SB3 asks every VecEnv

    def _init_episodes(self) -> None:
        self._actions = torch.zeros(self.num_envs, 2, device=self.device)
        self._ret = torch.zeros(self.num_envs, device=self.device)
        self._len = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._t0 = time.time()

    def _final_infos(self, infos: list[dict], idx: Tensor, info: dict[str, Tensor], obs: Tensor, trunc: Tensor) -> None:
        """Fill ``infos[i]`` for the slots idx [m] whose episode ended at this step (and zero their counters):
        terminal observation, truncation, outcome flags, return and length (also as SB3's ``episode``)."""
        final = {k: v[idx].cpu().numpy() for k, v in info.items()}
        term_obs, ret, length = obs[idx].cpu().numpy(), self._ret[idx].cpu().numpy(), self._len[idx].cpu().numpy()
        truncs = trunc[idx].cpu().numpy()
        now = round(time.time() - self._t0, 6)
        for j, i in enumerate(idx.tolist()):
            crash_v, crash_o = bool(final["crash_vehicle"][j]), bool(final["crash_object"][j])
            infos[i] = {"terminal_observation": term_obs[j], "TimeLimit.truncated": bool(truncs[j]),
                        "route_completion": float(final["route_completion"][j]), "crash": crash_v or crash_o,
                        "crash_vehicle": crash_v, "crash_object": crash_o,
                        "out_of_road": bool(final["out_of_road"][j]), "arrive_dest": bool(final["arrive_dest"][j]),
                        "episode_reward": float(ret[j]), "episode_length": int(length[j]),
                        "episode": {"r": float(ret[j]), "l": int(length[j]), "t": now}}
        self._ret[idx] = 0.0
        self._len[idx] = 0

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.device).reshape(-1, 2)

    def close(self) -> None:
        self.state = None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)


class BatchedVecEnv(TensorVecEnv):
    """Stable-baselines3 ``VecEnv`` over :func:`step`: ``num_envs`` scenes stepping as one batch.

    Scenes are assigned round-robin over the loaded scenarios; a finished scene is reset at once onto
    the next scenario. A finished step reports the terminal observation in
    ``info["terminal_observation"]`` and ``TimeLimit.truncated``, plus ``route_completion``,
    ``crash``, ``crash_vehicle``, ``crash_object``, ``out_of_road``, ``arrive_dest`` and the
    episode's return and length (``episode_reward``, ``episode_length``, and SB3's ``episode``).

    Args:
        batch: the scenarios (moved to ``device``).
        num_envs: scene slots b.
        cfg: env settings.
        device: "cpu" or "cuda" (or a torch.device).
        seed: first scenario index drawn (mod the number of scenarios).
    """

    def __init__(self, batch: BatchedScenarios, num_envs: int, cfg: BatchedEnvConfig = BatchedEnvConfig(),
                 device: str | torch.device = "cpu", seed: int = 0):
        d = obs_dim(cfg)
        super().__init__(num_envs, gym.spaces.Box(-np.inf, np.inf, (d,), np.float32),
                         gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
        self.batch, self.cfg, self.device = batch.to(device), cfg, torch.device(device)
        self._next = seed
        self.state: SimState | None = None
        self._init_episodes()
        self.traffic_fraction = 1.0
        """Share of the logged agents each new episode keeps (a traffic curriculum raises it to 1 with
        ``set_attr``); each agent is kept with this probability, independently."""
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def _kept(self, m: int) -> Tensor | None:
        if self.traffic_fraction >= 1.0:
            return None
        a = self.batch.frames.shape[2]
        return torch.rand(m, a, generator=self._gen, device=self.device) < self.traffic_fraction

    def _draw(self, m: int) -> Tensor:
        idx = (self._next + torch.arange(m, device=self.device)) % self.batch.num_scenarios
        self._next = (self._next + m) % self.batch.num_scenarios
        return idx

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self._next = int(self._seeds[0]) % self.batch.num_scenarios
            self._gen.manual_seed(int(self._seeds[0]))
        self._reset_seeds()
        self.state = reset(self.batch, self._draw(self.num_envs), self.cfg, self._kept(self.num_envs))
        self._ret.zero_()
        self._len.zero_()
        return observe(self.batch, self.state, self.cfg).cpu().numpy()

    def step_wait(self):
        state, reward, term, trunc, info = step(self.batch, self.state, self._actions, self.cfg)
        self._ret += reward
        self._len += 1
        obs = observe(self.batch, state, self.cfg)
        done = term | trunc
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if bool(done.any()):
            idx = done.nonzero().squeeze(-1)
            fresh = reset(self.batch, self._draw(int(idx.numel())), self.cfg, self._kept(int(idx.numel())))
            self._final_infos(infos, idx, info, obs, trunc)
            state = state.replace_where(done, fresh)
            obs[idx] = observe(self.batch, fresh, self.cfg)
        self.state = state
        return obs.cpu().numpy(), reward.cpu().numpy().astype(np.float32), done.cpu().numpy(), infos

