"""Evaluate a policy in the batched simulator: every episode of the set in one batch of scene slots.

Same rows and metrics as :mod:`sim_bridge.rl.evaluate` (MetaDrive), so the two backends compare line
by line. Episode i plays scenario ``start_index + i mod total`` (the order MetaDrive evaluation uses);
slots step together until each has finished its first episode. With ``self_play`` the policy drives every
moving vehicle of each scene at once (:mod:`sim_bridge.batched.selfplay`), each seeing the others as
they drive, and every driven vehicle's first episode is a row (``scenario#agent``). Only policies that read the "scene"
observation (runs trained on the batched backend) and ``"random"`` can drive it; MetaDrive's IDM ego
has no batched counterpart.

Episodes end as in MetaDrive's ScenarioEnv (``relax_out_of_road_done``): out of road means more than
``max_lateral_dist`` off the route; touching a road edge does not end an evaluation episode, though
training may end on it (``BatchedEnvConfig.edge_out_of_road``, a stricter training signal). Judged by
different rules, the same trajectory would score differently in the two simulators and the comparison
would measure the rules, not the simulators.
"""

# Its dependencies are imported lazily inside run_batched: evaluate.py imports this module on demand and this
# module reuses evaluate.py's rows (an import cycle at module level).

from __future__ import annotations

import numpy as np

from sim_bridge.envs.factory import EnvConfig

__all__ = ["run_batched"]


def run_batched(spec: str, env_cfg: EnvConfig, episodes: int, seed: int = 0, deterministic: bool = True,
                device: str = "cpu", self_play: bool = False) -> list[dict]:
    """Per-episode rows (as ``evaluate._episode_row``) of ``spec`` ("random" or a run directory).

    Args:
        spec: the policy.
        env_cfg: scenarios (a directory range), horizon and reward.
        episodes: episodes in total (0 = one per scenario).
        seed: random policy seed.
        deterministic: the policy's mean action.
        device: simulator device.
        self_play: the policy drives every moving vehicle of each scene (``sim_bridge.batched.selfplay``);
            ``episodes`` counts scenes and each driven vehicle's first episode is a row.
    """
    from sim_bridge.batched.env import BatchedVecEnv
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.envs.scene_obs import load_env_scenarios, scene_env_config
    from sim_bridge.rl.evaluate import _episode_row, make_policy

    if spec == "idm":
        raise ValueError("the IDM ego is MetaDrive's; the batched simulator evaluates 'random' or a training run")
    cfg = scene_env_config(env_cfg, edge_out_of_road=False)
    if self_play:
        from sim_bridge.batched.selfplay import SelfPlayVecEnv
        from sim_bridge.batched.state import SelfPlayConfig

        batch = load_env_scenarios(env_cfg, device, self_play=SelfPlayConfig())
        env = SelfPlayVecEnv(batch, episodes or batch.num_scenes, cfg, device)
    else:
        batch = load_env_scenarios(env_cfg, device)
        env = BatchedVecEnv(batch, episodes or batch.num_scenarios, cfg, device)
    n = env.num_envs
    summary = ScenarioDataset(env_cfg.data).summary
    rng = np.random.default_rng(seed)
    act = None if spec == "random" else make_policy(spec, env, seed, deterministic)
    obs = env.reset()
    scenario = env.state.scenario.cpu().numpy()
    # slots that play an episode: all of them, or in self-play the driven vehicles of each scene's first run
    rows: list[dict | None] = [None] * n
    todo = env.alive.cpu().numpy().copy() if self_play else np.ones(n, bool)
    while (todo & np.array([r is None for r in rows])).any():
        action = rng.uniform(-1, 1, (n, 2)).astype(np.float32) if act is None else act(obs)
        obs, _, done, infos = env.step(action)
        for i in np.nonzero(done & todo)[0]:
            if rows[i] is None:
                info = infos[i]
                name = batch.names[scenario[i]]
                file, _, agent = name.partition("#")
                meta = summary.get(file, {})
                label = str(meta.get("scenario_id") or meta.get("id") or file) + (f"#{agent}" if agent else "")
                rows[i] = _episode_row(info, info["episode_reward"], info["episode_length"], label)
    env.close()
    return [r for r in rows if r is not None]
