"""The domain adapter (FORMATS.md §2): a LoRA on the UNet's spatial attention, merged as W ← W + α·up@down.

Mechanically it is a plain diffusers-format LoRA whose strength is α, so ComfyUI's own key map and LoRA
math do the merge (patching/lora.py). This module only says whether a file is one and whether it fits a
model, so that nothing is skipped silently (ComfyUI logs and skips patches whose shapes do not match).
"""
import re

import torch

from ..errors import ModelFileError
from ..motion_module.file_kinds import FileKind
from .files import LoRAPair, pairs_of_kind, shape_mismatch

# The layer part of an adapter key, e.g. up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor.to_k
SPATIAL_LAYER = re.compile(r"^(?:(?:down|up)_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\."
                           r"attn[12]\.processor\.to_(?:q|k|v|out)$")


def parse_domain_adapter(state_dict: dict[str, torch.Tensor], path) -> dict[str, LoRAPair]:
    """The file's LoRA pairs, or a ModelFileError saying what the file is and which node reads it."""
    return pairs_of_kind(state_dict, path, FileKind.DOMAIN_ADAPTER, SPATIAL_LAYER, "spatial attention",
                         "It is not a domain adapter; an image LoRA goes in the core LoraLoader.")


def fit_domain_adapter(pairs: dict[str, LoRAPair], key_map: dict[str, str], weight_shapes: dict[str, tuple],
                       path, model_name: str) -> dict[str, str]:
    """LoRA layer -> UNet weight for every pair (`key_map`: ComfyUI's model_lora_keys_unet of the model)."""
    targets, missing, wrong = {}, [], []
    for layer, pair in pairs.items():
        key = key_map.get(layer)
        shape = weight_shapes.get(key) if isinstance(key, str) else None
        if shape is None:
            missing.append(layer)
        elif tuple(shape) != (pair.out_features, pair.in_features):
            wrong.append(shape_mismatch(pair, shape))
        else:
            targets[layer] = key
    advice = "The v3 domain adapter fits SD1.5 models (base or fine-tuned) only."
    if missing:
        raise ModelFileError(path, f"has weights for {len(missing)} layers the model ({model_name}) does not "
                             f"have (e.g. `{missing[0]}`).", advice)
    if wrong:
        raise ModelFileError(path, f"does not fit the model ({model_name}): {len(wrong)} of its layers have "
                             f"other channels ({wrong[0]}).", advice)
    return targets
