"""Every kind of file the pack's users keep beside each other, handed to every loader of the pack that reads
files without ComfyUI: each is told apart by its names alone, and each loader refuses the others' files
saying what the file is and which node reads it, in the same words."""
import pytest
import safetensors.torch
import torch

from animatediff.errors import ModelFileError
from animatediff.lora import parse_domain_adapter, parse_motion_lora
from animatediff.motion_module.camera_ctrl import load_camera_ctrl
from animatediff.motion_module.file_kinds import FileKind, file_kind
from animatediff.motion_module.formats import load_motion_model, read_state_dict
from random_weights import (SMALL_SDXL_CHANNELS, cameractrl_state_dict, domain_adapter_state_dict, hotshotxl_state_dict,
                            motion_lora_state_dict, motion_module_state_dict, sparse_ctrl_state_dict)

SMALL = (32, 64, 128, 128)
T = torch.zeros(4, 4)
FILES = {
    FileKind.MOTION_MODULE: lambda: motion_module_state_dict("v2", SMALL, dtype=torch.float32),
    FileKind.MOTION_LORA: lambda: motion_lora_state_dict(SMALL, rank=2, dtype=torch.float32),
    FileKind.DOMAIN_ADAPTER: lambda: domain_adapter_state_dict(SMALL, rank=2, dtype=torch.float32),
    FileKind.SPARSECTRL: lambda: sparse_ctrl_state_dict("rgb", SMALL, dtype=torch.float32),
    FileKind.CAMERACTRL: lambda: cameractrl_state_dict(SMALL, dtype=torch.float32),
    # ComfyUI's own layouts, by their names (a ControlNet's also hold a UNet's `input_blocks.0.0.weight`)
    FileKind.CONTROLNET: lambda: {"input_blocks.0.0.weight": T, "input_hint_block.0.weight": T,
                                  "zero_convs.0.0.weight": T, "middle_block_out.0.weight": T},
    FileKind.CHECKPOINT: lambda: {"model.diffusion_model.input_blocks.0.0.weight": T,
                                  "first_stage_model.decoder.conv_in.weight": T},
    FileKind.IMAGE_LORA: lambda: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": T,
                                  "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": T},
}


def path_loader(load):
    def from_state_dict(state_dict, tmp_path):
        path = tmp_path / "picked.safetensors"
        safetensors.torch.save_file({k: v.clone() for k, v in state_dict.items()}, path)
        return load(path)
    return from_state_dict


LOADERS = {
    FileKind.MOTION_MODULE: path_loader(load_motion_model),
    FileKind.CAMERACTRL: path_loader(load_camera_ctrl),
    FileKind.MOTION_LORA: lambda sd, tmp_path: parse_motion_lora(sd, tmp_path / "picked.safetensors"),
    FileKind.DOMAIN_ADAPTER: lambda sd, tmp_path: parse_domain_adapter(sd, tmp_path / "picked.safetensors"),
}


@pytest.mark.parametrize("kind", FILES)
def test_each_kind_is_told_from_its_names(kind):
    assert file_kind(FILES[kind]()) == kind


@pytest.mark.parametrize("version", ["v1", "v3", "pia", "animatelcm", "animatelcm_i2v"])
def test_every_motion_module_family_is_a_motion_module(version):
    assert file_kind(motion_module_state_dict(version, SMALL)) == FileKind.MOTION_MODULE


def test_sdxl_modules_are_motion_modules_hotshotxls_too():
    assert file_kind(motion_module_state_dict("sdxl", SMALL_SDXL_CHANNELS)) == FileKind.MOTION_MODULE
    assert file_kind(hotshotxl_state_dict(SMALL_SDXL_CHANNELS)) == FileKind.MOTION_MODULE


def test_lora_names_of_other_tools_are_still_motion_loras():
    """kohya joins the names with underscores; peft names the halves lora_A / lora_B."""
    assert file_kind(["lora_unet_down_blocks_0_motion_modules_0_temporal_transformer_proj_in.lora_up.weight"]) \
        == FileKind.MOTION_LORA
    assert file_kind(["down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight"]) \
        == FileKind.MOTION_LORA


@pytest.mark.parametrize("wanted", LOADERS)
@pytest.mark.parametrize("kind", FILES)
def test_each_loader_names_what_another_kinds_file_is_and_where_it_goes(wanted, kind, tmp_path):
    if kind == wanted:
        return
    with pytest.raises(ModelFileError) as refused:
        LOADERS[wanted](FILES[kind](), tmp_path)
    what, where = FileKind.DESCRIPTIONS[kind]
    assert f"picked.safetensors: is {what}, not {FileKind.DESCRIPTIONS[wanted][0]}." in str(refused.value)
    assert where in str(refused.value)


@pytest.mark.parametrize("wanted", LOADERS)
def test_each_loader_reads_its_own_kind(wanted, tmp_path):
    assert LOADERS[wanted](FILES[wanted](), tmp_path)


def test_a_file_of_no_known_kind_says_what_the_loader_missed(tmp_path):
    for wanted, missing in [(FileKind.MOTION_MODULE, "no `motion_modules` weights"),
                            (FileKind.CAMERACTRL, "lacks its pose encoder")]:
        with pytest.raises(ModelFileError, match=missing):
            LOADERS[wanted]({"foo.weight": T}, tmp_path)
    safetensors.torch.save_file({"foo.weight": T}, tmp_path / "x.safetensors")
    assert file_kind(read_state_dict(tmp_path / "x.safetensors")) == FileKind.UNKNOWN
