"""AnimateDiff_PromptSchedule: a different prompt per frame (prompt travel)."""
import torch

from ..patching.prompts import SCHEDULE_FRAMES
from ..sampling.prompt_schedule import Interpolation, keyframe_weights, parse_keyframes


def _same_length(conds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Prompts over 75 tokens encode to more 77-token chunks; repeat a shorter prompt's chunks to match."""
    longest = max(c.shape[1] for c in conds)
    return [c.repeat(1, -(-longest // c.shape[1]), 1)[:, :longest] for c in conds]


class PromptSchedule:
    DESCRIPTION = ("Encodes a prompt per frame from `frame: prompt` keyframes, blending between them: one "
                   "conditioning per frame, for a latent batch of the same number of frames. With context "
                   "windows each window gets its own frames' prompts.")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("One conditioning per frame (a batch of `frames`), for the sampler's positive input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder of the checkpoint."}),
                "text": ("STRING", {"multiline": True, "default": "0: a calm sea at dawn\n32: a storm at sea, lightning",
                                    "tooltip": "One `frame: prompt` per line; frames count from 0. Before the first "
                                               "keyframe and after the last, that keyframe's prompt holds."}),
                "frames": ("INT", {"default": 64, "min": 1, "max": 10000, "tooltip":
                    "Number of frames: the latent batch size."}),
            },
            "optional": {
                "interpolation": (Interpolation.ALL, {"default": Interpolation.LINEAR, "tooltip":
                    "linear: frames between keyframes blend the two prompts; none: each prompt holds until the "
                    "next keyframe."}),
            },
        }

    def encode(self, clip, text, frames, interpolation=Interpolation.LINEAR):
        keyframes = parse_keyframes(text)
        weights = keyframe_weights([f for f, _ in keyframes], frames, interpolation)
        encoded = [clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True) for _, prompt in keyframes]
        # blended in float64 on the CPU (Apple's MPS and DirectML have no float64), returned where CLIP left them
        conds = torch.cat(_same_length([c for c, _ in encoded])).to("cpu", torch.float64)  # (keyframes, tokens, 768)
        pooled = torch.cat([p for _, p in encoded]).to("cpu", torch.float64)               # (keyframes, 768)
        device, dtype = encoded[0][0].device, encoded[0][0].dtype
        per_frame = torch.einsum("fk,ktc->ftc", weights, conds).to(device, dtype)
        return ([[per_frame, {"pooled_output": (weights @ pooled).to(device, dtype), SCHEDULE_FRAMES: frames}]],)
