"""Run the ASAM Quality Checker bundles on exported files, in process and offline.

``asam-qc-opendrive`` and ``asam-qc-openscenarioxml`` ship their XML schemas, so they need no
network. Each bundle is run the way its command line runs it (a Configuration naming the input
file, a Result, ``run_checks``), and the issues are counted by level. Checkers the bundle skips
(preconditions not met, or a rule newer than the file's version) or that crash are listed.

The bundles configure the root logger when imported (``logging.basicConfig`` in their ``main``);
they are imported only inside :func:`check_file`, never at import of this module.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

# qc_baselib (optional `export` extra) is imported lazily, when a file is checked.

__all__ = ["CheckReport", "check_file", "checkers_available"]

_BUNDLES = {".xodr": ("qc_opendrive.main", "qc_opendrive.constants"),
            ".xosc": ("qc_openscenario.main", "qc_openscenario.constants")}


@dataclass
class CheckReport:
    """Issues one ASAM checker bundle found in one file.

    Attributes:
        file: the checked file.
        errors, warnings, infos: issue counts by level.
        issues: ``{"rule", "level", "description"}`` per issue (level: error/warning/information).
        not_run: ``"checker_id: status"`` for checkers skipped or crashed.
    """

    file: str
    errors: int = 0
    warnings: int = 0
    infos: int = 0
    issues: list[dict] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"file": self.file, "errors": self.errors, "warnings": self.warnings, "infos": self.infos,
                "issues": self.issues, "not_run": self.not_run}


def checkers_available() -> str | None:
    """None when both bundles import, else the reason they cannot run."""

    for module, _ in _BUNDLES.values():
        try:
            importlib.import_module(module)
        except ImportError as e:
            return f"{module} not importable ({e}); install bevgen[export]"
    return None


def check_file(path: str | Path) -> CheckReport:
    """Run the OpenDRIVE (.xodr) or OpenSCENARIO XML (.xosc) bundle on ``path``.

    Raises:
        ValueError: the suffix is neither .xodr nor .xosc.
        ImportError: the bundle is not installed.
    """

    path = Path(path)
    if path.suffix not in _BUNDLES:
        raise ValueError(f"{path}: no ASAM checker bundle for {path.suffix!r} files")
    main_name, const_name = _BUNDLES[path.suffix]
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        main, constants = importlib.import_module(main_name), importlib.import_module(const_name)
        from qc_baselib import Configuration, Result, StatusType
        from qc_baselib.models.common import IssueSeverity
    finally:  # undo the bundles' logging.basicConfig; keep their per-checker INFO lines quiet
        root.setLevel(level)
        root.handlers[:] = handlers
    config = Configuration()
    config.set_config_param("InputFile", str(path))
    result = Result()
    result.register_checker_bundle(name=constants.BUNDLE_NAME, description="bevgen export check",
                                   version=constants.BUNDLE_VERSION, summary="")
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        main.run_checks(config, result)
    finally:
        logging.disable(previous)
    report = CheckReport(str(path))
    names = {IssueSeverity.ERROR: "error", IssueSeverity.WARNING: "warning", IssueSeverity.INFORMATION: "information"}
    for checker in result.get_checker_results(constants.BUNDLE_NAME):
        if checker.status != StatusType.COMPLETED:
            report.not_run.append(f"{checker.checker_id}: {checker.status.value} ({checker.summary})")
        for issue in checker.issues:
            report.issues.append({"rule": issue.rule_uid, "level": names[issue.level],
                                  "description": issue.description})
    report.errors = sum(i["level"] == "error" for i in report.issues)
    report.warnings = sum(i["level"] == "warning" for i in report.issues)
    report.infos = sum(i["level"] == "information" for i in report.issues)
    return report
