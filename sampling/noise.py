"""Initial noise for the frames of an animation, shaped from ComfyUI's independent per-frame noise."""
import torch


class NoiseType:
    DEFAULT = "default"    # independent per frame: exactly the core samplers' noise for the seed
    ALL = [DEFAULT]


def shape_noise(noise_type: str, noise: torch.Tensor) -> torch.Tensor:
    """`noise` is (frames, c, h, w) from comfy.sample.prepare_noise; returns the noise to sample from."""
    if noise_type == NoiseType.DEFAULT:
        return noise
    raise ValueError(f"noise_type must be one of {NoiseType.ALL}, not {noise_type!r}")
