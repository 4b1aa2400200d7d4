"""``bevgen scene3d train | render | eval``: the compositional 3D-aware scene generator.

Heavy dependencies (torch) are imported inside the commands, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from bevgen.cli_common import LAYOUT, ConfigOpt, SetOpt, check_device, save_invocation
from bevgen.cli_common import console as _console
from bevgen.cli_common import fail as _fail

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

__all__ = ["app"]

app = typer.Typer(help="Compositional 3D-aware scene generator (NeRF-GAN driven by BEV boxes): train, render "
                       "and edit layouts (move / rotate / add / delete / restyle objects, move the camera), evaluate.",
                  no_args_is_help=True)





def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        _fail(f"{what}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _indexed(text: str, what: str) -> tuple[int, str]:
    if ":" not in text:
        _fail(f"{what}: expected INDEX:VALUE, got {text!r}")
    i, rest = text.split(":", 1)
    try:
        return int(i), rest
    except ValueError:
        _fail(f"{what}: object index must be an integer, got {i!r}")
        raise


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Frame dataset directory (`bevgen views dataset`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, TensorBoard, samples, checkpoints)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (config: steps)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
):
    """Train the generator (CPU/GPU; multi-GPU: `torchrun --nproc_per_node G -m bevgen.scene3d.train ...`)."""
    from bevgen.scene3d.train import Scene3DTrainConfig, train_scene3d
    from runkit.config import ConfigError, load_config
    from runkit.rundir import run_config_file

    if not data.is_dir():
        _fail(f"not a dataset directory: {data}")
    config = run_config_file(out, resume, config)
    overrides = list(set_ or []) + ([f"steps={steps}"] if steps else [])
    try:
        cfg = load_config(Scene3DTrainConfig, config, overrides)
        summary = train_scene3d(cfg, data, out, resume=resume)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    _console().print(f"{summary['final_step'] - summary['start_step']} steps in {summary['seconds']:.0f} s "
                     f"({summary['steps_per_second']:.2f} steps/s) on {summary['frames']} samples; "
                     f"box_alpha_iou {summary['box_alpha_iou']:.3f}; run in {out}")
    for p in summary["problems"]:
        _console().print(f"[yellow]skipped[/] {p}", highlight=False)


@app.command("render")
def render_cmd(
    ctx: typer.Context,
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory or checkpoint file."),
    layout: Path = typer.Option(..., "--layout", metavar=LAYOUT,
                                help="Layout: .json (SceneLayout), frame .npz or scenario .pkl."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    frame: int = typer.Option(0, "--frame", min=0, help="Frame of a scenario layout."),
    camera: str = typer.Option("CAM_FRONT", "--camera", help="Camera of a frame/scenario layout: CAM_FRONT, "
                               "CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK, CAM_BACK_LEFT or CAM_FRONT_LEFT on the "
                               "nuScenes rig (or the frame file's own camera names)."),
    seed: int = typer.Option(0, "--seed", help="Latent seed."),
    move: Optional[List[str]] = typer.Option(None, "--move", help="I:dx,dy,dz  move object I (ego frame, m)."),
    rotate: Optional[List[str]] = typer.Option(None, "--rotate", help="I:degrees  turn object I (CCW)."),
    add: Optional[List[str]] = typer.Option(None, "--add", help="x,y,z,l,w,h,yaw_deg  add a vehicle."),
    delete: Optional[List[int]] = typer.Option(None, "--delete", help="I  delete object I."),
    restyle: Optional[List[str]] = typer.Option(None, "--restyle", help="I:SEED  new latent for object I."),
    camera_move: Optional[str] = typer.Option(None, "--camera-move", help="dx,dy,dz,yaw_deg  move/turn the camera."),
    orbit: float = typer.Option(0.0, "--orbit", help="Orbit the camera by DEG about a point 15 m ahead."),
    gif: bool = typer.Option(False, "--gif", help="Also write orbit.gif and move.gif (first object)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (a CUDA GPU)."),
):
    """Render a layout, apply edits, write before/after PNGs, the edited layout and optional GIFs."""
    from bevgen.scene3d import edit as E
    from bevgen.scene3d.layout import load_layout
    from bevgen.scene3d.train import load_scene3d

    check_device(device)
    try:
        gen = load_scene3d(ckpt, device)
        size = gen.cfg.image_size
        lay = load_layout(layout, frame, camera, size, gen.train_config.data.max_objects,
                          gen.train_config.data.class_filter)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        _fail(str(e))
    lat = E.SceneLatents.from_seed(lay.num_boxes, gen.cfg.z_dim, seed)
    try:  # edits are checked before anything is rendered or written
        edited, elat = _apply_edits(lay, lat, seed, move, rotate, add, delete, restyle, camera_move, orbit)
    except (IndexError, ValueError) as e:
        _fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    save_invocation(ctx, out)
    with _console().status("rendering" + (" and the GIFs" if gif else "")):
        before = E.render(gen, lay, lat)
        after = E.render(gen, edited, elat)
        _save_render_outputs(gen, out, lay, lat, edited, before, after, gif)
    _console().print(f"{int(lay.valid.sum())} objects; wrote {out}/render.png, edited.png"
                     + (", orbit.gif, move.gif" if gif else ""))


def _apply_edits(lay, lat, seed: int, move: Sequence[str] | None, rotate: Sequence[str] | None,
                 add: Sequence[str] | None, delete: Sequence[int] | None, restyle: Sequence[str] | None,
                 camera_move: str | None, orbit: float):
    """Apply the ``render`` command's edit options, in a fixed order (move, rotate, delete, add, restyle,
    camera move, orbit).

    Args:
        lay: SceneLayout with N boxes; lat: SceneLatents z_obj [N, D], z_bg [D].
        seed: latent seed (added objects get ``seed + 1000 + k``).
        move, rotate, add, delete, restyle, camera_move, orbit: the raw option values (see ``render``).
    Returns:
        (edited SceneLayout, edited SceneLatents). Raises IndexError / ValueError on a bad option.
    """
    import numpy as np

    from bevgen.scene3d import edit as E

    edited, elat = lay, lat
    for m in move or []:
        i, v = _indexed(m, "--move")
        edited = E.move_object(edited, i, _floats(v, 3, "--move"))
    for r in rotate or []:
        i, v = _indexed(r, "--rotate")
        edited = E.rotate_object(edited, i, np.radians(float(v)))
    for i in delete or []:
        edited = E.delete_object(edited, i)
    for k, a in enumerate(add or []):
        box = _floats(a, 7, "--add")
        box[6] = np.radians(box[6])
        edited, elat, _ = E.add_object(edited, elat, box, 0, seed=seed + 1000 + k)
    for r in restyle or []:
        i, v = _indexed(r, "--restyle")
        elat = E.restyle_object(elat, i, int(v))
    if camera_move:
        d = _floats(camera_move, 4, "--camera-move")
        edited = E.move_camera(edited, d[:3], np.radians(d[3]))
    if orbit:
        edited = E.orbit_camera(edited, np.radians(orbit))
    return edited, elat


def _save_render_outputs(gen, out: Path, lay, lat, edited, before, after, gif: bool) -> None:
    """Write render/edited PNGs (RGB [R, R, 3] and alpha [R, R]), both layouts as JSON and optional GIFs."""
    import cv2
    import numpy as np

    from bevgen.scene3d import edit as E

    for name, r in (("render", before), ("edited", after)):
        cv2.imwrite(str(out / f"{name}.png"), r.rgb[..., ::-1])
        cv2.imwrite(str(out / f"{name}_alpha.png"), (r.alpha * 255).clip(0, 255).astype(np.uint8))
    lay.save_json(out / "layout.json")
    edited.save_json(out / "layout_edited.json")
    if gif:
        E.save_gif(E.orbit_frames(gen, lay, lat), out / "orbit.gif", scale=2)
        first = np.flatnonzero(lay.valid)
        if len(first):
            E.save_gif(E.move_frames(gen, lay, lat, int(first[0])), out / "move.gif", scale=2)


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="Frame dataset with the real images and the layouts."),
    out: Path = typer.Option(..., "--out", "-o", help="Where metrics.json goes."),
    num_samples: int = typer.Option(256, "--num-samples", "-n", min=1, help="Renders (layouts cycled)."),
    batch: int = typer.Option(8, "--batch", min=1, help="Renders per forward pass."),
    extractor: Optional[Path] = typer.Option(None, "--extractor", help="FID Inception weights (default: the "
                                                                     "built-in random-conv extractor)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latent codes and the sampled layouts."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (a CUDA GPU)."),
):
    """FID, KID, object-crop FID, box-alpha IoU and images/s -> metrics.json."""
    from bevgen.features import load_extractor
    from bevgen.scene3d.data import load_scene3d_data
    from bevgen.scene3d.metrics import evaluate_scene3d
    from bevgen.scene3d.train import load_scene3d

    check_device(device)
    try:
        gen = load_scene3d(ckpt, device)
        dc = gen.train_config.data
        ds = load_scene3d_data(data, dc.cameras, gen.cfg.image_size, dc.max_objects, dc.class_filter, dc.max_depth_m)
        with _console().status(f"rendering {num_samples} scenes and scoring them"):
            m = evaluate_scene3d(gen, ds, num_samples, batch, seed, load_extractor(extractor, device), out)
        save_invocation(ctx, out)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(json.dumps(m, indent=2))
