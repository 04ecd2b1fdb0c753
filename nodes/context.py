"""AnimateDiff_ContextWindows: long animations in windows the motion module can see at once."""
from ..patching.context import apply_context_windows
from ..sampling.context import ContextSchedule, FuseMethod


class ContextWindows:
    DESCRIPTION = ("Returns a copy of the model that samples long animations in overlapping windows of frames, "
                   "with per-frame prompts and ControlNet hints sliced to each window; memory then depends on "
                   "context_length, not on the frame count. Works with KSampler, SamplerCustomAdvanced and "
                   "AnimateDiff_Sampler. With no more frames than context_length nothing changes.")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, sampling in context windows.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An animating model (from AnimateDiff_ApplyMotionModule, before or "
                                               "after it)."}),
                "context_length": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip":
                    "Frames per window: at most what the motion module was trained for (16 is typical; v1 and "
                    "HotshotXL support up to 24, v2/v3, PIA and AnimateDiff SDXL up to 32, AnimateLCM up to 64)."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 1023, "tooltip":
                    "Frames shared by neighbouring windows (smaller than context_length); more overlap gives "
                    "smoother transitions and costs more windows."}),
                "schedule": (ContextSchedule.ALL, {"default": ContextSchedule.UNIFORM_STANDARD, "tooltip":
                    "uniform_standard: windows shift every step so seams move; uniform_looped: windows may wrap "
                    "from the last frame to the first (seamless loops); static: the same windows every step; "
                    "batched: no overlap (fastest, visible seams)."}),
                "fuse_method": (FuseMethod.ALL, {"default": FuseMethod.PYRAMID, "tooltip":
                    "How frames in several windows are mixed: pyramid favours a window's middle frames, flat "
                    "averages, overlap_linear crossfades across the overlap."}),
            },
            "optional": {
                "context_stride": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip":
                    "1: windows of consecutive frames only. n > 1 adds windows of every 2nd, 4th, … "
                    "2^(n-1)th frame for long-range coherence (each level costs as much as the first)."}),
                "closed_loop": ("BOOLEAN", {"default": False, "tooltip":
                    "uniform_looped only: also overlap the last frames with the first, for a seamless loop."}),
            },
        }

    def apply(self, model, context_length, context_overlap, schedule, fuse_method, context_stride=1,
              closed_loop=False):
        return (apply_context_windows(model, context_length, context_overlap, schedule, fuse_method,
                                      context_stride, closed_loop),)
