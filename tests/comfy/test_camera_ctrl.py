"""CameraCtrl inside a real in-process ComfyUI (CPU, tiny SD1.5 UNet, the small v3 motion module, a small CameraCtrl
in both released layouts from scripts/make_fixtures.py).

Every motion module's output in real sampling against the original math restated in tests/reference.py (the pose
encoder on the frames' Plücker rays; the merge in the first attention), in both CFG halves and per context window;
strength 0; the errors users can make; the base model left clean."""
import comfy.model_management
import folder_paths
import comfy.patcher_extension
import pytest
import safetensors.torch
import torch

import reference
from comfy_env import conditioning, ksample, probed, unet_state
from animatediff.errors import AnimateDiffError, ModelFileError
from animatediff.motion_module import read_state_dict
from animatediff.motion_module.camera_ctrl import load_camera_ctrl
from animatediff.nodes.camera_ctrl import ApplyCameraCtrl, LoadCameraPoses
from animatediff.nodes.context import ContextWindows
from animatediff.nodes.motion import ApplyMotionModule
from animatediff.patching.camera_ctrl import CAMERA_KEY, load_camera_ctrl_file
from animatediff.patching.motion import MotionLayer, load_motion_model_file
from animatediff.sampling.camera import camera_motion, plucker_embedding

FILE = "cameractrl.safetensors"
MERGE = ".temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.qkv_merge"
MODULES = [f"down_blocks.{i}.motion_modules.{j}" for i in range(4) for j in range(2)] + \
          [f"up_blocks.{i}.motion_modules.{j}" for i in range(4) for j in range(3)]


@pytest.fixture(scope="module")
def camera(fixtures_dir):
    return load_camera_ctrl_file(fixtures_dir / "small" / FILE, FILE)


@pytest.fixture(scope="module")
def weights(fixtures_dir):
    return read_state_dict(fixtures_dir / "small" / FILE)


@pytest.fixture(scope="module")
def mm_weights(fixtures_dir):
    return read_state_dict(fixtures_dir / "small" / "mm_v3.safetensors")


def path(frames=16):
    """Forward for 8 frames, then a turn to the left: every pose differs, in place and in heading."""
    return camera_motion("pan left", frames - 8, 1.0, camera_motion("move forward", 8, 1.0))


def animating(base, motion, camera, poses, strength=1.0, version="v3"):
    model = ApplyMotionModule().apply(base, motion[version], None, 1.0, "autoselect")[0]
    return ApplyCameraCtrl().apply(model, camera, poses, strength)[0]


def record_modules(model, motion, record, names=MODULES):
    """A clone whose every UNet call records each named motion module's input and output, and the call's window."""
    modules = {name: motion["v3"].model.get_submodule(name) for name in names}

    def call(unet, x, *args, **kwargs):
        options = args[4] if len(args) > 4 else kwargs["transformer_options"]
        entry = {"window": (options.get("ad_params") or {}).get("sub_idxs"), "chunks": len(options["cond_or_uncond"])}
        record.append(entry)
        return [m.register_forward_hook(lambda m, a, out, name=name: entry.update({name: (a[0], out)}) and None)
                for name, m in modules.items()]
    return probed(model, call)


def level_of(name: str) -> int:
    """CameraCtrl's routing: down block i takes the encoder's level i, up block i level 3 − i."""
    kind, block = name.split(".")[:2]
    return int(block) if kind == "down_blocks" else 3 - int(block)


def expected_output(weights, mm_weights, poses, window, height, name, before, strength=1.0):
    """The original: the pose encoder on the window's rays (relative to its first frame), the merge in attention
    block 0 of the module, the same feature for every video of the batch (cond and uncond). A latent whose side
    is not a multiple of 8 (the original would fail) gets the rays of the next multiple's frame, and each level's
    feature is cut to the module's input."""
    padded = -(-height // 8) * 8 * 8
    plucker = plucker_embedding(poses, window, height * 8, height * 8, grid=(padded, padded))
    feature = reference.cameractrl_pose_features(weights, plucker)[level_of(name)]
    feature = feature[..., :before.shape[-2], :before.shape[-1]]
    feature = feature.repeat(before.shape[0] // len(window), 1, 1, 1)
    merge = (weights[name + MERGE + ".weight"], weights[name + MERGE + ".bias"], feature, strength)
    return reference.motion_module(mm_weights, name, before, len(window), pose=merge)


def close(actual, expected, tolerance=2e-5):
    return (actual - expected).abs().max() <= tolerance * expected.abs().max()


def test_every_motion_module_follows_the_original_camera_math_in_both_cfg_halves(base, motion, camera, weights,
                                                                                 mm_weights):
    record, poses = [], path()
    ksample(record_modules(animating(base, motion, camera, poses), motion, record), steps=1)
    (r,) = record
    assert r["chunks"] == 2
    for name in MODULES:
        before, after = r[name]
        expected = expected_output(weights, mm_weights, poses, list(range(16)), 8, name, before)
        assert close(after, expected), name
        plain = reference.motion_module(mm_weights, name, before, 16)
        assert (after - plain).abs().max() > 1e-2 * plain.abs().max(), name  # the camera does change it


def test_each_context_window_gets_the_cameras_of_its_frames_relative_to_its_first(base, motion, camera, weights,
                                                                                 mm_weights):
    record, poses, names = [], path(24), ["down_blocks.1.motion_modules.0", "up_blocks.3.motion_modules.2"]
    model = ContextWindows().apply(animating(base, motion, camera, poses), 16, 4, "uniform_standard", "pyramid", 1,
                                   False)[0]
    ksample(record_modules(model, motion, record, names), frames=24, steps=1)
    assert [r["window"] for r in record] == [list(range(16)), list(range(8, 24))]
    for r in record:
        for name in names:
            before, after = r[name]
            assert close(after, expected_output(weights, mm_weights, poses, r["window"], 8, name, before)), name


def test_a_path_shorter_than_the_video_holds_its_last_pose_and_strength_scales_the_merge(base, motion, camera,
                                                                                        weights, mm_weights):
    record, poses, name = [], path(12), "up_blocks.1.motion_modules.1"
    ksample(record_modules(animating(base, motion, camera, poses, 0.4), motion, record, [name]), steps=1)
    before, after = record[0][name]
    # plucker_embedding takes the last pose for frames past the path's end
    assert close(after, expected_output(weights, mm_weights, poses, list(range(16)), 8, name, before, 0.4))
    held = plucker_embedding(poses, list(range(16)), 64, 64)
    assert torch.equal(held[12:], held[11:12].expand(4, -1, -1, -1))


def test_a_frame_that_is_not_of_multiples_of_64_pixels_gets_a_larger_frames_rays_cut_to_each_level(
        base, motion, camera, weights, mm_weights):
    record, poses = [], path()
    names = ["down_blocks.0.motion_modules.0", "down_blocks.2.motion_modules.1", "up_blocks.0.motion_modules.0"]
    ksample(record_modules(animating(base, motion, camera, poses), motion, record, names), size=12, steps=1)
    # the UNet rounds up (12, 6, 3, 2) where the encoder of a 16-latent frame gives 16, 8, 4, 2
    assert [tuple(record[0][n][0].shape[-2:]) for n in names] == [(12, 12), (3, 3), (2, 2)]
    for name in names:
        before, after = record[0][name]
        assert close(after, expected_output(weights, mm_weights, poses, list(range(16)), 12, name, before)), name


def test_strength_0_is_the_motion_module_alone_bit_for_bit(base, motion, camera):
    plain = ApplyMotionModule().apply(base, motion["v3"], None, 1.0, "autoselect")[0]
    assert torch.equal(ksample(animating(base, motion, camera, path(), 0.0), seed=5), ksample(plain, seed=5))
    assert not torch.equal(ksample(animating(base, motion, camera, path()), seed=5), ksample(plain, seed=5))


def test_windowed_sampling_is_repeatable_keeps_one_windows_features_and_none_after(base, motion, camera):
    model = ContextWindows().apply(animating(base, motion, camera, path(24)), 16, 4, "uniform_standard", "pyramid",
                                   1, False)[0]
    (condition,) = [w.__self__ for w in model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL,
                                                           CAMERA_KEY)]
    seen = []
    counted = probed(model, lambda *_: seen.append(len(condition.cache)))
    first = ksample(counted, frames=24, steps=2)
    assert set(seen) == {1} and condition.cache == {}
    assert torch.equal(ksample(counted, frames=24, steps=2), first)
    # it loads and offloads with the UNet
    assert [p.model for p in model.get_additional_models_with_key(CAMERA_KEY)] == [camera.model]


def test_the_pose_encoder_runs_only_in_calls_where_the_motion_module_acts(base, motion, camera):
    """Outside Apply Motion Module's start_percent–end_percent the motion layers sit out, and so does CameraCtrl."""
    model = ApplyMotionModule().apply(base, motion["v3"], None, 1.0, "autoselect", start_percent=0.4,
                                      end_percent=1.0)[0]
    model = ContextWindows().apply(ApplyCameraCtrl().apply(model, camera, path(24), 1.0)[0], 16, 4,
                                   "uniform_standard", "pyramid", 1, False)[0]
    record = []  # per call: "encoded" if the pose encoder ran for it (before the probe, inside it), then its sigma
    hook = camera.model.pose_encoder.register_forward_hook(lambda *_: record.append("encoded"))
    try:
        ksample(probed(model, lambda unet, x, t, *_: record.append(float(t[0])),
                       comfy.patcher_extension.WrappersMP.APPLY_MODEL), frames=24, steps=4)
    finally:
        hook.remove()
    sigmas = [r for r in record if r != "encoded"]
    encoded = [i > 0 and record[i - 1] == "encoded" for i, r in enumerate(record) if r != "encoded"]
    assert len(record) == len(sigmas) + sum(encoded)  # the encoder ran only right before calls
    threshold = base.get_model_object("model_sampling").percent_to_sigma(0.4)
    assert encoded == [s <= threshold for s in sigmas] and any(encoded) and not all(encoded)


def test_both_released_layouts_load_the_same_weights(fixtures_dir, camera):
    original = load_camera_ctrl(fixtures_dir / "small" / "cameractrl.ckpt")
    ours = camera.model.state_dict()
    assert original.state_dict().keys() == ours.keys()
    assert all(torch.equal(v, ours[k]) for k, v in original.state_dict().items())


def test_mistakes_are_named_and_the_base_stays_clean(base, motion, camera, fixtures_dir, tmp_path):
    comfy.model_management.unload_all_models()
    weights, plain = unet_state(base), ksample(base, seed=6)
    with pytest.raises(AnimateDiffError, match="has no motion module"):
        ApplyCameraCtrl().apply(base, camera, path(), 1.0)
    with pytest.raises(AnimateDiffError, match="trained with AnimateDiff v3's motion module .* AnimateDiff v2's"):
        animating(base, motion, camera, path(), version="v2")
    v2_after = ApplyMotionModule().apply(animating(base, motion, camera, path()), motion["v2"], None, 1.0,
                                         "autoselect")[0]
    with pytest.raises(AnimateDiffError, match="AnimateDiff v2's.*before AnimateDiff_ApplyCameraCtrl, not after"):
        ksample(v2_after, steps=1)
    with pytest.raises(AnimateDiffError, match="at most 16 frames at a time, and this call has 24.*ContextWindows"):
        ksample(animating(base, motion, camera, path()), frames=24, steps=1)
    area = [[c[0][0], {"area": (4, 4, 0, 0), "strength": 1.0}] for c in [conditioning(11)]]
    with pytest.raises(AnimateDiffError, match="ConditioningSetArea"):
        ksample(animating(base, motion, camera, path()), positive=area, steps=1)
    small = fixtures_dir / "small"
    with pytest.raises(ModelFileError, match="a CameraCtrl model, not a motion module.*AnimateDiff_LoadCameraCtrl"):
        load_motion_model_file(small / FILE, FILE)
    with pytest.raises(ModelFileError, match="is a motion module, not a CameraCtrl model"):
        load_camera_ctrl(small / "mm_v3.safetensors")
    merges_only = {k: v for k, v in read_state_dict(small / FILE).items() if "qkv_merge" in k}
    safetensors.torch.save_file(merges_only, tmp_path / "merges.safetensors")
    with pytest.raises(ModelFileError, match=r"not a CameraCtrl model: it lacks its pose encoder \(`encoder_conv_in`"):
        load_camera_ctrl(tmp_path / "merges.safetensors")
    damaged = {k: v for k, v in read_state_dict(small / FILE).items() if "encoder_down_attention_blocks.2.1" not in k}
    safetensors.torch.save_file(damaged, tmp_path / "damaged.safetensors")
    with pytest.raises(ModelFileError, match="layout of a CameraCtrl model: 14 weights are missing"):
        load_camera_ctrl(tmp_path / "damaged.safetensors")
    assert torch.equal(ksample(base, seed=6), plain)
    comfy.model_management.unload_all_models()
    assert not any(isinstance(m, MotionLayer) for m in base.model.diffusion_model.modules())
    assert all(torch.equal(weights[k], v) for k, v in unet_state(base).items())


def test_load_camera_poses_reads_files_as_editors_save_them_and_every_nth_line(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    rows = [f"{f * 33366} 0.47 0.84 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 {-0.1 * f:.6f}" for f in range(16)]
    text = "https://www.youtube.com/watch?v=example\r\n" + "\r\n".join(rows)
    (tmp_path / "plain.txt").write_bytes(text.encode())
    (tmp_path / "marked.txt").write_bytes("\ufeff".encode() + "\n".join(rows).encode())  # no URL line: the mark
    (tmp_path / "unicode.txt").write_bytes(text.encode("utf-16"))                     # Windows' "Unicode"
    (tmp_path / "unmarked_le.txt").write_bytes(text.encode("utf-16-le"))              # and without its mark
    (tmp_path / "unmarked_be.txt").write_bytes(text.encode("utf-16-be"))
    (tmp_path / "folder.txt").mkdir()
    (tmp_path / "picture.png").write_bytes(b"")
    listed = LoadCameraPoses.INPUT_TYPES()["required"]["pose_file"][0]
    assert listed == ["marked.txt", "plain.txt", "unicode.txt", "unmarked_be.txt", "unmarked_le.txt"]
    for name in listed:
        (poses,) = LoadCameraPoses().load(name, 1280, 720, 1)
        assert len(poses) == 16 and poses.aspect == 1280 / 720, name
        assert torch.equal(poses.world_to_camera[:, 2, 3], torch.tensor([-0.1 * f for f in range(16)],
                                                                        dtype=torch.float64).round(decimals=6))
    (poses,) = LoadCameraPoses().load("plain.txt", 640, 640, 8)
    assert poses.world_to_camera[:, 2, 3].tolist() == [0.0, -0.8] and poses.aspect == 1.0
    with pytest.raises(AnimateDiffError, match="missing.txt is not in ComfyUI's input folder"):
        LoadCameraPoses().load("missing.txt", 1280, 720, 1)
    (tmp_path.parent / "outside.txt").write_bytes(text.encode())
    for name in ("../outside.txt", str(tmp_path.parent / "outside.txt")):  # names that lead out of the folder
        with pytest.raises(AnimateDiffError, match="is not in ComfyUI's input folder"):
            LoadCameraPoses().load(name, 1280, 720, 1)
