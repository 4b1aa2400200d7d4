"""Run plumbing shared by every trainer (traffic, views, bevseg, scene3d, PPO) and the exporters.

Nothing here knows about scenarios, cameras or models:

* ``runkit.config``: strict YAML <-> dataclass configs (``load_config``, ``from_dict``, ``to_dict``,
  ``save_config``, ``apply_overrides``, ``ConfigError``).
* ``runkit.atomic``: ``atomic_write`` (temp file + rename: an interrupted write never leaves half a file).
* ``runkit.checkpoint``: ``save_checkpoint`` (atomic) and ``load_checkpoint`` (``weights_only=True``).
* ``runkit.seeding``: ``seed_everything`` and ``stream_seed``.
* ``runkit.distributed``: ``setup_distributed`` (rank, world size, device; torchrun or one process).
* ``runkit.rundir``: a run directory's resume checks (``check_resume``, ``config_differences``).
* ``runkit.links``: ``relative_symlink`` (links that survive moving the folder that holds both ends).

Importing runkit (or any of its modules) does not import torch.
"""
