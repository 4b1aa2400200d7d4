"""Image features for distribution metrics (FID / KID), shared by camera views and scene3d.

Policy
------
``load_extractor(weights)`` picks the network whose embeddings FID and KID are computed on:

* ``weights`` = path to pytorch-fid's FID Inception file (``pt_inception-2015-12-05-6726825d.pth``,
  the TF-ported InceptionV3 of Heusel et al. 2017): :class:`FIDInceptionV3`, a pure-PyTorch
  InceptionV3 whose state_dict keys are torchvision's ``Inception3(num_classes=1008,
  aux_logits=False)`` with the FID block variants (TF-style average pooling that ignores padding;
  max pooling in the last block). Images are resized to 299x299 (bilinear, no antialias), scaled to
  [-1, 1]; features are the 2048-d final average pool. Loaded with ``torch.load(weights_only=True)``
  and strict key/shape checks. Only with these weights are numbers comparable to published FIDs.
* ``weights=None`` (default; no downloads ever happen): ``bevgen-randconv-v1``, a fixed
  random-weight conv network (see :class:`RandConvExtractor`). Random-network embeddings are a
  usable distribution distance for generative models (Naeem et al., "Reliable Fidelity and Diversity
  Metrics for Generative Models", ICML 2020, random-init embeddings), but its numbers are only
  comparable with other numbers computed with the same extractor name, never with Inception FIDs.

Every metrics file records the extractor's ``name`` as ``fid_extractor``.

Letters: n image, c channel, h/w pixels, d feature.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# torch and scipy are imported lazily (optional `ml` extra): importing this module stays light.

__all__ = ["Extractor", "RandConvExtractor", "InceptionExtractor", "ExtractorWeightsError", "load_extractor",
           "fid", "kid", "fid_kid", "RANDCONV_NAME", "FID_WEIGHTS_SHA256_PREFIX"]

RANDCONV_NAME = "bevgen-randconv-v1"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # the official pytorch-fid file name carries this hash prefix


class ExtractorWeightsError(ValueError):
    """A weights file that cannot be loaded into the FID Inception network (names the mismatch)."""


def _as_nchw_float(images: Any):
    """uint8 [N, H, W, 3] (numpy or tensor) -> float32 tensor [N, 3, H, W] in [0, 1]."""
    import torch

    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images: expected uint8 [N, H, W, 3], got {tuple(x.shape)} {x.dtype}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class Extractor:
    """Maps uint8 images to fixed-length feature vectors. Subclasses implement ``_embed``."""

    name: str = "abstract"
    dim: int = 0

    def __init__(self, device: str = "cpu"):
        self.device = device

    def _embed(self, x):  # float32 tensor [n, 3, H, W] in [0, 1] on self.device -> [n, d]
        raise NotImplementedError

    def features(self, images: Any, batch_size: int = 32) -> np.ndarray:
        """Embed images.

        Args:
            images: uint8 [N, H, W, 3] RGB, numpy array or tensor (any H, W).
            batch_size: images per forward pass (memory bound only; results do not depend on it
                beyond float rounding).
        Returns:
            float64 [N, D] features. Cost O(N * network FLOPs).
        """
        import torch

        x = _as_nchw_float(images)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), max(1, int(batch_size))):
                out.append(self._embed(x[i:i + batch_size].to(self.device)).double().cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.dim))


# ----------------------------------------------------------------------------------------------
# Fallback: fixed random conv network
# ----------------------------------------------------------------------------------------------

class RandConvExtractor(Extractor):
    """``bevgen-randconv-v1``: a fixed random-weight multi-scale conv network.

    Images run at their native resolution (antialiased downscale only when the shorter side exceeds
    ``MAX_SIDE``), scaled to [-1, 1]. Three stages of ``conv3x3 stride 2 -> ReLU`` with 64 channels
    each; Gaussian weights drawn from ``numpy.random.RandomState(seed)`` in a fixed order (the legacy
    RandomState stream is frozen by numpy, so the weights are bit-identical on every machine and
    numpy/torch version), made zero-mean per filter (edge / texture detectors, blind to flat
    brightness) and He-scaled; no biases, no normalisation. Features: per-channel spatial mean and
    standard deviation of each stage, times ``SCALE`` (for readable FID magnitudes); D = 384.

    Design (measured on rendered road scenes, 64x112): equal width per stage and no fourth stage
    keep the features dominated by image statistics (sharpness, noise, colour, edges) rather than by
    scene content; this made blur / noise / colour shifts 3x / 14x / 100x the FID of two halves of
    one set, against 1.2x / 1.3x / 16x for a 4-stage 32..256-channel net on 128x128 resizes.

    Limits: the network was never trained, so it measures low/mid-level statistics, not semantic
    content (a sharp image of the wrong scene can score well); it runs at native resolution, so
    FIDs are only comparable between runs at equal image size, equal sample count and this exact
    extractor name, never with Inception FIDs. Cost ~25 MFLOPs per 64x112 image.
    """

    CHANNELS = (64, 64, 64)
    MAX_SIDE = 256
    SCALE = 10.0

    def __init__(self, seed: int = 0, device: str = "cpu"):
        import torch

        super().__init__(device)
        self.name = RANDCONV_NAME if seed == 0 else f"{RANDCONV_NAME}-seed{seed}"
        self.dim = 2 * sum(self.CHANNELS)
        rs = np.random.RandomState(seed)
        self.weights = []
        c_in = 3
        for c_out in self.CHANNELS:
            w = rs.standard_normal((c_out, c_in, 3, 3))
            w = (w - w.mean(axis=(1, 2, 3), keepdims=True)) * np.sqrt(2.0 / (c_in * 9))
            self.weights.append(torch.from_numpy(w.astype(np.float32)).to(device))
            c_in = c_out

    def _embed(self, x):
        import torch
        import torch.nn.functional as F

        short = min(x.shape[-2:])
        if short > self.MAX_SIDE:
            size = tuple(max(1, round(s * self.MAX_SIDE / short)) for s in x.shape[-2:])
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x * 2.0 - 1.0  # [n, 3, H, W]
        feats = []
        for w in self.weights:
            x = F.relu(F.conv2d(x, w, stride=2, padding=1))  # [n, 64, H/2^k, W/2^k]
            feats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        return torch.cat(feats, 1) * self.SCALE  # [n, 384]


# ----------------------------------------------------------------------------------------------
# FID InceptionV3 (architecture of torchvision Inception3 + the FID block variants)
# ----------------------------------------------------------------------------------------------

def _inception_modules():
    """Build the module classes lazily (torch is imported only when Inception is asked for)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvBN(nn.Module):
        """conv (no bias) -> BatchNorm (eps 1e-3, TF) -> ReLU; keys ``conv.weight``, ``bn.*``."""

        def __init__(self, c_in, c_out, kernel, stride=1, padding=0):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
            self.bn = nn.BatchNorm2d(c_out, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def tf_avg_pool(x):  # TF's 3x3 average pool: padded zeros do not count in the mean
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    class BlockA(nn.Module):  # 35x35 grid; out = 224 + pool_features channels
        def __init__(self, c_in, pool_features):
            super().__init__()
            self.branch1x1 = ConvBN(c_in, 64, 1)
            self.branch5x5_1, self.branch5x5_2 = ConvBN(c_in, 48, 1), ConvBN(48, 64, 5, padding=2)
            self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
            self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
            self.branch_pool = ConvBN(c_in, pool_features, 1)

        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(tf_avg_pool(x))], 1)

    class BlockB(nn.Module):  # grid reduction 35 -> 17; out = 384 + 96 + c_in
        def __init__(self, c_in):
            super().__init__()
            self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
            self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
            self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)

    class BlockC(nn.Module):  # 17x17 grid, factorised 7x7; out = 768
        def __init__(self, c_in, c7):
            super().__init__()
            self.branch1x1 = ConvBN(c_in, 192, 1)
            self.branch7x7_1 = ConvBN(c_in, c7, 1)
            self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
            self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
            self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
            self.branch_pool = ConvBN(c_in, 192, 1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for i in range(1, 6):
                d = getattr(self, f"branch7x7dbl_{i}")(d)
            return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(tf_avg_pool(x))], 1)

    class BlockD(nn.Module):  # grid reduction 17 -> 8; out = 320 + 192 + c_in
        def __init__(self, c_in):
            super().__init__()
            self.branch3x3_1, self.branch3x3_2 = ConvBN(c_in, 192, 1), ConvBN(192, 320, 3, stride=2)
            self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
            self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
            self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
            self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

        def forward(self, x):
            b7 = x
            for i in range(1, 5):
                b7 = getattr(self, f"branch7x7x3_{i}")(b7)
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)

    class BlockE(nn.Module):  # 8x8 grid, expanded filter banks; out = 2048
        def __init__(self, c_in, max_pool: bool):
            super().__init__()
            self.max_pool = max_pool  # the FID network's last block max-pools (a TF graph quirk)
            self.branch1x1 = ConvBN(c_in, 320, 1)
            self.branch3x3_1 = ConvBN(c_in, 384, 1)
            self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
            self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
            self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
            self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
            self.branch_pool = ConvBN(c_in, 192, 1)

        def forward(self, x):
            a = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

    class FIDInceptionV3(nn.Module):
        """InceptionV3 as used for FID; ``forward`` gives the 2048-d pool features.

        Input [n, 3, H, W] in [0, 1] -> resized to 299x299 -> [-1, 1] -> [n, 2048].
        ``fc`` (1008 classes) is kept only so the state_dict matches the weights file.
        """

        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
            self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
            self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
            self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
            self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
            self.Mixed_6a = BlockB(288)
            self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
            self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
            self.Mixed_7a = BlockD(768)
            self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
            self.fc = nn.Linear(2048, 1008)

        def forward(self, x):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2.0 - 1.0
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [n, 64, 147, 147]
            x = F.max_pool2d(x, 3, stride=2)  # [n, 64, 73, 73]
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # [n, 192, 35, 35]
            for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                         "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
                x = getattr(self, name)(x)  # ... -> [n, 2048, 8, 8]
            return x.mean(dim=(2, 3))  # [n, 2048]

    return FIDInceptionV3


def build_fid_inception():
    """A freshly initialised (untrained) :class:`FIDInceptionV3` module, e.g. to write test weights."""
    return _inception_modules()()


def _check_state_dict(model, state: Any, path: Path) -> dict:
    """Strict key and shape check; ``num_batches_tracked`` buffers may be absent (old files)."""
    import torch

    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExtractorWeightsError(
            f"{path}: expected a state_dict (mapping name -> tensor) of pytorch-fid's FID Inception "
            f"(pt_inception-2015-12-05-6726825d.pth), got {type(state).__name__}"
            + (f" with keys {list(state)[:5]}" if isinstance(state, Mapping) else ""))
    own = model.state_dict()
    state = dict(state)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v.clone()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        raise ExtractorWeightsError(f"{path}: not FID InceptionV3 weights: " + "; ".join(parts))
    return state


class InceptionExtractor(Extractor):
    """FID InceptionV3 pool features (D = 2048) from a pytorch-fid weights file."""

    def __init__(self, weights: str | Path, device: str = "cpu"):
        import torch

        super().__init__(device)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FID Inception weights file not found (pytorch-fid's "
                                    f"pt_inception-2015-12-05-6726825d.pth)")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # not a torch file, or holds non-tensor objects
            raise ExtractorWeightsError(f"{path}: cannot be read as a weights-only torch state_dict: {e}") from None
        self.model = build_fid_inception()
        self.model.load_state_dict(_check_state_dict(self.model, state, path), strict=True)
        self.model.eval().to(device)
        self.dim = 2048
        official = sha.startswith(FID_WEIGHTS_SHA256_PREFIX)
        self.name = "inception-v3-fid" + ("" if official else f"-sha256:{sha[:8]}")
        self.sha256 = sha

    def _embed(self, x):
        return self.model(x)


def load_extractor(weights: str | Path | None = None, device: str = "cpu") -> Extractor:
    """The FID/KID feature extractor.

    Args:
        weights: path to pytorch-fid's FID Inception weights; None: the built-in ``bevgen-randconv-v1``.
        device: torch device string.
    Returns:
        Extractor with ``.name`` (record it with every number) and ``.features(images)``.
    Raises:
        FileNotFoundError / ExtractorWeightsError naming the problem with a given weights file.
    """
    if weights is None or str(weights) == "":
        return RandConvExtractor(device=device)
    return InceptionExtractor(weights, device=device)


# ----------------------------------------------------------------------------------------------
# Distances
# ----------------------------------------------------------------------------------------------

def _stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features: need [N >= 2, D], got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _trace_sqrt_product_eig(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr(sqrt(s1 s2)) = sum sqrt(eig(s1^1/2 s2 s1^1/2)); PSD-safe, exact for singular (N < D) covariances."""
    w, U = np.linalg.eigh(s1)
    r = (U * np.sqrt(np.clip(w, 0, None))) @ U.T
    ev = np.linalg.eigvalsh(r @ s2 @ r)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, full_rank: bool) -> float:
    """tr(sqrt(s1 s2)): scipy's sqrtm for full-rank covariances (the reference FID route), else
    (N <= D, or scipy missing / unstable) the symmetric eigen route, which is exact for PSD input."""
    if not full_rank:
        return _trace_sqrt_product_eig(s1, s2)
    try:
        from scipy.linalg import sqrtm
    except ImportError:
        return _trace_sqrt_product_eig(s1, s2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ill-conditioning is handled below
        tr = np.trace(sqrtm(s1 @ s2))
    scale = max(1.0, abs(np.trace(s1)) + abs(np.trace(s2)))
    if not np.isfinite(tr) or abs(np.imag(tr)) > 1e-3 * scale:
        return _trace_sqrt_product_eig(s1, s2)
    return float(np.real(tr))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)``; the matrix square root uses
    ``scipy.linalg.sqrtm`` when scipy is importable and both sets have more samples than dimensions;
    otherwise (singular covariances, N <= D, where sqrtm of the product is ill-posed) and whenever
    sqrtm is numerically unstable, the eigen-decomposition identity in :func:`_trace_sqrt_product_eig`.
    Biased upwards for small N; compare values at equal N only. Cost O(N D^2 + D^3).

    Args:
        feats_a: [Na, D], feats_b: [Nb, D] with Na, Nb >= 2.
    Returns:
        FID >= 0 (clipped at 0 against rounding).
    """
    mu1, s1 = _stats(feats_a)
    mu2, s2 = _stats(feats_b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dims differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    full_rank = min(len(feats_a), len(feats_b)) > len(mu1)
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
              - 2 * _trace_sqrt_product(s1, s2, full_rank))
    return max(d, 0.0)


def kid(feats_a: np.ndarray, feats_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3.

    Averaged over ``num_subsets`` random subsets of ``m = min(subset_size, Na, Nb)`` samples each
    (drawn without replacement within a subset, fixed ``seed``). Unbiased: its expectation is 0 for
    equal distributions, so small negative values happen. Cost O(num_subsets m^2 D).

    Args:
        feats_a: [Na, D], feats_b: [Nb, D] with Na, Nb >= 2.
    Returns:
        mean MMD^2 over subsets.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"kid: need [Na >= 2, D] and [Nb >= 2, D], got {a.shape} and {b.shape}")
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    rng = np.random.RandomState(seed)
    vals = []
    for _ in range(num_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals.append(off - 2 * kxy.mean())
    return float(np.mean(vals))


def fid_kid(real_uint8: Any, fake_uint8: Any, extractor: Extractor | None = None,
            batch_size: int = 32) -> dict:
    """FID and KID between two image sets.

    Args:
        real_uint8, fake_uint8: uint8 [N, H, W, 3] (numpy or tensor); sizes may differ between sets
            but should match for meaningful numbers (the extractor resizes to its own input size).
        extractor: from :func:`load_extractor`; default the built-in random-conv extractor.
    Returns:
        {"fid", "kid", "fid_extractor", "num_samples"} with num_samples = min(N_real, N_fake).
    """
    ex = extractor if extractor is not None else load_extractor()
    fa, fb = ex.features(real_uint8, batch_size), ex.features(fake_uint8, batch_size)
    return {"fid": fid(fa, fb), "kid": kid(fa, fb), "fid_extractor": ex.name,
            "num_samples": int(min(len(fa), len(fb)))}
