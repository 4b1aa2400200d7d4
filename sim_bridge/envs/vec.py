"""Vectorized MetaDrive envs for RL: one worker process per env, restarted when it crashes.

Why a process per env: MetaDrive allows one simulator engine per process (it keeps process-wide
singletons), so parallel rollouts need one worker process each, started with ``spawn`` (a forked
child would inherit the parent's engine state).

Why restart: a segfault in the physics engine (Bullet / Panda3D) kills its worker process, and
SB3's ``SubprocVecEnv`` then fails the whole multi-hour run with an ``EOFError``.
:class:`RestartingSubprocVecEnv` notices the dead worker, starts a fresh process from the same env
constructor, resets it and reports a terminal (truncated) transition for that env index, so the
training loop goes on. The cost: one extra reset on the crashed worker, and its unfinished episode
is cut short (marked ``TimeLimit.truncated``, so value bootstrapping treats it as a time-out).
Restarts per worker are capped (``max_restarts``): a worker that keeps dying is a bug to surface.

Seeding: MetaDrive's ``reset(seed)`` takes a *scenario index* and rejects any other value, so
:func:`make_vec_env` wraps each env in :class:`ScenarioSeed`, which turns the gymnasium seed
into a random generator that draws the scenario of every episode from the worker's shard.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnvIndices, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs, _worker

from sim_bridge.envs.factory import EnvConfig, env_fns

__all__ = ["RestartingSubprocVecEnv", "ScenarioSeed", "make_vec_env"]

log = logging.getLogger(__name__)
_PIPE_ERRORS = (EOFError, BrokenPipeError, ConnectionResetError, OSError)


_DEAD = object()  # what _recv gives for a worker whose process died


class RestartingSubprocVecEnv(SubprocVecEnv):
    """``SubprocVecEnv`` (always ``spawn``) that restarts a worker whose process died.

    A crash found in ``step_wait`` gives that index a terminal transition: obs = the fresh reset
    obs, reward 0, done True, info ``{"worker_restarted": True, "TimeLimit.truncated": True,
    "terminal_observation": obs}``. A crash found in ``reset`` is answered with the fresh worker's
    reset obs. A crash found in ``get_attr`` / ``set_attr`` / ``env_method`` / ``env_is_wrapped`` /
    ``has_attr`` restarts the worker, repeats the call on it, and the next ``step_wait`` reports the
    terminal transition for that index (without stepping it).

    Args:
        env_fns: picklable ``() -> gymnasium.Env`` constructors, one per worker.
        max_restarts: restarts allowed per worker; one more crash raises ``RuntimeError``.
        poll_s: how often a waiting ``recv`` checks that the worker process is still alive.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], max_restarts: int = 5, poll_s: float = 1.0):
        self._env_fns = list(env_fns)
        self.max_restarts, self._poll_s = max_restarts, poll_s
        self.restarts = [0] * len(self._env_fns)
        self._last_seeds: list[int | None] = [None] * len(self._env_fns)
        self._pending: dict[int, tuple[Any, dict]] = {}  # restarted outside step: report at next step
        super().__init__(self._env_fns, start_method="spawn")
        self.remotes, self.work_remotes = list(self.remotes), list(self.work_remotes)

    def _send(self, i: int, msg: tuple) -> bool:
        try:
            self.remotes[i].send(msg)
            return True
        except _PIPE_ERRORS:
            return False

    def _recv(self, i: int) -> Any:
        """Worker ``i``'s reply, or ``_DEAD`` if its process died."""
        remote, process = self.remotes[i], self.processes[i]
        try:
            while not remote.poll(self._poll_s):
                if not process.is_alive():
                    return _DEAD
            return remote.recv()
        except _PIPE_ERRORS:
            return _DEAD

    def _restart(self, i: int, seed: int | None = None) -> tuple[Any, dict]:
        """Replace dead worker ``i`` with a fresh process and reset it.

        Returns:
            The new worker's ``(obs, reset_info)``.

        Raises:
            RuntimeError: worker ``i`` has used up its ``max_restarts``.
        """
        ctx = mp.get_context("spawn")
        while True:
            old = self.processes[i]
            old.join(timeout=5)
            if old.is_alive():  # its pipe broke but the process lingers: finish it
                old.kill()
                old.join()
            if self.restarts[i] >= self.max_restarts:
                raise RuntimeError(
                    f"vec env worker {i} died (exit code {old.exitcode}) and was already restarted "
                    f"{self.restarts[i]} times (max_restarts={self.max_restarts}); giving up")
            self.restarts[i] += 1
            log.warning("vec env worker %d died (exit code %s); restarting it (restart %d of at most %d)",
                        i, old.exitcode, self.restarts[i], self.max_restarts)
            self.remotes[i].close()
            fn = self._env_fns[i]
            fn = fn.restarted() if hasattr(fn, "restarted") else fn
            remote, work_remote = ctx.Pipe()
            process = ctx.Process(target=_worker, args=(work_remote, remote, CloudpickleWrapper(fn)), daemon=True)
            process.start()
            work_remote.close()
            self.remotes[i], self.work_remotes[i], self.processes[i] = remote, work_remote, process
            if seed is None and self._last_seeds[i] is not None:  # a new, reproducible stream per restart
                seed = self._last_seeds[i] + self.restarts[i] * self.num_envs
            reply = self._recv(i) if self._send(i, ("reset", (seed, None))) else _DEAD
            if reply is not _DEAD:
                return reply

    @staticmethod
    def _terminal(obs: Any, reset_info: dict) -> tuple:
        info = {"worker_restarted": True, "TimeLimit.truncated": True, "terminal_observation": obs}
        return obs, 0.0, True, info, reset_info

    def step_async(self, actions: np.ndarray) -> None:
        for i, action in enumerate(actions):
            if i not in self._pending:
                self._send(i, ("step", action))  # a failed send shows up as a dead worker in step_wait
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        # Collect every live worker's reply before restarting any, so no pipe is left mid-message.
        results = [self._terminal(*self._pending.pop(i)) if i in self._pending else self._recv(i)
                   for i in range(self.num_envs)]
        self.waiting = False
        results = [self._terminal(*self._restart(i)) if r is _DEAD else r for i, r in enumerate(results)]
        obs, rews, dones, infos, self.reset_infos = zip(*results)
        return _stack_obs(obs, self.observation_space), np.stack(rews), np.stack(dones), infos

    def reset(self):
        self._pending.clear()
        seeds = list(self._seeds)
        self._last_seeds = [s if s is not None else old for s, old in zip(seeds, self._last_seeds)]
        sent = [self._send(i, ("reset", (seeds[i], self._options[i]))) for i in range(self.num_envs)]
        results = [self._recv(i) if ok else _DEAD for i, ok in enumerate(sent)]
        results = [self._restart(i, seeds[i]) if r is _DEAD else r for i, r in enumerate(results)]
        obs, self.reset_infos = zip(*results)
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def _request(self, cmd: str, data: Any, indices: VecEnvIndices = None) -> list[Any]:
        """Send ``(cmd, data)`` to the workers at ``indices``; a dead one is restarted and asked again."""
        idx = list(self._get_indices(indices))
        sent = [self._send(i, (cmd, data)) for i in idx]
        out = []
        for i, ok in zip(idx, sent):
            reply = self._recv(i) if ok else _DEAD
            while reply is _DEAD:
                self._pending[i] = self._restart(i)
                reply = self._recv(i) if self._send(i, (cmd, data)) else _DEAD
            out.append(reply)
        return out

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._request("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._request("set_attr", (attr_name, value), indices)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._request("env_method", (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._request("is_wrapped", wrapper_class, indices)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._request("has_attr", attr_name))

    def close(self) -> None:
        """Stop all workers; dead or hung ones are tolerated (a hung one is killed after 10 s)."""
        if self.closed:
            return
        for i in range(self.num_envs):
            if self.waiting and i not in self._pending:
                self._recv(i)
            self._send(i, ("close", None))
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for remote in self.remotes:
            remote.close()
        self.waiting, self.closed = False, True


class ScenarioSeed(gym.Wrapper):
    """Maps gymnasium seeding onto MetaDrive, whose ``reset(seed)`` takes a scenario index.

    ``reset(seed=s)`` starts a generator from ``s``; from then on every reset draws its scenario
    index from the env's range ``[start_index, start_index + num_scenarios)`` with it. Before any
    seed (or with MetaDrive's ``sequential_seed``) MetaDrive picks scenarios itself. ``options``
    are ignored (MetaDrive's reset takes none).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        base = self.env.unwrapped
        if self._rng is None or base.config.get("sequential_seed", False):
            return self.env.reset()
        return self.env.reset(seed=int(base.start_index + self._rng.integers(base.num_scenarios)))


class _MonitoredEnvFn:
    """Picklable ``() -> Monitor(ScenarioSeed(env))`` (a lambda would not survive ``spawn``)."""

    def __init__(self, env_fn: Callable[[], gym.Env], monitor_file: str | None, append: bool = False):
        self.env_fn, self.monitor_file, self.append = env_fn, monitor_file, append

    def __call__(self) -> gym.Env:
        return Monitor(ScenarioSeed(self.env_fn()), filename=self.monitor_file, override_existing=not self.append)

    def restarted(self) -> _MonitoredEnvFn:
        """The constructor for a restarted worker: appends to the monitor file instead of replacing it."""
        return _MonitoredEnvFn(self.env_fn, self.monitor_file, append=True)


def make_vec_env(cfg: EnvConfig, num_workers: int, seed: int, monitor_dir: str | None = None,
                 max_restarts: int = 5, **overrides: Any) -> VecEnv:
    """Vectorized, monitored, seeded MetaDrive envs: one per worker, each on its shard of scenarios.

    Args:
        cfg: scenarios, observation and reward.
        num_workers: envs; 1 runs in-process (``DummyVecEnv``, no IPC), more run one process each
            (:class:`RestartingSubprocVecEnv`).
        seed: worker ``i`` is seeded with ``seed + i`` at the next ``reset()``.
        monitor_dir: if given, worker ``i`` writes episode stats to ``monitor_dir/i.monitor.csv``.
        max_restarts: crash restarts allowed per worker (subprocess workers only).
        **overrides: MetaDrive config keys passed to every env.

    Returns:
        The ``VecEnv``; its infos carry Monitor's ``"episode"`` stats at episode ends.
    """
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    cfg.check_scenarios()  # a bad range or an unsafe/corrupt file fails here, named, not in every worker
    files = [None] * num_workers
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
        files = [os.path.join(monitor_dir, str(i)) for i in range(num_workers)]
    fns = [_MonitoredEnvFn(fn, f) for fn, f in zip(env_fns(cfg, num_workers, **overrides), files)]
    vec: VecEnv = DummyVecEnv(fns) if num_workers == 1 else RestartingSubprocVecEnv(fns, max_restarts=max_restarts)
    vec.seed(seed)
    return vec
