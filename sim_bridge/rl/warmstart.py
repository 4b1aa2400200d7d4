"""Warm start by behaviour cloning from the logged ego trajectories of the training scenarios.

Every real scenario already holds a demonstration: its ego's log. The batched simulator replays each log
(``ego_control="log"``) and observes it exactly as the policy will see it ("scene" observation); the
action that would have produced each step is recovered by inverting the vehicle model of
:mod:`sim_bridge.batched.dynamics`:

- steering: the wheel angle whose steady path curvature equals the logged path's curvature one step
  ahead (the car's yaw rate lags its wheels by ~0.2 s, so a driver steers ahead of the curve), through
  the understeer form ``tan(delta) = curvature * (wheelbase + understeer * v^2)``; the exact one-step
  inversion of the lagged yaw rate amplifies the logs' heading noise five-fold, the look-ahead does not;
- pedal: the logged acceleration plus the steering drag, through the throttle line
  (``p * max_accel - rolling_decel * (1 - p)``) or the brake (``p * max_brake``).

The policy (an SB3 ``ActorCriticPolicy``) is then fitted by maximum likelihood on (observation, action)
pairs, its value head on the discounted returns the replay earned under the run's reward, and its
action spread reset to ``std`` so that RL still explores. Cost: one batched replay over all scenarios
(O(n * T) rows, vectorised over scenarios) and ``steps`` minibatch steps.

Only the "scene" observation can be cloned this way (the batched simulator computes it); MetaDrive's
IDM ego could add demonstrations on procedural maps, but its logs are already the procedural
scenarios' ego tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from sim_bridge.batched.dynamics import VehicleConfig, log_pose
from sim_bridge.batched.env import BatchedEnvConfig, observe, reset, step
from sim_bridge.batched.state import BatchedScenarios
from sim_bridge.geometry import wrap_angle

__all__ = ["WarmStartConfig", "Demonstrations", "log_actions", "demonstrations", "behaviour_clone"]


@dataclass(frozen=True)
class WarmStartConfig:
    """Behaviour-cloning warm start (``PPOTrainConfig.warm_start``)."""

    demonstrations: Literal["none", "log"] = "none"
    """"log": clone the training scenarios' logged ego trajectories before RL starts (needs
    env.observation=scene); "none": RL from a random policy."""
    steps: int = 2000
    """Gradient steps (minibatches drawn in shuffled passes over the rows: a few hundred logged steps per
    scenario make small datasets, so the budget is counted in steps, not passes)."""
    learning_rate: float = 1e-3
    batch_size: int = 256
    value_coef: float = 0.5
    """Weight of the value head's regression on the demonstrations' discounted returns."""
    std: float = 0.4
    """Action standard deviation the policy starts RL with (the clone's own spread is far smaller and would
    leave PPO nothing to explore)."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.std <= 0:
            raise ValueError("warm_start.steps and batch_size must be >= 1 and std > 0")


@dataclass
class Demonstrations:
    """Rows of logged driving: obs [N, d] float32, actions [N, 2] in [-1, 1], returns [N] (discounted)."""

    obs: Tensor
    actions: Tensor
    returns: Tensor
    completion: float
    """Mean route completion the replayed logs reached (the demonstrations' quality)."""

    def __len__(self) -> int:
        return int(self.obs.shape[0])


def log_actions(batch: BatchedScenarios, vehicle: VehicleConfig = VehicleConfig()) -> tuple[Tensor, Tensor]:
    """The (steering, pedal) actions that drive the bicycle along each scenario's logged ego track.

    Returns:
        (actions [n, T, 2] in [-1, 1], wheel angle [n, T] rad); step t's action moves the ego from its
        logged pose at t towards t + 1 (the last step repeats the one before).
    """
    n, steps = batch.frames.shape[:2]
    sc = torch.arange(n, device=batch.frames.device)[:, None].expand(n, steps).reshape(-1)
    t = torch.arange(steps, device=sc.device).expand(n, steps).reshape(-1)
    last = (batch.length - 1).clamp_min(0)[sc]
    ego = batch.ego[sc]

    def pose(k: Tensor):
        return log_pose(batch.frames, sc, ego, torch.minimum(k, last))

    xy0, yaw0, v0 = pose(t)
    xy1, yaw1, v1 = pose(t + 1)
    xy3, yaw3, _ = pose(t + 3)
    # curvature of the logged path one step ahead (yaw change over the arc from t+1 to t+3)
    arc = (xy3 - xy1).norm(dim=-1)
    curv = torch.where(arc > 0.3, wrap_angle(yaw3 - yaw1) / arc.clamp_min(1e-6), torch.zeros_like(arc))
    v_mid = 0.5 * (v0 + v1)
    wheel = torch.atan(curv * (vehicle.wheelbase + vehicle.understeer * v_mid * v_mid))
    max_wheel = math.radians(vehicle.max_steering_deg)
    wheel = wheel.clamp(-max_wheel, max_wheel)
    need = (v1 - v0) / vehicle.dt + vehicle.steer_drag * wheel.abs()
    throttle = (need + vehicle.rolling_decel) / (vehicle.max_accel + vehicle.rolling_decel)
    pedal = torch.where(need >= -vehicle.rolling_decel, throttle, need / vehicle.max_brake)
    actions = torch.stack([wheel / max_wheel, pedal], -1).clamp(-1.0, 1.0)
    return actions.view(n, steps, 2), wheel.view(n, steps)


@torch.no_grad()
def demonstrations(batch: BatchedScenarios, cfg: BatchedEnvConfig, gamma: float = 0.99) -> Demonstrations:
    """Replay every scenario's ego log once in the batched simulator, observing as the policy will.

    Args:
        batch: the training scenarios (all replayed together, one slot each).
        cfg: the run's env settings (observation layout, reward).
        gamma: discount of the returns the value head is fitted to.
    """
    n = batch.num_scenarios
    actions, wheel = log_actions(batch, cfg.vehicle)
    log_cfg = replace(cfg, ego_control="log", end_with_log=True)
    scenario = torch.arange(n, device=batch.frames.device)
    state = reset(batch, scenario, log_cfg)
    obs, acts, rewards, alive = [], [], [], []
    running = torch.ones(n, dtype=torch.bool, device=scenario.device)
    completion = torch.zeros(n, device=scenario.device)
    rate = torch.zeros(n, device=scenario.device)
    steps = int(batch.length.max())
    for t in range(steps):
        prev = wheel[:, t - 1] if t else torch.zeros_like(rate)
        seen = replace(state, ego_steer=prev, ego_yaw_rate=rate)
        a = actions[:, t]
        nxt, reward, term, trunc, info = step(batch, seen, a, log_cfg)
        obs.append(observe(batch, seen, log_cfg))
        acts.append(a)
        rewards.append(reward)
        alive.append(running.clone())
        completion = torch.where(running, info["route_completion"], completion)
        rate = wrap_angle(nxt.ego_yaw - state.ego_yaw) / cfg.vehicle.dt
        running = running & ~(term | trunc)
        state = nxt
        if not running.any():
            break
    obs_t, act_t, rew_t, alive_t = (torch.stack(x, 1) for x in (obs, acts, rewards, alive))  # [n, T', ...]
    ret = torch.zeros_like(rew_t)
    acc = torch.zeros(n, device=scenario.device)
    for t in range(rew_t.shape[1] - 1, -1, -1):
        acc = torch.where(alive_t[:, t], rew_t[:, t] + gamma * acc, torch.zeros_like(acc))
        ret[:, t] = acc
    keep = alive_t.reshape(-1)
    return Demonstrations(obs=obs_t.reshape(-1, obs_t.shape[-1])[keep].float(),
                          actions=act_t.reshape(-1, 2)[keep].float(), returns=ret.reshape(-1)[keep].float(),
                          completion=float(completion.clamp(0, 1).mean()))


def behaviour_clone(policy, demos: Demonstrations, cfg: WarmStartConfig, seed: int = 0) -> dict:
    """Fit an SB3 ``ActorCriticPolicy`` to the demonstrations in place; returns the mean negative
    log-likelihood and value loss over the first and the last 20 steps."""
    device = policy.device
    obs, act, ret = demos.obs.to(device), demos.actions.to(device), demos.returns.to(device)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(demos), generator=gen), 0
    history = []
    policy.train()
    for _ in range(cfg.steps):
        if pos >= len(order):
            order, pos = torch.randperm(len(demos), generator=gen), 0
        idx = order[pos:pos + cfg.batch_size].to(device)
        pos += cfg.batch_size
        values, log_prob, _ = policy.evaluate_actions(obs[idx], act[idx])
        nll = -log_prob.mean()
        v_loss = torch.nn.functional.mse_loss(values.squeeze(-1), ret[idx])
        loss = nll + cfg.value_coef * v_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((float(nll.detach()), float(v_loss.detach())))
    first, last = np.mean(history[:20], 0), np.mean(history[-20:], 0)
    with torch.no_grad():
        policy.log_std.fill_(float(np.log(cfg.std)))
    return {"rows": len(demos), "demo_route_completion": round(demos.completion, 4), "steps": cfg.steps,
            "nll_first": round(float(first[0]), 4), "nll_last": round(float(last[0]), 4),
            "value_loss_first": round(float(first[1]), 4), "value_loss_last": round(float(last[1]), 4)}
