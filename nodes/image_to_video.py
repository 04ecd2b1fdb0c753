"""The picture an image-to-video motion module animates: AnimateLCM-I2V's and PIA's."""
from ..patching.image_to_video import with_reference_image
from ..patching.pia import with_picture
from ..sampling.pia import PRESETS
from .numbers import finite


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

    @finite("motion_strength")
    def apply(self, model, image_latent, motion_strength):
        return (with_reference_image(model, image_latent["samples"], motion_strength),)


class PIAImage:
    DESCRIPTION = ("Image to video with PIA (Personalized Image Animator): every frame sees the picture, and how "
                   "closely each frame keeps to it follows one of PIA's motion presets. Needs a model from Apply "
                   "Motion Module with PIA's motion module (pia.ckpt).")
    CATEGORY = "AnimateDiff"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The animating model, animating the picture, for any sampler node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From AnimateDiff_ApplyMotionModule with pia.ckpt (before or after "
                                           "AnimateDiff_ContextWindows)."}),
            "image_latent": ("LATENT", {"tooltip": "The picture, through VAE Encode with the checkpoint's VAE, at "
                                                   "the video's size."}),
            "motion": (list(PRESETS), {"default": "small motion", "tooltip":
                "PIA's presets: how closely each frame keeps to the picture, less the further it is from "
                "picture_frame. Loops come back to the picture at frame 15 (16-frame videos); style transfer "
                "keeps the picture's content but binds even its own frame only by half, so the prompt can "
                "restyle it."}),
            "picture_frame": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                "The frame that looks like the picture (0: the video starts from it)."}),
        }}

    def apply(self, model, image_latent, motion, picture_frame):
        return (with_picture(model, image_latent["samples"], motion, picture_frame),)
