"""The motion module inside a real in-process ComfyUI: placement, ejection, base model untouched."""
import copy

import comfy.lora
import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.sd
import comfy.utils
import pytest
import safetensors.torch
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, Upsample

from comfy_env import conditioning, ksample, probed, tiny_sd15, unet_state
from animatediff.errors import AnimateDiffError
from animatediff.motion_module import read_state_dict
from animatediff.patching.context import apply_context_windows
from animatediff.patching.motion import MotionLayer, apply_motion_model, load_motion_model_file

EXPECTED_PLACES = {  # motion key -> (blocks, index); FORMATS.md §1
    **{f"down_blocks.{i}.motion_modules.{j}": ("input_blocks", 3 * i + j + 1) for i in range(4) for j in range(2)},
    **{f"up_blocks.{i}.motion_modules.{j}": ("output_blocks", 3 * i + j) for i in range(4) for j in range(3)},
}


def motion_layers(unet):
    """(blocks, index, position in block, motion key) of every MotionLayer in the UNet now."""
    found = []
    for name in ("input_blocks", "middle_block", "output_blocks"):
        blocks = [unet.middle_block] if name == "middle_block" else getattr(unet, name)
        for index, block in enumerate(blocks):
            for position, layer in enumerate(block):
                if isinstance(layer, MotionLayer):
                    found.append((name, index, position, layer.name))
    return found


def probe(model, record):
    """A clone whose every UNet call records what the UNet looks like at that moment."""
    def look(unet, x, *args, **kwargs):
        record.append({"layers": motion_layers(unet), "middle": [type(m) for m in unet.middle_block],
                       "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())})
    return probed(model, look)


@pytest.mark.parametrize("version,count", [("v1", 20), ("v2", 21), ("v3", 20)])
def test_modules_sit_at_the_right_blocks_while_sampling(base, motion, version, count):
    record = []
    ksample(probe(apply_motion_model(base, motion[version], 1.0, "autoselect"), record), steps=1)
    layers = record[0]["layers"]
    assert len(layers) == count and all(r["layers"] == layers for r in record)
    unet = base.model.diffusion_model
    for blocks, index, position, key in layers:
        if blocks == "middle_block":
            assert key == "mid_block.motion_modules.0"
            assert record[0]["middle"] == [ResBlock, SpatialTransformer, MotionLayer, ResBlock]
            continue
        assert EXPECTED_PLACES[key] == (blocks, index)
        block = list(getattr(unet, blocks)[index])  # now without the motion layer
        before, after = block[:position], block[position:]
        assert isinstance(before[0], ResBlock) and all(isinstance(m, Upsample) for m in after)
        assert len(before) == 1 + any(isinstance(m, SpatialTransformer) for m in block)
    channels = {key: motion[version].model.get_submodule(key).temporal_transformer.proj_in.in_features
                for *_, key in layers}
    for blocks, index, _, key in layers:
        if blocks != "middle_block":
            resnet = getattr(unet, blocks)[index][0]
            assert resnet.out_channels == channels[key]


def test_base_model_is_untouched_by_animated_runs(base, motion, fixtures_dir):
    weights = unet_state(base)
    before = ksample(base, seed=3)
    for version in ("v1", "v2", "v3", "v1"):
        ksample(apply_motion_model(base, motion[version], 1.3, "autoselect"), steps=1)
    record = []
    after = ksample(probe(base, record), seed=3)
    assert torch.equal(before, after)
    assert all(r["layers"] == [] and r["hooks"] == 0 for r in record)
    comfy.model_management.unload_all_models()
    assert motion_layers(base.model.diffusion_model) == []
    assert all(torch.equal(weights[k], v) for k, v in unet_state(base).items())
    on_disk = read_state_dict(fixtures_dir / "small" / "mm_v2.safetensors")
    assert all(torch.equal(on_disk[k], v) for k, v in motion["v2"].model.state_dict().items())


def test_the_unets_names_stay_while_an_animated_model_is_loaded(base, motion, tmp_path):
    """ComfyUI keeps the last sampled model loaded, with its motion layers in the UNet it shares with the
    checkpoint's model: a LoRA or a merge through another patcher, or a save, reads the UNet's names meanwhile."""
    unet = base.model.diffusion_model
    names, lora_keys = list(unet.state_dict()), comfy.lora.model_lora_keys_unet(base.model, {})
    for version in ("v1", "v2", "v3"):
        animated = apply_motion_model(base, motion[version], 1.0, "autoselect")  # kept, as in ComfyUI's node cache
        ksample(animated, steps=1)
        assert motion_layers(unet)  # still in
        assert list(unet.state_dict()) == names
        assert comfy.lora.model_lora_keys_unet(base.model, {}) == lora_keys
    weights = unet_state(base)
    comfy.sd.save_checkpoint(str(tmp_path / "animated.safetensors"), apply_motion_model(base, motion["v2"], 1.0,
                                                                                          "autoselect"))
    saved = comfy.utils.load_torch_file(str(tmp_path / "animated.safetensors"))
    unet_part = {k.removeprefix("model.diffusion_model."): v for k, v in saved.items()
                 if k.startswith("model.diffusion_model.")}
    assert sorted(unet_part) == sorted(names) and all(torch.equal(unet_part[k], weights[k]) for k in names)
    comfy.model_management.unload_all_models()


def test_animation_differs_from_the_image_model_and_between_versions(base, motion):
    plain = ksample(base, seed=5)
    out = {v: ksample(apply_motion_model(base, motion[v], 1.0, "use_existing"), seed=5) for v in motion}
    assert all((o - plain).abs().max() > 1e-3 for o in out.values())
    assert (out["v2"] - out["v3"]).abs().max() > 1e-3


def test_cond_and_uncond_in_any_order_or_alone_give_the_same_frames(base, motion):
    model = apply_motion_model(base, motion["v1"], 1.0, "autoselect")
    comfy.model_management.load_models_gpu([model])
    frames = 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * frames, 4, 8, 8, generator=g)
    t = torch.full((2 * frames,), 500.0)
    cond, uncond = conditioning(1)[0][0], conditioning(2)[0][0]

    def run(xs, contexts, order):
        opts = {**model.model_options["transformer_options"], "cond_or_uncond": order}
        with torch.no_grad():
            return model.model.apply_model(xs, t[: xs.shape[0]], c_crossattn=contexts, transformer_options=opts)
    c_ctx, u_ctx = cond.expand(frames, -1, -1), uncond.expand(frames, -1, -1)
    together = run(x, torch.cat([c_ctx, u_ctx]), [0, 1])
    swapped = run(torch.cat([x[frames:], x[:frames]]), torch.cat([u_ctx, c_ctx]), [1, 0])
    alone_c = run(x[:frames], c_ctx, [0])
    alone_u = run(x[frames:], u_ctx, [1])
    scale = together.abs().max()  # random weights give large outputs; batching only moves rounding
    assert (together[:frames] - swapped[frames:]).abs().max() <= 1e-6 * scale
    assert (together[frames:] - swapped[:frames]).abs().max() <= 1e-6 * scale
    assert (together[:frames] - alone_c).abs().max() <= 1e-5 * scale
    assert (together[frames:] - alone_u).abs().max() <= 1e-5 * scale
    # and frames really interact: one video of 16 is not two videos of 8
    as_one = run(x, torch.cat([c_ctx, c_ctx]), [0])
    assert (as_one[:frames] - together[:frames]).abs().max() > 1e-3 * scale


def test_v1_normalises_resnets_jointly_over_frames_and_nothing_else(base, motion):
    """Reads what enters a norm's Sequential and what leaves the norm (= what enters the SiLU after it)."""
    seen = {}

    def capture(name):
        def hook(module, args):
            seen.setdefault(name, args[0].detach().clone())
        return hook
    unet = base.model.diffusion_model
    resnet, spatial = unet.input_blocks[1][0], unet.input_blocks[1][1]
    watched = {"resnet_in": resnet.in_layers, "resnet_normed": resnet.in_layers[1], "out_in": unet.out,
               "out_normed": unet.out[1], "spatial_in": spatial.norm, "spatial_normed": spatial.proj_in}
    handles = [m.register_forward_pre_hook(capture(n)) for n, m in watched.items()]
    try:
        frames = 16
        ksample(apply_motion_model(base, motion["v1"], 1.0, "autoselect"), frames=frames, steps=1, cfg=1.0)
    finally:
        for h in handles:
            h.remove()
    for name, norm in (("resnet", resnet.in_layers[0]), ("out", unet.out[0])):
        x = seen[name + "_in"]
        bf, c, h, w = x.shape
        video = x.reshape(bf // frames, frames, 32, c // 32, h, w)
        mean = video.mean(dim=(1, 3, 4, 5), keepdim=True)  # one mean per (video, group), over all frames
        var = video.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
        joint = ((video - mean) / (var + norm.eps).sqrt()).reshape(bf, c, h, w)
        expected = joint * norm.weight[:, None, None] + norm.bias[:, None, None]
        per_frame = torch.nn.functional.group_norm(x, 32, norm.weight, norm.bias, norm.eps)
        assert (seen[name + "_normed"] - expected).abs().max() <= 1e-4, name
        assert (seen[name + "_normed"] - per_frame).abs().max() > 1e-2, name
    x, norm = seen["spatial_in"], spatial.norm
    per_frame = torch.nn.functional.group_norm(x, 32, norm.weight, norm.bias, norm.eps)
    assert (seen["spatial_normed"] - per_frame).abs().max() <= 1e-5


def hook_count(patcher) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in patcher.model.diffusion_model.modules())


def test_a_clone_with_a_unet_of_its_own_keeps_its_hooks_when_another_ejects(base, motion):
    """Clones share their injections' objects. Newer ComfyUIs give some clones a UNet of their own (the
    non-dynamic delegate, when conditioning carries hooks): ejecting one UNet leaves the other's frame-wide norms."""
    comfy.model_management.unload_all_models()
    animated = apply_motion_model(base, motion["v1"], 1.0, "autoselect")
    delegate = tiny_sd15(seed=1)
    delegate.set_injections("animatediff", animated.injections["animatediff"])  # shared, as a clone's are
    animated.inject_model()
    delegate.inject_model()
    hooks = hook_count(animated)
    # a pre- and a post-hook on each joint norm: two in each of the 22 resnets, and the output's
    assert hooks == 2 * (2 * 22 + 1) and hook_count(delegate) == hooks
    animated.eject_model()
    assert hook_count(animated) == 0 and not motion_layers(base.model.diffusion_model)
    assert hook_count(delegate) == hooks and len(motion_layers(delegate.model.diffusion_model)) == 20
    delegate.eject_model()
    assert hook_count(delegate) == 0 and not motion_layers(delegate.model.diffusion_model)


def test_copies_on_other_gpus_are_refused_before_sampling(base, motion):
    """Newer ComfyUIs' MultiGPU CFG Split node adds the model's copies for other GPUs as its "multigpu"
    additional models; here a plain clone stands in for such a copy."""
    animated = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    animated.set_additional_models("multigpu", [base.clone()])
    with pytest.raises(AnimateDiffError, match=r"copies on other GPUs \(ComfyUI's MultiGPU CFG Split node\).*"
                                               "Remove the MultiGPU node"):
        ksample(animated, steps=1)
    assert not motion_layers(base.model.diffusion_model)


def test_too_many_frames_says_to_add_context_windows(base, motion):
    with pytest.raises(AnimateDiffError, match=r"25 frames > 24 this motion module supports: add AnimateDiff_ContextWindows"):
        ksample(apply_motion_model(base, motion["v1"], 1.0, "autoselect"), frames=25, steps=1)
    ksample(base, steps=1)  # the next run works, and the base model is clean again
    assert motion_layers(base.model.diffusion_model) == []


def test_a_model_that_is_not_sd15_is_refused(motion):
    wider = tiny_sd15(model_channels=64)
    with pytest.raises(AnimateDiffError, match="mm_v2.safetensors is for SD1.5 models.*input_blocks has 64 channels"):
        apply_motion_model(wider, motion["v2"], 1.0, "autoselect")
    sd2_like = tiny_sd15(context_dim=1024)
    with pytest.raises(AnimateDiffError, match="CLIP-L's 768"):
        apply_motion_model(sd2_like, motion["v2"], 1.0, "autoselect")
    three_levels = tiny_sd15(channel_mult=[1, 2, 4], num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 1, 1, 1, 1],
                             transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(AnimateDiffError, match="9 input blocks, SD1.5 has 12"):
        apply_motion_model(three_levels, motion["v2"], 1.0, "autoselect")


def test_autoselect_uses_the_linear_schedule_the_modules_were_trained_with(base, motion):
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    expected = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    patched = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    ours = patched.get_model_object("model_sampling").sigmas.double()
    assert torch.allclose(ours, expected.to(ours.dtype), rtol=1e-5)
    sd_default = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    sd_sigmas = ((1 - torch.cumprod(1 - sd_default, 0)) / torch.cumprod(1 - sd_default, 0)) ** 0.5
    assert torch.allclose(base.get_model_object("model_sampling").sigmas.double(), sd_sigmas.float().double(), rtol=1e-5)
    kept = apply_motion_model(base, motion["v2"], 1.0, "use_existing")
    assert kept.get_model_object("model_sampling") is base.get_model_object("model_sampling")


def test_a_v_prediction_zero_snr_model_keeps_both_on_the_motion_modules_schedule(base, motion):
    """The core ModelSamplingDiscrete node before Apply Motion Module: its prediction type and its zero terminal
    SNR (Lin et al. 2023: sqrt(alphas_cumprod) shifted to end at 0, scaled to keep its start) stay, on the
    linear betas."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    (v_zsnr,) = ModelSamplingDiscrete().patch(base, "v_prediction", True)
    ours = apply_motion_model(v_zsnr, motion["v2"], 1.0, "autoselect").get_model_object("model_sampling")

    root = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), dim=0).sqrt()
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    expected = ((1 - root ** 2) / root ** 2) ** 0.5
    assert isinstance(ours, comfy.model_sampling.V_PREDICTION) and ours.zsnr
    assert torch.allclose(ours.sigmas[:-1].double(), expected[:-1].to(ours.sigmas.dtype).double(), rtol=1e-4)
    assert ours.sigmas[-1] > 1000  # the terminal sigma of zero SNR, kept finite by ComfyUI


def test_a_continuous_time_model_keeps_its_schedule_only_with_use_existing(base, motion):
    from comfy_extras.nodes_model_advanced import ModelSamplingContinuousEDM
    (edm,) = ModelSamplingContinuousEDM().patch(base, "eps", 80.0, 0.002)
    with pytest.raises(AnimateDiffError, match="only a discrete-time model has.*ModelSamplingContinuousEDM"):
        apply_motion_model(edm, motion["v2"], 1.0, "autoselect")
    kept = apply_motion_model(edm, motion["v2"], 1.0, "use_existing")
    assert kept.get_model_object("model_sampling") is edm.get_model_object("model_sampling")


def test_a_model_sampling_node_after_apply_is_refused_before_it_washes_the_animation_out(base, motion):
    """Placed after Apply Motion Module, the core ModelSamplingDiscrete would bring back SD1.5's betas; placed
    before it (the test above), or with use_existing, it is what the user asked for."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    (after,) = ModelSamplingDiscrete().patch(apply_motion_model(base, motion["v2"], 1.0, "autoselect"), "lcm", False)
    with pytest.raises(AnimateDiffError, match=r"replaced the noise schedule set there \(beta_schedule=autoselect\)"):
        ksample(after, frames=8, steps=1)
    (kept,) = ModelSamplingDiscrete().patch(apply_motion_model(base, motion["v2"], 1.0, "use_existing"), "lcm", False)
    (before,) = ModelSamplingDiscrete().patch(base, "lcm", False)
    assert torch.equal(ksample(kept, frames=8, steps=1, sampler="lcm"),
                       ksample(apply_motion_model(before, motion["v2"], 1.0, "use_existing"), frames=8, steps=1,
                               sampler="lcm"))
    windows = apply_context_windows(apply_motion_model(base, motion["v2"], 1.0, "autoselect"), 8, 2,
                                    "uniform_standard", "pyramid")
    ksample(windows, frames=8, steps=1)  # nodes that keep the schedule pass, and so does a copy of it
    copied = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    copied.add_object_patch("model_sampling", copy.deepcopy(copied.get_model_object("model_sampling")))
    ksample(copied, frames=8, steps=1)


def test_under_an_attention_override_that_ignores_masks_frames_stay_in_their_own_sequences(base, motion, monkeypatch):
    """SageAttention, for one, ignores attention masks. With an override in transformer_options, the rows of
    temporal attention hold one sequence each instead of several kept apart by a mask, as on a GPU."""
    from animatediff.motion_module import layers, sequences
    monkeypatch.setattr(layers, "sequences_for", sequences.PackedSequences)  # a GPU's layout, on this CPU
    model = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    expected = ksample(model, frames=8)

    temporal_masks = []

    def ignore_masks(attention, *args, mask=None, **kwargs):
        if kwargs.get("skip_reshape"):  # the motion module's calls (the image model's reshape themselves)
            temporal_masks.append(mask)
        return attention(*args, **kwargs)
    overridden = model.clone()
    overridden.model_options["transformer_options"]["optimized_attention_override"] = ignore_masks
    got = ksample(overridden, frames=8)

    assert temporal_masks and all(mask is None for mask in temporal_masks)
    # the same math in another layout: float32 rounding of outputs that reach ~900 on this random model
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.fixture(scope="module")
def animatelcm(fixtures_dir):
    return load_motion_model_file(fixtures_dir / "small" / "mm_animatelcm.safetensors", "AnimateLCM_sd15_t2v.safetensors")


def test_autoselect_samples_animatelcm_as_it_was_distilled(base, animatelcm):
    """AnimateLCM's inference config: the linear betas, LCM over 100 of the 1000 timesteps (9, 19, ..., 999),
    and LCM's boundary condition (c_skip, c_out at 10× the timestep, sigma_data 0.5) on the eps prediction."""
    ours = apply_motion_model(base, animatelcm, 1.0, "autoselect").get_model_object("model_sampling")
    alphas_cumprod = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), dim=0)
    timesteps = torch.arange(9, 1000, 10)
    expected = ((1 - alphas_cumprod[timesteps]) / alphas_cumprod[timesteps]) ** 0.5
    assert ours.sigmas.shape == (100,) and torch.allclose(ours.sigmas.double(), expected, rtol=1e-5)
    assert ours.timestep(ours.sigmas[[0, 1, -1]]).tolist() == [9, 19, 999]

    x, eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    for index in (0, 5, 99):
        sigma, t = ours.sigmas[index:index + 1], float(timesteps[index] * 10)
        c_skip, c_out = 0.25 / (t ** 2 + 0.25), t / (t ** 2 + 0.25) ** 0.5
        expected = c_out * (x - eps * sigma) + c_skip * x
        assert torch.allclose(ours.calculate_denoised(sigma, eps[None], x[None])[0], expected, atol=1e-6)

    # any other choice leaves the prediction to the model, as for the other modules
    linear = apply_motion_model(base, animatelcm, 1.0, "animatediff_linear").get_model_object("model_sampling")
    assert type(linear) is type(base.get_model_object("model_sampling")) and linear.sigmas.shape == (1000,)


def test_beta_schedule_animatelcm_gives_any_module_animatelcms_sampling(base, animatelcm, motion):
    """For AnimateLCM's diffusers-format file, which holds tables and so loads as v2: the same schedule, and
    the same denoised prediction, as autoselect gives the original file."""
    lcm = apply_motion_model(base, animatelcm, 1.0, "autoselect").get_model_object("model_sampling")
    for loaded in (motion["v2"], animatelcm):
        chosen = apply_motion_model(base, loaded, 1.0, "animatelcm").get_model_object("model_sampling")
        assert type(chosen) is type(lcm) and torch.equal(chosen.sigmas, lcm.sigmas)
        x, eps = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1)).unbind(0)
        sigma = lcm.sigmas[40:41]
        assert torch.equal(chosen.calculate_denoised(sigma, eps, x), lcm.calculate_denoised(sigma, eps, x))


def test_a_later_apply_motion_module_starts_from_the_schedule_the_earlier_one_replaced(base, animatelcm, motion):
    """Not from AnimateLCM's LCM sampling, which a v2 module was not made for; a prediction type set before
    the first is still kept."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    for start in (base, ModelSamplingDiscrete().patch(base, "v_prediction", False)[0]):
        direct = apply_motion_model(start, motion["v2"], 1.0, "autoselect").get_model_object("model_sampling")
        chained = apply_motion_model(apply_motion_model(start, animatelcm, 1.0, "autoselect"), motion["v2"], 1.0,
                                     "autoselect").get_model_object("model_sampling")
        assert type(chained) is type(direct) and torch.equal(chained.sigmas, direct.sigmas)
        assert type(direct) is type(start.get_model_object("model_sampling"))


def test_a_second_apply_motion_module_replaces_the_first_and_says_so(base, motion, caplog):
    from animatediff.nodes.motion import ApplyMotionModule
    (alone,) = ApplyMotionModule().apply(base, motion["v2"])
    assert "replaces the motion module" not in caplog.text
    (chained,) = ApplyMotionModule().apply(ApplyMotionModule().apply(base, motion["v1"], motion_scale=1.3)[0],
                                           motion["v2"])
    assert "Apply Motion Module (mm_v2.safetensors) replaces the motion module an earlier" in caplog.text
    assert torch.equal(ksample(chained, steps=1), ksample(alone, steps=1))
    comfy.model_management.unload_all_models()
    assert not motion_layers(base.model.diffusion_model)


def test_animatelcm_animates_64_frames_without_windows_as_a_file_with_the_tables_would(base, animatelcm, tmp_path):
    """The tables AnimateLCM's files leave out are built from the formula: a copy of the file that holds them
    samples the same 40 frames; past 64 frames the message asks for context windows."""
    from random_weights import sinusoidal_pe
    sd = {k: v for k, v in animatelcm.model.state_dict().items() if "pos_encoder" not in k}
    tables = {k: sinusoidal_pe(64, v.shape[-1]) for k, v in animatelcm.model.state_dict().items() if "pos_encoder" in k}
    safetensors.torch.save_file(sd | tables, tmp_path / "with_tables.safetensors")
    with_tables = load_motion_model_file(tmp_path / "with_tables.safetensors", "with_tables.safetensors")
    assert with_tables.spec.version == "v2" and with_tables.spec.max_frames == 64

    lcm = apply_motion_model(base, animatelcm, 1.0, "autoselect")
    same_sampling = apply_motion_model(base, with_tables, 1.0, "use_existing")
    same_sampling.add_object_patch("model_sampling", lcm.get_model_object("model_sampling"))
    ours, expected, image = (ksample(m, frames=40, steps=2, sampler="lcm", cfg=1.5) for m in (lcm, same_sampling, base))
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert (ours - image).abs().max() > 0.05 * image.abs().max()  # and the module does move the frames
    with pytest.raises(AnimateDiffError, match=r"65 frames > 64 this motion module supports"):
        ksample(lcm, frames=65, steps=1)
