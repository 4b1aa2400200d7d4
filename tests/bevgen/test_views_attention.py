"""Self-attention's ray bias in dot-product form and attention between neighbouring views (bevgen.views.attention)."""

from __future__ import annotations

import pytest
import torch

from bevgen.cameras import nuscenes_rig
from bevgen.views.attention import (Attention, GeometricBias, ray_cosine, token_rays, view_keys,
                                   view_neighbours)


def test_ray_features_give_the_ray_bias_inside_attention():
    """Self-attention adds beta_k cos(d_i, d_j) as extra query / key dimensions: the same output as the explicit
    [b, k, n, n] bias, with and without grad (training), and the bias scale still receives its gradient."""
    rig = nuscenes_rig((64, 112))
    K, T = (torch.tensor(a, dtype=torch.float32)[None] for a in (rig.K, rig.T_cam_from_ego))
    rays = token_rays(K, T, (8, 14), 8)[0].flatten(1, 3)  # [1, 672, 3], unit

    torch.manual_seed(0)
    attn, bias = Attention(24, 3), GeometricBias(heads=3, init=2.0)
    with torch.no_grad():
        bias.scale.copy_(torch.tensor([-1.5, 0.5, 3.0]))
    x = torch.randn(1, 672, 24)
    explicit = attn(x, bias=bias(ray_cosine(rays)))
    feats = attn(x, extra=bias.ray_features(rays, head_dim=8))
    torch.testing.assert_close(feats, explicit, atol=1e-5, rtol=1e-4)
    feats.square().sum().backward()
    assert bias.scale.grad is not None and bias.scale.grad.abs().min() > 0


def test_neighbouring_views_follow_the_rig_and_attention_matches_a_block_mask():
    rig = nuscenes_rig((64, 112))  # FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_RIGHT, BACK, BACK_LEFT
    names = list(rig.names)
    T = torch.tensor(rig.T_cam_from_ego, dtype=torch.float32)[None]
    nb = view_neighbours(T, 1)[0]
    assert nb.shape == (6, 3) and (nb[:, 0] == torch.arange(6)).all()
    side = {names[int(i)] for i in nb[names.index("CAM_FRONT"), 1:]}
    assert side == {"CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"}
    side = {names[int(i)] for i in nb[names.index("CAM_BACK"), 1:]}
    assert side == {"CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
    # the order comes from the extrinsics, not from the order of the views in the batch
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    nb_perm = view_neighbours(T[:, perm], 1)[0]
    for i in range(6):
        assert {int(perm[j]) for j in nb_perm[i]} == {int(j) for j in nb[int(perm[i])]}

    torch.manual_seed(0)
    attn, n_view = Attention(16, 2), 10
    x = torch.randn(2, 6 * n_view, 16)
    groups = torch.stack([nb, nb_perm])
    keys = view_keys(groups, (2, n_view // 2))  # whole neighbouring views
    allowed = torch.zeros(2, 6, 6, dtype=torch.bool)
    allowed[torch.arange(2)[:, None, None], torch.arange(6)[None, :, None], groups] = True
    mask = allowed.repeat_interleave(n_view, 1).repeat_interleave(n_view, 2)  # [2, n, n]
    bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))[:, None]
    torch.testing.assert_close(attn(x, keys=keys), attn(x, bias=bias), atol=1e-5, rtol=1e-4)
    rays = torch.nn.functional.normalize(torch.randn(2, 6 * n_view, 3), dim=-1)
    ray_bias = GeometricBias(heads=2, init=1.5)
    both = attn(x, extra=ray_bias.ray_features(rays, head_dim=8), keys=keys)
    torch.testing.assert_close(both, attn(x, bias=bias + ray_bias(ray_cosine(rays))), atol=1e-5, rtol=1e-4)
    # a span of the neighbouring views: the same as the dense mask of exactly those keys
    half = view_keys(groups, (2, n_view // 2), span=0.4)
    assert half.shape == (2, 6, n_view + 2 * 2 * 2)
    mask = torch.zeros(2, 6, 6 * n_view, dtype=torch.bool)
    mask[torch.arange(2)[:, None, None], torch.arange(6)[None, :, None], half] = True
    bias = torch.zeros(2, 6 * n_view, 6 * n_view).masked_fill(~mask.repeat_interleave(n_view, 1), float("-inf"))
    torch.testing.assert_close(attn(x, keys=half), attn(x, bias=bias[:, None]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 5 views"):
        view_neighbours(T[:, :4], 2)


def test_the_span_of_a_neighbouring_view_is_the_side_that_overlaps_it():
    """With half of each neighbouring view, a view's border tokens keep, in the neighbour, the tokens whose rays
    are nearest to theirs (the overlap), on the nuScenes rig in any view order."""
    rig = nuscenes_rig((128, 224))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    for order in (torch.arange(6), perm):
        K, T = (torch.tensor(a, dtype=torch.float32)[None][:, order] for a in (rig.K, rig.T_cam_from_ego))
        rays = token_rays(K, T, (16, 28), 8)[0].flatten(1, 3)[0]  # [n, 3]
        nb = view_neighbours(T, 1)
        keys = view_keys(nb, (16, 28), span=0.5)[0]  # [6, 448 + 2 * 224]
        for view in range(6):
            for slot in (1, 2):
                other = int(nb[0, view, slot])
                own = torch.arange(view * 448, (view + 1) * 448)
                theirs = torch.arange(other * 448, (other + 1) * 448)
                nearest = theirs[(rays[own] @ rays[theirs].T).argmax(-1)]  # for each own token, its closest ray there
                border = (rays[own] @ rays[theirs].T).max(-1).values > 0.98  # own tokens that the neighbour sees
                assert border.sum() > 10
                kept = torch.isin(nearest[border], keys[view])
                assert kept.all(), (view, slot)


def test_a_generator_attending_to_neighbouring_views_trains_and_hires_config_builds():
    from pathlib import Path

    from bevgen.views.config import DataConfig, GeneratorConfig, TokenizerConfig, ViewsConfig
    from bevgen.views.generator import masked_token_loss
    from bevgen.views.sample import build_models
    from runkit.config import load_config

    hires = load_config(ViewsConfig, Path(__file__).resolve().parents[2] / "configs" / "views" / "hires.yaml")
    assert hires.token_grid == (16, 28) and hires.generator.view_neighbours == 1 and hires.train.adversarial_weight > 0
    assert hires.generator.neighbour_span == 0.5

    cfg = ViewsConfig(data=DataConfig(image_size=(32, 56)),
                      tokenizer=TokenizerConfig(downsample=8, channels=8, channel_mult=(1, 2, 2), codebook_size=32,
                                                code_dim=8),
                      generator=GeneratorConfig(d_model=32, layers=2, heads=2, cond_layers=1, mlp_ratio=2.0,
                                                bev_grid=8, bev_channels=8, fourier_freqs=4, view_neighbours=1,
                                                neighbour_span=0.5))
    torch.manual_seed(0)
    _, gen = build_models(cfg)
    rig = nuscenes_rig((32, 56))
    K, T = (torch.tensor(a, dtype=torch.float32)[None].expand(2, -1, -1, -1) for a in (rig.K, rig.T_cam_from_ego))
    batch = {"bev": torch.zeros(2, 8, 64, 64), "boxes": torch.zeros(2, 4, 7), "classes": torch.zeros(2, 4).long(),
             "box_valid": torch.zeros(2, 4, dtype=torch.bool), "K": K, "T_cam_from_ego": T}
    view = torch.randint(0, 32, (2, 28), generator=torch.Generator().manual_seed(1))
    tokens = view.repeat(1, 6)  # every view shows the same codes: its neighbours tell a masked token
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = masked_token_loss(gen, tokens, batch, 0.0, torch.Generator().manual_seed(len(losses)))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses  # from ln 32 = 3.47 nats

