"""CameraCtrl's pose encoder and its merge in both token layouts (packed: a GPU's; strided: a CPU's and torch.compile's)
against the independent reference (tests/reference.py), without ComfyUI."""
import pytest
import torch

import reference
from animatediff.motion_module import MotionModel, camera_ctrl, detect_spec, layers, read_state_dict
from animatediff.motion_module.camera_ctrl import load_camera_ctrl
from animatediff.motion_module.layers import CameraInput, sdpa_attention
from animatediff.motion_module.sequences import PackedSequences, StridedSequences
from animatediff.sampling.camera import camera_motion, plucker_embedding

LAYOUTS = {"packed (a GPU)": PackedSequences, "strided (a CPU, torch.compile)": StridedSequences}
MERGE = ".temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.qkv_merge"


def close(actual, expected, tolerance=2e-5):
    return (actual - expected).abs().max() <= tolerance * expected.abs().max()


@pytest.mark.parametrize("frames", [12, 16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_pose_encoder_and_the_merge_match_the_reference(fixtures_dir, monkeypatch, layout, frames):
    monkeypatch.setattr(camera_ctrl, "sequences_for", LAYOUTS[layout])
    monkeypatch.setattr(layers, "sequences_for", LAYOUTS[layout])
    small = fixtures_dir / "small"
    model = load_camera_ctrl(small / "cameractrl.safetensors")
    weights = read_state_dict(small / "cameractrl.safetensors")
    plucker = plucker_embedding(camera_motion("tilt up", frames, after=camera_motion("move left", 4)),
                                list(range(2, 2 + frames)), 64, 128)
    with torch.no_grad():
        features = model.pose_encoder(plucker, frames, sdpa_attention)
    expected = reference.cameractrl_pose_features(weights, plucker)
    assert [f.shape for f in features] == [f.shape for f in expected]
    assert all(close(f, e) for f, e in zip(features, expected))

    mm_weights = read_state_dict(small / "mm_v3.safetensors")
    motion = MotionModel.from_state_dict(detect_spec(mm_weights), mm_weights)
    name = "up_blocks.2.motion_modules.1"  # takes level 1: 64 channels, 4×8 here
    feature = features[1].repeat(2, 1, 1, 1)  # cond and uncond
    x = torch.randn(feature.shape, generator=torch.Generator().manual_seed(frames))
    merge, level = model.merge_for(name), model.places[name][1]
    with torch.no_grad():
        out = motion.get_submodule(name)(x, frames, camera=CameraInput(merge, feature, 0.7))
    pose = (weights[name + MERGE + ".weight"], weights[name + MERGE + ".bias"], feature, 0.7)
    assert level == 1 and close(out, reference.motion_module(mm_weights, name, x, frames, pose=pose))
