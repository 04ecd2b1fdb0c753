"""What a UNet call holds (its transformer_options, its frames per video, which frames of the video they are),
and the tensors made for calls, kept while one sampling runs."""
import torch

from ..errors import AnimateDiffError


def call_options(args: tuple, kwargs: dict) -> dict:
    """The transformer_options of an APPLY_MODEL or DIFFUSION_MODEL wrapper's call: the 5th argument after x in
    both (BaseModel._apply_model(x, t, c_concat, c_crossattn, control, transformer_options) and
    UNetModel._forward(x, timesteps, context, y, control, transformer_options))."""
    return args[4] if len(args) > 4 else kwargs.get("transformer_options", {})


def with_call_options(args: tuple, kwargs: dict, options: dict) -> tuple[tuple, dict]:
    """The same call's arguments with other transformer_options."""
    if len(args) > 4:
        return (*args[:4], options, *args[5:]), kwargs
    return args, {**kwargs, "transformer_options": options}


def compute_dtype(model) -> torch.dtype:
    """The dtype a BaseModel computes in (an APPLY_MODEL wrapper's executor.class_obj), as its _apply_model casts
    to it: fp8-stored weights run with manual casting."""
    return model.manual_cast_dtype or model.get_dtype()


def level_sizes(height: int, width: int, levels: int = 4) -> list[tuple[int, int]]:
    """The UNet's size at each level of an h × w latent (SD1.5 has 4 levels, SDXL 3): its strided convolutions
    halve, rounding up."""
    sizes = [(height, width)]
    for _ in range(1, levels):
        sizes.append(tuple(-(-side // 2) for side in sizes[-1]))
    return sizes


def frames_in_call(x: torch.Tensor, transformer_options: dict) -> int:
    """Cond and uncond chunks share the batch ((b f) order): each chunk is one video."""
    return x.shape[0] // max(1, len(transformer_options.get("cond_or_uncond") or [0]))


def call_frames(transformer_options: dict, count: int) -> tuple[list[int], int | None]:
    """The video frames a call of `count` frames per video holds, and the video's length: from ad_params (this
    pack's context windows set them), from ComfyUI's core context_window (whose length only newer ComfyUIs tell;
    else None), or all of them."""
    ours, core = transformer_options.get("ad_params"), transformer_options.get("context_window")
    if ours:
        return list(ours["sub_idxs"]), ours["full_length"]
    if core is not None:
        frames = list(core.index_list)
        # Newer ComfyUIs (causal_window_fix, on by default) put the frame before a later window in front of it.
        anchor = getattr(core, "causal_anchor_index", None)
        if anchor is not None and anchor >= 0 and count == len(frames) + 1:
            frames = [anchor, *frames]
        return frames, getattr(core, "total_frames", None) or None
    return list(range(count)), count


class SamplingCache:
    """Tensors made on the device for calls (per shape and window), kept while one sampling runs: its
    forget_after_sampling is an OUTER_SAMPLE wrapper, so none outlives it, also after an error. It also notes
    the latent's size, so that a call on part of it (an area prompt) is told apart.

    The tensors are made in APPLY_MODEL wrappers, which run outside a torch.compile'd UNet (the core
    TorchCompileModel node compiles diffusion_model): made inside, from a window's frame numbers, they would
    make it compile again for every window."""
    def __init__(self):
        self.cache = {}
        self.latent_size = None

    def forget_after_sampling(self, executor, noise, *args, **kwargs):
        self.latent_size = tuple(noise.shape[-2:])
        try:
            return executor(noise, *args, **kwargs)
        finally:
            self.cache, self.latent_size = {}, None

    def check_whole_latent(self, x: torch.Tensor, what: str):
        """ComfyUI hands the model only an area prompt's part of the latent, without saying where it lies."""
        if self.latent_size is not None and tuple(x.shape[-2:]) != self.latent_size:
            (h, w), (height, width) = x.shape[-2:], self.latent_size
            raise AnimateDiffError(f"{what} cannot be placed in an area prompt (ConditioningSetArea): ComfyUI gives "
                                   f"the model only the area's {w}×{h} of the {width}×{height} latent, not where it "
                                   "lies. For regional prompts use a masked prompt (ConditioningSetMask) with "
                                   "set_cond_area on default: its mask bounds, too, crop the latent.")
