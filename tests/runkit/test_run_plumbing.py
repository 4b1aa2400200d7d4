"""runkit: atomic writes, checkpoints, seeds of resumed runs, run-directory checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

torch = pytest.importorskip("torch")

from runkit.atomic import atomic_write, atomic_write_text  # noqa: E402
from runkit.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from runkit.config import to_dict  # noqa: E402
from runkit.distributed import finish_distributed, setup_distributed  # noqa: E402
from runkit.rundir import check_resume, config_differences  # noqa: E402
from runkit.seeding import seed_everything, stream_seed  # noqa: E402


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c" / "x.pt", model={"w": torch.ones(2)}, optimizer={}, config={"a": 1},
                           step=3, best_metric=0.5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pt"]  # no temporary file left
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"model", "optimizer", "config", "step", "best_metric"} and ckpt["step"] == 3
    torch.testing.assert_close(ckpt["model"]["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = atomic_write_text(tmp_path / "d" / "a.json", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new"


def test_atomic_write_keeps_the_suffix_for_writers_that_choose_a_format_by_it(tmp_path):
    import numpy as np

    atomic_write(tmp_path / "x.npz", lambda tmp: np.savez(tmp, a=np.arange(3)))  # savez appends .npz otherwise
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]
    assert np.load(tmp_path / "x.npz")["a"].tolist() == [0, 1, 2]


def test_resumed_streams_differ_from_fresh_ones():
    assert stream_seed(7, 1) == 7001 == stream_seed(7, 1, 0)  # fresh runs keep their historical seeds
    resumed = {stream_seed(7, r, s) for r in (0, 1) for s in (100, 200)}
    assert len(resumed) == 4 and not resumed & {7000, 7001}
    # deterministic: the same value in every process and run (numpy's SeedSequence is stable), pinned here
    assert stream_seed(7, 0, 100) == 4798821447500941581 and stream_seed(7, 1, 100) == 2613532019004809225


def test_seed_everything_and_single_process_setup():
    import random

    import numpy as np

    seed_everything(3)
    a = torch.rand(2)
    seed_everything(3, rank=1)  # torch: same weights on every rank
    torch.testing.assert_close(torch.rand(2), a)
    random.seed(4)  # Python's and numpy's generators get seed + rank (the streams every trainer had before)
    np.random.seed(4)
    expected = random.random(), np.random.rand()
    seed_everything(3, rank=1)
    assert (random.random(), np.random.rand()) == expected
    assert setup_distributed("cpu")[:2] == (0, 1)
    finish_distributed()  # one process: no group to leave, nothing raised


def test_load_checkpoint_reads_a_run_directory_and_names_what_is_missing(tmp_path):
    save_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", step=3)
    assert load_checkpoint(tmp_path / "run")["step"] == 3  # a run directory means its checkpoints/latest.pt
    with pytest.raises(FileNotFoundError, match=r"empty.*latest\.pt.*train one first"):
        (tmp_path / "empty").mkdir()
        load_checkpoint(tmp_path / "empty", hint="train one first")


def test_check_resume_refuses_the_wrong_directory(tmp_path):
    run = tmp_path / "run"
    assert check_resume(run, resume=False) is None
    with pytest.raises(FileNotFoundError, match="--resume given"):
        check_resume(run, resume=True)
    save_checkpoint(run / "checkpoints" / "latest.pt", step=1)
    assert check_resume(run, resume=True) == run / "checkpoints" / "latest.pt"
    with pytest.raises(FileExistsError, match="already holds a run"):
        check_resume(run, resume=False)


@dataclass(frozen=True)
class _Model:
    width: int = 8
    workers: int = 0


@dataclass(frozen=True)
class _Run:
    model: _Model = field(default_factory=_Model)
    steps: int = 10


def test_config_differences_names_changed_fields_only_in_the_compared_sections():
    stored = to_dict(_Run())
    assert config_differences(stored, _Run(steps=99), ("model",)) == []
    assert config_differences(stored, _Run(_Model(width=16)), ("model",)) == ["model.width: checkpoint 8, config 16"]
    assert config_differences(stored, _Run(_Model(workers=2)), ("model",), ignore=("model.workers",)) == []
    assert config_differences({"steps": 3}, _Run(), ("model", "steps")) == ["steps: checkpoint 3, config 10"]
