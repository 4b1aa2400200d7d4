"""Dataset directories: scenario files indexed by ``dataset_summary.pkl`` and ``dataset_mapping.pkl``.

``ScenarioDataset`` opens a directory (the index read through the safe loader, every named file
checked to exist); ``DatasetWriter`` writes one scenario at a time, atomically and resumably, and
reports bad items without losing the good ones; ``summarize`` and ``write_index`` produce the index
MetaDrive's ``ScenarioEnv`` reads; ``merge_datasets`` indexes several directories as one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runkit.links import relative_symlink
from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError, safe_load
from sim_bridge.scenario import (MAPPING_FILE, SUMMARY_FILE, Scenario, ScenarioError, atomic_pickle,
                                 load_scenario)

__all__ = ["ScenarioDataset", "DatasetWriter", "ConversionReport", "write_index", "summarize", "merge_datasets"]


def summarize(d: Mapping) -> dict:
    """Summary entry for ``dataset_summary.pkl``: metadata + object and number summaries."""
    meta = {k: v for k, v in d["metadata"].items() if k not in ("object_summary", "number_summary")}
    objects = {}
    for aid, t in d["tracks"].items():
        st = t["state"]
        valid = np.asarray(st["valid"]).astype(bool)
        xy = np.asarray(st["position"])[valid][:, :2]
        run = _first_run_length(valid)
        objects[str(aid)] = {"type": t["type"], "object_id": str(aid), "track_length": int(len(valid)),
                             "moving_distance": float(np.linalg.norm(np.diff(xy, axis=0), axis=-1).sum()),
                             "valid_length": int(valid.sum()), "continuous_valid_length": int(run)}
    types = Counter(t["type"] for t in d["tracks"].values())
    light_states = Counter(s for tl in d["dynamic_map_states"].values() for s in tl["state"]["object_state"])
    numbers = {"num_objects": len(d["tracks"]), "object_types": set(types),
               "num_objects_each_type": dict(types),
               "num_moving_objects": sum(o["moving_distance"] > 1.0 for o in objects.values()),
               "num_traffic_lights": len(d["dynamic_map_states"]),
               "num_traffic_light_types": set(light_states), "num_traffic_light_each_step": dict(light_states),
               "num_map_features": len(d["map_features"])}
    return {**meta, "object_summary": objects, "number_summary": numbers}


def _first_run_length(valid: np.ndarray) -> int:
    """Length of the first run of consecutive True values in a bool [T] mask."""
    if not valid.any():
        return 0
    rest = valid[int(np.argmax(valid)):]
    return int(rest.size if rest.all() else np.argmin(rest))


# ---- dataset directories ------------------------------------------------------------------
class ScenarioDataset:
    """A dataset directory: scenario files indexed by ``dataset_summary.pkl``/``dataset_mapping.pkl``.

    Opening checks the index (safely unpickled) and that every file it names exists; a missing
    index is rebuilt from the ``*.pkl`` files present so that un-indexed folders still open.
    """

    def __init__(self, root: str | Path, repair: bool = False):
        self.root = Path(root)
        self.repair = repair
        if not self.root.is_dir():
            raise ScenarioError(str(self.root), "<dataset>", "not a directory")
        summary_path, mapping_path = self.root / SUMMARY_FILE, self.root / MAPPING_FILE
        if summary_path.exists():
            summary = safe_load(summary_path)
            if not isinstance(summary, dict):
                raise ScenarioError(str(summary_path), "<root>", "expected a dict of file name -> metadata")
        else:
            summary = {p.name: {} for p in sorted(self.root.glob("*.pkl"))  # hidden: an unfinished atomic write
                       if p.name not in (SUMMARY_FILE, MAPPING_FILE) and not p.name.startswith(".")}
        mapping = safe_load(mapping_path) if mapping_path.exists() else {}
        if not isinstance(mapping, dict):
            raise ScenarioError(str(mapping_path), "<root>", "expected a dict of file name -> sub-folder")
        if not summary:
            raise ScenarioError(str(self.root), "<dataset>",
                                f"empty dataset directory: no scenario files and no entries in {SUMMARY_FILE}")
        self.summary: dict = summary
        self.mapping: dict = {k: str(mapping.get(k, "")) for k in summary}
        missing = [k for k in summary if not self.path_of(k).is_file()]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise ScenarioError(str(summary_path), "<summary>",
                                f"names {len(missing)} missing scenario file(s): {', '.join(missing[:3])}{more}")

    @property
    def names(self) -> list[str]:
        return list(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def path_of(self, name: str) -> Path:
        return self.root / self.mapping.get(name, "") / name

    def load(self, name: str) -> Scenario:
        return load_scenario(self.path_of(name), repair=self.repair)

    def __iter__(self) -> Iterator[Scenario]:
        for name in self.names:
            yield self.load(name)

    def iter_checked(self, names: list[str] | None = None) -> Iterator[tuple[str, Scenario | Exception]]:
        """Yield (file name, Scenario) or (file name, error) for every file (or ``names``): bad files never
        stop the loop."""
        for name in self.names if names is None else names:
            try:
                yield name, self.load(name)
            except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
                yield name, e


def write_index(root: str | Path, summaries: Mapping[str, dict], mapping: Mapping[str, str] | None = None) -> None:
    """Write ``dataset_summary.pkl`` and ``dataset_mapping.pkl`` atomically."""
    root = Path(root)
    atomic_pickle(dict(summaries), root / SUMMARY_FILE)
    atomic_pickle({k: (mapping or {}).get(k, "") for k in summaries}, root / MAPPING_FILE)


def merge_datasets(roots: list[str | Path], out: str | Path) -> Path:
    """One dataset directory that indexes several (ScenarioNet's merged-database layout): ``out`` holds only
    ``dataset_summary.pkl`` and ``dataset_mapping.pkl``, whose mapping points each file name at the folder
    that holds it (relative to ``out``), so MetaDrive and :class:`ScenarioDataset` read the union without a
    copy. A file name that two sources share (an augmented copy of a real scene keeps its name) is indexed
    under ``sd_<source folder>__<name without sd_>`` (MetaDrive reads only names that start with ``sd_``)
    through a relative symbolic link in ``out``.

    Every source is opened (and so checked) first; ``out`` is rewritten only when all of them open.
    """
    out = Path(out)
    sources = [ScenarioDataset(r) for r in roots]
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict] = {}
    mapping: dict[str, str] = {}
    for ds in sources:
        for name in ds.names:
            target = ds.path_of(name).resolve()
            key = name if name not in summaries else \
                f"sd_{ds.root.resolve().name}__{name[3:] if name.startswith('sd_') else name}"
            if key in summaries:
                raise ScenarioError(str(ds.root), name, f"indexed twice in the merge into {out}")
            if key == name:
                mapping[key] = os.path.relpath(target.parent, out.resolve())
            else:
                relative_symlink(out / key, target)  # survives moving the folder that holds sources and merge
                mapping[key] = ""
            summaries[key] = ds.summary.get(name, {})
    write_index(out, summaries, mapping)
    return out


@dataclass
class ConversionReport:
    """What a conversion wrote and what it skipped, with the reason for each bad item."""

    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        return {"written": self.written, "reused": self.reused,
                "failed": [{"item": n, "error": e} for n, e in self.failed],
                "repaired": [{"item": n, "repair": r} for n, r in self.repaired]}


class DatasetWriter:
    """Write a dataset directory scenario by scenario; resumable and tolerant of bad items.

    Every scenario is validated, then written atomically; the index is rewritten atomically after
    each ``flush_every`` scenarios and on close, so a killed job leaves a loadable directory and a
    rerun (``resume=True``) keeps what is already there. A bad item is recorded with its reason in
    the report (and ``conversion_report.json``) and never stops the good ones.
    """

    def __init__(self, root: str | Path, resume: bool = True, flush_every: int = 16, repair: bool = False):
        self.root = Path(root)
        self.repair = repair
        self.root.mkdir(parents=True, exist_ok=True)
        self.report = ConversionReport()
        self.summaries: dict[str, dict] = {}
        self.flush_every = flush_every
        if resume and (self.root / SUMMARY_FILE).exists():
            try:
                old = safe_load(self.root / SUMMARY_FILE)
                self.summaries = {k: v for k, v in old.items() if (self.root / k).is_file()}
            except (UnsafePickleError, CorruptFileError):
                self.summaries = {}

    def has(self, filename: str) -> bool:
        return filename in self.summaries

    def reuse(self, filename: str) -> None:
        self.report.reused.append(filename)

    def add(self, filename: str, d: Scenario | Mapping) -> Path:
        """Validate ``d`` and write it as ``filename``; raises ScenarioError on a bad scenario.

        ``d`` is a Scenario (written with ``to_dict``; what reading its source repaired is reported) or a ScenarioNet
        dict (read with this writer's ``repair``; written as given unless repaired).
        """
        path = self.root / filename
        if Path(filename).name != filename or not filename.endswith(".pkl") or filename in (SUMMARY_FILE, MAPPING_FILE):
            raise ScenarioError(filename, "<file name>", "must be a plain '*.pkl' file name")
        if isinstance(d, Scenario):
            sc = d.validate(filename)
            out = sc.to_dict()
        else:
            sc = Scenario.from_dict(d, src=filename, repair=self.repair)
            out = d
        repairs = list(sc.source.repairs) if sc.source is not None else []
        if repairs:
            self.report.repaired.append((filename, "; ".join(repairs)))
            if out is d:  # drop what from_dict dropped
                out = {**d, "metadata": sc.metadata,
                       "map_features": {k: v for k, v in d["map_features"].items() if str(k) in sc.map_features}}
        atomic_pickle(dict(out), path)
        self.summaries[filename] = summarize(out)
        self.report.written.append(filename)
        if len(self.report.written) % self.flush_every == 0:
            self.flush()
        return path

    def fail(self, item: str, error: BaseException | str) -> None:
        self.report.failed.append((item, str(error)))

    def add_or_fail(self, item: str, filename: str, d: Scenario | Mapping | BaseException) -> bool:
        """Write a good item, record a bad one (an exception or a dict failing validation)."""
        if isinstance(d, BaseException):
            self.fail(item, d)
            return False
        try:
            self.add(filename, d)
            return True
        except ScenarioError as e:
            self.fail(item, e)
            return False

    def flush(self) -> None:
        if self.summaries:
            write_index(self.root, self.summaries)

    def close(self) -> ConversionReport:
        self.flush()
        (self.root / "conversion_report.json").write_text(json.dumps(self.report.to_json(), indent=2))
        return self.report

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
