"""Format detection on random key sets and shapes: a well-formed module or our own error, never a crash."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from animatediff.errors import ModelFileError
from animatediff.motion_module import detect_spec, load_motion_model
from random_weights import motion_module_state_dict

SMALL = (32, 64, 128, 128)
REAL = motion_module_state_dict("v2", channels=SMALL, dtype=torch.float32)
REAL_KEYS = sorted(REAL)
PIECES = ["down_blocks", "up_blocks", "mid_block", "motion_modules", "temporal_transformer", "attention_blocks",
          "pos_encoder.pe", "norm.weight", "proj_in.weight", "processor", "to_q_lora.up.weight", "attn1",
          "model.diffusion_model", "temporal_attentions", "pos_embed", "0", "1", "3", "7", "weight", "bias"]

shapes = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)
random_keys = st.lists(st.sampled_from(PIECES), min_size=1, max_size=7).map(".".join)
dtypes = st.sampled_from([torch.float32, torch.float16, torch.int32, torch.bool, torch.int8])


@st.composite
def state_dicts(draw):
    """Mostly-real files with random damage, or wholly random key soups."""
    if draw(st.booleans()):
        sd = dict(REAL)
        for key in draw(st.lists(st.sampled_from(REAL_KEYS), max_size=5)):
            action = draw(st.sampled_from(["drop", "reshape", "retype"]))
            if action == "drop":
                sd.pop(key, None)
            elif action == "reshape":
                sd[key] = torch.zeros(draw(shapes))
            else:
                sd[key] = torch.zeros(REAL[key].shape, dtype=draw(dtypes))
        for key in draw(st.lists(random_keys, max_size=3)):
            sd[key] = torch.zeros(draw(shapes))
        return sd
    return {key: torch.zeros(draw(shapes), dtype=draw(dtypes)) for key in draw(st.lists(random_keys, min_size=1, max_size=12))}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state_dicts())
def test_detection_accepts_well_formed_modules_or_raises_our_error(sd):
    try:
        spec = detect_spec(sd, "fuzz.safetensors")
    except ModelFileError as e:
        assert "fuzz.safetensors" in str(e)
        return
    assert spec.module_count in (20, 21) and len(spec.down_channels) == 4


@pytest.mark.parametrize("file_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("unet_dtype", [None, torch.float32, torch.float16, torch.bfloat16])
def test_nan_and_inf_weights_are_refused_by_name_whatever_the_cast(tmp_path, file_dtype, unet_dtype):
    import safetensors.torch
    key = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    for bad in (float("nan"), float("inf"), -float("inf")):
        sd = {k: v.to(file_dtype, copy=True) for k, v in REAL.items()}
        sd[key][3, 1] = bad
        safetensors.torch.save_file(sd, tmp_path / "bad.safetensors")
        with pytest.raises(ModelFileError, match=f"bad.safetensors: has NaN or infinite values .*{key}"):
            load_motion_model(tmp_path / "bad.safetensors", dtype=unet_dtype)


def test_weights_too_large_for_the_unets_dtype_are_refused_with_advice(tmp_path):
    import safetensors.torch
    key = "down_blocks.0.motion_modules.1.temporal_transformer.proj_in.weight"
    sd = {k: v.float() for k, v in REAL.items()}
    sd[key] = sd[key].clone()
    sd[key][1, 2] = 1e6  # finite in float32, infinite in float16
    safetensors.torch.save_file(sd, tmp_path / "big.safetensors")
    with pytest.raises(ModelFileError, match=f"big.safetensors: has values too large for torch.float16 .*{key}.*--fp32-unet"):
        load_motion_model(tmp_path / "big.safetensors", dtype=torch.float16)
    assert load_motion_model(tmp_path / "big.safetensors", dtype=torch.float32) is not None
