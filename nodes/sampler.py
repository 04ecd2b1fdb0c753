"""AnimateDiff_Sampler: the core KSampler's inputs, plus the choice of how frames get their noise."""
import comfy.sample
import comfy.utils
import latent_preview
import nodes as comfy_nodes

from ..errors import AnimateDiffError
from ..patching.context import context_settings
from ..sampling.noise import NoiseType, shape_noise
from .numbers import finite


class Sampler:
    DESCRIPTION = ("Samples an animation: the core KSampler with a choice of noise across frames. Connect a model "
                   "from AnimateDiff_ApplyMotionModule and a latent batch whose size is the frame count.")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised frames.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        inputs = comfy_nodes.KSampler.INPUT_TYPES()
        inputs["optional"] = {"noise_type": (NoiseType.ALL, {"default": NoiseType.DEFAULT, "tooltip":
            "default: independent noise per frame, exactly the core KSampler's for the same seed. For long "
            "animations in context windows: free_noise reuses the first window's noise, locally shuffled, "
            "so windows stay alike (FreeNoise); repeated_context repeats the first context_length frames' "
            "noise; constant gives every frame the first frame's noise."})}
        return inputs

    @finite("cfg", "denoise")
    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
               denoise=1.0, noise_type=NoiseType.DEFAULT):
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        if latent.ndim != 4:  # e.g. a video model's (batch, channels, frames, height, width)
            raise AnimateDiffError(f"latent_image has shape {tuple(latent.shape)}; an SD1.5 animation's latent is a "
                                   "batch of frames (frames, 4, height, width), as Empty Latent Image makes with "
                                   "batch_size = frames.")
        channels = model.get_model_object("latent_format").latent_channels
        if latent.shape[1] != channels:
            raise AnimateDiffError(f"latent_image has {latent.shape[1]} channels, where this model's latents have "
                                   f"{channels}: encode with the checkpoint's own VAE (another family's VAE, e.g. "
                                   "SD3's or Flux's, makes 16), or start from Empty Latent Image.")
        if latent.shape[0] == 0:
            raise AnimateDiffError("latent_image holds no frames: give Empty Latent Image a batch_size of at least 1.")
        # the windows the model samples in; without AnimateDiff_ContextWindows, that node's defaults
        windows = context_settings(model.model_options) or {"context_length": 16, "context_overlap": 4}
        noise = shape_noise(noise_type, comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index")),
                            windows["context_length"], windows["context_overlap"], seed)
        samples = comfy.sample.sample(
            model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=denoise,
            noise_mask=latent_image.get("noise_mask"), callback=latent_preview.prepare_callback(model, steps),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return ({**latent_image, "samples": samples},)
