"""runkit.links: merged datasets' links keep working when the folder that holds both ends moves."""

from __future__ import annotations

import os
import shutil

import pytest

from runkit.links import relative_symlink
from tests.conftest import write_straight_road_scenarios


def test_relative_symlink_survives_a_move_and_replaces_stale_links(tmp_path):
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "merged").mkdir()
    (work / "src" / "a.txt").write_text("a")
    (work / "src" / "b.txt").write_text("b")
    link = relative_symlink(work / "merged" / "a.txt", work / "src" / "a.txt")
    assert os.readlink(link) == os.path.join("..", "src", "a.txt")
    relative_symlink(link, work / "src" / "a.txt")                        # idempotent
    assert os.readlink(link) == os.path.join("..", "src", "a.txt")
    stale = work / "merged" / "b.txt"
    stale.symlink_to(tmp_path / "gone" / "b.txt")                          # an absolute link that dangles
    relative_symlink(stale, work / "src" / "b.txt")
    assert stale.read_text() == "b"
    (work / "merged" / "file.txt").write_text("mine")                      # a real file is never replaced
    with pytest.raises(FileExistsError):
        relative_symlink(work / "merged" / "file.txt", work / "src" / "a.txt")
    assert (work / "merged" / "file.txt").read_text() == "mine"
    shutil.move(work, tmp_path / "moved")
    assert (tmp_path / "moved" / "merged" / "a.txt").read_text() == "a"


def test_a_merged_scenario_index_survives_moving_its_folder(tmp_path):
    from sim_bridge.dataset import ScenarioDataset, merge_datasets

    work = tmp_path / "work"
    a = write_straight_road_scenarios(work / "a", [(0.0, 8.0), (0.3, 6.0)])
    b = write_straight_road_scenarios(work / "b", [(0.1, 9.0)])            # road0.pkl again: indexed through a link
    before = ScenarioDataset(merge_datasets([a, b], work / "merged"))
    assert len(before) == 3 and any((work / "merged").iterdir())
    ids = [sc.id for sc in before]
    shutil.move(work, tmp_path / "moved")
    after = ScenarioDataset(tmp_path / "moved" / "merged")
    assert [sc.id for sc in after] == ids
    linked = after.names[-1]
    assert linked.startswith("sd_b__") and (tmp_path / "moved" / "merged" / linked).is_symlink()
    assert after.load(linked).tracks.speed[0, 0] == pytest.approx(9.0, abs=1e-6)
