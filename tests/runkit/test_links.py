"""runkit.links: links keep working when the folder that holds both ends moves."""

from __future__ import annotations

import os
import shutil

import pytest

from runkit.links import relative_symlink


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

