"""AnimateDiff_AnimateLCMI2VImage: the picture an AnimateLCM-I2V animation starts from."""
from ..patching.image_to_video import with_reference_image


class AnimateLCMI2VImage:
    DESCRIPTION = ("Image to video with AnimateLCM-I2V: its image encoder reads the picture, and every frame is "
                   "sampled from it (4 steps with the lcm sampler, cfg 1). Needs a model from Apply Motion Module "
                   "with the AnimateLCM_sd15_i2v motion module.")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The animating model, starting from the picture, for any sampler node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From AnimateDiff_ApplyMotionModule with AnimateLCM_sd15_i2v (before or "
                                           "after AnimateDiff_ContextWindows)."}),
            "image_latent": ("LATENT", {"tooltip": "The picture, through VAE Encode with the checkpoint's VAE; "
                                                   "best at the video's size (it is centre-cropped to it)."}),
            "motion_strength": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip":
                "AnimateLCM-I2V's motion scale: how strongly each frame's position is marked in what the encoder "
                "passes on. 0.8 as released; higher moves more, lower stays closer to the picture."}),
        }}

    def apply(self, model, image_latent, motion_strength):
        return (with_reference_image(model, image_latent["samples"], motion_strength),)
