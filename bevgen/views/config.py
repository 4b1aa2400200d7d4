"""Configuration of the BEV -> six-camera-views generator (tokenizer + masked-token transformer).

``ViewsConfig`` nests one dataclass per component (data, tokenizer, generator, train). YAML presets live
in ``configs/views/{tiny,paper}.yaml`` and are read strictly through ``runkit.config.load_config``:
every key must be a field below. Cross-field checks live in each ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from runkit.rundir import config_differences as _config_differences

__all__ = ["DataConfig", "TokenizerConfig", "GeneratorConfig", "ViewsTrainConfig", "ViewsConfig", "config_differences",
           "MODEL_FIELDS", "RUNTIME_FIELDS",
           "with_legacy_defaults"]

MODEL_FIELDS = ("data", "tokenizer", "generator")
"""Config sections that define the trained models and their data: a resumed run must not change them."""
RUNTIME_FIELDS = ("data.cache_in_memory", "data.num_workers")
"""Fields of those sections that only change how data is read, so a resumed run may change them."""


@dataclass(frozen=True)
class DataConfig:
    """Which frames the models see and at what resolution."""

    image_size: tuple[int, int] = (64, 112)
    """(H, W) the models work at. Dataset images of another size are resized on the fly (area
    interpolation) and each sample's K is scaled by the same factors (``CameraRig.resized`` math);
    the aspect ratio may change, K's two axes are scaled independently."""
    num_views: int = 6
    """Cameras per frame (the dataset's rig must have exactly this many)."""
    heldout_fraction: float = 0.1
    """Fraction of scenarios held out of training (split by scenario, written to split.json)."""
    cache_in_memory: bool = True
    """Load every training frame once and keep it in memory (small datasets); else read per batch."""
    num_workers: int = 0
    """DataLoader worker processes when not cached in memory."""
    bev_channels: int = 8
    """Channels of the BEV raster (must match the dataset's BevConfig.channels)."""
    bev_range_m: float = 50.0
    """Half extent of the BEV raster in metres (must match the dataset's BevConfig.range_m)."""

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"data.image_size: expected (H, W) >= 8 pixels, got {self.image_size}")
        if self.num_views < 1:
            raise ValueError("data.num_views must be >= 1")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError("data.heldout_fraction must be in [0, 1)")


def projection_channels(bev_channels: int, num_classes: int) -> int:
    """Feature channels of the layout seen through a ray (``projection.layout_projection``): C raster + classes +
    hit + 3 normal + 2 heading + depth + sky."""
    return bev_channels + num_classes + 8


@dataclass(frozen=True)
class TokenizerConfig:
    """VQ autoencoder turning each view into a grid of discrete tokens (trained from scratch)."""

    downsample: Literal[4, 8, 16] = 8
    """Spatial reduction factor per view (2 ** number of strided stages)."""
    channels: int = 32
    """Width of the first encoder stage; each downsampling stage multiplies it by channel_mult[i]."""
    channel_mult: tuple[int, ...] = (1, 2, 2)
    """Width multipliers, one per downsampling stage (len == log2(downsample))."""
    res_blocks: int = 1
    """Residual blocks per stage (encoder and decoder)."""
    codebook_size: int = 256
    """Number of codes K."""
    code_dim: int = 32
    """Dimension of the (l2-normalised) codes."""
    commitment: float = 0.25
    """Weight of the commitment loss ||z - sg(q)||^2."""
    dead_code_steps: int = 50
    """Codes unused for this many steps are restarted from random encoder outputs of the batch."""
    l1_weight: float = 1.0
    """Weight of the L1 reconstruction loss."""
    mse_weight: float = 0.5
    """Weight of the MSE reconstruction loss."""
    grad_weight: float = 0.5
    """Weight of the L1 loss on image gradients (finite differences): sharpens edges without a
    pretrained perceptual network."""
    layout_channels: int = 0
    """Channels of the layout seen through every pixel (``projection.layout_projection`` at one ray per pixel:
    ``projection_channels(data.bev_channels, generator.num_classes)``) that the decoder adds, through
    zero-initialised convolutions, at each of its scales; 0 = the decoder reads the tokens alone."""

    def __post_init__(self):
        stages = {4: 2, 8: 3, 16: 4}[self.downsample]
        if len(self.channel_mult) != stages:
            raise ValueError(f"tokenizer.channel_mult needs {stages} entries for downsample "
                             f"{self.downsample}, got {len(self.channel_mult)}")
        if self.codebook_size < 2 or self.code_dim < 2:
            raise ValueError("tokenizer.codebook_size and code_dim must be >= 2")


@dataclass(frozen=True)
class GeneratorConfig:
    """Bidirectional transformer over the tokens of all views, conditioned on BEV raster + boxes."""

    d_model: int = 192
    """Token width."""
    layers: int = 4
    """Transformer blocks (cross-view self-attention, image->condition cross-attention, MLP)."""
    heads: int = 4
    """Attention heads; must divide d_model."""
    cond_layers: int = 1
    """Self-attention blocks over the condition tokens (BEV cells + objects) before use."""
    mlp_ratio: float = 4.0
    """Hidden width of the MLPs relative to d_model."""
    dropout: float = 0.0
    """Dropout in attention outputs and MLPs."""
    bev_grid: int = 16
    """BEV tokens per side: the conv encoder's map is pooled to bev_grid x bev_grid cells."""
    bev_channels: int = 64
    """Width of the convolutional BEV encoder."""
    max_objects: int = 64
    """Object tokens (boxes) per frame; must be >= the dataset's BevConfig.max_boxes."""
    num_classes: int = 4
    """Object classes (bevgen.layout.CLASS_NAMES)."""
    fourier_freqs: int = 6
    """Octaves of the Fourier features of rays, camera centres and BEV positions."""
    cond_dropout: float = 0.1
    """Probability that a training sample gets the null condition (classifier-free guidance)."""
    ray_bias_init: float = 2.0
    """Initial beta_h of the cross-view self-attention bias beta_h * cos(d_i, d_j)."""
    bev_bias_init: float = 2.0
    """Initial gamma_h of the image->BEV azimuth bias gamma_h * cos(az(d_i) - az(p_j - c_i))."""
    aligned_condition: bool = True
    """Add to every image token the layout seen through its own pixels (``bevgen.views.projection``: raster
    at the ground point, box class / face / heading, depth), embedded by an MLP. Checkpoints written before
    this field existed are models without it (read as False)."""
    projection_subsamples: int = 4
    """Rays per token side averaged into the aligned condition (sub-token resolution)."""
    view_neighbours: int = 0
    """0: the image tokens of every view attend to the tokens of all views. k >= 1: to their own view's and those
    of the k nearest views on each side around the rig (ordered by camera yaw, per sample), as BEVGen's
    cross-view attention between neighbouring views: self-attention costs O(n (2k + 1) n / v) instead of
    O(n^2) (k = 1 with 6 views: half)."""
    neighbour_span: float = 1.0
    """With ``view_neighbours``: the fraction of each neighbouring view's token columns attended to, on the side
    facing the view (adjacent cameras overlap at their borders only; ``attention.view_keys``). 0.5 with k = 1:
    self-attention over 2 views' worth of keys instead of 3."""
    object_loss_weight: float = 3.0
    """Masked-token loss weight 1 + w * (fraction of the token's rays that hit a box): cars are a small part
    of each image, so without it the loss is spent on road and sky. Needs aligned_condition's geometry."""

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"generator.heads ({self.heads}) must divide d_model ({self.d_model})")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError("generator.cond_dropout must be in [0, 1)")
        if self.bev_grid < 1 or self.layers < 1:
            raise ValueError("generator.bev_grid and layers must be >= 1")
        if self.view_neighbours < 0:
            raise ValueError("generator.view_neighbours must be >= 0 (0 = attend to all views)")
        if not 0.0 < self.neighbour_span <= 1.0:
            raise ValueError("generator.neighbour_span must be in (0, 1]")
        if self.projection_subsamples < 1 or self.object_loss_weight < 0:
            raise ValueError("generator.projection_subsamples must be >= 1 and object_loss_weight >= 0")


@dataclass(frozen=True)
class ViewsTrainConfig:
    """Optimisation of both stages, logging and checkpoints."""

    tokenizer_steps: int = 1500
    """Optimizer steps of the tokenizer stage."""
    generator_steps: int = 1500
    """Optimizer steps of the generator stage."""
    tokenizer_batch: int = 4
    """Frames (each with num_views images) per tokenizer step."""
    generator_batch: int = 8
    """Frames per generator step."""
    tokenizer_lr: float = 1e-3
    """Peak Adam learning rate of the tokenizer (warm-up, then cosine decay)."""
    generator_lr: float = 5e-4
    """Peak AdamW learning rate of the generator (warm-up, then cosine decay)."""
    weight_decay: float = 0.01
    """AdamW weight decay (generator; the tokenizer uses none)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up, then cosine decay to 10% at the last step."""
    checkpoint_every: int = 250
    """Steps between checkpoints (and at the end of each stage)."""
    sample_every: int = 500
    """Steps between sample image grids written to TensorBoard (0: only at the end)."""
    sample_steps: int = 12
    """Parallel decoding steps of the preview samples (and the default of ViewsPipeline)."""
    guidance: float = 1.0
    """Default classifier-free guidance weight w: logits = (1 + w) cond - w uncond."""
    sample_temperature: float = 1.0
    """Default temperature of the token draws of ViewsPipeline (below 1: likelier tokens, 0: greedy)."""
    adversarial_weight: float = 0.0
    """Weight of the tokenizer's patch-adversarial term (``bevgen.views.adversarial``: PatchGAN hinge loss with
    VQGAN's adaptive balance); 0 = off (no discriminator)."""
    adversarial_start: int = 0
    """Tokenizer step from which the discriminator trains and the adversarial term is on (the reconstruction
    losses alone shape the codebook first)."""
    discriminator_lr: float = 2e-4
    """Peak learning rate of the patch discriminator (the tokenizer's schedule; at 2e-3 it collapses to a constant
    output in tens of steps)."""
    discriminator_channels: int = 32
    """Width of the patch discriminator's first layer (3 stride-2 layers, 70-pixel patches)."""
    seed: int = 0
    """Seed of the weights, the train/held-out split, the batch draws and the masks."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocast on GPU; parameters stay fp32."""
    threads: int = 0
    """torch CPU threads for training (0: torch's default, one per core). On a CPU shared with other
    jobs 1 thread is several times faster than 2 (threads spin-wait for descheduled peers)."""

    def __post_init__(self):
        if self.threads < 0:
            raise ValueError("train.threads must be >= 0 (0 = torch default)")
        if min(self.tokenizer_steps, self.generator_steps) < 0:
            raise ValueError("train.tokenizer_steps and generator_steps must be >= 0")
        if min(self.tokenizer_batch, self.generator_batch, self.checkpoint_every, self.sample_steps) < 1:
            raise ValueError("train batches, checkpoint_every and sample_steps must be >= 1")
        if self.sample_temperature < 0:
            raise ValueError("train.sample_temperature must be >= 0")
        if (self.adversarial_weight < 0 or self.adversarial_start < 0 or self.discriminator_channels < 1
                or self.discriminator_lr <= 0):
            raise ValueError("train.adversarial_weight and adversarial_start must be >= 0, "
                             "discriminator_channels >= 1, discriminator_lr > 0")


@dataclass(frozen=True)
class ViewsConfig:
    """Everything that defines a views run (saved as config.yaml and inside every checkpoint)."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train: ViewsTrainConfig = field(default_factory=ViewsTrainConfig)

    def __post_init__(self):
        H, W = self.data.image_size
        s = self.tokenizer.downsample
        if H % s or W % s:
            raise ValueError(f"data.image_size {self.data.image_size} must be divisible by "
                             f"tokenizer.downsample {s}; e.g. use {(H // s * s, W // s * s)}")
        want = projection_channels(self.data.bev_channels, self.generator.num_classes)
        if self.tokenizer.layout_channels not in (0, want):
            raise ValueError(f"tokenizer.layout_channels must be 0 (tokens only) or {want} (data.bev_channels + "
                             f"generator.num_classes + 8), got {self.tokenizer.layout_channels}")

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) tokens per view."""
        H, W = self.data.image_size
        return H // self.tokenizer.downsample, W // self.tokenizer.downsample

    @property
    def tokens_per_frame(self) -> int:
        """N = V * h * w image tokens per frame."""
        h, w = self.token_grid
        return self.data.num_views * h * w


LEGACY_DEFAULTS = {("generator", "aligned_condition"): False, ("generator", "object_loss_weight"): 0.0}
"""Values a checkpoint's stored config means when it lacks the field (written before the field existed)."""


def with_legacy_defaults(stored: dict) -> dict:
    """A checkpoint's stored config dict with ``LEGACY_DEFAULTS`` filled in where the field is absent."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in stored.items()}
    for (section, name), value in LEGACY_DEFAULTS.items():
        out.setdefault(section, {}).setdefault(name, value)
    return out


def config_differences(stored: dict, cfg: ViewsConfig, fields: Sequence[str] = MODEL_FIELDS,
                       ignore: Sequence[str] = RUNTIME_FIELDS) -> list[str]:
    """Fields where a checkpoint's stored config and ``cfg`` disagree (``runkit.rundir.config_differences``
    with the views defaults: the model and data sections, less the data-reading knobs).

    Args:
        stored: the ``config`` dict of a checkpoint (``to_dict`` of a ViewsConfig; missing fields take
            their defaults). cfg: the config to compare with.
        fields: dotted sections or fields to compare, e.g. ("tokenizer", "data.image_size").
        ignore: dotted fields left out.
    Returns:
        one "field: checkpoint X, config Y" line per differing field (empty when they agree).
    """
    return _config_differences(with_legacy_defaults(stored), cfg, fields, ignore)
