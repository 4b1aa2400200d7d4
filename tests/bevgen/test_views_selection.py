"""The views benchmarks' selection tools: benchmarks/views_decoder.py's rule (an arm's worst share of a target's
bar over its sampled rows) and command line, and benchmarks/views_eval.py's round trip (the true views through the
tokenizer)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import views_decoder  # noqa: E402  # benchmarks/ (on sys.path)


def _row(arm: str, mode: str, where: str, vehicle: float, road: float, seams: float) -> dict:
    return {"arm": arm, "mode": mode, "set": where,
            "share_of_oracle": {"vehicle_iou": vehicle, "road_iou": road, "seam_consistency": seams}}


def test_the_worst_share_of_a_bar_picks_the_limiting_target_and_ignores_round_trips():
    rows = [_row("a", "generated", "real", 1.3, 0.95, 0.60),      # seams 0.60 / 0.75 = 0.80
            _row("a", "generated", "procedural", 0.9, 0.90, 0.85),
            _row("a", "round_trip", "procedural", 0.1, 0.10, 0.10),  # a round trip is not a sample: ignored
            _row("b", "generated", "real", 0.45, 0.99, 0.90),     # vehicles 0.45 / 0.5 = 0.90
            _row("b", "generated", "procedural", 0.9, 0.855, 0.9)]  # road 0.855 / 0.9 = 0.95
    worst = views_decoder.worst_shares(rows)
    assert worst["a"] == (0.8, "real seam_consistency 0.600")
    assert worst["b"] == (0.9, "real vehicle_iou 0.450")
    assert max(worst, key=lambda arm: worst[arm][0]) == "b"  # the rule keeps the arm whose worst bar is highest


def test_the_command_line_names_arms_runs_and_evaluators_and_refuses_what_it_cannot_run():
    args = views_decoder.parse_args(["600,0.0,layout,frozen,gen0.5", "400,0.05,real,edge3", "run=/r/a",
                                     "--bevseg=/n.pt", "--real-selection"])
    assert args["real_selection"] and not args["heldout"]
    assert args["runs"] == [Path("/r/a")] and args["bevseg"] == [Path("/n.pt")]
    (s1, w1, lay1, fro1, gen1, real1, dir1, e1), (s2, w2, lay2, fro2, gen2, real2, dir2, e2) = args["arms"]
    assert (s1, w1, lay1, fro1, gen1, real1, e1) == (600, 0.0, True, True, 0.5, False, 0.0)
    assert (s2, w2, lay2, fro2, gen2, real2, e2) == (400, 0.05, False, False, 0.0, True, 3.0)
    # run directories keep the names of the recorded rows (benchmarks/results/views_decoder.json)
    assert dir1.name == "shipped+600_0.0_layout_frozen_gen0.5" and dir2.name == "shipped+400_0.05_real_edge3"
    assert args["start"] is None
    assert views_decoder.parse_args(["run=/r/b"])["arms"] == []  # scoring a run alone needs no arm
    # from=DIR: the arms start from another run (the shipped one saw the real selection scene) and say so
    other = views_decoder.parse_args(["from=/w/shipped+600_real3_frozen", "600,0.0,layout,frozen,real"])
    assert other["start"] == Path("/w/shipped+600_real3_frozen")
    assert other["arms"][0][-2].name == "shipped+600_real3_frozen+600_0.0_layout_frozen_real"
    tripled = views_decoder.parse_args(["1200,0.0,layout,frozen,real,edge10,realx3"])["arms"][0]
    assert tripled[5] == 3 and tripled[-1] == 10.0  # the real frames taken three times: the shipped fourth segment
    assert tripled[-2].name == "shipped+1200_0.0_layout_frozen_real_edge10_realx3"
    for bad in (["600,0.0,sharp"], ["600,0.0,gen2"], ["600,0.0,genhalf"], ["600,0.0,edge-1"], ["600,0.0,edgex"],
                ["600,0.0,realx0"], ["600,0.0,realxy"], ["600,0.0,realx2,realx3"],
                ["600"], ["x,0.0"], ["600,0.0", "--fast"], [], ["from=/a", "from=/b", "600,0.0"]):
        with pytest.raises(SystemExit):
            views_decoder.parse_args(bad)
    assert views_decoder.real_selection_name("sd_nuscenes_v1.0-mini_scene-0553") == "real_maps_scene_0553"


def test_real_selection_refuses_to_choose_from_the_shipped_model_that_saw_the_selection_scene(tmp_path):
    """The shipped decoder trained on ``REAL_SELECTION_SCENE`` (the refit), so ``--real-selection`` asks for a run
    that did not see it (``from=DIR``) and refuses a ``from=`` that is no views run, before anything trains."""
    from bevgen.pretrained import SHIPPED_SAW_SELECTION_SCENE, shipped

    if shipped("views_tiny") is None:
        pytest.skip("checkpoints/views_tiny not in this checkout")
    assert SHIPPED_SAW_SELECTION_SCENE
    with pytest.raises(SystemExit, match="from=DIR"):
        views_decoder.main(["--real-selection", "600,0.0,layout,frozen,real"])
    with pytest.raises(SystemExit, match="no checkpoints/tokenizer.pt"):
        views_decoder.main(["--real-selection", f"from={tmp_path}", "600,0.0,layout,frozen,real"])


def test_other_egos_are_vehicles_the_render_recipe_sees_longest_paths_first():
    """``views_real_egos.other_egos``: every other vehicle valid on at least 3/4 of the logged ego's rendered frames,
    the ones that drive furthest first; the ego itself, walkers and cars that leave early are not viewpoints."""
    import copy

    import numpy as np
    from conftest import make_varied_road_scenario  # tests/conftest.py (on sys.path)
    from views_real_egos import other_egos

    from sim_bridge.scenario import Scenario

    d = make_varied_road_scenario(3, length=130)  # the render recipe: 24 frames every 5 steps from step 10
    cars = sorted(k for k in d["tracks"] if k.startswith("car"))
    for k, name in enumerate(cars):  # car k drives k m/s: paths grow with k
        pos = d["tracks"][name]["state"]["position"]
        pos[:, 0] = pos[0, 0] + k * np.arange(130) * 0.1
    d["tracks"][cars[-1]]["state"]["valid"][40:] = False  # the fastest car leaves the log after 4 s
    walker = copy.deepcopy(d["tracks"][cars[0]])
    walker["type"] = "PEDESTRIAN"
    d["tracks"]["walker"] = walker
    egos = other_egos(Scenario.from_dict(d), per_scene=8)
    assert egos == cars[-2::-1], egos  # fastest first, the one that left and the walker not at all
    assert other_egos(Scenario.from_dict(d), per_scene=1) == [cars[-2]]


def test_fit_gap_counts_the_frames_a_run_trained_on(tmp_path):
    """``views_fit_gap.trained_share``: frames of a merged dataset count under their source name too."""
    import json

    from views_fit_gap import spread, trained_share

    (tmp_path / "split.json").write_text(json.dumps({"train": ["p__0010", "real-r__0010"], "heldout": ["p__0020"]}))
    assert trained_share(tmp_path, ["p__0010", "r__0010", "p__0020", "q__0010"]) == 0.5
    assert trained_share(tmp_path / "none", ["p__0010"]) is None
    assert spread([f"f{i:03d}" for i in range(100)], 4) == ["f000", "f025", "f050", "f075"]
    assert spread(["b", "a"], 4) == ["a", "b"]


def test_the_round_trip_scores_the_true_views_through_the_tokenizer_closer_than_samples(tmp_path):
    """``views_eval.evaluate_model(round_trip=True)`` (the round-trip shares of views_evaluators.py and the
    selection rows of views_decoder.py): the true views encoded and decoded with their layout come back far
    closer to the truth than the generator's samples of the same layouts do, and the scores name their frames."""
    pytest.importorskip("torch")
    pytest.importorskip("pybullet")
    from conftest import make_varied_road_scenario  # tests/conftest.py (on sys.path)
    from views_eval import evaluate_model

    from bevgen.pretrained import shipped
    from bevgen.render.dataset import write_synthetic_dataset
    from bevgen.render.scene import SynthConfig
    from sim_bridge.scenario import Scenario, save_scenario

    ship = shipped("views_tiny")
    if ship is None:
        pytest.skip("no shipped views checkpoint (checkpoints/views_tiny): run `make checkpoints`")
    for s in range(3):  # straight roads with cars, not the procedural training maps
        save_scenario(Scenario.from_dict(make_varied_road_scenario(s)), tmp_path / "scenarios" / f"road{s}.pkl")
    write_synthetic_dataset(tmp_path / "scenarios", tmp_path / "frames", SynthConfig(image_size=(64, 112)),
                            frames_per_scenario=1, first_frame=0, progress=False)
    sets = {"roads": tmp_path / "frames"}
    trip = evaluate_model(ship, sets, None, tmp_path / "trip", round_trip=True)["roads"]
    sampled = evaluate_model(ship, sets, None, tmp_path / "sampled")["roads"]
    # measured (shipped tiny, 3 frames at 64x112): PSNR round trip 24.6 dB, samples 15.1 dB
    assert trip["psnr"] > sampled["psnr"] + 3.0, (trip["psnr"], sampled["psnr"])
    assert trip["num_frames"] == sampled["num_frames"] == 3


def test_the_real_scene_curve_leaves_each_scene_out_and_drops_each_other_scene_once():
    """``views_real_curve.arms``: per left-out scene, every other scene (3) and those less one (2), no arm trains on
    the scene it is scored on, each scene is the dropped one exactly once, and one procedural control."""
    from views_real_curve import arms, short

    scenes = ["sd_nuscenes_v1.0-mini_scene-0553", "sd_nuscenes_v1.0-mini_scene-0061",
              "sd_training.tfrecord-00000-of-01000_2a1e44d405a6833f", "sd_nuscenes_v1.0-mini_scene-0103"]
    plan = arms(scenes)
    assert plan.pop("procedural") == [] and len(plan) == 8
    dropped = []
    for left in scenes:
        out3, out2 = plan[f"{short(left)}_out3"], plan[f"{short(left)}_out2"]
        assert sorted(out3) == sorted(s for s in scenes if s != left) and left not in out2
        assert len(out2) == 2 and set(out2) < set(out3)
        dropped += sorted(set(out3) - set(out2))
    assert sorted(dropped) == sorted(scenes)
    assert short(scenes[2]) == "2a1e44d405a6833f" and short(scenes[0]) == "scene-0553"
