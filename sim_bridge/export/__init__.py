"""Export scenarios to formats other simulators and tools read, one module per format.

    waymo         Waymo Open Motion ``Scenario`` protos in TFRecord files (Waymax, WOSAC tools,
                  ScenarioNet, our own :mod:`sim_bridge.sources.waymo` reader)
    openscenario  OpenSCENARIO 1.0 (.xosc) + OpenDRIVE 1.7 (.xodr) pairs (esmini, CARLA, ...)
    commonroad    CommonRoad XML (lanelets + dynamic obstacles; CommonRoad planners and tools)

Every exporter has the same shape: ``export(scenario, out_dir, stem) -> ExportResult``, registered
by name in :data:`EXPORTERS` (a duplicate or an unknown name is an error). What each format keeps
and drops is documented in its module and in ``docs/export.md``. The heavy format libraries
(Waymo protos, scenariogeneration, commonroad-io) are imported only inside the functions that use them.
"""

from __future__ import annotations

from typing import Callable

from sim_bridge.export.commonroad import export_commonroad
from sim_bridge.export.common import ExportResult
from sim_bridge.export.openscenario import export_openscenario
from sim_bridge.export.waymo import export_waymo

__all__ = ["ExportResult", "EXPORTERS", "register_exporter", "get_exporter"]

Exporter = Callable[..., ExportResult]
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, fn: Exporter) -> None:
    """Register ``fn(scenario, out_dir, stem) -> ExportResult`` under ``name``; duplicates raise."""
    if name in EXPORTERS:
        raise ValueError(f"exporter {name!r} is already registered")
    EXPORTERS[name] = fn


def get_exporter(name: str) -> Exporter:
    """The exporter registered as ``name``; raises ``KeyError`` naming the known formats."""
    try:
        return EXPORTERS[name]
    except KeyError:
        raise KeyError(f"unknown export format {name!r}; known: {', '.join(sorted(EXPORTERS))}") from None


register_exporter("waymo", export_waymo)
register_exporter("openscenario", export_openscenario)
register_exporter("commonroad", export_commonroad)
