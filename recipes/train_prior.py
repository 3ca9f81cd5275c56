"""``train_prior``: a camera-conditioned diffusion prior trained on the multi-view dataset.

Input ``dataset``: the output of ``recipes.dataset:multiview_dataset``. The model is the
architecture of ``recipes.prior`` (its params are taken here too), initialised from
``ctx.seed_for("weights")``, and trained the usual way: each step takes ``batch`` images
(composited over random background colours, so the prior never takes a background for an
object), noises them at uniform timesteps with the diffusers scheduler's ``add_noise``, and
regresses the UNet's output on the scheduler's target (the noise, or v, or the sample, as
``prediction_type`` says) given the caption and the camera (its features and its ray map). A share ``uncond_prob`` of the
captions is replaced by the empty prompt, which classifier-free guidance needs. The text
encoder learns with the UNet. AdamW, linear warm-up then cosine decay.

Every random draw (batches, backgrounds, caption drops, timesteps, noise) comes from its own
``ctx.torch_generator`` stream on the CPU, so the saved weights are the same bytes on every run
at one thread count (a fingerprint field of this stage) and the same on every device's choice of
examples. Progress is reported every step with the running loss.

Params: those of :class:`recipes.prior.PriorArchitecture` (must match the dataset's resolution
and camera), ``steps`` (600), ``batch`` (32), ``lr`` (2e-3), ``warmup`` (50), ``weight_decay``
(0.01), ``uncond_prob`` (0.1). Outputs: the pipeline folder (see ``recipes.prior``) and
``training.json`` (params, the loss averaged over every ``log_every`` steps).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.prior import PriorArchitecture, build_pipeline, save_pipeline
from recipes.shading import SHADINGS


@dataclass(frozen=True)
class TrainParams:
    steps: int
    batch: int
    lr: float
    warmup: int
    weight_decay: float
    uncond_prob: float
    log_every: int

    @classmethod
    def from_context(cls, ctx: StageContext) -> "TrainParams":
        p = cls(
            steps=ctx.param("steps", 600, int),
            batch=ctx.param("batch", 32, int),
            lr=float(ctx.param("lr", 2e-3, float)),
            warmup=ctx.param("warmup", 50, int),
            weight_decay=float(ctx.param("weight_decay", 0.01, float)),
            uncond_prob=float(ctx.param("uncond_prob", 0.1, float)),
            log_every=ctx.param("log_every", 25, int),
        )
        where = f"stage {ctx.stage!r}: params"
        if p.steps < 0 or p.batch < 1 or p.warmup < 0 or p.log_every < 1:
            raise RecipeError(f"{where}.steps and warmup must be >= 0, params.batch and log_every >= 1")
        if not 0.0 < p.lr < 1.0 or not 0.0 <= p.uncond_prob < 1.0 or p.weight_decay < 0:
            raise RecipeError(f"{where}.lr must be in (0, 1), params.uncond_prob in [0, 1), weight_decay >= 0")
        return p

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.steps - self.warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup) / span))


@dataclass
class TrainingSet:
    rgb: Any  # (N,3,H,W) float32 in [0,1], straight colour
    alpha: Any  # (N,1,H,W) float32 in [0,1]
    cameras: Any  # (N,16) float32
    rays: Any  # (N,6,H,W) float32 ray maps of the cameras
    caption_index: Any  # (N,) int64 into captions
    captions: list[str]
    shading: str  # how the images are lit (recipes.shading)


def load_training_set(ctx: StageContext, arch: PriorArchitecture) -> TrainingSet:
    import torch

    from recipes.meshio import load_npz

    root = ctx.input_dir("dataset")
    meta_file = root / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{meta_file}: cannot read the dataset's description ({exc})") from None
    arrays = load_npz(root / "images.npz", required=("rgba", "camera"))
    rgba, cameras = arrays["rgba"], arrays["camera"]
    captions = meta.get("captions")
    if rgba.ndim != 4 or rgba.shape[3] != 4 or rgba.dtype != np.uint8:
        raise RecipeError(f"{root / 'images.npz'}: field 'rgba' must be (N,H,W,4) uint8, got {rgba.shape} {rgba.dtype}")
    if not isinstance(captions, list) or len(captions) != len(rgba) or cameras.shape != (len(rgba), 16):
        raise RecipeError(f"{meta_file}: field 'captions' must list one caption per image of images.npz "
                          f"({len(rgba)}), with one 16-number camera each")
    if rgba.shape[1:3] != (arch.resolution, arch.resolution):
        raise RecipeError(f"{root / 'images.npz'}: images are {rgba.shape[1]}x{rgba.shape[2]}, params.resolution "
                          f"is {arch.resolution}")
    for field, value in (("distance", arch.camera_distance), ("fov_deg", arch.camera_fov_deg)):
        if meta.get(field) != value:
            raise RecipeError(f"{meta_file}: field {field!r} is {meta.get(field)!r}, params.camera_{field} is {value}")
    shading = meta.get("shading", "flat")
    if shading not in SHADINGS:
        raise RecipeError(f"{meta_file}: field 'shading' must be one of {SHADINGS}, got {shading!r}")
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    from recipes.cameras import ray_map

    pixels = torch.from_numpy(rgba).permute(0, 3, 1, 2).float() / 255.0
    rays = torch.from_numpy(np.stack([ray_map(c, arch.camera_fov_deg, arch.resolution) for c in cameras]))
    return TrainingSet(pixels[:, :3].contiguous(), pixels[:, 3:].contiguous(), torch.from_numpy(cameras), rays,
                       torch.tensor([lookup[c] for c in captions], dtype=torch.int64), unique, shading)


def train_prior(ctx: StageContext) -> None:
    import torch
    import torch.nn.functional as F

    arch = PriorArchitecture.from_context(ctx)
    p = TrainParams.from_context(ctx)
    gens = {name: ctx.torch_generator(name) for name in ("batch", "background", "uncond", "timestep", "noise")}
    device = ctx.torch_device()
    data = load_training_set(ctx, arch)
    with tempfile.TemporaryDirectory() as work:
        pipe = build_pipeline(arch, ctx.seed_for("weights"), Path(work), data.shading)
    unet, text_encoder, scheduler = pipe.unet.to(device), pipe.text_encoder.to(device), pipe.scheduler
    tokens = pipe.tokenizer(data.captions + [""], padding="max_length", max_length=arch.max_length,
                            truncation=True, return_tensors="pt").input_ids.to(device)
    empty = len(data.captions)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, p.lr_factor)
    unet.train()
    text_encoder.train()
    count = len(data.caption_index)
    log: list[float] = []
    window: list[float] = []
    for step in range(p.steps):
        pick = torch.randint(0, count, (p.batch,), generator=gens["batch"])
        background = torch.rand((p.batch, 3, 1, 1), generator=gens["background"])
        alpha = data.alpha[pick]
        x0 = ((data.rgb[pick] * alpha + background * (1.0 - alpha)) * 2.0 - 1.0).to(device)
        drop = torch.rand((p.batch,), generator=gens["uncond"]) < p.uncond_prob
        caption = torch.where(drop, torch.full_like(pick, empty), data.caption_index[pick]).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (p.batch,), generator=gens["timestep"]).to(device)
        noise = torch.randn(x0.shape, generator=gens["noise"]).to(device)
        x_t = scheduler.add_noise(x0, noise, t)
        hidden = text_encoder(tokens[caption])[0]
        inputs = torch.cat([x_t, data.rays[pick].to(device)], dim=1)
        out = unet(inputs, t, encoder_hidden_states=hidden, class_labels=data.cameras[pick].to(device)).sample
        loss = F.mse_loss(out, _target(scheduler, x0, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = loss.item()
        window.append(value)
        if len(window) == p.log_every or step == p.steps - 1:
            log.append(float(np.mean(window)))
            window = []
        ctx.progress(step + 1, p.steps, f"loss {value:.4f}")
    unet.eval()
    text_encoder.eval()
    save_pipeline(pipe.to("cpu"), ctx.out)
    summary = {
        "steps": p.steps, "batch": p.batch, "lr": p.lr, "warmup": p.warmup, "weight_decay": p.weight_decay,
        "uncond_prob": p.uncond_prob, "images": count, "captions": data.captions,
        "loss_every": p.log_every, "loss": [float(f"{v:.6g}") for v in log],
    }
    (ctx.out / "training.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")


def _target(scheduler: Any, x0: Any, noise: Any, t: Any) -> Any:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return x0
