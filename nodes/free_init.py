"""AnimateDiff_FreeInit: more consistent frames, for the price of sampling several times."""
from ..patching.free_init import apply_free_init
from ..sampling.free_init import LowPassFilter
from .numbers import finite


class FreeInit:
    DESCRIPTION = ("FreeInit: samples the animation, re-noises the result, keeps its low frequencies (over frames "
                   "and space) with fresh high-frequency noise, and samples again. Frames hold together better over "
                   "time; each iteration costs a whole sampling run. For text to video (an empty latent).")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, sampling `iterations` times under any sampler node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An animating model (from AnimateDiff_ApplyMotionModule, or after "
                                           "AnimateDiff_ContextWindows)."}),
            "iterations": ("INT", {"default": 3, "min": 1, "max": 10, "tooltip":
                "Sampling runs; the last one's frames are the output. 1 turns FreeInit off; the paper uses 3–5."}),
            "filter": (LowPassFilter.ALL, {"default": LowPassFilter.BUTTERWORTH, "tooltip":
                "How low frequencies are kept from the re-noised result: butterworth (the paper's default, order "
                "4) or gaussian."}),
            "spatial_cutoff": ("FLOAT", {"default": 0.25, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                "Normalised spatial frequency (1 = the finest) below which the re-noised result is kept."}),
            "temporal_cutoff": ("FLOAT", {"default": 0.25, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                "The same along the frames."}),
        }, "optional": {
            "fast_sampling": ("BOOLEAN", {"default": False, "tooltip":
                "FreeInit's coarse-to-fine sampling: round k of n takes k/n of the steps and only the last all of "
                "them. At 3 iterations the whole takes 2 samplings' time instead of 3."}),
        }}

    @finite("spatial_cutoff", "temporal_cutoff")
    def apply(self, model, iterations, filter, spatial_cutoff, temporal_cutoff,  # noqa: A002 (the input's name)
              fast_sampling=False):
        return (apply_free_init(model, iterations, filter, spatial_cutoff, temporal_cutoff, fast_sampling),)
