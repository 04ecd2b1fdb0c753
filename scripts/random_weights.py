"""State dicts with random weights in the exact layouts of the released files (FORMATS.md and
docs/more_formats.md): motion modules, AnimateLCM-I2V's image encoder, PIA's input convolution, SparseCtrl,
MotionLoRAs, the domain adapter and CameraCtrl.

Written from the formats docs on purpose, independently of the pack's `motion_module/` code, so that the
fixtures cannot share that code's mistakes. Imports nothing but torch."""
import math

import torch

FULL_CHANNELS = (320, 640, 1280, 1280)
SMALL_CHANNELS = (32, 64, 128, 128)
SDXL_CHANNELS = (320, 640, 1280)  # SDXL's UNet has three levels
SMALL_SDXL_CHANNELS = (32, 64, 128)
# AnimateLCM's files hold no positional tables
PE_LENGTH = {"v1": 24, "v2": 32, "v3": 32, "animatelcm": None, "animatelcm_i2v": None, "pia": 32,
             "sdxl": 32, "hotshotxl": 24}  # the order mixes into each version's seed: append

# What v3-era files carry next to the weights (from the original inference config); plain types only,
# so torch.load(weights_only=True) accepts it.
V3_CONFIG = {
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8, "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1, "zero_initialize": True,
    },
}


def sinusoidal_pe(length: int, channels: int) -> torch.Tensor:
    """(1, length, channels): pe[0, p, 2i] = sin(p·d_i), pe[0, p, 2i+1] = cos(p·d_i), d_i = exp(2i·(−ln 10000 / C))."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float64) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels, dtype=torch.float64)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe.float()


def random_tensor(key: str, shape, gen: torch.Generator) -> torch.Tensor:
    """Trained-looking float32 values: every 1-D `.weight` in these models is a norm's scale (about 1),
    biases are small, and matrices/convs get variance 1/fan_in so activations stay finite through depth."""
    t = torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        return t.mul_(1.0 / math.sqrt(math.prod(shape[1:])))
    if key.endswith(".weight"):
        return t.mul_(0.1).add_(1.0)
    return t.mul_(0.02)


def _module_shapes(c: int, attention_blocks=2):
    """The 28 (key suffix, shape) pairs of one VanillaTemporalModule, in FORMATS.md's table order; pe is None.
    SparseCtrl's modules attend once (20 pairs)."""
    block = "transformer_blocks.0."
    shapes = [("norm.weight", (c,)), ("norm.bias", (c,)), ("proj_in.weight", (c, c)), ("proj_in.bias", (c,))]
    for a in range(attention_blocks):
        p = f"{block}attention_blocks.{a}."
        shapes += [(p + "to_q.weight", (c, c)), (p + "to_k.weight", (c, c)), (p + "to_v.weight", (c, c)),
                   (p + "to_out.0.weight", (c, c)), (p + "to_out.0.bias", (c,)), (p + "pos_encoder.pe", None)]
    for n in range(attention_blocks):
        shapes += [(f"{block}norms.{n}.weight", (c,)), (f"{block}norms.{n}.bias", (c,))]
    shapes += [(block + "ff.net.0.proj.weight", (8 * c, c)), (block + "ff.net.0.proj.bias", (8 * c,)),
               (block + "ff.net.2.weight", (c, 4 * c)), (block + "ff.net.2.bias", (c,)),
               (block + "ff_norm.weight", (c,)), (block + "ff_norm.bias", (c,)),
               ("proj_out.weight", (c, c)), ("proj_out.bias", (c,))]  # trained, so non-zero
    return shapes


def _module_places(channels, with_mid=False) -> list[tuple[str, int]]:
    """(prefix, channels) of each motion module in file order: 2 per down level, 3 per up level, and v2's
    mid block module last (SD1.5: 4 levels; SDXL: 3)."""
    modules = [(f"down_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(channels) for j in range(2)]
    modules += [(f"up_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(reversed(channels)) for j in range(3)]
    return modules + ([("mid_block.motion_modules.0", channels[-1])] if with_mid else [])


def _encoder_block_shapes(prefix: str, c_in: int, c: int):
    """One residual block of a T2I-Adapter-like encoder (AnimateLCM-I2V's, CameraCtrl's): a 1×1 in_conv where the
    width changes, a 3×3 block1 and a 1×1 block2."""
    shapes = [(prefix + "in_conv.weight", (c, c_in, 1, 1)), (prefix + "in_conv.bias", (c,))] if c_in != c else []
    return shapes + [(prefix + "block1.weight", (c, c, 3, 3)), (prefix + "block1.bias", (c,)),
                     (prefix + "block2.weight", (c, c, 1, 1)), (prefix + "block2.bias", (c,))]


def motion_module_state_dict(version: str, channels=FULL_CHANNELS, seed=0,
                             dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A released-format SD1.5 motion module ("v1", "v2", "v3", "animatelcm", "animatelcm_i2v" or "pia") with
    random weights, or with "sdxl" and SDXL's channels mm_sdxl_v10_beta's (v3's modules on 3 levels).

    The version is mixed into the seed: v1's pe table is the start of v3's, so with shared weights a
    loader that picked the wrong file would go unnoticed."""
    length = PE_LENGTH[version]
    modules = _module_places(channels, with_mid=version in ("v2", "animatelcm", "animatelcm_i2v"))
    gen = torch.Generator().manual_seed(seed * 10 + list(PE_LENGTH).index(version))
    pes = {}
    sd = {}
    for prefix, c in modules:
        for suffix, shape in _module_shapes(c):
            key = f"{prefix}.temporal_transformer.{suffix}"
            if shape is None and length is None:
                continue
            if shape is None:
                pes.setdefault(c, sinusoidal_pe(length, c).to(dtype))
                sd[key] = pes[c].clone()  # separate storage: safetensors refuses shared tensors
            else:
                sd[key] = random_tensor(key, shape, gen).to(dtype)
    if version == "animatelcm_i2v":
        for key, shape in image_encoder_shapes(channels):
            sd[key] = random_tensor(key, shape, gen).to(dtype)
    if version == "pia":  # PIA's input convolution: 4 latent channels, the affinity, 4 image-latent channels
        for key, shape in (("conv_in.weight", (channels[0], 9, 3, 3)), ("conv_in.bias", (channels[0],))):
            sd[key] = random_tensor(key, shape, gen).to(dtype)
    return sd


def hotshotxl_state_dict(channels=SDXL_CHANNELS, seed=0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Hotshot-XL's temporal layers (hsxl_temporal_layers.safetensors) with random weights: the modules of
    AnimateDiff's SDXL layout with 24-row tables, named `<block>.temporal_attentions.<j>.<part>` (no
    `temporal_transformer.` level), each table a buffer `pos_encoder.positional_encoding`."""
    sd = motion_module_state_dict("hotshotxl", channels, seed, dtype)
    return {k.replace(".motion_modules.", ".temporal_attentions.").replace(".temporal_transformer.", ".")
            .replace(".pos_encoder.pe", ".pos_encoder.positional_encoding"): v for k, v in sd.items()}


def image_encoder_shapes(channels):
    """AnimateLCM-I2V's `img_encoder.` (a T2I-Adapter-like encoder of the image latent): conv_in from 4 latent
    channels, then 2 blocks per level."""
    shapes = [("img_encoder.conv_in.weight", (channels[0], 4, 3, 3)), ("img_encoder.conv_in.bias", (channels[0],))]
    for i, c in enumerate(channels):
        for j in range(2):
            c_in = channels[i - 1] if i > 0 and j == 0 else c
            shapes += _encoder_block_shapes(f"img_encoder.body.{2 * i + j}.", c_in, c)
    return shapes


def cameractrl_state_dict(channels=FULL_CHANNELS, seed=0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """CameraCtrl in the flat layout of CameraCtrl_pruned.safetensors: the pose encoder's 150 tensors, unprefixed,
    then the 40 `qkv_merge` linears on attention_blocks.0 of v3's 20 motion modules (190 tensors; full size
    218,224,000 parameters + 112,640 table values). The encoder's conv_in reads PixelUnshuffle(8) of the 6 Plücker
    channels (384); per level, 2 residual blocks (1×1 in_conv where the width changes) each followed by a temporal
    block that attends once, with a 16-row table."""
    shapes = [("encoder_conv_in.weight", (channels[0], 384, 3, 3)), ("encoder_conv_in.bias", (channels[0],))]
    for i, c in enumerate(channels):
        for j in range(2):
            c_in = channels[i - 1] if i > 0 and j == 0 else c
            shapes += _encoder_block_shapes(f"encoder_down_conv_blocks.{i}.{j}.", c_in, c)
            # a motion module's transformer block, attending once, minus the module's norm/proj_in/proj_out
            shapes += [(f"encoder_down_attention_blocks.{i}.{j}." + k.removeprefix("transformer_blocks.0."),
                        s or (1, 16, c)) for k, s in _module_shapes(c, attention_blocks=1)[4:-2]]
    for prefix, c in _module_places(channels):
        merge = f"{prefix}.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.qkv_merge."
        shapes += [(merge + "weight", (c, c)), (merge + "bias", (c,))]  # zero-initialised, but trained: non-zero
    gen = torch.Generator().manual_seed(3000 + seed)
    return {key: (sinusoidal_pe(16, shape[-1]) if key.endswith(".pe") else random_tensor(key, shape, gen)).to(dtype)
            for key, shape in shapes}


def cameractrl_original(sd: dict) -> dict:
    """The original CameraCtrl.ckpt's training-checkpoint dict (plain types: torch.load(weights_only=True) reads it)."""
    return {"epoch": 0, "global_step": 1000,
            "pose_encoder_state_dict": {k: v for k, v in sd.items() if k.startswith("encoder")},
            "attention_processor_state_dict": {k: v for k, v in sd.items() if "qkv_merge" in k}}


def _resnet_shapes(c_in: int, c_out: int, temb: int):
    shapes = [("norm1.weight", (c_in,)), ("norm1.bias", (c_in,)), ("conv1.weight", (c_out, c_in, 3, 3)),
              ("conv1.bias", (c_out,)), ("time_emb_proj.weight", (c_out, temb)), ("time_emb_proj.bias", (c_out,)),
              ("norm2.weight", (c_out,)), ("norm2.bias", (c_out,)), ("conv2.weight", (c_out, c_out, 3, 3)),
              ("conv2.bias", (c_out,))]
    if c_in != c_out:
        shapes += [("conv_shortcut.weight", (c_out, c_in, 1, 1)), ("conv_shortcut.bias", (c_out,))]
    return shapes


def _spatial_transformer_shapes(c: int, text_dim: int):
    """diffusers' Transformer2DModel of SD1.5 (1×1 conv projections, one block)."""
    t = "transformer_blocks.0."
    shapes = [("norm.weight", (c,)), ("norm.bias", (c,)), ("proj_in.weight", (c, c, 1, 1)), ("proj_in.bias", (c,))]
    for attn, kv_dim in (("attn1", c), ("attn2", text_dim)):
        shapes += [(f"{t}{attn}.to_q.weight", (c, c)), (f"{t}{attn}.to_k.weight", (c, kv_dim)),
                   (f"{t}{attn}.to_v.weight", (c, kv_dim)), (f"{t}{attn}.to_out.0.weight", (c, c)),
                   (f"{t}{attn}.to_out.0.bias", (c,))]
    for n in (1, 2, 3):
        shapes += [(f"{t}norm{n}.weight", (c,)), (f"{t}norm{n}.bias", (c,))]
    shapes += [(f"{t}ff.net.0.proj.weight", (8 * c, c)), (f"{t}ff.net.0.proj.bias", (8 * c,)),
               (f"{t}ff.net.2.weight", (c, 4 * c)), (f"{t}ff.net.2.bias", (c,)),
               ("proj_out.weight", (c, c, 1, 1)), ("proj_out.bias", (c,))]
    return shapes


def sparse_ctrl_state_dict(kind: str, channels=FULL_CHANNELS, text_dim=768, seed=0,
                           dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A released-format SparseCtrl (v3_sd15_sparsectrl_rgb / _scribble) with random weights: an SD1.5
    ControlNet in diffusers' names (SparseControlNetModel) whose down blocks hold one-attention motion
    modules. `kind` "rgb" embeds 4 latent channels + mask with one conv; "scribble" 3 image channels + mask
    with ControlNet's hint encoder."""
    mc, temb = channels[0], 4 * channels[0]
    shapes = [("conv_in.weight", (mc, 4, 3, 3)), ("conv_in.bias", (mc,)),
              ("time_embedding.linear_1.weight", (temb, mc)), ("time_embedding.linear_1.bias", (temb,)),
              ("time_embedding.linear_2.weight", (temb, temb)), ("time_embedding.linear_2.bias", (temb,))]
    if kind == "rgb":
        shapes += [("controlnet_cond_embedding.weight", (mc, 5, 3, 3)), ("controlnet_cond_embedding.bias", (mc,))]
    else:
        widths = [(4, 16), (16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256)]
        for n, (c_in, c_out) in enumerate(widths):
            name = "conv_in" if n == 0 else f"blocks.{n - 1}"
            shapes += [(f"controlnet_cond_embedding.{name}.weight", (c_out, c_in, 3, 3)),
                       (f"controlnet_cond_embedding.{name}.bias", (c_out,))]
        shapes += [("controlnet_cond_embedding.conv_out.weight", (mc, 256, 3, 3)),
                   ("controlnet_cond_embedding.conv_out.bias", (mc,))]
    zero_convs = [mc]
    c_prev = mc
    for i, c in enumerate(channels):
        for j in range(2):
            resnet = _resnet_shapes(c_prev if j == 0 else c, c, temb)
            shapes += [(f"down_blocks.{i}.resnets.{j}.{k}", s) for k, s in resnet]
            if i < len(channels) - 1:
                attention = _spatial_transformer_shapes(c, text_dim)
                shapes += [(f"down_blocks.{i}.attentions.{j}.{k}", s) for k, s in attention]
            shapes += [(f"down_blocks.{i}.motion_modules.{j}.temporal_transformer.{k}", s or (1, 32, c))
                       for k, s in _module_shapes(c, attention_blocks=1)]
            zero_convs.append(c)
        if i < len(channels) - 1:
            shapes += [(f"down_blocks.{i}.downsamplers.0.conv.weight", (c, c, 3, 3)),
                       (f"down_blocks.{i}.downsamplers.0.conv.bias", (c,))]
            zero_convs.append(c)
        c_prev = c
    c = channels[-1]
    for j in range(2):
        shapes += [(f"mid_block.resnets.{j}.{k}", s) for k, s in _resnet_shapes(c, c, temb)]
    shapes += [(f"mid_block.attentions.0.{k}", s) for k, s in _spatial_transformer_shapes(c, text_dim)]
    for n, width in enumerate(zero_convs):
        shapes += [(f"controlnet_down_blocks.{n}.weight", (width, width, 1, 1)),
                   (f"controlnet_down_blocks.{n}.bias", (width,))]
    shapes += [("controlnet_mid_block.weight", (c, c, 1, 1)), ("controlnet_mid_block.bias", (c,))]
    gen = torch.Generator().manual_seed(seed * 10 + (kind == "rgb"))
    sd = {}
    for key, shape in shapes:
        if key.endswith(".pos_encoder.pe"):
            sd[key] = sinusoidal_pe(32, shape[-1]).to(dtype)
        else:
            sd[key] = random_tensor(key, shape, gen).to(dtype)
    return sd


def _lora_pair(key: str, out_features: int, in_features: int, rank: int, gen: torch.Generator, sd: dict) -> None:
    """`<key>_lora.down.weight` (rank, in) and `<key>_lora.up.weight` (out, rank): the released files' layout.

    Trained LoRAs move a layer by a fraction of its weight, so up@down is scaled to about a tenth of the
    base weights' size (1/sqrt(in) per element): enough to change a sample, not enough to swamp it."""
    sd[f"{key}_lora.down.weight"] = torch.randn(rank, in_features, generator=gen) / math.sqrt(in_features)
    sd[f"{key}_lora.up.weight"] = torch.randn(out_features, rank, generator=gen) * (0.1 / math.sqrt(rank))


def motion_lora_state_dict(channels=FULL_CHANNELS, rank=64, with_mid=True, seed=0,
                           dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A MotionLoRA in the released v2_lora_* format (FORMATS.md §3): q/k/v/out of both temporal attention
    blocks of every v2 module (21 with the mid block, 20 without)."""
    modules = _module_places(channels, with_mid)
    gen = torch.Generator().manual_seed(1000 + seed)
    sd = {}
    for prefix, c in modules:
        for a in range(2):
            attention = f"{prefix}.temporal_transformer.transformer_blocks.0.attention_blocks.{a}.processor"
            for projection in ("to_q", "to_k", "to_v", "to_out"):
                _lora_pair(f"{attention}.{projection}", c, c, rank, gen, sd)
    return {k: v.to(dtype) for k, v in sd.items()}


def domain_adapter_state_dict(channels=FULL_CHANNELS, rank=128, text_dim=768, seed=0,
                              dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A v3 domain adapter (FORMATS.md §2): q/k/v/out of attn1 and attn2 in all 16 spatial transformers of an
    SD1.5 UNet, in diffusers naming. attn2's to_k/to_v read the text embedding (`text_dim` wide)."""
    blocks = [(f"down_blocks.{i}.attentions.{j}", channels[i]) for i in range(3) for j in range(2)]
    blocks.append(("mid_block.attentions.0", channels[-1]))
    blocks += [(f"up_blocks.{i}.attentions.{j}", channels[3 - i]) for i in (1, 2, 3) for j in range(3)]
    gen = torch.Generator().manual_seed(2000 + seed)
    sd = {}
    for prefix, c in blocks:
        for attn in ("attn1", "attn2"):
            processor = f"{prefix}.transformer_blocks.0.{attn}.processor"
            for projection in ("to_q", "to_k", "to_v", "to_out"):
                reads_text = attn == "attn2" and projection in ("to_k", "to_v")
                _lora_pair(f"{processor}.{projection}", c, text_dim if reads_text else c, rank, gen, sd)
    return {k: v.to(dtype) for k, v in sd.items()}
