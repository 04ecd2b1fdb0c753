"""PIA inside a real in-process ComfyUI (CPU, tiny SD1.5 UNet, a small pia.ckpt in the released layout from
scripts/make_fixtures.py).

What the UNet's first layer computes against PIA's 9-channel input convolution written out, each frame's
affinity against PIA's presets restated here, windows, PIA's frame-wide GroupNorms, the base model left clean,
and the errors users can make.
"""
import comfy.model_management
import comfy.patcher_extension
import pytest
import torch
import torch.nn.functional as F

from comfy_env import conditioning, ksample, probed, tiny_sd15, unet_state
from animatediff.errors import AnimateDiffError
from animatediff.motion_module import read_state_dict
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.image_to_video import PIAImage
from animatediff.nodes.motion import ApplyMotionModule
from animatediff.patching.motion import joint_groupnorms, load_motion_model_file
from animatediff.sampling.pia import PRESETS, affinity

SD15_LATENT_SCALE = 0.18215
FILE = "mm_pia.ckpt"

# PIA's RANGE_LIST (animatediff/utils/util.py), in the order of its demo's modes: magnitude 0-2, loop (+3),
# style transfer (-m-1, so small is the list's last row)
RANGE_LIST = [
    [1.0, 0.9, 0.85, 0.85, 0.85, 0.8],
    [1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75],
    [1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5],
    [1.0, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.85, 0.9, 1.0],
    [1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75, 0.75, 0.75, 0.75, 0.75, 0.78, 0.79, 0.8, 0.8, 1.0],
    [1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.8, 1.0],
    [0.5, 0.2],
    [0.5, 0.4, 0.4, 0.4, 0.35, 0.35, 0.3, 0.25, 0.2],
    [0.5, 0.4, 0.4, 0.4, 0.35, 0.3],
]
ROW = {"small motion": 0, "moderate motion": 1, "large motion": 2, "loop, small motion": 3,
       "loop, moderate motion": 4, "loop, large motion": 5, "style transfer, small motion": -1,
       "style transfer, moderate motion": -2, "style transfer, large motion": -3}


def original_mask_coef(row: int, video_length: int, cond_frame: int) -> list[float]:
    """PIA's prepare_mask_coef_by_statistics, restated: the row padded with its last value to the video's
    length, then each frame's entry at its distance from the conditioning frame."""
    coef = RANGE_LIST[row] + [RANGE_LIST[row][-1]] * (video_length - len(RANGE_LIST[row]))
    return [coef[abs(f - cond_frame)] for f in range(video_length)]


@pytest.fixture(scope="module")
def pia(fixtures_dir):
    return load_motion_model_file(fixtures_dir / "small" / FILE, FILE)


@pytest.fixture(scope="module")
def weights(fixtures_dir):
    return read_state_dict(fixtures_dir / "small" / FILE)


def picture(seed=3, batch=1, size=8):
    """A LATENT as VAE Encode gives it (not yet scaled for the UNet)."""
    return {"samples": torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))}


def animating(base, pia, preset="moderate motion", frame=0, image=None):
    model = ApplyMotionModule().apply(base, pia, None, 1.0, "autoselect")[0]
    return PIAImage().apply(model, image or picture(), preset, frame)[0]


def record_conv_in(model, record):
    """A clone whose every UNet call records the UNet's conv_in input and output, and the call's window."""
    def call(unet, x, *args, **kwargs):
        options = args[4] if len(args) > 4 else kwargs["transformer_options"]
        entry = {"window": (options.get("ad_params") or {}).get("sub_idxs"), "chunks": len(options["cond_or_uncond"]),
                 "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())}
        record.append(entry)
        return [unet.input_blocks[0][0].register_forward_hook(lambda m, a, out: entry.update(x=a[0], out=out) and None)]
    return probed(model, call)


def pia_conv_in(base, weights, x, frame_values, image, chunks):
    """PIA's 9-channel input convolution as its pipeline builds it for a personalised model: the model's own
    4 channels and bias, the file's 5 extra channels; input cat[latent, affinity plane, image latent]."""
    own = base.model.diffusion_model.input_blocks[0][0]
    weight = torch.cat([own.weight, weights["conv_in.weight"][:, 4:]], dim=1)
    h, w = x.shape[-2:]
    affinity_planes = torch.tensor(frame_values).repeat(chunks).view(-1, 1, 1, 1).expand(-1, 1, h, w)
    samples = image["samples"]
    if samples.shape[-1] * 2 == w:  # PIA fits its image latent to the video's with nearest-neighbour resizing
        samples = samples.repeat_interleave(2, -1).repeat_interleave(2, -2)
    image_latent = (samples * SD15_LATENT_SCALE).expand(x.shape[0], -1, -1, -1)
    return F.conv2d(torch.cat([x, affinity_planes, image_latent], dim=1), weight, own.bias, padding=1)


def test_every_preset_gives_each_frame_the_originals_affinity():
    assert set(PRESETS) == set(ROW)
    for preset, row in ROW.items():
        for length, cond_frame in ((16, 0), (16, 5), (24, 23), (3, 1)):
            assert affinity(preset, list(range(length)), cond_frame) == original_mask_coef(row, length, cond_frame)


def test_conv_in_sees_the_picture_and_each_frames_affinity_in_both_cfg_halves(base, pia, weights):
    record, image = [], picture()
    ksample(record_conv_in(animating(base, pia, "moderate motion", 2, image), record), steps=1)
    (r,) = record
    assert r["chunks"] == 2
    # moderate motion, picture at frame 2: 1.0 there, 0.8 one to three frames away, then 0.79, 0.78, 0.75
    values = [0.8, 0.8, 1.0, 0.8, 0.8, 0.8, 0.79, 0.78] + [0.75] * 8
    expected = pia_conv_in(base, weights, r["x"], values, image, 2)
    assert (r["out"] - expected).abs().max() <= 1e-5 * expected.abs().max()
    plain = base.model.diffusion_model.input_blocks[0][0](r["x"])
    assert (r["out"] - plain).abs().max() > 1e-2 * expected.abs().max()  # the picture does reach the UNet


def test_in_context_windows_each_window_gets_its_frames_affinity(base, pia, weights):
    record, image = [], picture(seed=4, size=4)  # half the video's size
    model = ContextWindows().apply(animating(base, pia, "large motion", 20, image), 16, 4, "uniform_standard",
                                   "pyramid", 1, False)[0]
    ksample(record_conv_in(model, record), frames=24, steps=1)
    assert [r["window"] for r in record] == [list(range(16)), list(range(8, 24))]
    whole = original_mask_coef(ROW["large motion"], 24, 20)
    for r in record:
        expected = pia_conv_in(base, weights, r["x"], [whole[f] for f in r["window"]], image, r["chunks"])
        assert (r["out"] - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_pia_normalises_over_frames_as_v1_and_leaves_the_base_clean(base, pia):
    comfy.model_management.unload_all_models()
    weights, plain = unet_state(base), ksample(base, seed=6)
    record = []
    model = animating(base, pia)
    first = ksample(record_conv_in(model, record), seed=6)
    norms = len(joint_groupnorms(base.model.diffusion_model))
    assert {r["hooks"] for r in record} == {2 * norms + 1}  # before and after every norm, and PIA's on conv_in
    assert torch.equal(ksample(model, seed=6), first)
    without_picture = ksample(ApplyMotionModule().apply(base, pia, None, 1.0, "autoselect")[0], seed=6)
    assert (without_picture - first).abs().max() > 1e-3 and (first - plain).abs().max() > 1e-3
    condition = model.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "animatediff_pia")[0].__self__
    assert condition.cache == {} and condition.current is None  # nothing held on the device after sampling
    assert torch.equal(ksample(base, seed=6), plain)
    comfy.model_management.unload_all_models()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in base.model.diffusion_model.modules()) == 0
    assert all(torch.equal(weights[k], v) for k, v in unet_state(base).items())


def test_a_clone_with_a_unet_of_its_own_keeps_pias_hook_when_another_ejects(base, pia):
    """As the motion injection's (test_patching): newer ComfyUIs give some clones a UNet of their own."""
    comfy.model_management.unload_all_models()
    model = animating(base, pia)
    delegate = tiny_sd15(seed=1)
    delegate.set_injections("animatediff_pia", model.injections["animatediff_pia"])  # shared, as a clone's are

    def conv_in_hooks(patcher):
        return len(patcher.model.diffusion_model.input_blocks[0][0]._forward_hooks)
    model.inject_model()
    delegate.inject_model()
    assert conv_in_hooks(model) == conv_in_hooks(delegate) == 1
    model.eject_model()
    assert conv_in_hooks(model) == 0 and conv_in_hooks(delegate) == 1
    model.inject_model()  # again: one hook, not two
    assert conv_in_hooks(model) == 1
    for patcher in (model, delegate):
        patcher.eject_model()
        assert conv_in_hooks(patcher) == 0


def test_mistakes_are_refused_with_what_to_do(base, pia, motion):
    import nodes
    with pytest.raises(AnimateDiffError, match="needs a model from AnimateDiff_ApplyMotionModule with PIA's motion "
                                               "module.*this model has an AnimateDiff v2 motion module"):
        PIAImage().apply(ApplyMotionModule().apply(base, motion["v2"], None, 1.0, "autoselect")[0], picture(),
                         "small motion", 0)
    with pytest.raises(AnimateDiffError, match="this model has no motion module"):
        PIAImage().apply(base, picture(), "small motion", 0)
    later = ApplyMotionModule().apply(animating(base, pia), motion["v2"], None, 1.0, "autoselect")[0]
    with pytest.raises(AnimateDiffError, match="AnimateDiff_PIAImage made its picture's inputs for a PIA motion "
                                               "module.*Put AnimateDiff_PIAImage after the last Apply Motion Module"):
        ksample(later, steps=1)
    with pytest.raises(AnimateDiffError, match="takes one image; image_latent holds 2"):
        animating(base, pia, image=picture(batch=2))
    overflowed = picture()
    overflowed["samples"][0, 1, 2, 3] = float("nan")  # an fp16 VAE's overflow
    with pytest.raises(AnimateDiffError, match="AnimateDiff_PIAImage: image_latent holds NaN or infinite values"):
        animating(base, pia, image=overflowed)
    sd3_latent = {"samples": torch.zeros(1, 16, 8, 8)}  # e.g. from EmptySD3LatentImage or an SD3 VAE
    with pytest.raises(AnimateDiffError, match=r"image_latent has shape \(1, 16, 8, 8\), where the model's latents "
                                               r"are \(1, 4, height, width\)"):
        animating(base, pia, image=sd3_latent)
    with pytest.raises(AnimateDiffError, match=r"picture_frame=16, but the video has 16 frames \(0 to 15\)"):
        ksample(animating(base, pia, frame=16), steps=1)
    corner = nodes.ConditioningSetArea().append(conditioning(21), 32, 32, 32, 32, 1.0)[0]
    with pytest.raises(AnimateDiffError, match="AnimateDiff_PIAImage's picture cannot be placed in an area prompt"):
        ksample(animating(base, pia), steps=1,
                positive=nodes.ConditioningCombine().combine(conditioning(11), corner)[0])
    inpainting = tiny_sd15(in_channels=9)
    with pytest.raises(AnimateDiffError, match="takes the 4 latent channels, but this model's takes 9"):
        ApplyMotionModule().apply(inpainting, pia, None, 1.0, "autoselect")
