"""The tiny camera-conditioned pixel prior: its architecture, and ``build_tiny_prior``.

The architecture (:class:`PriorArchitecture`) is a real diffusers checkpoint layout, saved by
:class:`recipes.multiview_pipeline.MultiViewPriorPipeline`:

- ``unet/``: ``UNet2DConditionModel`` on 3-channel images (pixel space, no VAE). The prompt
  conditions it twice: through cross-attention, and pooled into the timestep embedding
  (``addition_embed_type = "text"``), which scales and shifts every ResNet block. The camera
  conditions it twice too: its 16 features through ``class_embed_type = "projection"``, and a ray
  map (6 more input channels: each pixel's ray) that tells every pixel where it looks (see the
  pipeline module for the contract);
- ``text_encoder/`` + ``tokenizer/``: a 2-layer ``CLIPTextModel`` and a byte-level BPE CLIP
  tokenizer whose files are written here (``recipes.tokenizer_files``), so nothing is downloaded;
- ``scheduler/``: ``DDPMScheduler`` (``prediction_type`` and ``beta_schedule`` from params);
- ``model_index.json``, written by diffusers, naming the pipeline class and the components.

``build_tiny_prior`` saves it with the random weights it is initialised with (a prior that knows
nothing: the baseline the trained one, ``recipes.train_prior``, is measured against, and a quick
checkpoint for tests of the loading path). The folder's bytes are identical on every run, process
and thread count for one seed and one diffusers/transformers version (both recorded in the
config files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.context import RecipeError, StageContext
from recipes.cameras import CAMERA_FEATURES, RAY_CHANNELS
from recipes.diffusion import PREDICTION_TYPES

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class PriorArchitecture:
    resolution: int = 16
    width: int = 16
    levels: int = 2
    heads: int = 1
    text_dim: int = 32
    max_length: int = 8
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    train_timesteps: int = 1000
    camera_distance: float = 3.0
    camera_fov_deg: float = 40.0

    @classmethod
    def from_context(cls, ctx: StageContext) -> "PriorArchitecture":
        d = cls()
        a = cls(
            resolution=ctx.param("resolution", d.resolution, int),
            width=ctx.param("width", d.width, int),
            levels=ctx.param("levels", d.levels, int),
            heads=ctx.param("heads", d.heads, int),
            text_dim=ctx.param("text_dim", d.text_dim, int),
            max_length=ctx.param("max_length", d.max_length, int),
            prediction_type=ctx.param("prediction_type", d.prediction_type, str),
            beta_schedule=ctx.param("beta_schedule", d.beta_schedule, str),
            train_timesteps=ctx.param("train_timesteps", d.train_timesteps, int),
            camera_distance=float(ctx.param("camera_distance", d.camera_distance, float)),
            camera_fov_deg=float(ctx.param("camera_fov_deg", d.camera_fov_deg, float)),
        )
        where = f"stage {ctx.stage!r}: params"
        if a.prediction_type not in PREDICTION_TYPES:
            raise RecipeError(f"{where}.prediction_type must be one of {PREDICTION_TYPES}, got {a.prediction_type!r}")
        if a.beta_schedule not in BETA_SCHEDULES:
            raise RecipeError(f"{where}.beta_schedule must be one of {BETA_SCHEDULES}, got {a.beta_schedule!r}")
        if not 2 <= a.levels <= 4 or a.resolution % 2 ** a.levels or a.resolution < 8:
            raise RecipeError(f"{where}.levels must be in [2, 4] and params.resolution a multiple of 2**levels, "
                              f"got {a.levels} and {a.resolution}")
        if a.width % 8 or a.text_dim % 4 or a.heads < 1 or (2 * a.width) % a.heads:
            raise RecipeError(f"{where}.width must be a multiple of 8, params.text_dim of 4, and 2 * width of params.heads")
        if not 4 <= a.max_length <= 77 or a.train_timesteps < 10:
            raise RecipeError(f"{where}.max_length must be in [4, 77] and params.train_timesteps >= 10")
        return a

    def unet_config(self) -> dict[str, Any]:
        return tiny_unet_config(3, self.resolution, self.text_dim, self.width, self.heads, CAMERA_FEATURES, self.levels,
                                ray_channels=RAY_CHANNELS, pooled_text=True)


def tiny_unet_config(in_channels: int, sample_size: int, cross_attention_dim: int, width: int = 32, heads: int = 8,
                     camera_features: int | None = None, levels: int = 2, ray_channels: int = 0,
                     pooled_text: bool = False) -> dict[str, Any]:
    """``levels`` resolutions (channels doubling from ``width``), cross-attention at all but the
    finest; with ``camera_features``, a camera embedding added to the timestep embedding
    (``class_embed_type = "projection"``) that scales and shifts every ResNet block's features;
    ``ray_channels`` more input channels than output ones (the ray map); ``pooled_text``: the
    prompt pooled into the timestep embedding as well."""
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    config: dict[str, Any] = dict(
        sample_size=sample_size,
        in_channels=in_channels + ray_channels,
        out_channels=in_channels,
        layers_per_block=1,
        block_out_channels=tuple(width * 2**i for i in range(levels)),
        down_block_types=down,
        up_block_types=tuple(name.replace("Down", "Up") for name in reversed(down)),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,  # diffusers' legacy name for the number of heads
        norm_num_groups=8,
    )
    if camera_features:
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=camera_features,
                      resnet_time_scale_shift="scale_shift")
    if pooled_text:
        config.update(addition_embed_type="text", addition_embed_type_num_heads=1)
    return config


def tiny_text_encoder_config(vocab_size: int, hidden: int, max_length: int) -> dict[str, Any]:
    # bos/eos ids are the last two vocabulary entries (see tokenizer_files.write_clip_tokenizer)
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def seeded_build(seed: int, build: Any) -> Any:
    """Run ``build()`` with torch's global generator seeded, without disturbing the caller's
    global random state (model constructors draw from the global generator only)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def write_model_index(folder: Path, class_name: str, components: dict[str, tuple[str, str] | None], **extra: Any) -> None:
    """A ``model_index.json`` for a layout assembled by hand (the tests' Stable Diffusion one)."""
    import diffusers

    index: dict[str, Any] = {"_class_name": class_name, "_diffusers_version": diffusers.__version__}
    for name, entry in components.items():
        index[name] = list(entry) if entry else [None, None]
    index.update(extra)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def build_pipeline(arch: PriorArchitecture, seed: int, work: Path, shading: str = "flat") -> Any:
    """A :class:`MultiViewPriorPipeline` with freshly initialised weights drawn from ``seed``,
    for images lit as ``shading`` says; the tokenizer's files are written to ``work`` first (they
    are a pure function of its word list)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from recipes.multiview_pipeline import MultiViewPriorPipeline
    from recipes.tokenizer_files import write_clip_tokenizer

    vocab_size = write_clip_tokenizer(work, max_length=arch.max_length)
    tokenizer = CLIPTokenizer.from_pretrained(str(work), local_files_only=True)
    text_config = CLIPTextConfig(**tiny_text_encoder_config(vocab_size, arch.text_dim, arch.max_length))
    text_encoder = seeded_build(seed ^ 0x7E47, lambda: CLIPTextModel(text_config))
    unet = seeded_build(seed, lambda: UNet2DConditionModel(**arch.unet_config()))
    scheduler = DDPMScheduler(
        num_train_timesteps=arch.train_timesteps,
        beta_schedule=arch.beta_schedule,
        prediction_type=arch.prediction_type,
        clip_sample=False,
    )
    return MultiViewPriorPipeline(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                                  camera_distance=arch.camera_distance, camera_fov_deg=arch.camera_fov_deg,
                                  shading=shading)


def save_pipeline(pipeline: Any, out: Path) -> None:
    pipeline.save_pretrained(str(out), safe_serialization=True)


def build_tiny_prior(ctx: StageContext) -> None:
    """Params: those of :class:`PriorArchitecture` (``resolution`` 16, ``width`` 16, ``levels`` 2, ``heads`` 1,
    ``text_dim`` 32, ``max_length`` 8, ``prediction_type`` v_prediction, ``beta_schedule``
    squaredcos_cap_v2, ``train_timesteps`` 1000, ``camera_distance`` 3, ``camera_fov_deg`` 40)."""
    import tempfile

    arch = PriorArchitecture.from_context(ctx)
    ctx.torch_generator("weights")  # applies the deterministic torch settings for this mode
    ctx.progress(0, 2, "build")
    with tempfile.TemporaryDirectory() as work:
        pipeline = build_pipeline(arch, ctx.seed_for("weights"), Path(work))
    ctx.progress(1, 2, "save")
    save_pipeline(pipeline, ctx.out)
    ctx.progress(2, 2, "saved")
