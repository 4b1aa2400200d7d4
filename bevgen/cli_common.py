"""Shared pieces of the ``bevgen`` command and its sub-apps (views, scene3d): options, console, errors,
the run-config record. Imports only typer at module level, so ``import bevgen.cli`` stays light."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["ConfigOpt", "SetOpt", "console", "fail", "save_run_config"]

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file; unknown keys are errors.")
SetOpt = typer.Option(None, "--set", help="Override a config field: --set key=value (repeatable, value is YAML).")


def console():
    """A rich console on stderr (stdout stays free for JSON output)."""
    from rich.console import Console

    return Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` and exit with ``code`` (2: bad input)."""
    console().print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def save_run_config(out: Path, command: str, config: dict) -> None:
    """Record the command and its resolved config as ``out/bevgen_run.yaml``."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / "bevgen_run.yaml").write_text(yaml.safe_dump({"command": command, "config": config}, sort_keys=False))
