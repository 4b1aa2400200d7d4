"""The settings of one RL training run (``PPOTrainConfig`` and its parts), saved as the run's ``config.yaml``.

:mod:`sim_bridge.rl.train` runs them; every field's docstring is its documentation (``--set`` takes the
same dotted names).
"""

# The batched simulator's loader settings (torch) are imported lazily in BatchedConfig.self_play_config: reading
# a run's settings, or a MetaDrive-only run, does not import torch.

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sim_bridge.envs.factory import EnvConfig
from sim_bridge.rl.warmstart import WarmStartConfig

__all__ = ["PPOConfig", "SACConfig", "BatchedConfig", "CurriculumConfig", "PPOTrainConfig"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (stable-baselines3 names)."""

    learning_rate: float = 3e-4
    n_steps: int = 512
    """Rollout length per env between updates."""
    batch_size: int = 128
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (256, 256)
    """Hidden sizes of the policy and value MLPs."""
    final_std: float = 0.0
    """Anneal the action noise: over the last ``std_anneal_fraction`` of total_steps, cap the policy's learned
    standard deviation by a bound that falls log-linearly from 1 (SB3's initial std) to this value; 0 = no
    annealing. Evaluation and rollouts drive the mean action, and a policy trained under its own noise
    (std ~0.37) drives its noise-free mean faster than anything it trained on and does not brake for a slower
    car ahead (docs/batched_sim.md); annealing makes the evaluated policy the one that was trained."""
    std_anneal_fraction: float = 0.5
    """Share of total_steps (the last ones) over which ``final_std`` is approached."""

    def __post_init__(self):
        if not 0 <= self.final_std < 1 or not 0 < self.std_anneal_fraction <= 1:
            raise ValueError("ppo.final_std must be in [0, 1) and ppo.std_anneal_fraction in (0, 1]")

    def std_cap(self, step: int, total_steps: int) -> float | None:
        """The bound on the action std at ``step`` of ``total_steps`` (None: no bound yet, or no annealing)."""
        start = total_steps * (1.0 - self.std_anneal_fraction)
        if self.final_std <= 0 or step < start:
            return None
        progress = min(1.0, (step - start) / max(total_steps - start, 1.0))
        return float(self.final_std ** progress)


@dataclass(frozen=True)
class SACConfig:
    """SAC hyper-parameters (stable-baselines3 names), for ``algorithm: sac``."""

    learning_rate: float = 3e-4
    buffer_size: int = 1_000_000
    """Replay buffer transitions (not saved in checkpoints: a resumed run refills it)."""
    learning_starts: int = 10_000
    """Environment steps of random actions before the first update."""
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    train_freq: int = 1
    """Vectorised steps between updates (each collects one transition per env or slot)."""
    gradient_steps: int = 16
    """Gradient steps per update: with 128 scene slots, 16 steps of 256 samples replay each transition
    about 32 times over its life in a full buffer, as 1 step per transition does in the one-env default."""
    ent_coef: str = "auto"
    net_arch: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class BatchedConfig:
    """The batched simulator backend."""

    num_scenes: int = 128
    """Scene slots stepping together (the VecEnv's num_envs); scenarios are dealt round-robin."""
    device: str = "cpu"
    """torch device the simulator runs on ("cpu", "cuda")."""
    threads: int = 1
    """torch CPU threads of the training process (simulator + policy); 0 = one per core. Small tensor ops
    gain little from threads, and on a loaded machine 2 threads ran 3-25x slower than 1 (OpenMP barriers
    wait for descheduled threads)."""
    self_play: bool = False
    """Drive every picked vehicle of each scene with the policy at once (``sim_bridge.batched.selfplay``):
    each scene takes as many env slots as the most vehicles a scene drives, every driven vehicle is an
    agent with its own route and episode, and PPO learns from all of them (inactive slots masked out of
    the updates). PPO only; the other vehicles replay their logs."""
    self_play_agents: int = 8
    """Self-play: vehicles driven per scene, the logged ego first, then the nearest moving ones."""
    self_play_min_route_m: float = 10.0
    """Self-play: a vehicle whose logged path is shorter than this (parked, waiting) replays its log."""

    def self_play_config(self):
        """The loader's ``SelfPlayConfig``, or None without self-play."""
        from sim_bridge.batched.state import SelfPlayConfig

        return SelfPlayConfig(self.self_play_agents, self.self_play_min_route_m) if self.self_play else None


@dataclass(frozen=True)
class CurriculumConfig:
    """Traffic-density curriculum (batched backend): each new episode keeps every logged agent with
    probability ``traffic_start``, rising linearly to 1 over the first ``steps`` environment steps. The
    default (1.0, 0) is no curriculum: full logged traffic from the start."""

    traffic_start: float = 1.0
    steps: int = 0

    def fraction(self, step: int) -> float:
        """Share of the logged traffic kept at ``step``."""
        if self.steps <= 0:
            return 1.0
        return min(1.0, self.traffic_start + (1.0 - self.traffic_start) * step / self.steps)

    @property
    def active(self) -> bool:
        return self.steps > 0 and self.traffic_start < 1.0


@dataclass(frozen=True)
class PPOTrainConfig:
    """One PPO training run."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """Training scenarios and env settings."""
    algorithm: Literal["ppo", "sac"] = "ppo"
    """The learner: PPO (on-policy, ``ppo``) or SAC (off-policy with a replay buffer, ``sac``)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    backend: Literal["metadrive", "batched"] = "metadrive"
    """Simulator: MetaDrive (num_envs worker processes) or the batched tensor simulator (batched.num_scenes
    slots in-process; needs a scenario directory and env.observation=scene)."""
    batched: BatchedConfig = field(default_factory=BatchedConfig)
    """Batched backend settings."""
    init_policy: str = ""
    """A run directory (or checkpoint file) whose policy weights start this run, e.g. a policy trained on the
    batched backend fine-tuned in MetaDrive; its observation and network must match this run's (checked).
    Empty: a fresh policy. Not used on --resume (the run's own checkpoint wins)."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Behaviour cloning of the training scenarios' logged egos before RL (``sim_bridge.rl.warmstart``)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Traffic-density curriculum (batched backend)."""
    total_steps: int = 100_000
    """Environment steps over all workers."""
    num_envs: int = 1
    """MetaDrive backend: worker processes (one MetaDrive engine each); 1 = in-process."""
    seed: int = 0
    checkpoint_every: int = 4096
    """Save a checkpoint every this many steps (and at the end)."""
    time_limit_minutes: float = 0.0
    """Stop (with a final checkpoint) once this much wall time has passed in this invocation (environment
    setup and warm start included), even before total_steps; 0 = no limit. For budgets stated in time
    ("trained within 60 minutes")."""
    device: str = "cpu"
    """torch device for the policy ("cpu", "cuda", "auto")."""

    def __post_init__(self):
        if self.total_steps < 1 or self.num_envs < 1 or self.checkpoint_every < 1:
            raise ValueError("total_steps, num_envs and checkpoint_every must be >= 1")
        if self.backend == "batched" and self.env.observation != "scene":
            raise ValueError("backend=batched observes 'scene' (the batched simulator's observation): set "
                             "env.observation=scene (`bevgen sim train --backend batched` does)")
        if self.warm_start.demonstrations != "none" and self.algorithm != "ppo":
            raise ValueError("warm_start clones into PPO's actor-critic policy: use algorithm=ppo")
        if self.warm_start.demonstrations != "none" and self.env.observation != "scene":
            raise ValueError("warm_start.demonstrations=log clones the 'scene' observation: set env.observation=scene "
                             "(or train with --backend batched)")
        if not 0.0 <= self.curriculum.traffic_start <= 1.0:
            raise ValueError("curriculum.traffic_start must be in [0, 1]")
        if self.curriculum.active and self.backend != "batched":
            raise ValueError("the traffic curriculum drops logged agents in the batched simulator: use backend=batched")
        if self.batched.num_scenes < 1 or self.batched.threads < 0:
            raise ValueError("batched.num_scenes must be >= 1 and batched.threads >= 0")
        if self.batched.self_play:
            if self.backend != "batched" or self.algorithm != "ppo":
                raise ValueError("batched.self_play trains PPO on the batched simulator: use backend=batched, "
                                 "algorithm=ppo")
            if self.curriculum.active or self.env.reactive_traffic:
                raise ValueError("batched.self_play drives the scene's vehicles itself: no traffic curriculum and "
                                 "no env.reactive_traffic")
            self.batched.self_play_config()  # validates the agent count and minimum route
        envs = "batched.num_scenes" if self.backend == "batched" else "num_envs"
        # self-play minibatches hold the active samples only, so no multiple of batch_size is guaranteed anyway
        rollout = self.ppo.n_steps * self.vec_envs
        if self.algorithm == "ppo" and not self.batched.self_play and rollout % self.ppo.batch_size:
            raise ValueError(f"ppo.n_steps * {envs} ({self.ppo.n_steps * self.vec_envs}) must be a multiple "
                             f"of ppo.batch_size ({self.ppo.batch_size}); change one of them")

    @property
    def vec_envs(self) -> int:
        """Envs of the VecEnv: worker processes (MetaDrive) or scene slots (batched)."""
        return self.batched.num_scenes if self.backend == "batched" else self.num_envs
