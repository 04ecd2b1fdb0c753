"""What a UNet call holds (its transformer_options, its frames per video, which frames of the video they are),
and the tensors made for calls, kept while one sampling runs."""
import torch


def call_options(args: tuple, kwargs: dict) -> dict:
    """The transformer_options of a DIFFUSION_MODEL wrapper's call: the 5th argument after x
    (UNetModel._forward(x, timesteps, context, y, control, transformer_options))."""
    return args[4] if len(args) > 4 else kwargs.get("transformer_options", {})


def frames_in_call(x: torch.Tensor, transformer_options: dict) -> int:
    """Cond and uncond chunks share the batch ((b f) order): each chunk is one video."""
    return x.shape[0] // max(1, len(transformer_options.get("cond_or_uncond") or [0]))


def call_frames(transformer_options: dict, count: int) -> tuple[list[int], int | None]:
    """The video frames a call of `count` frames per video holds, and the video's length: from ad_params (this
    pack's context windows set them), from ComfyUI's core context_window (which does not tell the length: None),
    or all of them."""
    ours, core = transformer_options.get("ad_params"), transformer_options.get("context_window")
    if ours:
        return list(ours["sub_idxs"]), ours["full_length"]
    if core is not None:
        return list(core.index_list), None
    return list(range(count)), count


class SamplingCache:
    """Tensors made on the device for calls (per shape and window), kept while one sampling runs: its
    forget_after_sampling is an OUTER_SAMPLE wrapper, so none outlives it, also after an error."""
    def __init__(self):
        self.cache = {}

    def forget_after_sampling(self, executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            self.cache = {}
