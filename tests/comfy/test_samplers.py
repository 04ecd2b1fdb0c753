"""The animating MODEL behaves the same under every sampler entry point of ComfyUI."""
import comfy.sample
import comfy.samplers
import pytest
import torch

from comfy_env import conditioning, ksample, latent, tiny_sd15
from animatediff.errors import AnimateDiffError
from animatediff.nodes.sampler import Sampler
from animatediff.patching.motion import apply_motion_model, load_motion_model_file


def animated(fixtures_dir):
    motion = load_motion_model_file(fixtures_dir / "small" / "mm_v3.safetensors", "mm_v3.safetensors")
    return apply_motion_model(tiny_sd15(seed=4), motion, 1.0, "autoselect")


def test_animatediff_sampler_with_default_noise_is_the_core_ksampler(fixtures_dir):
    model = animated(fixtures_dir)
    core = ksample(model, frames=12, seed=9, steps=3, sampler="dpmpp_2m", scheduler="karras")
    (ours,) = Sampler().sample(model, 9, 3, 7.5, "dpmpp_2m", "karras", conditioning(11), conditioning(12),
                               latent(12), denoise=1.0, noise_type="default")
    assert torch.equal(core, ours["samples"])


def test_custom_sampling_guider_gives_the_ksampler_result(fixtures_dir):
    """SamplerCustomAdvanced drives a CFGGuider with explicit noise, sampler and sigmas."""
    model = animated(fixtures_dir)
    core = ksample(model, frames=8, seed=5, steps=2, sampler="euler", scheduler="normal")
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(conditioning(11), conditioning(12))
    guider.set_cfg(7.5)
    empty = latent(8)["samples"]
    noise = comfy.sample.prepare_noise(empty, 5)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2)
    custom = guider.sample(noise, empty, comfy.samplers.sampler_object("euler"), sigmas, seed=5)
    assert torch.equal(core, custom)


def test_a_latent_that_is_not_a_batch_of_frames_is_named(fixtures_dir):
    """E.g. a video model's 5-D latent: the frames of an SD1.5 animation are the batch."""
    video = {"samples": torch.zeros(1, 4, 8, 8, 8)}
    with pytest.raises(AnimateDiffError, match=r"latent_image has shape \(1, 4, 8, 8, 8\); an SD1.5 animation's"):
        Sampler().sample(animated(fixtures_dir), 1, 1, 7.5, "euler", "normal", conditioning(11), conditioning(12),
                         video, denoise=1.0, noise_type="free_noise")
    other_vae = {"samples": torch.randn(4, 16, 8, 8)}  # VAE Encode with SD3's or Flux's VAE
    with pytest.raises(AnimateDiffError, match="latent_image has 16 channels, where this model's latents have 4"):
        Sampler().sample(animated(fixtures_dir), 1, 1, 7.5, "euler", "normal", conditioning(11), conditioning(12),
                         other_vae, denoise=0.6)
    with pytest.raises(AnimateDiffError, match="latent_image holds no frames"):
        Sampler().sample(animated(fixtures_dir), 1, 1, 7.5, "euler", "normal", conditioning(11), conditioning(12),
                         {"samples": torch.zeros(0, 4, 8, 8)}, denoise=1.0)
