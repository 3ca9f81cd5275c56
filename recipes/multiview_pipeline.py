"""``MultiViewPriorPipeline``: the diffusers pipeline class of a camera-conditioned pixel prior.

A folder saved by it (``model_index.json`` naming this class, ``unet/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``) opens with ``MultiViewPriorPipeline.from_pretrained(folder)``
and, once this module is imported (which registers the class with diffusers, the way diffusers'
own pipelines are found by name), with ``diffusers.DiffusionPipeline.from_pretrained(folder)``.

The camera contract (the one a real camera-conditioned checkpoint must meet to be used the same
way; ``recipes.diffusion`` checks it): the UNet is a ``UNet2DConditionModel`` with
``class_embed_type = "projection"`` and ``projection_class_embeddings_input_dim = 16``; its
``class_labels`` are :func:`recipes.cameras.camera_features` (the flattened camera-to-world
matrix, MVDream's encoding) of a camera at ``camera_distance`` looking at the origin with a
vertical field of view of ``camera_fov_deg``, objects inside [-1, 1]^3, y up. Both numbers are
pipeline config fields, saved in ``model_index.json``. If ``in_channels`` exceeds
``out_channels`` by 6, the UNet also takes the ray map of :func:`recipes.cameras.ray_map` (each
pixel's ray, as CAT3D-style models do) after the image channels. Images are RGB in [-1, 1] at
the UNet's ``sample_size``. ``shading`` (``flat`` or ``lambert``, a config field too; ``flat``
when absent) says how the training images were lit (``recipes.shading``): SDS renders a field
the same way before it asks the prior.
"""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from recipes.cameras import camera_features, orbit_camera, ray_map


class MultiViewPriorPipeline(DiffusionPipeline):
    """Text- and camera-conditioned image generation; the prior score distillation reads."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: Any, scheduler: Any, text_encoder: Any, tokenizer: Any,
                 camera_distance: float = 3.0, camera_fov_deg: float = 40.0, shading: str = "flat") -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(camera_distance=float(camera_distance), camera_fov_deg=float(camera_fov_deg),
                                shading=str(shading))

    def camera_labels(self, views: list[tuple[float, float]]) -> torch.Tensor:
        """(len(views), 16) class labels for (azimuth, elevation) pairs in degrees."""
        rows = [camera_features(orbit_camera(az, el, self.config.camera_distance, self.config.camera_fov_deg))
                for az, el in views]
        return torch.from_numpy(np.stack(rows)).to(self._execution_device)

    def ray_maps(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The ray maps of the views when the UNet takes them (6 more input than output channels)."""
        if self.unet.config.in_channels == self.unet.config.out_channels:
            return None
        size = int(self.unet.config.sample_size)
        maps = [ray_map(row, self.config.camera_fov_deg, size) for row in labels.cpu().numpy()]
        return torch.from_numpy(np.stack(maps)).to(self._execution_device)

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self._execution_device))[0]

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], views: list[tuple[float, float]], num_inference_steps: int = 50,
                 guidance_scale: float = 3.0, generator: torch.Generator | None = None,
                 output_type: str = "np", return_dict: bool = True) -> ImagePipelineOutput | tuple:
        """One image per view (azimuth, elevation in degrees) of ``prompt`` (one prompt, or one per
        view), with classifier-free guidance against the empty prompt. ``output_type``: ``np``
        (B,H,W,3 float in [0,1]) or ``pt`` (B,3,H,W)."""
        prompts = [prompt] * len(views) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(views):
            raise ValueError(f"{len(prompts)} prompts for {len(views)} views")
        batch = len(views)
        cond = self.encode_prompt(prompts)
        uncond = self.encode_prompt([""] * batch)
        labels = self.camera_labels(views)
        rays = self.ray_maps(labels)
        size = int(self.unet.config.sample_size)
        shape = (batch, int(self.unet.config.out_channels), size, size)
        image = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inputs = image if rays is None else torch.cat([image, rays], dim=1)
            both = self.unet(torch.cat([inputs, inputs]), t, encoder_hidden_states=torch.cat([uncond, cond]),
                             class_labels=torch.cat([labels, labels])).sample
            eps_uncond, eps_cond = both.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            image = self.scheduler.step(eps, t, image, generator=generator).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "np":
            image = image.permute(0, 2, 3, 1).cpu().float().numpy()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)


def register() -> None:
    """Make ``DiffusionPipeline.from_pretrained`` find this class by the name in model_index.json
    (it looks the name up on the ``diffusers`` module)."""
    if getattr(diffusers, MultiViewPriorPipeline.__name__, None) is not MultiViewPriorPipeline:
        setattr(diffusers, MultiViewPriorPipeline.__name__, MultiViewPriorPipeline)


register()
