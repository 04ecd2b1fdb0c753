"""The up/down pairs of a LoRA-like file (FORMATS.md §2, §3).

Both AnimateDiff LoRA kinds use the layout of diffusers' attention processors:
`<attention>.processor.<to_q|to_k|to_v|to_out>_lora.down.weight` (rank, in) and `..._lora.up.weight` (out, rank).
"""
import re
from dataclasses import dataclass

import torch

from ..errors import ModelFileError
from ..motion_module.file_kinds import file_kind, refuse_kind
from ..motion_module.formats import is_finite


@dataclass(frozen=True)
class LoRAPair:
    """One low-rank delta up @ down, named by its layer as ComfyUI's load_lora expects (the key minus `_lora...`)."""
    layer: str          # e.g. "mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q"
    out_features: int
    in_features: int
    rank: int


PAIR_KEY = re.compile(r"^(?P<layer>.+\.processor\.to_(?:q|k|v|out))_lora\.(?P<half>up|down)\.weight$")


RELEASED_NAMES = ("The released files name each half `<attention>.processor.to_q_lora.down.weight` (and `.up.`); "
                  "use such a file, e.g. one AnimateDiff_TrainMotionLoRA saves.")


def unread_name(key: str) -> tuple[str, str]:
    """What is wrong with a key that names no up/down half, and what to do."""
    if key.startswith(("lora_unet_", "lora_te")):
        return f"names its weights as kohya's scripts do (`{key}`), which this pack does not read.", RELEASED_NAMES
    if ".lora_A." in key or ".lora_B." in key:
        return f"names its weights as peft does (`{key}`), which this pack does not read.", RELEASED_NAMES
    if key.endswith(".alpha"):
        # the released files have none; ignoring it would merge the pair at another scale than it was made for
        return (f"has a per-layer LoRA scale (`{key}`), which the released files do not have.",
                "Use the file as released, or one saved by AnimateDiff_TrainMotionLoRA.")
    return (f"has a weight that is not part of a LoRA up/down pair: `{key}`.",
            "The file may be damaged or in a variant this pack does not read.")


def lora_pairs(state_dict: dict[str, torch.Tensor], path) -> dict[str, LoRAPair]:
    """Every up/down pair of the file, checked: both halves present, 2-D, float, ranks that agree."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = PAIR_KEY.match(key)
        if match is None:
            raise ModelFileError(path, *unread_name(key))
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
        if not (is_finite(up) and is_finite(down)):
            raise ModelFileError(path, f"has NaN or infinite values (in `{layer}`).",
                                 "The file is damaged, or was saved from a training run that diverged.")
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
