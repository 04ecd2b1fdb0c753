"""ComfyUI side of MotionLoRA training: the animating UNet, frozen, its prediction type, and the VAE encoding.

The UNet is the user's model with the motion module put in by apply_motion_model (the same injection as
sampling), loaded by ComfyUI's memory manager. Its raw `diffusion_model` output is ε (or v, for a v-prediction
model), called with integer timesteps, so no sampler code is involved.
"""
import contextlib

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import torch

from ..errors import AnimateDiffError
from ..lora.training import (EPSILON, V_PREDICTION, MotionLoRAWeights, fit_square, split_clips,
                             temporal_attention_layers, train)
from ..motion_module.formats import is_finite
from .calls import compute_dtype
from .motion import KEY, RECOMPUTE, apply_motion_model
from .prompts import text_width
from .schedule import trained_schedule


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """No gradients for any weight of `modules` while inside; all of them put back as they were after.

    ComfyUI runs nodes under torch.inference_mode, so weights loaded by a node are inference tensors, which
    autograd refuses to save for backward (it needs W to reach the LoRA through x). Those are swapped for
    plain copies while inside: it costs one extra copy of the UNet and motion module for the duration of
    training, and the originals (the very same tensor objects) are put back in the `finally`."""
    saved = []
    try:
        for module in modules:
            for sub in module.modules():
                for store in (sub._parameters, sub._buffers):
                    for name, tensor in list(store.items()):
                        if tensor is None:
                            continue
                        saved.append((store, name, tensor, tensor.requires_grad))
                        if tensor.is_inference():
                            copy = tensor.detach().clone()
                            store[name] = torch.nn.Parameter(copy, False) if name in sub._parameters else copy
                        else:
                            tensor.requires_grad_(False)
        yield
    finally:
        for store, name, tensor, requires_grad in reversed(saved):
            store[name] = tensor
            if not tensor.is_inference():
                tensor.requires_grad_(requires_grad)


def encode_clips(vae, model, images: torch.Tensor, frames: int, resolution: int) -> list[torch.Tensor]:
    """IMAGE batch -> model-space latents (f, 4, r/8, r/8) per clip of `frames` consecutive images."""
    if resolution % 8:
        raise AnimateDiffError(f"resolution {resolution} is not a multiple of 8; the VAE works in 8-pixel cells.")
    if not is_finite(images):
        raise AnimateDiffError("reference_frames hold NaN or infinite pixel values; training on them would make "
                               "the MotionLoRA NaN. Check the node that made the images.")
    clips = split_clips(images, frames)
    if not clips:
        raise AnimateDiffError(f"reference_frames holds {images.shape[0]} images, fewer than frames={frames}: "
                               "give at least one clip of `frames` images (or lower frames).")
    # The VAE returns its raw latent; the UNet works on process_latent_in's (SD1.5: × 0.18215).
    return [model.model.process_latent_in(vae.encode(fit_square(clip, resolution)).float()) for clip in clips]


def prediction_of(model) -> str:
    """EPSILON or V_PREDICTION, what `model`'s raw UNet output is; any other model is refused."""
    sampling = model.get_model_object("model_sampling")
    kind = type(sampling)
    # Told apart by the method ComfyUI itself reads the output with: EDM and LCM subclass V_PREDICTION and EPS
    # but read it differently. A discrete model with another timestep() (e.g. EDM's) expects other t.
    outputs = {comfy.model_sampling.EPS.calculate_denoised: EPSILON,
               comfy.model_sampling.V_PREDICTION.calculate_denoised: V_PREDICTION}
    prediction = outputs.get(getattr(kind, "calculate_denoised", None))
    if (prediction is None or not isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete)
            or kind.timestep is not comfy.model_sampling.ModelSamplingDiscrete.timestep):
        output = next((b.__name__ for b in kind.__mro__ if "calculate_denoised" in vars(b)), kind.__name__)
        # ComfyUI builds the class as `class ModelSampling(schedule, prediction)`: name the schedule base
        schedule = next(b.__name__ for b in kind.__mro__[1:] if issubclass(b, torch.nn.Module))
        raise AnimateDiffError(
            f"model predicts {output} with {schedule} sampling: MotionLoRA training supports discrete-time "
            "ε-prediction (EPS) and v-prediction (V_PREDICTION) models, zero terminal SNR or not. Connect "
            "the model from before the ModelSampling node that changes this.")
    return prediction


def alphas_of(model) -> torch.Tensor:
    """ᾱ_t for t = 0..999 of `model`'s own schedule (zero terminal SNR included), from ComfyUI's sigmas:
    σ_t² = (1 − ᾱ_t)/ᾱ_t."""
    # in float64 only on the CPU: Apple's MPS and DirectML have none, and a loaded model's schedule is on the device
    sigmas = model.get_model_object("model_sampling").sigmas.detach().cpu().double()
    return 1.0 / (1.0 + sigmas ** 2)


def caption_of(positive) -> torch.Tensor:
    """The one text embedding (1, tokens, dim) of `positive`; more than one is refused, not silently cut."""
    if len(positive) != 1:
        raise AnimateDiffError(f"positive holds {len(positive)} conditionings (e.g. from ConditioningCombine): "
                               "training uses one caption for all clips; connect a single CLIPTextEncode.")
    context = positive[0][0]
    if context.shape[0] != 1:
        raise AnimateDiffError(f"positive holds a batch of {context.shape[0]} embeddings (e.g. a prompt schedule's "
                               "one per frame): training uses one caption for every frame; connect a single "
                               "CLIPTextEncode.")
    return context


def pooled_text_of(model, positive, latent: torch.Tensor) -> torch.Tensor | None:
    """SDXL's `y` for the caption: its pooled text and the frames' size, as ComfyUI's sampler makes it (the size
    from the latent unless the conditioning sets one, as CLIPTextEncodeSDXL does). None for a model without
    one (SD1.5)."""
    size = {"width": latent.shape[-1] * 8, "height": latent.shape[-2] * 8}
    try:
        return model.model.encode_adm(**{**size, **positive[0][1]})
    except KeyError as e:
        if e.args != ("pooled_output",):
            raise
        raise AnimateDiffError("positive has no pooled_output (the pooled text an SDXL model also needs): connect "
                               "a CLIPTextEncode with this checkpoint's CLIP.") from e


def check_inputs_fit(model, clip: torch.Tensor, caption: torch.Tensor, pooled_text: torch.Tensor | None):
    """Refuses what the UNet would fail on deep inside with a bare size error: a caption from another family's
    CLIP, or a UNet that takes more than the latent's channels (an inpainting model)."""
    unet = model.model.diffusion_model
    width, channels = text_width(unet), unet.input_blocks[0][0].in_channels
    if width is not None and caption.shape[-1] != width:
        raise AnimateDiffError(f"positive is encoded {caption.shape[-1]} wide, but this model reads text {width} "
                               "wide: encode the caption with this checkpoint's own CLIP.")
    if pooled_text is not None and pooled_text.shape[-1] != model.model.adm_channels:
        raise AnimateDiffError(f"positive's pooled text makes a {pooled_text.shape[-1]}-wide `y`, but this model "
                               f"takes {model.model.adm_channels}: encode the caption with this checkpoint's own CLIP.")
    if channels != clip.shape[1]:
        raise AnimateDiffError(f"This model's UNet takes {channels} input channels (an inpainting model?), the "
                               f"latents {clip.shape[1]}: train with an ordinary checkpoint of the same family.")


def unet_of(patched, context: torch.Tensor, pooled_text: torch.Tensor | None = None, recompute: bool = True):
    """model(x_t, t): the loaded, patched UNet's raw output for one video (batch = frames) on the caption (and,
    for SDXL, its pooled text `y`). `recompute`: the motion layers keep only their inputs for backward."""
    unet = patched.model.diffusion_model
    dtype = compute_dtype(patched.model)
    options = dict(patched.model_options["transformer_options"])
    # What ComfyUI's sampler adds before each UNet call: the patcher's wrappers, and which chunk is cond.
    options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(patched.wrappers)
    options["cond_or_uncond"] = [0]
    options[KEY] = {**options[KEY], RECOMPUTE: recompute}

    def model(x_t, timesteps):
        c = context.to(x_t.device, dtype).expand(x_t.shape[0], -1, -1)
        y = None if pooled_text is None else pooled_text.to(x_t.device, dtype).expand(x_t.shape[0], -1)
        return unet(x_t.to(dtype), timesteps, context=c, y=y, transformer_options=options)
    return model


def train_motion_lora(model, motion, clips: list[torch.Tensor], positive, rank: int, steps: int,
                      learning_rate: float, seed: int, on_step=None):
    """Trains a MotionLoRA of `rank` on `motion`'s temporal attention inside `model`; returns
    (MotionLoRAWeights, losses). `model` and `motion` are left bit-identical."""
    frames = clips[0].shape[0]
    if frames > motion.model.spec.max_frames:
        raise AnimateDiffError(f"frames={frames} > {motion.model.spec.max_frames}, the most this motion module "
                               "handles in one window: lower frames.")
    prediction = prediction_of(model)
    caption = caption_of(positive)
    if getattr(model, "is_dynamic", lambda: False)():
        # Newer ComfyUIs' dynamic VRAM streams weights through shared buffers, where autograd cannot keep them
        # for the backward pass; a plain patcher of the same model is their own way out (as for weight hooks).
        model = model.get_non_dynamic_delegate()
    # The betas the motion module was trained with, keeping the model's prediction type and zero terminal SNR.
    patched = apply_motion_model(model, motion, 1.0, trained_schedule(motion.spec))  # refuses another family
    pooled_text = pooled_text_of(model, positive, clips[0])
    check_inputs_fit(model, clips[0], caption, pooled_text)
    # As ComfyUI's sampler does: the motion module's own patcher is an additional model, loaded only when asked
    # for. Otherwise whichever clone of it was loaded last (with an earlier MotionLoRA merged in) stays loaded.
    comfy.model_management.load_models_gpu([patched, *patched.get_nested_additional_models()])
    device = patched.load_device
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False), torch.enable_grad():
        weights = MotionLoRAWeights(temporal_attention_layers(motion.model), rank, generator).to(device)
        clips = [c.detach().clone().to(device) for c in clips]  # plain tensors, not inference ones
        # plain tensors, not inference ones
        context = caption.detach().clone()
        pooled_text = None if pooled_text is None else pooled_text.detach().clone()
        with frozen(patched.model.diffusion_model, motion.model), weights.attached():
            losses = train(unet_of(patched, context, pooled_text), clips, weights, steps, learning_rate, seed,
                           on_step, alphas_of(patched), prediction)
    return weights, losses
