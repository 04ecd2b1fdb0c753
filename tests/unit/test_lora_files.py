"""MotionLoRA and domain-adapter files without ComfyUI: the fixtures' formats, parsing, fitting, refusals."""
import dataclasses
import re

import pytest
import safetensors.torch
import torch

from animatediff.errors import ModelFileError
from animatediff.lora import (MotionLoRA, add_to_stack, fit_domain_adapter, fit_motion_lora,
                              parse_domain_adapter, parse_motion_lora, target_key)
from animatediff.motion_module import read_state_dict
from animatediff.motion_module.file_kinds import FileKind, file_kind
from random_weights import domain_adapter_state_dict, motion_lora_state_dict, motion_module_state_dict

SMALL = (32, 64, 128, 128)
MOTION_KEY = re.compile(r"^(down_blocks\.[0-3]|up_blocks\.[0-3]|mid_block)\.motion_modules\.[0-2]\.temporal_transformer"
                        r"\.transformer_blocks\.0\.attention_blocks\.[01]\.processor\.to_(q|k|v|out)_lora\."
                        r"(up|down)\.weight$")
ADAPTER_KEY = re.compile(r"^(down_blocks\.[0-2]\.attentions\.[01]|mid_block\.attentions\.0|up_blocks\.[1-3]\."
                         r"attentions\.[0-2])\.transformer_blocks\.0\.attn[12]\.processor\.to_(q|k|v|out)_lora\."
                         r"(up|down)\.weight$")


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def save(tmp_path, name, sd):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        safetensors.torch.save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


def refusal(fn, *args):
    with pytest.raises(ModelFileError) as info:
        fn(*args)
    return str(info.value)


def test_full_size_motion_lora_has_the_released_layout_and_size():
    sd = motion_lora_state_dict(rank=64)
    assert all(MOTION_KEY.match(k) for k in sd) and len(sd) == 21 * 2 * 4 * 2
    assert sum(v.numel() for v in sd.values()) == 19_333_120  # FORMATS.md §3
    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_q_lora"
    assert sd[key + ".down.weight"].shape == (64, 320) and sd[key + ".up.weight"].shape == (320, 64)
    assert all(v.dtype == torch.float16 for v in sd.values())
    no_mid = motion_lora_state_dict(SMALL, rank=8, with_mid=False, dtype=torch.float32)
    assert len(no_mid) == 20 * 2 * 4 * 2 and not any(k.startswith("mid_block") for k in no_mid)


def test_full_size_domain_adapter_has_the_released_layout_and_size():
    sd = domain_adapter_state_dict(rank=128)
    assert all(ADAPTER_KEY.match(k) for k in sd) and len(sd) == 16 * 2 * 4 * 2
    assert sum(v.numel() for v in sd.values()) == 25_509_888  # FORMATS.md §2
    text = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_k_lora"
    assert sd[text + ".down.weight"].shape == (128, 768) and sd[text + ".up.weight"].shape == (320, 128)
    assert sd["up_blocks.1.attentions.2.transformer_blocks.0.attn1.processor.to_out_lora.up.weight"].shape == (1280, 128)


def test_small_fixture_files_parse(fixtures_dir):
    zoom = fixtures_dir / "small" / "motion_lora_zoom.safetensors"
    pan = fixtures_dir / "small" / "motion_lora_pan.ckpt"
    adapter = fixtures_dir / "small" / "v3_adapter.ckpt"
    assert len(parse_motion_lora(read_state_dict(zoom), zoom)) == 168
    assert len(parse_motion_lora(read_state_dict(pan), pan)) == 160
    pairs = parse_domain_adapter(read_state_dict(adapter), adapter)
    assert len(pairs) == 128 and {p.rank for p in pairs.values()} == {16}


def test_target_keys_follow_the_motion_module_names():
    attention = "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1"
    assert target_key(f"{attention}.processor.to_v") == f"{attention}.to_v.weight"
    assert target_key(f"{attention}.processor.to_out") == f"{attention}.to_out.0.weight"


@pytest.mark.parametrize("version,skipped", [("v2", 0), ("v3", 8), ("v1", 8)])
def test_a_motion_lora_fits_every_version_and_skips_only_the_mid_block(version, skipped):
    module = shapes(motion_module_state_dict(version, SMALL, dtype=torch.float32))
    fit = fit_motion_lora(parse_motion_lora(motion_lora_state_dict(SMALL, rank=8), "zoom"), module, "zoom", version)
    assert len(fit.skipped) == skipped and all(s.startswith("mid_block.") for s in fit.skipped)
    # every q/k/v/out weight of the module, each from the layer of the same name
    projections = {k for k in module if re.search(r"attention_blocks\.\d\.to_(q|k|v|out\.0)\.weight$", k)}
    assert len(fit.key_map) == len(projections) == 168 - skipped and set(fit.key_map.values()) == projections
    assert all(key.startswith(layer.split(".processor.")[0]) for layer, key in fit.key_map.items())


def test_a_motion_lora_for_other_channels_or_layers_is_refused():
    v2 = shapes(motion_module_state_dict("v2", SMALL, dtype=torch.float32))
    wide = parse_motion_lora(motion_lora_state_dict((64, 128, 256, 256), rank=4), "wide.ckpt")
    message = refusal(fit_motion_lora, wide, v2, "wide.ckpt", "mm_v2")
    assert message.startswith("wide.ckpt: does not fit the motion module mm_v2: 168 of its layers have other "
                              "channels (`down_blocks.0.motion_modules.0.") and "64×64 weight where the model's is 32×32" in message
    extra = motion_lora_state_dict(SMALL, rank=4)
    extra = {k.replace("up_blocks.3.motion_modules.2.", "up_blocks.3.motion_modules.5."): v for k, v in extra.items()}
    assert "has weights for 8 layers the motion module mm_v2 does not have" in refusal(
        fit_motion_lora, parse_motion_lora(extra, "x"), v2, "x", "mm_v2")
    only_mid = {k: v for k, v in motion_lora_state_dict(SMALL, rank=4).items() if k.startswith("mid_block")}
    v3 = shapes(motion_module_state_dict("v3", SMALL, dtype=torch.float32))
    assert "no weights for any layer" in refusal(fit_motion_lora, parse_motion_lora(only_mid, "m"), v3, "m", "mm_v3")


def test_files_of_other_kinds_say_which_node_reads_them(tmp_path):
    t = torch.zeros(4, 4)
    files = {
        "mm.safetensors": motion_module_state_dict("v3", SMALL, dtype=torch.float32),
        "adapter.ckpt": domain_adapter_state_dict(SMALL, rank=4, dtype=torch.float32),
        "motion.ckpt": motion_lora_state_dict(SMALL, rank=4, dtype=torch.float32),
        "image.safetensors": {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": t},
        "sd.safetensors": {"model.diffusion_model.input_blocks.0.0.weight": t},
        "other.safetensors": {"foo.weight": t},
    }
    read = {name: (save(tmp_path, name, sd), read_state_dict(save(tmp_path, name, sd))) for name, sd in files.items()}
    expected = {"mm.safetensors": "AnimateDiff_LoadMotionModule", "adapter.ckpt": "AnimateDiff_DomainAdapter",
                "motion.ckpt": "AnimateDiff_MotionLoRA", "image.safetensors": "core LoraLoader",
                "sd.safetensors": "Load Checkpoint", "other.safetensors": "not a file this pack knows"}
    for name, (path, sd) in read.items():
        for parse in (parse_motion_lora, parse_domain_adapter):
            if (parse, name) in ((parse_motion_lora, "motion.ckpt"), (parse_domain_adapter, "adapter.ckpt")):
                assert parse(sd, path)
                continue
            message = refusal(parse, sd, path)
            assert message.startswith(f"{path}: is ") and expected[name] in message, (name, message)


def test_damaged_pairs_are_refused_with_the_key():
    sd = motion_lora_state_dict(SMALL, rank=4, dtype=torch.float32)
    key = "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_k_lora"
    half = {k: v for k, v in sd.items() if k != key + ".down.weight"}
    assert f"lacks `{key}.down.weight`" in refusal(parse_motion_lora, half, "f")
    bad = {**sd, key + ".down.weight": torch.zeros(5, 128)}
    assert "shapes do not multiply" in refusal(parse_motion_lora, bad, "f")
    broken = {**sd, key + ".up.weight": sd[key + ".up.weight"].clone().index_fill_(0, torch.tensor([3]), float("nan"))}
    assert f"has NaN or infinite values (in `{key[:-5]}`)" in refusal(parse_motion_lora, broken, "f")
    adapter = domain_adapter_state_dict(SMALL, rank=4, dtype=torch.float16)
    first = next(iter(adapter))
    adapter[first] = torch.full_like(adapter[first], float("inf"))
    assert "has NaN or infinite values" in refusal(parse_domain_adapter, adapter, "a")
    alpha = {**sd, key + ".alpha": torch.tensor(4.0)}
    assert f"has a per-layer LoRA scale (`{key}.alpha`)" in refusal(parse_motion_lora, alpha, "f")
    extra = {**sd, key + ".scale": torch.tensor(4.0)}
    assert f"not part of a LoRA up/down pair: `{key}.scale`" in refusal(parse_motion_lora, extra, "f")
    kohya = "lora_unet_up_blocks_1_motion_modules_1_temporal_transformer_proj_in.lora_up.weight"
    assert f"names its weights as kohya's scripts do (`{kohya}`)" in refusal(parse_motion_lora,
                                                                               {kohya: torch.zeros(4, 2)}, "f")
    peft = key.replace("processor.to_k_lora", "to_k.lora_A") + ".weight"
    assert "names its weights as peft does" in refusal(parse_motion_lora, {peft: torch.zeros(2, 4)}, "f")
    spatial = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora"
    mixed = {**sd, spatial + ".up.weight": torch.zeros(4, 2), spatial + ".down.weight": torch.zeros(2, 4)}
    assert f"outside the temporal attention (e.g. `{spatial[:-5]}`)" in refusal(parse_motion_lora, mixed, "f")


def test_an_adapter_fits_by_comfyuis_key_map_and_refuses_other_channels():
    pairs = parse_domain_adapter(domain_adapter_state_dict(SMALL, rank=4, dtype=torch.float32), "a")
    # a key map and weights written out for a tiny SD1.5 UNet: every layer -> a weight of the right shape
    key_map = {layer: f"diffusion_model.{layer}.weight" for layer in pairs}
    weights = {f"diffusion_model.{p.layer}.weight": (p.out_features, p.in_features) for p in pairs.values()}
    assert fit_domain_adapter(pairs, key_map, weights, "a", "SD15") == key_map
    wider = {k: (2 * s[0], s[1]) for k, s in weights.items()}
    assert "does not fit the model (SD15): 128 of its layers" in refusal(fit_domain_adapter, pairs, key_map, wider,
                                                                         "a", "SD15")
    fewer = {k: v for k, v in key_map.items() if not k.startswith("mid_block")}
    assert "has weights for 8 layers the model (SDXL) does not have (e.g. `mid_block" in refusal(
        fit_domain_adapter, pairs, fewer, weights, "a", "SDXL")


def test_the_stack_is_immutable_and_chains_into_new_tuples():
    zoom = MotionLoRA("zoom.ckpt", "/m/zoom.ckpt", 1.0)
    one = add_to_stack(None, zoom)
    two = add_to_stack(one, MotionLoRA("pan.ckpt", "/m/pan.ckpt", -0.5))
    assert one == (zoom,) and [e.name for e in two] == ["zoom.ckpt", "pan.ckpt"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        zoom.strength = 2.0


def test_file_kind_reads_keys_only():
    assert file_kind(motion_lora_state_dict(SMALL, rank=2)) == FileKind.MOTION_LORA
    assert file_kind(motion_module_state_dict("v1", SMALL)) == FileKind.MOTION_MODULE
    assert file_kind(domain_adapter_state_dict(SMALL, rank=2)) == FileKind.DOMAIN_ADAPTER
    assert file_kind(["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]) == FileKind.IMAGE_LORA


@pytest.mark.slow
def test_full_size_fixture_files_parse_and_fit_a_full_size_module(fixtures_dir):
    from animatediff.motion_module import MotionModel, MotionModelSpec
    spec = {v: MotionModelSpec(v, (320, 640, 1280, 1280), (1280, 1280, 640, 320), 1280 if v == "v2" else None,
                               32) for v in ("v2", "v3")}
    for name, count, params, skipped in (("motion_lora_zoom.safetensors", 168, 19_333_120, 8),
                                         ("motion_lora_pan.ckpt", 160, 18_022_400, 0)):
        sd = read_state_dict(fixtures_dir / name)
        assert sum(v.numel() for v in sd.values()) == params and {v.dtype for v in sd.values()} == {torch.float16}
        pairs = parse_motion_lora(sd, name)
        assert len(pairs) == count and {p.rank for p in pairs.values()} == {64}
        for version in ("v2", "v3"):
            with torch.device("meta"):
                module = shapes(MotionModel(spec[version]).state_dict())
            fit = fit_motion_lora(pairs, module, name, version)
            assert len(fit.skipped) == (skipped if version == "v3" else 0)
    sd = read_state_dict(fixtures_dir / "v3_adapter.ckpt")
    assert sum(v.numel() for v in sd.values()) == 25_509_888
    assert len(parse_domain_adapter(sd, "v3_adapter.ckpt")) == 128
