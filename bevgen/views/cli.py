"""``bevgen views``: paired camera datasets, training, sampling and evaluation of the BEV -> six-view generator.

    bevgen views dataset  --scenarios DIR --out DATA          synthetic six-camera frames (pybullet, CPU)
    bevgen views dataset  --nuscenes ROOT --out DATA          real frames through nuscenes-devkit
    bevgen views train    -c configs/views/tiny.yaml --data DATA --out RUN
    bevgen views tune-decoder --ckpt RUN --data DATA --out RUN2   a decoder that reads the layout per pixel
    bevgen views sample   --ckpt RUN --scenario FILE --frame T --out DIR
    bevgen views eval     --ckpt RUN --data DATA --out DIR

Heavy imports (torch, pybullet, nuscenes) happen inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from bevgen.cli_common import SCENARIO, SCENARIOS, ConfigOpt, SetOpt
from bevgen.cli_common import console as _console
from bevgen.cli_common import fail as _fail
from bevgen.cli_common import save_invocation
from bevgen.cli_common import save_run_config as _save_run_config

# Command bodies import their implementation lazily: `bevgen --help` must not import torch, MetaDrive, pybullet,
# cv2 or numpy, so only typer, rich, yaml and the command-line plumbing are imported here.

app = typer.Typer(help="Camera views from BEV layouts (BEVGen-style): paired datasets, tokenizer + cross-view "
                       "transformer training, sampling, evaluation.", no_args_is_help=True)






# ---- dataset ------------------------------------------------------------------------------------
@app.command("dataset")
def dataset_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (frames/*.npz + index.json)."),
    scenarios: Optional[Path] = typer.Option(None, "--scenarios", "-s", metavar=SCENARIOS,
                                             help="Scenario directory to render synthetic camera frames from."),
    nuscenes: Optional[Path] = typer.Option(None, "--nuscenes", help="nuScenes dataroot (real images) instead."),
    version: str = typer.Option("v1.0-mini", "--version", help="nuScenes version (with --nuscenes)."),
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[List[str]] = SetOpt,
    frames_per_scenario: int = typer.Option(10, "--frames-per-scenario", "-n", min=1,
                                            help="Frames rendered per scenario."),
    frame_stride: int = typer.Option(5, "--frame-stride", min=1,
                                     help="Steps between rendered frames (10 steps = 1 s)."),
    first_frame: int = typer.Option(10, "--first-frame", min=0,
                                    help="First rendered step of each scenario (lowered where a scenario is too "
                                         "short for all its frames)."),
    workers: int = typer.Option(2, "--workers", "-j", min=1, help="Renderer processes (one pybullet client each)."),
    resume: bool = typer.Option(True, "--resume/--overwrite", help="Keep frames already written."),
    repair: bool = typer.Option(False, "--repair", help="Drop unusable map features (lanes with < 2 points) while "
                                "reading instead of skipping the scenario (synthetic only)."),
):
    """Write a paired dataset: six camera images (+ depth, semantics) with the BEV raster, boxes and cameras.

    Synthetic frames are rendered with pybullet's CPU renderer from the map and agents of each scenario,
    through the true intrinsics/extrinsics of the rig (configs/render/synthetic.yaml). Real frames come
    from nuScenes keyframes (per-sample calibration, crop/resize with K updated).
    """
    from runkit.config import ConfigError, load_config, to_dict

    if (scenarios is None) == (nuscenes is None):
        _fail("give exactly one of --scenarios DIR (synthetic) or --nuscenes ROOT (real images)")
    from bevgen.render.scene import SynthConfig

    try:
        cfg = load_config(SynthConfig, config, overrides or [])
    except ConfigError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    if scenarios is not None:
        if not scenarios.is_dir():
            _fail(f"{scenarios}: no such scenario directory")
        from bevgen.render.dataset import write_synthetic_dataset

        try:
            summary = write_synthetic_dataset(scenarios, out, cfg, frames_per_scenario=frames_per_scenario,
                                              frame_stride=frame_stride, workers=workers, resume=resume,
                                              first_frame=first_frame, repair=repair)
        except ValueError as e:  # e.g. resuming into a dataset written with other settings
            _fail(str(e))
    else:
        from bevgen.render.nuscenes_images import write_nuscenes_image_dataset

        summary = write_nuscenes_image_dataset(nuscenes, version, out, image_size=cfg.image_size, bev=cfg.bev,
                                               resume=resume)
    _save_run_config(out, "views dataset", {"synth": to_dict(cfg), "scenarios": str(scenarios or ""),
                                            "nuscenes": str(nuscenes or ""), "frames_per_scenario": frames_per_scenario,
                                            "frame_stride": frame_stride, "first_frame": first_frame})
    con = _console()
    con.print(f"{out}: {summary.get('num_frames', '?')} frames in {time.perf_counter() - t0:.1f} s; "
              f"{len(summary.get('failed', []))} failed (see {out / 'conversion_report.json'})")
    for name, err in list(dict(summary.get("failed") or {}).items())[:10]:
        con.print(f"  [yellow]skipped[/] {name}: {err}", highlight=False)
    raise typer.Exit(1 if summary.get("failed") else 0)  # good frames are kept; exit 1 says something was skipped


# ---- train --------------------------------------------------------------------------------------
@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Frame dataset directory from `bevgen views dataset`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, checkpoints/, tb/, samples/)."),
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[List[str]] = SetOpt,
    stage: str = typer.Option("all", "--stage", help="tokenizer | generator | all (tokenizer, then generator)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's checkpoints (with its "
                                "config.yaml unless --config is given; model and data fields must not change)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="tqdm progress bars."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start from this run's weights "
                                             "and step counts on --data (e.g. more layouts); the frames it held "
                                             "out stay held out; train.generator_steps must exceed its step."),
):
    """Train the VQ tokenizer and the cross-view masked-token transformer (CPU, GPU, or torchrun for DDP).

    Multi-GPU: torchrun --nproc_per_node N -m bevgen.views.train -c configs/views/paper.yaml --data D --out R
    """
    from bevgen.views.config import ViewsConfig
    from bevgen.views.train import train_views
    from runkit.config import ConfigError, load_config
    from runkit.rundir import run_config_file

    if not (data / "index.json").exists():
        _fail(f"{data}: not a views dataset (no index.json); make one with `bevgen views dataset`")
    config = run_config_file(out, resume, config)  # resuming must not silently change the run's config
    try:
        cfg = load_config(ViewsConfig, config, overrides or [])
        summary = train_views(cfg, data, out, stage=stage, resume=resume, progress=progress, init_from=init_from)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    _console().print_json(json.dumps(summary, default=str))
    for p in summary.get("problems", []):
        _console().print(f"[yellow]skipped[/] {p}", highlight=False)


@app.command("tune-decoder")
def tune_decoder_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", help="A trained views run (or exported model) directory."),
    data: Path = typer.Option(..., "--data", "-d", help="Its frame dataset (the run's training frames are used)."),
    out: Path = typer.Option(..., "--out", "-o", help="New run directory: the tuned tokenizer + the same generator."),
    steps: int = typer.Option(600, "--steps", min=1,
                              help="Decoder training steps (about 0.7 s each at 64x112 on 2 cores)."),
    adversarial: float = typer.Option(0.0, "--adversarial", min=0.0,
                                      help="Weight of the patch-adversarial term (0 = off)."),
    layout: bool = typer.Option(True, "--layout/--tokens-only", help="The decoder also reads the layout through "
                                "every pixel (default), or fine-tune the tokens-only decoder."),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate."),
    train_decoder: bool = typer.Option(True, "--train-decoder/--freeze-decoder", help="Train the decoder's own "
                                       "weights too (default), or only the layout injection (the decoder frozen)."),
    generated: float = typer.Option(0.0, "--generated", min=0.0, max=1.0,
                                    help="Share of each batch's frames decoded from the run's "
                                    "generator's tokens (one MaskGIT step, half to all of them masked) instead of "
                                    "the true ones, the target staying the true views: the decoder meets the "
                                    "tokens it gets at sampling time (0 = true tokens only)."),
    edge_weight: float = typer.Option(0.0, "--edge-weight", min=0.0,
                                      help="Extra loss weight of the pixels on the layout's edges as seen through "
                                      "them (road borders, lane markings, car outlines, the horizon): they weigh "
                                      "1 + this (0 = every pixel alike)."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0 = every core)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="tqdm progress bar."),
):
    """Train a views model's decoder alone (encoder and codebook frozen, so the generator is unchanged), by default
    reading the BEV layout projected through every pixel: road edges and far cars land where the geometry puts
    them instead of within a token. Resumable (checkpoint every 100 steps); the result loads like any run.
    """
    from bevgen.views.decoder_tune import tune_decoder

    if not (data / "index.json").exists():
        _fail(f"{data}: not a views dataset (no index.json); make one with `bevgen views dataset`")
    try:
        summary = tune_decoder(ckpt, data, out, steps=steps, adversarial_weight=adversarial, layout=layout, lr=lr,
                               threads=threads, train_decoder=train_decoder, generated=generated,
                               edge_weight=edge_weight, progress=progress)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    _console().print_json(json.dumps(summary, default=str))
    for p in summary.get("problems", []):
        _console().print(f"[yellow]skipped[/] {p}", highlight=False)


# ---- sample -------------------------------------------------------------------------------------
def render_ground_truth(scenario, frame: int, image_size, bev_range_m: float = 50.0) -> dict:
    """Synthetic ground-truth frame of a scenario: images, BEV, boxes and the nuScenes rig at ``image_size``."""
    from bevgen.cameras import nuscenes_rig
    from bevgen.layout import BevConfig
    from bevgen.render.dataset import frame_arrays
    from bevgen.render.scene import SceneRenderer, SynthConfig

    cfg = SynthConfig(image_size=tuple(image_size), bev=BevConfig(range_m=bev_range_m))
    renderer = SceneRenderer(nuscenes_rig(cfg.image_size), cfg)
    try:
        return frame_arrays(renderer.render(scenario, frame), scenario.id)
    finally:
        renderer.close()


def layout_arrays(scenario, frame: int, image_size, bev_range_m: float = 50.0) -> dict:
    """The model's condition for one scenario frame without rendering anything: BEV raster, boxes and the
    nuScenes rig at ``image_size`` (the keys of ``bevgen.render.dataset.frame_arrays`` minus the images)."""
    import numpy as np

    from bevgen.cameras import nuscenes_rig
    from bevgen.layout import BevConfig, BevRasterizer

    lay = BevRasterizer(scenario, BevConfig(range_m=bev_range_m))(frame)
    rig = nuscenes_rig(tuple(image_size))
    return {"bev": lay.raster, **lay.box_arrays(), "K": rig.K.astype(np.float32),
            "T_cam_from_ego": rig.T_cam_from_ego.astype(np.float32), "ego_pose": np.asarray(lay.ego_pose, np.float64)}


@app.command("sample")
def sample_cmd(
    ctx: typer.Context,
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory of `bevgen views train` (or its checkpoints/)."),
    scenario: Path = typer.Option(..., "--scenario", metavar=SCENARIO,
                                  help="Scenario file (.pkl) to take the BEV layout from."),
    frame: int = typer.Option(0, "--frame", "-t", min=0, help="Frame index in the scenario."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    mode: str = typer.Option("parallel", "--mode", help="parallel (MaskGIT) | autoregressive (token by token)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1,
                                        help="Parallel decoding steps (default: the config's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0,
                                             help="Classifier-free guidance weight. Default: the config's "
                                                  "train.guidance."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="Token sampling temperature "
                                                "(default: the config's train.sample_temperature; 0 = greedy)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    truth: bool = typer.Option(True, "--truth/--no-truth",
                               help="Also render the synthetic ground truth (--no-truth: no renderer, no pybullet)."),
):
    """Generate the six camera views of one BEV frame: view_<CAM>.png, panorama.png, bev_views.png."""
    from PIL import Image

    from bevgen.views.figures import bev_image, frame_batch, panorama, pipe_names, views_figure
    from bevgen.views.sample import load_views
    from sim_bridge.scenario import load_scenario

    if mode not in ("parallel", "autoregressive"):
        _fail(f"--mode must be parallel or autoregressive, got {mode!r}")
    try:
        pipe = load_views(ckpt)
        sc = load_scenario(scenario)
    except Exception as e:  # noqa: BLE001 - reported, nothing written yet
        _fail(f"{e}")
    if not 0 <= frame < sc.length:
        _fail(f"--frame {frame} out of range: {scenario.name} has {sc.length} frames")
    t0 = time.perf_counter()
    render = render_ground_truth if truth else layout_arrays
    arrays = render(sc, frame, pipe.image_size, pipe.config.data.bev_range_m)
    gen_s = time.perf_counter()
    with _console().status(f"generating six views ({mode})"):
        images = pipe(frame_batch(arrays), mode=mode, steps=steps, guidance=guidance, temperature=temperature,
                      seed=seed).images
    gen_s = time.perf_counter() - gen_s
    views = images[0].permute(0, 2, 3, 1).cpu().numpy()
    out.mkdir(parents=True, exist_ok=True)
    for name, img in zip(pipe_names(arrays), views):
        Image.fromarray(img).save(out / f"view_{name}.png")
    Image.fromarray(panorama(views)).save(out / "panorama.png")
    bev = bev_image(arrays, pipe.config.data.bev_range_m)
    fig = views_figure(bev, views, arrays["images"] if truth else None)
    Image.fromarray(fig).save(out / "bev_views.png")
    if truth:
        Image.fromarray(panorama(arrays["images"])).save(out / "panorama_truth.png")
    save_invocation(ctx, out)  # every option, defaults included (ckpt, steps, guidance, temperature)
    info = {"scenario": str(scenario), "frame": frame, "mode": mode, "seed": seed, "seconds": gen_s,
            "total_seconds": time.perf_counter() - t0, "image_size": list(pipe.image_size)}
    (out / "sample.json").write_text(json.dumps(info, indent=2))
    _console().print(f"six views in {gen_s:.2f} s ({mode}) -> {out / 'bev_views.png'}")


# ---- eval ---------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    ckpt: Path = typer.Option(..., "--ckpt", help="Views model: a `bevgen views train` run directory, its "
                              "checkpoints/, or a shipped checkpoint directory (e.g. checkpoints/views_tiny)."),
    data: Path = typer.Option(..., "--data", "-d", help="Frame dataset directory (`bevgen views dataset`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (metrics.json, preview.png)."),
    frames: str = typer.Option("auto", "--frames", help="Frames scored: heldout (the run's split.json held-out "
                               "frames), all (every frame of --data is treated as held out), or auto (heldout "
                               "when CKPT has a split.json that lists frames of --data, else all)."),
    bevseg: Optional[Path] = typer.Option(None, "--bevseg", help="Trained BEV segmentation checkpoint; "
                                          "default: train one on --bevseg-data (about 2-3 s a step on 2 CPU cores), "
                                          "cached in OUT/bevseg_<key> for those frames and steps."),
    bevseg_data: Optional[Path] = typer.Option(None, "--bevseg-data", help="Frames to train the BEV segmentation "
                                               "network on; default: the run's training split of --data with "
                                               "--frames heldout, else --data itself."),
    bevseg_steps: int = typer.Option(600, "--bevseg-steps", min=1,
                                     help="Steps when training the BEV segmentation network."),
    fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", help="pytorch-fid Inception weights file "
                                               "(pt_inception-2015-12-05-*.pth); default: in-project extractor."),
    num: int = typer.Option(0, "--num", min=0, help="Frames to score (0 = all selected)."),
    mode: str = typer.Option("parallel", "--mode", help="parallel or autoregressive (decoding modes), or reconstruct: "
                             "score the tokenizer's round trip of each frame's ground-truth views (the ceiling of "
                             "generation; read psnr and fid)."),
    unconditional: bool = typer.Option(False, "--unconditional", help="Score samples of the null condition (no "
                                       "layout, no boxes): the floor the conditional model must beat."),
):
    """Score generated views: BEV IoU (overall and near / mid / far vehicles, next to the ground-truth oracle),
    seam consistency, FID / KID. Any checkpoint on any frame dataset: without a matching split.json every
    frame of --data counts as held out."""
    from bevgen.views.bevseg_train import train_bevseg
    from bevgen.views.metrics import evaluate_views
    from bevgen.views.sample import COND_KEYS, fit_batch, load_views
    from runkit.atomic import atomic_write_text

    if frames not in ("auto", "heldout", "all"):
        _fail(f"--frames must be auto, heldout or all, got {frames!r}")
    if mode not in ("parallel", "autoregressive", "reconstruct"):
        _fail(f"--mode must be parallel, autoregressive or reconstruct, got {mode!r}")
    if mode == "reconstruct" and unconditional:
        _fail("--unconditional samples the null condition; --mode reconstruct samples nothing")
    index_file = data / "index.json"
    if not index_file.exists():
        _fail(f"{data}: not a views dataset (no index.json)")
    listed = json.loads(index_file.read_text()).get("frames", [])
    run_dir = ckpt.parent if ckpt.suffix == ".pt" else ckpt
    run_dir = run_dir.parent if run_dir.name == "checkpoints" else run_dir
    split_file = run_dir / "split.json"
    split = json.loads(split_file.read_text()) if split_file.exists() else None
    if frames == "auto":
        frames = "heldout" if split and set(split.get("heldout") or []) & set(listed) else "all"
    bevseg_train_names = None
    if frames == "heldout":
        if split is None:
            _fail(f"{ckpt}: no split.json, so no held-out frames are known; use --frames all")
        selected = split.get("heldout") or split.get("val") or []
        if not selected:
            _fail(f"{split_file}: no held-out frames to evaluate on")
        _check_eval_data(data, split, selected[:num] if num else selected, split_file)
        bevseg_train_names = split.get("train")
    else:
        selected = listed
    if num:
        selected = selected[:num]
    if not selected:
        _fail(f"{data}: no frames to evaluate")
    seg_data = bevseg_data or data
    if bevseg_data is not None:
        bevseg_train_names = None
    seg_source = (f"given: {bevseg}" if bevseg is not None else
                  f"{seg_data} ({'training split' if bevseg_train_names is not None else 'every frame'})")
    try:
        pipe = load_views(ckpt)
        if bevseg is None:
            bevseg = train_bevseg(seg_data, bevseg_train_names, _bevseg_cache(out, seg_data, bevseg_train_names,
                                                                             bevseg_steps),
                                  steps=bevseg_steps, resume=True)
        if mode == "reconstruct":
            def generate(b):
                fitted = {k: v.to(pipe.device) for k, v in fit_batch(b, pipe.image_size).items()
                          if k in COND_KEYS + ("images",)}  # the condition too: a layout-reading decoder needs it
                return pipe.reconstruct(fitted["images"], fitted)
        else:
            def generate(b):
                return pipe(b, mode=mode, unconditional=unconditional).images
        metrics = evaluate_views(generate, data, selected, out, bevseg_ckpt=bevseg, extractor_weights=fid_weights)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    metrics |= {"frames": frames, "bevseg_trained_on": seg_source, "unconditional": unconditional, "mode": mode}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    save_invocation(ctx, out)
    _console().print_json(json.dumps({k: v for k, v in metrics.items() if k != "definitions"}, default=str))
    for name in metrics.get("missing_frames") or []:
        _console().print(f"[yellow]skipped[/] {name}: frame file missing", highlight=False)


def _bevseg_cache(out: Path, data: Path, names: list[str] | None, steps: int) -> Path:
    """Where ``views eval`` keeps the BEV segmentation network it trains: one folder per training set (the frame
    list of ``data/index.json`` or ``names``) and step count, so a later eval into the same --out on other frames
    trains its own network instead of reusing one trained on other frames."""
    import hashlib

    frames = sorted(names) if names is not None else json.loads((data / "index.json").read_text()).get("frames", [])
    key = json.dumps({"data": str(data.resolve()), "frames": frames, "steps": steps}, sort_keys=True)
    return out / f"bevseg_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _check_eval_data(data: Path, split: dict, heldout: list[str], split_file: Path) -> None:
    """--data must hold the run's held-out frames: fail when any is missing, warn when it is another
    directory than the one the run was trained on (split.json ``data_dir``) that has the same frames."""
    index_file = data / "index.json"
    if not index_file.exists():
        _fail(f"{data}: not a views dataset (no index.json)")
    listed = set(json.loads(index_file.read_text()).get("frames", []))
    missing = [n for n in heldout if n not in listed or not (data / "frames" / f"{n}.npz").exists()]
    trained_on = split.get("data_dir")
    if missing:
        _fail(f"{data}: {len(missing)} of the {len(heldout)} held-out frames of {split_file} are missing "
              f"(e.g. {missing[0]}); the run was trained on {trained_on or 'an unrecorded directory'}")
    if trained_on and Path(trained_on).resolve() != data.resolve():
        _console().print(f"[yellow]warning:[/] --data {data} is not the directory the run was trained on "
                         f"({trained_on}); it has the same held-out frame names, so evaluating on it", highlight=False)
