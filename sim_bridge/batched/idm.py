"""IDM traffic for the batched simulator: logged vehicles that yield to the ego (``BatchedEnvConfig.traffic``).

Each logged vehicle keeps a fractional log step (``SimState.agent_tau``) and moves along its own logged path
(``BatchedScenarios.path_s``): on its schedule it is the log exactly; with the ego (or a vehicle among the
ego's nearest) in its corridor ahead, IDM's interaction term (Treiber et al. 2000) slows it, braking at most
``IDMConfig.max_brake``; once free it catches up at ``max_accel``, never ahead of its log. Pedestrians, cyclists
and objects replay. MetaDrive's ``reactive_traffic`` idea, in tensors.

Letters: b scene slot, a agent, k nearby agent, W log steps searched.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor

from sim_bridge.batched.events import nearest_agents
from sim_bridge.batched.state import AGENT_VEHICLE, F_COS, F_SIN, F_VX, F_VY, BatchedScenarios, SimState
from sim_bridge.envs.factory import IDMConfig

__all__ = ["idm_advance", "scene_at", "IDM_WINDOW"]

IDM_WINDOW = 8  # log steps searched ahead of an IDM vehicle's current one per step


def scene_at(batch: BatchedScenarios, scenario: Tensor, tau: Tensor, t: Tensor, speed: Tensor, exact: Tensor,
              xy: Tensor, k: int, kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``env._scene`` with each agent at its own fractional log step tau [b, a] (IDM traffic): poses interpolated
    between the two log steps around tau; velocities logged where ``exact`` [b, a] (on schedule), else
    speed [b, a] along the heading. O(b a)."""
    n, steps, a, ch = batch.frames.shape
    i0 = tau.floor().long().clamp(0, steps - 1)
    i1 = (i0 + 1).clamp(max=steps - 1)
    f = (tau - i0).clamp(0.0, 1.0)[..., None]
    log = batch.scene[scenario]
    sc, ar = log[:, None], torch.arange(a, device=t.device)[None]
    f0, f1 = batch.frames[sc, i0, ar], batch.frames[sc, i1, ar]                     # [b, a, 9]
    v0, v1 = batch.frame_valid[sc, i0, ar], batch.frame_valid[sc, i1, ar]
    xy_a = f0[..., 0:2] + f * (f1[..., 0:2] - f0[..., 0:2]) * v1[..., None]
    cs = f0[..., F_COS:F_SIN + 1] + f * (f1[..., F_COS:F_SIN + 1] - f0[..., F_COS:F_SIN + 1]) * v1[..., None]
    cs = cs / cs.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    vel = torch.where(exact[..., None], f0[..., F_VX:F_VY + 1], speed[..., None] * cs)
    agents = torch.cat([xy_a, torch.atan2(cs[..., 1], cs[..., 0])[..., None], f0[..., 3:5], cs, vel], -1)
    is_ego = torch.arange(a, device=t.device) == batch.ego[scenario][:, None]
    others = v0 & (t < batch.length[log])[:, None] & ~is_ego & kept
    return agents, others, nearest_agents(agents, others, xy, k)


def idm_advance(batch: BatchedScenarios, state: SimState, ego: Tensor, ego_speed: Tensor, p: IDMConfig,
                candidates: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """One step of IDM traffic: every logged vehicle advances along its logged path towards its schedule,
    braking for the ego box ego [b, 5] (moving at ego_speed [b]) or a vehicle among the ego's ``candidates``
    nearest in its corridor. Returns (tau [b, a], speed [b, a], exact bool [b, a]: on schedule). O(b a W + b k^2)."""
    dt = 0.1
    sc, t1 = batch.scene[state.scenario], state.t + 1  # sc: the logged scene (the tensors read here are per scene)
    n, steps, a = batch.path_s.shape
    last = (batch.length[sc] - 1).clamp(min=0)
    tgt = torch.minimum(t1, last)[:, None]                                               # [b, 1]
    ar, scb = torch.arange(a, device=sc.device)[None], sc[:, None]
    tau, v = state.agent_tau, state.agent_speed
    i0 = tau.floor().long().clamp(0, steps - 1)
    i1 = (i0 + 1).clamp(max=steps - 1)
    s0, s1 = batch.path_s[scb, i0, ar], batch.path_s[scb, i1, ar]
    s_tau = s0 + (tau - i0).clamp(0.0, 1.0) * (s1 - s0)
    s_sched = batch.path_s[scb, tgt.expand(-1, a), ar]
    ahead = (s_sched - s_tau).clamp_min(0.0)
    late = tau < state.t[:, None].float() - 1e-4
    v_free = torch.where(late, torch.minimum(ahead / dt, v + p.max_accel * dt), ahead / dt)
    # leaders: the ego for everybody, and the vehicles among the ego's nearest for each other
    ag = state.agents
    cos, sin, half_w, half_l = ag[..., F_COS], ag[..., F_SIN], ag[..., 4] / 2, ag[..., 3] / 2
    rel = ego[:, None, :2] - ag[..., :2]
    lon, lat = rel[..., 0] * cos + rel[..., 1] * sin, -rel[..., 0] * sin + rel[..., 1] * cos
    inside = (lon > 0) & (lon < p.lookahead_m) & (lat.abs() < half_w + ego[:, None, 4] / 2 + p.corridor_margin_m)
    gap = torch.where(inside, lon - half_l - ego[:, None, 3] / 2, torch.inf)
    ego_cos = torch.cos(ego[:, 2])[:, None] * cos + torch.sin(ego[:, 2])[:, None] * sin
    lead_v = torch.where(inside, ego_speed[:, None] * ego_cos, 0.0)
    near = state.near[:, :candidates]                                     # [b, k]
    pk = ag.gather(1, near[..., None].expand(-1, -1, ag.shape[-1]))                       # [b, k, 9]
    present = state.others.gather(1, near)
    rel = pk[:, None, :, :2] - pk[:, :, None, :2]                                         # [b, i, j, 2]: j - i
    ci, si = pk[..., F_COS][..., None], pk[..., F_SIN][..., None]
    lon = rel[..., 0] * ci + rel[..., 1] * si
    lat = -rel[..., 0] * si + rel[..., 1] * ci
    kk = near.shape[1]
    eye = torch.eye(kk, dtype=torch.bool, device=sc.device)[None]
    width = (pk[..., 4][:, :, None] + pk[..., 4][:, None, :]) / 2
    ok = (lon > 0) & (lon < p.lookahead_m) & ~eye & present[:, None, :] & (lat.abs() < width + p.corridor_margin_m)
    g = torch.where(ok, lon - (pk[..., 3][:, :, None] + pk[..., 3][:, None, :]) / 2, torch.inf)
    g_min, j = g.min(-1)                                                                  # [b, k]
    sp = v.gather(1, near)
    dcos = (pk[..., F_COS][:, :, None] * pk[..., F_COS][:, None, :] + pk[..., F_SIN][:, :, None]
            * pk[..., F_SIN][:, None, :]).gather(-1, j[..., None]).squeeze(-1)
    lv = sp.gather(1, j) * dcos
    g_near, lv_near = gap.gather(1, near), lead_v.gather(1, near)
    use = g_min < g_near
    gap = gap.scatter(1, near, torch.where(use, g_min, g_near))
    lead_v = lead_v.scatter(1, near, torch.where(use, lv, lv_near))
    s_star = p.min_gap_m + (v * p.headway_s + v * (v - lead_v) / (2 * math.sqrt(p.max_accel * p.comfort_brake))
                            ).clamp_min(0.0)
    a_int = p.max_accel * (1 - (s_star / gap.clamp_min(0.1)) ** 2)
    v_brake = torch.where(torch.isfinite(gap) & (a_int < 0), (v + a_int.clamp_min(-p.max_brake) * dt).clamp_min(0.0),
                          torch.inf)
    vehicle = batch.agent_type[sc] == AGENT_VEHICLE
    v_new = torch.where(vehicle, torch.minimum(v_free, v_brake), ahead / dt)
    s_new = s_tau + v_new * dt
    # the log step of s_new: the last step of a window ahead whose arc length is <= s_new, never past the schedule
    w = torch.minimum(i0[..., None] + torch.arange(IDM_WINDOW, device=sc.device), tgt[..., None])  # [b, a, W]
    sw = batch.path_s[sc[:, None, None], w, ar[..., None]]
    k = ((sw <= s_new[..., None] + 1e-5).sum(-1) - 1).clamp(min=0)
    jj = w.gather(-1, k[..., None]).squeeze(-1)
    sj = sw.gather(-1, k[..., None]).squeeze(-1)
    sn = batch.path_s[scb, (jj + 1).clamp(max=steps - 1), ar]
    frac = ((s_new - sj) / (sn - sj).clamp_min(1e-6)).clamp(0.0, 1.0) * (sn > sj + 1e-6)
    tau_new = torch.minimum(jj.float() + frac, tgt.float())
    exact = ~vehicle | (s_new >= s_sched - 1e-3)
    tau_new = torch.where(exact, tgt.float().expand(-1, a), tau_new)
    return tau_new, torch.where(exact, ahead / dt, v_new), exact
