"""Paired multi-camera image / BEV datasets: writer (synthetic renderer), reader (torch Dataset), split.

On-disk format (shared by the synthetic writer and :mod:`bevgen.render.nuscenes_images`)::

    out_dir/frames/<scenario>__<t:04d>.npz   one frame, keys:
        images [V,H,W,3] uint8 RGB; depth [V,H,W] float16 metres along the optical axis (0 = sky or
        unknown); semantic [V,H,W] uint8 (SEMANTIC_CLASSES; all 0 where unknown); bev [C,Hb,Wb] uint8;
        boxes [N,7] float32 (x, y, z_centre, l, w, h, yaw; ego frame); classes [N] int64; box_valid [N]
        bool; K [V,3,3] float32; T_cam_from_ego [V,4,4] float32; camera_names [V] str; ego_pose [3]
        float64 (world x, y, yaw); scenario (str); frame (int).
    out_dir/index.json             {"frames": [names], "rig": CameraRig.to_dict() (nominal, first frame),
                                    "bev": BevConfig fields, "semantic_classes": [...],
                                    "source": "synthetic" | "nuscenes", "config": {...}}
    out_dir/conversion_report.json what was written / kept, and every failure with its reason.

Frames are written atomically (``runkit.atomic``: temp file + rename), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from bevgen.cameras import CameraRig, nuscenes_rig, project_boxes
from bevgen.cameras import draw_boxes as draw
from bevgen.layout import CHANNELS
from bevgen.render.scene import SEMANTIC_CLASSES, SceneRenderer, SynthConfig
from runkit.atomic import atomic_write, atomic_write_text
from runkit.config import to_dict
from runkit.links import relative_symlink
from sim_bridge.boxes import Boxes3D
from sim_bridge.dataset import ScenarioDataset

# cv2 and torch are imported lazily (previews, FrameDataset): heavy/optional for writing datasets.

__all__ = ["write_synthetic_dataset", "FrameDataset", "split_frames", "merge_datasets", "load_frame", "frame_arrays",
           "write_frame", "write_index", "select_frames", "scenario_of", "view_mosaic", "FRAME_KEYS"]

FRAME_KEYS = ("images", "depth", "semantic", "bev", "boxes", "classes", "box_valid", "K", "T_cam_from_ego",
              "ego_pose", "scenario", "frame")


# ---- single frames -------------------------------------------------------------------------------
def frame_name(scenario: str, t: int) -> str:
    """File stem of frame ``t`` of ``scenario`` (the scenario file name without ``.pkl``)."""
    return f"{scenario.removesuffix('.pkl')}__{int(t):04d}"


def scenario_of(name: str) -> str:
    """Scenario part of a frame name ``<scenario>__<t>``."""
    return name.rsplit("__", 1)[0]


def frame_arrays(frame, scenario: str) -> dict[str, np.ndarray]:
    """The on-disk arrays of a SynthFrame (see module docstring for keys, shapes and dtypes)."""
    lay, rig = frame.layout, frame.rig
    return {"images": frame.images, "depth": frame.depth.astype(np.float16), "semantic": frame.semantic,
            "bev": lay.raster, **lay.box_arrays(), "K": rig.K.astype(np.float32),
            "T_cam_from_ego": rig.T_cam_from_ego.astype(np.float32), "camera_names": np.array(rig.names),
            "ego_pose": np.asarray(lay.ego_pose, np.float64), "scenario": np.array(scenario.removesuffix(".pkl")),
            "frame": np.array(int(lay.frame), np.int64)}


def write_frame(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one frame as a compressed npz, atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)


def load_frame(path: str | Path) -> dict[str, Any]:
    """Read one frame file -> dict of numpy arrays (``scenario`` as str, ``frame`` as int)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["scenario"], out["frame"] = str(out["scenario"]), int(out["frame"])
    if "camera_names" in out:  # frames written before camera names were stored have none (see index.json)
        out["camera_names"] = tuple(str(n) for n in out["camera_names"])
    return out


def _frame_ok(path: Path) -> bool:
    """Cheap completeness check of an existing frame file (a valid zip with every key)."""
    try:
        with zipfile.ZipFile(path) as z:
            return all(f"{k}.npy" in z.namelist() for k in FRAME_KEYS)
    except (OSError, zipfile.BadZipFile):
        return False


def _atomic_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def write_index(out_dir: Path, frames: Sequence[str], rig, bev_config, source: str, config: dict) -> dict:
    """Write ``index.json`` atomically and return it."""

    index = {"frames": sorted(frames), "rig": rig.to_dict(), "bev": to_dict(bev_config),
             "semantic_classes": list(SEMANTIC_CLASSES), "source": source, "config": config}
    _atomic_json(index, Path(out_dir) / "index.json")
    return index


def check_resumable(out_dir: Path, rig, source: str, config: dict) -> None:
    """Refuse to mix frames made with another config / rig (skipped when None) / source into a dataset."""
    path = Path(out_dir) / "index.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    checks = (("source", source), ("config", config)) + ((("rig", rig.to_dict()),) if rig is not None else ())
    for key, new in checks:
        if json.loads(json.dumps(old.get(key))) != json.loads(json.dumps(new)):
            raise ValueError(f"{path}: existing dataset has a different {key!r}; write to a new directory "
                             "or pass resume=False to overwrite")


# ---- synthetic writer ----------------------------------------------------------------------------
def select_frames(scenario, frames_per_scenario: int, frame_stride: int, first_frame: int = 10) -> list[int]:
    """Frames ``first_frame, first_frame + stride, ...`` where the ego is valid, at most
    ``frames_per_scenario`` of them (``first_frame`` is lowered for short scenarios). The first
    frames of simulated scenarios are skipped because vehicles are still settling onto the road."""
    ego_valid = scenario.tracks.valid[scenario.ego_index]
    start = min(first_frame, max(scenario.length - 1 - frame_stride * (frames_per_scenario - 1), 0))
    ts = [t for t in range(start, scenario.length, frame_stride) if ego_valid[t]]
    return ts[:frames_per_scenario]


_WORKER: dict[str, Any] = {}


def _render_scenario(job: tuple) -> dict:
    """Worker: render the selected frames of one scenario; never raises (errors are returned)."""
    root, name, out_dir, config, rig_dict, n, stride, first, resume, repair = job

    result = {"scenario": name, "written": [], "kept": [], "error": None}
    try:
        scenario = ScenarioDataset(root, repair=repair).load(name)
        renderer = _WORKER.get("renderer")
        if renderer is None or renderer.config != config or renderer.rig.to_dict() != rig_dict:
            if renderer is not None:
                renderer.close()
            renderer = _WORKER["renderer"] = SceneRenderer(CameraRig.from_dict(rig_dict), config)
        for t in select_frames(scenario, n, stride, first):
            stem = frame_name(name, t)
            path = Path(out_dir) / "frames" / f"{stem}.npz"
            if resume and path.exists() and _frame_ok(path):
                result["kept"].append(stem)
                continue
            frame = renderer.render(scenario, t).validate()
            write_frame(path, frame_arrays(frame, name))
            result["written"].append(stem)
    except Exception as e:  # one bad scenario is reported, never fatal to the others
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def write_synthetic_dataset(scenario_dir: str | Path, out_dir: str | Path, config=None,
                            frames_per_scenario: int = 10, frame_stride: int = 5, workers: int = 1,
                            resume: bool = True, progress: bool = True, rig=None, first_frame: int = 10,
                            scenarios: Iterable[str] | None = None, repair: bool = False) -> dict:
    """Render paired image / BEV frames for every scenario of a dataset directory.

    One task per scenario (its static scene is built once and reused for its frames); ``workers``
    processes each hold one pybullet renderer. Cost: O(scenarios x map build + frames x views x render).

    Args:
        scenario_dir: ScenarioNet dataset directory (procedural or converted real scenarios).
        out_dir: output directory (created); see the module docstring for the format.
        config: SynthConfig (default SynthConfig()).
        frames_per_scenario: frames rendered per scenario (fewer if the scenario is short).
        frame_stride: frames between rendered frames (10 Hz scenarios: 5 = 0.5 s).
        workers: worker processes (1 = in this process).
        resume: keep complete frame files already in ``out_dir`` (the index must match this config).
        progress: show a tqdm progress bar.
        rig: CameraRig (default ``nuscenes_rig(config.image_size)``); must have config.image_size.
        first_frame: first rendered frame (see :func:`select_frames`).
        scenarios: subset of scenario file names (default all).
        repair: drop unusable map features while reading (lanes with < 2 points, as a conversion's ``--repair``)
            instead of failing the scenario.
    Returns:
        Summary dict: num_frames, written, kept, failed {scenario: error}, seconds, frames_per_second,
        out_dir. The same information is saved in ``conversion_report.json``.
    """

    config = config or SynthConfig()
    rig = rig if rig is not None else nuscenes_rig(config.image_size)
    out_dir = Path(out_dir)
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    cfg_dict = {**to_dict(config), "frames_per_scenario": frames_per_scenario, "frame_stride": frame_stride,
                "first_frame": first_frame}
    if resume:
        check_resumable(out_dir, rig, "synthetic", cfg_dict)
    names = list(scenarios) if scenarios is not None else ScenarioDataset(scenario_dir).names
    jobs = [(str(scenario_dir), n, str(out_dir), config, rig.to_dict(), frames_per_scenario, frame_stride,
             first_frame, resume, repair) for n in names]
    t0 = time.perf_counter()
    results = []
    bar = tqdm(total=len(jobs), desc="render scenarios", unit="scenario", disable=not progress)
    if workers <= 1:
        for job in jobs:
            results.append(_render_scenario(job))
            bar.update(1)
    else:

        # fork: no __main__ guard needed by callers and no re-import cost; workers open their own
        # pybullet client lazily (the parent's, if any, is never used in a child).
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for res in pool.imap_unordered(_render_scenario, jobs):
                results.append(res)
                bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    frames = [f for r in results for f in r["written"] + r["kept"]]
    written = sum(len(r["written"]) for r in results)
    summary = {"out_dir": str(out_dir), "num_frames": len(frames), "written": written,
               "kept": len(frames) - written, "scenarios_ok": sum(r["error"] is None for r in results),
               "failed": {r["scenario"]: r["error"] for r in results if r["error"] is not None},
               "seconds": round(seconds, 3), "frames_per_second": round(written / max(seconds, 1e-9), 3)}
    write_index(out_dir, frames, rig, config.bev, "synthetic", cfg_dict)
    _atomic_json({**summary, "source_dir": str(scenario_dir),
                  "scenarios": {r["scenario"]: {"written": len(r["written"]), "kept": len(r["kept"]),
                                                "error": r["error"]} for r in results}},
                 out_dir / "conversion_report.json")
    return summary


# ---- reading ------------------------------------------------------------------------------------
def split_frames(names: Sequence[str], heldout_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split frame names into (train, heldout) BY SCENARIO: no scenario has frames on both sides.

    At least one scenario stays in train; with >= 2 scenarios and a positive fraction at least one is
    held out. Deterministic for a given seed; input order is kept within each side.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    scen = sorted({scenario_of(n) for n in names})
    k = int(round(heldout_fraction * len(scen)))
    if heldout_fraction > 0 and len(scen) >= 2:
        k = min(max(k, 1), len(scen) - 1)
    held = {scen[i] for i in np.random.default_rng(seed).permutation(len(scen))[:k]}
    return ([n for n in names if scenario_of(n) not in held], [n for n in names if scenario_of(n) in held])


def merge_datasets(sources: dict[str, str | Path], out_dir: str | Path,
                   keep: Callable[[str], bool] | None = None) -> dict:
    """One frame dataset over several (e.g. procedural frames + real-map frames), without copying frames.

    Frames become symbolic links ``out_dir/frames/<tag>-<name>.npz`` (tag "" keeps the name), so the same
    scenario rendered twice (logged and traffic-augmented) stays two scenarios. The links are relative
    (:func:`runkit.links.relative_symlink`): moving a folder that holds the sources and the merge together keeps
    them working. Every source must have the same rig and BEV settings (ValueError naming the first that
    differs). Idempotent: existing links are kept; an absolute or dangling one from an older merge is replaced.
    Cost: O(frames) links.

    Args:
        sources: {tag: dataset directory}.
        out_dir: the merged dataset (index.json source "merged", config {"sources": {tag: path}}).
        keep: frames to take, by their name in the source (e.g. all but one scenario's); None: every frame.
    Returns:
        the merged index.
    """
    if not sources:
        raise ValueError("merge_datasets: no sources")
    roots = {tag: Path(src).resolve() for tag, src in sources.items()}
    indexes = {tag: json.loads((root / "index.json").read_text()) for tag, root in roots.items()}
    first = next(iter(indexes))
    for tag, index in indexes.items():  # every check before anything is written
        for key in ("rig", "bev"):
            if index[key] != indexes[first][key]:
                raise ValueError(f"merge_datasets: {roots[tag]} has another {key!r} than {roots[first]}")
    names = {tag: [(f"{tag}-{n}" if tag else n, n) for n in index["frames"] if keep is None or keep(n)]
             for tag, index in indexes.items()}
    frames = [merged for pairs in names.values() for merged, _ in pairs]
    if len(set(frames)) != len(frames):
        raise ValueError("merge_datasets: two sources hold frames of the same name; give them distinct tags")
    out_dir = Path(out_dir)
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    for tag, pairs in names.items():  # relative links: moving the folder that holds sources and merge keeps them
        for merged, name in pairs:
            relative_symlink(out_dir / "frames" / f"{merged}.npz", roots[tag] / "frames" / f"{name}.npz")
    return write_index(out_dir, frames, CameraRig.from_dict(indexes[first]["rig"]), indexes[first]["bev"], "merged",
                       {"sources": {t: str(r) for t, r in roots.items()}})


class FrameDataset:
    """torch Dataset over a frame directory written by this module (torch imported lazily).

    Items are dicts: images uint8 [V,3,H,W], bev uint8 [C,Hb,Wb], boxes float32 [N,7], classes int64 [N],
    box_valid bool [N], K float32 [V,3,3], T_cam_from_ego float32 [V,4,4], semantic uint8 [V,H,W],
    depth float32 [V,H,W] (only with ``with_depth``), name str. N = BevConfig.max_boxes, so the default
    collate stacks them.

    Args:
        root: dataset directory (with index.json and frames/).
        names: subset of frame names (default: all in the index), e.g. from :func:`split_frames`.
        with_depth: also return depth.

    Attributes:
        names: the frames whose files exist (the items, in order). missing: requested frames whose file
        is absent; they are skipped, and callers report them. Raises FileNotFoundError only when every
        requested frame is missing.
    """

    def __init__(self, root: str | Path, names: Sequence[str] | None = None, with_depth: bool = False):
        self.root = Path(root)
        self.index = json.loads((self.root / "index.json").read_text())
        requested = list(self.index["frames"] if names is None else names)
        self.with_depth = with_depth
        exists = [(self.root / "frames" / f"{n}.npz").exists() for n in requested]
        self.names = [n for n, ok in zip(requested, exists) if ok]
        self.missing = [n for n, ok in zip(requested, exists) if not ok]
        if self.missing and not self.names:
            raise FileNotFoundError(f"{self.root}: all {len(self.missing)} requested frame file(s) are missing, "
                                    f"e.g. frames/{self.missing[0]}.npz")

    @property
    def rig(self):
        """Nominal CameraRig of the dataset (per-frame K / T are in each item)."""

        return CameraRig.from_dict(self.index["rig"])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        import torch

        name = self.names[i]
        f = load_frame(self.root / "frames" / f"{name}.npz")
        item = {"images": torch.from_numpy(np.ascontiguousarray(f["images"].transpose(0, 3, 1, 2))),
                "bev": torch.from_numpy(f["bev"]), "boxes": torch.from_numpy(f["boxes"]),
                "classes": torch.from_numpy(f["classes"]), "box_valid": torch.from_numpy(f["box_valid"]),
                "K": torch.from_numpy(f["K"]), "T_cam_from_ego": torch.from_numpy(f["T_cam_from_ego"]),
                "semantic": torch.from_numpy(f["semantic"]), "name": name}
        if self.with_depth:
            item["depth"] = torch.from_numpy(f["depth"].astype(np.float32))
        return item


# ---- previews -----------------------------------------------------------------------------------
_VIEW_GRID = ((0, 1, 2), (5, 4, 3))  # rig order FL F FR BR B BL -> rows (FL F FR) / (BL B BR)


def view_mosaic(views: np.ndarray, gap: int = 0, fill: int = 255) -> np.ndarray:
    """THE six-view mosaic: front row FL F FR, back row BL B BR (as a driver looks around), from views
    in nuScenes rig order (FL F FR BR B BL). Any other number of views: one row, in order.

    Args:
        views: [V, H, W, C] (uint8 images, or any per-pixel array with a channel axis).
        gap: rows of ``fill`` between the front and the back row.
    Returns:
        [2 H + gap, 3 W, C] for V = 6, else [H, V W, C]; same dtype.
    """
    views = np.asarray(views)
    if len(views) != 6:
        return np.concatenate(list(views), 1)
    front, back = (np.concatenate([views[v] for v in row], 1) for row in _VIEW_GRID)
    sep = np.full((gap,) + front.shape[1:], fill, front.dtype)
    return np.concatenate([front, sep, back], 0)


def frame_preview(frame: dict, channels: Sequence[str], draw_boxes: bool = True, semantic: bool = False) -> np.ndarray:
    """uint8 [H', W', 3] RGB sheet of one frame: the six views (front row, back row mirrored as seen from
    the car), optionally their semantic maps, and the BEV raster (forward up) on the right.

    Args:
        frame: dict from :func:`load_frame` (or :func:`frame_arrays`).
        channels: BEV channel names of ``frame["bev"]`` (index.json ``bev.channels``).
        draw_boxes: draw the frame's 3D boxes (projected with the frame's K / T) on the views.
        semantic: add the semantic maps below the images.
    """
    import cv2

    images, V = frame["images"], frame["images"].shape[0]
    H, W = images.shape[1:3]
    if draw_boxes and frame["box_valid"].any():
        rig = CameraRig(tuple(f"cam{v}" for v in range(V)), frame["K"], frame["T_cam_from_ego"], (H, W))
        colors = np.array([[60, 200, 90], [230, 60, 60], [200, 80, 220], [150, 110, 60]])
        boxes = Boxes3D.from_array(frame["boxes"], frame["classes"], frame["box_valid"]).select(frame["box_valid"])
        images = draw(images, project_boxes(rig, boxes), colors[boxes.classes], 1)
    rows = [view_mosaic(images)]
    if semantic:
        palette = np.array([[120, 170, 230], [90, 110, 70], [70, 70, 78], [240, 240, 240], [200, 200, 120],
                            [60, 200, 90], [230, 60, 60], [200, 80, 220], [170, 120, 90]], np.uint8)
        rows.append(view_mosaic(palette[frame["semantic"]]))
    views = np.concatenate(rows, 0)
    bev = np.full(frame["bev"].shape[1:] + (3,), 24, np.uint8)
    for name, plane in zip(channels, frame["bev"]):
        bev[plane.astype(bool)] = CHANNELS[name][1]
    c = bev.shape[0] / 2
    cv2.fillPoly(bev, [np.round([[c, c - 5], [c - 2, c + 5], [c + 2, c + 5]]).astype(np.int32)], (250, 220, 40))
    bev = cv2.resize(bev, (views.shape[0], views.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([views, np.full((views.shape[0], 4, 3), 255, np.uint8), bev], 1)
