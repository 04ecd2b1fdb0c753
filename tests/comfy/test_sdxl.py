"""The SDXL motion modules (mm_sdxl_v10_beta's layout, and HotshotXL's temporal layers) inside a real in-process
ComfyUI: a tiny SDXL-shaped UNet (comfy.supported_models.SDXL with small widths) and the small modules from
scripts/make_fixtures.py.

Every module's output in real sampling against the original math (tests/reference.py), its place in SDXL's
blocks, HotshotXL's frame-wide GroupNorms, each module's betas, context windows with per-frame prompts (SDXL's
pooled text `y` sliced per window), training, the families refused both ways, and the base model left
bit-identical."""
import re
from types import SimpleNamespace

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models
import folder_paths
import pytest
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, Upsample

import reference
from comfy_env import (TINY_SDXL, conditioning, ksample, probed, sdxl_conditioning, tiny_sd15, tiny_sdxl, tiny_vae,
                       unet_state)
from animatediff.errors import AnimateDiffError, ModelFileError
from animatediff.lora.training import draws
from animatediff.motion_module import read_state_dict
from animatediff.nodes.lora import MotionLoRA
from animatediff.nodes.motion import ApplyMotionModule
from animatediff.nodes.sparse_ctrl import ApplySparseCtrl, LoadSparseCtrl
from animatediff.patching.context import apply_context_windows
from animatediff.patching.lora import apply_domain_adapter
from animatediff.patching.motion import (MotionInjection, MotionLayer, apply_motion_model, check_unet_fits,
                                         load_motion_model_file)
from animatediff.patching.training import encode_clips, pooled_text_of, train_motion_lora

FILE = "mm_sdxl.safetensors"
HOTSHOT_FILE = "hsxl_temporal_layers.safetensors"
PLACES = {  # FORMATS.md §1: SDXL has 3 levels of 2 down and 3 up modules, and no mid-block module
    **{f"down_blocks.{i}.motion_modules.{j}": ("input_blocks", 3 * i + j + 1) for i in range(3) for j in range(2)},
    **{f"up_blocks.{i}.motion_modules.{j}": ("output_blocks", 3 * i + j) for i in range(3) for j in range(3)},
}


@pytest.fixture(scope="module")
def xl():
    return tiny_sdxl()


@pytest.fixture(scope="module")
def motion_xl(fixtures_dir):
    return load_motion_model_file(fixtures_dir / "small" / FILE, FILE)


@pytest.fixture(scope="module")
def hotshot(fixtures_dir):
    return load_motion_model_file(fixtures_dir / "small" / HOTSHOT_FILE, HOTSHOT_FILE)


@pytest.fixture(scope="module")
def weights(fixtures_dir):
    return read_state_dict(fixtures_dir / "small" / FILE)


def original_names(hotshot_weights):
    """HotshotXL's names as the original's: `temporal_attentions.j.` → `motion_modules.j.temporal_transformer.`."""
    return {re.sub(r"^(\w+\.\d+)\.temporal_attentions\.(\d+)\.", r"\1.motion_modules.\2.temporal_transformer.", k)
            .replace("positional_encoding", "pe"): v for k, v in hotshot_weights.items()}


def sample(model, frames=16, steps=1, positive=None, negative=None):
    return ksample(model, frames=frames, steps=steps, positive=positive or sdxl_conditioning(11, frames),
                   negative=negative or sdxl_conditioning(12))


def recorded(model, motion, record):
    """A clone whose every UNet call records each module's input and output, where each motion layer sits, the
    call's `y` and cond order, and its window."""
    modules = {name: motion.model.get_submodule(name) for name in PLACES}

    def call(unet, x, timesteps, context, y, *args, **kwargs):
        options = args[1] if len(args) > 1 else kwargs["transformer_options"]
        entry = {"window": (options.get("ad_params") or {}).get("sub_idxs"), "order": list(options["cond_or_uncond"]),
                 "y": y, "context": context, "layers": [
                     (blocks, index, position, layer.name)
                     for blocks, group in (("input_blocks", unet.input_blocks), ("output_blocks", unet.output_blocks),
                                           ("middle_block", [unet.middle_block]))
                     for index, block in enumerate(group) for position, layer in enumerate(block)
                     if isinstance(layer, MotionLayer)]}
        record.append(entry)
        return [m.register_forward_hook(lambda m, a, out, name=name: entry.update({name: (a[0], out)}) and None)
                for name, m in modules.items()]
    return probed(model, call)


@pytest.mark.parametrize("family", ["AnimateDiff", "HotshotXL"])
def test_every_module_sits_in_its_sdxl_block_and_computes_the_original_math(xl, motion_xl, hotshot, weights,
                                                                            fixtures_dir, family):
    if family == "HotshotXL":
        motion_xl, weights = hotshot, original_names(read_state_dict(fixtures_dir / "small" / HOTSHOT_FILE))
    record = []
    sample(recorded(apply_motion_model(xl, motion_xl, 1.0, "autoselect"), motion_xl, record))
    (r,) = record
    assert sorted(name for *_, name in r["layers"]) == sorted(PLACES)
    unet = xl.model.diffusion_model
    for blocks, index, position, name in r["layers"]:
        assert PLACES[name] == (blocks, index)
        block = list(getattr(unet, blocks)[index])  # now without the motion layer
        before, after = block[:position], block[position:]
        # after the resnet and, from the second level on, its spatial transformer; before any upsampler
        assert isinstance(before[0], ResBlock) and all(isinstance(m, Upsample) for m in after), name
        assert len(before) == 1 + any(isinstance(m, SpatialTransformer) for m in block), name
        assert before[0].out_channels == motion_xl.model.get_submodule(name).channels
    for name in PLACES:
        x, out = r[name]
        expected = reference.motion_module(weights, name, x, 16)
        assert (out - expected).abs().max() <= 2e-5 * expected.abs().max(), name
        assert (out - x).abs().max() > 1e-2 * x.abs().max(), name  # the module does change the frames


# SDXL base 1.0's UNet as ComfyUI's model detection reads it from the checkpoint
FULL_SDXL = {**TINY_SDXL, "model_channels": 320, "transformer_depth": [0, 0, 2, 2, 10, 10],
             "transformer_depth_middle": 10, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "num_heads": -1, "num_head_channels": 64}


@pytest.mark.slow
def test_the_full_size_sdxl_unet_takes_the_full_size_module_at_formats_places(fixtures_dir):
    """SDXL base's real architecture (built on the meta device: nothing allocated) and the full-size fixture:
    the module fits, and its 15 layers sit at FORMATS.md's blocks, after each resnet and its transformer."""
    config = comfy.supported_models.SDXL(FULL_SDXL)
    model = config.get_model({}, device=torch.device("meta"))
    unet = model.diffusion_model
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base 1.0's UNet
    motion = load_motion_model_file(fixtures_dir / FILE, FILE)
    check_unet_fits(unet, motion.model, "SDXL", FILE)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    injection = MotionInjection(motion.model)
    injection.inject(patcher)
    try:
        places = {layer.name: (blocks, index, position, [type(m) for m in block])
                  for blocks in ("input_blocks", "output_blocks") for index, block in enumerate(getattr(unet, blocks))
                  for position, layer in enumerate(block) if isinstance(layer, MotionLayer)}
    finally:
        injection.eject(patcher)
    assert {name: place[:2] for name, place in places.items()} == PLACES
    for name, (_, _, position, kinds) in places.items():
        assert kinds[:position] in ([ResBlock], [ResBlock, SpatialTransformer]), name
        assert all(kind is Upsample for kind in kinds[position + 1:]), name
    assert not any(isinstance(m, MotionLayer) for m in unet.modules())


def test_hotshotxl_normalises_the_resnets_over_all_frames_and_animatediff_sdxl_per_frame(xl, motion_xl, hotshot):
    """HotshotXL's UNet normalises its 5-D video in the resnets and the output norm (as v1); its spatial
    transformers, and AnimateDiff SDXL's whole UNet, normalise each frame."""
    unet = xl.model.diffusion_model
    resnet, spatial = unet.input_blocks[4][0], unet.input_blocks[4][1]  # SDXL's first level has no attention
    watched = {"resnet_in": resnet.in_layers, "resnet_normed": resnet.in_layers[1], "out_in": unet.out,
               "out_normed": unet.out[1], "spatial_in": spatial.norm, "spatial_normed": spatial.proj_in}

    def normed(module):
        seen = {}

        def capture(name):
            def hook(layer, args):
                seen.setdefault(name, args[0].detach().clone())
            return hook
        handles = [m.register_forward_pre_hook(capture(n)) for n, m in watched.items()]
        try:
            sample(apply_motion_model(xl, module, 1.0, "autoselect"), frames=frames)
        finally:
            for handle in handles:
                handle.remove()
        return seen

    def group_norms(seen, name, norm):
        """What the norm gives over all frames of each video, and over each frame alone."""
        x = seen[name + "_in"]
        bf, c, h, w = x.shape
        video = x.reshape(bf // frames, frames, 32, c // 32, h, w)
        mean = video.mean(dim=(1, 3, 4, 5), keepdim=True)
        var = video.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
        joint = ((video - mean) / (var + norm.eps).sqrt()).reshape(bf, c, h, w)
        joint = joint * norm.weight[:, None, None] + norm.bias[:, None, None]
        return joint, torch.nn.functional.group_norm(x, 32, norm.weight, norm.bias, norm.eps)

    frames = 16
    for module, frame_wide in ((hotshot, True), (motion_xl, False)):
        seen = normed(module)
        for name, norm in (("resnet", resnet.in_layers[0]), ("out", unet.out[0])):
            joint, per_frame = group_norms(seen, name, norm)
            expected, other = (joint, per_frame) if frame_wide else (per_frame, joint)
            assert (seen[name + "_normed"] - expected).abs().max() <= 1e-4, (name, frame_wide)
            assert (seen[name + "_normed"] - other).abs().max() > 1e-2, (name, frame_wide)
        _, per_frame = group_norms(seen, "spatial", spatial.norm)
        tokens = per_frame.flatten(2).transpose(1, 2)  # SDXL's linear proj_in reads (h w) c tokens
        assert (seen["spatial_normed"] - tokens).abs().max() <= 1e-5


def test_sdxl_animation_leaves_the_base_model_bit_identical_and_differs_from_it(xl, motion_xl):
    weights = unet_state(xl)
    before = sample(xl, steps=2)
    animated = sample(apply_motion_model(xl, motion_xl, 1.0, "use_existing"), steps=2)
    after = sample(xl, steps=2)
    assert torch.equal(before, after)
    assert all(torch.equal(v, unet_state(xl)[k]) for k, v in weights.items())
    assert (animated - before).abs().max() > 1e-2 * before.abs().max()


def test_autoselect_samples_with_animatediff_sdxls_betas_and_hotshotxls(xl, motion_xl, hotshot):
    """AnimateDiff SDXL's inference config: scaled linear betas, 0.00085 to 0.020 (SDXL's own end at 0.012).
    HotshotXL was trained on SDXL's own."""
    betas = torch.linspace(0.00085 ** 0.5, 0.020 ** 0.5, 1000, dtype=torch.float64) ** 2
    cumulative = torch.cumprod(1 - betas, 0)
    expected = ((1 - cumulative) / cumulative) ** 0.5
    for schedule in ("autoselect", "animatediff_sdxl"):
        ours = apply_motion_model(xl, motion_xl, 1.0, schedule).get_model_object("model_sampling").sigmas.double()
        assert torch.allclose(ours, expected, rtol=1e-5), schedule
    sdxl_own = xl.get_model_object("model_sampling").sigmas.double()
    assert not torch.allclose(sdxl_own, expected, rtol=1e-2)
    # also on a model whose betas something else changed, HotshotXL's autoselect sets SDXL's own
    other = xl.clone()
    linear = type(xl.get_model_object("model_sampling"))(SimpleNamespace(sampling_settings={
        "beta_schedule": "sqrt_linear"}))
    other.add_object_patch("model_sampling", linear)
    assert not torch.allclose(linear.sigmas.double(), sdxl_own, rtol=1e-2)
    for model in (xl, other):
        hotshot_sigmas = apply_motion_model(model, hotshot, 1.0, "autoselect").get_model_object("model_sampling")
        assert torch.allclose(hotshot_sigmas.sigmas.double(), sdxl_own, rtol=1e-6)


def test_context_windows_give_each_window_its_frames_prompts_and_pooled_text(xl, motion_xl):
    """With a prompt per frame (as Prompt Schedule makes it), SDXL's `y` (pooled text and size) is per frame too:
    each window's call gets its own frames' rows of both."""
    record, frames = [], 24
    positive = sdxl_conditioning(21, frames)
    model = apply_context_windows(apply_motion_model(xl, motion_xl, 1.0, "autoselect"), 16, 4, "uniform_standard",
                                  "pyramid")
    sample(recorded(model, motion_xl, record), frames=frames, positive=positive)
    assert [r["window"] for r in record] == [list(range(16)), list(range(8, 24))]
    tokens, pooled = positive[0][0], positive[0][1]["pooled_output"]
    for r in record:
        window = r["window"]
        cond = r["order"].index(0)  # the positive chunk of the batch
        rows = slice(cond * len(window), (cond + 1) * len(window))
        expected_y = xl.model.encode_adm(pooled_output=pooled[window], width=64, height=64)
        assert torch.equal(r["context"][rows], tokens[window])
        assert torch.allclose(r["y"][rows], expected_y, atol=1e-6)


def test_effect_0_an_empty_range_and_a_black_mask_leave_sdxls_frames_its_own(xl, motion_xl):
    plain = sample(xl, steps=2)
    for inputs in ({"effect": 0.0}, {"start_percent": 1.0, "end_percent": 1.0}, {"effect_mask": torch.zeros(64, 64)}):
        (model,) = ApplyMotionModule().apply(xl, motion_xl, beta_schedule="use_existing", **inputs)
        assert torch.equal(sample(model, steps=2), plain), inputs
    (model,) = ApplyMotionModule().apply(xl, motion_xl, beta_schedule="use_existing", effect_mask=torch.ones(64, 64))
    assert not torch.equal(sample(model, steps=2), plain)


def test_a_module_and_a_model_of_different_families_are_refused_both_ways(xl, motion_xl, motion):
    with pytest.raises(AnimateDiffError, match=r"mm_v2.safetensors is for SD1.5 models, but the model is SDXL \(its "
                       r"UNet has 9 input blocks, SD1.5 has 12\).*or for SDXL models an SDXL motion module"):
        apply_motion_model(xl, motion["v2"], 1.0, "autoselect")
    with pytest.raises(AnimateDiffError, match=r"mm_sdxl.safetensors is for SDXL models, but the model is SD15 \(its "
                       r"UNet has 12 input blocks, SDXL has 9\).*or for SD1.5 models an SD1.5 motion module"):
        apply_motion_model(tiny_sd15(), motion_xl, 1.0, "autoselect")
    with pytest.raises(AnimateDiffError, match=r"text conditioning is not SDXL's 2048"):
        apply_motion_model(tiny_sdxl(context_dim=768), motion_xl, 1.0, "autoselect")


def test_too_many_frames_for_the_sdxl_module_says_to_add_context_windows(xl, motion_xl):
    with pytest.raises(AnimateDiffError, match=r"33 frames > 32 this motion module supports"):
        sample(apply_motion_model(xl, motion_xl, 1.0, "autoselect"), frames=33)
    assert not any(isinstance(m, MotionLayer) for m in xl.model.diffusion_model.modules())


def test_hooks_and_wrappers_leave_no_trace_on_the_sdxl_base(xl, motion_xl):
    model = apply_motion_model(xl, motion_xl, 1.0, "autoselect")
    sample(model)
    assert xl.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "animatediff_schedule") == []
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in xl.model.diffusion_model.modules()) == 0


@pytest.mark.parametrize("family, betas", [("AnimateDiff", "animatediff_sdxl"), ("HotshotXL", "sd_scaled_linear")])
def test_a_motion_lora_trains_on_sdxl_with_its_pooled_text_and_betas(motion_xl, hotshot, family, betas):
    """Step 0 (the LoRA's up starts at zero) against ComfyUI's own reading of the model: apply_model with the `y`
    ComfyUI's extra_conds makes from the caption's pooled text and the frames' size, on the module's betas."""
    motion = hotshot if family == "HotshotXL" else motion_xl
    xl = tiny_sdxl()
    with torch.no_grad():  # random weights give `y` little say in the loss; this makes the frames' size count
        xl.model.diffusion_model.label_emb[0][0].weight.mul_(10)
    frames, seed = 4, 4
    positive = sdxl_conditioning(31)
    with torch.inference_mode():
        images = torch.rand(frames, 64, 64, 3, generator=torch.Generator().manual_seed(5))
        clips = encode_clips(tiny_vae(), xl, images, frames, 64)
        _, losses = train_motion_lora(xl, motion, clips, positive, rank=2, steps=1, learning_rate=1e-3, seed=seed)
        patched = apply_motion_model(xl, motion, 1.0, betas)
        comfy.model_management.load_models_gpu([patched, *patched.get_nested_additional_models()])
        sigmas = patched.get_model_object("model_sampling").sigmas
        ((x0, t, noise),) = draws(clips, 1, seed)
        sigma = sigmas[t]
        x_in = x0 + sigma * noise
        conds = patched.model.extra_conds(cross_attn=positive[0][0], pooled_output=positive[0][1]["pooled_output"],
                                          width=64, height=64, device=x0.device, noise=x_in)
        options = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers, "cond_or_uncond": [0]}
        caption = positive[0][0].expand(frames, -1, -1)
        denoised = patched.model.apply_model(x_in, sigma.expand(frames), c_crossattn=caption,
                                             y=conds["y"].cond.expand(frames, -1), transformer_options=options)
        expected = (((x_in - denoised) / sigma - noise).double() ** 2).mean().item()
        assert torch.allclose(pooled_text_of(xl, positive, clips[0]), conds["y"].cond, rtol=0, atol=1e-6)
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    with torch.inference_mode(), pytest.raises(AnimateDiffError, match="positive has no pooled_output"):
        train_motion_lora(xl, motion, clips, [[positive[0][0], {}]], rank=2, steps=1, learning_rate=1e-3, seed=0)


def test_prompts_from_another_familys_clip_are_refused_when_sampling_and_training(xl, motion_xl):
    """An SD1.5 workflow switched to an SDXL checkpoint but still encoding with SD1.5's CLIP: 768-wide text, where
    the UNet would fail in a matrix product. Also an inpainting UNet (9 input channels) for training."""
    sd15_text = conditioning(11)  # 768 wide
    with pytest.raises(AnimateDiffError, match="The positive prompt is encoded 768 wide, but this model reads text "
                       r"2048 wide \(SDXL\): encode the prompts with this checkpoint's own CLIP"):
        sample(apply_motion_model(xl, motion_xl, 1.0, "autoselect"), positive=sd15_text)
    assert not any(isinstance(m, MotionLayer) for m in xl.model.diffusion_model.modules())
    with torch.inference_mode():
        clips = encode_clips(tiny_vae(), xl, torch.rand(4, 64, 64, 3), 4, 64)
        with pytest.raises(AnimateDiffError, match="positive is encoded 768 wide, but this model reads text 2048"):
            train_motion_lora(xl, motion_xl, clips, [[sd15_text[0][0], {"pooled_output": torch.zeros(1, 768)}]],
                              rank=2, steps=1, learning_rate=1e-3, seed=0)
        with pytest.raises(AnimateDiffError, match="This model's UNet takes 9 input channels"):
            train_motion_lora(tiny_sdxl(in_channels=9), motion_xl, clips, sdxl_conditioning(1), rank=2, steps=1,
                              learning_rate=1e-3, seed=0)


def test_the_sd15_add_ons_refuse_an_sdxl_model_clearly(xl, motion_xl, fixtures_dir):
    """The released MotionLoRAs, the v3 domain adapter and SparseCtrl are for SD1.5: each says so, and sampling
    that stops leaves the base model clean."""
    small = fixtures_dir / "small"
    folder_paths.add_model_folder_path("animatediff_motion_lora", str(small))
    folder_paths.add_model_folder_path("controlnet", str(small))
    (stack,) = MotionLoRA().add("motion_lora_zoom.safetensors", 1.0)
    with pytest.raises(ModelFileError, match="does not fit the motion module mm_sdxl.safetensors"):
        sample(apply_motion_model(xl, motion_xl, 1.0, "autoselect", stack))
    with pytest.raises(ModelFileError, match=r"the model \(SDXL\) does not have.*fits SD1.5 models"):
        apply_domain_adapter(xl, small / "v3_adapter.ckpt", 1.0)
    with torch.inference_mode():
        (sparse,) = LoadSparseCtrl().load("sparsectrl_scribble.ckpt")
    positive, negative = ApplySparseCtrl().apply(sdxl_conditioning(11, 16), sdxl_conditioning(12), sparse,
                                                 torch.rand(1, 64, 64, 3), "0", 1.0, 0.0, 1.0)
    with pytest.raises(AnimateDiffError, match="SparseCtrl is an SD1.5 ControlNet, whose text conditioning is 768 "
                       "wide, but this model's is 2048 wide"):
        sample(apply_motion_model(xl, motion_xl, 1.0, "autoselect"), positive=positive, negative=negative)
    assert not any(isinstance(m, MotionLayer) for m in xl.model.diffusion_model.modules())
