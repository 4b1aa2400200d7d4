"""Shared pieces of the ``bevgen`` command and its sub-apps (views, scene3d): options, console, errors,
the run-config record. Imports only typer, rich, yaml and runkit.atomic at module level, so ``import bevgen.cli``
stays light."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from runkit.atomic import atomic_write_text

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

__all__ = ["ConfigOpt", "SetOpt", "SCENARIOS", "SCENARIO", "LAYOUT", "SCENARIO_METAVARS", "console", "fail",
           "progress", "save_run_config", "save_invocation", "check_device", "refuse_other_settings"]

# Metavars of every option or argument that reads scenario pickles (a dataset directory, a scenario
# file, or a layout that may be a scenario file). Besides documenting the input in --help, they let
# tests/test_untrusted_input.py find every such command in the CLI definition and plant malicious
# files under it, so a new command is covered as soon as it is declared.
SCENARIOS = "SCENARIOS"
SCENARIO = "SCENARIO"
LAYOUT = "LAYOUT"
SCENARIO_METAVARS = (SCENARIOS, SCENARIO, LAYOUT)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file; unknown keys are errors.")
SetOpt = typer.Option(None, "--set", help="Override a config field: --set key=value (repeatable, value is YAML).")


def console():
    """A rich console on stderr (stdout stays free for JSON output)."""

    return Console(stderr=True)


def progress():
    """A rich progress bar (description, bar, done/total, elapsed, remaining) on the stderr console."""

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console(), transient=False)


def fail(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` and exit with ``code`` (2: bad input)."""
    console().print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def save_run_config(out: Path, command: str, config: dict) -> None:
    """Record the command and its resolved config as ``out/bevgen_run.yaml``."""

    atomic_write_text(out / "bevgen_run.yaml", yaml.safe_dump({"command": command, "config": config}, sort_keys=False))


def save_invocation(ctx: typer.Context, out: Path) -> None:
    """Record the running command (``views eval``, ...) and every option's resolved value, defaults included, as
    ``out/bevgen_run.yaml`` (``save_run_config``): for commands whose options are their whole configuration.
    ``ctx``: the command's ``typer.Context`` (a ``ctx: typer.Context`` parameter)."""
    from runkit.config import to_dict  # paths as strings, sequences as lists

    names, c = [], ctx
    while c.parent is not None:  # the sub-command chain below the root command
        names.append(c.info_name)
        c = c.parent
    save_run_config(out, " ".join(reversed(names)), to_dict(dict(ctx.params)))


def refuse_other_settings(out: Path, command: str, config: dict, keys: tuple[str, ...], hint: str = "") -> None:
    """For commands that resume into ``out``, keeping what an earlier run wrote there: fail when ``out``'s record
    (``save_run_config``) is another command's, or the same command's with other values of ``keys`` (the settings
    that change what is written), so one folder never mixes outputs of two settings. No record: nothing to check.
    ``hint``: another way out, added to the message."""
    record = out / "bevgen_run.yaml"
    if not record.exists():
        return
    old = yaml.safe_load(record.read_text()) or {}
    before = old.get("config") or {}
    way_out = "use another --out" + (f", {hint}" if hint else "")
    if old.get("command") != command:
        fail(f"{out} holds a `{old.get('command')}` run, not `{command}`: {way_out}")
    changed = [k for k in keys if before.get(k) != config.get(k)]
    if changed:
        fail(f"{out} holds a `{command}` run made with " + ", ".join(f"{k}={before.get(k)}" for k in changed)
             + "; resuming would keep its outputs beside ones made with "
             + ", ".join(f"{k}={config.get(k)}" for k in changed) + f": {way_out}, or the same settings")


def check_device(device: str) -> None:
    """Fail with a clear message when ``--device`` names a device this machine lacks (imports torch)."""
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        fail(f"--device must be cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA GPU is visible on this machine; use --device cpu")
