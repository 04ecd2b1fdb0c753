"""What the image-to-video nodes share: the part of the motion model that takes the picture, one picture,
the check that the model still animates with that motion model, and the clone that carries their wrappers."""
import comfy.patcher_extension
import torch

from ..errors import AnimateDiffError
from ..motion_module.formats import is_finite
from .calls import SamplingCache
from .motion import KEY

WRAPPERS = comfy.patcher_extension.WrappersMP


def picture_part(model, part: str, node: str, module: str):
    """The motion model's `part` (e.g. AnimateLCM-I2V's `img_encoder`) of an animating model, which must have
    one; `module` names the motion module that does, for the message."""
    motion = model.get_additional_models_with_key(KEY)
    found = getattr(motion[0].model, part, None) if motion else None
    if found is None:
        has = f"has {motion[0].model.spec.described}" if motion else "has no motion module"
        raise AnimateDiffError(f"{node} needs a model from AnimateDiff_ApplyMotionModule with {module}; this model "
                               f"{has}.")
    return motion[0].model, found


class PictureCache(SamplingCache):
    """A picture node's per-call tensors, for the motion model it took its picture part from: a later Apply
    Motion Module would put in another, which would take the picture's inputs as its own (or not at all)."""
    def __init__(self, motion_model, node: str):
        super().__init__()
        self.motion_model = motion_model
        self.node = node

    def check_at_sampling(self, executor, noise, *args, **kwargs):
        """OUTER_SAMPLE wrapper: before any model loads, the model that samples animates with that motion model."""
        motion = executor.class_obj.model_patcher.get_additional_models_with_key(KEY)
        if not motion or motion[0].model is not self.motion_model:
            raise AnimateDiffError(f"{self.node} made its picture's inputs for {self.motion_model.spec.described}, "
                                   "and an AnimateDiff_ApplyMotionModule after it put "
                                   f"{motion[0].model.spec.described if motion else 'none'} in its place. Put "
                                   f"{self.node} after the last Apply Motion Module.")
        return self.forget_after_sampling(executor, noise, *args, **kwargs)


def one_picture(latent: torch.Tensor, node: str, model) -> torch.Tensor:
    """The one image latent of a picture node, in the model's latent space (as its UNet takes it)."""
    channels = model.model.latent_format.latent_channels
    if latent.ndim != 4 or latent.shape[1] != channels:
        raise AnimateDiffError(f"{node}: image_latent has shape {tuple(latent.shape)}, where the model's latents "
                               f"are (1, {channels}, height, width). Encode the picture with VAE Encode and the "
                               "VAE of the SD1.5 checkpoint.")
    if latent.shape[0] != 1:
        raise AnimateDiffError(f"{node} takes one image; image_latent holds {latent.shape[0]}. Pick one with "
                               "Latent From Batch.")
    if not is_finite(latent):
        raise AnimateDiffError(f"{node}: image_latent holds NaN or infinite values, which would make every frame "
                               "NaN (black). A VAE in fp16 can overflow: encode the picture again, e.g. with "
                               "ComfyUI started with --fp32-vae.")
    return model.model.latent_format.process_in(latent.float())


def with_wrappers(model, key: str, wrappers: dict, injection=None):
    """A clone of `model` with `wrappers` ({wrapper type: function}) under `key`, replacing an earlier node's."""
    patched = model.clone()
    if injection is not None:
        patched.set_injections(key, [injection])
    for kind, function in wrappers.items():
        patched.remove_wrappers_with_key(kind, key)
        patched.add_wrapper_with_key(kind, key, function)
    return patched
