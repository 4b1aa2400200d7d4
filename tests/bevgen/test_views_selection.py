"""benchmarks/views_decoder.py's selection rule: an arm's worst share of a target's bar, over its sampled rows."""

import sys
from pathlib import Path

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
