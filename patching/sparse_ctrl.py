"""SparseCtrl (AnimateDiff v3's sparse ControlNets): reading the released files and running their encoder.

A SparseCtrl file is an SD1.5 ControlNet in diffusers' layout whose down blocks carry motion modules (one
temporal attention each, 32 positions). Unlike a ControlNet it never sees the noisy latents (they are zeroed),
only the condition: the hints of a few frames, zero elsewhere, plus a mask channel marking those frames.
- "RGB" files (`controlnet_cond_embedding.weight`) take the frames' VAE latents and embed them with one conv;
- the others (scribble/sketch, `controlnet_cond_embedding.conv_in.weight`) take images through ControlNet's
  usual hint encoder.
The spatial part is ComfyUI's own ControlNet model (comfy.cldm), under the names ComfyUI's loader gives a
diffusers ControlNet; the temporal part is this pack's MotionModel.
"""
from types import SimpleNamespace

import comfy.cldm.cldm
import comfy.model_management
import comfy.ops
import comfy.utils
import torch
from comfy.ldm.modules.attention import attention_pytorch
from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding
from comfy.model_detection import count_blocks
from torch import nn

from ..errors import AnimateDiffError, ModelFileError
from ..motion_module import Family, MotionModel, MotionModelSpec
from ..motion_module.file_kinds import FileKind, require_kind
from ..motion_module.formats import (MOTION_KEY, block_channels, check_layout, checked_weights, module_channels,
                                     read_state_dict)
from ..motion_module.layers import TORCH_OPS
from ..motion_module.model import TABLE_SUFFIX
from .motion import check_frames_fit
from .prompts import text_width

SPARSECTRL_FRAMES = 32  # the table its code builds from the formula; the file's own tables are not read
SD15_HEADS = 8
RGB_EMBEDDING = "controlnet_cond_embedding.weight"
IMAGE_EMBEDDING = "controlnet_cond_embedding.conv_in.weight"


class SparseCtrlModel(torch.nn.Module):
    """The SparseCtrl encoder: ComfyUI's ControlNet blocks with a motion module after each down-block layer.

    Called as ComfyUI's ControlNet calls its model; `video_frames` (frames per video in the batch) comes in
    through the control's extra arguments."""

    def __init__(self, control: comfy.cldm.cldm.ControlNet, motion: MotionModel, latent_hints: bool):
        super().__init__()
        self.control = control
        self.motion = motion
        self.latent_hints = latent_hints  # RGB: hints are VAE latents; otherwise images
        self.dtype = control.dtype
        self.text_width = text_width(control)
        modules = motion.spec.modules_per_down_block
        # input_blocks[3i + j + 1] is layer j of down block i (FORMATS.md §1's placement)
        self.motion_after = {3 * i + j + 1: (block.motion_modules[j],)
                             for i, block in enumerate(motion.down_blocks) for j in range(modules)}

    @property
    def hint_channels(self) -> int:
        """Channels of one frame's hint, the mask channel not counted."""
        return self.control.input_hint_block[0].weight.shape[1] - 1

    def forward(self, x, hint, timesteps, context, video_frames: int, y=None, **kwargs):
        check_frames_fit(video_frames, self.motion.spec.max_frames, "SparseCtrl")
        if context is not None and context.shape[-1] != self.text_width:
            family = " (SDXL's width)" if Family.reading_text(context.shape[-1]) == Family.SDXL else ""
            raise AnimateDiffError(f"SparseCtrl is an SD1.5 ControlNet, whose text conditioning is {self.text_width} "
                                   f"wide, but this model's is {context.shape[-1]} wide{family}: SparseCtrl cannot "
                                   "guide it. Use SparseCtrl with an SD1.5 checkpoint and v3_sd15_mm.")
        net = self.control
        emb = net.time_embed(timestep_embedding(timesteps, net.model_channels, repeat_only=False).to(x.dtype))
        h = torch.zeros_like(x)  # SparseCtrl is trained with its noisy input set to zero
        outputs = []
        for index, (block, zero_conv) in enumerate(zip(net.input_blocks, net.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + net.input_hint_block(hint, emb, context)
            if index in self.motion_after:
                (module,) = self.motion_after[index]
                h = module(h, video_frames, attention_pytorch)
            outputs.append(zero_conv(h, emb, context))
        h = net.middle_block(h, emb, context)
        return {"middle": [net.middle_block_out(h, emb, context)], "output": outputs}


def load_sparse_ctrl_model(path) -> tuple[SparseCtrlModel, torch.device, torch.dtype | None]:
    """The model of a SparseCtrl file, in the dtype ComfyUI picks for ControlNets here; also the device to
    run it on and the dtype to compute in when that differs (as ComfyUI's ControlNet loader returns them)."""
    state_dict = read_state_dict(path)
    latent_hints = takes_latent_hints(state_dict, path)
    motion_sd = {k: v for k, v in state_dict.items() if MOTION_KEY.match(k) and not k.endswith(TABLE_SUFFIX)}
    spatial_sd = {k: v for k, v in state_dict.items() if not MOTION_KEY.match(k)}

    config = _unet_config(spatial_sd, path)
    weight_dtype = comfy.utils.weight_dtype(spatial_sd)
    dtype = comfy.model_management.unet_dtype(model_params=-1, weight_dtype=weight_dtype)
    load_device = comfy.model_management.get_torch_device()
    compute_dtype = comfy.model_management.unet_manual_cast(dtype, load_device)
    ops = comfy.ops.pick_operations(dtype, compute_dtype)
    hint_channels = state_dict[RGB_EMBEDDING if latent_hints else IMAGE_EMBEDDING].shape[1]
    with torch.device("meta"):
        control = _control_net(config, hint_channels, latent_hints, ops, dtype)
        motion = MotionModel(_motion_spec(motion_sd, path), ops)
        # The layout is read off plain torch layers: ComfyUI's ops may make their weights only when loaded
        # (dynamic VRAM, on by default on NVIDIA cards since ComfyUI 0.15), and until then have none to read.
        plain = _control_net(config, hint_channels, latent_hints, PLAIN_OPS)
    spatial_sd = _ldm_names(spatial_sd, config, latent_hints)
    check_layout("an SD1.5 SparseCtrl", {k: v.shape for k, v in plain.state_dict().items()}, spatial_sd, path)
    control.load_state_dict(checked_weights(spatial_sd, dtype, path), strict=True, assign=True)
    control.eval().requires_grad_(False)
    check_layout("an SD1.5 SparseCtrl's motion modules",
                 {k: s for k, s in motion.shapes().items() if not k.endswith(TABLE_SUFFIX)}, motion_sd, path)
    motion.take_weights(checked_weights(motion_sd, dtype, path))
    return SparseCtrlModel(control, motion, latent_hints), load_device, compute_dtype


def takes_latent_hints(state_dict, path) -> bool:
    """True for an RGB (latent-hint) file, False for an image-hint one; anything else is refused."""
    require_kind(state_dict, path, FileKind.SPARSECTRL)
    if any(MOTION_KEY.match(k) for k in state_dict) and (RGB_EMBEDDING in state_dict or IMAGE_EMBEDDING in state_dict):
        return RGB_EMBEDDING in state_dict
    raise ModelFileError(path, "is not a SparseCtrl model: it lacks SparseCtrl's motion modules or hint embedding "
                         f"(`{RGB_EMBEDDING}` or `{IMAGE_EMBEDDING}`).",
                         "Use v3_sd15_sparsectrl_rgb.ckpt or v3_sd15_sparsectrl_scribble.ckpt.")


def _unet_config(sd, path) -> dict:
    """The SD1.5-shaped config of the encoder, read from its weights (as ComfyUI's detection reads UNets')."""
    try:
        model_channels, in_channels = sd["conv_in.weight"].shape[:2]
        levels = count_blocks(sd, "down_blocks.{}.")
        res_blocks = [count_blocks(sd, f"down_blocks.{i}.resnets.{{}}.") for i in range(levels)]
        mult = [sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] // model_channels for i in range(levels)]
        depth = [count_blocks(sd, f"down_blocks.{i}.attentions.{j}.transformer_blocks.{{}}.")
                 for i in range(levels) for j in range(res_blocks[i])]
        context_dim = sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1]
        linear = sd["down_blocks.0.attentions.0.proj_in.weight"].ndim == 2
    except KeyError as e:
        raise ModelFileError(path, f"lacks the weight {e} that every SD1.5 SparseCtrl has.",
                             "The file may be damaged or of another model family.") from e
    return {"image_size": 32, "in_channels": in_channels, "model_channels": model_channels,
            "num_res_blocks": res_blocks, "channel_mult": mult, "transformer_depth": depth,
            # the encoder has no output blocks; ComfyUI's name map wants their depths all the same
            "transformer_depth_output": [max(depth, default=0)] * sum(n + 1 for n in res_blocks),
            "transformer_depth_middle": count_blocks(sd, "mid_block.attentions.0.transformer_blocks.{}."),
            "context_dim": context_dim, "num_heads": SD15_HEADS, "num_head_channels": -1,
            "use_linear_in_transformer": linear, "use_spatial_transformer": True, "legacy": False,
            "use_checkpoint": False, "adm_in_channels": None}


def _ldm_names(sd, config, latent_hints: bool) -> dict:
    """The spatial weights under ComfyUI's ControlNet names: its own diffusers map for the UNet blocks, plus
    the ControlNet parts (zero convs, hint encoder), as ComfyUI's loader names a diffusers ControlNet's."""
    names = comfy.utils.unet_to_diffusers(config)
    names["controlnet_mid_block.weight"] = "middle_block_out.0.weight"
    names["controlnet_mid_block.bias"] = "middle_block_out.0.bias"
    for key in sd:
        if key.startswith("controlnet_down_blocks."):
            _, index, suffix = key.split(".")
            names[key] = f"zero_convs.{index}.0.{suffix}"
        elif key.startswith("controlnet_cond_embedding."):
            parts = key.split(".")
            if latent_hints:  # controlnet_cond_embedding.{weight,bias}
                names[key] = f"input_hint_block.0.{parts[-1]}"
            else:  # conv_in, blocks.0-5, conv_out: every other layer of the hint encoder (SiLUs between)
                layer = {"conv_in": 0, "conv_out": 14}.get(parts[1])
                layer = 2 * (int(parts[2]) + 1) if layer is None else layer
                names[key] = f"input_hint_block.{layer}.{parts[-1]}"
    return {names.get(k, k): v for k, v in sd.items()}


# torch's own layers in the shape of ComfyUI's operations: the motion module's, and conv_nd for the ControlNet
PLAIN_OPS = SimpleNamespace(
    **vars(TORCH_OPS), conv_nd=lambda dims, *args, **kwargs: (nn.Conv2d if dims == 2 else nn.Conv3d)(*args, **kwargs))


def _control_net(config: dict, hint_channels: int, latent_hints: bool, ops, dtype=None) -> comfy.cldm.cldm.ControlNet:
    control = comfy.cldm.cldm.ControlNet(hint_channels=hint_channels, operations=ops, dtype=dtype, **config)
    if latent_hints:  # one conv from the latents (and mask) to the first block's channels
        control.input_hint_block = TimestepEmbedSequential(
            ops.conv_nd(2, hint_channels, config["model_channels"], 3, padding=1, dtype=dtype))
    return control


def _motion_spec(motion_sd, path) -> MotionModelSpec:
    modules = module_channels(motion_sd, path)
    outside = sorted(f"{kind}.{block}" for kind, block, _ in modules if kind != "down_blocks")
    if outside:
        raise ModelFileError(path, f"has motion modules outside the down blocks ({outside[0]}); SparseCtrl's "
                             "sit in its down blocks only.", "The file may be of an unknown variant.")
    down = block_channels(modules, "down_blocks", path)
    if not down:
        raise ModelFileError(path, "has no complete motion modules.", "The file may be damaged.")
    return MotionModelSpec(version="SparseCtrl", down_channels=tuple(down), up_channels=(), mid_channels=None,
                           max_frames=SPARSECTRL_FRAMES, attention_blocks=1)
