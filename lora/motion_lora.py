"""MotionLoRA files (FORMATS.md §3) and the MOTION_LORA stack that flows between nodes. Pure torch.

A MotionLoRA adds `strength · up @ down` to the q/k/v/out projections of the motion module's temporal
attention. The merge itself is ComfyUI's (see patching/lora.py); this module decides which file layer lands
on which weight of a given motion module, and refuses files that do not fit.
"""
import re
from dataclasses import dataclass, field

import torch

from ..errors import ModelFileError
from ..motion_module.file_kinds import FileKind
from .files import LoRAPair, pairs_of_kind, shape_mismatch

# The layer part of a MotionLoRA key, e.g.
# down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.processor.to_out
TEMPORAL_LAYER = re.compile(r"^(?:(?:down|up)_blocks\.\d+|mid_block)\.motion_modules\.\d+\.temporal_transformer\."
                            r"transformer_blocks\.\d+\.attention_blocks\.\d+\.processor\.to_(?:q|k|v|out)$")


@dataclass(frozen=True)
class MotionLoRA:
    """One entry of a MOTION_LORA stack: which file, at which strength. A loaded file's entry holds no tensors:
    the file is read when the stack is applied, so a stack is cheap to copy and safe to share between branches of
    a graph. A trained entry holds the `weights` it saved: ComfyUI may keep the training node's output while a
    later run saves other weights under the same name, and the output must stay the LoRA that was trained."""
    name: str
    path: str
    strength: float
    weights: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)


def add_to_stack(stack: tuple[MotionLoRA, ...] | None, lora: MotionLoRA) -> tuple[MotionLoRA, ...]:
    """A new stack with `lora` on top; the given one is left as it is (ComfyUI may feed it to other nodes too)."""
    return (*(stack or ()), lora)


def parse_motion_lora(state_dict: dict[str, torch.Tensor], path) -> dict[str, LoRAPair]:
    """The file's LoRA pairs, or a ModelFileError saying what the file is instead."""
    return pairs_of_kind(state_dict, path, FileKind.MOTION_LORA, TEMPORAL_LAYER, "temporal attention",
                         "It is not a MotionLoRA in the released format.")


def target_key(layer: str) -> str:
    """The motion module's weight a LoRA layer changes: `...processor.to_q` -> `...to_q.weight`, and
    `...processor.to_out` -> `...to_out.0.weight` (to_out is a [Linear, Dropout] list in the original)."""
    attention, projection = layer.rsplit(".processor.", 1)
    return f"{attention}.{projection}.0.weight" if projection == "to_out" else f"{attention}.{projection}.weight"


@dataclass(frozen=True)
class MotionLoRAFit:
    key_map: dict[str, str]    # LoRA layer -> motion-model weight, the key map comfy.lora.load_lora takes
    skipped: tuple[str, ...]   # mid-block layers, when the module has no mid block (v1, v3)


def fit_motion_lora(pairs: dict[str, LoRAPair], weight_shapes: dict[str, tuple], path,
                    module_name: str) -> MotionLoRAFit:
    """Matches every pair to a weight of the motion module (`weight_shapes`: its state dict's shapes).

    Only mid-block layers may go without a target: the released MotionLoRAs were trained on v2, which has a
    mid-block module that v1 and v3 lack. Anything else that does not fit means the file was made for
    another module family, and a partial merge would be a silent surprise, so it is refused."""
    key_map, skipped, missing, wrong = {}, [], [], []
    for layer, pair in pairs.items():
        key = target_key(layer)
        shape = weight_shapes.get(key)
        if shape is None:
            (skipped if layer.startswith("mid_block.") else missing).append(layer)
        elif tuple(shape) != (pair.out_features, pair.in_features):
            wrong.append(shape_mismatch(pair, shape))
        else:
            key_map[layer] = key
    advice = ("A MotionLoRA fits the motion-module family it was trained for (the released ones: SD1.5 "
              "modules such as mm_sd_v15_v2).")
    if wrong:
        raise ModelFileError(path, f"does not fit the motion module {module_name}: {len(wrong)} of its layers "
                             f"have other channels ({wrong[0]}).", advice)
    if missing:
        raise ModelFileError(path, f"has weights for {len(missing)} layers the motion module {module_name} "
                             f"does not have (e.g. `{missing[0]}`).", advice)
    if not key_map:
        raise ModelFileError(path, f"has no weights for any layer of the motion module {module_name} (only for "
                             "a mid block, which this module lacks).", advice)
    return MotionLoRAFit(key_map, tuple(skipped))
