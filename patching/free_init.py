"""FreeInit on a cloned ModelPatcher: an OUTER_SAMPLE wrapper runs ComfyUI's whole sampling once per round,
so it works under every sampler node (KSampler, SamplerCustomAdvanced, AnimateDiff_Sampler)."""
import math
from dataclasses import dataclass

import comfy.patcher_extension
import torch

from ..errors import AnimateDiffError
from ..sampling.free_init import coarse_to_fine, diffuse_to_start, low_pass_filter, mix_frequencies

KEY = "animatediff_free_init"


@dataclass(frozen=True)
class FreeInit:
    iterations: int
    kind: str
    spatial_cutoff: float
    temporal_cutoff: float
    fast_sampling: bool = False

    def sample(self, executor, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
               disable_pbar=False, seed=None, **kwargs):
        if denoise_mask is not None or torch.count_nonzero(latent_image) > 0:
            raise AnimateDiffError("AnimateDiff_FreeInit samples from pure noise, every round: give it an empty "
                                   "latent (EmptyLatentImage) and no noise mask, or take it out of the model path "
                                   "for video to video.")
        if float(sigmas[-1]) > 0:  # the next round re-noises the result as if it were clean
            raise AnimateDiffError(f"AnimateDiff_FreeInit needs every round to end with a clean video (a schedule "
                                   f"ending at sigma 0), but this sampler stops at sigma {float(sigmas[-1]):.3g} with "
                                   "noise left in (KSamplerAdvanced's return_with_leftover_noise, or the first half "
                                   "of SplitSigmas). Use FreeInit with a sampler that runs the whole schedule, or "
                                   "take it out of this model path.")
        guider = executor.class_obj
        sigma_max = float(guider.model_patcher.get_model_object("model_sampling").sigma_max)
        start = float(sigmas[0])
        from_max = math.isclose(start, sigma_max, rel_tol=1e-5) or start > sigma_max  # as ComfyUI's samplers tell
        # each round processes the conds anew, as ComfyUI's sample() prepares them for its one round
        prepared = {k: [c.copy() for c in v] for k, v in guider.conds.items()}
        low_pass = low_pass_filter(noise.shape[0], *noise.shape[-2:], self.kind, self.spatial_cutoff,
                                   self.temporal_cutoff)
        # the seed's first draw is ComfyUI's initial noise; the fresh noise continues the stream, independent of it
        fresh_noise = torch.Generator().manual_seed(0 if seed is None else seed)
        torch.randn(noise.shape, generator=fresh_noise)
        first_noise = noise.cpu().float()  # what every round's re-noising adds back
        current = noise
        schedules = [coarse_to_fine(sigmas, i, self.iterations) if self.fast_sampling else sigmas
                     for i in range(self.iterations)]
        total, done = sum(len(s) - 1 for s in schedules), 0
        for round_index, steps in enumerate(schedules):
            if round_index:
                guider.conds = {k: [c.copy() for c in v] for k, v in prepared.items()}
                clean = guider.model_patcher.model.process_latent_in(output).to("cpu", torch.float32)
                fresh = torch.randn(noise.shape, generator=fresh_noise, dtype=torch.float32)
                renoised = diffuse_to_start(clean, first_noise, start, from_max)
                current = mix_frequencies(renoised, fresh, low_pass).to(noise.dtype)
            output = executor(current, latent_image, sampler, steps, denoise_mask, progress(callback, done, total),
                              disable_pbar, seed, **kwargs)
            done += len(steps) - 1
        return output


def progress(callback, done: int, total: int):
    """A round's sampler callback (step, x0, x, steps of the round) reporting the step among all the rounds', so
    the progress bar and a service's progress messages count up once, to the rounds' total."""
    if callback is None:
        return None
    return lambda step, x0, x, _steps: callback(done + step, x0, x, total)


def apply_free_init(model, iterations: int, kind: str, spatial_cutoff: float, temporal_cutoff: float,
                    fast_sampling: bool = False):
    low_pass_filter(2, 2, 2, kind, spatial_cutoff, temporal_cutoff)  # bad settings fail here, not mid-run
    patched = model.clone()
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    patched.remove_wrappers_with_key(outer, KEY)  # a second FreeInit node replaces the first, not nests in it
    if iterations > 1:
        run = FreeInit(iterations, kind, spatial_cutoff, temporal_cutoff, fast_sampling)
        patched.add_wrapper_with_key(outer, KEY, run.sample)
    return patched
