"""The motion module against the independent reference (tests/reference.py), in fp32, per version."""
import pytest
import torch

import reference
from animatediff.motion_module import MotionModel, detect_spec, layers, read_state_dict, sinusoidal_positions
from animatediff.motion_module.sequences import (PackedSequences, StridedSequences, block_diagonal_mask,
                                                 sequences_for, sequences_per_row)

LAYOUTS = {"packed (a GPU)": PackedSequences, "strided (a CPU, torch.compile)": StridedSequences}

SMALL = (32, 64, 128, 128)


def small_model(fixtures_dir, version):
    sd = read_state_dict(fixtures_dir / "small" / f"mm_{version}.safetensors")
    return MotionModel.from_state_dict(detect_spec(sd), sd), sd


# 30 positions a video: packed, 6, 15, 30 and 18 sequences share an attention row
@pytest.mark.parametrize("version", ["v1", "v2", "v3", "animatelcm"])
@pytest.mark.parametrize("videos,frames", [(1, 16), (2, 8), (1, 1), (3, 5)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_module_matches_the_reference_math(fixtures_dir, monkeypatch, version, videos, frames, layout):
    monkeypatch.setattr(layers, "sequences_for", LAYOUTS[layout])
    model, sd = small_model(fixtures_dir, version)
    torch.manual_seed(frames)
    for name, module in model.named_modules():
        if not name.endswith(tuple(f"motion_modules.{j}" for j in range(3))):
            continue
        channels = module.temporal_transformer.proj_in.in_features
        x = torch.randn(videos * frames, channels, 6, 5)
        ours = module(x, frames)
        expected = reference.motion_module(sd, name, x, frames)
        assert (ours - expected).abs().max().item() <= 1e-5, name
        assert (ours - x).abs().max().item() > 1e-2  # the module really moves the features


@pytest.mark.parametrize("frames", [33, 64])
def test_animatelcm_runs_past_32_frames_on_the_table_its_code_builds(fixtures_dir, frames):
    """AnimateLCM's files leave the positional tables out; the module builds the 64 rows AnimateLCM's code
    builds, and all of them reach the frames."""
    model, sd = small_model(fixtures_dir, "animatelcm")
    assert not any("pos_encoder" in k for k in sd) and model.spec.max_frames == 64
    name = "mid_block.motion_modules.0"
    module = model.get_submodule(name)
    x = torch.randn(frames, 128, 3, 2, generator=torch.Generator().manual_seed(frames))
    assert (module(x, frames) - reference.motion_module(sd, name, x, frames)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)  # packed: 10 sequences a row, and the third holds both videos
def test_frames_attend_to_each_other_only_within_their_video(fixtures_dir, monkeypatch, layout):
    monkeypatch.setattr(layers, "sequences_for", LAYOUTS[layout])
    model, _ = small_model(fixtures_dir, "v2")
    module = model.down_blocks[0].motion_modules[0]
    torch.manual_seed(0)
    x = torch.randn(2 * 8, 32, 5, 5)
    both = module(x, 8)
    alone = module(x[8:], 8)  # packed: other rows, so fp32 rounding in another order
    assert (both[8:] - alone).abs().max() <= 1e-5
    changed = x.clone()
    changed[3] += 1.0  # a frame of the first video
    after = module(changed, 8)
    assert torch.equal(after[8:], both[8:])
    assert (after[:8] - both[:8]).abs().amax(dim=(1, 2, 3)).min() > 0  # every frame of video 1 sees it


@pytest.mark.parametrize("sequences,frames,pack", [(2 * 64 * 64, 16, 8), (30, 16, 6), (13, 16, 1), (90, 5, 18),
                                                   (30, 1, 30), (64, 32, 4), (64, 200, 1)])
def test_sequences_are_packed_into_rows_of_about_128_tokens(sequences, frames, pack):
    assert sequences_per_row(sequences, frames) == pack


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_only_nvidia_devices_pack_sequences(device):
    """Packing was measured on NVIDIA cards; elsewhere (a CPU; "meta" stands in for Apple's MPS, Intel's XPU,
    DirectML; ROCm, whose PyTorch reports its cards as "cuda", is left out by torch.version.hip) each row holds
    one sequence and the attention kernel gets no mask."""
    assert type(sequences_for(torch.empty(2 * 16, 8, 4, 4, device=device), 16)) is StridedSequences


def test_the_packing_mask_keeps_each_sequence_to_itself():
    mask = block_diagonal_mask(3, 2, torch.empty(0, dtype=torch.float16))
    allowed = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                            [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert mask.dtype == torch.float16
    assert torch.equal(mask == 0, allowed) and torch.equal(mask == float("-inf"), ~allowed)
    assert block_diagonal_mask(1, 16, torch.empty(0)) is None


def test_attention_that_returns_the_tokens_layout_gives_the_same_numbers(fixtures_dir, monkeypatch):
    """What ComfyUI's attention_pytorch does when it splits a batch over 2**15 (on NVIDIA cards)."""
    def tokens_layout(q, k, v, heads, mask=None, **kwargs):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)
    monkeypatch.setattr(layers, "sequences_for", LAYOUTS["packed (a GPU)"])
    model, sd = small_model(fixtures_dir, "v2")
    x = torch.randn(16, 32, 13, 5)  # 65 sequences, 5 a row
    expected = reference.motion_module(sd, "down_blocks.0.motion_modules.1", x, 16)
    assert (model.down_blocks[0].motion_modules[1](x, 16, tokens_layout) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_more_heads_than_a_cuda_kernel_takes_go_in_slices(fixtures_dir, monkeypatch, layout):
    """The strided layout has h·w·8 heads (73,728 at 768×768, over CUDA's 65,535); here a limit of 100 makes
    this 13×5 call (520 heads strided) run in 6 slices, with the reference's numbers; the packed layout has
    8 heads and runs whole."""
    calls = []

    def counting(q, k, v, heads, mask=None, **kwargs):
        calls.append(heads)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    monkeypatch.setattr(layers, "sequences_for", LAYOUTS[layout])
    monkeypatch.setattr(layers, "KERNEL_HEADS", 100)
    model, sd = small_model(fixtures_dir, "v2")
    x = torch.randn(16, 32, 13, 5)
    expected = reference.motion_module(sd, "down_blocks.0.motion_modules.1", x, 16)
    assert (model.down_blocks[0].motion_modules[1](x, 16, counting) - expected).abs().max() <= 1e-5
    slices = [100] * 5 + [20] if "strided" in layout else [8]
    assert calls == slices * 2  # both attentions of the module


def test_motion_scale_one_is_the_original_and_other_scales_change_the_output(fixtures_dir):
    model, sd = small_model(fixtures_dir, "v3")
    module = model.up_blocks[3].motion_modules[2]
    x = torch.randn(16, 32, 4, 4)
    expected = reference.motion_module(sd, "up_blocks.3.motion_modules.2", x, 16)
    assert (module(x, 16, motion_scale=1.0) - expected).abs().max() <= 1e-5
    assert (module(x, 16, motion_scale=1.5) - expected).abs().max() > 1e-3


def test_positional_table_is_the_sinusoid_of_the_formats():
    ours = sinusoidal_positions(32, 320)
    assert torch.allclose(ours, reference.sinusoidal_table(32, 320), atol=1e-5)  # fp32 vs fp64 sin
    assert torch.equal(sinusoidal_positions(24, 320), ours[:, :24])  # rows do not depend on the length


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_close_to_fp32(fixtures_dir, dtype):
    model, sd = small_model(fixtures_dir, "v2")
    module = model.mid_block.motion_modules[0]
    x = torch.randn(8, 128, 4, 4)
    full = module(x, 8)
    half = MotionModel.from_state_dict(detect_spec(sd), {k: v.to(dtype) for k, v in sd.items()})
    out = half.mid_block.motion_modules[0](x.to(dtype), 8).float()
    assert (out - full).abs().max() / full.abs().max() < 0.05


def test_output_keeps_the_unets_memory_layout(fixtures_dir):
    """A channels-last output would be handed to every later layer of the UNet and slow its convolutions."""
    model, _ = small_model(fixtures_dir, "v2")
    module = model.down_blocks[0].motion_modules[0]
    x = torch.randn(8, 32, 4, 6)
    out = module(x, 8)
    assert out.is_contiguous() and out.stride() == x.stride()
