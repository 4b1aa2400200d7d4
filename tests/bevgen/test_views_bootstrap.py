"""The interval on a share of the oracle (bevgen.views.bootstrap): resampling keeps scenarios apart, keeps blocks of
consecutive frames, and the interval widens with the frames' spread and with their correlation."""

import numpy as np
import pytest

from bevgen.views.bootstrap import block_indices, share_interval


def _names(scenes: int, frames: int) -> list[str]:
    return [f"scene{s}__{10 * (t + 1):04d}" for s in range(scenes) for t in range(frames)]


def test_block_indices_stay_within_scenario_and_keep_blocks():
    names = _names(3, 8)[::-1]  # order of the list must not matter
    idx = block_indices(names, 500, block=4, seed=1)
    assert idx.shape == (500, 24)
    scene = np.array([n.split("__")[0] for n in names])
    step = np.array([int(n.split("__")[1]) for n in names])
    for s in np.unique(scene):  # every draw holds exactly the scenario's frame count of that scenario's frames
        assert ((scene[idx] == s).sum(axis=1) == 8).all()
    # within a block the steps follow each other (step + 10, wrapping from the last frame to the first), and a
    # block starts at any frame: every frame is drawn equally often
    assert np.isin(np.diff(step[idx[:, :4]], axis=1), [10, -70]).all()
    counts = np.bincount(idx.ravel(), minlength=24)
    assert len(np.unique(step[idx[:, 0]])) == 8 and counts.min() > 0.85 * counts.mean()
    # a scenario no longer than a block is drawn in blocks of half its length (not one block of all of it: the
    # same frames in every draw, no spread): a 2-frame scenario draws single frames, a 4-frame one pairs
    short = block_indices(_names(1, 2), 200, block=4)
    assert short.shape == (200, 2) and (short[:, 0] == short[:, 1]).any() and (short[:, 0] != short[:, 1]).any()
    four = block_indices(_names(1, 4), 200, block=4)
    assert np.isin((four[:, 1] - four[:, 0]) % 4, [1]).all() and np.isin((four[:, 3] - four[:, 2]) % 4, [1]).all()
    with pytest.raises(ValueError):
        block_indices(names, 10, block=0)


def test_share_interval_follows_the_frames():
    names = _names(3, 8)
    rng = np.random.default_rng(0)
    union = rng.uniform(50, 100, len(names))
    oracle = 0.8 * union
    # the generated views equal the oracle's: the share is 1 in every draw
    assert share_interval(names, oracle, union, oracle, union) == pytest.approx((1.0, 1.0))
    # half the oracle's intersections in every frame: exactly 0.5, whatever the draw
    lo, hi = share_interval(names, 0.5 * oracle, union, oracle, union)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    # frames that disagree: the interval holds the point estimate and widens with the spread
    gen_small = oracle * rng.uniform(0.8, 1.0, len(names))
    gen_large = oracle * rng.uniform(0.4, 1.4, len(names))
    point = gen_large.sum() / oracle.sum()
    small, large = (share_interval(names, g, union, oracle, union) for g in (gen_small, gen_large))
    assert large[0] < point < large[1] and large[1] - large[0] > 2 * (small[1] - small[0])
    # correlated frames (a scenario-long drift): blocks see it, single frames understate it
    drift = np.tile(np.linspace(0.3, 1.7, 8), 3)
    blocks, single = (share_interval(names, oracle * drift, union, oracle, union, block=b) for b in (4, 1))
    assert blocks[1] - blocks[0] > single[1] - single[0]
    # sets of short scenarios (3 frames each) still get an interval of some width when the frames disagree
    few = _names(4, 3)
    u = rng.uniform(50, 100, len(few))
    lo, hi = share_interval(few, 0.8 * u * rng.uniform(0.4, 1.4, len(few)), u, 0.8 * u, u)
    assert hi - lo > 0.05, (lo, hi)
    # undefined shares
    assert share_interval(names, oracle, union, 0 * oracle, union) is None
    assert share_interval([], [], [], [], []) is None
