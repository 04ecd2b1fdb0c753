"""The prompts, checked against the latent and the model when sampling starts.

- A Prompt Schedule's frame count: ComfyUI repeats or cuts a conditioning batch to fit the latent batch, which
  would restart the schedule or drop its later prompts.
- The text's width: prompts encoded by another family's CLIP (an SD1.5 workflow switched to an SDXL checkpoint)
  would fail deep in the UNet with a bare matrix-size error.
"""
from comfy.ldm.modules.attention import SpatialTransformer

from ..errors import AnimateDiffError
from ..motion_module import Family

SCHEDULE_FRAMES = "animatediff_schedule_frames"  # in a Prompt Schedule's conditioning dict
KEY = "animatediff_prompts"                      # wrapper key


def check_prompts(executor, noise, *args, **kwargs):
    """OUTER_SAMPLE wrapper: every scheduled prompt batch has one prompt per frame of the latent, and every
    prompt the width of text the model reads."""
    guider = executor.class_obj
    frames, width = noise.shape[0], text_width(guider.model_patcher.model.diffusion_model)
    for name, conds in guider.conds.items():
        scheduled = {c[SCHEDULE_FRAMES] for c in conds if c.get(SCHEDULE_FRAMES, frames) != frames}
        if scheduled:
            raise AnimateDiffError(
                f"AnimateDiff_PromptSchedule made prompts for {min(scheduled)} frames, but the latent holds {frames}: "
                f"set the schedule's frames to {frames} (the latent's batch_size), or the batch_size to "
                f"{min(scheduled)}. ComfyUI would repeat or cut the prompts to fit, restarting the schedule or "
                "dropping its later keyframes.")
        widths = {c["cross_attn"].shape[-1] for c in conds if getattr(c.get("cross_attn"), "ndim", 0) == 3}
        if width is not None and widths - {width}:
            raise AnimateDiffError(
                f"The {name} prompt is encoded {max(widths - {width})} wide, but this model reads text {width} wide "
                f"({Family.reading_text(width) or 'another family'}): encode the prompts with this checkpoint's "
                "own CLIP (the CLIP output of its Load Checkpoint).")
    return executor(noise, *args, **kwargs)


def text_width(unet) -> int | None:
    """The width of the text a UNet's cross-attention reads (SD1.5: 768, SDXL: 2048); None if it has none."""
    return next((m.transformer_blocks[0].attn2.to_k.in_features for m in unet.modules()
                 if isinstance(m, SpatialTransformer)), None)
