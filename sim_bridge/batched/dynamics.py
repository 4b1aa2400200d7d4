"""Motion: a kinematic bicycle for the controlled ego, log replay for everyone else.

Action convention (MetaDrive's): ``action[..., 0]`` steering in [-1, 1] (+ = left, scaled by the
maximum wheel angle), ``action[..., 1]`` throttle (> 0) or brake (< 0) in [-1, 1]; no reverse.

Limits follow MetaDrive 0.4.3's DefaultVehicle (``component/vehicle/vehicle_type.py``,
``component/pg_space.py``): max steering 40 deg applied at once (no rate limit), front / rear axle
1.05234 / 1.4166 m from the body centre (wheelbase 2.469 m), body 4.515 x 1.852 m, engine force
750-850 N on each of 4 wheels for 1100 kg (about 2.9 m/s^2 at full throttle), no engine force above
80 km/h. Bullet's brake and tyre model has no closed form; ``max_brake`` is an assumed full-brake
deceleration (friction 0.9 caps it near 8.8 m/s^2).

The bicycle integrates the rear-axle point exactly along a circular arc per step: with wheel angle
delta the rear axle turns on radius ``wheelbase / tan(delta)``; the box centre sits ``rear_axle`` m
ahead of it.

Einsum letters: b scene slot, a agent, c coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sim_bridge.geometry import wrap_angle

__all__ = ["VehicleConfig", "bicycle_step", "log_pose"]


@dataclass(frozen=True)
class VehicleConfig:
    """The controlled vehicle."""

    max_steering_deg: float = 40.0
    """Wheel angle at |steering action| = 1 (MetaDrive DefaultVehicle)."""
    front_axle: float = 1.05234
    """m from the body centre to the front axle."""
    rear_axle: float = 1.4166
    """m from the body centre to the rear axle."""
    max_accel: float = 2.9
    """m/s^2 at full throttle: 4 wheels x 800 N / 1100 kg."""
    max_brake: float = 6.0
    """m/s^2 at full brake (assumed; see the module docstring)."""
    max_speed: float = 80 / 3.6
    """m/s above which the engine gives no force."""
    rolling_decel: float = 0.0
    """m/s^2 of drag while not braking (MetaDrive sets a small constant brake when throttle >= 0)."""
    dt: float = 0.1
    """s per step (MetaDrive: 5 physics sub-steps of 0.02 s)."""

    @property
    def wheelbase(self) -> float:
        return self.front_axle + self.rear_axle


def bicycle_step(xy: Tensor, yaw: Tensor, speed: Tensor, action: Tensor, cfg: VehicleConfig
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of the kinematic bicycle.

    Args:
        xy: [b, 2] box centre, m; yaw: [b] rad; speed: [b] m/s (>= 0).
        action: [b, 2] (steering, throttle/brake) in [-1, 1] (clipped here).

    Returns:
        (xy [b, 2], yaw [b], speed [b], steer [b] wheel angle in rad) after ``cfg.dt``.
    """
    act = action.clamp(-1.0, 1.0)
    steer = act[:, 0] * math.radians(cfg.max_steering_deg)
    pedal = act[:, 1]
    accel = torch.where(pedal >= 0, pedal * cfg.max_accel * (speed < cfg.max_speed) - cfg.rolling_decel,
                        pedal * cfg.max_brake)
    v = (speed + accel * cfg.dt).clamp_min(0.0)
    dist = 0.5 * (speed + v) * cfg.dt  # trapezoid: exact for constant acceleration without a stop
    dyaw = dist * torch.tan(steer) / cfg.wheelbase
    # rear axle moves along the chord of its arc: length dist * sinc(dyaw / 2), direction yaw + dyaw / 2
    chord = dist * torch.sinc(dyaw / (2 * math.pi))
    mid = yaw + 0.5 * dyaw
    heading0 = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1)
    rear = xy - cfg.rear_axle * heading0 + chord[:, None] * torch.stack([torch.cos(mid), torch.sin(mid)], -1)
    new_yaw = yaw + dyaw
    new_xy = rear + cfg.rear_axle * torch.stack([torch.cos(new_yaw), torch.sin(new_yaw)], -1)
    return new_xy, wrap_angle(new_yaw), v, steer


def log_pose(frames: Tensor, scenario: Tensor, agent: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Logged pose of one agent per slot (log playback of a controlled agent).

    Args:
        frames: [n, t, a, 9] (``BatchedScenarios.frames``: x, y, yaw, length, width, cos, sin, vx, vy).
        scenario, agent, t: int64 [b] indices.

    Returns:
        (xy [b, 2], yaw [b], speed [b]).
    """
    f = frames[scenario, t, agent]  # [b, 9]
    return f[:, 0:2], f[:, 2], f[:, 7:9].norm(dim=-1)


