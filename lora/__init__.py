"""MotionLoRAs and the domain adapter: reading the files, and matching their layers to a model.

Pure torch; the merge is ComfyUI's own LoRA math, applied as weight patches in patching/lora.py.
"""
from .domain_adapter import fit_domain_adapter, parse_domain_adapter
from .files import LoRAPair
from .motion_lora import MotionLoRA, MotionLoRAFit, add_to_stack, fit_motion_lora, parse_motion_lora, target_key

__all__ = ["fit_domain_adapter", "parse_domain_adapter", "LoRAPair", "MotionLoRA", "MotionLoRAFit", "add_to_stack", "fit_motion_lora", "parse_motion_lora", "target_key"]
