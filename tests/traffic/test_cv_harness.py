"""benchmarks/traffic_cv.py: the harness that chooses traffic-model settings (train, score, resume, refuse)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import traffic_cv  # noqa: E402  # benchmarks/ (on sys.path)

from runkit.config import ConfigError  # noqa: E402


def test_the_harness_trains_scores_resumes_and_refuses_a_clashing_arm(real_dir, tmp_path):
    rows = traffic_cv.run_jobs("heldout", "short", ["steps=2"], [1], jobs=1, work=tmp_path)
    assert len(rows) == 1
    row = rows[0]
    # the benchmark's recipe with the override and the seed, recorded with the result
    assert (row["config"]["steps"], row["config"]["seed"], row["config"]["symmetry"]) == (2, 1, "rotate_mirror")
    assert row["config"]["data"] == [str(tmp_path / "real_train")]
    assert 0.5 < row["heldout"] < 1 and 0.5 < row["train"] < 1 and row["score"] == row["heldout"]
    assert (tmp_path / "short" / "full_s1" / "train_summary.json").exists()
    # measured once: asked again, nothing is retrained or appended
    assert traffic_cv.run_jobs("heldout", "short", ["steps=2"], [1], jobs=1, work=tmp_path) == []
    assert len(traffic_cv._done(tmp_path)) == 1
    with pytest.raises(SystemExit, match="choose another name"):
        traffic_cv.run_jobs("cv", "short", ["steps=3"], [0], jobs=1, work=tmp_path)
    with pytest.raises(ConfigError, match="stepz"):
        traffic_cv.run_jobs("cv", "other", ["stepz=3"], [0], jobs=1, work=tmp_path)
    assert not (tmp_path / "folds").exists()  # refused before any fold was written
    assert "| short | steps=2 | heldout | 1 |" in traffic_cv.table(traffic_cv._done(tmp_path))


def test_the_table_averages_each_arm_over_folds_and_seeds():
    rows = [{"arm": "a", "kind": "cv", "overrides": [], "seed": s, "fold": f, "score": 0.8 + 0.01 * f + 0.1 * s}
            for s in (0, 1) for f in (0, 1)]
    line = traffic_cv.table(rows).splitlines()[2]
    assert line == "| a | (recipe) | cv | 4 | 0.8550 | 0.8000 / 0.8100 / 0.9000 / 0.9100 |"
