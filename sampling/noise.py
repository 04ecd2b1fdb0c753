"""Initial noise for the frames of an animation, shaped from ComfyUI's independent per-frame noise.

Long animations sample in context windows; how noise relates across windows decides how alike they look.
Every type keeps each frame's noise a draw of ComfyUI's own noise for the seed (standard normal), so
samplers and schedules behave as usual.
"""
import torch


class NoiseType:
    DEFAULT = "default"                    # independent per frame: exactly the core samplers' noise for the seed
    FREE_NOISE = "free_noise"              # FreeNoise: later frames reuse the first window's noise, locally shuffled
    REPEATED_CONTEXT = "repeated_context"  # the first context_length frames' noise, repeated
    CONSTANT = "constant"                  # the first frame's noise for every frame
    ALL = [DEFAULT, FREE_NOISE, REPEATED_CONTEXT, CONSTANT]


def shape_noise(noise_type: str, noise: torch.Tensor, context_length: int = 16, context_overlap: int = 4,
                seed: int = 0) -> torch.Tensor:
    """`noise` is (frames, c, h, w) from comfy.sample.prepare_noise; returns the noise to sample from.

    context_length / context_overlap are the model's context-window settings (ComfyUI's defaults when it
    has none); `seed` makes free_noise's shuffles repeatable.
    """
    frames = noise.shape[0]
    if noise_type == NoiseType.DEFAULT:
        return noise
    if noise_type == NoiseType.CONSTANT:
        return noise[:1].repeat(frames, *([1] * (noise.ndim - 1)))
    if noise_type == NoiseType.REPEATED_CONTEXT:
        return noise[torch.arange(frames) % max(1, context_length)]
    if noise_type == NoiseType.FREE_NOISE:
        return free_noise(noise, context_length, context_overlap, seed)
    raise ValueError(f"noise_type must be one of {NoiseType.ALL}, not {noise_type!r}")


def free_noise(noise: torch.Tensor, length: int, overlap: int, seed: int) -> torch.Tensor:
    """FreeNoise's noise rescheduling (Qiu et al. 2023): frames past the first window take, chunk by chunk
    (a chunk is one window hop, length - overlap frames), the noise of the frames one window earlier in a
    shuffled order. Every frame's noise is thus one of the first window's, and each window sees a local
    permutation of it: the windows start from the same noise and stay alike far apart in time."""
    frames = noise.shape[0]
    hop = max(1, length - overlap)
    generator = torch.Generator().manual_seed(seed)
    order = torch.arange(frames)
    for start in range(length, frames, hop):
        chunk = min(hop, frames - start)
        source = order[start - length: start - length + chunk]
        order[start: start + chunk] = source[torch.randperm(chunk, generator=generator)]
    return noise[order]
