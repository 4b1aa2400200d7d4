"""Multi-modal trajectories as bounded controls (TrafficGen's actuator, kinematically constrained).

Each agent token is decoded into ``modes`` control sequences (acceleration = tanh * max_accel, yaw
rate = tanh * max_yaw_rate) that a unicycle integrates from the agent's current pose and speed. The
output therefore respects the bounds exactly, and each step's displacement points along its heading.
TrafficGen regresses 89 positions at once; we predict 2 s chunks and re-predict for longer horizons.

Letters: b batch, a agent, k mode, h horizon step, u control (accel, yaw rate), t rollout step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sim_bridge.geometry import wrap_angle
from traffic.encoding import HIST_STEPS, SceneBatch
from traffic.model.encoder import TINY, ModelConfig, SceneEncoder, mlp

__all__ = ["TrajectoryModel", "integrate_unicycle", "TURN_SPEED"]

TURN_SPEED = 1.0  # m/s: below it the yaw rate scales down with the speed


def integrate_unicycle(start: Tensor, accel: Tensor, yaw_rate: Tensor, dt: float) -> Tensor:
    """Integrate controls from a start state.

    The speed is kept >= 0 (v <- max(0, v + a dt), so |dv/dt| <= |a|); the position moves along the
    new heading with the new speed, so atan2 of each step's displacement is that step's heading. A car does
    not turn on the spot: below ``TURN_SPEED`` the yaw rate scales down with the speed (heading change =
    yaw_rate x min(1, v / TURN_SPEED) x dt), so a standing vehicle keeps its heading.

    Args:
        start: float [..., 4] (x, y, heading, speed >= 0).
        accel, yaw_rate: float [..., h] controls (m/s^2, rad/s).
        dt: step, s.
    Returns:
        float [..., h, 4] (x, y, heading wrapped to [-pi, pi), speed) after each step.
    """
    v, speeds = start[..., 3], []
    for i in range(accel.shape[-1]):
        v = (v + accel[..., i] * dt).clamp(min=0.0)
        speeds.append(v)
    speed = torch.stack(speeds, -1)  # [..., h]
    heading = start[..., 2:3] + torch.cumsum(yaw_rate * (speed / TURN_SPEED).clamp(max=1.0) * dt, -1)
    x = start[..., 0:1] + torch.cumsum(speed * heading.cos() * dt, -1)
    y = start[..., 1:2] + torch.cumsum(speed * heading.sin() * dt, -1)
    return torch.stack([x, y, wrap_angle(heading), speed], -1)


def _velocity(s: Tensor) -> Tensor:
    """[..., 4] (x, y, heading, speed) -> [..., 2] velocity."""
    return s[..., 3:4] * torch.stack([s[..., 2].cos(), s[..., 2].sin()], -1)


class TrajectoryModel(nn.Module):
    """Scene encoder over all agents + a control head and a mode-score head per agent."""

    def __init__(self, cfg: ModelConfig = TINY):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.encoder = SceneEncoder(cfg, history=True)
        self.control_head = mlp(d, d, cfg.modes * cfg.horizon * 2)
        self.score_head = mlp(d, d, cfg.modes)

    def predict(self, batch: SceneBatch, agent_state: Tensor | None = None,
                agent_hist: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Full predicted states.

        Args:
            batch: collated scenes; agent_state: float [b, a, 7] overriding batch["agent_state"], agent_hist:
                float [b, a, 2] overriding batch["agent_hist"] (the velocity change over the last second; zeros
                where the batch has none).
        Returns:
            states [b, a, k, h, 4] (x, y, heading, speed) and mode logits [b, a, k].
        """
        cfg = self.cfg
        state = batch["agent_state"] if agent_state is None else agent_state
        hist = batch.get("agent_hist") if agent_hist is None else agent_hist
        _, tok = self.encoder(batch["map_feats"], batch["map_pts"], batch["map_mask"], state,
                              batch["agent_type"], batch["agent_mask"], hist)
        u = rearrange(self.control_head(tok), "b a (k h u) -> b a k h u", k=cfg.modes, u=2).tanh()
        start = torch.cat([state[..., :3], state[..., 3:5].norm(dim=-1, keepdim=True)], -1)[:, :, None]
        states = integrate_unicycle(start, u[..., 0] * cfg.max_accel, u[..., 1] * cfg.max_yaw_rate, cfg.dt)
        return states, self.score_head(tok)

    def forward(self, batch: SceneBatch) -> tuple[Tensor, Tensor]:
        """batch -> (traj [b, a, k, h, 3] (x, y, heading; scene frame, steps t0+1..t0+h), logits [b, a, k])."""
        states, logits = self.predict(batch)
        return states[..., :3], logits

    def loss(self, batch: SceneBatch) -> dict[str, Tensor]:
        """Winner-takes-all regression + mode classification.

        Per agent and mode: the Huber (smooth L1, 1 m) xy error summed over x and y, averaged over
        the valid steps of future[:, :, :h]. The best mode is regressed; cross-entropy pushes its
        logit up. Only agents with at least one valid future step count.

        Returns:
            dict of scalar tensors total, regression, classification.
        """
        traj, logits = self(batch)
        h = min(self.cfg.horizon, batch["future"].shape[2])
        gt, valid_t = batch["future"][:, :, None, :h, :2], batch["future_mask"][:, :, None, :h]
        err = F.smooth_l1_loss(traj[..., :h, :2], gt.expand_as(traj[..., :h, :2]), reduction="none").sum(-1)
        per_mode = (err * valid_t).sum(-1) / valid_t.sum(-1).clamp(min=1)  # [b, a, k]
        valid = batch["agent_mask"] & batch["future_mask"][:, :, :h].any(-1)  # [b, a]
        win = per_mode.detach().argmin(-1)  # [b, a]
        regression = per_mode.gather(-1, win[..., None]).squeeze(-1)
        classification = F.cross_entropy(rearrange(logits, "b a k -> (b a) k"), win.flatten(),
                                         reduction="none").view_as(win)
        n = valid.sum().clamp(min=1)
        regression, classification = (regression * valid).sum() / n, (classification * valid).sum() / n
        return {"total": regression + classification, "regression": regression, "classification": classification}

    @torch.no_grad()
    def rollout(self, batch: SceneBatch, steps: int, generator: torch.Generator | None = None,
                sample_modes: bool = False) -> Tensor:
        """Long-horizon rollout: re-predict all agents jointly every ``horizon`` steps.

        Each chunk takes one mode per agent (the most likely, or sampled from the mode softmax with
        ``generator`` when sample_modes) and restarts from that mode's last state (pose, speed along
        the heading; sizes and types unchanged), so bounds and heading consistency hold across chunks; the
        next chunk's history is the chosen mode's velocity change over its last second.
        Cost: ceil(steps / horizon) encoder passes.

        Args:
            batch: collated scenes; steps: rollout length (10 Hz).
            generator: torch.Generator on the batch's device (used when sample_modes).
        Returns:
            float [b, a, steps, 3] (x, y, heading; scene frame), zeros for padded agents.
        """
        state, hist = batch["agent_state"].clone(), batch.get("agent_hist")
        chunks = []
        back = min(HIST_STEPS, self.cfg.horizon - 1)
        for _ in range(math.ceil(steps / self.cfg.horizon)):
            states, logits = self.predict(batch, state, hist)  # [b, a, k, h, 4], [b, a, k]
            if sample_modes:
                probs = rearrange(logits.softmax(-1), "b a k -> (b a) k")
                mode = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:2])
            else:
                mode = logits.argmax(-1)
            idx = mode[..., None, None, None].expand(*mode.shape, 1, *states.shape[3:])
            chosen = states.gather(2, idx).squeeze(2)  # [b, a, h, 4]
            chunks.append(chosen[..., :3])
            last = chosen[:, :, -1]
            state = torch.cat([last[..., :3], _velocity(last), state[..., 5:7]], -1)
            if back > 0:
                hist = (_velocity(last) - _velocity(chosen[:, :, -1 - back])) * (HIST_STEPS / back)
        traj = torch.cat(chunks, 2)[:, :, :steps]
        return traj * batch["agent_mask"][:, :, None, None]
