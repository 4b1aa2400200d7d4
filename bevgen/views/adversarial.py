"""Patch-adversarial term of the tokenizer (VQGAN recipe, Esser et al. 2021).

A PatchGAN discriminator (Isola et al. 2017) scores overlapping patches of a view as real or reconstructed;
the tokenizer's decoder is pushed to make its reconstructions pass, which restores the high-frequency texture
that the L1 / MSE / gradient losses average away. Written here because no maintained library ships a
patch discriminator without a vision stack this project does not install (torchvision, pretrained LPIPS).

Losses (hinge):   L_D = mean relu(1 - D(x)) + mean relu(1 + D(x^)),   L_G = -mean D(x^).
The generator-side term enters the tokenizer loss as ``weight * lambda * L_G`` with VQGAN's adaptive
lambda = ||grad_w L_rec|| / (||grad_w L_G|| + 1e-4) at the decoder's last layer w (clamped to [0, 1e4]),
so the adversarial gradient is as large as the reconstruction gradient whatever the losses' scales.

Letters: b batch of views, c channels, H W pixels, h w patch logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevgen.views.config import ViewsTrainConfig
from runkit.checkpoint import load_checkpoint

__all__ = ["PatchDiscriminator", "TokenizerAdversary", "hinge_d_loss", "hinge_g_loss", "adaptive_weight"]


class PatchDiscriminator(nn.Module):
    """PatchGAN: stride-2 4x4 convs (GroupNorm, LeakyReLU 0.2), then a stride-1 conv to one logit per patch.

    [b, 3, H, W] in [-1, 1] -> [b, 1, h, w] logits (h ~ H / 2^layers). With 3 layers each logit sees a
    70-pixel patch. Cost O(b H W c^2).
    """

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        cin = channels
        for i in range(1, layers + 1):
            cout = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(cin, cout, 4, stride=2 if i < layers else 1, padding=1, bias=False),
                     nn.GroupNorm(min(8, cout), cout), nn.LeakyReLU(0.2)]
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: Tensor) -> Tensor:
        """[b, 3, H, W] -> [b, 1, h, w] patch logits."""
        return self.net(x)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss (0 when real patches score >= 1 and fakes <= -1)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator side: raise the discriminator's score of the reconstructions."""
    return -fake_logits.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """VQGAN's balance: ||d rec / d w|| / (||d g / d w|| + 1e-4) at ``last_layer`` w, clamped to [0, 1e4], no grad."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class TokenizerAdversary:
    """The tokenizer's patch discriminator and its optimizer (``train.adversarial_weight`` > 0), saved in
    tokenizer.pt beside the tokenizer. Each active step first updates the discriminator on real views and
    detached reconstructions (fp32, outside autocast), then returns the tokenizer's adversarial term:
    total += weight * lambda * L_G (``bevgen.views.adversarial``)."""

    def __init__(self, t: ViewsTrainConfig, device: torch.device, ckpt_path: Path | None, world: int,
                 lr_at: Callable[[int], float]):
        """Args: t: the training config; ckpt_path: a tokenizer.pt to resume the discriminator from (None: fresh);
        world: DDP world size; lr_at: the discriminator's learning rate at a step (``discriminator_lr`` on the
        tokenizer's schedule)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.weight, self.start, self.lr_at = t.adversarial_weight, t.adversarial_start, lr_at
        self.disc = self.opt = None
        if self.weight <= 0:
            return
        self.disc = PatchDiscriminator(t.discriminator_channels).to(device)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr_at(0), betas=(0.5, 0.9))
        if ckpt_path is not None:
            ckpt = load_checkpoint(ckpt_path, device)
            if "discriminator" in ckpt:
                self.disc.load_state_dict(ckpt["discriminator"], strict=True)
                self.opt.load_state_dict(ckpt["discriminator_optimizer"])
        self.net = DDP(self.disc) if world > 1 else self.disc

    def active(self, step: int) -> bool:
        """Whether the adversarial term is on at this tokenizer step."""
        return self.disc is not None and step >= self.start

    def losses(self, x: Tensor, recon: Tensor, rec_total: Tensor, last_layer: Tensor, step: int) -> dict[str, Tensor]:
        """One discriminator update, then the tokenizer's loss terms. Args: x, recon [b, 3, H, W] real views and
        their reconstructions (with grad); rec_total: the tokenizer's loss so far; last_layer: the decoder's last
        weight (adaptive balance). Returns: total (rec_total + weight * lambda * L_G), adv_g, adv_d, adv_lambda."""
        with torch.autocast(x.device.type, enabled=False):
            # one forward over real and fake (a DDP module takes one forward per backward)
            real, fake = self.net(torch.cat([x.float(), recon.detach().float()])).chunk(2)
            d_loss = hinge_d_loss(real, fake)
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(step)
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
            g_loss = hinge_g_loss(self.disc(recon.float()))
            lam = adaptive_weight(rec_total, g_loss, last_layer)
        return {"total": rec_total + self.weight * lam * g_loss, "adv_g": g_loss, "adv_d": d_loss.detach(),
                "adv_lambda": lam}

    def state(self) -> dict:
        """Checkpoint entries (none when off)."""
        if self.disc is None:
            return {}
        return {"discriminator": self.disc.state_dict(), "discriminator_optimizer": self.opt.state_dict()}
