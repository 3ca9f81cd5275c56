"""``build_tiny_prior``: a tiny text-conditioned pixel-space diffusion model, built locally.

It stands in for a real checkpoint so the whole pipeline runs on a CPU with nothing downloaded.
The weights are random (drawn from ``ctx.seed_for("weights")``), so the prior knows nothing about
images; the point is a real diffusers folder that exercises the same code paths as a real one:

- ``unet/``: ``UNet2DConditionModel`` on 3-channel 32x32 images (pixel space, no VAE);
- ``text_encoder/`` + ``tokenizer/``: a 2-layer ``CLIPTextModel`` and a byte-level BPE CLIP
  tokenizer whose files are written here, so prompts really condition the UNet;
- ``scheduler/``: ``DDPMScheduler`` (``prediction_type`` from params, default ``epsilon``);
- ``model_index.json`` naming the components (written here with sorted keys).

The folder's bytes are identical on every run, process and thread count for one seed and one
diffusers/transformers version (their versions are recorded in the config files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildsys.context import RecipeError, StageContext

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def tiny_unet_config(in_channels: int, sample_size: int, cross_attention_dim: int, width: int = 32) -> dict[str, Any]:
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        layers_per_block=1,
        block_out_channels=(width, 2 * width),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


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
    import diffusers

    index: dict[str, Any] = {"_class_name": class_name, "_diffusers_version": diffusers.__version__}
    for name, entry in components.items():
        index[name] = list(entry) if entry else [None, None]
    index.update(extra)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def build_tiny_prior(ctx: StageContext) -> None:
    """Params: ``resolution`` (32), ``width`` (UNet base channels, 32), ``text_dim`` (32),
    ``max_length`` (tokens, 16), ``prediction_type`` (epsilon), ``train_timesteps`` (1000)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from recipes.tokenizer_files import write_clip_tokenizer

    resolution = ctx.param("resolution", 32, int)
    width = ctx.param("width", 32, int)
    text_dim = ctx.param("text_dim", 32, int)
    max_length = ctx.param("max_length", 16, int)
    prediction_type = ctx.param("prediction_type", "epsilon", str)
    timesteps = ctx.param("train_timesteps", 1000, int)
    if prediction_type not in PREDICTION_TYPES:
        raise RecipeError(f"stage {ctx.stage!r}: params.prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if resolution % 4 or resolution < 8:
        raise RecipeError(f"stage {ctx.stage!r}: params.resolution must be a multiple of 4 and >= 8, got {resolution}")
    if width % 8 or text_dim % 4:
        raise RecipeError(f"stage {ctx.stage!r}: params.width must be a multiple of 8 and params.text_dim of 4")

    ctx.torch_generator("weights")  # applies the deterministic torch settings for this mode
    seed = ctx.seed_for("weights")
    ctx.progress(0, 4, "tokenizer")
    vocab_size = write_clip_tokenizer(ctx.out / "tokenizer", max_length=max_length)

    ctx.progress(1, 4, "text encoder")
    text_config = CLIPTextConfig(**tiny_text_encoder_config(vocab_size, text_dim, max_length))
    text_encoder = seeded_build(seed ^ 0x7E47, lambda: CLIPTextModel(text_config))
    text_encoder.save_pretrained(ctx.out / "text_encoder", safe_serialization=True)

    ctx.progress(2, 4, "unet")
    unet = seeded_build(seed, lambda: UNet2DConditionModel(**tiny_unet_config(3, resolution, text_dim, width)))
    unet.save_pretrained(ctx.out / "unet", safe_serialization=True)

    ctx.progress(3, 4, "scheduler")
    scheduler = DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
    )
    scheduler.save_pretrained(ctx.out / "scheduler")
    write_model_index(
        ctx.out,
        "BuildsysPixelPrior",
        {
            "scheduler": ("diffusers", "DDPMScheduler"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "unet": ("diffusers", "UNet2DConditionModel"),
        },
    )
    del torch
    ctx.progress(4, 4, "saved")
