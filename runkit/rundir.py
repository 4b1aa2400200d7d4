"""Run directories: ``config.yaml``, ``checkpoints/``, logs. The checks a trainer makes before it starts.

* :func:`check_resume`: a fresh run refuses a directory that already holds a checkpoint; ``--resume``
  needs one.
* :func:`run_config_file`: the config a command reads; a resumed run defaults to its own ``config.yaml``.
* :func:`config_differences`: the fields where a checkpoint's stored config and the config a run is
  resumed (or continued) with disagree, so a trainer can refuse a changed model or data config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from runkit.config import from_dict, to_dict

__all__ = ["LATEST", "CONFIG", "check_resume", "run_config_file", "config_differences"]

LATEST = Path("checkpoints") / "latest.pt"
"""A run directory's newest checkpoint, relative to the run directory."""
CONFIG = "config.yaml"
"""The resolved config every trainer saves in its run directory (``runkit.config.save_config``)."""


def check_resume(run_dir: str | Path, resume: bool, checkpoint: str | Path = LATEST) -> Path | None:
    """The checkpoint a run continues from, after checking that ``resume`` fits the directory.

    Args:
        run_dir: the run directory.
        resume: whether the caller asked to continue the run (``--resume``).
        checkpoint: the checkpoint file, relative to ``run_dir``.
    Returns:
        ``run_dir / checkpoint`` when resuming, else None.
    Raises:
        FileNotFoundError: resuming, but there is no checkpoint.
        FileExistsError: not resuming, but the directory already holds a checkpoint.
    """
    path = Path(run_dir) / checkpoint
    if resume and not path.exists():
        raise FileNotFoundError(f"{run_dir}: --resume given but no {Path(checkpoint).as_posix()} to resume from")
    if not resume and path.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    return path if resume else None


def run_config_file(run_dir: str | Path, resume: bool, config: str | Path | None) -> Path | None:
    """The YAML config a training command reads: ``config`` when given; else, when resuming, the run's own
    ``config.yaml`` (so resuming does not silently change the run's settings; overrides still apply).

    Args:
        run_dir: the run directory (``--out``).
        resume: whether the command continues the run.
        config: the ``--config`` file, or None.
    Returns:
        the config file to load, or None for the config class's defaults.
    """
    if config is not None:
        return Path(config)
    own = Path(run_dir) / CONFIG
    return own if resume and own.exists() else None


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"section.field": value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: dict, cfg: Any, fields: Sequence[str], ignore: Sequence[str] = ()) -> list[str]:
    """Fields where a checkpoint's stored config and ``cfg`` disagree.

    Args:
        stored: the ``config`` dict of a checkpoint (``to_dict`` of a config of ``type(cfg)``; missing
            fields take their defaults).
        cfg: the config dataclass to compare with.
        fields: dotted sections or fields to compare, e.g. ("tokenizer", "data.image_size").
        ignore: dotted fields left out.
    Returns:
        one "field: checkpoint X, config Y" line per differing field (empty when they agree).
    """
    old = _flat(json.loads(json.dumps(to_dict(from_dict(type(cfg), stored)))))
    new = _flat(json.loads(json.dumps(to_dict(cfg))))

    def wanted(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in fields) and key not in ignore

    return [f"{k}: checkpoint {old.get(k)!r}, config {new.get(k)!r}"
            for k in sorted(set(old) | set(new)) if wanted(k) and old.get(k) != new.get(k)]
