"""Nodes for MotionLoRAs (a stack for the motion module) and the domain adapter (a LoRA on the UNet)."""
import folder_paths

from ..lora import MotionLoRA as MotionLoRAEntry
from ..lora import add_to_stack
from ..patching.lora import apply_domain_adapter, check_motion_lora_file
from .folders import MOTION_LORAS, adapter_files, adapter_path, file_stamp, find_adapter
from .numbers import finite

CATEGORY = "AnimateDiff"


class MotionLoRA:
    DESCRIPTION = ("Adds a MotionLoRA (a camera motion such as zoom, pan, tilt or roll) to a stack for "
                   "AnimateDiff_ApplyMotionModule. Chain several nodes to combine motions: their changes add up.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MOTION_LORA",)
    OUTPUT_TOOLTIPS = ("The stack with this MotionLoRA on top, for AnimateDiff_ApplyMotionModule's motion_lora "
                       "or another MotionLoRA node's prev_motion_lora.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (folder_paths.get_filename_list(MOTION_LORAS), {
                    "tooltip": "A MotionLoRA file in models/animatediff_motion_lora, e.g. v2_lora_ZoomIn.ckpt."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip":
                    "How much of the motion to add: 1 is as trained, 0 switches it off, negative values push "
                    "the other way."}),
            },
            "optional": {
                "prev_motion_lora": ("MOTION_LORA", {"tooltip": "MotionLoRAs to add this one to."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, lora_name, **kwargs):
        return file_stamp(folder_paths.get_full_path(MOTION_LORAS, lora_name))

    @finite("strength")
    def add(self, lora_name, strength, prev_motion_lora=None):
        path = folder_paths.get_full_path_or_raise(MOTION_LORAS, lora_name)
        check_motion_lora_file(path)  # a wrong file is refused here, at the node that picked it
        return (add_to_stack(prev_motion_lora, MotionLoRAEntry(lora_name, path, float(strength))),)


class DomainAdapter:
    DESCRIPTION = ("Applies a domain adapter (e.g. AnimateDiff's v3_sd15_adapter) to the model: W + alpha·up@down "
                   "on the spatial attention, like the core LoraLoader at strength alpha. Returns a copy; the "
                   "input model is left as it was.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the adapter, for AnimateDiff_ApplyMotionModule or a sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model (base or fine-tuned)."}),
                "adapter_name": (adapter_files(), {"tooltip":
                    "A domain adapter from models/animatediff_adapters or models/loras, e.g. v3_sd15_adapter.ckpt. "
                    "A name in both folders is read from animatediff_adapters."}),
                "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip":
                    "Strength of the adapter: 1 as trained (the look of the training videos), 0 removes it; "
                    "lower values keep more of the checkpoint's own style."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, adapter_name, **kwargs):
        return file_stamp(find_adapter(adapter_name))

    @finite("alpha")
    def apply(self, model, adapter_name, alpha):
        return (apply_domain_adapter(model, adapter_path(adapter_name), float(alpha)),)
