"""The ``bevgen`` command: composes the command groups of each area (bevgen/scenarios_cli.py, sim_cli.py,
traffic_cli.py, views/cli.py, scene3d/cli.py). Sub-commands import their heavy dependencies only when they run.

    bevgen scenarios procedural|convert|validate|info|bev|export   scenario datasets (sim_bridge)
    bevgen traffic train|generate|augment|eval              learned traffic (traffic)
    bevgen sim train|eval|rollout|experiment                PPO agents in MetaDrive (sim_bridge.rl)
    bevgen views dataset|train|sample|eval                  six camera views from a BEV layout
    bevgen scene3d train|render|eval                        compositional 3D-aware scene generator
    bevgen demo                                             the main job, end to end, with a report
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from bevgen.cli_common import console as _console
from bevgen.scenarios_cli import app as scenarios_app
from bevgen.scene3d.cli import app as scene3d_app
from bevgen.sim_cli import app as sim_app
from bevgen.traffic_cli import app as traffic_app
from bevgen.views.cli import app as views_app

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.


class _Bevgen(TyperGroup):
    """The top-level group: an unsafe, oversized or corrupt file reaching any command (however deep) is
    one clear line and exit code 2, never a traceback."""

    def invoke(self, ctx):
        from sim_bridge.safe_pickle import LOAD_ERRORS

        try:
            return super().invoke(ctx)
        except LOAD_ERRORS as e:
            _console().print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None


app = typer.Typer(help="bevgen: BEV layouts, camera views, traffic generation and RL on one scenario contract.",
                  cls=_Bevgen, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Each area defines its commands in its own module; none of them imports anything heavy at module level.
app.add_typer(scenarios_app, name="scenarios")
app.add_typer(sim_app, name="sim")
app.add_typer(traffic_app, name="traffic")
app.add_typer(views_app, name="views")
app.add_typer(scene3d_app, name="scene3d")


# ---- demo ---------------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    fast: bool = typer.Option(False, "--fast", help="Smallest settings: a smoke run in well under 3 minutes."),
    workers: int = typer.Option(2, "--workers", "-j", min=1, help="Worker processes."),
):
    """Run the main job on the embedded default data (procedural scenarios) and write report.html."""
    from bevgen.demo import run_demo

    report = run_demo(out, fast=fast, workers=workers, console=_console())
    _console().print(f"[bold green]done[/]: open {report}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
