"""``load_prior``: one loader for every local diffusers checkpoint folder the SDS stage may get.

It reads ``model_index.json`` and loads the components it names from their subfolders, always
with ``local_files_only=True``: the camera-conditioned pixel-space prior this project trains
(unet, scheduler, CLIP text encoder and tokenizer; ``recipes.multiview_pipeline``) and a
latent-space Stable Diffusion layout (the same plus a ``vae`` AutoencoderKL; ``safety_checker`` /
``feature_extractor`` entries are ignored). Only the classes listed below may be loaded, so a
checkpoint cannot name arbitrary code.

Camera conditioning is read from the UNet's config, and is the whole contract a real multi-view
checkpoint (an MVDream-style UNet converted to diffusers, a ray-conditioned one like CAT3D's)
must meet. A checkpoint is camera-conditioned when ``class_embed_type`` is ``"projection"`` with
``projection_class_embeddings_input_dim`` 16: its ``class_labels`` are then the camera features of
``recipes.cameras.camera_features`` (the flattened camera-to-world matrix), for a camera at
``camera_distance`` with a vertical field of view ``camera_fov_deg`` (both required in
``model_index.json``); an optional ``shading`` there (``flat``, the default, or ``lambert``:
``recipes.shading``) says how its training images were lit, and SDS lights its renders the
same way. A camera-conditioned UNet may also take a ray map: ``in_channels`` 6 more
than the image's, the per-pixel Plücker coordinates of ``recipes.cameras.ray_map`` concatenated
after the (noisy) image channels. A UNet without a class embedding is a plain text-to-image
prior: it gets no camera. Any other class embedding or channel count is refused, naming the
field.

Whatever the scheduler's ``prediction_type`` (epsilon, v_prediction, sample), :meth:`Prior.eps`
returns the predicted noise, which is what score distillation needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.context import RecipeError
from recipes.cameras import CAMERA_FEATURES, RAY_CHANNELS
from recipes.shading import SHADINGS

_DIFFUSERS_MODELS = ("UNet2DConditionModel", "AutoencoderKL")
_TRANSFORMERS_MODELS = ("CLIPTextModel", "CLIPTokenizer", "CLIPTokenizerFast")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class CameraModel:
    """The cameras a camera-conditioned prior was trained with (see the module docstring)."""

    distance: float
    fov_deg: float
    shading: str = "flat"  # how its training images were lit (recipes.shading)


@dataclass
class Prior:
    unet: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any | None
    prediction_type: str
    alphas_cumprod: Any  # torch tensor (T,), float32, on the device
    device: str
    camera: CameraModel | None = None  # None: the prior takes no camera
    ray_map: bool = False  # the UNet also takes the cameras' ray maps as input channels

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def latent(self) -> bool:
        return self.vae is not None

    @property
    def image_size(self) -> int:
        """Side of the RGB image the prior expects (the UNet's size times the VAE's factor)."""
        size = int(self.unet.config.sample_size)
        if self.vae is not None:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return size

    def encode_prompts(self, prompts: list[str]) -> Any:
        import torch

        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            return self.text_encoder(tokens.input_ids.to(self.device))[0]

    def ray_maps(self, cameras: Any, size: int) -> Any:
        """(B,6,size,size) ray maps of (B,16) camera features, on the prior's device."""
        import numpy as np
        import torch

        from recipes.cameras import ray_map

        rows = cameras.detach().cpu().numpy()
        return torch.from_numpy(np.stack([ray_map(r, self.camera.fov_deg, size) for r in rows])).to(cameras.device)

    def to_model_space(self, rgb: Any) -> Any:
        """(B,3,H,W) images in [0,1] -> what the UNet denoises (differentiable): pixels in
        [-1,1], or VAE latents (posterior mean times the VAE's scaling factor)."""
        x = rgb * 2.0 - 1.0
        if self.vae is None:
            return x
        latents = self.vae.encode(x).latent_dist.mean
        return latents * float(getattr(self.vae.config, "scaling_factor", 0.18215))

    def eps(self, x_t: Any, t: Any, embeddings: Any, cameras: Any = None) -> Any:
        """Predicted noise for noisy inputs ``x_t`` at integer timesteps ``t`` (B,); ``cameras``
        (B,16) camera features, required by a camera-conditioned prior, ignored by others."""
        import torch

        if self.camera is None:
            cameras = None
        elif cameras is None:
            raise ValueError("a camera-conditioned prior needs the camera of every view")
        inputs = x_t
        if self.ray_map:
            inputs = torch.cat([x_t, self.ray_maps(cameras, x_t.shape[-1])], dim=1)
        out = self.unet(inputs, t, encoder_hidden_states=embeddings, class_labels=cameras).sample
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * out + (1 - a).sqrt() * x_t
        return (x_t - a.sqrt() * out) / (1 - a).sqrt()


def _read_index(path: Path) -> dict[str, Any]:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise RecipeError(f"{index_file}: missing; a prior must be a diffusers checkpoint folder")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{index_file}: not valid JSON ({exc})") from None
    if not isinstance(index, dict):
        raise RecipeError(f"{index_file}: must be a JSON object")
    return index


def _component_class(index_file: Path, name: str, entry: Any) -> Any:
    import diffusers
    import transformers

    if not (isinstance(entry, list) and len(entry) == 2):
        raise RecipeError(f"{index_file}: field {name!r} must be [library, class]")
    library, cls = entry
    if library == "diffusers" and (cls in _DIFFUSERS_MODELS or str(cls).endswith("Scheduler")):
        found = getattr(diffusers, cls, None)
    elif library == "transformers" and cls in _TRANSFORMERS_MODELS:
        found = getattr(transformers, cls, None)
    else:
        found = None
    if found is None:
        raise RecipeError(f"{index_file}: field {name!r} names {library}.{cls}, which this loader does not load")
    return found


def load_prior(path: Path, device: str = "cpu") -> Prior:
    """Load a local checkpoint folder (see the module docstring). Errors name the file and field."""
    import torch

    path = Path(path)
    index = _read_index(path)
    index_file = path / "model_index.json"
    parts: dict[str, Any] = {}
    for name in ("unet", "scheduler", "text_encoder", "tokenizer", "vae"):
        entry = index.get(name)
        if entry is None or entry == [None, None]:
            continue
        cls = _component_class(index_file, name, entry)
        if not (path / name).is_dir():
            raise RecipeError(f"{index_file}: names {name!r} but {path / name} is not a folder")
        try:
            parts[name] = cls.from_pretrained(str(path), subfolder=name, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecipeError(f"{path / name}: cannot load {entry[1]} ({exc})") from None
    missing = [n for n in ("unet", "scheduler", "text_encoder", "tokenizer") if n not in parts]
    if missing:
        raise RecipeError(f"{index_file}: components {missing} are required")
    scheduler = parts["scheduler"]
    prediction_type = str(scheduler.config.get("prediction_type", "epsilon"))
    if prediction_type not in PREDICTION_TYPES:
        raise RecipeError(
            f"{path / 'scheduler' / 'scheduler_config.json'}: prediction_type {prediction_type!r} "
            f"is not one of {PREDICTION_TYPES}"
        )
    unet = parts["unet"]
    vae = parts.get("vae")
    camera = _camera_model(path, index, unet)
    expected = int(vae.config.latent_channels) if vae is not None else 3
    allowed = (expected, expected + RAY_CHANNELS) if camera is not None else (expected,)
    if int(unet.config.in_channels) not in allowed or int(unet.config.out_channels) != expected:
        raise RecipeError(
            f"{path / 'unet' / 'config.json'}: in_channels {unet.config.in_channels} and out_channels "
            f"{unet.config.out_channels}; expected {expected} out "
            f"({'VAE latent channels' if vae is not None else 'RGB, no vae in model_index.json'}) and "
            f"{' or '.join(map(str, allowed))} in" + (" (with a ray map)" if camera is not None else "")
        )
    for module in (unet, parts["text_encoder"], vae):
        if module is not None:
            if device != "cpu":
                module.to(device)
            module.eval()
            module.requires_grad_(False)
    alphas = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).to(device)
    return Prior(unet, scheduler, parts["text_encoder"], parts["tokenizer"], vae, prediction_type, alphas, device, camera,
                 ray_map=int(unet.config.in_channels) != expected)


def _camera_model(path: Path, index: dict[str, Any], unet: Any) -> CameraModel | None:
    embed = unet.config.get("class_embed_type")
    if embed is None:
        return None
    config_file = path / "unet" / "config.json"
    dim = unet.config.get("projection_class_embeddings_input_dim")
    if embed != "projection" or dim != CAMERA_FEATURES:
        raise RecipeError(
            f"{config_file}: class_embed_type {embed!r} with projection_class_embeddings_input_dim {dim!r}: "
            f"a camera-conditioned prior must use 'projection' with {CAMERA_FEATURES} camera features"
        )
    values = {}
    for field in ("camera_distance", "camera_fov_deg"):
        value = index.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise RecipeError(f"{path / 'model_index.json'}: field {field!r} must be a positive number for a "
                              f"camera-conditioned prior, got {value!r}")
        values[field] = float(value)
    shading = index.get("shading", "flat")
    if shading not in SHADINGS:
        raise RecipeError(f"{path / 'model_index.json'}: field 'shading' must be one of {SHADINGS}, got {shading!r}")
    return CameraModel(values["camera_distance"], values["camera_fov_deg"], shading)
