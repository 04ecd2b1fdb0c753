"""FreeInit inside a real ComfyUI: each round is ComfyUI's own sampling, from noise rebuilt as the paper says."""
import math

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import numpy as np
import pytest
import torch

from comfy_env import conditioning, ksample, latent, tiny_controlnet, with_controlnet
from animatediff.errors import AnimateDiffError
from animatediff.nodes.free_init import FreeInit
from animatediff.patching.context import apply_context_windows
from animatediff.patching.free_init import KEY
from animatediff.patching.motion import apply_motion_model
from reference import filter_by_loops, mix_by_numpy

SD15_LATENT_SCALE = 0.18215  # SD1.x's latent format: the sampler works on latents times this


@pytest.fixture(scope="module")
def animated(base, motion):
    return apply_motion_model(base, motion["v2"], 1.0, "autoselect")


def free_init(model, iterations, kind="butterworth", d_s=0.25, d_t=0.25):
    (patched,) = FreeInit().apply(model, iterations, kind, d_s, d_t)
    return patched


def test_one_iteration_is_plain_sampling(animated):
    assert torch.equal(ksample(free_init(animated, 1), frames=8), ksample(animated, frames=8))


def second_round_noise(first, seed, kind, d_s, d_t, start_below=None):
    """The paper's re-initialisation, restated: `first` (a finished round) noised back with the seed's initial
    noise, low-passed over frames × height × width, plus the high frequencies of the seed's next draw."""
    frames = first.shape[0]
    initial_noise = comfy.sample.prepare_noise(latent(frames)["samples"], seed)
    clean = first.double() * SD15_LATENT_SCALE
    if start_below is None:  # from the largest sigma: DDPM's forward process to timestep 999
        last = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)[-1].item()
        noised = math.sqrt(last) * clean + math.sqrt(1 - last) * initial_noise.double()
    else:  # ComfyUI's samplers scale the noise by σ there, not by sqrt(1 + σ²)
        noised = clean / start_below + initial_noise.double()
    stream = torch.Generator().manual_seed(seed)
    assert torch.equal(torch.randn(initial_noise.shape, generator=stream), initial_noise)
    fresh = torch.randn(initial_noise.shape, generator=stream)  # the seed's next draw: new, independent noise
    mask = filter_by_loops(frames, 8, 8, kind, d_s, d_t)
    return torch.from_numpy(mix_by_numpy(noised.numpy(), fresh.double().numpy(), mask)).float()


def sample_in_steps(model, noise, sigmas, seed):
    """ComfyUI's sampling over exactly these sigmas (euler, cfg 7.5), from an empty latent."""
    return comfy.sample.sample_custom(model, noise, 7.5, comfy.samplers.sampler_object("euler"), sigmas,
                                      conditioning(11), conditioning(12), torch.zeros_like(noise), seed=seed)


@pytest.mark.parametrize("frames,windows,fast,scheduler", [(8, False, False, "normal"), (20, True, False, "normal"),
                                                           (8, False, True, "normal"), (8, False, False, "ddim_uniform")])
def test_the_second_round_samples_from_the_re_noised_first_mixed_with_fresh_noise(animated, frames, windows, fast,
                                                                                 scheduler):
    """Also under context windows (20 frames in windows of 8): the rounds are whole sampling runs, so the
    windows are the sampler's business, round after round. With fast sampling the first of two rounds takes
    int(2 / 2 · 1) = 1 of the 2 steps: the schedule's first and last sigma. ddim_uniform starts below the
    largest sigma, where ComfyUI's samplers scale the noise by σ instead of sqrt(1 + σ²)."""
    seed = 5
    if windows:
        animated = apply_context_windows(animated, 8, 2, "uniform_standard", "pyramid")
    (model,) = FreeInit().apply(animated, 2, "gaussian", 0.3, 0.2, fast_sampling=fast)
    ours = ksample(model, frames=frames, seed=seed, scheduler=scheduler)

    initial_noise = comfy.sample.prepare_noise(latent(frames)["samples"], seed)
    sigmas = comfy.samplers.calculate_sigmas(animated.get_model_object("model_sampling"), scheduler, 2)
    first = sample_in_steps(animated, initial_noise, sigmas[[0, 2]] if fast else sigmas, seed)
    start_below = None if scheduler == "normal" else sigmas[0].item()
    if start_below:
        assert start_below < 0.9 * animated.get_model_object("model_sampling").sigma_max.item()
    noise = second_round_noise(first, seed, "gaussian", 0.3, 0.2, start_below)
    expected = sample_in_steps(animated, noise, sigmas, seed)  # ComfyUI picks the noise scaling from sigmas[0]
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert (ours - first).abs().max() > 0.05 * first.abs().max()  # and the second round did change the frames


@pytest.mark.parametrize("fast", [False, True])
def test_progress_counts_up_once_over_every_rounds_steps(animated, fast):
    """What the progress bar and a service's websocket progress messages show: no restart per round."""
    (model,) = FreeInit().apply(animated, 3, "butterworth", 0.25, 0.25, fast)
    sigmas = comfy.samplers.calculate_sigmas(animated.get_model_object("model_sampling"), "normal", 4)
    noise, seen = comfy.sample.prepare_noise(latent(4)["samples"], 1), []
    comfy.sample.sample_custom(model, noise, 7.5, comfy.samplers.sampler_object("euler"), sigmas, conditioning(11),
                               conditioning(12), torch.zeros_like(noise), seed=1,
                               callback=lambda step, x0, x, total: seen.append((step, total)))
    total = 1 + 2 + 4 if fast else 3 * 4  # coarse to fine: int(4 · (k + 1) / 3) steps in round k = 0, 1, 2
    assert seen == [(step, total) for step in range(total)]


def test_controlnet_hints_guide_every_round(animated):
    """ControlNets are prepared and cleaned up by each round's sampling: the second round under a hint per frame
    equals sampling that noise with the same hints."""
    frames, seed = 6, 3
    positive, negative = with_controlnet(conditioning(11), conditioning(12), tiny_controlnet(7),
                                         [k / frames for k in range(frames)])
    ours = ksample(free_init(animated, 2, "butterworth"), frames=frames, seed=seed, positive=positive,
                   negative=negative)
    first = ksample(animated, frames=frames, seed=seed, positive=positive, negative=negative)
    noise = second_round_noise(first, seed, "butterworth", 0.25, 0.25)
    expected = comfy.sample.sample(animated, noise, 2, 7.5, "euler", "normal", positive, negative,
                                   latent(frames)["samples"], seed=seed)
    unguided = ksample(free_init(animated, 2, "butterworth"), frames=frames, seed=seed)
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert (ours - unguided).abs().max() > 0.05 * unguided.abs().max()  # the hints did guide the second round


def test_a_second_freeinit_node_replaces_the_first_and_the_input_model_keeps_none(animated):
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    twice = free_init(free_init(animated, 3), 2)
    (wrapper,) = twice.get_wrappers(outer, KEY)
    assert wrapper.__self__.iterations == 2
    assert free_init(twice, 1).get_wrappers(outer, KEY) == [] and animated.get_wrappers(outer, KEY) == []


def test_video_to_video_is_refused_with_what_to_do(animated):
    import nodes
    model = free_init(animated, 2)
    video = {"samples": torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    with pytest.raises(AnimateDiffError, match="give it an empty latent"):
        nodes.common_ksampler(model, 1, 2, 7.5, "euler", "normal", conditioning(11), conditioning(12), video)
    with pytest.raises(AnimateDiffError, match="no noise mask"):
        nodes.common_ksampler(model, 1, 2, 7.5, "euler", "normal", conditioning(11), conditioning(12),
                              {**latent(8), "noise_mask": torch.ones(8, 1, 8, 8)})
    with pytest.raises(AnimateDiffError, match="needs every round to end with a clean video.*stops at sigma"):
        nodes.common_ksampler(model, 1, 4, 7.5, "euler", "normal", conditioning(11), conditioning(12), latent(8),
                              start_step=0, last_step=2, force_full_denoise=False)  # KSamplerAdvanced's leftover
    with pytest.raises(ValueError, match="cutoffs must be positive"):
        free_init(animated, 2, d_t=0.0)
    assert np.isfinite(ksample(model, frames=8).numpy()).all()  # and the model still samples afterwards
