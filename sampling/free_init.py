"""FreeInit (Wu et al. 2023): sample, diffuse the result back to where the schedule starts (the last timestep),
keep its low spatio-temporal frequencies, take the high ones from fresh noise, and sample again from that mix.

Noise drawn for inference has low frequencies that the noised training videos never had; the re-noised result
carries the ones the model expects, which makes frames more consistent over time. Tensors here are the latent
batch, (frames, channels, height, width), as ComfyUI samples an animation.
"""
import math

import torch

FFT_DIMS = (0, 2, 3)  # frames, height, width; channels are separate signals


class LowPassFilter:
    BUTTERWORTH = "butterworth"  # FreeInit's default (order 4): a flat pass band and a soft edge
    GAUSSIAN = "gaussian"
    ALL = [BUTTERWORTH, GAUSSIAN]


def low_pass_filter(frames: int, height: int, width: int, kind: str = LowPassFilter.BUTTERWORTH,
                    spatial_cutoff: float = 0.25, temporal_cutoff: float = 0.25, order: int = 4) -> torch.Tensor:
    """(frames, height, width) weights of the centred (fftshift-ed) spectrum, 1 at zero frequency.

    The cutoffs are normalised frequencies (1 is Nyquist); the temporal axis is stretched by
    spatial_cutoff / temporal_cutoff, so one distance measures all three axes."""
    if spatial_cutoff <= 0 or temporal_cutoff <= 0:
        raise ValueError("the cutoffs must be positive")
    t = (2 * torch.arange(frames, dtype=torch.float64) / frames - 1) * (spatial_cutoff / temporal_cutoff)
    h = 2 * torch.arange(height, dtype=torch.float64) / height - 1
    w = 2 * torch.arange(width, dtype=torch.float64) / width - 1
    distance_squared = t[:, None, None] ** 2 + h[None, :, None] ** 2 + w[None, None, :] ** 2
    if kind == LowPassFilter.BUTTERWORTH:
        return (1 / (1 + (distance_squared / spatial_cutoff ** 2) ** order)).float()
    if kind == LowPassFilter.GAUSSIAN:
        return torch.exp(-distance_squared / (2 * spatial_cutoff ** 2)).float()
    raise ValueError(f"filter must be one of {LowPassFilter.ALL}, not {kind!r}")


def mix_frequencies(low_from: torch.Tensor, high_from: torch.Tensor, low_pass: torch.Tensor) -> torch.Tensor:
    """The low frequencies (over frames × height × width) of one tensor with the high ones of the other."""
    def spectrum(x):
        return torch.fft.fftshift(torch.fft.fftn(x.float(), dim=FFT_DIMS), dim=FFT_DIMS)
    weights = low_pass[:, None]  # the same filter for every channel
    mixed = spectrum(low_from) * weights + spectrum(high_from) * (1 - weights)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=FFT_DIMS), dim=FFT_DIMS).real


def coarse_to_fine(sigmas: torch.Tensor, round_index: int, rounds: int) -> torch.Tensor:
    """FreeInit's faster variant: round k of n (from 0) takes int(steps · (k + 1) / n) steps, here as many of
    the schedule's own sigmas, evenly spread, its first and last kept; the last round takes them all."""
    steps = len(sigmas) - 1
    count = max(1, steps * (round_index + 1) // rounds)  # in integers: the last round gets every step, exactly
    return sigmas[torch.linspace(0, steps, count + 1).round().long()]


def diffuse_to_start(clean: torch.Tensor, noise: torch.Tensor, sigma: float, from_max: bool) -> torch.Tensor:
    """`clean` noised back to the schedule's first sigma with the first round's noise, clean + σ·ε, in the units
    of the unit noise a sampler starts from: ComfyUI scales it by sqrt(1 + σ²) when the schedule starts at the
    model's largest sigma (then this is DDPM's forward process to the last timestep, sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε
    with ᾱ = 1 / (1 + σ²)), and by σ when it starts below (ddim_uniform, for one)."""
    scale = math.sqrt(1 + sigma ** 2) if from_max else sigma
    return (clean + sigma * noise) / scale
