"""Vehicle placement (TrafficGen's initializer): where on the lane graph the next vehicle goes.

Per lane vector the model predicts an occupancy logit and a diagonal Gaussian mixture over six
vehicle attributes (``ATTRIBUTES``), conditioned on the map and the vehicles placed so far. Placement
is autoregressive: pick a free lane vector, sample attributes, turn them into a box, reject overlaps,
repeat with the new vehicle in the context.

Letters: b batch, m map vector, a agent, k mixture component, c attribute, n new vehicle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sim_bridge.geometry import wrap_angle
from traffic.encoding import SceneBatch
from traffic.model.encoder import TINY, ModelConfig, SceneEncoder, mlp

__all__ = ["PlacementModel", "PlacedVehicles", "obb_overlap", "ATTRIBUTES"]

ATTRIBUTES = ("s_logit", "lateral", "heading", "length", "width", "speed")
# Attributes are modelled in normalized units (x - mean) / scale so one initialization fits all.
_ATTR_MEAN = (0.0, 0.0, 0.0, 4.6, 1.9, 5.0)
_ATTR_SCALE = (2.0, 1.0, 0.2, 1.5, 0.3, 5.0)
S_EPS = 0.02  # s in [0, 1] is clipped to [S_EPS, 1 - S_EPS] before the logit
LENGTH_RANGE = (2.5, 12.0)  # m
WIDTH_RANGE = (1.4, 3.0)  # m
LATERAL_MAX = 3.0  # m: traffic.encoding assigns a vehicle to a lane vector only within 3 m
DEFAULT_SPEED_LIMIT = 20.0  # m/s where the lane has none
MARGIN = 0.3  # m of clearance required between a placed box and every other box
LOG_STD_RANGE = (-5.0, 3.0)


def obb_overlap(p: Tensor, q: Tensor, margin: float = 0.0) -> Tensor:
    """Separating-axis test for oriented boxes.

    Args:
        p, q: float [..., 7] agent_state rows or [..., 5] boxes (x, y, heading, length, width),
            broadcastable against each other.
        margin: p is inflated by this many metres on every side.
    Returns:
        bool [...]: True where the boxes intersect.
    """
    p, q = _box5(p), _box5(q)
    d = q[..., :2] - p[..., :2]  # [..., 2]
    axes = []
    for h in (p[..., 2], q[..., 2]):
        c, s = h.cos(), h.sin()
        axes += [torch.stack([c, s], -1), torch.stack([-s, c], -1)]
    pu, pv, qu, qv = axes
    hp = (p[..., 3] / 2 + margin, p[..., 4] / 2 + margin)
    hq = (q[..., 3] / 2, q[..., 4] / 2)
    separated = torch.zeros(d.shape[:-1], dtype=torch.bool, device=d.device)
    dot = lambda a, b: (a * b).sum(-1).abs()  # noqa: E731
    for u in axes:
        rp = hp[0] * dot(u, pu) + hp[1] * dot(u, pv)
        rq = hq[0] * dot(u, qu) + hq[1] * dot(u, qv)
        separated |= dot(d, u) > rp + rq
    return ~separated


def _box5(x: Tensor) -> Tensor:
    """[..., 7] agent_state rows or [..., 5] boxes -> [..., 5] (x, y, heading, length, width)."""
    return torch.cat([x[..., :3], x[..., 5:7]], -1) if x.shape[-1] == 7 else x


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x [b, m, *rest], idx long [b] -> [b, *rest] (row idx[b] of each scene)."""
    return x[torch.arange(x.shape[0], device=x.device), idx]


def _scatter_any(index: Tensor, flag: Tensor, m: int) -> Tensor:
    """index long [b, a] (-1 = none), flag bool [b, a] -> bool [b, m]: vectors hit by a flagged row."""
    out = torch.zeros(index.shape[0], m, device=index.device)
    src = (flag & (index >= 0)).float()
    return out.scatter_reduce(1, index.clamp(min=0), src, "amax") > 0


@dataclass(frozen=True)
class PlacedVehicles:
    """What :meth:`PlacementModel.sample` places, n rows per scene (padding where ``valid`` is False)."""

    agent_state: Tensor
    """[b, n, 7] x, y, heading, vx, vy, length, width in the scene frame (``traffic.encoding`` rows)."""
    valid: Tensor
    """bool [b, n], a vehicle was placed in this row."""
    lane: Tensor
    """long [b, n], the lane vector it was placed on, -1 where not placed."""


class PlacementModel(nn.Module):
    """Occupancy + attribute mixture per lane vector, on top of ``SceneEncoder``."""

    def __init__(self, cfg: ModelConfig = TINY):
        super().__init__()
        self.cfg = cfg
        d, k, c = cfg.d_model, cfg.mixtures, len(ATTRIBUTES)
        self.encoder = SceneEncoder(cfg)
        self.occupancy_head = mlp(d, d, 1)
        self.mixture_head = mlp(d, d, k * (1 + 2 * c))
        with torch.no_grad():  # start near the prior: means ~ ATTR_MEAN, stds ~ ATTR_SCALE
            self.mixture_head[-1].weight.mul_(0.1)
            self.mixture_head[-1].bias.zero_()
        self.register_buffer("attr_mean", torch.tensor(_ATTR_MEAN), persistent=False)
        self.register_buffer("attr_scale", torch.tensor(_ATTR_SCALE), persistent=False)

    def forward(self, batch: SceneBatch, agent_state: Tensor, agent_type: Tensor,
                context: Tensor) -> dict[str, Tensor]:
        """Per-lane-vector predictions given the context agents.

        Args:
            batch: collated scenes (map_feats, map_pts, map_mask are read).
            agent_state: float [b, a, 7]; agent_type: long [b, a]; context: bool [b, a] placed agents.
        Returns:
            dict with occupancy [b, m] logits, mix_logits [b, m, k], mean [b, m, k, c] and
            log_std [b, m, k, c] (normalized attribute units).
        """
        map_tok, _ = self.encoder(batch["map_feats"], batch["map_pts"], batch["map_mask"], agent_state,
                                  agent_type, context)
        mix = rearrange(self.mixture_head(map_tok), "b m (k c) -> b m k c", k=self.cfg.mixtures)
        c = len(ATTRIBUTES)
        log_std = mix[..., 1 + c:].clamp(*LOG_STD_RANGE)
        return {"occupancy": self.occupancy_head(map_tok).squeeze(-1), "mix_logits": mix[..., 0],
                "mean": mix[..., 1:1 + c], "log_std": log_std}

    def attributes(self, batch: SceneBatch) -> Tensor:
        """Targets of every agent slot: [b, a, c] normalized attributes (garbage where agent_lane < 0)."""
        off, st = batch["lane_offset"], batch["agent_state"]
        s = off[..., 0].clamp(S_EPS, 1 - S_EPS).logit()
        raw = torch.stack([s, off[..., 1], off[..., 2], st[..., 5], st[..., 6], st[..., 3:5].norm(dim=-1)], -1)
        return (raw - self.attr_mean) / self.attr_scale

    def loss(self, batch: SceneBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """TrafficGen's initializer loss on a random split of each scene into context and targets.

        Per scene a number k is drawn uniformly in [0, number of non-ego agents]; k random non-ego
        agents join the ego as context, and every hidden vehicle with agent_lane >= 0 is a target.
        Occupancy: BCE over lane vectors not occupied by the context (1 where a target sits).
        Attributes: NLL of each target's attributes under its lane vector's mixture.

        Args:
            batch: collated scenes; generator: torch.Generator on the batch's device (or None).
        Returns:
            dict of scalar tensors total, occupancy, attributes.
        """
        mask, lane = batch["agent_mask"], batch["agent_lane"]
        b, a = mask.shape
        dev = mask.device
        others = mask.clone()
        others[:, 0] = False
        r = torch.rand(b, a, generator=generator, device=dev).masked_fill(~others, 2.0)
        rank = r.argsort(1).argsort(1)  # random order of the non-ego agents first
        k = (torch.rand(b, generator=generator, device=dev) * (others.sum(1) + 1)).floor()
        context = (others & (rank < k[:, None])) | (mask & (torch.arange(a, device=dev) == 0))
        target = others & ~context & (batch["agent_type"] == 0) & (lane >= 0)

        pred = self(batch, batch["agent_state"], batch["agent_type"], context)
        m = pred["occupancy"].shape[1]
        candidates = batch["lane_mask"] & ~_scatter_any(lane, context, m)
        occ_target = _scatter_any(lane, target, m).float()
        bce = F.binary_cross_entropy_with_logits(pred["occupancy"], occ_target, reduction="none")
        occupancy = (bce * candidates).sum() / candidates.sum().clamp(min=1)

        idx = lane.clamp(min=0)
        take = lambda x: x.gather(1, idx.view(b, a, *[1] * (x.dim() - 2)).expand(b, a, *x.shape[2:]))  # noqa: E731
        mix_logits, mean, log_std = take(pred["mix_logits"]), take(pred["mean"]), take(pred["log_std"])
        x = self.attributes(batch)[:, :, None]  # [b, a, 1, c]
        log_n = (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        nll = -torch.logsumexp(mix_logits.log_softmax(-1) + log_n, dim=-1)  # [b, a]
        attributes = (nll * target).sum() / target.sum().clamp(min=1)
        return {"total": occupancy + attributes, "occupancy": occupancy, "attributes": attributes}

    @torch.no_grad()
    def sample(self, batch: SceneBatch, num_new: int | Tensor, generator: torch.Generator | None = None,
               max_tries: int = 10, context: Tensor | None = None) -> PlacedVehicles:
        """Place new vehicles autoregressively, one per scene per step, all scenes at once.

        Each step: one encoder pass; a free lane vector ~ softmax(occupancy logits) (free = a lane
        vector no context vehicle sits on); attributes from its mixture; the box is rejected if it
        comes within MARGIN of any context box, and the step retries (up to ``max_tries``, the rejected
        vector excluded) without another encoder pass. A scene whose tries all fail gets no vehicle at
        that step. Sizes are clamped to LENGTH_RANGE / WIDTH_RANGE, speeds to [0, speed limit or 20].

        Cost: max(num_new) encoder passes, step n over M + C + n tokens (C the most context agents of a
        scene), plus O(max_tries * (C + N)) box tests per step.

        Args:
            batch: collated scenes. The existing agents form the initial context.
            num_new: vehicles to place per scene, an int or a long tensor [b].
            generator: torch.Generator on the batch's device, for reproducible samples.
            max_tries: attempts per vehicle before giving up on that step.
            context: bool [b, a] subset of existing agents to keep (default agent_mask; the ego
                should stay in).
        Returns:
            :class:`PlacedVehicles` with n = max(num_new) rows per scene.
        """
        mask = batch["agent_mask"]
        b = mask.shape[0]
        dev = mask.device
        num_new = torch.as_tensor(num_new, device=dev).long().expand(b)
        n_max = int(num_new.max()) if b else 0
        ctx0 = mask if context is None else context & mask
        lane_mask = batch["lane_mask"]
        occupied = _scatter_any(batch["agent_lane"], ctx0, lane_mask.shape[1])
        # only context agents matter (hidden ones are masked keys and never collide): keep those rows, first,
        # and give the encoder the rows placed so far, so a step attends over M + a + n tokens, not M + A + N
        a = max(int(ctx0.sum(1).max()) if b else 0, 1)
        order = torch.argsort((~ctx0).to(torch.int8), dim=1, stable=True)[:, :a]
        state0, ctx0 = batch["agent_state"].gather(1, order[..., None].expand(-1, -1, 7)), ctx0.gather(1, order)
        state = torch.cat([state0, state0.new_zeros(b, n_max, 7)], 1)
        types = torch.cat([batch["agent_type"].gather(1, order), batch["agent_type"].new_zeros(b, n_max)], 1)
        ctx = torch.cat([ctx0, ctx0.new_zeros(b, n_max)], 1)
        out_lane = torch.full((b, n_max), -1, dtype=torch.long, device=dev)
        for n in range(n_max):
            pred = self(batch, state[:, :a + n], types[:, :a + n], ctx[:, :a + n])
            free = lane_mask & ~occupied & (num_new > n)[:, None]
            placed = torch.zeros(b, dtype=torch.bool, device=dev)
            for _ in range(max_tries):
                pending = ~placed & free.any(1)
                if not bool(pending.any()):
                    break
                logits = pred["occupancy"].masked_fill(~free, torch.finfo(pred["occupancy"].dtype).min)
                # masked entries underflow to probability 0; idle scenes draw from a dummy uniform row
                probs = torch.where(pending[:, None], logits.softmax(-1), torch.ones_like(logits))
                vec = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [b]
                box = self._box(batch, pred, vec, generator)  # [b, 7]
                hit = (obb_overlap(box[:, None], state, MARGIN) & ctx).any(1)
                ok = pending & ~hit
                state[:, a + n] = torch.where(ok[:, None], box, state[:, a + n])
                out_lane[:, n] = torch.where(ok, vec, out_lane[:, n])
                placed |= ok
                free[torch.arange(b, device=dev), vec] &= ~(pending & hit)
            ctx[:, a + n] = placed
            occupied[torch.arange(b, device=dev), out_lane[:, n].clamp(min=0)] |= placed
        return PlacedVehicles(agent_state=state[:, a:], valid=ctx[:, a:], lane=out_lane)

    def _box(self, batch: SceneBatch, pred: dict[str, Tensor], vec: Tensor,
             generator: torch.Generator | None) -> Tensor:
        """Sample attributes on lane vector vec [b] and build agent_state rows [b, 7] (scene frame)."""
        b, dev = vec.shape[0], vec.device
        comp = torch.multinomial(_take(pred["mix_logits"], vec).softmax(-1), 1, generator=generator).squeeze(1)
        mean, log_std = _take(_take(pred["mean"], vec), comp), _take(_take(pred["log_std"], vec), comp)
        z = torch.randn(b, len(ATTRIBUTES), generator=generator, device=dev, dtype=mean.dtype)
        attrs = (mean + log_std.exp() * z) * self.attr_scale + self.attr_mean  # [b, c]
        s_logit, lat, rel, length, width, speed = attrs.unbind(-1)
        pts = _take(batch["map_pts"], vec)  # [b, 2, 2]
        start, d = pts[:, 0], pts[:, 1] - pts[:, 0]
        unit = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        normal = torch.stack([-unit[:, 1], unit[:, 0]], -1)  # left of the vector
        lat = lat.clamp(-LATERAL_MAX, LATERAL_MAX)
        xy = start + s_logit.sigmoid()[:, None] * d + lat[:, None] * normal
        heading = wrap_angle(torch.atan2(unit[:, 1], unit[:, 0]) + rel)
        limit = _take(batch["speed_limit"], vec)
        limit = torch.where(limit > 0, limit, torch.full_like(limit, DEFAULT_SPEED_LIMIT))
        speed = torch.minimum(speed.clamp(min=0), limit)
        return torch.stack([xy[:, 0], xy[:, 1], heading, speed * heading.cos(), speed * heading.sin(),
                            length.clamp(*LENGTH_RANGE), width.clamp(*WIDTH_RANGE)], -1)
