"""What a LoRA-like file is, from its keys alone, and its up/down pairs (FORMATS.md §2, §3).

Both AnimateDiff LoRA kinds use the layout of diffusers' attention processors:
`<attention>.processor.<to_q|to_k|to_v|to_out>_lora.down.weight` (rank, in) and `..._lora.up.weight` (out, rank).
A user can pick any file in a LoRA list, so every refusal says what the file is and which node reads it.
"""
import re
from dataclasses import dataclass

import torch

from ..errors import ModelFileError


class FileKind:
    MOTION_LORA = "motion_lora"
    DOMAIN_ADAPTER = "domain_adapter"
    MOTION_MODULE = "motion_module"
    IMAGE_LORA = "image_lora"
    CHECKPOINT = "checkpoint"
    UNKNOWN = "unknown"

    # kind -> (what the file is, where it belongs)
    DESCRIPTIONS = {
        MOTION_LORA: ("a MotionLoRA (a LoRA on the motion module's temporal attention)",
                      "Load it with AnimateDiff_MotionLoRA (files in models/animatediff_motion_lora)."),
        DOMAIN_ADAPTER: ("a domain adapter (a LoRA on the image model's spatial attention, like v3_sd15_adapter)",
                         "Load it with AnimateDiff_DomainAdapter (files in models/animatediff_adapters or "
                         "models/loras)."),
        MOTION_MODULE: ("a motion module",
                        "Load it with AnimateDiff_LoadMotionModule (files in models/animatediff_models)."),
        IMAGE_LORA: ("an image LoRA (kohya/diffusers naming)", "Load it with the core LoraLoader."),
        CHECKPOINT: ("a Stable Diffusion checkpoint", "Load it with Load Checkpoint."),
        UNKNOWN: ("not a file this pack knows", "Check that the right file was picked."),
    }


def file_kind(keys) -> str:
    """Tells the kind of a weights file from its key names (only what the first match needs is read)."""
    keys = list(keys)

    def has(*parts):
        return any(part in k for k in keys for part in parts)
    lora_like = has("_lora.", "lora_up.", "lora_down.", ".lora_A.", ".lora_B.", "lora_unet_", "lora_te")
    if has("motion_modules.", "temporal_transformer."):
        return FileKind.MOTION_LORA if lora_like else FileKind.MOTION_MODULE
    if has("model.diffusion_model.", "first_stage_model.", "cond_stage_model."):
        return FileKind.CHECKPOINT
    if has(".processor.to_") and has(".attentions.") and has("_lora.up.weight"):
        return FileKind.DOMAIN_ADAPTER
    return FileKind.IMAGE_LORA if lora_like else FileKind.UNKNOWN


def refuse_kind(path, kind: str, wanted: str):
    """Raises the error for a file of `kind` handed to the node that reads `wanted` files."""
    what, where = FileKind.DESCRIPTIONS[kind]
    raise ModelFileError(path, f"is {what}, not {FileKind.DESCRIPTIONS[wanted][0]}.", where)


@dataclass(frozen=True)
class LoRAPair:
    """One low-rank delta up @ down, named by its layer as ComfyUI's load_lora expects (the key minus `_lora...`)."""
    layer: str          # e.g. "mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q"
    out_features: int
    in_features: int
    rank: int


PAIR_KEY = re.compile(r"^(?P<layer>.+\.processor\.to_(?:q|k|v|out))_lora\.(?P<half>up|down)\.weight$")


def lora_pairs(state_dict: dict[str, torch.Tensor], path) -> dict[str, LoRAPair]:
    """Every up/down pair of the file, checked: both halves present, 2-D, float, ranks that agree."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = PAIR_KEY.match(key)
        if match is None:
            # e.g. a per-layer `.alpha`: the released files have none, and it would change the merge's scale.
            raise ModelFileError(path, f"has a weight that is not part of a LoRA up/down pair: `{key}`.",
                                 "The file may be damaged or in a variant this pack does not read.")
        halves.setdefault(match["layer"], {})[match["half"]] = tensor
    pairs = {}
    for layer, half in sorted(halves.items()):
        for name in ("up", "down"):
            if name not in half:
                raise ModelFileError(path, f"lacks `{layer}_lora.{name}.weight` (its other half is there).",
                                     "The file may be damaged; download it again.")
        up, down = half["up"], half["down"]
        if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
            raise ModelFileError(path, f"has a LoRA pair whose shapes do not multiply: `{layer}` up "
                                 f"{tuple(up.shape)}, down {tuple(down.shape)} (expected (out, r) and (r, in)).",
                                 "The file may be damaged.")
        if not (up.is_floating_point() and down.is_floating_point()):
            raise ModelFileError(path, f"has LoRA weights that are not floating point (`{layer}`: {up.dtype}).",
                                 "The file may be damaged.")
        pairs[layer] = LoRAPair(layer, up.shape[0], down.shape[1], down.shape[0])
    return pairs


def pairs_of_kind(state_dict: dict[str, torch.Tensor], path, kind: str, layers: re.Pattern, where: str,
                  advice: str) -> dict[str, LoRAPair]:
    """The file's LoRA pairs when it is a `kind` file whose every layer matches `layers`; else a ModelFileError
    saying what the file is instead (and which node reads it) or which layer lies outside `where`."""
    found = file_kind(state_dict)
    if found != kind:
        refuse_kind(path, found, kind)
    pairs = lora_pairs(state_dict, path)
    outside = [layer for layer in pairs if not layers.match(layer)]
    if outside:
        raise ModelFileError(path, f"has LoRA weights outside the {where} (e.g. `{outside[0]}`).", advice)
    return pairs


def shape_mismatch(pair: LoRAPair, shape) -> str:
    return (f"`{pair.layer}` changes a {pair.out_features}×{pair.in_features} weight where the model's is "
            f"{'×'.join(map(str, shape))}")
