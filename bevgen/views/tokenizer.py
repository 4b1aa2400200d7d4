"""Image tokenizer: a convolutional VQ autoencoder with an l2-normalised (cosine) codebook.

Each view is encoded independently to an (H/s) x (W/s) grid of discrete codes, s = ``downsample``.
Trained from scratch (no pretrained weights and no perceptual loss from pretrained networks) with

    L = l1 |x - x^| + mse |x - x^|^2 + grad |grad x - grad x^| + commitment ||z - sg(q)||^2 + ||sg(z) - q||^2

where z is the l2-normalised encoder output and q its nearest code by cosine similarity (codes are
also l2-normalised, as in ViT-VQGAN, Yu et al. 2022, which keeps the codebook in use); gradients pass
the quantiser straight through. Codes unused for ``dead_code_steps`` steps are restarted from random
encoder outputs of the current batch. ``VQAutoencoder.usage`` reports codebook usage and perplexity.

Letters: b batch (of images), c channels, h w token grid, k code, d code dim, n token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bevgen.views.config import TokenizerConfig

__all__ = ["VQAutoencoder", "VectorQuantizer"]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a (1x1 if needed) skip: [b, cin, H, W] -> [b, cout, H, W]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """[b, c_in, h, w] -> [b, c_out, h, w]."""
        return self.skip(x) + self.body(x)


class VectorQuantizer(nn.Module):
    """Cosine-similarity vector quantiser with straight-through gradients and dead-code restarts.

    Lookup is one matmul: O(n k d) for n vectors against k codes.
    """

    def __init__(self, codebook_size: int, code_dim: int, commitment: float, dead_code_steps: int):
        super().__init__()
        self.codebook = nn.Parameter(F.normalize(torch.randn(codebook_size, code_dim), dim=-1))
        self.commitment = commitment
        self.dead_code_steps = dead_code_steps
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))

    @property
    def codes(self) -> Tensor:
        """[k, d] unit-norm codes."""
        return F.normalize(self.codebook, dim=-1)

    def indices(self, z: Tensor) -> Tensor:
        """[n, d] unit vectors -> [n] nearest code index (max cosine)."""
        return (z @ self.codes.T).argmax(dim=-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantise.

        Args:
            z: [n, d] encoder outputs (normalised here).
        Returns:
            q [n, d] straight-through quantised vectors, idx [n] code indices, loss scalar (codebook +
            commitment).
        """
        z = F.normalize(z.float(), dim=-1)
        idx = self.indices(z)
        q = self.codes[idx]
        loss = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        if self.training:
            self._restart_dead(z.detach(), idx)
        return z + (q - z).detach(), idx, loss

    @torch.no_grad()
    def _restart_dead(self, z: Tensor, idx: Tensor) -> None:
        used = torch.zeros_like(self.unused_steps, dtype=torch.bool)
        used[idx] = True
        self.unused_steps.add_(1).masked_fill_(used, 0)
        dead = torch.nonzero(self.unused_steps >= self.dead_code_steps).flatten()
        if len(dead):
            # deterministic given the global seed; restarts are rare, so no explicit generator here
            pick = torch.randint(len(z), (len(dead),), device=z.device)
            self.codebook.data[dead] = z[pick] + 0.01 * torch.randn_like(z[pick])
            self.unused_steps[dead] = 0


def _zero_out(net: nn.Sequential) -> nn.Sequential:
    """``net`` with its last convolution's weight and bias set to zero (its output starts at 0)."""
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class VQAutoencoder(nn.Module):
    """Per-view VQ autoencoder: images [b, 3, H, W] in [-1, 1] <-> tokens [b, H/s, W/s].

    Cost: O(b H W c^2) convolutions; the quantiser is O(b (H/s)(W/s) k d).
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.channels * m for m in cfg.channel_mult]
        enc: list[nn.Module] = [nn.Conv2d(3, cfg.channels, 3, padding=1)]
        cin = cfg.channels
        for w in widths:  # each stage: res blocks then a stride-2 conv
            enc += [ResBlock(cin if i == 0 else w, w) for i in range(cfg.res_blocks)]
            enc.append(nn.Conv2d(w, w, 4, stride=2, padding=1))
            cin = w
        enc += [ResBlock(cin, cin), _norm(cin), nn.SiLU(), nn.Conv2d(cin, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment, cfg.dead_code_steps)
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cin, 3, padding=1), ResBlock(cin, cin)]
        points = [(1, cin)]  # (decoder layer, width) after which the layout is added
        for w in reversed(widths):  # each stage: nearest 2x upsample, conv, res blocks
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, w, 3, padding=1)]
            dec += [ResBlock(w, w) for _ in range(cfg.res_blocks)]
            points.append((len(dec) - 1, w))
            cin = w
        dec += [_norm(cin), nn.SiLU(), nn.Conv2d(cin, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # Layout-aware decoding: after the token-resolution block and after each upsampling stage, the layout
        # seen through the pixels (pooled to that scale) is added through a small conv net whose last layer
        # starts at zero, so a tokens-only decoder is where training starts (ControlNet's zero convolution).
        self.layout_in: nn.ModuleList | None = None
        self._inject: dict[int, int] = {}  # decoder layer index -> layout_in index
        if cfg.layout_channels:
            self._inject = {at: j for j, (at, _) in enumerate(points)}
            self.layout_in = nn.ModuleList([_zero_out(nn.Sequential(
                nn.Conv2d(cfg.layout_channels, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, w, 3, padding=1)))
                for _, w in points])

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def _quantise(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[b, 3, H, W] -> q [b, d, h, w], idx [b, h, w], vq loss."""
        z = self.encoder(x)
        b, _, h, w = z.shape
        q, idx, vq_loss = self.quantizer(rearrange(z, "b d h w -> (b h w) d"))
        return rearrange(q, "(b h w) d -> b d h w", b=b, h=h), idx.view(b, h, w), vq_loss

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images [b, 3, H, W] in [-1, 1] -> token indices [b, H/s, W/s] (int64)."""
        return self._quantise(x)[1]

    def decode(self, idx: Tensor, layout: Tensor | None = None) -> Tensor:
        """Token indices [b, h, w] -> images [b, 3, h s, w s], roughly in [-1, 1] (not clamped); ``layout``
        [b, layout_channels, h s, w s] is required when ``cfg.layout_channels`` > 0."""
        q = self.quantizer.codes[idx]  # [b, h, w, d]
        return self.run_decoder(rearrange(q, "b h w d -> b d h w"), layout)

    def run_decoder(self, q: Tensor, layout: Tensor | None = None) -> Tensor:
        """Quantised codes [b, d, h, w] (+ the layout through every pixel [b, c, H, W]) -> images [b, 3, H, W].
        The layout is average-pooled to each injection scale: O(b H W c) on top of the convolutions."""
        if self.layout_in is None:
            return self.decoder(q)
        if layout is None or layout.shape[1] != self.cfg.layout_channels:
            got = None if layout is None else tuple(layout.shape)
            raise ValueError(f"this decoder reads the layout through every pixel ([b, {self.cfg.layout_channels}, "
                             f"H, W]); got {got}")
        x = q
        for i, layer in enumerate(self.decoder):
            x = layer(x)
            j = self._inject.get(i)
            if j is not None:
                x = x + self.layout_in[j](F.adaptive_avg_pool2d(layout.to(x.dtype), x.shape[-2:]))
        return x

    def forward(self, x: Tensor, layout: Tensor | None = None) -> dict[str, Tensor]:
        """Reconstruction losses of images [b, 3, H, W] in [-1, 1] (``layout``: as :meth:`run_decoder`).

        Returns:
            dict with total, l1, mse, grad, vq (scalars), recon [b, 3, H, W], idx [b, h, w].
        """
        q, idx, vq_loss = self._quantise(x)
        recon = self.run_decoder(q, layout)
        rec = self.reconstruction_loss(recon, x)
        return rec | {"total": rec["total"] + vq_loss, "vq": vq_loss, "recon": recon, "idx": idx}

    def reconstruction_loss(self, recon: Tensor, x: Tensor, weight: Tensor | None = None) -> dict[str, Tensor]:
        """The decoder's losses of reconstructions ``recon`` of views ``x`` [b, 3, H, W]: total (weighted sum),
        l1, mse, grad (L1 of horizontal and vertical image differences). ``weight`` [b, 1, H, W] (optional): a
        per-pixel weight, each term then being its weighted mean (a difference weighted by its first pixel's)."""
        c = self.cfg
        if weight is None:
            l1, mse = F.l1_loss(recon, x), F.mse_loss(recon, x)
            grad = (F.l1_loss(recon.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(recon.diff(dim=-2), x.diff(dim=-2)))
        else:
            def mean(err: Tensor, w: Tensor) -> Tensor:
                return (err * w).sum() / (w.sum() * err.shape[1]).clamp_min(1e-12)

            l1, mse = mean((recon - x).abs(), weight), mean((recon - x) ** 2, weight)
            grad = (mean((recon.diff(dim=-1) - x.diff(dim=-1)).abs(), weight[..., :-1])
                    + mean((recon.diff(dim=-2) - x.diff(dim=-2)).abs(), weight[..., :-1, :]))
        return {"total": c.l1_weight * l1 + c.mse_weight * mse + c.grad_weight * grad, "l1": l1, "mse": mse,
                "grad": grad}

    def usage(self, idx: Tensor) -> dict[str, float]:
        """Codebook statistics of token indices (any shape): fraction of codes used and perplexity
        exp(H(p)) of the code histogram (k = perfectly uniform use, 1 = collapse)."""
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).float()
        p = counts / counts.sum().clamp_min(1)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return {"usage": float((counts > 0).float().mean()), "perplexity": float(math.exp(float(entropy)))}
