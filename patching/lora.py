"""MotionLoRAs and the domain adapter as ComfyUI weight patches on cloned ModelPatchers.

The merge is ComfyUI's own LoRA math (`comfy.lora.load_lora` + `ModelPatcher.add_patches`): ComfyUI adds the
deltas to the shared module's weights when it loads the clone and puts the original weights back when it
unloads it, so the loaded motion module and the user's UNet are never changed for good.
"""
import logging

import comfy.lora

from ..lora import fit_domain_adapter, fit_motion_lora, parse_domain_adapter, parse_motion_lora
from ..motion_module import Family, MotionVersion, read_state_dict


def check_motion_lora_file(path) -> None:
    """Refuses, at the node that picked it, a file that is not a MotionLoRA."""
    parse_motion_lora(read_state_dict(path), path)


def motion_lora_patcher(motion, stack):
    """A clone of the motion module's own ModelPatcher carrying every entry of the MOTION_LORA stack.

    The clone shares the module (and so the layers injected into the UNet) with `motion.patcher`; only the
    patch list differs, so another stack on the same loaded module never reloads or changes it."""
    patcher = motion.patcher.clone()
    shapes = {k: tuple(v.shape) for k, v in motion.model.state_dict().items()}
    for entry in stack:
        if entry.strength == 0:
            continue  # what LoraLoader does at strength 0: nothing
        state_dict = entry.weights if entry.weights is not None else read_state_dict(entry.path)
        fit = fit_motion_lora(parse_motion_lora(state_dict, entry.path), shapes, entry.path, motion.name)
        if fit.skipped:
            logging.warning("AnimateDiff: MotionLoRA %s: %d mid-block layers skipped, the motion module %s (%s) "
                            "has no mid block. MotionLoRAs were trained on v2; on %s the motion may be weaker "
                            "or different.", entry.name, len(fit.skipped), motion.name, motion.spec.version,
                            motion.spec.version)
        elif motion.spec.version != MotionVersion.V2 and motion.spec.base == Family.SD15:
            logging.info("AnimateDiff: MotionLoRA %s on a %s motion module; MotionLoRAs were trained on v2.",
                         entry.name, motion.spec.version)
        # Without `.alpha` keys ComfyUI's scale is 1, so each weight gets strength · up @ down (FORMATS.md §3).
        patcher.add_patches(comfy.lora.load_lora(state_dict, fit.key_map, log_missing=False), entry.strength)
    return patcher


def apply_domain_adapter(model, path, alpha: float):
    """A clone of `model` whose spatial attention gets W + α·up@down while it is loaded (paper Eq. 4)."""
    state_dict = read_state_dict(path)
    pairs = parse_domain_adapter(state_dict, path)
    # ComfyUI's own map from diffusers names (`...attn1.processor.to_q`) to this model's UNet keys: the same
    # one the core LoraLoader uses, so α here and strength_model there give the same weights.
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    shapes = {k: tuple(v.shape) for k, v in model.model_state_dict("diffusion_model.").items()}
    targets = fit_domain_adapter(pairs, key_map, shapes, path, type(model.model.model_config).__name__)
    patched = model.clone()
    if alpha != 0:
        patched.add_patches(comfy.lora.load_lora(state_dict, targets, log_missing=False), alpha)
    return patched
