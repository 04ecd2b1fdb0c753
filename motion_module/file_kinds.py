"""What kind of model file a dictionary of weights is, from its key names alone, for every loader of the pack.

A user can pick any file in any list, and files of every kind sit side by side in shared folders, so each
refusal says what the file is and which node reads it, in the same words whichever node was given it.
"""
from ..errors import ModelFileError


class FileKind:
    MOTION_MODULE = "motion_module"
    MOTION_LORA = "motion_lora"
    DOMAIN_ADAPTER = "domain_adapter"
    SPARSECTRL = "sparsectrl"
    CAMERACTRL = "cameractrl"
    CONTROLNET = "controlnet"
    DIFFUSERS_CONTROLNET = "diffusers_controlnet"
    DIFFUSERS_UNET = "diffusers_unet"
    IMAGE_LORA = "image_lora"
    CHECKPOINT = "checkpoint"
    UNKNOWN = "unknown"

    # kind -> (what the file is, where it belongs)
    DESCRIPTIONS = {
        MOTION_MODULE: ("a motion module",
                        "Load it with AnimateDiff_LoadMotionModule (files in models/animatediff_models)."),
        MOTION_LORA: ("a MotionLoRA (a LoRA on the motion module's temporal attention)",
                      "Load it with AnimateDiff_MotionLoRA (files in models/animatediff_motion_lora)."),
        DOMAIN_ADAPTER: ("a domain adapter (a LoRA on the image model's spatial attention, like v3_sd15_adapter)",
                         "Load it with AnimateDiff_DomainAdapter (files in models/animatediff_adapters or "
                         "models/loras)."),
        SPARSECTRL: ("a SparseCtrl model (AnimateDiff v3's sparse ControlNet)",
                     "Put it in models/controlnet and load it with AnimateDiff_LoadSparseCtrl."),
        CAMERACTRL: ("a CameraCtrl model",
                     "Load it with AnimateDiff_LoadCameraCtrl, beside v3_sd15_mm.ckpt in Load Motion Module."),
        CONTROLNET: ("a ControlNet", "Load it with the core Load ControlNet Model node."),
        DIFFUSERS_CONTROLNET: ("a ControlNet in diffusers' format",
                               "Load it with the core Load ControlNet Model node."),
        DIFFUSERS_UNET: ("a whole UNet with motion modules in diffusers' layout (diffusers' UNetMotionModel, or "
                         "Hotshot-XL's UNet)",
                         "Use the motion modules alone: a MotionAdapter's diffusion_pytorch_model.safetensors, "
                         "HotshotXL's hsxl_temporal_layers.safetensors, or the original release of the motion "
                         "module."),
        IMAGE_LORA: ("an image LoRA (kohya/diffusers naming)", "Load it with the core LoraLoader."),
        CHECKPOINT: ("a Stable Diffusion checkpoint", "Load it with Load Checkpoint."),
        UNKNOWN: ("not a file this pack knows", "Check that the right file was picked."),
    }


LORA_PARTS = ("_lora.", "lora_up.", "lora_down.", ".lora_A.", ".lora_B.", "lora_unet_", "lora_te")


def file_kind(keys) -> str:
    """The kind of a weights file, told from its key names; the first rule that matches decides, so the
    kinds that contain another's names (a SparseCtrl has motion modules, a ControlNet a UNet's input blocks)
    come first."""
    keys = list(keys)

    def has(*parts):
        return any(part in k for k in keys for part in parts)
    # kohya's LoRA names join it with underscores; HotshotXL calls its motion modules temporal attentions
    motion = has("motion_modules") or (has("temporal_attentions.") and has("positional_encoding"))
    if has("qkv_merge.", "encoder_conv_in.", "encoder_down_conv_blocks."):
        return FileKind.CAMERACTRL
    if has("controlnet_cond_embedding."):
        return FileKind.SPARSECTRL if motion else FileKind.DIFFUSERS_CONTROLNET
    if has("control_model.", "input_hint_block."):
        return FileKind.CONTROLNET
    if has(*LORA_PARTS):
        if motion:
            return FileKind.MOTION_LORA
        if has(".processor.to_") and has(".attentions.") and has("_lora.up.weight"):
            return FileKind.DOMAIN_ADAPTER
        return FileKind.IMAGE_LORA
    if motion and has(".resnets."):
        return FileKind.DIFFUSERS_UNET
    if has("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "input_blocks.0.0.weight"):
        return FileKind.CHECKPOINT
    return FileKind.MOTION_MODULE if motion else FileKind.UNKNOWN


def refuse_kind(path, kind: str, wanted: str):
    """Raises the error for a file of `kind` handed to the node that reads `wanted` files."""
    what, where = FileKind.DESCRIPTIONS[kind]
    raise ModelFileError(path, f"is {what}, not {FileKind.DESCRIPTIONS[wanted][0]}.", where)


def require_kind(state_dict, path, wanted: str):
    """Refuses a file of another known kind than `wanted`; a file of no known kind is left to the loader, which
    says what it lacks."""
    kind = file_kind(state_dict)
    if kind not in (wanted, FileKind.UNKNOWN):
        refuse_kind(path, kind, wanted)
