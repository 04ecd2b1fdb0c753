"""Context windows inside a real in-process ComfyUI (tiny SD1.5-shaped UNet, CPU).

What each window receives (conds, ControlNet hints, ad_params), equivalence with plain sampling, long
videos past the motion module's table, noise types through AnimateDiff_Sampler, and peak memory.
"""
import comfy.controlnet
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.t2i_adapter.adapter
import pytest
import torch
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from comfy_env import (conditioning, ksample, latent, probed, random_fill, tiny_controlnet, unet_state,
                       with_controlnet)
from animatediff.errors import AnimateDiffError
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.sampler import Sampler
from animatediff.patching.motion import MotionLayer, apply_motion_model
from animatediff.sampling.context import windows
from animatediff.sampling.noise import NoiseType

WRAPPERS = comfy.patcher_extension.WrappersMP


def with_windows(model, length, overlap, schedule="static", fuse="pyramid", stride=1, closed_loop=False):
    return ContextWindows().apply(model, length, overlap, schedule, fuse, stride, closed_loop)[0]


def frame_prompts(frames):
    """Prompt travel: one embedding per frame; every value of frame i's is (i + 1) / 256."""
    return [[torch.arange(1, frames + 1, dtype=torch.float32).div(256).view(-1, 1, 1).expand(-1, 77, 768).clone(), {}]]


def flat_prompt(value):
    return [[torch.full((1, 77, 768), value), {}]]


def tiny_t2i_adapter(seed):
    """A random SD1.5 T2I-Adapter (comfy.t2i_adapter) whose features match the tiny UNet's blocks."""
    adapter = comfy.t2i_adapter.adapter.Adapter(channels=[32, 64, 128, 128], nums_rb=1, cin=3 * 64, ksize=1, sk=True,
                                                use_conv=False, xl=False)
    random_fill(adapter, seed)
    return comfy.controlnet.T2IAdapter(adapter, 3, 8, "nearest-exact", device=torch.device("cpu"))


def control_chain(conditioning):
    control, chain = conditioning[0][1]["control"], []
    while control is not None:
        chain.append(control)
        control = control.previous_controlnet
    return chain


def probe(model, record):
    """A clone whose every UNet call records the window it ran (ad_params), its batch order and its prompts."""
    def look(unet, x, *args, **kwargs):
        context, transformer_options = args[1], args[4]
        record.append({"kind": "unet", "ad_params": dict(transformer_options.get("ad_params") or {}),
                       "order": list(transformer_options["cond_or_uncond"]), "frames": x.shape[0],
                       "context": context[:, 0, 0].tolist()})
    return probed(model, look)


def custom_advanced(model, positive, negative, frames, seed=1, steps=1, cfg=7.5):
    """The core SamplerCustomAdvanced node with a CFGGuider, sampler and sigmas as its sibling nodes make them."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    out = SamplerCustomAdvanced.execute(Noise_RandomNoise(seed), guider, comfy.samplers.sampler_object("euler"),
                                        sigmas, latent(frames))
    return out.result[0]["samples"]


def test_each_window_receives_exactly_its_frames_prompts_and_hints(base):
    """Prompt travel plus three chained ControlNets: one hint per frame, one hint for all, 3 hints for 10
    frames; looped windows, one of which wraps past the last frame."""
    frames, length, overlap = 10, 4, 1
    positive, negative = frame_prompts(frames), flat_prompt(-1.0)
    per_frame, fewer = [(i + 1) / 64 for i in range(frames)], [0.5, 0.625, 0.75]
    nets = {"per_frame": tiny_controlnet(1), "single": tiny_controlnet(2), "fewer": tiny_controlnet(3)}
    positive, negative = with_controlnet(positive, negative, nets["per_frame"], per_frame)
    positive, negative = with_controlnet(positive, negative, nets["single"], [0.875])
    positive, negative = with_controlnet(positive, negative, nets["fewer"], fewer)
    originals = [(c, c.cond_hint_original) for c in control_chain(positive)]
    record = []

    def look(name):
        def hook(module, args, kwargs):
            record.append({"kind": name, "hint": kwargs["hint"][:, 0, 0, 0].tolist(),
                           "context": kwargs["context"][:, 0, 0].tolist()})
        return hook
    hooks = [net.control_model.register_forward_pre_hook(look(name), with_kwargs=True) for name, net in nets.items()]
    model = probe(with_windows(base, length, overlap, "uniform_looped", closed_loop=True), record)
    try:
        ksample(model, frames=frames, steps=1, positive=positive, negative=negative)
    finally:
        for hook in hooks:
            hook.remove()

    expected = windows("uniform_looped", frames, length, overlap, 1, True, 0)
    assert [9, 0] in [w[j:j + 2] for w in expected for j in range(length - 1)]  # a window wraps
    calls = [r for r in record if r["kind"] == "unet"]
    assert [c["ad_params"]["sub_idxs"] for c in calls] == expected
    assert all(c["ad_params"]["full_length"] == frames and c["ad_params"]["context_length"] == length for c in calls)
    for i, call in enumerate(calls):
        window, order = call["ad_params"]["sub_idxs"], call["order"]
        assert call["frames"] == length * len(order)
        prompts = [(f + 1) / 256 for f in window]
        assert call["context"] == [v for o in order for v in (prompts if o == 0 else [-1.0] * length)]
        controls = record[4 * i: 4 * i + 3]  # the chain runs deepest first: per_frame, single, fewer
        assert [c["kind"] for c in controls] == ["per_frame", "single", "fewer"]
        assert all(c["context"] == call["context"] for c in controls)
        chunks = len(order)
        assert controls[0]["hint"] == [per_frame[f] for f in window] * chunks
        assert controls[1]["hint"] == [0.875]  # one hint stays one (the ControlNet broadcasts it)
        assert controls[2]["hint"] == [fewer[f % 3] for f in window] * chunks
    # every ControlNet holds its own hints again, as it was handed them
    assert all(c.cond_hint_original is hints for c, hints in originals)


def test_a_t2i_adapter_computes_each_windows_features_from_the_windows_frames(base):
    """A T2I-Adapter keeps its features while the hints keep their size, which every window's do: each window
    must still get features of its own frames."""
    frames, length, overlap = 10, 4, 1
    values = [(i + 1) / 64 for i in range(frames)]
    adapter = tiny_t2i_adapter(4)
    positive, negative = with_controlnet(frame_prompts(frames), flat_prompt(-1.0), adapter, values)
    applied = control_chain(positive)[0]
    original_hints = applied.cond_hint_original
    seen, record = [], []
    hook = adapter.t2i_model.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 0, 0, 0].tolist()))
    try:
        ksample(probe(with_windows(base, length, overlap), record), frames=frames, steps=2,
                positive=positive, negative=negative)
    finally:
        hook.remove()

    calls = [r for r in record if r["kind"] == "unet"]
    assert [c["ad_params"]["sub_idxs"] for c in calls] == 2 * windows("static", frames, length, overlap, 1, False, 0)
    assert seen == [[values[f] for f in call["ad_params"]["sub_idxs"]] * len(call["order"]) for call in calls]
    assert applied.cond_hint_original is original_hints and applied.control_input is None


def test_windows_of_independent_frames_give_the_unwindowed_result(base):
    """Without a motion module frames do not interact, so windowing + fusing (weights summing to one) must
    reproduce plain sampling: every frame got its own prompt and hint. Through SamplerCustomAdvanced."""
    frames = 12
    positive, negative = with_controlnet(frame_prompts(frames), flat_prompt(-0.5), tiny_controlnet(4),
                                         [i / 12 for i in range(frames)])
    plain = custom_advanced(base, positive, negative, frames)
    record = []
    for schedule, fuse, stride in (("uniform_standard", "pyramid", 2), ("uniform_looped", "overlap_linear", 1)):
        model = probe(with_windows(base, 4, 1, schedule, fuse, stride, closed_loop=True), record)
        windowed = custom_advanced(model, positive, negative, frames)
        assert (windowed - plain).abs().max() <= 1e-5 * plain.abs().max()
    assert record and all(r["frames"] <= 2 * 4 for r in record)
    no_control = custom_advanced(base, frame_prompts(frames), flat_prompt(-0.5), frames)
    assert (no_control - plain).abs().max() > 1e-2 * plain.abs().max()  # the hints really steer the result


@pytest.mark.parametrize("count", [2, 3, 40])
def test_a_mask_batch_of_any_size_reaches_each_window_as_the_whole_video_would_use_it(base, count):
    """ComfyUI gives frame i mask i of a longer batch and tiles a shorter one; windows must keep that.
    Without a motion module frames are independent, so windowed sampling equals plain sampling."""
    import nodes
    frames = 30
    masks = torch.zeros(count, 8, 8)
    for k in range(count):
        masks[k, :, k % 8] = 1.0  # mask k: column k % 8
    masked = nodes.ConditioningSetMask().append(conditioning(21), masks, "default", 1.0)[0]
    positive = nodes.ConditioningCombine().combine(conditioning(11), masked)[0]
    expected = custom_advanced(base, positive, conditioning(12), frames)
    windowed = custom_advanced(with_windows(base, 16, 3, "static", "flat"), positive, conditioning(12), frames)
    assert (windowed - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("length", [16, 24])
def test_a_window_holding_every_frame_is_plain_sampling_bit_for_bit(base, motion, length):
    animated = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    positive = frame_prompts(16)
    assert torch.equal(ksample(with_windows(animated, length, 4, "uniform_standard"), positive=positive),
                       ksample(animated, positive=positive))


def test_64_frames_sample_in_windows_where_the_module_alone_refuses(base, motion):
    animated = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    with pytest.raises(AnimateDiffError, match="64 frames > 32 this motion module supports"):
        ksample(animated, frames=64, steps=1, cfg=1.0)
    shapes, record = [], []
    model = probe(with_windows(animated, 16, 4, "uniform_standard"), record)

    def planned(executor, patcher, noise_shape, *args, **kwargs):
        shapes.append(list(noise_shape))
        return executor(patcher, noise_shape, *args, **kwargs)
    model.add_wrapper_with_key(WRAPPERS.PREPARE_SAMPLING, "test-probe", planned)
    (out,) = Sampler().sample(model, 1, 1, 7.5, "euler", "normal", flat_prompt(0.1), flat_prompt(-0.1), latent(64),
                              noise_type=NoiseType.FREE_NOISE)
    samples = out["samples"]
    assert samples.shape == (64, 4, 8, 8) and bool(torch.isfinite(samples).all())
    assert shapes == [[16, 4, 8, 8]]  # ComfyUI plans memory for one window, not 64 frames
    assert {r["frames"] for r in record} == {32}  # 16 frames × (cond, uncond) per UNet call
    assert [r["ad_params"]["sub_idxs"] for r in record] == windows("uniform_standard", 64, 16, 4)


def motion_layers_left(model):
    return sum(isinstance(m, MotionLayer) for m in model.model.diffusion_model.modules())


def test_bad_settings_are_refused_with_the_input_named(base, motion):
    node = ContextWindows()
    for args, problem in [((16, 16), r"context_overlap \(16\) must be smaller than context_length \(16\)"),
                          ((0, 0), "context_length must be at least 1"),
                          ((16, -2), "context_overlap must be 0 or more")]:
        with pytest.raises(AnimateDiffError, match=problem):
            node.apply(base, *args, "static", "pyramid")
    with pytest.raises(AnimateDiffError, match="context_stride must be at least 1"):
        node.apply(base, 16, 4, "static", "pyramid", 0)
    v1 = apply_motion_model(base, motion["v1"], 1.0, "autoselect")
    with pytest.raises(AnimateDiffError, match="context_length=32 is more than the 24 frames"):
        node.apply(v1, 32, 4, "static", "pyramid")


def test_too_long_a_window_found_at_sampling_names_context_length_and_leaves_the_base_clean(base, motion):
    """Context windows first, motion module second: the table is only known when sampling starts."""
    weights = unet_state(base)
    model = apply_motion_model(with_windows(base, 32, 4), motion["v1"], 1.0, "autoselect")
    too_long = "context_length=32 is more than the 24 frames.*set context_length to 24"
    with pytest.raises(AnimateDiffError, match=too_long):
        ksample(model, frames=40, steps=1, cfg=1.0)
    assert ksample(model, frames=20, steps=1, cfg=1.0).shape[0] == 20  # a 20-frame window fits
    comfy.model_management.unload_all_models()
    assert motion_layers_left(base) == 0
    assert all(torch.equal(weights[k], v) for k, v in unet_state(base).items())
    assert base.get_wrappers(WRAPPERS.CALC_COND_BATCH, "animatediff_context") == []


def test_ours_and_the_core_context_windows_on_one_model_are_refused_in_either_order(base, motion):
    """ComfyUI's core Context Windows (Manual) node splits the frames before our wrapper sees them."""
    from comfy.context_windows import ContextSchedules
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    def core_windows(model):
        return ContextWindowsManualNode.execute(model, 16, 4, ContextSchedules.STATIC_STANDARD, 1, False, "pyramid",
                                                0).result[0]
    animated = apply_motion_model(base, motion["v2"], 1.0, "autoselect")
    both = "two kinds of context windows.*keep AnimateDiff_ContextWindows"
    with pytest.raises(AnimateDiffError, match=both):
        with_windows(core_windows(animated), 16, 4)
    with pytest.raises(AnimateDiffError, match=both):
        ksample(core_windows(with_windows(animated, 16, 4)), frames=20, steps=1, cfg=1.0)
    assert motion_layers_left(base) == 0


class NoiseSeen(Exception):
    """Stops sampling once the noise it starts from is known."""


def starting_noise(model, noise_type, frames=40, seed=5):
    seen = model.clone()
    record = []

    def grab(executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
        record.append(noise.clone())
        raise NoiseSeen
    seen.add_wrapper_with_key(WRAPPERS.SAMPLER_SAMPLE, "test-noise", grab)
    with pytest.raises(NoiseSeen):
        Sampler().sample(seen, seed, 1, 1.0, "euler", "normal", flat_prompt(0.1), flat_prompt(0.0), latent(frames),
                         noise_type=noise_type)
    return record[0]


def sources(noise, pool):
    return [int((pool.flatten(1) == row).all(dim=1).nonzero()[0]) for row in noise.flatten(1)]


def test_noise_types_follow_the_models_context_windows(base):
    frames, seed = 40, 5
    comfy_noise = comfy.sample.prepare_noise(latent(frames)["samples"], seed)
    windowed = with_windows(base, 8, 2)
    assert torch.equal(starting_noise(windowed, NoiseType.DEFAULT), comfy_noise)
    assert sources(starting_noise(windowed, NoiseType.REPEATED_CONTEXT), comfy_noise) == [i % 8 for i in range(40)]
    assert sources(starting_noise(base, NoiseType.REPEATED_CONTEXT), comfy_noise) == [i % 16 for i in range(40)]
    assert sources(starting_noise(windowed, NoiseType.CONSTANT), comfy_noise) == [0] * 40
    free = sources(starting_noise(windowed, NoiseType.FREE_NOISE), comfy_noise)
    assert free[:8] == list(range(8)) and set(free) == set(range(8))
    for start in range(8, 40, 6):  # each window hop (8 - 2) takes the noise one window earlier, shuffled
        chunk = free[start:start + 6]
        assert sorted(chunk) == sorted(free[start - 8:start - 8 + len(chunk)])
    assert free[8:] != [i % 8 for i in range(8, 40)]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of CPU tensor storages created while active and still alive (weights made before are not
    counted). Exact for tensors, deterministic, cheap: the live set is re-counted only when its upper bound
    (every storage seen since the last count) passes the peak."""

    def __init__(self):
        super().__init__()
        self.live, self.upper, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                known = self.live.get(storage.data_ptr())
                if known is None or known[0].expired():
                    self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
                    self.upper += storage.nbytes()
        if self.upper > self.peak:
            self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
            self.upper = sum(n for _, n in self.live.values())
            self.peak = max(self.peak, self.upper)
        return out


def peak_mb(model, frames):
    with PeakTensorMemory() as memory:
        ksample(model, frames=frames, steps=1)
    return round(memory.peak / 2 ** 20, 1)


def test_peak_memory_of_a_step_depends_on_context_length_not_frames(base, motion):
    """Peak tensor memory of one sampling step (cfg 7.5, 8×8 latent): v2 module with context_length 16
    for 16, 64 and 128 frames, against the image UNet without windows."""
    windowed = with_windows(apply_motion_model(base, motion["v2"], 1.0, "autoselect"), 16, 4, "uniform_standard")
    ksample(windowed, frames=2, steps=1)  # first-call set-up is not what is measured
    with_ = {frames: peak_mb(windowed, frames) for frames in (16, 64, 128)}
    without = {frames: peak_mb(base, frames) for frames in (16, 128)}
    print(f"\npeak tensor MB of a step, v2 + context_length 16: {with_}; image UNet without windows: {without}")
    assert without[128] > 3 * without[16]  # without windows the step's memory grows with the frames
    assert with_[64] <= 1.10 * with_[16] and with_[128] <= 1.10 * with_[16]  # with them it stays flat


def test_core_nodes_that_carry_one_calls_state_to_the_next_are_refused_with_windows(base, motion):
    """SAG blurs the video by the attention map of the last UNet call, EasyCache reuses a prompt's last change:
    with windows, one window's. Both are fine when the video fits one window; LazyCache caches whole steps."""
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    windowed = with_windows(apply_motion_model(base, motion["v2"], 1.0, "autoselect"), 8, 2, "uniform_standard")
    sag = SelfAttentionGuidance.execute(windowed, 0.5, 2.0)[0]
    with pytest.raises(AnimateDiffError, match=r"Self-Attention Guidance \(SAG\).*all 12 frames.*window's 8"):
        ksample(sag, frames=12, steps=1, size=16)
    assert torch.isfinite(ksample(sag, frames=8, steps=1, size=16)).all()
    easycache = EasyCacheNode.execute(windowed, 0.2, 0.0, 1.0, False)[0]
    with pytest.raises(AnimateDiffError, match="EasyCache cannot sample in context windows.*LazyCache"):
        ksample(easycache, frames=12, steps=1)
    never_reusing = LazyCacheNode.execute(windowed, 0.0, 0.0, 1.0, False)[0]
    assert torch.equal(ksample(never_reusing, frames=12, steps=3), ksample(windowed, frames=12, steps=3))


def test_a_prompt_schedule_for_another_number_of_frames_is_refused(base, motion):
    """ComfyUI repeats or cuts a conditioning batch to the latent's: 8 scheduled prompts on 12 frames would
    restart the schedule at frame 8. Per-frame batches from other nodes keep ComfyUI's behaviour."""
    from animatediff.patching.prompts import SCHEDULE_FRAMES
    model = with_windows(apply_motion_model(base, motion["v2"], 1.0, "autoselect"), 8, 2, "uniform_standard")
    prompts = frame_prompts(8)
    scheduled = [[prompts[0][0], {SCHEDULE_FRAMES: 8}]]
    for frames in (12, 6):
        with pytest.raises(AnimateDiffError, match=f"prompts for 8 frames, but the latent holds {frames}: set the "
                                                   f"schedule's frames to {frames}"):
            ksample(model, frames=frames, steps=1, positive=scheduled)
    assert torch.equal(ksample(model, frames=8, steps=1, positive=scheduled),
                       ksample(model, frames=8, steps=1, positive=prompts))
    assert torch.isfinite(ksample(model, frames=12, steps=1, positive=prompts)).all()
