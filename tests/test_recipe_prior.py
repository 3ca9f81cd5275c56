"""The tiny prior: a diffusers pipeline folder built byte-identically, opened by
``DiffusionPipeline.from_pretrained``, and one loader for camera-conditioned pixel priors and
latent Stable Diffusion checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recipe_helpers import digests, make_ctx, run_chain_subprocess

from buildsys.context import RecipeError


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    from recipes.prior import build_tiny_prior

    out = tmp_path_factory.mktemp("prior") / "prior"
    build_tiny_prior(make_ctx(out, "prior"))
    return out


def write_tiny_sd(folder: Path, prediction_type: str) -> Path:
    """A latent Stable Diffusion layout built locally: AutoencoderKL + CLIP + UNet + PNDM."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from recipes.prior import (
        seeded_build,
        tiny_text_encoder_config,
        tiny_unet_config,
        write_model_index,
    )
    from recipes.tokenizer_files import write_clip_tokenizer

    vocab = write_clip_tokenizer(folder / "tokenizer", max_length=12)
    seeded_build(1, lambda: CLIPTextModel(CLIPTextConfig(**tiny_text_encoder_config(vocab, 32, 12)))).save_pretrained(folder / "text_encoder")
    vae = seeded_build(2, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=32))
    vae.save_pretrained(folder / "vae")
    seeded_build(3, lambda: UNet2DConditionModel(**tiny_unet_config(4, 16, 32))).save_pretrained(folder / "unet")
    PNDMScheduler(prediction_type=prediction_type, beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012, skip_prk_steps=True).save_pretrained(folder / "scheduler")
    write_model_index(folder, "StableDiffusionPipeline", {
        "feature_extractor": None, "safety_checker": None, "scheduler": ("diffusers", "PNDMScheduler"),
        "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer"),
        "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL")},
        requires_safety_checker=False)
    del torch
    return folder


def test_prior_layout_and_loads(prior_dir):
    from recipes.diffusion import CameraModel, load_prior

    names = set(digests(prior_dir))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "text_encoder/model.safetensors",
            "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"} <= names
    prior = load_prior(prior_dir)
    assert prior.prediction_type == "v_prediction" and not prior.latent and prior.image_size == 16
    assert prior.camera == CameraModel(distance=3.0, fov_deg=40.0) and prior.ray_map
    index = json.loads((prior_dir / "model_index.json").read_text())
    assert index["_class_name"] == "MultiViewPriorPipeline"


def test_diffusion_pipeline_from_pretrained_opens_the_folder(prior_dir):
    import torch
    from diffusers import DiffusionPipeline

    from recipes.multiview_pipeline import MultiViewPriorPipeline

    pipe = DiffusionPipeline.from_pretrained(str(prior_dir), local_files_only=True)
    assert isinstance(pipe, MultiViewPriorPipeline)
    assert pipe.config.camera_distance == 3.0 and pipe.unet.config.class_embed_type == "projection"
    pipe.set_progress_bar_config(disable=True)
    views = [(30.0, 20.0), (200.0, 60.0)]
    first = pipe("a red cube", views, num_inference_steps=3, generator=torch.Generator().manual_seed(1)).images
    again = pipe("a red cube", views, num_inference_steps=3, generator=torch.Generator().manual_seed(1)).images
    assert first.shape == (2, 16, 16, 3) and (first == again).all()
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_diffusion_pipeline_needs_the_class_registered(prior_dir):
    """Without importing the module that registers the class, diffusers cannot resolve its name:
    the registration is what makes the folder open."""
    import subprocess
    import sys

    code = ("import sys\nfrom diffusers import DiffusionPipeline\n{imp}"
            "p = DiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True)\nprint(type(p).__name__)")
    bare = subprocess.run([sys.executable, "-c", code.format(imp=""), str(prior_dir)], capture_output=True, text=True)
    assert bare.returncode != 0 and "MultiViewPriorPipeline" in bare.stderr
    registered = subprocess.run([sys.executable, "-c", code.format(imp="import recipes.multiview_pipeline\n"),
                                 str(prior_dir)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip().splitlines()[-1] == "MultiViewPriorPipeline"


def test_prompts_and_cameras_condition_the_prior(prior_dir):
    import torch

    from recipes.cameras import camera_features, orbit_camera
    from recipes.diffusion import load_prior

    prior = load_prior(prior_dir)
    emb = prior.encode_prompts(["a red cube", "a blue torus"])
    cams = torch.from_numpy(camera_features(orbit_camera(30, 20, 3.0)))[None]
    other = torch.from_numpy(camera_features(orbit_camera(210, 60, 3.0)))[None]
    x = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    with torch.no_grad():
        a = prior.eps(x, t, emb[:1], cams)
        b = prior.eps(x, t, emb[1:], cams)
        c = prior.eps(x, t, emb[:1], other)
    assert float((a - b).abs().max()) > 1e-4
    assert float((a - c).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="camera"):
        prior.eps(x, t, emb[:1])


def test_every_word_of_the_vocabulary_is_one_token(tmp_path):
    from transformers import CLIPTokenizer

    from recipes.tokenizer_files import WORDS, write_clip_tokenizer

    write_clip_tokenizer(tmp_path, max_length=8)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert [w for w in WORDS if len(tokenizer(w).input_ids) != 3] == []
    assert tokenizer("A Red  Torus").input_ids == tokenizer("a red torus").input_ids


def test_prior_bytes_identical_across_runs_and_threads(tmp_path, prior_dir):
    spec = [{"recipe": "recipes.prior:build_tiny_prior", "out": "prior"}]
    one = run_chain_subprocess(spec, tmp_path / "t1", threads=1)
    two = run_chain_subprocess(spec, tmp_path / "t2", threads=2)
    assert one["prior"] == two["prior"] == digests(prior_dir)


def test_seed_changes_weights(tmp_path, prior_dir):
    from recipes.prior import build_tiny_prior

    build_tiny_prior(make_ctx(tmp_path / "p", "prior", seed=5))
    other = digests(tmp_path / "p")
    mine = digests(prior_dir)
    assert other["unet/diffusion_pytorch_model.safetensors"] != mine["unet/diffusion_pytorch_model.safetensors"]
    assert other["tokenizer/tokenizer.json"] == mine["tokenizer/tokenizer.json"]


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_latent_sd_layout_loads_and_converts_to_eps(tmp_path, prediction_type):
    import torch
    from diffusers import StableDiffusionPipeline

    from recipes.diffusion import load_prior

    folder = write_tiny_sd(tmp_path / "sd", prediction_type)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None)
    assert pipe.vae is not None  # the layout is the standard one
    prior = load_prior(folder)
    assert prior.latent and prior.prediction_type == prediction_type and prior.image_size == 32
    assert prior.camera is None  # a plain text-to-image checkpoint takes no camera
    rgb = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    x0 = prior.to_model_space(rgb)
    assert x0.shape == (1, 4, 16, 16)
    emb = prior.encode_prompts(["a red blob"])
    t = torch.tensor([400])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    from diffusers import DDPMScheduler

    oracle = DDPMScheduler.from_config(prior.scheduler.config)  # same betas; has get_velocity
    with torch.no_grad():
        x_t = oracle.add_noise(x0, noise, t)
        raw = prior.unet(x_t, t, encoder_hidden_states=emb).sample
        eps = prior.eps(x_t, t, emb)
        a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
        if prediction_type == "v_prediction":
            x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * raw
            # diffusers' own definition of v from (x0, eps) must give back the UNet output
            assert torch.allclose(oracle.get_velocity(x0_hat, eps, t), raw, atol=1e-4)
        else:
            # noising the predicted sample with the derived eps must give back x_t
            assert torch.allclose(oracle.add_noise(raw, eps, t), x_t, atol=1e-4)


def test_loader_errors_name_the_file(tmp_path, prior_dir):
    from recipes.diffusion import load_prior

    with pytest.raises(RecipeError, match="model_index.json"):
        load_prior(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"unet": ["os", "system"]}))
    with pytest.raises(RecipeError, match="unet"):
        load_prior(bad)
    with pytest.raises(RecipeError, match="prediction_type"):
        from recipes.prior import build_tiny_prior

        build_tiny_prior(make_ctx(tmp_path / "p", "prior", params={"prediction_type": "x"}))


def test_camera_contract_errors_name_the_file_and_field(tmp_path, prior_dir):
    import shutil

    from recipes.diffusion import load_prior

    no_camera = tmp_path / "no-camera"
    shutil.copytree(prior_dir, no_camera)
    index = json.loads((no_camera / "model_index.json").read_text())
    del index["camera_fov_deg"]
    (no_camera / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(RecipeError, match=r"model_index.json: field 'camera_fov_deg'"):
        load_prior(no_camera)

    other_embedding = tmp_path / "timestep-embedding"
    shutil.copytree(prior_dir, other_embedding)
    config = json.loads((other_embedding / "unet" / "config.json").read_text())
    config["class_embed_type"] = "timestep"
    (other_embedding / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeError, match=r"unet/config.json: class_embed_type 'timestep'"):
        load_prior(other_embedding)
