"""AnimateLCM-I2V's reference image: its features are computed per UNet call (for the frames of that call)
and handed to the motion layers, which add them before each down block's last motion module."""
import comfy.utils
import torch

from ..motion_module.image_encoder import ImageEncoder
from .calls import call_options, compute_dtype, frames_in_call, with_call_options
from .motion import KEY
from .pictures import WRAPPERS, PictureCache, one_picture, picture_part, with_wrappers

I2V_KEY = "animatediff_i2v"
NODE = "AnimateDiff_AnimateLCMI2VImage"


class ReferenceImage(PictureCache):
    def __init__(self, motion_model, encoder: ImageEncoder, latent: torch.Tensor, motion_strength: float):
        super().__init__(motion_model, NODE)
        modules_per_block = motion_model.spec.modules_per_down_block
        self.encoder = encoder
        self.latent = latent  # (1, 4, h, w), scaled as the UNet takes latents
        self.motion_strength = motion_strength
        self.targets = [f"down_blocks.{i}.motion_modules.{modules_per_block - 1}" for i in range(len(encoder.channels))]

    def features(self, frames: int, height: int, width: int, device, dtype) -> dict[str, torch.Tensor]:
        """Per target motion module, the (frames, C, h, w) features; made once per call shape (every window of a
        video has the same)."""
        key = (frames, height, width, device, dtype)
        if key not in self.cache:
            latent = self.latent
            if latent.shape[-2:] != (height, width):  # centre crop, as the original prepares its image
                latent = comfy.utils.common_upscale(latent, width, height, "bilinear", "center")
            features = self.encoder(latent.to(device, dtype), frames, self.motion_strength)
            self.cache = {key: dict(zip(self.targets, features))}
        return self.cache[key]

    def add_to_call(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: the call's transformer_options carry the features to the motion layers."""
        self.check_whole_latent(x, f"{NODE}'s picture")
        options = call_options(args, kwargs)
        frames = frames_in_call(x, options)
        videos = x.shape[0] // frames
        per_frame = self.features(frames, *x.shape[-2:], x.device, compute_dtype(executor.class_obj))
        ours = {**options.get(KEY, {}), "image_features": {k: f.repeat(videos, 1, 1, 1) for k, f in per_frame.items()}}
        args, kwargs = with_call_options(args, kwargs, {**options, KEY: ours})
        return executor(x, *args, **kwargs)


def with_reference_image(model, latent: torch.Tensor, motion_strength: float):
    """A clone of an animating model whose AnimateLCM-I2V motion module starts from `latent` (a LATENT's
    samples, one image)."""
    motion, encoder = picture_part(model, "img_encoder", NODE,
                                   "an AnimateLCM-I2V motion module (AnimateLCM_sd15_i2v)")
    picture = one_picture(latent, NODE, model)
    reference = ReferenceImage(motion, encoder, picture, float(motion_strength))
    # a second image node replaces the first
    return with_wrappers(model, I2V_KEY, {WRAPPERS.APPLY_MODEL: reference.add_to_call,
                                          WRAPPERS.OUTER_SAMPLE: reference.check_at_sampling})
