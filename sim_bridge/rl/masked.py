"""PPO's rollout buffer with inactive env slots left out of the updates (self-play).

In self-play (:class:`sim_bridge.batched.selfplay.SelfPlayVecEnv`) a slot whose vehicle has finished
waits, inactive, until its scene restarts; SB3's ``VecEnv`` has a fixed number of envs, so those slots
still step and their transitions reach the rollout buffer. This buffer records, at every ``add``, which
slots were active when the stored observation was acted on (``active_source()``, the env's
``acted_active``) and :meth:`get` yields minibatches of the active samples only. Returns and
advantages are computed over the whole buffer as usual: the last active step of an agent is ``done``,
so no value flows across an inactive gap into an active sample.

SB3 has no masked on-policy buffer (its multi-agent users mask in their own trainers), hence this subclass.
"""

from __future__ import annotations

from typing import Callable, Generator

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples

__all__ = ["MaskedRolloutBuffer"]


class MaskedRolloutBuffer(RolloutBuffer):
    """``RolloutBuffer`` whose :meth:`get` skips samples from inactive slots.

    Set ``active_source`` (a callable returning bool [n_envs]: which slots the last stored step's
    observations were active for) after the learner is built; without it every sample counts.
    """

    active_source: Callable[[], np.ndarray] | None = None

    def reset(self) -> None:
        super().reset()
        self.active = np.ones((self.buffer_size, self.n_envs), dtype=bool)

    def add(self, *args, **kwargs) -> None:
        if self.active_source is not None:
            self.active[self.pos] = np.asarray(self.active_source(), dtype=bool).reshape(self.n_envs)
        super().add(*args, **kwargs)

    @property
    def active_samples(self) -> int:
        return int(self.active.sum())

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        assert self.full, "the rollout buffer is not full"
        # the flattened order of swap_and_flatten: env-major, then step
        keep = np.flatnonzero(self.active.T.reshape(-1))
        if not self.generator_ready:
            for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        indices = np.random.permutation(keep)
        batch_size = batch_size or len(indices)
        for start in range(0, len(indices), batch_size):
            yield self._get_samples(indices[start:start + batch_size])
