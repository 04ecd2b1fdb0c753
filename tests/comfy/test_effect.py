"""Apply Motion Module's effect and effect_mask: each motion layer's output blended with its input, by frame
and by place, in real sampling (with and without context windows)."""
import math

import comfy.context_windows
import comfy.model_management
import comfy.patcher_extension
import pytest
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

from comfy_env import conditioning, ksample, probed, unet_state
from animatediff.errors import AnimateDiffError
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.motion import ApplyMotionModule
from animatediff.patching.effect import MAPS, MotionEffect
from animatediff.patching.motion import MotionLayer

KEY = "up_blocks.2.motion_modules.2"  # in output_blocks[8], right before its Upsample


def animated(base, motion, effect=1.0, mask=None, schedule="use_existing"):
    return ApplyMotionModule().apply(base, motion["v2"], None, 1.0, schedule, effect, mask)[0]


def record_layer(model, motion, record):
    """A clone whose every UNet call records, for the layer at KEY: its window, the motion module's input and
    output, and what the layer handed on (the Upsample's input)."""
    module = motion["v2"].model.get_submodule(KEY)

    def call(unet, x, *args, **kwargs):
        options = args[4] if len(args) > 4 else kwargs["transformer_options"]
        ours, core = options.get("ad_params"), options.get("context_window")
        window = ours["sub_idxs"] if ours else (list(core.index_list) if core is not None else None)
        record.append({"window": window, "chunks": len(options["cond_or_uncond"])})
        upsample = next(m for m in unet.output_blocks[8] if isinstance(m, Upsample))
        return [module.register_forward_hook(lambda m, a, out: record[-1].update(before=a[0], after=out) and None),
                upsample.register_forward_pre_hook(lambda m, a: record[-1].update(handed_on=a[0]) and None)]
    return probed(model, call)


def test_effect_0_is_the_image_model_bit_for_bit_and_1_the_original(base, motion):
    plain = ksample(base, seed=4)
    assert torch.equal(ksample(animated(base, motion, 0.0), seed=4), plain)
    assert torch.equal(ksample(animated(base, motion, 1.0, torch.zeros(1, 64, 64)), seed=4), plain)
    full = ksample(animated(base, motion), seed=4)
    assert torch.equal(ksample(animated(base, motion, 1.0, torch.ones(64, 64)), seed=4), full)
    half = ksample(animated(base, motion, 0.5), seed=4)
    assert (half - plain).abs().max() > 1e-3 and (half - full).abs().max() > 1e-3


def test_each_layer_hands_on_the_blend_of_its_input_and_the_modules_output(base, motion):
    record = []
    ksample(record_layer(animated(base, motion, 0.3), motion, record), steps=1)
    assert len(record) == 1 and record[0]["chunks"] == 2
    r = record[0]
    expected = r["before"] + 0.3 * (r["after"] - r["before"])
    assert (r["handed_on"] - expected).abs().max() <= 1e-6 * expected.abs().max()
    assert (r["after"] - r["before"]).abs().max() > 1e-2 * expected.abs().max()  # the module does change it


def test_a_mask_per_frame_reaches_each_windows_frames_in_both_cfg_halves(base, motion):
    frames, record = 24, []
    values = torch.rand(frames, generator=torch.Generator().manual_seed(2))
    masks = values.view(-1, 1, 1).expand(-1, 64, 64).clone()  # frame f's mask is values[f] everywhere
    model = ContextWindows().apply(animated(base, motion, 0.8, masks), 16, 4, "uniform_standard", "pyramid", 1,
                                   False)[0]
    ksample(record_layer(model, motion, record), frames=frames, steps=1)
    assert [r["window"] for r in record] == [list(range(16)), list(range(8, 24))]
    for r in record:
        weight = (0.8 * values[r["window"]]).repeat(r["chunks"]).view(-1, 1, 1, 1)
        expected = r["before"] + weight * (r["after"] - r["before"])
        assert (r["handed_on"] - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_in_a_core_context_window_the_maps_are_its_frames_masks():
    """ComfyUI 0.3.75's own windows fail on SD1.5 batches before any model runs (their step lookup compares the
    schedule with one timestep per frame), so the window a newer ComfyUI would pass is given here directly."""
    values = torch.linspace(0, 1, 24)
    effect = MotionEffect(0.5, values.view(-1, 1, 1).expand(-1, 32, 32).clone())
    x = torch.zeros(2 * 4, 3, 2, 2)  # cond and uncond of a 4-frame window
    window = comfy.context_windows.IndexListContextWindow([20, 21, 22, 23])
    maps = effect.maps(x, 4, {"context_window": window})[(2, 2)]
    expected = (0.5 * values[[20, 21, 22, 23]]).repeat(2).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    assert torch.allclose(maps, expected, rtol=1e-5, atol=0)  # a float32 mean of 256 equal pixels
    window = comfy.context_windows.IndexListContextWindow([22, 23, 24, 25])
    with pytest.raises(AnimateDiffError, match="24 masks for a video of at least 26 frames"):
        effect.maps(x, 4, {"context_window": window})


def test_in_a_newer_comfyuis_core_window_the_frame_before_it_comes_first():
    """Newer ComfyUIs' core windows (causal_window_fix, on by default) run a window after the first with the frame
    before it in front, and note it on the window (causal_anchor_index), with the video's length (total_frames)."""
    values = torch.linspace(0, 1, 24)
    effect = MotionEffect(1.0, values.view(-1, 1, 1).expand(-1, 8, 8).clone())
    window = comfy.context_windows.IndexListContextWindow([20, 21, 22, 23])
    window.causal_anchor_index, window.total_frames = 19, 24  # as the newer handler sets them
    maps = effect.maps(torch.zeros(2 * 5, 3, 2, 2), 5, {"context_window": window})[(2, 2)]
    torch.testing.assert_close(maps[:, 0, 0, 0], values[[19, 20, 21, 22, 23]].repeat(2), rtol=1e-5, atol=0)
    window.total_frames = 30
    with pytest.raises(AnimateDiffError, match="24 masks for a video of 30 frames"):
        effect.maps(torch.zeros(2 * 5, 3, 2, 2), 5, {"context_window": window})


def test_a_mask_limits_motion_to_its_white_area(base, motion):
    mask = torch.zeros(128, 128)
    mask[:, :64] = 1  # the left half of a 128-pixel (16-latent) video
    record = []
    ksample(record_layer(animated(base, motion, 1.0, mask), motion, record), steps=1, size=16)
    r = record[0]
    assert r["handed_on"].shape[-1] == 8
    # resized to the layer's 8 columns of 16 pixels each: 0-3 are white, 4-7 black
    assert torch.equal(r["handed_on"][..., :4], r["after"][..., :4])
    assert torch.equal(r["handed_on"][..., 4:], r["before"][..., 4:])
    assert (r["after"][..., 4:] - r["before"][..., 4:]).abs().max() > 1e-3


def test_the_maps_are_made_once_per_window_and_not_kept_after_sampling(base, motion):
    model = ContextWindows().apply(animated(base, motion, 0.8, torch.rand(24, 64, 64)), 16, 4, "uniform_standard",
                                   "pyramid", 1, False)[0]
    effect, made = model.model_options["transformer_options"]["animatediff"]["effect"], []

    def during(unet, x, *args, **kwargs):
        made.append((tuple(args[4]["ad_params"]["sub_idxs"]), len(effect.cache)))
    ksample(probed(model, during), frames=24, steps=2)
    for i, (_, cached) in enumerate(made):  # made in the window's first call, before the UNet runs
        assert cached == len({window for window, _ in made[:i + 1]})
    assert len(made) > len({window for window, _ in made})  # some windows ran again and found theirs
    assert effect.cache == {}


def test_a_mask_count_that_is_not_one_per_frame_is_refused_and_the_base_stays_clean(base, motion):
    comfy.model_management.unload_all_models()
    weights, plain = unet_state(base), ksample(base, seed=6)
    with pytest.raises(AnimateDiffError, match="effect_mask holds 3 masks for a video of 16 frames"):
        ksample(animated(base, motion, 1.0, torch.ones(3, 64, 64)), steps=1)
    windowed = ContextWindows().apply(animated(base, motion, 1.0, torch.ones(16, 64, 64)), 16, 4,
                                      "uniform_standard", "pyramid", 1, False)[0]
    with pytest.raises(AnimateDiffError, match="16 masks for a video of 24 frames"):
        ksample(windowed, frames=24, steps=1)
    assert torch.equal(ksample(base, seed=6), plain)
    comfy.model_management.unload_all_models()
    assert not any(isinstance(m, MotionLayer) for m in base.model.diffusion_model.modules())
    assert all(torch.equal(weights[k], v) for k, v in unet_state(base).items())


def test_a_mask_that_is_not_a_mask_is_refused_when_applied(base, motion):
    with pytest.raises(AnimateDiffError, match=r"effect_mask must be .* got shape \(1, 2, 64, 64\)"):
        animated(base, motion, 1.0, torch.ones(1, 2, 64, 64))
    with pytest.raises(AnimateDiffError, match="effect_mask must be finite"):
        animated(base, motion, 1.0, torch.full((64, 64), float("nan")))
    with pytest.raises(AnimateDiffError, match=r"got shape \(1, 0, 0\)"):
        animated(base, motion, 1.0, torch.ones(0, 0))


def test_each_cell_takes_the_mean_of_the_mask_pixels_it_covers():
    stripes = torch.zeros(1, 128, 128)
    stripes[..., 0::8] = stripes[..., 1::8] = stripes[..., 2::8] = 1  # 3 of every 8 columns white
    effect = MotionEffect(0.8, stripes)
    maps = effect.maps(torch.zeros(2, 4, 16, 16), 2, {})  # a call's latent
    assert torch.equal(maps[(16, 16)], torch.full((2, 1, 16, 16), 0.8 * 3 / 8))
    layer = effect.weights(torch.zeros(2, 3, 4, 4, dtype=torch.float16), {MAPS: maps})  # a deeper layer's input
    assert torch.equal(layer, torch.full((2, 1, 4, 4), 0.8 * 3 / 8, dtype=torch.float16))


def exact_area_means(masks, size):
    """Independently: each pixel split into equal sub-pixels until the cells' edges fall on theirs (the sides' least
    common multiples), then each cell the plain mean of its sub-pixels."""
    (height, width), (rows, columns) = masks.shape[-2:], size
    tall, wide = math.lcm(height, rows), math.lcm(width, columns)
    fine = masks.double().repeat_interleave(tall // height, -2).repeat_interleave(wide // width, -1)
    return torch.nn.functional.avg_pool2d(fine[:, None], (tall // rows, wide // columns))[:, 0]


def test_a_cell_counts_a_pixel_it_covers_in_part_by_that_part():
    effect = MotionEffect(1.0, torch.tensor([[[0.0, 0.0, 1.0]]]))
    maps = effect.maps(torch.zeros(1, 4, 1, 2), 1, {})  # 2 cells over 3 pixels: the second covers half the middle
    torch.testing.assert_close(maps[(1, 2)], torch.tensor([[[[0.0, 2 / 3]]]]), rtol=0, atol=1e-7)


def test_each_levels_map_is_made_from_the_mask_itself_at_sizes_that_do_not_divide():
    """A 600-pixel video: a 75-cell latent, and UNet levels of 38, 19 and 10 cells (halving, rounding up). Each
    level's map is the mask over each cell's area (made on the CPU, where any size goes; Apple's MPS refuses area
    resizing to sizes that do not divide), not an average of the level above's cells."""
    mask = torch.rand(3, 100, 100, generator=torch.Generator().manual_seed(4))
    effect = MotionEffect(0.6, mask)
    maps = effect.maps(torch.zeros(2 * 3, 4, 75, 75), 3, {})
    assert list(maps) == [(75, 75), (38, 38), (19, 19), (10, 10)]
    for size, made in maps.items():
        expected = (0.6 * exact_area_means(mask, size)).float()[:, None].repeat(2, 1, 1, 1)
        torch.testing.assert_close(made, expected, rtol=0, atol=1e-6)
        assert torch.equal(effect.weights(torch.zeros(6, 8, *size), {MAPS: maps}), made)
    twice = exact_area_means(maps[(75, 75)][:3, 0], (38, 38))  # the latent's map resized again, as before
    assert (twice - maps[(38, 38)][:3, 0]).abs().max() > 1e-2
    pooled = torch.nn.functional.interpolate(mask[:, None], size=(38, 38), mode="area")  # whole pixels at edges
    assert (0.6 * pooled - maps[(38, 38)][:3]).abs().max() > 1e-3


def test_under_deep_shrink_a_layer_of_another_size_takes_the_latents_map_over_its_cells(base, motion, monkeypatch):
    """The core Kohya Deep Shrink node (PatchModelAddDownscale) shrinks the UNet's features after a block by a
    factor, so later levels have sizes that halving the latent does not give (16 -> 11 -> 6 -> 3 here): those
    layers take the latent's map averaged over their cells; the halving levels' maps come from the mask."""
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale
    mask = torch.rand(2, 100, 100, generator=torch.Generator().manual_seed(6))
    model = animated(base, motion, 0.7, mask)
    model = PatchModelAddDownscale.execute(model, 1, 1.5, 0.0, 1.0, True, "bicubic", "bicubic")[0]
    seen, weights = [], MotionEffect.weights

    def spy(effect, x, transformer_options):
        out = weights(effect, x, transformer_options)
        seen.append((tuple(x.shape[-2:]), out, transformer_options[MAPS]))
        return out
    monkeypatch.setattr(MotionEffect, "weights", spy)
    ksample(model, frames=2, steps=1, size=16)
    sizes = {size for size, _, _ in seen}
    assert {(11, 11), (6, 6), (3, 3)} <= sizes and (16, 16) in sizes
    for size, out, maps in seen:
        latent = maps[(16, 16)]
        if size in [(16, 16), (8, 8), (4, 4), (2, 2)]:
            expected = 0.7 * exact_area_means(mask, size).float()[:, None].repeat(2, 1, 1, 1)
        else:
            expected = exact_area_means(latent[:, 0], size).float()[:, None]
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def area_prompt():
    """A positive prompt with a second prompt on the video's lower-right quarter (ConditioningSetArea)."""
    import nodes
    corner = nodes.ConditioningSetArea().append(conditioning(21), 32, 32, 32, 32, 1.0)[0]
    return nodes.ConditioningCombine().combine(conditioning(11), corner)[0]


def test_an_area_prompt_is_refused_where_the_mask_could_not_be_placed(base, motion):
    with pytest.raises(AnimateDiffError, match="effect_mask cannot be placed in an area prompt .* only the area's "
                                               "4×4 of the 8×8 latent"):
        ksample(animated(base, motion, 1.0, torch.ones(64, 64)), steps=1, positive=area_prompt())
    no_mask = ksample(animated(base, motion, 0.5), steps=1, positive=area_prompt())  # a number needs no place
    assert torch.isfinite(no_mask).all()


def test_effect_0_is_the_image_model_also_with_animatelcm_i2vs_picture(base, fixtures_dir):
    """The picture's features are part of what the motion layers change, so effect scales them too."""
    from animatediff.nodes.image_to_video import AnimateLCMI2VImage
    from animatediff.patching.motion import load_motion_model_file
    i2v = load_motion_model_file(fixtures_dir / "small" / "mm_animatelcm_i2v.safetensors", "i2v")
    picture = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    still = ApplyMotionModule().apply(base, i2v, None, 1.0, "use_existing", 0.0)[0]
    assert torch.equal(ksample(AnimateLCMI2VImage().apply(still, picture, 0.8)[0], seed=4), ksample(base, seed=4))
