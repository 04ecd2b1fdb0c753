"""Apply Motion Module's start_percent / end_percent: the motion module acts in the calls whose sigma lies in
ComfyUI's percent range (as ControlNet's), and outside it each frame is the image model's own."""
import comfy.patcher_extension
import pytest
import torch

from comfy_env import ksample, probed
from animatediff.errors import AnimateDiffError
from animatediff.motion_module.layers import MotionModule
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.motion import ApplyMotionModule


def animated(base, motion, version, start, end, **inputs):
    return ApplyMotionModule().apply(base, motion[version], beta_schedule="use_existing", start_percent=start,
                                     end_percent=end, **inputs)[0]


def record_calls(model, motion, version, record):
    """A clone whose every UNet call records its sigma, how many motion modules ran, and the batch of the
    UNet's last GroupNorm's input as the norm saw it (v1 regroups the frames of a video into one row)."""
    modules = [m for m in motion[version].model.modules() if isinstance(m, MotionModule)]

    def call(base_model, x, t, *args, **kwargs):
        record.append({"sigma": float(t[0]), "ran": 0})
        norm = base_model.diffusion_model.out[0]
        hooks = [m.register_forward_hook(lambda *_: record[-1].update(ran=record[-1]["ran"] + 1)) for m in modules]
        return [*hooks, norm.register_forward_pre_hook(lambda m, a: record[-1].update(norm_batch=a[0].shape[0]))]
    return probed(model, call, comfy.patcher_extension.WrappersMP.APPLY_MODEL)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("start,end", [(0.0, 0.0), (1.0, 1.0)])
def test_an_empty_range_samples_exactly_as_the_image_model(base, motion, version, start, end):
    """v1 included: its frame-wide GroupNorms sit out too."""
    plain = ksample(base, frames=8, seed=3, steps=3)
    assert torch.equal(ksample(animated(base, motion, version, start, end), frames=8, seed=3, steps=3), plain)
    assert not torch.equal(ksample(animated(base, motion, version, 0.0, 1.0), frames=8, seed=3, steps=3), plain)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_module_acts_in_exactly_the_calls_inside_the_range(base, motion, version):
    start, end, frames, record = 0.3, 0.7, 20 if version == "v2" else 8, []
    model = animated(base, motion, version, start, end)
    if version == "v2":  # with windows: two calls per step and cfg half, each checked
        model = ContextWindows().apply(model, 16, 4, "uniform_standard", "pyramid", 1, False)[0]
    ksample(record_calls(model, motion, version, record), frames=frames, steps=5)
    sampling = base.get_model_object("model_sampling")
    high, low = sampling.percent_to_sigma(start), sampling.percent_to_sigma(end)
    inside = [low <= r["sigma"] <= high for r in record]
    assert any(inside) and not all(inside)
    modules = 21 if version == "v2" else 20
    assert [r["ran"] for r in record] == [modules if i else 0 for i in inside]
    if version == "v1":  # cond and uncond: 2 videos of 8 frames, normalised per video inside the range only
        assert [r["norm_batch"] for r in record] == [2 if i else 16 for i in inside]


def test_a_range_and_an_effect_mask_work_together(base, motion):
    record, mask = [], torch.linspace(0, 1, 64).expand(64, 64).clone()
    model = animated(base, motion, "v2", 0.0, 0.5, effect=0.6, effect_mask=mask)
    out = ksample(record_calls(model, motion, "v2", record), frames=8, steps=3)
    assert [r["ran"] for r in record[:1]] == [21] and record[-1]["ran"] == 0
    masked_only = ksample(animated(base, motion, "v2", 0.0, 1.0, effect=0.6, effect_mask=mask), frames=8, steps=3)
    assert torch.isfinite(out).all() and not torch.equal(out, masked_only)


def test_a_range_that_ends_before_it_starts_is_refused(base, motion):
    with pytest.raises(AnimateDiffError, match=r"start_percent \(0.8\) and end_percent \(0.2\)"):
        animated(base, motion, "v2", 0.8, 0.2)
