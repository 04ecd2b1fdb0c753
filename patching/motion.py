"""Puts a motion model into a cloned ModelPatcher, on ComfyUI's extension points only.

- injections insert one MotionLayer per placement into the UNet's blocks when ComfyUI patches the clone,
  and take them out when it unpatches it (ComfyUI ejects around every weight load and unload);
- a forward_timestep_embed patch runs those layers with the call's transformer_options;
- for v1, PIA and HotshotXL modules, forward hooks make the resnets' GroupNorms normalise over all frames,
  and a DIFFUSION_MODEL wrapper tells them how many frames the current call holds (JointGroupNorms);
- the motion model's own ModelPatcher is an additional model, so it loads and offloads with the UNet;
- the beta schedule is an object patch of `model_sampling`, and an OUTER_SAMPLE wrapper checks when sampling
  starts that no node placed after this one replaced it (patching/schedule.py);
- an effect_mask's maps are made per call by an APPLY_MODEL wrapper (patching/effect.py), and so are
  CameraCtrl's pose features (patching/camera_ctrl.py);
- start_percent / end_percent: an APPLY_MODEL wrapper marks the calls outside that part of the sampling, and
  the motion layers and v1's frame-wide norms sit those out (ActingRange).
"""
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import torch
import torch.utils.checkpoint
from comfy.ldm.modules.attention import SpatialTransformer, attention_pytorch
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

from ..errors import AnimateDiffError
from ..motion_module import Family, MotionModel, MotionModelSpec, load_motion_model, placements
from ..motion_module.layers import MotionModule
from . import prompts
from .calls import call_options, frames_in_call, with_call_options
from .effect import MotionEffect, blend
from .lora import motion_lora_patcher
from .schedule import with_beta_schedule

KEY = "animatediff"
IDLE = "idle"  # in a call's transformer_options[KEY]: outside start_percent–end_percent, the module sits out
RECOMPUTE = "recompute"  # in transformer_options[KEY] while training: backward recomputes each layer's activations


@dataclass
class LoadedMotionModel:
    """What flows on a MOTION_MODEL link: the module, its own ModelPatcher, and the file it came from."""
    name: str
    model: MotionModel
    patcher: comfy.model_patcher.ModelPatcher

    @property
    def spec(self) -> MotionModelSpec:
        return self.model.spec


def load_motion_model_file(path, name: str) -> LoadedMotionModel:
    """Weights in the dtype ComfyUI picks for UNets here; comfy.ops layers cast when the UNet differs."""
    model = load_motion_model(path, ops=comfy.ops.manual_cast, dtype=comfy.model_management.unet_dtype())
    return LoadedMotionModel(name, model, own_patcher(model))


def own_patcher(model: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """The ModelPatcher of a model that runs inside the UNet's call (an additional model): loaded where the UNet
    runs, offloaded where it is offloaded."""
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def check_frames_fit(frames: int, max_frames: int, what: str):
    """Refuses a call holding more frames per video than a positional table has rows."""
    if frames > max_frames:
        raise AnimateDiffError(f"{frames} frames > {max_frames} {what} supports: add AnimateDiff_ContextWindows "
                               f"(context_length ≤ {max_frames}) or make fewer frames.")


class MotionLayer(torch.nn.Module):
    """The slot a motion module takes in a TimestepEmbedSequential block while the clone is patched.

    It holds the module without owning it: the weights belong to the motion model's own ModelPatcher.
    """

    def __init__(self, module: MotionModule, name: str):
        super().__init__()
        self.motion = (module,)
        self.name = name

    def forward(self, x):
        raise AnimateDiffError("A motion layer ran without its ComfyUI patch (forward_timestep_embed_patch); "
                               "this ComfyUI may be too old or a node removed the model's patches.")

    def run(self, x, transformer_options: dict):
        if transformer_options.get(KEY, {}).get(RECOMPUTE) and torch.is_grad_enabled():
            # Training keeps only the layer's input for backward and runs it again there: the motion layers hold
            # ~45 % of the activations a step keeps, and one more pass of the module is within a step's noise
            # (docs/performance.md); the gradients are the same bits.
            return torch.utils.checkpoint.checkpoint(self._run, x, transformer_options, use_reentrant=False)
        return self._run(x, transformer_options)

    def _run(self, x, transformer_options: dict):
        (module,) = self.motion
        frames = frames_in_call(x, transformer_options)
        check_frames_fit(frames, module.max_frames, "this motion module")
        options = transformer_options.get(KEY, {})
        if options.get(IDLE):
            return x
        # Temporal attention is many (b·h·w) short (≤ 32 frames) sequences: PyTorch's SDPA suits that shape on
        # every device, where ComfyUI's global pick is tuned for long spatial sequences (on a CPU its
        # sub-quadratic kernel is 3-4× slower here). User overrides still apply through transformer_options;
        # an override may call a kernel that ignores masks (SageAttention does), so then no masked packed rows.
        override = transformer_options.get("optimized_attention_override") is not None
        before = x
        image_features = options.get("image_features")  # AnimateLCM-I2V's, before a down block's last module
        if image_features and self.name in image_features:
            x = x + image_features[self.name]
        effect = options.get("effect")  # scales all the layer changes, the picture's features included
        if effect is not None and effect.keeps_input:
            return before
        camera = options.get("camera")  # CameraCtrl's (patching/camera_ctrl.py)
        out = module(x, frames, attention_pytorch, options.get("motion_scale", 1.0), transformer_options,
                     pack_sequences=not override, camera=camera and camera.for_module(self.name))
        return out if effect is None else blend(before, out, effect.weights(before, transformer_options))


def run_motion_layer(layer, x, emb, context, transformer_options, *args, **kwargs):
    return layer.run(x, transformer_options)


class JointGroupNorms:
    """v1 (and PIA, HotshotXL) normalise the resnets' GroupNorms over all frames of a video: a DIFFUSION_MODEL
    wrapper notes how many frames the current call holds, and forward hooks regroup each norm's input around it.

    A plain attribute, not a ContextVar: torch.compile (the core TorchCompileModel node) traces attribute
    writes, so the UNet's body stays one graph; ComfyUI runs one UNet call at a time.
    """

    def __init__(self):
        self.frames = None

    def track_frames(self, executor, x, *args, **kwargs):
        """The DIFFUSION_MODEL wrapper."""
        options = call_options(args, kwargs)
        idle = options.get(KEY, {}).get(IDLE)  # outside start_percent–end_percent: the image model's own norms
        outer, self.frames = self.frames, None if idle else frames_in_call(x, options)
        try:
            return executor(x, *args, **kwargs)
        finally:
            self.frames = outer

    def _regroups(self, x) -> bool:
        return self.frames is not None and self.frames > 1 and x.ndim == 4

    def to_joint(self, norm, args):
        """(b f) c h w -> b c (f h) w, so GroupNorm's statistics span every frame of a video."""
        (x,) = args
        if not self._regroups(x):
            return None
        bf, c, h, w = x.shape
        f = self.frames
        return (x.reshape(bf // f, f, c, h, w).transpose(1, 2).reshape(bf // f, c, f * h, w),)

    def from_joint(self, norm, args, output):
        """b c (f h) w -> (b f) c h w, back to the UNet's layout."""
        if not self._regroups(output):
            return None
        b, c, fh, w = output.shape
        f = self.frames
        return output.reshape(b, c, f, fh // f, w).transpose(1, 2).reshape(b * f, c, fh // f, w)


def joint_groupnorms(unet) -> list[torch.nn.Module]:
    """The GroupNorms v1 normalises over frames: both of every resnet, and the UNet's output norm."""
    resnets = [m for block in (*unet.input_blocks, unet.middle_block, *unet.output_blocks) for m in block
               if isinstance(m, ResBlock)]
    return [norm for resnet in resnets for norm in (resnet.in_layers[0], resnet.out_layers[0])] + [unet.out[0]]


LAYER_NAME = "animatediff_motion"  # a motion layer's name among its block's children


def insertion_index(block) -> int:
    """After the block's spatial transformer, or its resnet when it has none; before any down/upsampler."""
    layers = list(block)
    attentions = [i for i, m in enumerate(layers) if isinstance(m, SpatialTransformer)]
    if attentions:
        return attentions[-1] + 1
    return next(i for i, m in enumerate(layers) if isinstance(m, ResBlock)) + 1


def insert_named(block: torch.nn.Sequential, index: int, layer: torch.nn.Module):
    """Puts `layer` at `index` in the block's order under its own name, where Sequential.insert would renumber
    the children after it: while this model stays loaded the UNet is shared, and a LoRA, a merge or a save
    through another patcher reads its state_dict keys (middle_block.2.…) by those numbers."""
    if hasattr(block, LAYER_NAME):  # ComfyUI ejects one clone's injections before it loads another clone
        raise AnimateDiffError("A UNet block already holds a motion layer that ComfyUI did not take out: another "
                               "model sharing this UNet still has it in. Free the models (Unload Models, or restart "
                               "ComfyUI) and queue again.")
    later = list(block.named_children())[index:]
    for name, _ in later:
        delattr(block, name)
    block.add_module(LAYER_NAME, layer)
    for name, child in later:
        block.add_module(name, child)


class MotionInjection:
    def __init__(self, motion_model, joint_norms: JointGroupNorms | None = None):
        self.motion_model = motion_model
        self.joint_norms = joint_norms
        # Per UNet: clones share this object, and newer ComfyUIs give some clones a UNet of their own (the
        # non-dynamic delegate when conditioning carries hooks), so ejecting one must leave the other's hooks.
        self.hooks: dict[int, list] = {}

    def _targets(self, unet):
        for place in placements(self.motion_model):
            module = self.motion_model.get_submodule(place.motion_key)
            block = unet.middle_block if place.index is None else getattr(unet, place.unet_blocks)[place.index]
            yield place, module, block

    def inject(self, patcher):
        unet = patcher.model.diffusion_model
        for place, module, block in self._targets(unet):
            insert_named(block, insertion_index(block), MotionLayer(module, place.motion_key))
        if self.joint_norms is not None:
            self.hooks[id(unet)] = [hook for norm in joint_groupnorms(unet)
                                    for hook in (norm.register_forward_pre_hook(self.joint_norms.to_joint),
                                                 norm.register_forward_hook(self.joint_norms.from_joint))]

    def eject(self, patcher):
        unet = patcher.model.diffusion_model
        for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
            if isinstance(getattr(block, LAYER_NAME, None), MotionLayer):
                delattr(block, LAYER_NAME)  # the others keep their names and order
        for hook in self.hooks.pop(id(unet), []):
            hook.remove()


# A family's UNet: input blocks (3 per level), its text encoder's width, the advice for the other family
UNETS = {Family.SD15: (12, Family.TEXT_WIDTHS[Family.SD15], "CLIP-L's 768",
                       "for SDXL models an SDXL motion module (mm_sdxl_v10_beta)"),
         Family.SDXL: (9, Family.TEXT_WIDTHS[Family.SDXL], "SDXL's 2048 (CLIP-L and CLIP-G)",
                       "for SD1.5 models an SD1.5 motion module (mm_sd_v15_v2, v3_sd15_mm)")}


def check_unet_fits(unet, motion_model, model_name: str, module_name: str):
    """Refuses a UNet whose blocks do not have the channels the motion module was made for."""
    base = motion_model.spec.base
    blocks, text_width, text, other = UNETS[base]

    def refuse(why):
        raise AnimateDiffError(f"The motion module {module_name} is for {base} models, but the model is "
                               f"{model_name} ({why}). Load an {base} checkpoint (or an {base} fine-tune), or {other}.")
    found = len(getattr(unet, "input_blocks", []))
    if getattr(unet, "middle_block", None) is None or found != blocks or len(unet.output_blocks) != blocks:
        refuse(f"its UNet has {found} input blocks, {base} has {blocks}")
    conv_in = unet.input_blocks[0][0]
    if motion_model.spec.input_conv and getattr(conv_in, "in_channels", None) != 4:
        raise AnimateDiffError(f"PIA's motion module {module_name} adds its picture to a UNet that takes the 4 "
                               f"latent channels, but this model's takes {getattr(conv_in, 'in_channels', '?')} "
                               f"(an inpainting model?). Load an ordinary SD1.5 checkpoint.")
    for place in placements(motion_model):
        block = unet.middle_block if place.index is None else getattr(unet, place.unet_blocks)[place.index]
        resnet = next(m for m in block if isinstance(m, ResBlock))
        channels = motion_model.get_submodule(place.motion_key).temporal_transformer.proj_in.in_features
        if resnet.out_channels != channels:
            refuse(f"{place.unet_blocks} has {resnet.out_channels} channels where the module expects {channels}")
        attention = [m for m in block if isinstance(m, SpatialTransformer)]
        if attention and attention[0].transformer_blocks[0].attn2.to_k.in_features != text_width:
            refuse(f"its text conditioning is not {text} channels")


@dataclass(frozen=True)
class ActingRange:
    """The part of the sampling the motion module acts in, in ComfyUI's percent of the model's timesteps (as
    ControlNet's and ConditioningSetTimestepRange's start/end: a call at sigma s is inside when
    sigma(end) <= s <= sigma(start)). Outside it, each frame is the image model's alone."""
    start_percent: float
    end_percent: float

    def __post_init__(self):
        if not 0 <= self.start_percent <= self.end_percent <= 1:
            raise AnimateDiffError(f"start_percent ({self.start_percent}) and end_percent ({self.end_percent}) "
                                   "must satisfy 0 <= start_percent <= end_percent <= 1: the motion module acts "
                                   "from start_percent of the sampling to end_percent.")

    @property
    def whole(self) -> bool:
        return self.start_percent == 0 and self.end_percent == 1

    def for_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: a call outside the range tells the motion layers to sit out."""
        sampling = executor.class_obj.model_sampling
        t = args[0] if args else kwargs["t"]
        sigma = float(t.reshape(-1)[0])  # a call's batch shares one sigma in ComfyUI's samplers
        if sampling.percent_to_sigma(self.end_percent) <= sigma <= sampling.percent_to_sigma(self.start_percent):
            return executor(x, *args, **kwargs)
        options = call_options(args, kwargs)
        args, kwargs = with_call_options(args, kwargs, {**options, KEY: {**options.get(KEY, {}), IDLE: True}})
        return executor(x, *args, **kwargs)


def refuse_copies_on_other_gpus(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper. Newer ComfyUIs' MultiGPU CFG Split node gives the model copies on other GPUs (its
    "multigpu" additional models), made without this pack's motion layers or with them sharing one device's."""
    if executor.class_obj.model_patcher.get_additional_models_with_key("multigpu"):
        raise AnimateDiffError("The animating model has copies on other GPUs (ComfyUI's MultiGPU CFG Split node), "
                               "which Apply Motion Module does not support yet: those copies would sample without "
                               "the motion module. Remove the MultiGPU node and sample on one GPU.")
    return executor(*args, **kwargs)


def apply_motion_model(model, motion, motion_scale: float, beta_schedule: str, motion_lora=None,
                       effect: MotionEffect | None = None, acting: ActingRange | None = None):
    """A clone of `model` that animates with `motion` (a nodes' MOTION_MODEL) whenever it samples; a
    MOTION_LORA stack goes onto a clone of the motion module's own patcher, merged while it is loaded.
    `effect` blends each motion layer's output with its input (None: the output, as the original); `acting`
    limits the module to part of the sampling (None: all of it)."""
    unet = model.model.diffusion_model
    check_unet_fits(unet, motion.model, type(model.model.model_config).__name__, motion.name)
    motion_patcher = motion_lora_patcher(motion, motion_lora) if motion_lora else motion.patcher
    patched = model.clone()
    joint_norms = JointGroupNorms() if motion.spec.normalises_over_frames else None
    injection = MotionInjection(motion.model, joint_norms)
    patched.set_injections(KEY, [comfy.model_patcher.PatcherInjection(injection.inject, injection.eject)])
    patched.set_model_forward_timestep_embed_patch((MotionLayer, run_motion_layer))
    full = effect is None or (effect.strength == 1 and effect.mask is None)
    patched.model_options["transformer_options"][KEY] = {"motion_scale": float(motion_scale),
                                                          "effect": None if full else effect}
    patched.set_additional_models(KEY, [motion_patcher])
    if joint_norms is not None:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, joint_norms.track_frames)
    with_beta_schedule(patched, beta_schedule, motion.spec)
    wrappers = comfy.patcher_extension.WrappersMP
    patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, KEY, refuse_copies_on_other_gpus)  # after with_beta_schedule
    patched.remove_wrappers_with_key(wrappers.OUTER_SAMPLE, prompts.KEY)
    patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, prompts.KEY, prompts.check_prompts)
    patched.remove_wrappers_with_key(wrappers.APPLY_MODEL, KEY)  # an earlier Apply Motion Module's range, mask
    if acting is not None and not acting.whole:
        patched.add_wrapper_with_key(wrappers.APPLY_MODEL, KEY, acting.for_call)
    if effect is not None and effect.mask is not None:  # after with_beta_schedule, which clears KEY's OUTER_SAMPLE
        patched.add_wrapper_with_key(wrappers.APPLY_MODEL, KEY, effect.for_call)
        patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, KEY, effect.forget_after_sampling)
    return patched
