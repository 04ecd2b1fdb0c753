"""Checks of the CameraCtrl reference (tests/reference.py) and of its fixture files, on the small random weights."""
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

import reference

MERGE = "{}.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.qkv_merge"


@pytest.fixture(scope="module")
def cameractrl(fixtures_dir):
    return safetensors.torch.load_file(fixtures_dir / "small" / "cameractrl.safetensors")


def test_the_original_ckpt_holds_the_pruned_files_tensors_in_two_dicts(fixtures_dir, cameractrl):
    ckpt = torch.load(fixtures_dir / "small" / "cameractrl.ckpt", weights_only=True)
    encoder, merges = ckpt["pose_encoder_state_dict"], ckpt["attention_processor_state_dict"]
    assert (len(encoder), len(merges), len(cameractrl)) == (150, 40, 190)
    assert all(k.startswith("encoder_") for k in encoder) and all("qkv_merge" in k for k in merges)
    assert {**encoder, **merges}.keys() == cameractrl.keys()
    assert all(torch.equal(t, cameractrl[k]) for k, t in {**encoder, **merges}.items())


def test_the_full_size_file_has_the_released_counts(fixtures_dir):
    path = fixtures_dir / "cameractrl.safetensors"
    if not path.exists():
        pytest.skip("full-size fixtures not made (--small-only)")
    with safetensors.safe_open(str(path), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    size = lambda s: torch.Size(s).numel()  # noqa: E731
    assert len(shapes) == 190
    assert sum(size(s) for k, s in shapes.items() if not k.endswith(".pe")) == 218_224_000
    assert sum(size(s) for k, s in shapes.items() if k.endswith(".pe")) == 112_640


def test_pixel_unshuffle_by_hand_matches_torch_and_the_stated_channel_order():
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    for factor in (2, 8):
        assert torch.equal(reference.pixel_unshuffle(x, factor), F.pixel_unshuffle(x, factor))
    out = reference.pixel_unshuffle(x, 8)
    c, dy, dx, y, x_ = 2, 5, 3, 1, 2
    assert out[1, c * 64 + dy * 8 + dx, y, x_] == x[1, c, 8 * y + dy, 8 * x_ + dx]


@pytest.mark.parametrize("frames", [16, 5])
def test_pose_features_have_the_unet_sizes_per_level(cameractrl, frames):
    plucker = torch.randn(frames, 6, 64, 128, generator=torch.Generator().manual_seed(frames))
    features = reference.cameractrl_pose_features(cameractrl, plucker)
    assert [tuple(f.shape) for f in features] == [(frames, 32, 8, 16), (frames, 64, 4, 8),
                                                  (frames, 128, 2, 4), (frames, 128, 1, 2)]
    assert all(torch.isfinite(f).all() for f in features)
    changed = plucker.clone()
    changed[0] += 1.0
    moved = reference.cameractrl_pose_features(cameractrl, changed)[0]
    assert (moved[-1] - features[0][-1]).abs().max() > 0  # the temporal attention carries frame 0 to the last


def test_pose_features_stop_at_the_16_rows_of_the_table(cameractrl):
    with pytest.raises(RuntimeError):
        reference.cameractrl_pose_features(cameractrl, torch.randn(17, 6, 64, 64))


def test_the_merge_is_the_identity_at_scale_0_or_with_nothing_to_merge(fixtures_dir, cameractrl):
    mm = safetensors.torch.load_file(fixtures_dir / "small" / "mm_v3.safetensors")
    sd = {**mm, **cameractrl}
    frames, module = 8, "down_blocks.1.motion_modules.0"  # 64 channels, feature 1
    plucker = torch.randn(frames, 6, 64, 128, generator=torch.Generator().manual_seed(1))
    feature = reference.cameractrl_pose_features(cameractrl, plucker)[1]
    x = torch.randn(frames, 64, 4, 8, generator=torch.Generator().manual_seed(2))
    weight, bias = sd[MERGE.format(module) + ".weight"], sd[MERGE.format(module) + ".bias"]
    plain = reference.motion_module(sd, module, x, frames)
    assert torch.equal(reference.motion_module(sd, module, x, frames, (weight, bias, feature, 0.0)), plain)
    zeros = (torch.zeros_like(weight), torch.zeros_like(bias), torch.zeros_like(feature), 1.0)
    assert torch.equal(reference.motion_module(sd, module, x, frames, zeros), plain)
    merged = reference.motion_module(sd, module, x, frames, (weight, bias, feature, 1.0))
    assert (merged - plain).abs().max() > 1e-2
    # the feature matters, not just the merge's bias
    other = reference.motion_module(sd, module, x, frames, (weight, bias, torch.roll(feature, 1, 0), 1.0))
    assert (other - merged).abs().max() > 1e-3
