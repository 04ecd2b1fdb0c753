"""Detection of every fixture and the refusal, with a clear message, of everything else."""
import os
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
from torch import nn

from animatediff.errors import ModelFileError
from animatediff.motion_module import MotionVersion, detect_spec, load_motion_model, read_state_dict
from animatediff.motion_module.model import MotionModel
from random_weights import (SMALL_SDXL_CHANNELS, hotshotxl_state_dict, image_encoder_shapes, motion_module_state_dict,
                            sinusoidal_pe)

SMALL = (32, 64, 128, 128)
FULL = {"v1": (24, None, 20), "v2": (32, 1280, 21), "v3": (32, None, 20)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mm_v1.ckpt", "mm_v1.safetensors", "mm_v2.ckpt", "mm_v2.safetensors",
                                  "mm_v3.ckpt", "mm_v3.safetensors"])
def test_full_size_fixtures_are_detected(fixtures_dir, name):
    version = name[3:5]
    spec = detect_spec(read_state_dict(fixtures_dir / name))
    max_frames, mid, count = FULL[version]
    assert (spec.version, spec.max_frames, spec.mid_channels, spec.module_count) == (version, max_frames, mid, count)
    assert spec.down_channels == (320, 640, 1280, 1280) and spec.up_channels == (1280, 1280, 640, 320)


@pytest.mark.slow
def test_full_size_v2_has_the_released_parameter_count(fixtures_dir):
    model = load_motion_model(fixtures_dir / "mm_v2.safetensors")
    params = sum(p.numel() for p in model.parameters())
    assert params == 453_209_280


@pytest.mark.slow
def test_the_full_size_sdxl_module_is_detected_with_the_released_parameter_count(fixtures_dir):
    """mm_sdxl_v10_beta: 15 modules on SDXL's levels (320, 640, 1280), 236,779,200 parameters besides the tables
    (FORMATS.md §1)."""
    model = load_motion_model(fixtures_dir / "mm_sdxl.safetensors")
    spec = model.spec
    assert (spec.version, spec.base, spec.max_frames, spec.mid_channels, spec.module_count) == ("SDXL", "SDXL", 32,
                                                                                                None, 15)
    assert spec.down_channels == (320, 640, 1280) and spec.up_channels == (1280, 640, 320)
    assert spec.described == "an AnimateDiff SDXL motion module"
    assert sum(p.numel() for k, p in model.state_dict().items() if not k.endswith(".pe")) == 236_779_200


@pytest.mark.parametrize("name", ["mm_v1.safetensors", "mm_v2.safetensors", "mm_v3.safetensors", "mm_v2.ckpt"])
def test_small_fixtures_are_detected(fixtures_dir, name):
    spec = detect_spec(read_state_dict(fixtures_dir / "small" / name))
    assert spec.version == name[3:5] and spec.down_channels == SMALL


def test_ckpt_containers_plain_wrapped_and_with_config_give_the_same_tensors(tmp_path):
    sd = motion_module_state_dict("v3", channels=SMALL, dtype=torch.float32)
    torch.save(sd, tmp_path / "plain.ckpt")
    torch.save({"state_dict": sd}, tmp_path / "wrapped.ckpt")
    torch.save({**sd, "animatediff_config": {"use_motion_module": True}}, tmp_path / "config.ckpt")
    for name in ("plain.ckpt", "wrapped.ckpt", "config.ckpt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
        assert detect_spec(loaded).version == MotionVersion.V3


class Explode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "executed"
    Explode.marker = marker
    sd = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
    torch.save({"state_dict": {**sd, "payload": Explode()}}, tmp_path / "evil.ckpt")
    torch.save({"payload": Explode()}, tmp_path / "legacy_evil.ckpt", _use_new_zipfile_serialization=False)
    for name in ("evil.ckpt", "legacy_evil.ckpt"):
        with pytest.raises(ModelFileError, match=f"{name}.*could run code"):
            read_state_dict(tmp_path / name)
    assert not marker.exists()


def refusal(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, dict):
        if name.endswith(".safetensors"):
            safetensors.torch.save_file(content, path)
        else:
            torch.save(content, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        detect_spec(read_state_dict(path), path)
    with pytest.raises(ModelFileError) as loading:  # the loader checks against the model it builds, its own way
        load_motion_model(path)
    assert str(path) in str(info.value) and str(loading.value) == str(info.value)
    return str(info.value)


def test_files_that_are_not_motion_modules_say_what_they_are(tmp_path):
    t = torch.zeros(4, 4)
    assert "Stable Diffusion checkpoint" in refusal(tmp_path, "sd.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": t})
    assert "MotionLoRA" in refusal(tmp_path, "ml.safetensors", {
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
        ".processor.to_q_lora.down.weight": t})
    assert "DomainAdapter" in refusal(tmp_path, "ad.ckpt", {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight": t})
    sparsectrl = {**motion_module_state_dict("v3", channels=SMALL, dtype=torch.float32),
                  "controlnet_cond_embedding.conv_in.weight": t, "controlnet_down_blocks.0.weight": t,
                  "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": t}
    assert "SparseCtrl" in refusal(tmp_path, "v3_sd15_sparsectrl_rgb.ckpt", sparsectrl)
    assert "ControlNet in diffusers' format" in refusal(tmp_path, "cn.safetensors", {
        "controlnet_cond_embedding.conv_in.weight": t, "controlnet_down_blocks.0.weight": t.clone()})
    assert "not an AnimateDiff motion module" in refusal(tmp_path, "x.safetensors", {"foo.weight": t})


def test_broken_files_are_refused_with_advice(tmp_path):
    assert "not a PyTorch checkpoint" in refusal(tmp_path, "text.ckpt", b"hello, I am a text file\n")
    assert "not a PyTorch checkpoint" in refusal(tmp_path, "empty.ckpt", b"")
    legacy = motion_module_state_dict("v1", channels=SMALL, dtype=torch.float32)
    torch.save(legacy, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert detect_spec(read_state_dict(tmp_path / "legacy.ckpt")).version == MotionVersion.V1
    assert "not a readable .safetensors" in refusal(tmp_path, "bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    sd = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
    torch.save(sd, tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    assert "truncated" in refusal(tmp_path, "cut.ckpt", data[: len(data) // 2])


def test_a_renamed_file_is_read_by_what_it_holds(tmp_path):
    """A .safetensors file named .ckpt (or the other way round) is read as what it is, not refused as damaged."""
    sd = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
    safetensors.torch.save_file(sd, tmp_path / "was_safetensors.ckpt")
    torch.save(sd, tmp_path / "was_ckpt.safetensors")
    torch.save(sd, tmp_path / "was_old_ckpt.sft", _use_new_zipfile_serialization=False)
    for name in ("was_safetensors.ckpt", "was_ckpt.safetensors", "was_old_ckpt.sft"):
        read = read_state_dict(tmp_path / name)
        assert read.keys() == sd.keys() and all(torch.equal(read[k], v) for k, v in sd.items()), name


def test_hotshotxls_temporal_layers_load_as_the_modules_they_are(tmp_path):
    """hsxl_temporal_layers: `temporal_attentions.j` without the `temporal_transformer.` level, tables named
    `positional_encoding` (24 rows); the same module as AnimateDiff's, so each weight lands under its name."""
    hotshot = hotshotxl_state_dict(SMALL_SDXL_CHANNELS, seed=2, dtype=torch.float32)
    assert any(".temporal_attentions.0.norm.weight" in k for k in hotshot)
    safetensors.torch.save_file(hotshot, tmp_path / "hsxl_temporal_layers.safetensors")
    model = load_motion_model(tmp_path / "hsxl_temporal_layers.safetensors")
    spec = model.spec
    assert (spec.version, spec.base, spec.max_frames, spec.module_count, spec.normalises_over_frames) == (
        "HotshotXL", "SDXL", 24, 15, True)
    assert spec.described == "a HotshotXL motion module"
    ours = model.state_dict()
    assert len(ours) == len(hotshot)
    for key, value in hotshot.items():
        name = re.sub(r"^(\w+\.\d+)\.temporal_attentions\.(\d+)\.", r"\1.motion_modules.\2.temporal_transformer.", key)
        assert torch.equal(ours[name.replace("positional_encoding", "pe")], value), key
    damaged = {k: v for k, v in hotshot.items() if k != "up_blocks.2.temporal_attentions.1.proj_out.bias"}
    assert ("does not have the layout of a HotshotXL motion module (its weights named as in AnimateDiff's original "
            "release): 1 weights are missing (e.g. `up_blocks.2.motion_modules.1.temporal_transformer.proj_out.bias`)"
            ) in refusal(tmp_path, "damaged.safetensors", damaged)


def test_sdxl_variants_unknown_and_lopsided_modules_are_refused(tmp_path):
    sdxl = motion_module_state_dict("sdxl", SMALL_SDXL_CHANNELS, dtype=torch.float32)
    mid = motion_module_state_dict("v2", SMALL, dtype=torch.float32)
    with_mid = {**sdxl, **{k: v for k, v in mid.items() if k.startswith("mid_block")}}
    assert "is an SDXL motion module of a variant this pack does not know" in refusal(tmp_path, "mid.safetensors",
                                                                                      with_mid)
    no_tables = {k: v for k, v in sdxl.items() if "pos_encoder" not in k}
    assert "an SDXL motion module of a variant" in refusal(tmp_path, "nopos_xl.safetensors", no_tables)
    sd = motion_module_state_dict("v3", channels=SMALL, dtype=torch.float32)
    cut = {k: v for k, v in sd.items() if not k.startswith(("down_blocks.3", "up_blocks.3"))}
    assert "has up blocks of [128, 128, 64] channels for down blocks of [32, 64, 128], which no UNet has" in refusal(
        tmp_path, "cut.safetensors", cut)
    five = {**sd, **{k.replace("down_blocks.0", "down_blocks.4"): v.clone() for k, v in sd.items()
                     if k.startswith("down_blocks.0")}}
    assert "has motion modules for 5 down and 4 up blocks; SD1.5 motion modules have 4 of each, SDXL's 3" in refusal(
        tmp_path, "five.safetensors", five)


def test_positionless_modules_are_refused(tmp_path):
    sd = motion_module_state_dict("v3", channels=SMALL, dtype=torch.float32)
    positionless = {k: v for k, v in sd.items() if "pos_encoder" not in k}  # and, as v3, no mid block
    assert "without positional tables or a mid-block module" in refusal(tmp_path, "nopos.safetensors", positionless)
    half = {k: v for k, v in sd.items() if not k.endswith("attention_blocks.0.pos_encoder.pe")}
    assert "lacks the positional table" in refusal(tmp_path, "half.safetensors", half)


def test_animatelcm_is_told_from_its_missing_tables(fixtures_dir, tmp_path):
    sd = read_state_dict(fixtures_dir / "small" / "mm_animatelcm.safetensors")
    spec = detect_spec(sd)
    assert (spec.version, spec.max_frames, spec.mid_channels, spec.module_count) == ("AnimateLCM", 64, 128, 21)
    key = "up_blocks.1.motion_modules.2.temporal_transformer.proj_in.weight"
    damaged = {k: v for k, v in sd.items() if k != key}
    assert f"layout of an AnimateLCM motion module: 1 weights are missing (e.g. `{key}`)" in refusal(
        tmp_path, "damaged.safetensors", damaged)


def test_animatelcm_i2v_is_told_from_its_image_encoder_whose_layout_is_checked(fixtures_dir, tmp_path):
    sd = read_state_dict(fixtures_dir / "small" / "mm_animatelcm_i2v.safetensors")
    spec = detect_spec(sd)
    assert (spec.version, spec.max_frames, spec.image_encoder, spec.module_count) == ("AnimateLCM-I2V", 64, True, 21)
    assert "layout of an AnimateLCM-I2V motion module: 1 weights have the wrong shape (e.g. `img_encoder.body." \
        "2.in_conv.weight`" in refusal(tmp_path, "i2v.safetensors", {**sd, "img_encoder.body.2.in_conv.weight":
                                                                     torch.zeros(64, 32, 3, 3)})
    with_tables = {**sd, **read_state_dict(fixtures_dir / "small" / "mm_v2.safetensors")}
    assert "image encoder (`img_encoder.`) but positional tables" in refusal(tmp_path, "mixed.safetensors",
                                                                             with_tables)
    # the full-size layout the loader expects is the released one, as the fixture generator lists it by hand
    full = MotionModel.without_weights(replace(spec, down_channels=(320, 640, 1280, 1280),
                                               up_channels=(1280, 1280, 640, 320), mid_channels=1280)).shapes()
    listed = {k: torch.Size(s) for k, s in image_encoder_shapes((320, 640, 1280, 1280))}
    assert {k: s for k, s in full.items() if k.startswith("img_encoder.")} == listed and len(listed) == 38


@pytest.mark.slow
def test_a_full_size_animatelcm_file_loads_with_the_formulas_tables(fixtures_dir):
    """v2's layout without the tables: the loader builds AnimateLCM's 64 rows from the formula, in the dtype
    the weights are loaded in (here the fp32 a CPU runs in, from an fp16 file)."""
    model = load_motion_model(fixtures_dir / "mm_animatelcm.safetensors", dtype=torch.float32)
    assert model.spec.version == MotionVersion.ANIMATELCM and model.spec.max_frames == 64
    assert sum(p.numel() for p in model.parameters()) == 453_209_280
    tables = {k: v for k, v in model.state_dict().items() if "pos_encoder" in k}
    assert len(tables) == 42 and all(v.dtype == torch.float32 for v in tables.values())
    for key, table in tables.items():
        expected = sinusoidal_pe(64, table.shape[-1])  # the fixtures' own formula, in float64
        assert (table - expected).abs().max() <= 1e-5, key  # float32 angles up to 63, as in AnimateLCM's code


def test_damaged_layouts_name_the_bad_weight(tmp_path):
    sd = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
    key = "up_blocks.1.motion_modules.2.temporal_transformer.proj_in.weight"
    missing = {k: v for k, v in sd.items() if k != key}
    assert f"missing (e.g. `{key}`)" in refusal(tmp_path, "missing.safetensors", missing)
    assert "wrong shape" in refusal(tmp_path, "shape.safetensors", {**sd, key: torch.zeros(3, 3)})
    ints = {**sd, key: sd[key].to(torch.int32)}
    assert "not floating point" in refusal(tmp_path, "int.safetensors", ints)


class LinearWeightsWhenLoaded(nn.Linear):
    """A Linear with no weights until a state dict is loaded into it, as ComfyUI's ops build them under dynamic
    VRAM (so that a model being loaded never holds its memory twice)."""

    def __init__(self, in_features, out_features, bias=True):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = self.bias = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for name in ("weight", "bias"):
            if prefix + name in state_dict:
                setattr(self, name, nn.Parameter(state_dict[prefix + name], requires_grad=False))


def test_layers_that_get_their_weights_when_loaded_are_checked_and_loaded_the_same(tmp_path):
    ops = SimpleNamespace(Linear=LinearWeightsWhenLoaded, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)
    sd = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
    safetensors.torch.save_file(sd, tmp_path / "mm.safetensors")
    loaded = load_motion_model(tmp_path / "mm.safetensors", ops=ops).state_dict()
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], v) for k, v in sd.items())

    key = "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.weight"
    safetensors.torch.save_file({**sd, key: torch.zeros(64, 64)}, tmp_path / "shape.safetensors")
    with pytest.raises(ModelFileError, match=f"wrong shape \\(e.g. `{key}` is \\(64, 64\\), expected \\(64, 256\\)"):
        load_motion_model(tmp_path / "shape.safetensors", ops=ops)


def test_pia_is_told_from_its_input_convolution_whose_layout_is_checked(fixtures_dir, tmp_path):
    """PIA's keys are v3's plus conv_in: told apart by conv_in, and run as v1 (frame-wide GroupNorms)."""
    sd = read_state_dict(fixtures_dir / "small" / "mm_pia.ckpt")
    spec = detect_spec(sd)
    assert (spec.version, spec.max_frames, spec.mid_channels, spec.module_count) == ("PIA", 32, None, 20)
    assert spec.input_conv and spec.normalises_over_frames and spec.kind == "PIA"
    assert not detect_spec(read_state_dict(fixtures_dir / "small" / "mm_v3.safetensors")).normalises_over_frames
    four_channels = {**sd, "conv_in.weight": torch.zeros(32, 4, 3, 3)}
    assert "layout of a PIA motion module: 1 weights have the wrong shape (e.g. `conv_in.weight` is (32, 4, 3, 3), " \
        "expected (32, 9, 3, 3))" in refusal(tmp_path, "pia.safetensors", four_channels)
    with_mid = {**sd, **read_state_dict(fixtures_dir / "small" / "mm_v2.safetensors")}
    assert "input convolution (`conv_in`) like PIA's, but not PIA's layout" in refusal(tmp_path, "mixed.safetensors",
                                                                                      with_mid)


@pytest.mark.slow
def test_a_full_size_pia_file_has_the_released_parameter_count(fixtures_dir):
    """pia.ckpt's 1,673,373,725 bytes hold 20 modules (v3's layout), their tables and conv_in, in fp32."""
    model = load_motion_model(fixtures_dir / "mm_pia.safetensors")
    assert model.spec.version == MotionVersion.PIA
    assert sum(p.numel() for p in model.parameters()) == 417_137_600 + 320 * 9 * 3 * 3 + 320
    assert tuple(model.conv_in.weight.shape) == (320, 9, 3, 3)


@pytest.mark.parametrize("name", ["mm.sft", "mm.SAFETENSORS"])
def test_safetensors_files_by_any_name_comfyui_lists_are_read_as_safetensors(fixtures_dir, tmp_path, name):
    (tmp_path / name).write_bytes((fixtures_dir / "small" / "mm_v2.safetensors").read_bytes())
    assert detect_spec(read_state_dict(tmp_path / name)).version == "v2"


def test_fp8_weights_load_and_are_checked(fixtures_dir, tmp_path):
    """ComfyUI's --fp8_e4m3fn-unet asks for fp8 weights; a file may also be stored in fp8."""
    path = fixtures_dir / "small" / "mm_v2.safetensors"
    fp8 = load_motion_model(path, dtype=torch.float8_e4m3fn)
    assert next(fp8.parameters()).dtype == torch.float8_e4m3fn
    stored = {k: v.to(torch.float8_e4m3fn) for k, v in read_state_dict(path).items()}
    safetensors.torch.save_file(stored, tmp_path / "fp8.safetensors")
    assert load_motion_model(tmp_path / "fp8.safetensors", dtype=torch.float32).spec.version == "v2"
    broken = {**stored, "mid_block.motion_modules.0.temporal_transformer.norm.bias": torch.full((128,), float("nan"))
              .to(torch.float8_e4m3fn)}
    safetensors.torch.save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(ModelFileError, match="NaN or infinite values"):
        load_motion_model(tmp_path / "broken.safetensors")


def in_diffusers_names(sd: dict) -> dict:
    """An original-format motion module as diffusers' converter (convert_animatediff_motion_module_to_diffusers.py)
    saves it as a MotionAdapter: `temporal_transformer.` dropped, attention_blocks.0/1 → attn1/attn2, norms.0/1 →
    norm1/norm2, ff_norm → norm3, and one positional table per module (`transformer_blocks.0.pos_embed.pe`)."""
    renames = [("temporal_transformer.", ""), ("attention_blocks.0.pos_encoder.pe", "pos_embed.pe"),
               ("attention_blocks.0.", "attn1."), ("attention_blocks.1.", "attn2."), ("norms.0.", "norm1."),
               ("norms.1.", "norm2."), ("ff_norm.", "norm3.")]
    out = {}
    for key, value in sd.items():
        if key.endswith("attention_blocks.1.pos_encoder.pe"):
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value.clone()
    return out


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "pia", "sdxl"])
def test_a_motion_adapter_in_diffusers_format_loads_as_its_original_release(tmp_path, version):
    channels = SMALL_SDXL_CHANNELS if version == "sdxl" else SMALL
    original = motion_module_state_dict(version, channels, seed=5, dtype=torch.float32)
    diffusers = in_diffusers_names(original)
    modules = sum(k.endswith(".attention_blocks.1.pos_encoder.pe") for k in original)
    assert len(diffusers) == len(original) - modules and not any("temporal" in k for k in diffusers)
    safetensors.torch.save_file(original, tmp_path / "original.safetensors")
    safetensors.torch.save_file(diffusers, tmp_path / "diffusion_pytorch_model.safetensors")
    assert detect_spec(diffusers) == detect_spec(original)
    ours = load_motion_model(tmp_path / "diffusion_pytorch_model.safetensors").state_dict()
    theirs = load_motion_model(tmp_path / "original.safetensors").state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_diffusers_files_that_are_not_a_motion_adapter_are_named(tmp_path):
    adapter = in_diffusers_names(motion_module_state_dict("v2", SMALL, dtype=torch.float32))
    t = torch.zeros(4, 4)
    whole = {**adapter, "down_blocks.0.resnets.0.conv1.weight": t, "conv_in.weight": torch.zeros(32, 4, 3, 3)}
    assert "whole UNet with motion modules in diffusers' layout" in refusal(tmp_path, "unet.safetensors", whole)
    hotshot_unet = {**hotshotxl_state_dict(SMALL_SDXL_CHANNELS, dtype=torch.float32),
                    "down_blocks.0.resnets.0.conv1.weight": t, "conv_in.weight": torch.zeros(32, 4, 3, 3)}
    assert "HotshotXL's hsxl_temporal_layers.safetensors" in refusal(tmp_path, "hotshot_unet.safetensors",
                                                                     hotshot_unet)
    peft = {"down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight": t,
            "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_B.weight": t.clone()}
    assert "is a MotionLoRA (a LoRA on the motion module's temporal attention), not a motion module" in refusal(
        tmp_path, "lora.safetensors", peft)
    converted_lora = {"unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight":
                      t}
    assert "is a MotionLoRA" in refusal(tmp_path, "lora2.safetensors", converted_lora)
