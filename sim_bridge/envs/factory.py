"""Gymnasium environments over MetaDrive for RL: config, sharding across workers, construction.

``EnvConfig`` names a scenario source (a dataset directory, replayed by MetaDrive's ``ScenarioEnv``,
or ``"procedural"`` for ``MetaDriveEnv`` maps) plus observation, reward and termination settings.
``make_env(cfg, worker, num_workers)`` builds worker ``worker``'s env on its contiguous shard of the
scenarios (MetaDrive allows one engine per process, so each vectorized worker is a process).
MetaDrive is imported only when an env is built.
"""

# MetaDrive, the scene observation (torch) and the dataset reader are imported lazily: an EnvConfig is built
# and checked by every command (and `--help`) without starting either simulator.

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

__all__ = ["IDMConfig", "SceneObsConfig", "EnvConfig", "RewardConfig", "make_env", "env_fns", "shard", "PROCEDURAL"]

PROCEDURAL = "procedural"
DEFAULT_PROCEDURAL_MAPS = 100


@dataclass(frozen=True)
class IDMConfig:
    """Gap keeping of IDM traffic (Treiber et al. 2000); ``traffic.follow.FollowConfig`` extends it."""

    max_accel: float = 2.0
    """m/s^2: IDM's a, also the catch-up acceleration of a vehicle behind its log."""
    comfort_brake: float = 2.0
    """m/s^2: IDM's b."""
    max_brake: float = 6.0
    """m/s^2: the deceleration bound."""
    headway_s: float = 1.2
    min_gap_m: float = 2.0
    lookahead_m: float = 40.0
    corridor_margin_m: float = 0.3
    """A leader is in the corridor when its centre is within (both half widths + margin) of the follower's
    heading line."""


@dataclass(frozen=True)
class SceneObsConfig:
    """Layout of the "scene" observation (``sim_bridge.batched.env.observe``), the same in both simulators.

    Size: 6 ego values + 7 per agent + 2 per route point + 2 per edge point (defaults: 6 + 56 + 20 + 16 = 98).
    A run saves it with its config; evaluation and rollouts read the layout the policy was trained on.
    """

    agents: int = 8
    """Nearest agents observed (relative position and velocity, heading, presence)."""
    route_points: int = 10
    """Points of the route ahead."""
    route_spacing_m: float = 2.0
    """m between route points (MetaDrive's TrajectoryNavigation uses 2 m); route_points * route_spacing_m must
    stay within the simulator's route look-ahead (``sim_bridge.batched.env.ROUTE_LOOKAHEAD``, 32 m)."""
    edge_points: int = 8
    """Closest points of the nearest road-edge segments."""
    range_m: float = 50.0
    """m; positions and velocities are divided by this."""

    def __post_init__(self):
        if min(self.agents, self.route_points, self.edge_points) < 1:
            raise ValueError(f"scene_obs: agents, route_points and edge_points must be >= 1, got {self}")
        if self.route_spacing_m <= 0 or self.range_m <= 0:
            raise ValueError(f"scene_obs: route_spacing_m and range_m must be > 0, got {self}")


@dataclass(frozen=True)
class RewardConfig:
    """Reward and termination terms (MetaDrive config keys of the same names)."""

    driving_reward: float = 1.0
    """Reward per metre of progress along the route."""
    speed_reward: float = 0.1
    """Reward per step proportional to speed / max speed (procedural maps only)."""
    success_reward: float = 10.0
    """Bonus on reaching the destination."""
    out_of_road_penalty: float = 5.0
    """Penalty when leaving the drivable area."""
    crash_vehicle_penalty: float = 5.0
    """Penalty when colliding with a vehicle."""
    crash_object_penalty: float = 5.0
    """Penalty when colliding with an object or a pedestrian."""
    out_of_road_done: bool = True
    """End the episode when the ego leaves the road (ScenarioEnv: its route)."""
    crash_vehicle_done: bool = True
    """End the episode on a vehicle collision."""
    crash_object_done: bool = True
    """End the episode on an object collision."""


@dataclass(frozen=True)
class EnvConfig:
    """Which scenarios, what the agent observes, how it is rewarded."""

    data: str = PROCEDURAL
    """A dataset directory (replayed in ScenarioEnv) or "procedural" (MetaDriveEnv maps)."""
    num_scenarios: int = 0
    """Scenarios to use: 0 = all of the directory (procedural: DEFAULT_PROCEDURAL_MAPS); else this many."""
    start_index: int = 0
    """First scenario index (directory order) or first seed (procedural)."""
    horizon: int = 500
    """Maximum steps per episode."""
    observation: Literal["lidar_state", "scene"] = "lidar_state"
    """"lidar_state": ego state + navigation + lidar (MetaDrive's LidarStateObservation), headless, no
    assets. "scene": the batched simulator's observation (``sim_bridge.batched.env.observe``: ego vs
    route, nearest agents, route points, road-edge points), so a policy trained on the batched backend
    drives MetaDrive; scenario directories only."""
    lidar_lasers: int = 120
    """Lidar beams (50 m) in the observation; the same layout for procedural and replayed scenarios."""
    side_lasers: int = 12
    """Side-detector beams (road boundaries)."""
    lane_line_lasers: int = 0
    """Lane-line-detector beams."""
    procedural_map_blocks: int = 3
    """Procedural only: road blocks per map."""
    procedural_traffic_density: float = 0.1
    """Procedural only: traffic density."""
    reactive_traffic: bool = False
    """Scenario replay only: traffic follows IDM instead of replaying the log exactly (MetaDrive's ScenarioEnv
    option; the batched simulator's ``traffic="idm"``: logged vehicles yield to the ego)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward and termination."""
    scene_obs: SceneObsConfig = field(default_factory=SceneObsConfig)
    """Layout of the "scene" observation (ignored by "lidar_state")."""

    def __post_init__(self):
        if self.data != PROCEDURAL and not Path(self.data).is_dir():
            raise ValueError(f"data: {self.data!r} is neither 'procedural' nor a dataset directory")
        if self.num_scenarios < 0 or self.start_index < 0:
            raise ValueError("num_scenarios and start_index must be >= 0")
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")

    @property
    def procedural(self) -> bool:
        return self.data == PROCEDURAL

    def total_scenarios(self) -> int:
        """Scenarios the env draws from; for a dataset directory, checked against the files it holds
        (MetaDrive would otherwise assert inside every worker process)."""
        if self.procedural:
            return self.num_scenarios or DEFAULT_PROCEDURAL_MAPS
        from sim_bridge.dataset import ScenarioDataset

        available = len(ScenarioDataset(self.data)) - self.start_index
        if available < 1:
            raise ValueError(f"{self.data}: no scenarios from start_index {self.start_index} "
                             f"({available + self.start_index} in the directory)")
        if self.num_scenarios > available:
            raise ValueError(f"{self.data}: num_scenarios={self.num_scenarios} but only {available} scenarios from "
                             f"start_index {self.start_index}; ask for at most {available} (0 = all of them)")
        return self.num_scenarios or available

    def check_scenarios(self) -> int:
        """Read every scenario file the env will replay through the safe loader, before any engine starts.

        MetaDrive reads them again inside its workers (through the same loader, see
        ``sim_bridge.envs.metadrive.route_scenario_reads``); checking first turns a bad file into one
        clear error naming it instead of a crash in every worker. O(files in range) reads.

        Returns:
            The number of scenarios (as :meth:`total_scenarios`).

        Raises:
            ValueError: naming each unsafe, corrupt or invalid file and why.
        """
        total = self.total_scenarios()
        if self.procedural:
            return total
        from sim_bridge.dataset import ScenarioDataset

        ds = ScenarioDataset(self.data, repair=True)  # what a conversion would repair, MetaDrive reads as is
        bad = [str(err) for _, err in ds.iter_checked(ds.names[self.start_index:self.start_index + total])
               if isinstance(err, Exception)]
        if bad:
            raise ValueError(f"{self.data}: {len(bad)} scenario file(s) refused, nothing was run:\n  "
                             + "\n  ".join(bad))
        return total


def shard(total: int, num_workers: int, worker: int) -> tuple[int, int]:
    """Contiguous shard (start offset, count) of ``total`` scenarios for ``worker``; every worker gets >= 1.

    With fewer scenarios than workers, workers share scenarios round-robin (count 1 each).
    """
    if total < 1:
        raise ValueError("no scenarios to shard")
    if num_workers >= total:
        return worker % total, 1
    base, extra = divmod(total, num_workers)
    start = worker * base + min(worker, extra)
    return start, base + (1 if worker < extra else 0)


def metadrive_config(cfg: EnvConfig, worker: int = 0, num_workers: int = 1, seed_offset: int = 0) -> dict[str, Any]:
    """The MetaDrive config dict for one worker's env (plain data, picklable)."""
    offset, count = shard(cfg.total_scenarios(), num_workers, worker)
    r = cfg.reward
    mc: dict[str, Any] = dict(
        horizon=cfg.horizon, driving_reward=r.driving_reward, success_reward=r.success_reward,
        out_of_road_penalty=r.out_of_road_penalty, crash_vehicle_penalty=r.crash_vehicle_penalty,
        crash_object_penalty=r.crash_object_penalty, crash_vehicle_done=r.crash_vehicle_done,
        crash_object_done=r.crash_object_done,
        # Pin one sensor layout: the two envs default to different ones (259- vs 161-d observations),
        # and a policy must be able to drive both (train on procedural, test on real).
        vehicle_config=dict(lidar=dict(num_lasers=cfg.lidar_lasers, distance=50, num_others=0),
                            side_detector=dict(num_lasers=cfg.side_lasers, distance=50),
                            lane_line_detector=dict(num_lasers=cfg.lane_line_lasers, distance=20)))
    # The two MetaDrive envs name the same terms differently (and ScenarioEnv has no speed reward).
    if cfg.procedural:
        mc.update(start_seed=cfg.start_index + offset, num_scenarios=count, map=cfg.procedural_map_blocks,
                  traffic_density=cfg.procedural_traffic_density, speed_reward=r.speed_reward,
                  out_of_road_done=r.out_of_road_done)
    else:
        mc.update(data_directory=str(Path(cfg.data).resolve()), start_scenario_index=cfg.start_index + offset,
                  num_scenarios=count, reactive_traffic=cfg.reactive_traffic, out_of_route_done=r.out_of_road_done,
                  crash_human_done=r.crash_object_done, crash_human_penalty=r.crash_object_penalty)
    return mc


def make_env(cfg: EnvConfig, worker: int = 0, num_workers: int = 1, ego: Literal["agent", "idm"] = "agent",
             **overrides: Any):
    """Build worker ``worker``'s MetaDrive env (a ``gymnasium.Env``), headless and offline.

    Args:
        cfg: scenarios and env settings.
        worker, num_workers: this worker's shard of the scenarios.
        ego: "agent" (actions drive the ego) or "idm" (MetaDrive's IDM drives it; actions are ignored).
        **overrides: raw MetaDrive config keys.
    """
    from sim_bridge.envs.metadrive import make_procedural_env, make_scenario_env

    if cfg.observation == "scene" and cfg.procedural:
        raise ValueError("observation='scene' needs a scenario directory (it reads the scenario's route, log and "
                         "road edges); procedural MetaDriveEnv maps have no scenario file. Export them first "
                         "(`bevgen scenarios procedural`) and pass that directory as data")
    mc = metadrive_config(cfg, worker, num_workers)
    if ego == "idm":
        from metadrive.policy.idm_policy import IDMPolicy

        mc["agent_policy"] = IDMPolicy
    mc.update(overrides)
    if cfg.procedural:
        return make_procedural_env(**mc)
    data = mc.pop("data_directory")
    env = make_scenario_env(data, **mc)
    if cfg.observation == "scene":
        from sim_bridge.envs.scene_obs import SceneObservation

        env = SceneObservation(env, data, cfg)
    return env


def env_fns(cfg: EnvConfig, num_workers: int, **overrides: Any) -> list[Callable[[], Any]]:
    """One picklable constructor per worker (for SubprocVecEnv-style vectorization)."""
    return [_EnvFn(cfg, w, num_workers, overrides) for w in range(num_workers)]


class _EnvFn:
    """Picklable ``() -> env`` (a lambda would not survive the spawn start method)."""

    def __init__(self, cfg: EnvConfig, worker: int, num_workers: int, overrides: dict):
        self.cfg, self.worker, self.num_workers, self.overrides = cfg, worker, num_workers, overrides

    def __call__(self):
        return make_env(self.cfg, self.worker, self.num_workers, **self.overrides)
