"""Write any stream of converted scenarios into a dataset directory, reporting bad items.

Every source (Waymo, nuScenes, procedural, an existing ScenarioNet folder) yields ``(item name, Scenario or
exception)`` pairs; :func:`write_items` validates each scenario, writes the good ones atomically and
records each bad one with its reason, so one broken record never costs the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from sim_bridge.safe_pickle import CorruptFileError, UnsafePickleError
from sim_bridge.dataset import ConversionReport, DatasetWriter, ScenarioDataset
from sim_bridge.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["write_items", "iter_scenarionet_dir"]


def write_items(items: Iterable[tuple[str, Scenario | Mapping | BaseException]], out_dir: str | Path,
                filename: Callable[[str, Scenario | Mapping], str], resume: bool = True, repair: bool = True,
                on_item: Callable[[str, bool], None] | None = None) -> ConversionReport:
    """Validate and write converted scenarios.

    Args:
        items: ``(item name, Scenario)`` for good items, ``(item name, exception)`` for bad ones; a ScenarioNet
            dict is accepted in place of a Scenario (read through the contract when written).
        out_dir: the dataset directory to write (created; existing scenarios kept when ``resume``).
        filename: (item name, scenario) -> output file name (``sd_*.pkl``).
        resume: keep scenarios already indexed in ``out_dir`` (a rerun only adds what is missing).
        repair: for dict items, drop unusable map features (lanes with < 2 points) instead of rejecting the
            scenario (a source repairs its Scenarios when it reads them; the writer reports those repairs).
        on_item: callback ``(item name, ok)`` after each item, e.g. to advance a progress bar.

    Returns:
        The report (also written to ``out_dir/conversion_report.json``).
    """
    with DatasetWriter(out_dir, resume=resume, repair=repair) as writer:
        for name, d in items:
            ok = False
            if isinstance(d, BaseException):
                writer.fail(name, d)
            else:
                try:
                    fname = filename(name, d)
                    if writer.has(fname):
                        writer.reuse(fname)
                        ok = True
                    else:
                        ok = writer.add_or_fail(name, fname, d)
                except (KeyError, TypeError, ValueError) as e:
                    writer.fail(name, e)
            if on_item:
                on_item(name, ok)
    return writer.report


def iter_scenarionet_dir(root: str | Path, repair: bool = True) -> Iterator[tuple[str, Scenario | Exception]]:
    """Yield ``(file name, Scenario)`` for every scenario of an existing dataset directory (safely unpickled,
    validated; ``repair`` as in ``Scenario.from_dict``), or ``(file name, error)`` for a file that cannot be read."""
    ds = ScenarioDataset(root)
    for name in ds.names:
        try:
            yield name, load_scenario(ds.path_of(name), repair=repair)
        except (ScenarioError, UnsafePickleError, CorruptFileError) as e:
            yield name, e
