"""Motion: a bicycle with MetaDrive's measured response for the controlled ego, log replay for everyone else.

Action convention (MetaDrive's): ``action[..., 0]`` steering in [-1, 1] (+ = left, scaled by the
maximum wheel angle), ``action[..., 1]`` throttle (> 0) or brake (< 0) in [-1, 1]; no reverse.

Limits follow MetaDrive 0.4.3's DefaultVehicle (``component/vehicle/vehicle_type.py``,
``component/pg_space.py``): max steering 40 deg applied at once (no rate limit), front / rear axle
1.05234 / 1.4166 m from the body centre (wheelbase 2.469 m), body 4.515 x 1.852 m, engine force
750-850 N on each of 4 wheels for 1100 kg, no engine force above 80 km/h. Bullet's tyre model has no
closed form, so the response was measured on MetaDrive 0.4.3's ScenarioEnv ego:

- Steady state (constant actions on an empty replayed map, 10 Hz): no pedal -0.36 m/s^2, full brake
  -14 m/s^2; steady yaw rates 0.19 rad/s at 2.7 m/s and 10 deg of wheel, 0.90 at 3.3 m/s and 40 deg,
  0.46 at 13.5 m/s and 40 deg, 0.47 at 18 m/s and 20 deg: ``understeer`` and the grip cap
  ``max_lateral_accel``. A kinematic bicycle turns up to 6x faster than that at speed.
- Transients (1,556 steps of a trained policy driving the seven real scenes in MetaDrive, actions with
  and without noise; fitted by least squares on one-step speed and heading): the yaw rate does not
  follow the wheels at once but closes ``1 - yaw_lag`` of its gap to the steady rate per step (time
  constant 0.23 s; the yaw rate over a step correlates 0.70 with the previous step's steering, 0.43
  with the current one); turned wheels cost speed, ``steer_drag`` m/s^2 per rad of wheel angle (full
  throttle gives +2.4 m/s^2 with straight wheels and -1.2 at full lock); full throttle is +2.42 m/s^2
  over on-policy driving (+2.96 from rest on the empty map). Against those MetaDrive episodes, 2 s
  open-loop predictions from the logged actions miss by 1.4 m and 0.11 rad with this model, by 4.6 m
  and 0.13 rad without the lag and the drag (the car ran 4.2 m/s too fast): a policy trained without
  them drove faster and zig-zagged harder than MetaDrive's car allows.

The bicycle integrates the rear-axle point exactly along a circular arc per step whose heading change
is the mean yaw rate over the step (the first-order response integrated exactly); the steady rate is
``v * curvature``, curvature ``tan(delta) / (wheelbase + understeer * v^2)`` (the understeer-gradient
form) capped so that ``v^2 * curvature`` stays under ``max_lateral_accel``; the box centre sits
``rear_axle`` m ahead of the rear axle. ``understeer=0``, ``max_lateral_accel=inf``, ``yaw_lag=0`` and
``steer_drag=0`` give the kinematic bicycle.

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
    max_accel: float = 2.42
    """m/s^2 at full throttle (fitted on-policy; 4 wheels x 800 N / 1100 kg = 2.9, measured 2.96 from rest)."""
    max_brake: float = 14.0
    """m/s^2 at full brake (measured on MetaDrive's ego, see the module docstring)."""
    max_speed: float = 80 / 3.6
    """m/s above which the engine gives no force."""
    rolling_decel: float = 0.36
    """m/s^2 of drag with no pedal, fading linearly to 0 at full throttle (MetaDrive sets a constant brake
    of 2 on each wheel when throttle >= 0; measured)."""
    understeer: float = 0.03
    """s^2/m: curvature = tan(wheel angle) / (wheelbase + understeer * v^2) (fitted to MetaDrive)."""
    max_lateral_accel: float = 7.5
    """m/s^2: cap on v^2 x curvature (tyre grip; fitted to MetaDrive's yaw rates at 13-18 m/s)."""
    yaw_lag: float = 0.65
    """Fraction of the gap between the yaw rate and its steady value left after one step (fitted: 0.654;
    0 = the yaw rate follows the wheels at once)."""
    steer_drag: float = 5.45
    """m/s^2 of speed lost per rad of wheel angle (tyre scrub of turned wheels; fitted: 5.45)."""
    dt: float = 0.1
    """s per step (MetaDrive: 5 physics sub-steps of 0.02 s)."""

    @property
    def wheelbase(self) -> float:
        return self.front_axle + self.rear_axle


def _curvature(steer: Tensor, v: Tensor, cfg: VehicleConfig) -> Tensor:
    """[b] 1/m path curvature at wheel angle steer [b] and speed v [b]: understeer, then the grip cap."""
    v2 = (v * v).clamp_min(1e-6)
    curv = torch.tan(steer) / (cfg.wheelbase + cfg.understeer * v2)
    return torch.maximum(torch.minimum(curv, cfg.max_lateral_accel / v2), -cfg.max_lateral_accel / v2)


def bicycle_step(xy: Tensor, yaw: Tensor, speed: Tensor, yaw_rate: Tensor, action: Tensor, cfg: VehicleConfig
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One step of the bicycle (kinematic with ``understeer=0``, ``max_lateral_accel=inf``, ``yaw_lag=0``
    and ``steer_drag=0``).

    Args:
        xy: [b, 2] box centre, m; yaw: [b] rad; speed: [b] m/s (>= 0); yaw_rate: [b] rad/s at the end of
            the last step (0 after a reset).
        action: [b, 2] (steering, throttle/brake) in [-1, 1] (clipped here).

    Returns:
        (xy [b, 2], yaw [b], speed [b], yaw_rate [b], steer [b] wheel angle in rad) after ``cfg.dt``.
    """
    act = action.clamp(-1.0, 1.0)
    steer = act[:, 0] * math.radians(cfg.max_steering_deg)
    pedal = act[:, 1]
    accel = torch.where(pedal >= 0, pedal * cfg.max_accel * (speed < cfg.max_speed) - cfg.rolling_decel * (1 - pedal),
                        pedal * cfg.max_brake) - cfg.steer_drag * steer.abs()
    v = (speed + accel * cfg.dt).clamp_min(0.0)
    v_mid = 0.5 * (speed + v)
    dist = v_mid * cfg.dt  # trapezoid: exact for constant acceleration without a stop
    # first-order yaw response: r -> r_ss + (r - r_ss) * lag per step; its exact mean over the step
    steady = v_mid * _curvature(steer, v_mid, cfg)
    if cfg.yaw_lag > 0:
        new_rate = steady + (yaw_rate - steady) * cfg.yaw_lag
        mean_rate = steady + (yaw_rate - steady) * ((1 - cfg.yaw_lag) / math.log(1 / cfg.yaw_lag))
        # a standing car does not turn: at most the rate full lock gives at this speed
        bound = v_mid * math.tan(math.radians(cfg.max_steering_deg)) / cfg.wheelbase
        mean_rate = torch.maximum(torch.minimum(mean_rate, bound), -bound)
        new_rate = torch.maximum(torch.minimum(new_rate, bound), -bound)
    else:
        new_rate = mean_rate = steady
    dyaw = mean_rate * cfg.dt
    # rear axle moves along the chord of its arc: length dist * sinc(dyaw / 2), direction yaw + dyaw / 2
    chord = dist * torch.sinc(dyaw / (2 * math.pi))
    mid = yaw + 0.5 * dyaw
    heading0 = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1)
    rear = xy - cfg.rear_axle * heading0 + chord[:, None] * torch.stack([torch.cos(mid), torch.sin(mid)], -1)
    new_yaw = yaw + dyaw
    new_xy = rear + cfg.rear_axle * torch.stack([torch.cos(new_yaw), torch.sin(new_yaw)], -1)
    return new_xy, wrap_angle(new_yaw), v, new_rate, steer


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


