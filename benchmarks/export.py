"""Export throughput (scenarios/s) per format, on the shared real scenes and on procedural ones.

``bench_export()`` returns a dict; benchmarks/run.py writes it to benchmarks/results/export.json.
Each format is timed over the whole set (load excluded, files written to a temp dir), one process,
one thread. The ASAM checker time is reported separately for OpenSCENARIO (it dominates).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from sim_bridge.sources.real import REAL_DIR

ROOT = Path(__file__).resolve().parents[1]
PROCEDURAL = dict(num_scenarios=3, steps=100, workers=1)


def _time_formats(scenarios: list, work: Path, check: bool) -> dict:
    from sim_bridge.export import get_exporter

    out = {}
    try:
        import commonroad  # noqa: F401
        formats = ("waymo", "openscenario", "commonroad")
    except ImportError:  # commonroad-io is part of bevgen[export]
        formats = ("waymo", "openscenario")
    for fmt in formats:
        export = get_exporter(fmt)
        t0 = time.perf_counter()
        results = [export(sc, work / fmt, sc.id) for sc in scenarios]
        dt = time.perf_counter() - t0
        row = {"scenarios": len(scenarios), "seconds": round(dt, 3), "scenarios_per_s": round(len(scenarios) / dt, 2),
               "mb_written": round(sum(p.stat().st_size for r in results for p in r.files) / 1e6, 2)}
        if fmt == "openscenario" and check:
            from sim_bridge.export.asam_qc import check_file

            t0 = time.perf_counter()
            reports = [check_file(p) for r in results for p in r.files]
            row["asam_check_seconds"] = round(time.perf_counter() - t0, 3)
            row["asam_errors"] = sum(r.errors for r in reports)
            row["asam_warnings"] = sum(r.warnings for r in reports)
        out[fmt] = row
    return out


def _procedural(work: Path) -> list:
    from sim_bridge.dataset import ScenarioDataset
    from sim_bridge.sources.procedural import ProceduralConfig, generate_procedural

    report = generate_procedural(ProceduralConfig(**PROCEDURAL), work / "procedural", resume=False)
    if not report.ok:
        raise RuntimeError(f"procedural generation failed: {report.failed}")
    return list(ScenarioDataset(work / "procedural"))


def bench_export(check: bool = True) -> dict:
    """Scenarios/s per export format on the 7 real scenes and on 3 procedural (100-step) ones.

    Args:
        check: also time the ASAM checkers on the OpenSCENARIO/OpenDRIVE output and count issues.

    Returns:
        ``{"real": {format: {...}}, "procedural": {format: {...}}}``; a set that cannot be made
        (no shared data, no MetaDrive) holds ``{"skipped": reason}``.
    """
    from sim_bridge.export.asam_qc import checkers_available
    from sim_bridge.dataset import ScenarioDataset

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    check = check and checkers_available() is None
    out: dict = {"procedural_config": PROCEDURAL}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if REAL_DIR.exists():
            real = list(ScenarioDataset(REAL_DIR, repair=True))
            out["real"] = _time_formats(real, work / "real", check)
        else:
            out["real"] = {"skipped": f"{REAL_DIR} not found"}
        try:
            procedural = _procedural(work)
        except ImportError as e:
            out["procedural"] = {"skipped": f"MetaDrive not installed ({e})"}
        else:
            out["procedural"] = _time_formats(procedural, work / "proc_out", check)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_export(), indent=2))
