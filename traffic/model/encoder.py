"""Scene encoder shared by the placement and trajectory models (TrafficGen, Feng et al., ICRA 2023).

TrafficGen encodes map vectors and agents with MLPs and fuses them with context-gating blocks; here
one pre-norm transformer encoder runs over the concatenated [map tokens; agent tokens] instead.

Letters: b batch, m map vector, a agent, n token (m + a), d feature.

Inputs come from ``traffic.encoding.collate``. Map tokens read ``map_pts`` (positions) and the
non-positional columns of ``map_feats``; agent tokens are computed from ``agent_state`` alone (not
``agent_feats``) so that placement and rollouts update a single tensor. Positions are divided by
``POS_SCALE`` for both, which keeps map and agents in one metric frame whatever range the scenes
were encoded with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traffic.encoding import AGENT_TYPES, F_MAP

__all__ = ["ModelConfig", "TINY", "PAPER", "PRESETS", "SceneEncoder", "mlp", "agent_inputs", "map_inputs",
           "POS_SCALE"]

POS_SCALE = 50.0  # m: positions enter the MLPs as x / POS_SCALE
VEL_SCALE = 10.0  # m/s
SIZE_SCALE = (5.0, 2.5)  # m: (length, width)
HIST_SCALE = 3.0  # m/s: the velocity change over the last second (agent_hist) enters as dv / HIST_SCALE
F_AGENT_IN = 8  # x, y, cos, sin, vx, vy, length, width


@dataclass(frozen=True)
class ModelConfig:
    """Widths and physical limits of the traffic models (placement and trajectory)."""

    d_model: int = 64
    """Token width of the scene encoder and the heads."""
    layers: int = 2
    """Transformer encoder layers (pre-norm)."""
    heads: int = 4
    """Attention heads; must divide d_model."""
    dropout: float = 0.0
    """Dropout inside the transformer layers."""
    mixtures: int = 4
    """Gaussian components of the placement attribute mixture (per lane vector)."""
    modes: int = 6
    """Trajectory modes predicted per agent."""
    horizon: int = 20
    """Trajectory steps predicted per call (20 = 2 s at 10 Hz); rollouts re-predict every horizon steps."""
    max_accel: float = 6.0
    """Bound on |longitudinal acceleration|, m/s^2 (controls are tanh * max_accel)."""
    max_yaw_rate: float = 1.0
    """Bound on |yaw rate|, rad/s (controls are tanh * max_yaw_rate)."""
    dt: float = 0.1
    """Integration step, s (the scenario rate, 10 Hz)."""

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads={self.heads} must divide d_model={self.d_model}: pick e.g. heads=4 or d_model=64")
        if min(self.d_model, self.layers, self.heads, self.mixtures, self.modes, self.horizon) < 1:
            raise ValueError("d_model, layers, heads, mixtures, modes and horizon must all be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        if min(self.max_accel, self.max_yaw_rate, self.dt) <= 0:
            raise ValueError("max_accel, max_yaw_rate and dt must be positive")


TINY = ModelConfig()
# Matched to TrafficGen's released configs (metadriverse/trafficgen, init/ and act/ models): their
# hidden width is 1024 -> our feed-forward width 4 * 256 = 1024; 5 stacked context-gating blocks
# per stream plus a fusion stack -> 6 transformer layers; gaussian_comp = 5 -> mixtures = 5; the
# actuator's 6 anchors -> modes = 6. TrafficGen predicts 89 steps at once; we keep 2 s chunks.
PAPER = ModelConfig(d_model=256, layers=6, heads=8, mixtures=5, modes=6)
PRESETS = {"tiny": TINY, "paper": PAPER}
"""The traffic package's one preset registry: ``TrafficTrainConfig.preset`` (and ``--preset`` of
``bevgen traffic train``) names one of these model configs."""


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer MLP [..., d_in] -> [..., d_out]."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


def map_inputs(map_feats: Tensor, map_pts: Tensor) -> Tensor:
    """[b, m, F_MAP] features, [b, m, 2, 2] start/end (m) -> [b, m, F_MAP] token inputs.

    The positional columns (x0, y0, x1, y1) are recomputed from ``map_pts`` / POS_SCALE; the rest
    (cos, sin, length, type one-hots, speed limit) are kept.
    """
    return torch.cat([map_pts.flatten(-2) / POS_SCALE, map_feats[..., 4:]], dim=-1)


def agent_inputs(agent_state: Tensor) -> Tensor:
    """[b, a, 7] (x, y, heading, vx, vy, length, width) -> [b, a, 8] normalized token inputs."""
    x, y, h, vx, vy, length, width = agent_state.unbind(-1)
    return torch.stack([x / POS_SCALE, y / POS_SCALE, h.cos(), h.sin(), vx / VEL_SCALE, vy / VEL_SCALE,
                        length / SIZE_SCALE[0], width / SIZE_SCALE[1]], dim=-1)


class SceneEncoder(nn.Module):
    """MLP embeddings of map vectors and agents, then a transformer over [map; agents].

    Cost: one pass is O(L * (M + A)^2 * D) for L layers, with M map vectors and A agent slots.
    """

    def __init__(self, cfg: ModelConfig = TINY, history: bool = False):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.map_embed = mlp(F_MAP, d, d)
        self.agent_embed = mlp(F_AGENT_IN, d, d)
        # the agents' last second (velocity change), for the trajectory model; placement places agents without one
        self.hist_embed = nn.Linear(2, d) if history else None
        self.type_embed = nn.Embedding(len(AGENT_TYPES), d)
        self.kind_embed = nn.Embedding(2, d)  # 0 map token, 1 agent token
        # SiLU rather than ReLU/GELU: those route no_grad inference through PyTorch's fused encoder
        # fast path, whose masked softmax ran ~4x slower than the regular path with padding masks on CPU.
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=4 * d, dropout=cfg.dropout,
                                           activation=F.silu, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(d),
                                                 enable_nested_tensor=False)

    def forward(self, map_feats: Tensor, map_pts: Tensor, map_mask: Tensor, agent_state: Tensor,
                agent_type: Tensor, context: Tensor, agent_hist: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode one batch of scenes.

        Args:
            map_feats: float [b, m, F_MAP]; map_pts: float [b, m, 2, 2] (m, scene frame);
            map_mask: bool [b, m] valid map vectors.
            agent_state: float [b, a, 7] (x, y, heading, vx, vy, length, width).
            agent_type: long [b, a] index into AGENT_TYPES.
            context: bool [b, a] agents visible to attention (placement hides the unplaced ones);
                every scene needs at least one visible token (the ego).
            agent_hist: float [b, a, 2] velocity change over the last second (m/s, scene frame), read by an
                encoder built with ``history=True`` (zeros where None).
        Returns:
            map_tokens [b, m, d], agent_tokens [b, a, d]. Rows of hidden agents are computed but
            carry no information into the others.
        """
        m = map_feats.shape[1]
        kind = self.kind_embed.weight
        map_tok = self.map_embed(map_inputs(map_feats, map_pts)) + kind[0]
        agent_tok = (self.agent_embed(agent_inputs(agent_state)) + self.type_embed(agent_type.clamp(min=0))
                     + kind[1])
        if self.hist_embed is not None:
            hist = agent_state.new_zeros(*agent_state.shape[:-1], 2) if agent_hist is None else agent_hist
            agent_tok = agent_tok + self.hist_embed(hist / HIST_SCALE)
        tokens = torch.cat([map_tok, agent_tok], dim=1)  # [b, n, d]
        pad = ~torch.cat([map_mask, context], dim=1)  # [b, n], True = ignored as a key
        out = self.transformer(tokens, src_key_padding_mask=pad)
        return out[:, :m], out[:, m:]
