"""Vectorised events: collisions, road-edge crossings, route progress.

Collision: oriented boxes overlap by the separating axis theorem (4 candidate axes, the two boxes'
own). Road edge: the ego box against the ``k`` boundary segments listed for its grid cell (built
once per map in :mod:`sim_bridge.batched.state`), again by separating axes (box axes + segment
normal), so a step costs O(a + k) per scene whatever the map size. Route: projection on the nearest
route segment within a window around the previous one, MetaDrive-style longitudinal / lateral
coordinates (``TrajectoryNavigation`` + ``PointLane``), no Python loop anywhere.

Einsum letters: b scene slot, a agent, k nearby segment, w route window, c coordinate.
Boxes are [..., 5] = (x, y, yaw, length, width) in m / rad.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sim_bridge.batched.state import BatchedScenarios
from sim_bridge import geometry

__all__ = ["boxes_overlap", "box_crosses_segments", "nearby_segments", "nearest_agents", "project_on_route",
           "ROUTE_BEHIND", "ROUTE_AHEAD"]

ROUTE_BEHIND, ROUTE_AHEAD = 2, 8  # route segments searched around the previous one (>= 1 m each)


def boxes_overlap(ego: Tensor, others: Tensor, others_cs: Tensor | None = None) -> Tensor:
    """Whether box ``ego`` [b, 5] (x, y, yaw, length, width) overlaps each of ``others`` [b, a, 5] (touching
    counts): bool [b, a]. ``others_cs`` [b, a, 2] may carry the others' precomputed (cos, sin) of yaw."""
    e = ego[:, None, :]
    return geometry.boxes_overlap(e[..., :2], e[..., 2], e[..., 3:5], others[..., :2], others[..., 2],
                                  others[..., 3:5], others_cs)


def box_crosses_segments(box: Tensor, seg: Tensor) -> Tensor:
    """Whether box [b, 5] touches each segment [b, k, 2, 2] (crossing or lying inside): bool [b, k]."""
    q = geometry.vectors_to_frame(seg - box[:, None, None, :2], box[:, 2, None, None])  # [b, k, 2, 2] box frame
    qx, qy = q[..., 0], q[..., 1]  # endpoints in the box frame, [b, k, 2]
    hl, hw = box[:, 3, None] / 2, box[:, 4, None] / 2
    on_x = (qx.amin(-1) <= hl) & (qx.amax(-1) >= -hl)
    on_y = (qy.amin(-1) <= hw) & (qy.amax(-1) >= -hw)
    nx, ny = -(qy[..., 1] - qy[..., 0]), qx[..., 1] - qx[..., 0]  # segment normal
    on_n = (qx[..., 0] * nx + qy[..., 0] * ny).abs() <= hl * nx.abs() + hw * ny.abs()
    return on_x & on_y & on_n


def nearest_agents(agents: Tensor, present: Tensor, xy: Tensor, k: int) -> Tensor:
    """int64 [b, min(k, a)]: indices of the ``present`` (bool [b, a]) agents [b, a, >=2] with centres nearest
    to xy [b, 2], nearest first (absent ones sort last). O(b a)."""
    dx, dy = agents[..., 0] - xy[:, 0:1], agents[..., 1] - xy[:, 1:2]
    dist = torch.where(present, dx * dx + dy * dy, torch.inf)
    return dist.topk(min(k, dist.shape[1]), dim=-1, largest=False).indices


def nearby_segments(batch: BatchedScenarios, scenario: Tensor, xy: Tensor) -> tuple[Tensor, Tensor]:
    """Boundary segments listed for the grid cell of each point.

    Args:
        scenario: int64 [b]; xy: [b, 2] m.

    Returns:
        (segments [b, k, 2, 2], on_map bool [b]); off the grid every slot is the far sentinel.
    """
    log = batch.scene[scenario]
    cell = torch.floor((xy - batch.grid_origin[log]) / batch.cell).long()  # [b, 2]
    shape = batch.grid_shape[log]
    on_map = ((cell >= 0) & (cell < shape)).all(-1)
    n, g, k = batch.grid.shape
    row = log * g + torch.where(on_map, cell[:, 0] * shape[:, 1] + cell[:, 1], 0)
    segs = batch.grid_segments.view(n * g, k, 2, 2).index_select(0, row)
    return torch.where(on_map[:, None, None, None], segs, segs.new_full((), 1e6)), on_map


def project_on_route(batch: BatchedScenarios, scenario: Tensor, xy: Tensor, index: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project points on their route near the previous segment.

    The nearest segment (point-to-segment distance) among ``index - ROUTE_BEHIND ..
    index + ROUTE_AHEAD`` is chosen; on it, as in MetaDrive's PointLane, the longitudinal coordinate
    is the arc length at its start plus the unclamped projection, the lateral one the signed offset.

    Args:
        scenario: int64 [b]; xy: [b, 2] m; index: int64 [b] previous route segment.

    Returns:
        (index [b] int64, progress [b] m, lateral [b] m (left +), route heading there [b] rad).
    """
    last = batch.route_count[scenario] - 2  # last real segment
    win = torch.arange(-ROUTE_BEHIND, ROUTE_AHEAD + 1, device=xy.device)
    j = torch.minimum((index[:, None] + win).clamp_min(0), last[:, None])  # [b, w]
    a = batch.route[scenario[:, None], j]  # [b, w, 2]
    d = batch.route[scenario[:, None], j + 1] - a
    p = xy[:, None, :] - a
    dd = (d * d).sum(-1).clamp_min(1e-12)
    along = (p * d).sum(-1) / dd
    foot = a + along.clamp(0.0, 1.0)[..., None] * d
    best = ((xy[:, None, :] - foot) ** 2).sum(-1).argmin(-1, keepdim=True)  # [b, 1]
    jb = j.gather(1, best).squeeze(1)
    pick = best[..., None].expand(-1, -1, 2)
    db, pb = d.gather(1, pick).squeeze(1), p.gather(1, pick).squeeze(1)
    norm = db.norm(dim=-1).clamp_min(1e-9)
    progress = batch.route_s[scenario, jb] + (pb * db).sum(-1) / norm
    lateral = (db[:, 0] * pb[:, 1] - db[:, 1] * pb[:, 0]) / norm
    return jb, progress, lateral, torch.atan2(db[:, 1], db[:, 0])
