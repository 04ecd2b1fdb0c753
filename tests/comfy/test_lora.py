"""MotionLoRA stacks and the domain adapter inside a real in-process ComfyUI.

Expected weights are computed here with plain torch from the files (read without the pack's reader):
W + Σ strength · up @ down, in fp32, compared bit for bit with what ComfyUI merged.
"""
import logging
import shutil

import comfy.model_management
import comfy.patcher_extension
import folder_paths
import nodes as comfy_nodes
import pytest
import safetensors.torch
import torch

from comfy_env import ksample, probed, tiny_sd15, unet_state
from animatediff.errors import AnimateDiffError, ModelFileError
from animatediff.nodes.folders import ADAPTERS, LORAS, MOTION_LORAS, register_model_folders
from animatediff.nodes.lora import DomainAdapter, MotionLoRA
from animatediff.patching.motion import KEY, MotionLayer, apply_motion_model
from random_weights import motion_lora_state_dict

SMALL = (32, 64, 128, 128)
TEMPORAL_PROJECTIONS = 21 * 2 * 4  # v2 modules × attention blocks × (q, k, v, out)


def read_plain(path):
    if str(path).endswith(".safetensors"):
        return safetensors.torch.load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def lora_deltas(path, target_prefix=""):
    """target weight key -> up @ down, from the file's `<layer>.processor.<proj>_lora.{up,down}.weight`."""
    sd = read_plain(path)
    deltas = {}
    for key in sd:
        if key.endswith("_lora.up.weight"):
            layer = key[: -len("_lora.up.weight")]
            attention, projection = layer.split(".processor.")
            target = f"{attention}.{projection}" + (".0" if projection == "to_out" else "") + ".weight"
            deltas[target_prefix + target] = sd[key].float() @ sd[layer + "_lora.down.weight"].float()
    return deltas


def expected_merge(base, stack):
    """base + Σ strength · up @ down, one LoRA after the other (keys the base lacks are left out)."""
    out = {k: v.clone() for k, v in base.items()}
    for deltas, strength in stack:
        for key, delta in deltas.items():
            if key in out:
                out[key] = out[key] + strength * delta
    return out


@pytest.fixture(scope="module")
def folders(fixtures_dir, tmp_path_factory):
    """Temporary model folders holding the small fixtures, as a user's models/ would."""
    root = tmp_path_factory.mktemp("models")
    third = motion_lora_state_dict(SMALL, rank=4, seed=3, dtype=torch.float32)
    wide = motion_lora_state_dict((64, 128, 256, 256), rank=4, seed=4, dtype=torch.float32)
    content = {
        MOTION_LORAS: ["motion_lora_zoom.safetensors", "motion_lora_pan.ckpt", "mm_v2.safetensors",
                       "v3_adapter.ckpt"],
        ADAPTERS: ["v3_adapter.ckpt"],
        LORAS: ["v3_adapter.ckpt", "motion_lora_zoom.safetensors", "mm_v3.safetensors"],
    }
    register_model_folders()
    for folder, names in content.items():
        (root / folder).mkdir()
        for name in names:
            shutil.copy(fixtures_dir / "small" / name, root / folder / name)
        folder_paths.add_model_folder_path(folder, str(root / folder))
    safetensors.torch.save_file(third, str(root / MOTION_LORAS / "third.safetensors"))
    safetensors.torch.save_file(wide, str(root / MOTION_LORAS / "wide.safetensors"))
    # the same name in loras, with other content: the adapters folder must win
    shutil.copy(fixtures_dir / "small" / "motion_lora_pan.ckpt", root / LORAS / "only_in_loras.ckpt")
    shutil.copy(fixtures_dir / "small" / "v3_adapter.ckpt", root / LORAS / "adapter_in_loras.ckpt")
    yield {folder: root / folder for folder in content}
    for folder in content:
        folder_paths.folder_names_and_paths[folder][0].remove(str(root / folder))


def stack_of(*entries):
    stack = None
    for name, strength in entries:
        (stack,) = MotionLoRA().add(name, strength, prev_motion_lora=stack)
    return stack


def injected_weights(model, frames=2):
    """The weights the motion layers inside the UNet hold during a real sampling run (first UNet call)."""
    seen = {}

    def look(unet, x, *args, **kwargs):
        for layer in unet.modules():
            if isinstance(layer, MotionLayer) and not any(k.startswith(layer.name + ".") for k in seen):
                for k, v in layer.motion[0].state_dict().items():
                    seen[f"{layer.name}.{k}"] = v.detach().clone()
    ksample(probed(model, look), frames=frames, steps=1)
    return seen


def loaded_unet(model):
    """The UNet's weights while ComfyUI has `model` loaded (patches merged), then unloaded again."""
    comfy.model_management.load_models_gpu([model])
    weights = unet_state(model)
    comfy.model_management.unload_all_models()
    return weights


@pytest.mark.parametrize("entries", [
    [("motion_lora_zoom.safetensors", 1.0)],
    [("motion_lora_zoom.safetensors", 0.8), ("motion_lora_pan.ckpt", -0.5)],
    [("motion_lora_pan.ckpt", 1.0), ("third.safetensors", 0.6), ("motion_lora_zoom.safetensors", -1.3)],
])
def test_the_stack_merges_exactly_into_the_injected_layers(base, motion, folders, entries):
    before = {k: v.clone() for k, v in motion["v2"].model.state_dict().items()}
    model = apply_motion_model(base, motion["v2"], 1.0, "autoselect", stack_of(*entries))
    seen = injected_weights(model)
    expected = expected_merge(before, [(lora_deltas(folders[MOTION_LORAS] / n), s) for n, s in entries])
    assert seen.keys() == expected.keys()
    changed = [k for k in expected if not torch.equal(expected[k], before[k])]
    assert len(changed) == TEMPORAL_PROJECTIONS
    assert all(torch.equal(seen[k], expected[k]) for k in expected)
    comfy.model_management.unload_all_models()
    assert all(torch.equal(before[k], v) for k, v in motion["v2"].model.state_dict().items())


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_on_modules_without_a_mid_block_the_mid_layers_are_skipped_with_a_note(base, motion, folders, version,
                                                                              caplog):
    before = {k: v.clone() for k, v in motion[version].model.state_dict().items()}
    entries = [("motion_lora_zoom.safetensors", 1.0), ("motion_lora_pan.ckpt", 0.7)]
    with caplog.at_level(logging.INFO):
        model = apply_motion_model(base, motion[version], 1.0, "autoselect", stack_of(*entries))
    notes = [r.getMessage() for r in caplog.records if "mid-block layers skipped" in r.getMessage()]
    assert len(notes) == 1 and "motion_lora_zoom.safetensors: 8 mid-block" in notes[0]
    seen = injected_weights(model)
    expected = expected_merge(before, [(lora_deltas(folders[MOTION_LORAS] / n), s) for n, s in entries])
    assert sum(not torch.equal(expected[k], before[k]) for k in expected) == 20 * 2 * 4
    assert all(torch.equal(seen[k], expected[k]) for k in expected)


def test_the_motion_module_is_shared_and_never_changed_by_a_stack(base, motion, folders):
    mm = motion["v2"]
    a = apply_motion_model(base, mm, 1.0, "autoselect", stack_of(("motion_lora_zoom.safetensors", 1.0)))
    b = apply_motion_model(base, mm, 1.0, "autoselect", stack_of(("motion_lora_pan.ckpt", 1.0)))
    (pa,), (pb,) = a.additional_models[KEY], b.additional_models[KEY]
    assert pa.model is mm.model and pb.model is mm.model and pa is not mm.patcher
    assert mm.patcher.patches == {}
    assert len(pa.patches) == TEMPORAL_PROJECTIONS and len(pb.patches) == TEMPORAL_PROJECTIONS - 8  # pan: no mid


def test_weights_are_restored_after_sampling_with_and_without_the_stack(base, motion, folders, fixtures_dir):
    unet_before = unet_state(base)
    mm = motion["v2"]
    plain = apply_motion_model(base, mm, 1.0, "autoselect")
    first = ksample(plain, seed=4)
    stack = stack_of(("motion_lora_zoom.safetensors", 1.0), ("motion_lora_pan.ckpt", -0.5))
    (adapted,) = DomainAdapter().apply(base, "v3_adapter.ckpt", 1.0)
    ksample(apply_motion_model(adapted, mm, 1.0, "autoselect", stack), seed=4)
    # switching back from the patched clone to the plain one, with the module still loaded
    again = ksample(plain, seed=4)
    assert torch.equal(first, again)
    comfy.model_management.unload_all_models()
    assert all(torch.equal(unet_before[k], v) for k, v in unet_state(base).items())
    on_disk = read_plain(fixtures_dir / "small" / "mm_v2.safetensors")
    assert all(torch.equal(on_disk[k], v) for k, v in mm.model.state_dict().items())


def test_a_motion_lora_changes_the_animation_and_strength_zero_does_not(base, motion, folders):
    mm = motion["v2"]
    plain = ksample(apply_motion_model(base, mm, 1.0, "autoselect"), seed=6)
    off = ksample(apply_motion_model(base, mm, 1.0, "autoselect", stack_of(("motion_lora_zoom.safetensors", 0.0))),
                  seed=6)
    on = ksample(apply_motion_model(base, mm, 1.0, "autoselect", stack_of(("motion_lora_zoom.safetensors", 1.0))),
                 seed=6)
    half = ksample(apply_motion_model(base, mm, 1.0, "autoselect",
                                      stack_of(("motion_lora_zoom.safetensors", 0.5))), seed=6)
    scale = plain.abs().max()
    assert torch.equal(off, plain)
    assert (on - plain).abs().max() > 1e-2 * scale
    assert (half - plain).abs().max() > 1e-3 * scale and (half - on).abs().max() > 1e-3 * scale


def test_stacks_chain_without_changing_their_input(folders):
    (one,) = MotionLoRA().add("motion_lora_zoom.safetensors", 1.0)
    (two,) = MotionLoRA().add("motion_lora_pan.ckpt", -0.5, prev_motion_lora=one)
    (branch,) = MotionLoRA().add("third.safetensors", 0.3, prev_motion_lora=one)
    assert [(e.name, e.strength) for e in one] == [("motion_lora_zoom.safetensors", 1.0)]
    assert [(e.name, e.strength) for e in two] == [("motion_lora_zoom.safetensors", 1.0),
                                                  ("motion_lora_pan.ckpt", -0.5)]
    assert [e.name for e in branch] == ["motion_lora_zoom.safetensors", "third.safetensors"]
    assert all(isinstance(s, tuple) for s in (one, two, branch))


def test_wrong_files_are_refused_naming_the_file_and_the_right_node(base, motion, folders):
    with pytest.raises(ModelFileError, match=r"mm_v2.safetensors: is a motion module.*AnimateDiff_LoadMotionModule"):
        MotionLoRA().add("mm_v2.safetensors", 1.0)
    with pytest.raises(ModelFileError, match=r"v3_adapter.ckpt: is a domain adapter.*AnimateDiff_DomainAdapter"):
        MotionLoRA().add("v3_adapter.ckpt", 1.0)
    with pytest.raises(ModelFileError, match=r"motion_lora_zoom.safetensors: is a MotionLoRA.*AnimateDiff_MotionLoRA"):
        DomainAdapter().apply(base, "motion_lora_zoom.safetensors", 1.0)
    with pytest.raises(ModelFileError, match=r"mm_v3.safetensors: is a motion module.*AnimateDiff_LoadMotionModule"):
        DomainAdapter().apply(base, "mm_v3.safetensors", 1.0)
    # made for wider modules: its keys fit no layer of this one
    with pytest.raises(ModelFileError, match=r"wide.safetensors: does not fit the motion module mm_v2.safetensors: "
                                             r"168 of its layers have other channels"):
        apply_motion_model(base, motion["v2"], 1.0, "autoselect", stack_of(("wide.safetensors", 1.0)))
    with pytest.raises(AnimateDiffError, match=r"v3_adapter.ckpt: does not fit the model \(SD15\)"):
        DomainAdapter().apply(tiny_sd15(model_channels=64), "v3_adapter.ckpt", 1.0)


def test_the_adapter_list_holds_both_folders_and_prefers_the_adapters_folder(folders):
    names = DomainAdapter.INPUT_TYPES()["required"]["adapter_name"][0]
    assert names.count("v3_adapter.ckpt") == 1 and "adapter_in_loras.ckpt" in names
    assert names.index("v3_adapter.ckpt") < names.index("adapter_in_loras.ckpt")
    assert "motion_lora_zoom.safetensors" in MotionLoRA.INPUT_TYPES()["required"]["lora_name"][0]


@pytest.mark.parametrize("alpha", [1.0, 0.6, 1.7])
def test_the_adapter_merges_exactly_and_like_the_core_lora_loader(base, folders, alpha):
    # the same file, reached through models/loras by both nodes
    (ours,) = DomainAdapter().apply(base, "adapter_in_loras.ckpt", alpha)
    (core,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(base, "adapter_in_loras.ckpt", alpha)
    ours_w, core_w = loaded_unet(ours), loaded_unet(core)
    base_w = unet_state(base)
    deltas = {}
    for target, delta in lora_deltas(folders[LORAS] / "adapter_in_loras.ckpt").items():
        deltas[adapter_target(target)] = delta
    expected = expected_merge(base_w, [(deltas, alpha)])
    assert len(deltas) == 16 * 2 * 4 and all(k in base_w for k in deltas)
    assert all(torch.equal(ours_w[k], core_w[k]) for k in base_w)
    assert all(torch.equal(ours_w[k], expected[k]) for k in base_w)
    assert sum(not torch.equal(ours_w[k], base_w[k]) for k in base_w) == 16 * 2 * 4


def adapter_target(diffusers_key):
    """Diffusers name -> this tiny SD1.5 UNet's key, written out from the block layout (FORMATS.md §1)."""
    parts = diffusers_key.split(".")
    rest = ".".join(parts[parts.index("transformer_blocks"):])
    if parts[0] == "mid_block":
        return f"middle_block.1.{rest}"
    i, j = int(parts[1]), int(parts[3])
    if parts[0] == "down_blocks":
        return f"input_blocks.{3 * i + j + 1}.1.{rest}"
    return f"output_blocks.{3 * i + j}.1.{rest}"


def test_alpha_zero_leaves_the_unet_bit_identical_and_the_adapter_changes_the_output(base, motion, folders):
    (off,) = DomainAdapter().apply(base, "v3_adapter.ckpt", 0.0)
    base_w = unet_state(base)
    off_w = loaded_unet(off)
    assert all(torch.equal(off_w[k], base_w[k]) for k in base_w)
    (on,) = DomainAdapter().apply(base, "v3_adapter.ckpt", 1.0)
    for version in ("v1", "v2", "v3"):
        plain = ksample(apply_motion_model(base, motion[version], 1.0, "autoselect"), frames=4, seed=7)
        zero = ksample(apply_motion_model(off, motion[version], 1.0, "autoselect"), frames=4, seed=7)
        adapted = ksample(apply_motion_model(on, motion[version], 1.0, "autoselect"), frames=4, seed=7)
        assert torch.equal(zero, plain)
        assert (adapted - plain).abs().max() > 1e-2 * plain.abs().max(), version
