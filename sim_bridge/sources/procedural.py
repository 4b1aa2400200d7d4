"""Procedural scenarios: MetaDrive procedural (PG) maps with IDM traffic, exported to the contract.

This is the embedded default source: it needs no data and no network. Each worker process runs
one headless MetaDrive engine (MetaDrive allows one per process) and exports scenarios by seed as
:class:`~sim_bridge.scenario.Scenario` objects (validated in the worker; :func:`iter_procedural_scenarios`); the
parent process writes them through :class:`sim_bridge.dataset.DatasetWriter`, so a killed run resumes where it
stopped and one failing seed is reported without losing the others.

Determinism: a scenario depends only on its seed (map, traffic and IDM ego), not on the worker that
ran it or on what ran before. MetaDrive names agents with random UUIDs; we rename them to stable
ids (``ego``, ``vehicle_0``, ...) so that the same seed gives byte-identical arrays and ids.
Cost: O(steps x agents) physics per scenario, ~1 s for 200 steps on one core; linear in workers.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from sim_bridge.dataset import ConversionReport, DatasetWriter
from sim_bridge.envs.metadrive import episode_dump_without_copy, make_procedural_env
from sim_bridge.scenario import Scenario

# metadrive (optional `sim` extra) is imported lazily, when an environment is made.

__all__ = ["ProceduralConfig", "generate_procedural", "iter_procedural_scenarios", "scenario_filename"]


@dataclass(frozen=True)
class ProceduralConfig:
    """Procedural scenario generation (MetaDrive PG maps + IDM traffic)."""

    num_scenarios: int = 8
    """How many scenarios (one map each) to generate."""
    start_seed: int = 0
    """Seed of the first scenario; scenario i uses seed start_seed + i."""
    steps: int = 200
    """Simulated steps per scenario at 10 Hz (200 = 20 s). A scenario holds at most steps + 2 frames
    (MetaDrive also records the reset frames) and fewer if the IDM ego reaches its destination."""
    map_blocks: int = 3
    """Road blocks per procedural map (straights, curves, intersections, roundabouts...)."""
    traffic_density: float = 0.15
    """MetaDrive traffic density (vehicles per 10 m of lane, roughly)."""
    workers: int = 2
    """Worker processes, one MetaDrive engine each."""

    def __post_init__(self):
        if self.num_scenarios < 1:
            raise ValueError("num_scenarios must be >= 1")
        if self.steps < 2:
            raise ValueError("steps must be >= 2 (a scenario needs at least two frames)")
        if not 0.0 <= self.traffic_density <= 1.0:
            raise ValueError(f"traffic_density must be in [0, 1], got {self.traffic_density}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.map_blocks < 1:
            raise ValueError("map_blocks must be >= 1")


def scenario_filename(seed: int) -> str:
    return f"sd_procedural_seed{seed:06d}.pkl"


# ---- worker side -------------------------------------------------------------------------------
def _make_env(cfg: ProceduralConfig, seed: int):
    from metadrive.policy.idm_policy import IDMPolicy

    return make_procedural_env(
        num_scenarios=1, start_seed=seed, map=cfg.map_blocks, traffic_density=cfg.traffic_density,
        agent_policy=IDMPolicy, horizon=cfg.steps + 10,
        # The ego is driven by IDM, so its sensors are never read: skip their ray casts.
        vehicle_config=dict(lidar=dict(num_lasers=0, distance=0), side_detector=dict(num_lasers=0),
                            lane_line_detector=dict(num_lasers=0)))


def _rename_agents(d: dict) -> dict:
    """Replace MetaDrive's random UUID agent ids by stable ones (ego, vehicle_0, ...).

    MetaDrive's track order follows set iteration over UUID strings (it changes with the process's
    hash seed), so tracks are first put in a canonical order: ego, then by type, first valid step
    and first position.
    """
    sdc = d["metadata"]["sdc_id"]

    def key(item):
        aid, t = item
        valid = np.asarray(t["state"]["valid"]).astype(bool)
        first = int(np.argmax(valid)) if valid.any() else len(valid)
        x, y = (np.asarray(t["state"]["position"])[first, :2] if valid.any() else (0.0, 0.0))
        return (aid != sdc, str(t["type"]), first, round(float(x), 3), round(float(y), 3))

    d = {**d, "tracks": dict(sorted(d["tracks"].items(), key=key))}
    counters: dict[str, int] = {}
    mapping = {}
    for aid, t in d["tracks"].items():
        if aid == sdc:
            mapping[aid] = "ego"
        else:
            typ = str(t["type"]).lower()
            mapping[aid] = f"{typ}_{counters.setdefault(typ, 0)}"
            counters[typ] += 1
    tracks = {}
    for aid, t in d["tracks"].items():
        meta = dict(t.get("metadata", {}))
        for k in ("object_id", "original_id"):
            if k in meta:
                meta[k] = mapping[aid]
        meta.pop("spawn_info", None)       # names MetaDrive classes; irrelevant outside it
        meta.pop("policy_spawn_info", None)
        tracks[mapping[aid]] = {**t, "metadata": meta}
    meta = dict(d["metadata"])
    meta["sdc_id"] = "ego"
    for k in ("agent_to_object", "object_to_agent"):
        meta.pop(k, None)
    return {**d, "tracks": tracks, "metadata": meta}


def _export_one(job: tuple[ProceduralConfig, int]) -> tuple[int, Scenario | str]:
    """Export one seed in a fresh engine (runs in a worker process).

    A fresh engine per scenario costs ~20% over reusing one, but Bullet carries solver state from
    episode to episode (cm-level drift), so only a fresh engine makes a seed's output independent
    of the worker count and of which seeds ran before it.
    """

    cfg, seed = job
    env = None
    try:
        env = _make_env(cfg, seed)
        with episode_dump_without_copy():  # safe: this engine is closed right after the export
            out, _ = env.export_scenarios(lambda obs: [0.0, 0.0], scenario_index=[seed],
                                          max_episode_length=cfg.steps, verbose=False,
                                          suppress_warning=True, to_dict=True)
        d = _rename_agents(out[seed])
        d["id"] = f"procedural_seed{seed:06d}"
        d["metadata"].update(dataset="procedural", seed=seed, scenario_id=d["id"], id=d["id"])
        return seed, Scenario.from_dict(d, src=f"procedural seed {seed}")
    except Exception as e:  # reported per seed by the parent; never kills the pool
        return seed, f"{type(e).__name__}: {e}"
    finally:
        if env is not None:
            env.close()


def _run(cfg: ProceduralConfig, seeds: list[int]) -> Iterator[tuple[int, Scenario | str]]:
    jobs = [(cfg, s) for s in seeds]
    if cfg.workers == 1 or len(seeds) == 1:
        yield from map(_export_one, jobs)
        return
    ctx = mp.get_context("spawn")  # MetaDrive keeps process-wide singletons: never fork them
    with ctx.Pool(min(cfg.workers, len(seeds)), maxtasksperchild=16) as pool:
        yield from pool.imap_unordered(_export_one, jobs)


def iter_procedural_scenarios(cfg: ProceduralConfig, seeds: Iterable[int] | None = None
                              ) -> Iterator[tuple[int, Scenario | Exception]]:
    """Export procedural scenarios, ``cfg.workers`` MetaDrive engines in parallel.

    Args:
        cfg: generation settings.
        seeds: the seeds to export (default: ``cfg.start_seed .. + cfg.num_scenarios - 1``).

    Returns:
        Iterator of ``(seed, Scenario)`` (validated, ids ``ego``, ``vehicle_0``, ...) or ``(seed, RuntimeError)``
        naming what failed, in completion order (not seed order when ``cfg.workers > 1``).
    """
    seeds = [cfg.start_seed + i for i in range(cfg.num_scenarios)] if seeds is None else list(seeds)
    for seed, result in (_run(cfg, seeds) if seeds else ()):
        yield seed, RuntimeError(result) if isinstance(result, str) else result


def generate_procedural(cfg: ProceduralConfig, out_dir: str | Path, resume: bool = True,
                        progress: Callable[[int, int], Any] | None = None) -> ConversionReport:
    """Generate ``cfg.num_scenarios`` procedural scenarios into the dataset directory ``out_dir``.

    Args:
        cfg: generation settings.
        out_dir: output dataset directory (created; existing scenarios are kept when ``resume``).
        resume: skip seeds whose scenario file is already indexed in ``out_dir``.
        progress: optional callback ``(done, total)`` after each scenario.

    Returns:
        The report of written, reused and failed items (also in ``conversion_report.json``).
    """
    seeds = [cfg.start_seed + i for i in range(cfg.num_scenarios)]
    with DatasetWriter(out_dir, resume=resume, flush_every=4) as writer:
        todo = []
        for s in seeds:
            if writer.has(scenario_filename(s)):
                writer.reuse(scenario_filename(s))
            else:
                todo.append(s)
        done = len(seeds) - len(todo)
        if progress:
            progress(done, len(seeds))
        for seed, result in iter_procedural_scenarios(cfg, todo):
            writer.add_or_fail(f"seed {seed}", scenario_filename(seed), result)
            done += 1
            if progress:
                progress(done, len(seeds))
        # keep the index in seed order regardless of which worker finished first
        writer.summaries = dict(sorted(writer.summaries.items()))
    return writer.report
