"""PPO (stable-baselines3) on any scenario set, in MetaDrive or the batched simulator: seed, envs, model,
loop, checkpoints.

Reads top to bottom (the settings live in :mod:`sim_bridge.rl.config`): seeding -> vectorized envs -> PPO
-> callback (episode log, TensorBoard scalars, atomic checkpoints) -> learn -> final checkpoint.

Backends (``PPOTrainConfig.backend``) differ only in the ``VecEnv``: "metadrive" runs one MetaDrive
engine per worker process (``sim_bridge.envs.vec``); "batched" steps ``batched.num_scenes`` scene slots
as tensors in this process (``sim_bridge.batched.env.BatchedVecEnv``, observation "scene", which
``SceneObservation`` also gives MetaDrive, so the policy can be evaluated in either simulator).

Checkpoints are our own format, not SB3's ``.zip``: ``{model, optimizer, config, step, n_updates,
best_metric}`` written atomically by ``runkit.checkpoint.save_checkpoint`` and read back with
``runkit.checkpoint.load_checkpoint`` (``weights_only=True``). SB3's zip stores parts of the model with
cloudpickle, so loading someone else's zip can execute code; ours can only yield tensors and plain data.
``--resume`` rebuilds the PPO model from the saved config, loads both state dicts strictly and continues
the step counter.
"""

# Each backend's env is imported lazily in make_train_env (and the scene observation's loader in _warm_start):
# MetaDrive workers or the torch batched simulator, only the one the run uses.

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runkit.atomic import atomic_write, atomic_write_text
from runkit.checkpoint import load_checkpoint, save_checkpoint
from runkit.config import from_dict, save_config, to_dict
from runkit.rundir import check_resume
from runkit.seeding import seed_everything
from sim_bridge.rl.config import BatchedConfig, CurriculumConfig, PPOConfig, PPOTrainConfig, SACConfig
from sim_bridge.rl.masked import MaskedRolloutBuffer
from sim_bridge.rl.warmstart import behaviour_clone, demonstrations

__all__ = ["PPOConfig", "SACConfig", "BatchedConfig", "CurriculumConfig", "PPOTrainConfig", "TrainResult", "train",
           "latest_checkpoint", "build_policy",
           "read_episodes", "EPISODE_FIELDS"]

EPISODE_FIELDS = ("step", "episode", "reward", "length", "route_completion", "success", "crash", "out_of_road")


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    final_step: int
    episodes: list[dict]
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return (self.final_step - self.start_step) / max(self.seconds, 1e-9)


def _model(cfg: PPOTrainConfig, env, tb_dir: str | None):
    """The SB3 learner ``cfg.algorithm`` names, on ``env``."""
    if cfg.algorithm == "sac":
        from stable_baselines3 import SAC

        p = cfg.sac
        return SAC("MlpPolicy", env, learning_rate=p.learning_rate, buffer_size=p.buffer_size,
                   learning_starts=p.learning_starts, batch_size=p.batch_size, tau=p.tau, gamma=p.gamma,
                   train_freq=p.train_freq, gradient_steps=p.gradient_steps, ent_coef=p.ent_coef,
                   policy_kwargs=dict(net_arch=list(p.net_arch)), tensorboard_log=tb_dir, seed=cfg.seed,
                   device=cfg.device, verbose=0)
    from stable_baselines3 import PPO

    p = cfg.ppo
    masked = dict(rollout_buffer_class=MaskedRolloutBuffer) if cfg.batched.self_play else {}
    model = PPO("MlpPolicy", env, learning_rate=p.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
                n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range,
                ent_coef=p.ent_coef, vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm,
                policy_kwargs=dict(net_arch=list(p.net_arch)), tensorboard_log=tb_dir, seed=cfg.seed,
                device=cfg.device, verbose=0, **masked)
    if masked:  # the buffer asks the env which slots were driving (SelfPlayVecEnv.acted_active)
        model.rollout_buffer.active_source = lambda: env.get_attr("acted_active")[0]
    return model


def _optimizers(model) -> dict:
    """Every optimizer of the learner by name (PPO: one; SAC: actor, critic and the entropy coefficient's)."""
    if hasattr(model, "actor"):  # SAC
        opts = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
        if model.ent_coef_optimizer is not None:
            opts["ent_coef"] = model.ent_coef_optimizer
        return opts
    return {"policy": model.policy.optimizer}


# ---- checkpoints ----------------------------------------------------------------------------------
def latest_checkpoint(run_dir: str | Path) -> Path | None:
    p = Path(run_dir) / "checkpoints" / "latest.pt"
    return p if p.exists() else None


def _save_checkpoint(model, cfg: PPOTrainConfig, run_dir: Path, best: float) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    state = {"model": model.policy.state_dict(),
             "optimizer": {k: o.state_dict() for k, o in _optimizers(model).items()},
             "config": to_dict(cfg), "step": int(model.num_timesteps), "n_updates": int(model._n_updates),
             "best_metric": float(best)}
    if getattr(model, "log_ent_coef", None) is not None:  # SAC's learned entropy coefficient (not in the policy)
        state["log_ent_coef"] = model.log_ent_coef.detach().cpu()
    for name in (f"step_{model.num_timesteps:09d}.pt", "latest.pt"):
        save_checkpoint(ckpt_dir / name, **state)
    return ckpt_dir / "latest.pt"


def build_policy(checkpoint: dict, observation_space, action_space):
    """A stand-alone SB3 policy (PPO's ``ActorCriticPolicy`` or SAC's ``SACPolicy``) with the checkpoint's
    weights (strict), for evaluation."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    if checkpoint["config"].get("algorithm", "ppo") == "sac":
        from stable_baselines3.sac.policies import SACPolicy

        sac = from_dict(SACConfig, checkpoint["config"]["sac"])
        policy = SACPolicy(observation_space, action_space, lr_schedule=lambda _: 0.0, net_arch=list(sac.net_arch))
        policy.load_state_dict(checkpoint["model"], strict=True)
        return policy.eval()
    ppo = from_dict(PPOConfig, checkpoint["config"]["ppo"])
    policy = ActorCriticPolicy(observation_space, action_space, lr_schedule=lambda _: 0.0,
                               net_arch=list(ppo.net_arch))
    policy.load_state_dict(checkpoint["model"], strict=True)
    return policy.eval()


# ---- the loop --------------------------------------------------------------------------------------
def _callback(run_dir: Path, cfg: PPOTrainConfig, episodes: list[dict], state: dict,
              on_episode: Callable[[dict], Any] | None):
    from stable_baselines3.common.callbacks import BaseCallback

    log_path = run_dir / "episodes.csv"

    class _Cb(BaseCallback):
        def _on_training_start(self) -> None:
            self._t0, self._s0 = time.perf_counter(), self.num_timesteps
            new = not log_path.exists()
            self._log = open(log_path, "a", newline="")
            self._csv = csv.DictWriter(self._log, EPISODE_FIELDS)
            if new:
                self._csv.writeheader()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                ep = info.get("episode")
                if ep is None:
                    continue
                rc = min(max(float(info.get("route_completion", 0.0)), 0.0), 1.0)  # as evaluation reports it
                crash = bool(info.get("crash") or info.get("crash_vehicle") or info.get("crash_object"))
                off = bool(info.get("out_of_road"))
                row = {"step": self.num_timesteps, "episode": len(episodes), "reward": round(float(ep["r"]), 4),
                       "length": int(ep["l"]), "route_completion": round(rc, 4),
                       "success": int(rc > 0.95 and not crash and not off), "crash": int(crash),
                       "out_of_road": int(off)}
                episodes.append(row)
                self._csv.writerow(row)
                self.logger.record("charts/episode_reward", row["reward"])
                self.logger.record("charts/route_completion", rc)
                if on_episode:
                    on_episode(row)
            if self.num_timesteps - state["last_ckpt"] >= cfg.checkpoint_every:
                self._checkpoint()
            if cfg.time_limit_minutes and time.perf_counter() - state["t_start"] >= 60 * cfg.time_limit_minutes:
                state["stopped"] = "time_limit"
                return False
            return True

        def _checkpoint(self) -> None:
            recent = [e["reward"] for e in episodes[-20:]]
            state["best"] = max(state["best"], float(np.mean(recent)) if recent else -np.inf)
            self._log.flush()
            _save_checkpoint(self.model, cfg, run_dir, state["best"])
            state["last_ckpt"] = self.num_timesteps
            sps = (self.num_timesteps - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
            self.logger.record("charts/steps_per_second", sps)

        def _on_rollout_start(self) -> None:
            self._cap_std()  # before collection, so the rollout's log-probabilities use the capped std
            if cfg.curriculum.active:
                frac = cfg.curriculum.fraction(self.num_timesteps)
                self.training_env.set_attr("traffic_fraction", frac)
                self.logger.record("charts/traffic_fraction", frac)

        def _on_rollout_end(self) -> None:
            sps = (self.num_timesteps - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
            self.logger.record("charts/steps_per_second", sps)
            if isinstance(getattr(self.model, "rollout_buffer", None), MaskedRolloutBuffer):  # self-play: slots driving
                self.logger.record("charts/active_fraction", float(self.model.rollout_buffer.active.mean()))

        def _cap_std(self) -> None:
            """Action-noise annealing (``ppo.final_std``): cap the learned std by the schedule's bound."""
            cap = cfg.ppo.std_cap(self.num_timesteps, cfg.total_steps) if cfg.algorithm == "ppo" else None
            if cap is not None:
                import torch

                with torch.no_grad():
                    self.model.policy.log_std.clamp_(max=float(np.log(cap)))
                self.logger.record("charts/action_std", float(self.model.policy.log_std.detach().exp().mean()))

        def _on_training_end(self) -> None:
            self._cap_std()  # the last update may have widened it: the saved policy honours the bound
            self._checkpoint()
            self._log.close()

    return _Cb()


def make_train_env(cfg: PPOTrainConfig):
    """The run's ``VecEnv`` (monitored: infos carry ``"episode"`` stats at episode ends), seeded with cfg.seed."""
    if cfg.backend == "metadrive":
        from sim_bridge.envs.vec import make_vec_env

        return make_vec_env(cfg.env, cfg.num_envs, seed=cfg.seed)
    from stable_baselines3.common.vec_env import VecMonitor

    from sim_bridge.batched.env import BatchedVecEnv
    from sim_bridge.envs.scene_obs import load_env_scenarios, scene_env_config

    batch = load_env_scenarios(cfg.env, cfg.batched.device, self_play=cfg.batched.self_play_config())
    if cfg.batched.self_play:  # reports its own episode stats (VecMonitor would count inactive steps)
        from sim_bridge.batched.selfplay import SelfPlayVecEnv

        vec = SelfPlayVecEnv(batch, cfg.batched.num_scenes, scene_env_config(cfg.env), cfg.batched.device)
        vec.seed(cfg.seed)
        return vec
    vec = VecMonitor(BatchedVecEnv(batch, cfg.batched.num_scenes, scene_env_config(cfg.env), cfg.batched.device))
    vec.seed(cfg.seed)
    return vec


def train(cfg: PPOTrainConfig, run_dir: str | Path, resume: bool = False, progress_bar: bool = True,
          on_episode: Callable[[dict], Any] | None = None) -> TrainResult:
    """Train PPO; write config, TensorBoard logs, ``episodes.csv`` and checkpoints into ``run_dir``.

    Args:
        cfg: the run's settings (saved as ``config.yaml``).
        run_dir: output directory.
        resume: continue from ``run_dir/checkpoints/latest.pt`` (the step counter continues).
        progress_bar: show a progress bar over environment steps.
        on_episode: optional callback receiving each finished episode's row.

    Returns:
        Start and final step, all episode rows, wall time.
    """
    import torch

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    ckpt = check_resume(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.seed)
    if cfg.backend == "batched" and cfg.batched.threads:
        torch.set_num_threads(cfg.batched.threads)
    else:  # one share of the cores per MetaDrive worker process
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // (cfg.num_envs if cfg.backend == "metadrive" else 1)))

    env = make_train_env(cfg)
    episodes: list[dict] = []
    state = {"last_ckpt": 0, "best": -np.inf, "t_start": t_start}  # the time limit counts setup and warm start
    try:
        model = _model(cfg, env, str(run_dir / "tb"))
        start = 0
        if ckpt is not None:
            saved = load_checkpoint(ckpt)
            model.policy.load_state_dict(saved["model"], strict=True)
            opts = saved["optimizer"] if "policy" in saved["optimizer"] or "actor" in saved["optimizer"] \
                else {"policy": saved["optimizer"]}  # checkpoints before SAC held PPO's one optimizer
            for name, opt in _optimizers(model).items():
                opt.load_state_dict(opts[name])
            if "log_ent_coef" in saved:
                with torch.no_grad():
                    model.log_ent_coef.copy_(saved["log_ent_coef"])
            model.num_timesteps, model._n_updates = int(saved["step"]), int(saved["n_updates"])
            start = state["last_ckpt"] = model.num_timesteps
            state["best"] = float(saved["best_metric"])
            episodes.extend(read_episodes(run_dir, upto_step=start))  # later rows belong to lost work
            _rewrite_episodes(run_dir / "episodes.csv", episodes)
        elif cfg.init_policy:
            _init_policy(model, cfg)
        elif cfg.warm_start.demonstrations == "log":
            _warm_start(model, cfg, run_dir)
        if cfg.curriculum.active:  # before learn() resets the env: its first episodes follow the schedule too
            env.set_attr("traffic_fraction", cfg.curriculum.fraction(start))
        t0 = time.perf_counter()
        remaining = max(cfg.total_steps - start, 0)
        if remaining:
            model.learn(total_timesteps=remaining, callback=_callback(run_dir, cfg, episodes, state, on_episode),
                        reset_num_timesteps=ckpt is None, tb_log_name=cfg.algorithm, progress_bar=progress_bar)
        seconds = time.perf_counter() - t0
        result = TrainResult(run_dir, start, int(model.num_timesteps), episodes, seconds)
        (run_dir / "train_summary.json").write_text(json.dumps(
            {"start_step": start, "final_step": result.final_step, "episodes": len(episodes),
             "stopped": state.get("stopped", "total_steps"),
             "seconds": round(seconds, 2), "steps_per_second": round(result.steps_per_second, 1)}, indent=2))
        return result
    finally:
        env.close()


def _init_policy(model, cfg: PPOTrainConfig) -> None:
    """Load ``cfg.init_policy``'s weights into the fresh learner (strict: same observation size and network)."""
    saved = load_checkpoint(cfg.init_policy, hint="init_policy names a training run directory or checkpoint")
    if saved["config"].get("algorithm", "ppo") != cfg.algorithm:
        raise ValueError(f"init_policy {cfg.init_policy}: trained with {saved['config'].get('algorithm')}, this run "
                         f"is {cfg.algorithm}")
    try:
        model.policy.load_state_dict(saved["model"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"init_policy {cfg.init_policy}: its policy does not fit this run (observation layout or "
                         f"net_arch differ): {str(e).splitlines()[0]}") from None


def _warm_start(model, cfg: PPOTrainConfig, run_dir: Path) -> dict:
    """Clone the training scenarios' logged egos into the fresh policy; the figures go to warm_start.json."""
    from sim_bridge.envs.scene_obs import load_env_scenarios, scene_env_config

    t0 = time.perf_counter()
    demos = demonstrations(load_env_scenarios(cfg.env), scene_env_config(cfg.env), model.gamma)
    stats = behaviour_clone(model.policy, demos, cfg.warm_start, cfg.seed)
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(run_dir / "warm_start.json", json.dumps(stats, indent=2))
    return stats


def read_episodes(run_dir: str | Path, upto_step: float = float("inf")) -> list[dict]:
    """Rows of a run's ``episodes.csv`` (EPISODE_FIELDS, typed), up to ``upto_step``; [] if there are none."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: (float(v) if k in ("reward", "route_completion") else int(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]
    return [r for r in rows if r["step"] <= upto_step]


def _rewrite_episodes(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, EPISODE_FIELDS)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
