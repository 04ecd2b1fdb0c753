"""AnimateLCM-I2V inside a real in-process ComfyUI (CPU, tiny SD1.5 UNet, a small AnimateLCM-I2V motion module
in the released layout from scripts/make_fixtures.py).

The image encoder against a re-implementation of the original's, where and to what its features are added,
the schedule autoselect picks, sampling with context windows, and the errors users can make.
"""
import comfy.model_management
import comfy.patcher_extension
import numpy as np
import pytest
import torch

import reference
from comfy_env import ksample, unet_state
from animatediff.errors import AnimateDiffError
from animatediff.motion_module import read_state_dict
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.image_to_video import AnimateLCMI2VImage
from animatediff.patching.motion import apply_motion_model, load_motion_model_file

SD15_LATENT_SCALE = 0.18215
FILE = "mm_animatelcm_i2v.safetensors"


@pytest.fixture(scope="module")
def i2v(fixtures_dir):
    return load_motion_model_file(fixtures_dir / "small" / FILE, FILE)


@pytest.fixture(scope="module")
def weights(fixtures_dir):
    return read_state_dict(fixtures_dir / "small" / FILE)


def picture(height=8, width=8, seed=3, batch=1):
    """A LATENT as VAE Encode gives it (not yet scaled for the UNet)."""
    return {"samples": torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(seed))}


@pytest.mark.parametrize("size, strength", [((8, 8), 0.8), ((6, 10), 1.3), ((8, 8), 0.0)])
def test_the_image_encoder_is_animatelcm_i2vs(i2v, weights, size, strength):
    latent = picture(*size)["samples"]
    with torch.inference_mode():
        ours = i2v.model.img_encoder(latent, 5, strength)
    want = reference.animatelcm_i2v_features(weights, latent, 5, strength)
    assert [f.shape for f in ours] == [f.shape for f in want]
    for a, b in zip(ours, want):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_features_are_added_before_each_down_blocks_last_module_on_every_frame_of_both_halves(base, i2v, weights):
    """The input of down block i's last motion module, minus what the layer before it gave, is feature i of the
    image's latent (scaled as the UNet takes latents), for every frame, in the cond and the uncond half."""
    frames, image = 6, picture()
    model = AnimateLCMI2VImage().apply(apply_motion_model(base, i2v, 1.0, "autoselect"), image, 0.8)[0]
    unet = base.model.diffusion_model
    before = [unet.input_blocks[2][1], unet.input_blocks[5][1], unet.input_blocks[8][1], unet.input_blocks[11][0]]
    got, entering = {}, {}

    def first(record, index, value):  # the first UNet call's; a hook returning None changes nothing
        record.setdefault(index, value)

    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: first(got, i, out)) for i, layer in enumerate(before)]
    hooks += [i2v.model.down_blocks[i].motion_modules[1].register_forward_pre_hook(
        lambda m, args, i=i: first(entering, i, args[0])) for i in range(4)]
    try:
        ksample(model, frames=frames, steps=1, cfg=7.5)
    finally:
        for hook in hooks:
            hook.remove()
    want = reference.animatelcm_i2v_features(weights, image["samples"] * SD15_LATENT_SCALE, frames, 0.8)
    for i in range(4):
        added = entering[i] - got[i]
        assert added.shape[0] == 2 * frames  # (cond, uncond) × frames
        expected = want[i].repeat(2, 1, 1, 1)
        assert (added - expected).abs().max() <= 1e-4 * expected.abs().max(), i


def test_autoselect_samples_as_animatelcm_i2v_was_distilled(base, i2v):
    """LCM over 200 of the 1000 timesteps (4, 9, ..., 999), on linear betas from 0.00085 to 0.014."""
    sampling = apply_motion_model(base, i2v, 1.0, "autoselect").get_model_object("model_sampling")
    betas = np.linspace(0.00085, 0.014, 1000, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    sigmas = np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)[4::5]
    assert sampling.sigmas.shape == (200,)
    assert np.allclose(sampling.sigmas.double().numpy(), sigmas, rtol=1e-5)
    assert float(sampling.timestep(sampling.sigmas[0:1])) == pytest.approx(4.0, abs=1e-3)
    assert type(sampling).original_timesteps == 200


def test_the_image_steers_windowed_sampling_repeatably_and_a_second_node_replaces_the_first(base, i2v):
    comfy.model_management.unload_all_models()
    state = unet_state(base)
    animated = apply_motion_model(base, i2v, 1.0, "autoselect")
    windowed = ContextWindows().apply(animated, 8, 2, "uniform_standard", "pyramid", 1, False)[0]
    def run(model):
        return ksample(model, frames=12, steps=2, cfg=1.5, sampler="lcm", scheduler="sgm_uniform")
    with_image = AnimateLCMI2VImage().apply(windowed, picture(seed=5), 0.8)[0]
    guided = run(with_image)
    assert torch.isfinite(guided).all() and torch.equal(guided, run(with_image))
    (reference,) = with_image.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "animatediff_i2v")
    assert reference.__self__.cache == {}  # the features are not held past sampling
    plain = run(windowed)
    assert (guided - plain).abs().max() > 1e-2 * plain.abs().max()
    twice = AnimateLCMI2VImage().apply(AnimateLCMI2VImage().apply(windowed, picture(seed=9), 0.5)[0],
                                       picture(seed=5), 0.8)[0]
    assert torch.equal(run(twice), guided)
    comfy.model_management.unload_all_models()
    assert all(torch.equal(state[k], v) for k, v in unet_state(base).items())


def test_mistakes_are_named(base, motion, i2v):
    with pytest.raises(AnimateDiffError,
                       match="AnimateLCM-I2V motion module .*this model has an AnimateDiff v3 motion module"):
        AnimateLCMI2VImage().apply(apply_motion_model(base, motion["v3"], 1.0, "autoselect"), picture(), 0.8)
    with pytest.raises(AnimateDiffError, match="this model has no motion module"):
        AnimateLCMI2VImage().apply(base, picture(), 0.8)
    # another motion module put in after the picture's: v3 has modules of the features' names, and would add them
    with_image = AnimateLCMI2VImage().apply(apply_motion_model(base, i2v, 1.0, "autoselect"), picture(), 0.8)[0]
    with pytest.raises(AnimateDiffError, match="AnimateDiff_AnimateLCMI2VImage made its picture's inputs for an "
                                               "AnimateLCM-I2V motion module, and an AnimateDiff_ApplyMotionModule "
                                               "after it put an AnimateDiff v3 motion module in its place"):
        ksample(apply_motion_model(with_image, motion["v3"], 1.0, "autoselect"), steps=1)
    with pytest.raises(AnimateDiffError, match="takes one image; image_latent holds 3"):
        AnimateLCMI2VImage().apply(apply_motion_model(base, i2v, 1.0, "autoselect"), picture(batch=3), 0.8)
    overflowed = picture()
    overflowed["samples"][0, 0, 0, 0] = float("inf")
    with pytest.raises(AnimateDiffError, match="AnimateLCMI2VImage: image_latent holds NaN or infinite values"):
        AnimateLCMI2VImage().apply(apply_motion_model(base, i2v, 1.0, "autoselect"), overflowed, 0.8)
