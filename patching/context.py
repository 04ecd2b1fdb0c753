"""Context-window sampling on a cloned ModelPatcher, on ComfyUI's extension points only.

- a CALC_COND_BATCH wrapper runs ComfyUI's own cond batching once per window: the latent, the timestep,
  every per-frame cond (prompt travel, masks) and the hints of core ControlNets / T2I-Adapters sliced to the
  window's frames; the window outputs are fused back with weights that sum to one for every frame;
- a PREPARE_SAMPLING wrapper makes ComfyUI's memory estimate count one window, not the whole video.

The settings are plain data in model_options[OPTIONS]. Nothing outside the wrapper's own call is changed:
the hints swapped into a ControlNet for one window are put back before the next.
"""
import contextlib

import comfy.model_management
import comfy.patcher_extension
import torch
from comfy.controlnet import ControlNet, T2IAdapter

from ..errors import AnimateDiffError
from ..motion_module import MotionModel
from ..sampling.context import check_settings, window_weights, windows

OPTIONS = "animatediff_context"  # model_options key of the settings dict
KEY = "animatediff_context"      # wrapper key
CORE_HANDLER = "context_handler"  # model_options key of ComfyUI's own context windows (Context Windows (Manual))
SETTING_NAMES = ("context_length", "context_overlap", "schedule", "fuse_method", "context_stride", "closed_loop")


def context_settings(model_options: dict) -> dict | None:
    """The context-window settings a model samples with, or None (read by AnimateDiff_Sampler's noise)."""
    return model_options.get(OPTIONS)


def apply_context_windows(model, context_length: int, context_overlap: int, schedule: str, fuse_method: str,
                          context_stride: int = 1, closed_loop: bool = False):
    """A clone of `model` that samples in context windows when the latent holds more frames than a window."""
    check_settings(context_length, context_overlap, context_stride, schedule, fuse_method)
    check_motion_fits(model, context_length)
    refuse_core_windows(model.model_options)
    patched = model.clone()
    patched.model_options[OPTIONS] = dict(zip(SETTING_NAMES, (int(context_length), int(context_overlap), schedule,
                                                              fuse_method, int(context_stride), bool(closed_loop))))
    # a second ContextWindows node replaces the first one's settings and wrappers instead of nesting them
    for kind, wrapper in ((comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, sample_in_windows),
                          (comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, estimate_one_window)):
        patched.remove_wrappers_with_key(kind, KEY)
        patched.add_wrapper_with_key(kind, KEY, wrapper)
    return patched


def motion_table_length(model) -> int | None:
    """Frames the motion module(s) attached to this ModelPatcher can see at once (their positional table)."""
    lengths = [m.model.spec.max_frames for m in model.get_nested_additional_models()
               if isinstance(getattr(m, "model", None), MotionModel)]
    return min(lengths) if lengths else None


def check_motion_fits(model, context_length: int, frames: int | None = None):
    limit = motion_table_length(model)
    window = context_length if frames is None else min(frames, context_length)
    if limit is not None and window > limit:
        raise AnimateDiffError(f"context_length={context_length} is more than the {limit} frames this motion "
                               f"module can see at once (its positional table): set context_length to {limit} "
                               f"or less on AnimateDiff_ContextWindows.")


def refuse_core_windows(model_options: dict):
    """ComfyUI's core context windows split the frames before our wrapper sees them, so the two would nest."""
    if model_options.get(CORE_HANDLER) is not None:
        raise AnimateDiffError(
            "This model has two kinds of context windows: AnimateDiff_ContextWindows and ComfyUI's core Context "
            "Windows (Manual) node. Remove one; for motion modules keep AnimateDiff_ContextWindows (it slices "
            "per-frame prompts and ControlNet hints to each window).")


def refuse_call_to_call_state(model_options: dict, frames: int, length: int):
    """Core nodes that carry something from one UNet call to the next take each window's call for the whole
    video's, and would hand one window's frames another's."""
    post_cfg = model_options.get("sampler_post_cfg_function", [])
    if any(getattr(f, "__module__", None) == "comfy_extras.nodes_sag" for f in post_cfg):
        raise AnimateDiffError(
            f"Self-Attention Guidance (SAG) cannot sample in context windows: it blurs all {frames} frames by the "
            f"attention map of the UNet's last call, which holds only the last window's {length}. Remove the "
            "SelfAttentionGuidance node, or make at most context_length frames.")
    easycache = comfy.patcher_extension.get_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                              "easycache", model_options, is_model_options=True)
    if easycache:
        raise AnimateDiffError(
            "EasyCache cannot sample in context windows: it keeps one cached change per prompt and would hand one "
            "window's to the next window's frames. Use LazyCache (it caches the whole video's prediction), or "
            "remove EasyCache.")


def estimate_one_window(executor, model, noise_shape, conds, *args, **kwargs):
    """PREPARE_SAMPLING wrapper: the UNet never sees more than one window's frames, so ComfyUI should plan
    (and free) memory for that many, not for the whole video."""
    model_options = kwargs.get("model_options") or model.model_options
    settings = context_settings(model_options)
    if settings is not None:
        refuse_core_windows(model_options)
        check_motion_fits(model, settings["context_length"], noise_shape[0])
        if noise_shape[0] > settings["context_length"]:
            refuse_call_to_call_state(model_options, noise_shape[0], settings["context_length"])
        noise_shape = [min(noise_shape[0], settings["context_length"]), *noise_shape[1:]]
    return executor(model, noise_shape, conds, *args, **kwargs)


def sample_in_windows(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
    """CALC_COND_BATCH wrapper: `x_in` holds every frame of the video (frames are the batch)."""
    settings = context_settings(model_options)
    frames = x_in.shape[0]
    if settings is None or frames <= settings["context_length"]:
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    length, overlap = settings["context_length"], settings["context_overlap"]
    window_list = windows(settings["schedule"], frames, length, overlap, settings["context_stride"],
                          settings["closed_loop"], current_step(timestep, model_options))
    weights = window_weights(window_list, frames, settings["fuse_method"], overlap)
    controls = per_frame_controls(conds)
    fused = None
    for window, weight in zip(window_list, weights):
        comfy.model_management.throw_exception_if_processing_interrupted()
        index = torch.tensor(window, device=x_in.device)
        window_conds = [slice_conds(c, window, frames) for c in conds]
        with window_hints(controls, window):
            outputs = executor(model, window_conds, x_in[index], slice_per_frame(timestep, index, frames),
                               with_ad_params(model_options, frames, length, window), *args, **kwargs)
        if fused is None:
            fused = [torch.zeros_like(x_in) for _ in outputs]
        weight = weight.to(device=x_in.device, dtype=x_in.dtype).view(-1, *[1] * (x_in.ndim - 1))
        for full, part in zip(fused, outputs):
            full.index_add_(0, index, part * weight)
    return fused


def current_step(timestep, model_options) -> int:
    """Index of the sampling step this call belongs to: the last schedule sigma at or above the current one
    (samplers with sub-steps, e.g. heun, thus stay in their step)."""
    sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
    if sigmas is None or timestep.numel() == 0:
        return 0
    sigma = float(timestep.flatten().max())
    return max(0, int((sigmas >= sigma * (1 - 1e-4)).sum()) - 1)


def with_ad_params(model_options: dict, frames: int, length: int, window: list[int]) -> dict:
    """model_options for one window, with the `ad_params` other packs read to slice their own inputs."""
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["ad_params"] = {"full_length": frames, "context_length": length, "sub_idxs": list(window)}
    return {**model_options, "transformer_options": transformer_options}


def slice_per_frame(tensor, index: torch.Tensor, frames: int):
    """Rows `index` of a tensor that holds one row per frame; anything else (one row for all) unchanged."""
    if isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == frames:
        return tensor[index.to(tensor.device)]
    return tensor


def _cyclic(tensor: torch.Tensor, window: list[int]) -> torch.Tensor:
    """Rows for the window's frames of a batch that ComfyUI spreads over frames cyclically (frame i gets
    row i mod batch: comfy.utils.repeat_to_batch_size for conds, broadcast_image_to for hints)."""
    return tensor[torch.tensor([i % tensor.shape[0] for i in window], device=tensor.device)]


def slice_conds(cond_list, window: list[int], frames: int):
    """One of calc_cond_batch's cond lists (positive, negative, …) cut down to the window's frames."""
    if cond_list is None:
        return None
    sliced = []
    for cond in cond_list:
        cond = cond.copy()
        model_conds = {}
        for name, value in cond.get("model_conds", {}).items():
            data = getattr(value, "cond", None)
            if isinstance(data, torch.Tensor) and data.ndim > 0 and data.shape[0] > 1:
                value = value._copy_with(_cyclic(data, window))
            model_conds[name] = value
        cond["model_conds"] = model_conds
        mask = cond.get("mask")
        if isinstance(mask, torch.Tensor) and mask.ndim > 0 and mask.shape[0] > 1:
            # over the whole video ComfyUI gives frame i mask i of a longer batch and tiles a shorter one
            # (get_area_and_mult): mask i mod count, for any count
            cond["mask"] = _cyclic(mask, window)
        sliced.append(cond)
    return sliced


def per_frame_controls(conds) -> list:
    """The core ControlNets / T2I-Adapters in the conds (chains followed) whose hints are a batch of images.

    Controls of other packs override get_control and slice their own hints from ad_params: left alone."""
    found = {}
    for cond_list in conds:
        for cond in cond_list or []:
            control = cond.get("control")
            while control is not None:
                hints = getattr(control, "cond_hint_original", None)
                if (type(control).get_control in (ControlNet.get_control, T2IAdapter.get_control)
                        and isinstance(hints, torch.Tensor) and hints.shape[0] > 1):
                    found[id(control)] = control
                control = getattr(control, "previous_controlnet", None)
    return list(found.values())


# What a control prepares from its hints and reuses while they stay the same size: ControlNet's resized hints,
# a T2I-Adapter's features; single slots in ComfyUI 0.3.75, maps keyed by size in later versions.
HINT_CACHES = ("cond_hint", "control_input", "cond_hints", "control_inputs")


def empty_hint_caches(control):
    """Makes a control prepare its hints afresh on its next call."""
    for name in HINT_CACHES:
        if hasattr(control, name):
            setattr(control, name, {} if isinstance(getattr(control, name), dict) else None)


@contextlib.contextmanager
def window_hints(controls: list, window: list[int]):
    """Gives each control the hints of the window's frames, with empty caches (every window has the same size,
    so a cache would hand it another window's hints), then puts back exactly what it had."""
    saved = [(c, c.cond_hint_original, {name: getattr(c, name) for name in HINT_CACHES if hasattr(c, name)})
             for c in controls]
    try:
        for control, hints, _ in saved:
            control.cond_hint_original = _cyclic(hints, window)
            empty_hint_caches(control)
        yield
    finally:
        for control, hints, caches in saved:
            control.cond_hint_original = hints
            for name, cache in caches.items():
                setattr(control, name, cache)
