"""Intervals on the views scores' shares of the oracle: how far a share could move with another draw of frames.

A views score is a share of the oracle, ``(sum a / sum b) / (sum c / sum d)`` over the frames of a set: for the
IoUs a, b are the generated views' per-frame intersections and unions and c, d the true views'; for seams a is the
per-frame seam score and b 1 where it is defined. Frames of one scenario follow each other a few steps apart and
are correlated, so resampling single frames would understate the spread. :func:`share_interval` therefore draws
frames in blocks of consecutive frames within each scenario (a circular block bootstrap, stratified by scenario:
every draw keeps each scenario's frame count) and pairs the generated and true views (one draw resamples both),
so the oracle's own frame-to-frame spread cancels. What it does not cover: another draw of scenarios (the
interval is conditional on the scenarios in the set; with a handful of scenarios that is the larger uncertainty)
and another evaluator (``benchmarks/views_evaluators.py``).

numpy's Generator is the random source; the percentile interval is the plain one (Efron), which needs no
further assumptions and is what a reader expects from "90% interval" here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from bevgen.render.dataset import scenario_of

__all__ = ["share_interval", "block_indices"]


def block_indices(names: Sequence[str], n_draws: int, block: int = 4, seed: int = 0) -> np.ndarray:
    """Frame indices of ``n_draws`` circular-block resamples of ``names``, stratified by scenario.

    Within each scenario (``scenario_of``; frames ordered by name, i.e. by step) a draw concatenates blocks of
    ``block`` consecutive frames starting anywhere, then keeps the scenario's first n, n being its frame count. A
    scenario of at most ``block`` frames is drawn in blocks of ``max(1, n // 2)``: one block of all its frames
    would redraw the same frames every time and give it no spread at all (a zero-width interval for sets of
    short scenarios). Blocks wrap around the scenario's end (the circular block bootstrap, Politis & Romano
    1992): a plain moving block draws the first and last frames less often than the middle ones, which biases
    the interval wherever the score drifts along the drive. Returns int [n_draws, len(names)]. O(n_draws len(names)).
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[scenario_of(name)].append(i)
    rng = np.random.default_rng(seed)
    parts = []
    for members in groups.values():
        members = np.array(sorted(members, key=lambda i: names[i]))
        n = len(members)
        size = block if n > block else max(1, n // 2)
        k = -(-n // size)  # blocks per draw
        starts = rng.integers(0, n, size=(n_draws, k))  # circular: every frame equally likely to be drawn
        local = ((starts[..., None] + np.arange(size)) % n).reshape(n_draws, -1)[:, :n]
        parts.append(members[local])
    return np.concatenate(parts, axis=1) if parts else np.zeros((n_draws, 0), dtype=int)


def share_interval(names: Sequence[str], a: Sequence[float], b: Sequence[float], c: Sequence[float],
                   d: Sequence[float], level: float = 0.9, n_draws: int = 2000, block: int = 4,
                   seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of ``(sum a / sum b) / (sum c / sum d)`` under :func:`block_indices` resampling.

    Args:
        names: frame names (``<scenario>__<t>``), one per entry of a, b, c, d (per-frame sums, see the module).
        level: coverage (0.9: the 5th and 95th percentiles). n_draws, block, seed: the resampling.
    Returns:
        (low, high), or None where the share is undefined or unstable: no frames, or sum b, c or d not positive
        in the full set (e.g. an oracle seam score at or below 0). Draws whose sums b, c or d are not positive
        are left out. O(n_draws len(names)).
    """
    a, b, c, d = (np.asarray(x, dtype=np.float64) for x in (a, b, c, d))
    if not len(names) or min(b.sum(), c.sum(), d.sum()) <= 0:
        return None
    idx = block_indices(names, n_draws, block, seed)
    sa, sb, sc, sd = (x[idx].sum(axis=1) for x in (a, b, c, d))
    ok = (sb > 0) & (sc > 0) & (sd > 0)
    share = (sa[ok] / sb[ok]) / (sc[ok] / sd[ok])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(share, [tail, 100 - tail])
    return float(low), float(high)
