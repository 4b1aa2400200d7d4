"""Evaluate a policy in the batched simulator: every episode of the set in one batch of scene slots.

Same rows and metrics as :mod:`sim_bridge.rl.evaluate` (MetaDrive), so the two backends compare line
by line. Episode i plays scenario ``start_index + i mod total`` (the order MetaDrive evaluation uses);
slots step together until each has finished its first episode. Only policies that read the "scene"
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
                device: str = "cpu") -> list[dict]:
    """Per-episode rows (as ``evaluate._episode_row``) of ``spec`` ("random" or a run directory).

    Args:
        spec: the policy.
        env_cfg: scenarios (a directory range), horizon and reward.
        episodes: episodes in total (0 = one per scenario).
        seed: random policy seed.
        deterministic: the policy's mean action.
        device: simulator device.
    """
    from sim_bridge.batched.env import BatchedVecEnv
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.envs.scene_obs import load_env_scenarios, scene_env_config
    from sim_bridge.rl.evaluate import _episode_row, make_policy

    if spec == "idm":
        raise ValueError("the IDM ego is MetaDrive's; the batched simulator evaluates 'random' or a training run")
    batch = load_env_scenarios(env_cfg, device)
    n = episodes or batch.num_scenarios
    env = BatchedVecEnv(batch, n, scene_env_config(env_cfg, edge_out_of_road=False), device)
    summary = ScenarioDataset(env_cfg.data).summary
    rng = np.random.default_rng(seed)
    act = None if spec == "random" else make_policy(spec, env, seed, deterministic)
    obs, scenario = env.reset(), env.state.scenario.cpu().numpy()
    rows: list[dict | None] = [None] * n
    while any(r is None for r in rows):
        action = rng.uniform(-1, 1, (n, 2)).astype(np.float32) if act is None else act(obs)
        obs, _, done, infos = env.step(action)
        for i in np.nonzero(done)[0]:
            if rows[i] is None:
                info = infos[i]
                name = batch.names[scenario[i]]
                meta = summary.get(name, {})
                rows[i] = _episode_row(info, info["episode_reward"], info["episode_length"],
                                       str(meta.get("scenario_id") or meta.get("id") or name))
    env.close()
    return rows
